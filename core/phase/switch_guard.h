// The trainer's side of the guarded switch to natural gradient
// (docs/PHASES.md, "Guarded switch and rollback"), without a model: it reads
// the directive in force at each step boundary and says when to snapshot
// the model and optimizer state, when to restore it and when the snapshot
// may go. The C++ client has no model: a trainer built on RunSession passes
// callbacks that do the work (tests/unit/switch_guard_test.cc); the Python
// Monitor does the same with torch state (spotter/torch/guard.py).
//
// Every rank holds the same directives and calls OnStep with the same steps,
// so every rank snapshots at the same step (the switch's effective step) and
// restores at the same step (the rollback's effective step): no collective.
#ifndef SPOTTER_CORE_PHASE_SWITCH_GUARD_H_
#define SPOTTER_CORE_PHASE_SWITCH_GUARD_H_

#include <cstdint>
#include <functional>
#include <optional>

#include "core/phase/directive.h"

namespace spotter {

// Not thread-safe: the training loop calls it.
class SwitchGuard {
 public:
  struct Callbacks {
    // Keep model and optimizer state as they are before step `step`'s update
    // (replaces a previous snapshot).
    std::function<void(uint64_t step)> snapshot;
    // Put the snapshot taken at `snapshot_step` back, before step `step`'s
    // update, which the trainer then skips (its gradients were taken at the
    // diverged weights). The directive (first-order, lower LR) applies from
    // `step` on.
    std::function<void(uint64_t step, uint64_t snapshot_step, const Directive& rollback)> restore;
    // The snapshot is no longer needed (a later phase took effect).
    std::function<void(uint64_t step)> release;
  };

  explicit SwitchGuard(Callbacks callbacks) : cb_(std::move(callbacks)) {}

  // Call at every step boundary, before the update, with the directive in
  // force at `step` (RunSession::DirectiveAt(step)). Acts once per directive:
  // a guarded natural-gradient directive snapshots, a rollback restores (if
  // a snapshot is held), any other directive releases the snapshot. Returns
  // true when it restored at this step: skip this step's update.
  bool OnStep(uint64_t step, const std::optional<Directive>& in_force);

  bool holds_snapshot() const { return snapshot_step_.has_value(); }
  int restores() const { return restores_; }
  // Rollbacks that found no snapshot (the trainer started after the switch,
  // or the switch was not guarded): the directive still applies.
  int missed_restores() const { return missed_; }

 private:
  Callbacks cb_;
  uint64_t applied_version_ = 0;  // the directive the last OnStep acted on
  std::optional<uint64_t> snapshot_step_;
  int restores_ = 0;
  int missed_ = 0;
};

}  // namespace spotter

#endif  // SPOTTER_CORE_PHASE_SWITCH_GUARD_H_
