#include "core/phase/switch_guard.h"

namespace spotter {

bool SwitchGuard::OnStep(uint64_t step, const std::optional<Directive>& in_force) {
  if (!in_force || in_force->version == applied_version_) return false;
  applied_version_ = in_force->version;
  const DirectivePlan& plan = in_force->plan;
  if (plan.rollback) {
    if (!snapshot_step_) {
      ++missed_;
      return false;
    }
    const uint64_t taken = *snapshot_step_;
    snapshot_step_.reset();  // used once: a re-issued plan never restores twice
    ++restores_;
    if (cb_.restore) cb_.restore(step, taken, *in_force);
    return true;
  }
  if (plan.optimizer.kind == OptimizerInstruction::Kind::kNaturalGradient && plan.guard_steps > 0) {
    snapshot_step_ = step;
    if (cb_.snapshot) cb_.snapshot(step);
    return false;
  }
  if (snapshot_step_) {
    snapshot_step_.reset();
    if (cb_.release) cb_.release(step);
  }
  return false;
}

}  // namespace spotter
