#include "tests/scenarios/windows.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/runs/run_config.h"

namespace spotter::scenarios {
namespace {

// The plateau span (docs/PHASES.md, "Smoothing"): plateau_windows windows
// of window_evals evaluations, and at least the sketch window's memory long
// (then more evaluations, in as many windows). The controller before issue
// 18's fix (c6072c5) had neither field and compared two adjacent windows;
// reading the fields when they exist lets these scenarios build against it
// too, where they show the failures that fix removed.
template <typename C>
void SetSpan(const C& c, Lags* l) {
  if constexpr (requires {
                  c.plateau_windows;
                  c.window_memory_steps;
                }) {
    const uint64_t memory_evals = (c.window_memory_steps + l->e - 1) / l->e + 1;
    l->windows = c.plateau_windows;
    l->span_evals = std::max(c.plateau_windows * c.window_evals, static_cast<int>(memory_evals));
  } else {
    l->windows = 2;
    l->span_evals = 2 * c.window_evals;
  }
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double TopMass(const std::vector<double>& e, int r) {
  double s = 0.0;
  for (int i = 0; i < r && i < static_cast<int>(e.size()); ++i) s += e[i];
  return s;  // the trace is 1
}

// Steps until gamma^steps <= eps.
double StepsUntil(double eps, double gamma) {
  return eps >= 1.0 ? 0.0 : std::log(eps) / std::log(gamma);
}

}  // namespace

uint64_t Lags::Grid(double step) const {
  const double s = std::max(0.0, std::ceil(step));
  return static_cast<uint64_t>((s + static_cast<double>(e) - 1) / static_cast<double>(e)) * e;
}

Lags LagsOf(const v1::RunConfig& config, double step_seconds, double delivery_budget_seconds) {
  const ControllerConfig c = ToControllerConfig(config);
  Lags l;
  l.e = config.eval_every();
  l.epoch = c.steps_per_epoch;
  l.warmup = c.warmup_end();
  l.dwell = c.min_dwell_steps;
  l.budget = c.refine_budget_step();
  l.total = c.total_steps;
  // docs/PHASES.md, "Directives and effective_step": one rank uploading
  // every step (gap 1) at 1 / step_seconds steps per second.
  l.margin = static_cast<uint64_t>(std::ceil(delivery_budget_seconds / step_seconds + 1.0)) + 1;
  l.w = c.window_evals;
  l.c = c.confirm_evals;
  SetSpan(c, &l);
  l.decay = config.decay();
  l.memory = 1.0 / (1.0 - l.decay);
  l.id_drop = c.id_drop_threshold;
  l.epsilon = c.plateau_epsilon;
  l.loss_decrease_min = c.loss_decrease_min;
  l.refine_loss_rate_min = c.refine_loss_rate_min;
  l.hysteresis = c.hysteresis;
  l.val_patience = c.val_patience;
  return l;
}

// After t0 the window's covariance is (1 - eps) C_t0 + eps C_past with
// eps <= gamma^(t - t0) (C_past: the decayed mixture of the spectra before
// t0, all diagonal in the same basis).
//  - PR: the trace is 1, so PR = 1 / tr(C^2), and to first order in eps
//    tr(C^2) = |l_t0|^2 (1 - 2 eps (1 - <l_t0, l_past> / |l_t0|^2)). With
//    kappa the largest |1 - <l_t0, l_b> / |l_t0|^2| over the steps b < t0,
//    the PR moves by at most 2 kappa eps (1 - gamma^S) relatively between the
//    span's first evaluation (eps) and its last (S = Span() steps later). The
//    test allows id_drop x Distance() / epoch: eps_pr = that / (2 kappa (1 -
//    gamma^S)).
//  - r90: the top-r mass (r the plateau's r90) is (1 - eps) F_t0 + eps F_past;
//    it stays >= 0.9 (and the top-(r-1) mass < 0.9) while eps <= eps_r90.
// Settled: gamma^steps <= min(eps_pr, eps_r90).
Settle SettleAfter(const ScenarioGenerator& gen, uint64_t t0, const Lags& lags) {
  const std::vector<double> p = gen.Eigenvalues(t0);
  const double pp = Dot(p, p);
  const int r = static_cast<int>(R90(p));
  const double f_top = TopMass(p, r), f_below = TopMass(p, r - 1);
  Settle s;
  double eps_r90 = 1.0;
  for (uint64_t b = 0; b < t0; ++b) {
    const std::vector<double> q = gen.Eigenvalues(b);
    s.kappa = std::max(s.kappa, std::abs(1.0 - Dot(p, q) / pp));
    const double top = TopMass(q, r), below = TopMass(q, r - 1);
    if (top < 0.9) eps_r90 = std::min(eps_r90, (f_top - 0.9) / (f_top - top));
    if (below > 0.9) eps_r90 = std::min(eps_r90, (0.9 - f_below) / (below - f_below));
  }
  const double allowed =
      lags.id_drop * static_cast<double>(lags.Distance()) / static_cast<double>(lags.epoch);
  const double swing =
      2.0 * s.kappa * (1.0 - std::pow(lags.decay, static_cast<double>(lags.Span())));
  s.pr_steps = swing > 0.0 ? StepsUntil(allowed / swing, lags.decay) : 0.0;
  s.r90_steps = StepsUntil(eps_r90, lags.decay);
  return s;
}

// The PR's relative wobble a0 (from the planted eigenvalues at r (1 +- a)),
// through the exponential window (gain (1 - gamma) / |1 - gamma e^{-i w}|
// at w = 2 pi / period) and the window means (gain |sin(w n e / 2) /
// (n sin(w e / 2))|, n evaluations each), is A; its change over the distance
// d between the first and last windows swings with amplitude 2 A sin(w d / 2)
// and stays within the allowance id_drop x d / epoch for
// period x asin(allowance / swing) / pi steps around each zero crossing.
double WobbleQuietSteps(const ScenarioSpec& spec, uint64_t t0, const Lags& lags) {
  const Wobble& wb = spec.wobble;
  const double k = spec.sketch_dim, level = spec.rank.At(static_cast<double>(t0));
  const double s = spec.signal_share.At(static_cast<double>(t0));
  auto pr = [&](double r) { return 1.0 / (s * s / r + (1.0 - s * s) / k); };
  const double a0 =
      (pr(level * (1 + wb.amplitude)) - pr(level * (1 - wb.amplitude))) / (2 * pr(level));
  const double w = 2 * std::numbers::pi / wb.period, g = lags.decay;
  const double n = static_cast<double>(lags.span_evals / lags.windows), e = lags.e;
  const double gain = (1 - g) / std::sqrt(1 - 2 * g * std::cos(w) + g * g) *
                      std::abs(std::sin(w * n * e / 2) / (n * std::sin(w * e / 2)));
  const double d = static_cast<double>(lags.Distance());
  const double swing = 2 * a0 * gain * std::sin(w * d / 2);
  const double allowance = lags.id_drop * d / static_cast<double>(lags.epoch);
  return allowance >= swing ? wb.period
                            : wb.period * std::asin(allowance / swing) / std::numbers::pi;
}

Window AcquisitionExit(const ScenarioGenerator& gen, uint64_t t0, const Lags& lags) {
  const Settle s = SettleAfter(gen, t0, lags);
  const uint64_t confirm = static_cast<uint64_t>(lags.c - 1) * lags.e;
  Window w;
  // Nothing fires before the warm-up ends or the truth stops moving, and
  // it takes confirm_evals evaluations.
  w.lo = lags.Grid(static_cast<double>(std::max(lags.warmup, t0))) + confirm;
  // Every test holds once the span starts after the settling time.
  w.hi = lags.Grid(std::max(static_cast<double>(lags.warmup),
                            static_cast<double>(t0) + s.steps() + lags.Span())) +
         confirm;
  w.derivation = absl::StrFormat(
      "lo = grid(max(W %d, t0 %d)) + (c-1)e %d; hi = grid(t0 + settle %.0f (PR %.0f with "
      "kappa %.2f, r90 %.0f) + span %d) + (c-1)e",
      lags.warmup, t0, confirm, s.steps(), s.pr_steps, s.kappa, s.r90_steps, lags.Span());
  return w;
}

Window RefinementExitOnFlatLoss(uint64_t t_flat, const Lags& lags) {
  const uint64_t confirm = static_cast<uint64_t>(lags.c - 1) * lags.e;
  Window w;
  // An evaluation's loss is the mean of the e uploads since the previous
  // one: the first that sees the flat loss is grid(t_flat) + e; from
  // grid(t_flat) + N e on the whole span is flat.
  w.lo = lags.Grid(static_cast<double>(t_flat)) + lags.e + confirm;
  w.hi = lags.Grid(static_cast<double>(t_flat)) + static_cast<uint64_t>(lags.span_evals) * lags.e +
         confirm;
  w.derivation =
      absl::StrFormat("lo = grid(t_flat %d) + e + (c-1)e; hi = grid(t_flat) + N %d x e + (c-1)e",
                      t_flat, lags.span_evals);
  return w;
}

Window RefinementBudget(uint64_t refine_effective_hi, const Lags& lags) {
  Window w;
  w.lo = lags.Grid(static_cast<double>(lags.budget));
  w.hi = lags.Grid(static_cast<double>(std::max(lags.budget, refine_effective_hi + lags.dwell)));
  w.derivation = absl::StrFormat(
      "grid(max(B %d, REFINEMENT effective step <= %d + dwell %d)): the budget fallback",
      lags.budget, refine_effective_hi, lags.dwell);
  return w;
}

Window ValidationStop(uint64_t t_flat, uint64_t every, const Lags& lags) {
  Window w;
  // The last improving report is the last one at or before t_flat; the
  // val_patience reports after it are stale.
  w.lo = w.hi = t_flat / every * every + static_cast<uint64_t>(lags.val_patience) * every;
  w.derivation =
      absl::StrFormat("last improving report %d + val_patience %d x %d steps between reports",
                      t_flat / every * every, lags.val_patience, every);
  return w;
}

Window TotalSteps(const Lags& lags) {
  Window w;
  w.lo = w.hi = lags.Grid(static_cast<double>(lags.total));
  w.derivation = absl::StrFormat("the first evaluation at or after total_steps %d", lags.total);
  return w;
}

}  // namespace spotter::scenarios
