// The coverage table of docs/DIAGNOSTICS.md ("Sampling intervals"): for each
// planted case of StandardCoverageCases, over --seeds seeds, how often the
// sampling confidence interval (and, for comparison, the sketch bound) holds
// the population value. Prints a Markdown table and writes --out (JSON) with
// the per-case figures and the --commit it was given.
//
//   build/bench/spotter_coverage_table --seeds 100 --out docs/experiments/coverage.json
//
// scripts/coverage_table.sh runs it with the git commit filled in.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tests/testing/coverage.h"

ABSL_FLAG(int, seeds, 100, "seeds per case");
ABSL_FLAG(int, log2_p, 13, "log2 of the unprojected dimension P of the projected cases");
ABSL_FLAG(int, k, 512, "sketch dimension k (a power of two: the unprojected cases live in it)");
ABSL_FLAG(int, l, 64, "sketch rows l");
ABSL_FLAG(int, steps, 200, "steps of 32 rows into the exponential window (decay 0.99)");
ABSL_FLAG(std::string, only, "", "run only the cases whose name contains this");
ABSL_FLAG(std::string, out, "", "JSON output file (optional)");
ABSL_FLAG(std::string, commit, "unknown", "git commit recorded in the JSON");
ABSL_FLAG(std::string, command, "", "command line recorded in the JSON");
ABSL_FLAG(bool, trials, false, "print every trial");

namespace {

std::string Num(double v) {
  if (std::isnan(v)) return "null";
  if (std::isinf(v)) return v > 0 ? "\"inf\"" : "\"-inf\"";
  return absl::StrFormat("%.6g", v);
}

std::string Pct(double v) { return std::isnan(v) ? "-" : absl::StrFormat("%.0f%%", 100.0 * v); }

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using spotter::testing::CoverageResult;
  const int seeds = absl::GetFlag(FLAGS_seeds);
  std::vector<std::string> json_cases;
  std::printf(
      "| case | P -> k | true PR | mean PR error | mean CI half-width | CI covers PR | sketch "
      "bound covers PR | PR censored | CI covers r90 | CI covers lambda_1 | n_eff | kurtosis |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& c : spotter::testing::StandardCoverageCases(
           absl::GetFlag(FLAGS_log2_p), absl::GetFlag(FLAGS_k), absl::GetFlag(FLAGS_l),
           absl::GetFlag(FLAGS_steps))) {
    if (!absl::GetFlag(FLAGS_only).empty() &&
        c.name.find(absl::GetFlag(FLAGS_only)) == std::string::npos) {
      continue;
    }
    const CoverageResult r = spotter::testing::RunCoverage(c, seeds, 1);
    if (absl::GetFlag(FLAGS_trials)) {
      for (const auto& t : r.trials) {
        absl::PrintF("  pr %.4g [%.4g, %.4g] sketch [%.4g, %.4g]%s r90 %g [%g, %g] top %.4g [%.4g, %.4g]\n",
                     t.pr.value, t.pr.ci_lower, t.pr.ci_upper, t.pr.lower, t.pr.upper,
                     t.pr.censored ? " censored" : "", t.r90.value, t.r90.ci_lower,
                     t.r90.ci_upper, t.top.value, t.top.ci_lower, t.top.ci_upper);
      }
    }
    double n_eff = 0, kurt = 0;
    for (const auto& t : r.trials) {
      n_eff += t.effective_samples / r.trials.size();
      kurt += t.kurtosis / r.trials.size();
    }
    const std::string dims =
        c.projection == spotter::ProjectionKind::kIdentity
            ? absl::StrFormat("%d (none)", c.k)
            : absl::StrFormat("%d -> %d", 1 << c.log2_p, c.k);
    absl::PrintF("| %s | %s | %.2f | %+.1f%% | %.1f%% | %s | %s | %s | %s | %s | %.0f | %.2f |\n",
                c.name, dims, r.true_pr, 100.0 * r.MeanPrRelativeError(),
                100.0 * r.MeanPrRelativeHalfWidth(), Pct(r.PrCoverage()),
                Pct(r.PrSketchBoundCoverage()), Pct(r.CensoredFraction()), Pct(r.R90Coverage()),
                Pct(r.TopCoverage()), n_eff, kurt);
    std::fflush(stdout);
    json_cases.push_back(absl::StrFormat(
        "  {\"case\": \"%s\", \"p\": %d, \"k\": %d, \"l\": %d, \"projected\": %s, \"t_dof\": %s, "
        "\"seeds\": %d, \"true_pr\": %s, \"true_r90\": %s, \"mean_pr_error\": %s, "
        "\"mean_ci_half_width\": %s, \"ci_covers_pr\": %s, \"sketch_bound_covers_pr\": %s, "
        "\"pr_censored\": %s, \"ci_covers_r90\": %s, \"ci_covers_top\": %s, "
        "\"effective_samples\": %s, \"kurtosis\": %s}",
        c.name, 1 << c.log2_p, c.k, c.l,
        c.projection == spotter::ProjectionKind::kIdentity ? "false" : "true", Num(c.t_dof),
        seeds, Num(r.true_pr), Num(r.true_r90), Num(r.MeanPrRelativeError()),
        Num(r.MeanPrRelativeHalfWidth()), Num(r.PrCoverage()), Num(r.PrSketchBoundCoverage()),
        Num(r.CensoredFraction()), Num(r.R90Coverage()), Num(r.TopCoverage()), Num(n_eff),
        Num(kurt)));
  }
  if (!absl::GetFlag(FLAGS_out).empty()) {
    std::ofstream f(absl::GetFlag(FLAGS_out));
    f << "{\n \"command\": \"" << absl::GetFlag(FLAGS_command) << "\",\n \"commit\": \""
      << absl::GetFlag(FLAGS_commit) << "\",\n \"confidence\": 0.9,\n \"rows_per_step\": 32,\n"
      << " \"decay\": 0.99,\n \"steps\": " << absl::GetFlag(FLAGS_steps) << ",\n \"cases\": [\n"
      << absl::StrJoin(json_cases, ",\n") << "\n ]\n}\n";
  }
  return 0;
}
