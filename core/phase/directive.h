// Directives: what the server tells every rank of a run to do, from which step.
#ifndef SPOTTER_CORE_PHASE_DIRECTIVE_H_
#define SPOTTER_CORE_PHASE_DIRECTIVE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace spotter {

// The phases of the target-acquisition protocol, in order.
enum class Phase {
  kAcquisition,  // high-LR warm-up: erosion of redundant directions
  // Natural gradient and an LR cut: the paper's "dope re-ask" (the firing
  // solution recomputed once the first rounds show where they land).
  kRefinement,
  kPolish,  // low-LR cosine decay until validation plateaus
  kDone,    // training should stop
};

// Who or what caused a directive or a transition.
enum class Cause {
  kAutomatic,  // the phase controller's triggers
  kOverride,   // an operator forced a phase or pinned a directive
  kRelease,    // an operator released the run back to automatic control
  kFinish,     // the run was finished through the API
  // The natural-gradient switch failed its guard (the loss rose past its
  // margin or went non-finite): back to the snapshot, first-order, lower LR.
  kRollback,
};

const char* PhaseName(Phase p);  // "acquisition", "refinement", ...
const char* CauseName(Cause c);  // "automatic", "override", ...

// A learning-rate schedule evaluated locally by every trainer.
//   step <= start_step -> start_lr; step >= end_step -> end_lr; in between
//   linear or cosine interpolation. kConstant is start_lr everywhere.
struct LrSchedule {
  enum class Kind { kConstant, kLinear, kCosine };
  Kind kind = Kind::kConstant;
  uint64_t start_step = 0;
  uint64_t end_step = 0;
  double start_lr = 0.0;
  double end_lr = 0.0;

  // The learning rate at `step`.
  double At(uint64_t step) const;

  static LrSchedule Constant(double lr) { return {Kind::kConstant, 0, 0, lr, lr}; }
};

struct OptimizerInstruction {
  enum class Kind {
    kKeep,             // the trainer's own first-order optimizer
    kNaturalGradient,  // K-FAC preconditioning with the settings below
  };
  Kind kind = Kind::kKeep;
  double damping = 0.0;                  // Tikhonov damping of the factors
  uint32_t factor_update_interval = 0;   // steps between factor updates
  uint32_t inverse_update_interval = 0;  // steps between inversions
};

// What to do, without the bookkeeping the server adds when it issues it.
struct DirectivePlan {
  Phase phase = Phase::kAcquisition;
  LrSchedule lr;
  OptimizerInstruction optimizer;
  bool stop = false;
  double noise_std = 0.0;  // gradient-noise std relative to the gradient RMS
  // The guarded switch (docs/PHASES.md, "Guarded switch and rollback").
  // On a natural-gradient directive: > 0 asks the trainer to snapshot model
  // and optimizer state at the step it switches, because for this many steps
  // after the switch the server may roll it back. 0: no guard, no snapshot.
  uint64_t guard_steps = 0;
  // A rollback: at effective_step every rank restores the snapshot it took at
  // the switch to natural gradient that took effect at snapshot_step, and
  // continues under this plan (first-order, lower LR). Step counters keep
  // counting; only model and optimizer state go back.
  bool rollback = false;
  uint64_t snapshot_step = 0;  // effective step of the switch being rolled back
};

struct Directive {
  uint64_t version = 0;         // 1, 2, ... per run
  uint64_t effective_step = 0;  // first step it applies at
  DirectivePlan plan;
  std::string reason;
  bool advisory = false;  // ADVISE mode: never applied
  Cause cause = Cause::kAutomatic;
  absl::Time issued_at;
};

// Named numbers that justify a transition, in the order they were recorded.
using Evidence = std::vector<std::pair<std::string, double>>;

struct Transition {
  uint64_t step = 0;  // effective step of the transition's directive
  absl::Time time;
  Phase from = Phase::kAcquisition;
  Phase to = Phase::kAcquisition;
  Cause cause = Cause::kAutomatic;
  std::string reason;
  Evidence evidence;
  uint64_t directive_version = 0;
  // The step that decided it: an evaluation's or a validation report's, or
  // for operator actions the run's highest step when they came. `step` (the
  // effective step) trails it by the delivery margin.
  uint64_t decision_step = 0;
};

// The directive in force at `step`: the highest version whose effective_step
// <= step, skipping advisory ones when skip_advisory. nullptr if none.
// Precondition: `directives` sorted by version.
const Directive* DirectiveInForce(const std::vector<Directive>& directives, uint64_t step,
                                  bool skip_advisory = true);

}  // namespace spotter

#endif  // SPOTTER_CORE_PHASE_DIRECTIVE_H_
