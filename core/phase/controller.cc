#include "core/phase/controller.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace spotter {
namespace {

double RelChange(double now, double prev) {
  return prev != 0.0 ? std::abs(now - prev) / std::abs(prev) : 0.0;
}

// Most evaluations a detector span holds (a window memory of millions of
// steps at eval_every 1 would otherwise keep them all).
constexpr size_t kMaxSpanEvals = 100000;

}  // namespace

uint64_t ControllerConfig::warmup_end() const {
  return static_cast<uint64_t>(std::llround(warmup_fraction * static_cast<double>(total_steps)));
}

uint64_t ControllerConfig::refine_budget_step() const {
  return static_cast<uint64_t>(
      std::llround(refine_budget_fraction * static_cast<double>(total_steps)));
}

absl::Status ControllerConfig::Validate() const {
  auto bad = [](const char* field, double v, const char* range) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s = %g is out of range: expected %s", field, v, range));
  };
  if (total_steps == 0) return bad("total_steps", 0, "> 0");
  if (steps_per_epoch == 0) return bad("steps_per_epoch", 0, "> 0");
  if (!(peak_lr > 0.0) || !std::isfinite(peak_lr)) return bad("peak_lr", peak_lr, "a finite value > 0");
  if (!(base_lr >= 0.0) || !std::isfinite(base_lr)) return bad("base_lr", base_lr, "a finite value >= 0");
  if (sketch_rows < 1) return bad("sketch_rows", sketch_rows, ">= 1");
  if (!(warmup_fraction > 0.0 && warmup_fraction < 1.0)) return bad("warmup_fraction", warmup_fraction, "in (0, 1)");
  if (!(id_drop_threshold > 0.0 && id_drop_threshold < 10.0)) return bad("id_drop_threshold", id_drop_threshold, "in (0, 10)");
  if (!(rank_fraction_max > 0.0 && rank_fraction_max <= 1.0)) return bad("rank_fraction_max", rank_fraction_max, "in (0, 1]");
  if (!(plateau_epsilon > 0.0 && plateau_epsilon < 10.0)) return bad("plateau_epsilon", plateau_epsilon, "in (0, 10)");
  if (window_evals < 1 || window_evals > 1000) return bad("window_evals", window_evals, "in [1, 1000]");
  if (plateau_windows < 2 || plateau_windows > 100) return bad("plateau_windows", plateau_windows, "in [2, 100]");
  if (!(loss_decrease_min >= 0.0 && loss_decrease_min < 10.0)) return bad("loss_decrease_min", loss_decrease_min, "in [0, 10)");
  if (confirm_evals < 1 || confirm_evals > 1000) return bad("confirm_evals", confirm_evals, "in [1, 1000]");
  if (!(hysteresis >= 1.0 && hysteresis < 100.0)) return bad("hysteresis", hysteresis, "in [1, 100)");
  if (!(lr_cut > 0.0 && lr_cut <= 1.0)) return bad("lr_cut", lr_cut, "in (0, 1]");
  if (!(refine_loss_rate_min >= 0.0 && refine_loss_rate_min < 10.0)) return bad("refine_loss_rate_min", refine_loss_rate_min, "in [0, 10)");
  if (!(refine_budget_fraction > 0.0 && refine_budget_fraction <= 1.0)) return bad("refine_budget_fraction", refine_budget_fraction, "in (0, 1]");
  if (!(lr_min >= 0.0) || !std::isfinite(lr_min)) return bad("lr_min", lr_min, "a finite value >= 0");
  if (val_patience < 1 || val_patience > 100000) return bad("val_patience", val_patience, "in [1, 100000]");
  if (!(val_min_delta >= 0.0) || !std::isfinite(val_min_delta)) return bad("val_min_delta", val_min_delta, "a finite value >= 0");
  if (!(kfac_damping > 0.0) || !std::isfinite(kfac_damping)) return bad("kfac_damping", kfac_damping, "a finite value > 0");
  if (kfac_factor_interval < 1) return bad("kfac_factor_interval", kfac_factor_interval, ">= 1");
  if (kfac_inverse_interval < 1) return bad("kfac_inverse_interval", kfac_inverse_interval, ">= 1");
  if (!(noise_std >= 0.0 && noise_std < 100.0)) return bad("noise_std", noise_std, "in [0, 100)");
  if (!(divergence_loss_rate > 0.0 && divergence_loss_rate < 10.0)) return bad("divergence_loss_rate", divergence_loss_rate, "in (0, 10)");
  if (!(rollback_loss_margin > 0.0 && rollback_loss_margin < 100.0)) return bad("rollback_loss_margin", rollback_loss_margin, "in (0, 100)");
  if (!(rollback_lr_factor > 0.0 && rollback_lr_factor <= 1.0)) return bad("rollback_lr_factor", rollback_lr_factor, "in (0, 1]");
  if (rollback_max_retries < 0 || rollback_max_retries > 100) return bad("rollback_max_retries", rollback_max_retries, "in [0, 100]");
  if (!(retry_plateau_factor > 0.0 && retry_plateau_factor <= 1.0)) return bad("retry_plateau_factor", retry_plateau_factor, "in (0, 1]");
  if (!(retry_damping_factor >= 1.0 && retry_damping_factor <= 1e6)) return bad("retry_damping_factor", retry_damping_factor, "in [1, 1e6]");
  return absl::OkStatus();
}

PhaseController::PhaseController(const ControllerConfig& config)
    : config_(config), plan_(InitialPlan()) {}

DirectivePlan PhaseController::InitialPlan() const {
  DirectivePlan p;
  p.phase = Phase::kAcquisition;
  p.lr = {LrSchedule::Kind::kLinear, 0, config_.warmup_end(), config_.base_lr, config_.peak_lr};
  p.optimizer.kind = OptimizerInstruction::Kind::kKeep;
  p.noise_std = config_.noise_std;
  return p;
}

DirectivePlan PhaseController::PlanFor(Phase to, uint64_t eff) const {
  const double lr_now = plan_.lr.At(eff);
  DirectivePlan p;
  p.phase = to;
  switch (to) {
    case Phase::kAcquisition:
      return InitialPlan();
    case Phase::kRefinement:
      p.lr = LrSchedule::Constant(config_.lr_cut * lr_now);
      p.optimizer = {OptimizerInstruction::Kind::kNaturalGradient, config_.kfac_damping,
                     config_.kfac_factor_interval, config_.kfac_inverse_interval};
      return p;
    case Phase::kPolish:
      if (lr_now > config_.lr_min && config_.total_steps > eff) {
        p.lr = {LrSchedule::Kind::kCosine, eff, config_.total_steps, lr_now, config_.lr_min};
      } else {
        p.lr = LrSchedule::Constant(lr_now);
      }
      p.optimizer = plan_.optimizer;
      return p;
    case Phase::kDone:
      p.lr = LrSchedule::Constant(lr_now);
      p.optimizer = plan_.optimizer;
      p.stop = true;
      return p;
  }
  return p;
}

Decision PhaseController::Enter(Phase to, Cause cause, std::string reason,
                                Evidence evidence, DirectivePlan plan,
                                uint64_t effective_step) {
  Decision d;
  d.from = phase_;
  d.to = to;
  d.cause = cause;
  d.reason = std::move(reason);
  d.evidence = std::move(evidence);
  d.plan = plan;
  phase_ = to;
  plan_ = std::move(plan);
  phase_start_step_ = effective_step;
  window_.clear();
  latched_ = 0;
  guard_armed_ = false;  // AcquisitionExit arms it after the automatic switch
  if (to == Phase::kPolish) {
    val_seen_ = false;
    val_stale_ = 0;
  }
  return d;
}

size_t PhaseController::SpanEvals() const {
  return static_cast<size_t>(config_.plateau_windows) * static_cast<size_t>(config_.window_evals);
}

PhaseController::Smoothed PhaseController::Smooth() const {
  Smoothed s;
  const size_t n = window_.size();
  if (n < SpanEvals()) return s;
  s.span_steps = static_cast<double>(window_.back().step - window_.front().step);
  s.span_evals = static_cast<int>(n);
  if (s.span_steps < static_cast<double>(config_.window_memory_steps)) return s;
  // The span in plateau_windows consecutive windows of (nearly) equal counts.
  const size_t k = static_cast<size_t>(config_.plateau_windows);
  std::vector<double> rank(k, 0.0), pr(k, 0.0), loss(k, 0.0), step(k, 0.0);
  double rank_ci_upper = 0.0;
  std::vector<int> count(k, 0), loss_count(k, 0);
  for (size_t i = 0; i < n; ++i) {
    const Observation& o = window_[i];
    const size_t j = i * k / n;
    rank[j] += o.effective_rank;
    pr[j] += o.participation_ratio;
    step[j] += static_cast<double>(o.step);
    ++count[j];
    if (std::isfinite(o.loss)) {
      loss[j] += o.loss;
      ++loss_count[j];
    }
    if (j == k - 1) {
      if (o.rank_censored || o.pr_censored) s.censored = true;
      if (o.loss_nonfinite || std::isinf(o.loss)) s.loss_nonfinite = true;
      rank_ci_upper += std::isnan(o.rank_ci_upper) ? o.effective_rank : o.rank_ci_upper;
    }
  }
  for (size_t j = 0; j < k; ++j) {
    rank[j] /= count[j];
    pr[j] /= count[j];
    step[j] /= count[j];
    if (loss_count[j] > 0) loss[j] /= loss_count[j];
  }
  auto spread = [](const std::vector<double>& v) {
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    double mean = 0.0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
    return mean != 0.0 ? (*hi - *lo) / std::abs(mean) : 0.0;
  };
  s.rank_now = rank[k - 1];
  s.rank_ci_upper_now = rank_ci_upper / count[k - 1];
  s.rank_first = rank[0];
  s.pr_now = pr[k - 1];
  s.pr_first = pr[0];
  s.rank_spread = spread(rank);
  s.pr_spread = spread(pr);
  s.loss_known = loss_count[0] > 0 && loss_count[k - 1] > 0;
  if (s.loss_known) {
    s.loss_now = loss[k - 1];
    s.loss_first = loss[0];
  }
  s.epochs = (step[k - 1] - step[0]) / static_cast<double>(config_.steps_per_epoch);
  s.ready = s.epochs > 0.0;
  return s;
}

int PhaseController::Latch(bool on, bool clearly_off, int count) {
  if (clearly_off) return 0;
  if (count == 0) return on ? 1 : 0;
  return count + 1;
}

std::optional<Decision> PhaseController::OnEvaluation(const Observation& obs,
                                                      uint64_t eff) {
  std::optional<Decision> d = Decide(obs, eff);
  if (d) d->decision_step = obs.step;
  return d;
}

std::optional<Decision> PhaseController::Decide(const Observation& obs, uint64_t eff) {
  if (phase_ == Phase::kDone) return std::nullopt;
  const ControllerConfig& c = config_;
  // Evaluations from before the phase took effect describe the previous
  // directive: they do not enter this phase's windows.
  if (obs.step >= phase_start_step_) {
    window_.push_back(obs);
    // Keep the shortest tail that is still a full span.
    const size_t need = SpanEvals();
    while (window_.size() > need &&
           (window_.back().step - window_[1].step >= c.window_memory_steps ||
            window_.size() > kMaxSpanEvals)) {
      window_.pop_front();
    }
  }
  if (held_) return std::nullopt;

  if (obs.step >= c.total_steps) {
    return Enter(Phase::kDone, Cause::kAutomatic,
                 absl::StrFormat("planned steps reached: step %d >= total_steps %d",
                                 obs.step, c.total_steps),
                 {{"step", static_cast<double>(obs.step)},
                  {"total_steps", static_cast<double>(c.total_steps)}},
                 PlanFor(Phase::kDone, eff), eff);
  }
  if (phase_ != Phase::kAcquisition && phase_ != Phase::kRefinement) return std::nullopt;
  // The guard of the switch to natural gradient waits for no dwell: a
  // diverging run is rolled back at the first evaluation that shows it.
  if (phase_ == Phase::kRefinement && guard_armed_) {
    if (auto d = Guard(obs, Smooth(), eff)) return d;
  }
  const uint64_t dwell = Dwell(obs.step);
  if (dwell < c.min_dwell_steps) {
    latched_ = 0;
    return std::nullopt;
  }
  if (phase_ == Phase::kRefinement && obs.step >= c.refine_budget_step()) {
    return Enter(Phase::kPolish, Cause::kAutomatic,
                 absl::StrFormat("refinement budget reached: step %d >= %.2f x %d = %d",
                                 obs.step, c.refine_budget_fraction, c.total_steps,
                                 c.refine_budget_step()),
                 {{"step", static_cast<double>(obs.step)},
                  {"refine_budget_fraction", c.refine_budget_fraction},
                  {"refine_budget_step", static_cast<double>(c.refine_budget_step())},
                  {"total_steps", static_cast<double>(c.total_steps)},
                  {"dwell_steps", static_cast<double>(dwell)},
                  {"min_dwell_steps", static_cast<double>(c.min_dwell_steps)}},
                 PlanFor(Phase::kPolish, eff), eff);
  }
  const Smoothed s = Smooth();
  if (!s.ready || (phase_ == Phase::kAcquisition && obs.step < c.warmup_end())) {
    latched_ = 0;
    return std::nullopt;
  }
  return phase_ == Phase::kAcquisition ? AcquisitionExit(s, obs.step, eff)
                                       : RefinementExit(s, obs.step, eff);
}

std::optional<Decision> PhaseController::AcquisitionExit(const Smoothed& s, uint64_t step,
                                                         uint64_t eff) {
  const ControllerConfig& c = config_;
  const double h = c.hysteresis;
  // Signed rates over the span, per epoch; positive = falling.
  const double pr_drop = s.pr_first > 0.0 ? (s.pr_first - s.pr_now) / s.pr_first / s.epochs : 0.0;
  const double rank_fraction = s.rank_now / c.sketch_rows;
  // The level test asks "is the rank fraction below the threshold?": it must
  // hold for the upper end of r90's confidence interval, not just the point
  // (docs/PHASES.md, "Which interval each test uses").
  const double rank_fraction_ci_upper = s.rank_ci_upper_now / c.sketch_rows;
  const double loss_rate = s.loss_known && s.loss_first != 0.0
                               ? (s.loss_first - s.loss_now) / std::abs(s.loss_first) / s.epochs
                               : std::numeric_limits<double>::quiet_NaN();
  signals_ = AcquisitionSignals{.step = step,
                                .rank_fraction = rank_fraction,
                                .rank_fraction_ci_upper = rank_fraction_ci_upper,
                                .rank_spread = s.rank_spread,
                                .pr_drop_per_epoch = pr_drop,
                                .loss_decrease_per_epoch = loss_rate,
                                .censored = s.censored};
  const bool loss_falling = std::isfinite(loss_rate) && loss_rate > c.loss_decrease_min;
  // A retried switch (after rollbacks) needs a tighter plateau band.
  const double epsilon = PlateauEpsilon();
  const bool on = !s.censored && std::abs(pr_drop) < c.id_drop_threshold &&
                  rank_fraction_ci_upper < c.rank_fraction_max &&
                  s.rank_spread < epsilon && loss_falling;
  const bool off = s.censored || std::abs(pr_drop) > c.id_drop_threshold * h ||
                   rank_fraction > c.rank_fraction_max * h ||
                   s.rank_spread > epsilon * h || !std::isfinite(loss_rate) ||
                   loss_rate < c.loss_decrease_min / h;
  latched_ = Latch(on, off, latched_);
  if (!on || latched_ < c.confirm_evals) return std::nullopt;
  const double lr_before = plan_.lr.At(eff);
  if (rollbacks_ > c.rollback_max_retries) {
    // Natural gradient failed every switch it was allowed: the run goes on
    // first-order, straight to the low-LR decay.
    return Enter(Phase::kPolish, Cause::kAutomatic,
                 absl::StrFormat("rank plateaued at r90 %.1f (r90 within a %.1f%% band < %.1f%%), "
                                 "loss falling %.2f%%/epoch; natural gradient was rolled back %d "
                                 "times (rollback_max_retries %d): no switch, first-order "
                                 "cosine decay from LR %.4g",
                                 s.rank_now, 100 * s.rank_spread, 100 * epsilon, 100 * loss_rate,
                                 rollbacks_, c.rollback_max_retries, lr_before),
                 {{"step", static_cast<double>(step)},
                  {"effective_rank", s.rank_now},
                  {"rank_spread", s.rank_spread},
                  {"plateau_epsilon", epsilon},
                  {"loss", s.loss_now},
                  {"loss_decrease_per_epoch", loss_rate},
                  {"rollbacks", static_cast<double>(rollbacks_)},
                  {"rollback_max_retries", static_cast<double>(c.rollback_max_retries)},
                  {"lr_before", lr_before}},
                 PlanFor(Phase::kPolish, eff), eff);
  }
  DirectivePlan plan = PlanFor(Phase::kRefinement, eff);
  // A retry damps harder: the failed switch's factors were too trusting.
  plan.optimizer.damping *= std::pow(c.retry_damping_factor, rollbacks_);
  // Guarded when there is a window and a pre-switch loss to hold it to.
  const bool guarded = c.rollback_window_steps > 0 && s.loss_known && std::isfinite(s.loss_now);
  plan.guard_steps = guarded ? c.rollback_window_steps : 0;
  Decision d = Enter(
      Phase::kRefinement, Cause::kAutomatic,
      absl::StrFormat(
          "%sgradient-covariance rank plateaued at r90 %.1f (rank fraction %.3f, 90%% CI up to %.3f < %.2f; "
          "r90 within a %.1f%% "
          "band < %.0f%% over %d evals, %.0f steps), PR %.1f changing %+.2f%%/epoch, within "
          "+-%.1f%%, loss still falling %.2f%%/epoch > %.1f%%, latched %d evals: natural "
          "gradient, LR %.4g -> %.4g",
          rollbacks_ > 0 ? absl::StrFormat("retry %d of %d after a rollback: ", rollbacks_,
                                           c.rollback_max_retries)
                         : std::string(),
          s.rank_now, rank_fraction, rank_fraction_ci_upper, c.rank_fraction_max,
          100 * s.rank_spread,
          100 * epsilon, s.span_evals, s.span_steps, s.pr_now, -100 * pr_drop,
          100 * c.id_drop_threshold, 100 * loss_rate, 100 * c.loss_decrease_min, latched_,
          lr_before, plan.lr.start_lr),
      {{"step", static_cast<double>(step)},
       {"effective_rank", s.rank_now},
       {"effective_rank_first", s.rank_first},
       {"rank_fraction", rank_fraction},
       {"rank_fraction_ci_upper", rank_fraction_ci_upper},
       {"rank_fraction_max", c.rank_fraction_max},
       {"sketch_rows", static_cast<double>(c.sketch_rows)},
       {"rank_spread", s.rank_spread},
       {"plateau_epsilon", epsilon},
       {"participation_ratio", s.pr_now},
       {"participation_ratio_first", s.pr_first},
       {"pr_drop_per_epoch", pr_drop},
       {"id_drop_threshold", c.id_drop_threshold},
       {"loss", s.loss_now},
       {"loss_decrease_per_epoch", loss_rate},
       {"loss_decrease_min", c.loss_decrease_min},
       {"window_evals", static_cast<double>(c.window_evals)},
       {"plateau_windows", static_cast<double>(c.plateau_windows)},
       {"span_evals", static_cast<double>(s.span_evals)},
       {"span_steps", s.span_steps},
       {"window_memory_steps", static_cast<double>(c.window_memory_steps)},
       {"latched_evals", static_cast<double>(latched_)},
       {"confirm_evals", static_cast<double>(c.confirm_evals)},
       {"hysteresis", c.hysteresis},
       {"dwell_steps", static_cast<double>(Dwell(step))},
       {"lr_before", lr_before},
       {"lr_after", plan.lr.start_lr},
       {"kfac_damping", plan.optimizer.damping},
       {"rollbacks", static_cast<double>(rollbacks_)},
       {"guard_steps", static_cast<double>(plan.guard_steps)}},
      plan, eff);
  if (guarded) {
    guard_armed_ = true;
    pre_switch_loss_ = s.loss_now;
    pre_switch_lr_ = lr_before;
  }
  return d;
}

std::optional<Decision> PhaseController::RefinementExit(const Smoothed& s, uint64_t step,
                                                        uint64_t eff) {
  // The spectrum is stable and natural gradient has slowed down. Without loss
  // reports the spectrum alone decides. A loss that rises (faster than
  // divergence_loss_rate) or is non-finite is divergence, never a plateau;
  // a loss still falling fast holds the trigger off too.
  const ControllerConfig& c = config_;
  const double h = c.hysteresis;
  const double loss_rate = LossRate(s);
  const bool diverging = Diverging(s);
  const bool loss_slow =
      !diverging && (!std::isfinite(loss_rate) || (loss_rate < c.refine_loss_rate_min &&
                                                   loss_rate > -c.divergence_loss_rate));
  const bool on = !s.censored && s.rank_spread < c.plateau_epsilon &&
                  s.pr_spread < c.plateau_epsilon && loss_slow;
  const bool off = s.censored || s.loss_nonfinite || s.rank_spread > c.plateau_epsilon * h ||
                   s.pr_spread > c.plateau_epsilon * h ||
                   (std::isfinite(loss_rate) && (loss_rate > c.refine_loss_rate_min * h ||
                                                 loss_rate < -c.divergence_loss_rate * h));
  latched_ = Latch(on, off, latched_);
  if (!on || latched_ < c.confirm_evals) return std::nullopt;
  DirectivePlan plan = PlanFor(Phase::kPolish, eff);
  return Enter(
      Phase::kPolish, Cause::kAutomatic,
      absl::StrFormat(
          "spectrum stable (r90 within a %.1f%% band, PR within %.1f%%, < %.0f%% over %d evals, "
          "%.0f steps) and loss change %+.2f%%/epoch within [-%.1f%%, +%.1f%%], latched %d "
          "evals: cosine decay %.4g -> %.4g until step %d",
          100 * s.rank_spread, 100 * s.pr_spread, 100 * c.plateau_epsilon, s.span_evals,
          s.span_steps, std::isfinite(loss_rate) ? -100 * loss_rate : 0.0,
          100 * c.refine_loss_rate_min, 100 * c.divergence_loss_rate, latched_, plan.lr.start_lr, plan.lr.end_lr,
          c.total_steps),
      {{"step", static_cast<double>(step)},
       {"effective_rank", s.rank_now},
       {"rank_spread", s.rank_spread},
       {"participation_ratio", s.pr_now},
       {"pr_spread", s.pr_spread},
       {"plateau_epsilon", c.plateau_epsilon},
       {"loss", s.loss_now},
       {"loss_improvement_per_epoch", loss_rate},
       {"refine_loss_rate_min", c.refine_loss_rate_min},
       {"divergence_loss_rate", c.divergence_loss_rate},
       {"window_evals", static_cast<double>(c.window_evals)},
       {"plateau_windows", static_cast<double>(c.plateau_windows)},
       {"span_evals", static_cast<double>(s.span_evals)},
       {"span_steps", s.span_steps},
       {"window_memory_steps", static_cast<double>(c.window_memory_steps)},
       {"latched_evals", static_cast<double>(latched_)},
       {"confirm_evals", static_cast<double>(c.confirm_evals)},
       {"hysteresis", c.hysteresis},
       {"dwell_steps", static_cast<double>(Dwell(step))}},
      plan, eff);
}

std::optional<Decision> PhaseController::OnValidation(uint64_t step, double value,
                                                      uint64_t eff) {
  std::optional<Decision> d = DecideOnValidation(step, value, eff);
  if (d) d->decision_step = step;
  return d;
}

std::optional<Decision> PhaseController::DecideOnValidation(uint64_t step, double value,
                                                            uint64_t eff) {
  if (phase_ != Phase::kPolish || held_ || !std::isfinite(value)) return std::nullopt;
  if (step < phase_start_step_) return std::nullopt;  // before POLISH took effect
  const ControllerConfig& c = config_;
  if (!val_seen_) {
    val_seen_ = true;
    val_best_ = value;
    val_stale_ = 0;
    return std::nullopt;
  }
  const bool improved = c.val_maximize ? value > val_best_ + c.val_min_delta
                                       : value < val_best_ - c.val_min_delta;
  if (improved) {
    val_best_ = value;
    val_stale_ = 0;
    return std::nullopt;
  }
  ++val_stale_;
  if (val_stale_ < c.val_patience || Dwell(step) < c.min_dwell_steps) return std::nullopt;
  return Enter(Phase::kDone, Cause::kAutomatic,
               absl::StrFormat("validation plateaued: best %.6g, %d reports without an "
                               "improvement of %.3g (last %.6g at step %d): stop",
                               val_best_, val_stale_, c.val_min_delta, value, step),
               {{"val_best", val_best_},
                {"val_last", value},
                {"val_stale_reports", static_cast<double>(val_stale_)},
                {"val_patience", static_cast<double>(c.val_patience)},
                {"val_min_delta", c.val_min_delta},
                {"step", static_cast<double>(step)},
                {"dwell_steps", static_cast<double>(Dwell(step))},
                {"min_dwell_steps", static_cast<double>(c.min_dwell_steps)}},
               PlanFor(Phase::kDone, eff), eff);
}

Decision PhaseController::ForcePhase(Phase to, bool hold, const std::string& reason,
                                     uint64_t eff) {
  held_ = hold;
  pinned_ = false;
  return Enter(to, Cause::kOverride,
               absl::StrCat("operator forced ", PhaseName(to), hold ? " (held)" : "",
                            reason.empty() ? "" : ": ", reason),
               {}, PlanFor(to, eff), eff);
}

Decision PhaseController::Pin(DirectivePlan plan, const std::string& reason,
                              uint64_t eff) {
  if (!pinned_) {
    unpinned_plan_ = plan_;
    // A release re-issues the plan, not its restore, and no guard is armed
    // for it: no snapshot either.
    unpinned_plan_.rollback = false;
    unpinned_plan_.guard_steps = 0;
  }
  held_ = true;
  pinned_ = true;
  plan.phase = plan.stop ? Phase::kDone : phase_;
  return Enter(plan.phase, Cause::kOverride,
               absl::StrCat("operator pinned a directive", reason.empty() ? "" : ": ", reason),
               {}, plan, eff);
}

std::optional<Decision> PhaseController::Release(const std::string& reason,
                                                 uint64_t eff) {
  held_ = false;
  if (!pinned_) return std::nullopt;
  pinned_ = false;
  return Enter(unpinned_plan_.phase, Cause::kRelease,
               absl::StrCat("operator released the run to automatic control",
                            reason.empty() ? "" : ": ", reason),
               {}, unpinned_plan_, eff);
}

Decision PhaseController::Finish(Cause cause, const std::string& reason, uint64_t eff) {
  return Enter(Phase::kDone, cause, reason, {}, PlanFor(Phase::kDone, eff), eff);
}

}  // namespace spotter
