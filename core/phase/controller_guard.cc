// The divergence signal and the guard of the switch to natural gradient
// (docs/PHASES.md, "Divergence" and "Guarded switch and rollback"). Members
// of PhaseController kept apart from the plateau triggers in controller.cc.
#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/phase/controller.h"

namespace spotter {

double PhaseController::LossRate(const Smoothed& s) {
  return s.ready && s.loss_known && s.loss_first != 0.0
             ? (s.loss_first - s.loss_now) / std::abs(s.loss_first) / s.epochs
             : std::numeric_limits<double>::quiet_NaN();
}

bool PhaseController::Diverging(const Smoothed& s) const {
  if (s.loss_nonfinite) return true;
  const double rate = LossRate(s);
  return std::isfinite(rate) && rate < -config_.divergence_loss_rate;
}

double PhaseController::PlateauEpsilon() const {
  return config_.plateau_epsilon * std::pow(config_.retry_plateau_factor, rollbacks_);
}

std::optional<Decision> PhaseController::Guard(const Observation& obs, const Smoothed& s,
                                               uint64_t eff) {
  const ControllerConfig& c = config_;
  // Evaluations before the switch took effect measured first-order steps.
  if (obs.step < phase_start_step_) return std::nullopt;
  const uint64_t since = obs.step - phase_start_step_;
  if (since > c.rollback_window_steps) {
    // The window is over: the switch stands (and the trainer may drop its
    // snapshot once the next phase takes effect).
    guard_armed_ = false;
    return std::nullopt;
  }
  // Three ways to fail, in order of urgency: a non-finite loss, the loss
  // above its pre-switch level by the margin, the divergence signal (the
  // smoothed loss rising faster than divergence_loss_rate over a full span)
  // with the loss above its pre-switch level.
  // The level test reads the mean loss of the phase's last window_evals
  // evaluations (fewer right after the switch): one evaluation's loss is a
  // mean over a few batches only, and a small loss is noisy in relative
  // terms; the window smooths that without waiting long for a blow-up.
  const bool nonfinite = obs.loss_nonfinite || std::isinf(obs.loss);
  double sum = 0.0;
  int n = 0, evals = 0;
  for (auto it = window_.rbegin(); it != window_.rend() && evals < c.window_evals; ++it, ++evals) {
    if (std::isfinite(it->loss)) {
      sum += it->loss;
      ++n;
    }
  }
  const double loss = n > 0 ? sum / n : std::numeric_limits<double>::quiet_NaN();
  const double limit = pre_switch_loss_ + c.rollback_loss_margin * std::abs(pre_switch_loss_);
  const bool above = std::isfinite(loss) && loss > limit;
  // The divergence signal counts against the switch only while the loss is
  // above where the switch found it: a loss that fell far under natural
  // gradient and now wobbles at its floor (rising in relative terms, by
  // nothing in absolute ones) is a switch that worked.
  const double rate = LossRate(s);
  const bool rising = std::isfinite(rate) && rate < -c.divergence_loss_rate &&
                      std::isfinite(loss) && loss > pre_switch_loss_;
  if (!nonfinite && !above && !rising) return std::nullopt;

  std::string why;
  if (nonfinite) {
    why = "the loss went non-finite";
  } else if (above) {
    why = absl::StrFormat("loss %.6g (mean of %d evals) > %.6g (pre-switch %.6g + %.0f%%)", loss,
                          n, limit, pre_switch_loss_, 100 * c.rollback_loss_margin);
  } else {
    why = absl::StrFormat("loss rising %.2f%%/epoch over %d evals > %.1f%% (divergence)",
                          -100 * rate, s.span_evals, 100 * c.divergence_loss_rate);
  }
  const uint64_t switch_step = phase_start_step_;
  const double lr_before = plan_.lr.At(eff);
  DirectivePlan plan;
  plan.phase = Phase::kAcquisition;
  plan.lr = LrSchedule::Constant(c.rollback_lr_factor * pre_switch_lr_);
  plan.optimizer.kind = OptimizerInstruction::Kind::kKeep;
  plan.noise_std = c.noise_std;
  plan.rollback = true;
  plan.snapshot_step = switch_step;
  ++rollbacks_;
  const int retries_left = std::max(0, c.rollback_max_retries - rollbacks_ + 1);
  Evidence evidence = {
      {"step", static_cast<double>(obs.step)},
      {"switch_step", static_cast<double>(switch_step)},
      {"steps_since_switch", static_cast<double>(since)},
      {"rollback_window_steps", static_cast<double>(c.rollback_window_steps)},
      {"loss", loss},
      {"loss_evals", static_cast<double>(n)},
      {"loss_nonfinite", nonfinite ? 1.0 : 0.0},
      {"pre_switch_loss", pre_switch_loss_},
      {"rollback_loss_margin", c.rollback_loss_margin},
      {"loss_limit", limit},
      {"loss_rise_per_epoch", std::isfinite(rate) ? -rate : std::nan("")},
      {"divergence_loss_rate", c.divergence_loss_rate},
      {"rollbacks", static_cast<double>(rollbacks_)},
      {"rollback_max_retries", static_cast<double>(c.rollback_max_retries)},
      {"retries_left", static_cast<double>(retries_left)},
      {"lr_before", lr_before},
      {"lr_after", plan.lr.start_lr},
  };
  std::string reason = absl::StrFormat(
      "natural-gradient switch at step %d failed its guard %d steps in: %s: rollback to the "
      "snapshot of step %d, first-order at LR %.4g (%.2f x %.4g); %s",
      switch_step, since, why, switch_step, plan.lr.start_lr, c.rollback_lr_factor,
      pre_switch_lr_,
      retries_left > 0
          ? absl::StrFormat("%d retry left, with a plateau band x %.2f and damping x %.3g",
                            retries_left, std::pow(c.retry_plateau_factor, rollbacks_),
                            std::pow(c.retry_damping_factor, rollbacks_))
          : std::string("no retry left: the run stays first-order"));
  return Enter(Phase::kAcquisition, Cause::kRollback, std::move(reason), std::move(evidence), plan,
               eff);
}

}  // namespace spotter
