// What the quadratic-bowl experiment (quadratic_bowl.cc) records of each
// run, and the files it writes from them: the CSV files, the summary table
// and, under --check, the closed-loop checks of the three-phase runs.
#ifndef SPOTTER_EXAMPLES_QUADRATIC_BOWL_REPORT_H_
#define SPOTTER_EXAMPLES_QUADRATIC_BOWL_REPORT_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter::examples {

struct CurvePoint {
  uint64_t step;
  double loss, r90, pr;
};

// What a three-phase trainer saw of one directive.
struct DirectiveLog {
  uint64_t version = 0;
  uint64_t effective_step = 0;
  int64_t seen_at = -1;        // trainer step at which it was first in the mailbox
  int64_t first_applied = -1;  // first step trained under it
};

struct RunResult {
  std::string arm;
  uint64_t seed = 0;
  double lr = 0;
  int64_t hit = -1;  // steps to target; -1: not within the budget
  uint64_t steps_run = 0;
  double final_loss = 0;
  bool stopped = false;  // by a STOP directive
  std::vector<CurvePoint> curve;
  std::map<uint64_t, DirectiveLog> directives;
  int restores = 0;         // snapshots put back at a rollback (spotter::SwitchGuard)
  int missed_restores = 0;  // rollbacks that found no snapshot
  v1::GetTrajectoryResponse trajectory;
  std::string error;
};

// three_phase and three_phase_estimated: the arms a spotterd run drives.
bool IsThreePhase(const std::string& arm);

// Steps to target as a sortable number: not reached is +inf.
double Steps(const RunResult& r);

// The q-quantile (linear interpolation) of sorted values; inf propagates.
double Quantile(const std::vector<double>& sorted, double q);

// "> budget" for +inf, else the rounded number.
std::string StepsText(double v, uint64_t budget);

// Steps() of every run, sorted.
std::vector<double> SortedSteps(const std::vector<RunResult>& runs);

// s in double quotes, its own double quotes turned into single ones (a CSV field).
std::string Csv(std::string s);

// The commit of the checkout in the working directory as every result file
// records it: git rev-parse --short HEAD, with "-dirty" when tracked files
// differ from it; "unknown" outside a checkout.
std::string GitCommit();

// How the report was produced, for its text and checks.
struct ReportOptions {
  uint64_t steps = 5000;          // the budget of every run
  double target = 1e-6;           // excess-loss target
  uint32_t seeds = 10;            // evaluation seeds per arm
  uint32_t tune_seeds = 3;        // tuning seeds per grid point
  std::string lr_grid;            // as given on the command line
  double three_phase_warmup = 0;  // > 0: the three-phase runs' warmup_fraction
  double delivery_budget = 0.5;   // three-phase: seconds a directive may take to arrive
  uint32_t step_us = 4000;        // three-phase: wall time per step
  bool check = false;             // check the three-phase runs (--check)
  std::string commit;             // git rev-parse --short HEAD, "-dirty" if changed
  std::string command;            // the command line that produced it
};

// Writes results.csv, curves.csv, spotter_points.csv, transitions.csv,
// directives.csv (the last three: runs of the three-phase arms),
// summary.md (the table, its first line naming the commit and command) and
// summary.json (the commit, the command and the table's numbers, per arm)
// into `out` and prints the table. `runs` maps
// an arm to its evaluation runs sorted by seed; `chosen` gives every arm's
// LR, `fixed` the arms whose LR was given rather than tuned. Returns the
// number of failed checks (0 unless options.check).
int WriteReport(const std::filesystem::path& out, const std::vector<std::string>& arms,
                const std::map<std::string, std::vector<RunResult>>& runs,
                const std::map<std::string, double>& chosen, const std::set<std::string>& fixed,
                const ReportOptions& options, absl::Duration wall);

}  // namespace spotter::examples

#endif  // SPOTTER_EXAMPLES_QUADRATIC_BOWL_REPORT_H_
