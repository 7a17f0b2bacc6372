// Accuracy of the spectral estimators against the truth, on planted spectra.
//
// For every spectrum kind, seed and sketch size (k, l): draws gradient rows in
// P = 2^log2_dim dimensions with the planted population covariance, projects
// them with the run's map, feeds a per-rank accumulator (exponential decay)
// batch by batch and summarises the window at the end. Compares
//   * the effective rank r90 and the bias-corrected participation ratio with
//     the unprojected population values (the truth the dashboard means),
//   * the uncorrected PR, to show what the correction buys,
//   * (k <= --exact_max_dim) every certified interval with the exact observed
//     covariance (projected, decayed, centred), computed the slow way.
// Prints the markdown table of docs/DIAGNOSTICS.md (scripts/accuracy_table.sh).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/projection/projection.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"
#include "tests/testing/planted.h"

ABSL_FLAG(int, seeds, 5, "independent seeds per cell");
ABSL_FLAG(int, log2_dim, 14, "P = 2^log2_dim gradient dimensions");
ABSL_FLAG(int, steps, 300, "steps per run");
ABSL_FLAG(int, rows, 32, "rows (gradient samples) per step");
ABSL_FLAG(double, decay, 0.99, "per-step decay gamma (window 1 / (1 - gamma))");
ABSL_FLAG(std::string, ks, "256,1024,4096", "sketch dims k");
ABSL_FLAG(std::string, ls, "32,64,128", "FD sketch sizes l");
ABSL_FLAG(std::string, projection, "count_sketch", "count_sketch or gaussian");
ABSL_FLAG(std::string, kinds, "", "comma-separated spectrum kinds (empty: all)");
ABSL_FLAG(int, exact_max_dim, 1024,
          "check certified intervals against the exact "
          "observed covariance for k up to this");
ABSL_FLAG(double, point_shift, 1.0, "SpectrumOptions::point_shift");

namespace spotter {
namespace {

using testing::ExactMoments;
using testing::RotatedGaussian;

struct Kind {
  std::string name;
  std::string description;
  std::vector<double> start;  // population eigenvalues at step 0
  std::vector<double> end;    // at the last step (== start unless drifting)
};

std::vector<Kind> Kinds(int p) {
  using namespace testing;  // NOLINT
  std::vector<Kind> out;
  auto add = [&](std::string name, std::string desc, std::vector<double> a,
                 std::vector<double> b = {}) {
    if (b.empty()) b = a;
    out.push_back({std::move(name), std::move(desc), std::move(a), std::move(b)});
  };
  add("power-1.0", "lambda_i = i^-1 over all P dims", PowerLawSpectrum(p, 1.0));
  add("power-1.5", "lambda_i = i^-1.5", PowerLawSpectrum(p, 1.5));
  add("power-2.0", "lambda_i = i^-2", PowerLawSpectrum(p, 2.0));
  add("power-3.0", "lambda_i = i^-3", PowerLawSpectrum(p, 3.0));
  // 10 directions hold 95% of the trace, an isotropic floor the rest.
  {
    const double floor = 0.05 / p, high = 0.095;
    add("lowrank+noise", "10 x 0.095 + isotropic floor holding 5%",
        LowRankSpectrum(p, 10, high, floor));
  }
  add("step", "20 x 1.0, then 100 x 0.02", StepSpectrum(p, 20, 1.0, 100, 0.02));
  add("drift", "power-2.0 -> step, linearly over the run", PowerLawSpectrum(p, 2.0),
      StepSpectrum(p, 20, 1.0, 100, 0.02));
  return out;
}

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int v;
    if (absl::SimpleAtoi(part, &v)) out.push_back(v);
  }
  return out;
}

// Sorted copy, largest first.
std::vector<double> Sorted(std::vector<double> v) {
  std::sort(v.rbegin(), v.rend());
  return v;
}

struct Cell {
  // Sums over seeds.
  int runs = 0;
  int r90_censored = 0;
  double r90_err = 0.0;  // estimate - truth, uncensored runs
  double r90_abs_err = 0.0;
  double r90_lower = 0.0;  // censored runs: the reported lower bound
  double pr_rel = 0.0;     // corrected / truth - 1
  double pr_abs_rel = 0.0;
  double raw_rel = 0.0;  // raw / truth - 1
  int pr_censored = 0;
  int pr_closer = 0;  // |corrected - truth| < |raw - truth|
  int checked = 0;    // runs with an exact observed reference
  int contained = 0;  // ... whose every certified interval held
  double rho_over_delta = 0.0;
  double delta_over_trace = 0.0;
  double rho_over_trace = 0.0;
  // |log(PR / truth)| of the corrected PR with point_shift 1 and 0.5.
  double abs_log_pr_shift1 = 0.0, abs_log_pr_shift_half = 0.0;
};

// Over the runs with an exact reference: what the top eigenvalue lost to the
// sketch, in units of Delta.
struct TopLoss {
  int runs = 0;
  double sum = 0.0, min = 1e300, max = -1e300;
};

// True when every certified interval of `s` contains the exact value.
bool Contains(const SpectrumSummary& s, const std::vector<double>& exact,
              const SpectrumOptions& o) {
  for (size_t i = 0; i < exact.size(); ++i) {
    const double lo = i < s.eigenvalues.size() ? s.eigenvalues[i] : 0.0;
    if (exact[i] < lo || exact[i] > lo + s.eigenvalue_error) return false;
  }
  const double r90 = testing::EffectiveRank(exact, o.mass);
  if (r90 < s.effective_rank.lower || r90 > s.effective_rank.upper) return false;
  const double pr = testing::ParticipationRatio(exact);
  const Estimate& po = s.participation_ratio_observed;
  if (pr < po.lower * (1 - 1e-12) || pr > po.upper * (1 + 1e-12)) return false;
  return true;
}

int Main() {
  const int log2p = absl::GetFlag(FLAGS_log2_dim);
  const int p = 1 << log2p;
  const int seeds = absl::GetFlag(FLAGS_seeds);
  const int steps = absl::GetFlag(FLAGS_steps);
  const int m = absl::GetFlag(FLAGS_rows);
  const double gamma = absl::GetFlag(FLAGS_decay);
  const std::vector<int> ks = ParseInts(absl::GetFlag(FLAGS_ks));
  const std::vector<int> ls = ParseInts(absl::GetFlag(FLAGS_ls));
  const ProjectionKind kind = absl::GetFlag(FLAGS_projection) == "gaussian"
                                  ? ProjectionKind::kGaussian
                                  : ProjectionKind::kCountSketch;
  const std::string only = absl::GetFlag(FLAGS_kinds);
  WindowOptions window;
  window.kind = WindowKind::kExponential;
  window.decay = gamma;
  // Lag of the window at the last step: the weighted mean age of its samples
  // (gamma / (1 - gamma) once the run is much longer than the window).
  double lag = 0.0;
  {
    double w = 1.0, sw = 0.0, swa = 0.0;
    for (int age = 0; age < steps; ++age, w *= gamma) {
      sw += w;
      swa += w * age;
    }
    lag = swa / sw;
  }

  std::vector<Kind> kinds = Kinds(p);
  std::set<std::string> only_set;
  for (absl::string_view v : absl::StrSplit(only, ',', absl::SkipEmpty())) {
    only_set.insert(std::string(v));
  }
  std::map<std::string, std::map<std::pair<int, int>, Cell>> cells;
  std::map<std::string, std::pair<double, double>> truths;  // r90, PR
  TopLoss top_loss;
  for (const Kind& kd : kinds) {
    if (!only.empty() && !only_set.count(kd.name)) continue;
    // The truth: the population spectrum the window centres on (for a
    // stationary spectrum, the spectrum itself; drifting: `lag` steps ago).
    const double a_truth = std::clamp((steps - 1 - lag) / std::max(1, steps - 1), 0.0, 1.0);
    const std::vector<double> truth = Sorted(testing::Interpolate(kd.start, kd.end, a_truth));
    const double r90_truth = testing::EffectiveRank(truth, 0.9);
    const double pr_truth = testing::ParticipationRatio(truth);
    truths[kd.name] = {r90_truth, pr_truth};
    for (int seed = 1; seed <= seeds; ++seed) {
      RotatedGaussian gen(log2p, 1000 + seed);
      std::mt19937_64 rng(seed);
      std::vector<std::unique_ptr<Projection>> maps;
      std::vector<std::unique_ptr<ExactMoments>> exact;
      std::vector<std::vector<RankAccumulator>> acc;
      for (int k : ks) {
        maps.push_back(*Projection::Create(kind, 77 + seed, p, k));
        exact.push_back(k <= absl::GetFlag(FLAGS_exact_max_dim) ? std::make_unique<ExactMoments>(k)
                                                                : nullptr);
        acc.emplace_back();
        for (int l : ls) acc.back().emplace_back(k, std::min(l, k), window);
      }
      for (int step = 0; step < steps; ++step) {
        const double a = steps > 1 ? static_cast<double>(step) / (steps - 1) : 0.0;
        const RowMatrixXf x = gen.Sample(testing::Interpolate(kd.start, kd.end, a), m, rng);
        for (size_t ki = 0; ki < ks.size(); ++ki) {
          RowMatrixXf y(m, ks[ki]);
          maps[ki]->ApplyRows(x, y);
          for (RankAccumulator& r : acc[ki]) r.Add(step, y, 1.0);
          if (exact[ki]) {
            if (step > 0) exact[ki]->Scale(gamma);
            exact[ki]->AddBatch(y);
          }
        }
      }
      for (size_t ki = 0; ki < ks.size(); ++ki) {
        std::vector<double> observed;
        if (exact[ki]) observed = exact[ki]->CovarianceEigenvalues();
        for (size_t li = 0; li < ls.size(); ++li) {
          SpectrumOptions o;
          o.dim = ks[ki];
          o.sketch_rows = std::min(ls[li], ks[ki]);
          o.projection = kind;
          o.point_shift = absl::GetFlag(FLAGS_point_shift);
          const GradientMoments mom = MergeAll(acc[ki][li].Snapshot(steps - 1));
          const Diagnostics d = Summarize(mom, o);
          const SpectrumSummary& s = d.covariance;
          Cell& c = cells[kd.name][{ks[ki], ls[li]}];
          ++c.runs;
          if (s.effective_rank.censored) {
            ++c.r90_censored;
            c.r90_lower += s.effective_rank.value;
          } else {
            c.r90_err += s.effective_rank.value - r90_truth;
            c.r90_abs_err += std::abs(s.effective_rank.value - r90_truth);
          }
          if (s.participation_ratio.censored) ++c.pr_censored;
          const double pr = s.participation_ratio.value;
          c.pr_rel += pr / pr_truth - 1.0;
          c.pr_abs_rel += std::abs(pr / pr_truth - 1.0);
          c.raw_rel += s.participation_ratio_raw / pr_truth - 1.0;
          if (std::abs(pr - pr_truth) < std::abs(s.participation_ratio_raw - pr_truth)) {
            ++c.pr_closer;
          }
          const SketchSpectrum sk = mom.centred.Spectrum();
          c.rho_over_delta += sk.delta > 0 ? sk.rounding / sk.delta : 0.0;
          c.delta_over_trace += sk.delta / sk.trace;
          c.rho_over_trace += sk.rounding / sk.trace;
          SpectrumOptions half = o;
          half.point_shift = 0.5;
          c.abs_log_pr_shift1 += std::abs(std::log(pr / pr_truth));
          c.abs_log_pr_shift_half += std::abs(
              std::log(Summarize(mom, half).covariance.participation_ratio.value / pr_truth));
          if (!observed.empty()) {
            ++c.checked;
            if (Contains(s, observed, o)) ++c.contained;
            // Only where the shrinkage dominates the rounding bound does the
            // loss measure the FD shrinkage rather than float32 noise.
            if (sk.delta > 10.0 * sk.rounding && !sk.eigenvalues.empty()) {
              const double loss = (observed[0] * mom.dof - sk.eigenvalues[0]) / sk.delta;
              ++top_loss.runs;
              top_loss.sum += loss;
              top_loss.min = std::min(top_loss.min, loss);
              top_loss.max = std::max(top_loss.max, loss);
            }
          }
        }
      }
      std::fprintf(stderr, "%s seed %d done\n", kd.name.c_str(), seed);
    }
  }

  // The table.
  std::printf(
      "Planted spectra in P = %d dims, %s projection, %d steps x %d rows, "
      "decay %.4g (window %.0f steps), %d seeds per cell.\n\n",
      p, kind == ProjectionKind::kGaussian ? "Gaussian" : "CountSketch", steps, m, gamma,
      gamma < 1 ? 1 / (1 - gamma) : 0.0, seeds);
  std::printf(
      "Each cell: r90 error (estimate - truth, mean over seeds; `>=x` when the "
      "sketch reports a lower bound x) / PR relative error of the bias-corrected "
      "estimate (uncorrected in brackets).\n\n");
  std::vector<std::string> header = {"spectrum", "true r90", "true PR"};
  for (int k : ks)
    for (int l : ls) header.push_back(absl::StrFormat("k=%d, l=%d", k, std::min(l, k)));
  std::printf("| %s |\n", absl::StrJoin(header, " | ").c_str());
  std::string sep;
  for (size_t i = 0; i < header.size(); ++i) sep += "---|";
  std::printf("|%s\n", sep.c_str());
  int checked = 0, contained = 0, closer = 0, compared = 0;
  double shift1 = 0, shift_half = 0;
  double max_rho_over_delta = 0, max_rho_over_trace = 0;
  for (const Kind& kd : kinds) {
    if (!cells.count(kd.name)) continue;
    std::vector<std::string> row = {kd.name, absl::StrFormat("%.0f", truths[kd.name].first),
                                    absl::StrFormat("%.1f", truths[kd.name].second)};
    for (int k : ks) {
      for (int l : ls) {
        const Cell& c = cells[kd.name][{k, l}];
        std::string r90;
        if (c.r90_censored == c.runs) {
          r90 = absl::StrFormat(">=%.0f", c.r90_lower / c.runs);
        } else {
          r90 = absl::StrFormat("%+.1f", c.r90_err / (c.runs - c.r90_censored));
          if (c.r90_censored > 0) r90 += absl::StrFormat(" (%d cens.)", c.r90_censored);
        }
        std::string pr =
            absl::StrFormat("%+.1f%% (%+.0f%%)", 100 * c.pr_rel / c.runs, 100 * c.raw_rel / c.runs);
        if (c.pr_censored > 0) pr += absl::StrFormat(" %d cens.", c.pr_censored);
        row.push_back(r90 + " / " + pr);
        checked += c.checked;
        contained += c.contained;
        closer += c.pr_closer;
        compared += c.runs;
        shift1 += c.abs_log_pr_shift1;
        shift_half += c.abs_log_pr_shift_half;
        max_rho_over_delta = std::max(max_rho_over_delta, c.rho_over_delta / c.runs);
        max_rho_over_trace = std::max(max_rho_over_trace, c.rho_over_trace / c.runs);
      }
    }
    std::printf("| %s |\n", absl::StrJoin(row, " | ").c_str());
  }
  std::printf(
      "\nCertified intervals (eigenvalues, r90, observed PR) containing the exact "
      "observed value: %d of %d runs checked (k <= %d).\n",
      contained, checked, absl::GetFlag(FLAGS_exact_max_dim));
  std::printf(
      "Bias-corrected PR closer to the truth than the uncorrected one: %d of %d "
      "runs.\n",
      closer, compared);
  std::printf(
      "Float32 rounding bound rho: at most %.2g of the trace (mean per cell); "
      "at most %.3g times the FD delta.\n",
      max_rho_over_trace, max_rho_over_delta);
  if (top_loss.runs > 0) {
    std::printf(
        "Top eigenvalue, exact minus sketch, in units of Delta: mean %.4f, range "
        "[%.4f, %.4f] over the %d runs with Delta > 10 rho (the point estimate adds "
        "point_shift * Delta).\n",
        top_loss.sum / top_loss.runs, top_loss.min, top_loss.max, top_loss.runs);
  }
  std::printf(
      "Mean |log(PR / truth)| of the corrected PR: %.4f with point_shift 1, %.4f "
      "with 0.5.\n",
      shift1 / compared, shift_half / compared);
  return 0;
}

}  // namespace
}  // namespace spotter

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return spotter::Main();
}
