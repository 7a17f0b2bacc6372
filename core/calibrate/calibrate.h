// Threshold calibration from a population of runs (docs/PHASES.md,
// "Calibrating the thresholds").
//
// The ACQUISITION exit compares four measurements with four thresholds: the
// rank fraction (its CI upper end) with rank_fraction_max, the r90 plateau
// spread with plateau_epsilon, the PR's rate of change with
// id_drop_threshold, and the loss's rate of fall with loss_decrease_min.
// Defaults that suit one model never fire on another (a small ViT's
// per-example gradients sit at r90 ~ 80 of 256, far above 0.2 x 256).
// Calibrate replays each run's evaluations through the real PhaseController
// with the exit disabled, collects the measurements it would have compared
// at every evaluation past the warm-up, and proposes each threshold so that
// its test holds at the typical evaluation of most runs:
//
//   per run i:  t_i = the run_quantile-quantile of the run's measurements
//   proposal:   the coverage-quantile of the t_i over the runs, rounded up
//               to the next two-significant-digit number strictly above it
//
// (quantiles are the inverse empirical CDF: the smallest value with at least
// a q share of the values at or below it). The proposal is then checked the
// same way: every run replayed with it (and with its own thresholds), and
// the step its ACQUISITION exit would decide reported. loss_decrease_min is reported, not proposed:
// "the loss still falls" is a property to require, not to fit.
//
// Runs to calibrate on: ADVISE-mode runs (their trainers never left
// first-order training, so every evaluation is usable) or the first-order
// part of finished CONTROL runs (up to their first switch). Never the runs
// a comparison reports: calibrate on tuning seeds.
#ifndef SPOTTER_CORE_CALIBRATE_CALIBRATE_H_
#define SPOTTER_CORE_CALIBRATE_CALIBRATE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/phase/controller.h"

namespace spotter {

// One run of the population: its controller config, its evaluations in step
// order, and how far it trained first-order.
struct CalibrationRun {
  std::string name;
  ControllerConfig config;
  std::vector<Observation> observations;
  // Only observations at steps <= this are first-order training (a CONTROL
  // run's first switch's effective step - 1; an ADVISE run: no bound).
  uint64_t last_first_order_step = UINT64_MAX;
  // Steps between a decision and its effective step in the replay (the
  // run's delivery margin; 0 = decisions take effect where they are made).
  uint64_t margin_steps = 0;
};

struct CalibrationOptions {
  double run_quantile = 0.5;  // share of a run's evaluations a test should hold at, (0, 1]
  double coverage = 0.8;      // share of runs whose typical evaluation passes, (0, 1]
};

// The quantities of one run at its run_quantile.
struct RunSignals {
  std::string name;
  int evaluations = 0;  // evaluations that reached the exit's tests
  double rank_fraction_ci_upper = 0.0;
  double rank_spread = 0.0;
  double abs_pr_drop_per_epoch = 0.0;
  // The (1 - run_quantile)-quantile: the loss test is "above", the others
  // "below". NaN when no evaluation had a loss.
  double loss_decrease_per_epoch = 0.0;
  // The replay with the proposed thresholds: the step whose evaluation
  // decided the ACQUISITION exit, and its reason (empty: never fired).
  std::optional<uint64_t> switch_step;
  std::string switch_reason;
  // The same replay with the run's own thresholds. For a CONTROL run that
  // switched automatically, the decision step it recorded: the read-back
  // observations are the ones the server's controller was fed.
  std::optional<uint64_t> own_switch_step;
};

struct Calibration {
  double rank_fraction_max = 0.0;
  double plateau_epsilon = 0.0;
  double id_drop_threshold = 0.0;
  std::vector<RunSignals> runs;      // in input order; runs without evaluations left out
  std::vector<std::string> skipped;  // runs with no evaluation past the warm-up
  int runs_switched = 0;
};

// The proposal. INVALID_ARGUMENT for options out of range or an invalid
// config; FAILED_PRECONDITION when no run has an evaluation that reached
// the exit's tests (too short, or all of it inside the warm-up).
absl::StatusOr<Calibration> Calibrate(const std::vector<CalibrationRun>& runs,
                                      const CalibrationOptions& options);

// The inverse empirical CDF: the smallest v with at least q x n values <= v.
// Precondition: values non-empty, q in (0, 1].
double EmpiricalQuantile(std::vector<double> values, double q);

// The smallest number with two significant digits strictly above x (x > 0).
double RoundUpTwoDigits(double x);

}  // namespace spotter

#endif  // SPOTTER_CORE_CALIBRATE_CALIBRATE_H_
