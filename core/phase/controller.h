// The three-phase target-acquisition protocol as an explicit state machine:
// ACQUISITION -> REFINEMENT -> POLISH -> DONE (docs/PHASES.md).
//
// Deterministic given its inputs: the same observations, validation reports
// and operator actions in the same order give the same decisions. It keeps no
// clock and does no I/O; the caller supplies steps and turns decisions into
// versioned directives.
#ifndef SPOTTER_CORE_PHASE_CONTROLLER_H_
#define SPOTTER_CORE_PHASE_CONTROLLER_H_

#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "core/phase/directive.h"

namespace spotter {

// Every threshold of the protocol, with its default. Rates are relative and
// per epoch; windows count evaluations.
struct ControllerConfig {
  uint64_t total_steps = 1000;     // planned optimizer steps (> 0)
  uint64_t steps_per_epoch = 100;  // for per-epoch rates (> 0)
  double base_lr = 0.01;           // LR at step 0 of the warm-up
  double peak_lr = 0.1;            // LR at the end of the warm-up (> 0)
  int sketch_rows = 64;            // l: rank_fraction = r90 / l

  double warmup_fraction = 0.15;    // warm-up length / total_steps, in (0, 1)
  double id_drop_threshold = 0.05;  // ACQ exit: PR drop per epoch below this
  double rank_fraction_max = 0.2;   // ACQ exit: r90 / l below this
  double plateau_epsilon = 0.1;     // plateau: relative change below this
  int window_evals = 5;             // smoothing / look-back window (evals)
  double loss_decrease_min = 0.01;  // ACQ exit: loss falls faster than this
  int confirm_evals = 3;            // consecutive evals a trigger must hold
  // Hysteresis: once a condition holds, it is only dropped when its value
  // passes the threshold by this factor (looser) in the other direction.
  double hysteresis = 1.5;
  uint64_t min_dwell_steps = 50;        // least steps in a phase before leaving
  double lr_cut = 0.5;                  // REFINEMENT LR = lr_cut * LR in force
  double refine_loss_rate_min = 0.02;   // REF exit: loss improvement below this
  double refine_budget_fraction = 0.75; // REF exit at the latest at this step
  double lr_min = 0.001;                // POLISH cosine floor
  int val_patience = 5;                 // POLISH: reports without improvement
  double val_min_delta = 1e-4;          // POLISH: least improvement that counts
  bool val_maximize = false;            // POLISH: metric goal
  double kfac_damping = 1e-3;
  uint32_t kfac_factor_interval = 10;
  uint32_t kfac_inverse_interval = 100;
  double noise_std = 0.0;  // ACQUISITION gradient-noise injection

  uint64_t warmup_end() const;
  // OK, or INVALID_ARGUMENT naming the first field out of range.
  absl::Status Validate() const;
};

// One evaluation of the run's spectrum, as the controller sees it.
struct Observation {
  uint64_t step = 0;
  double loss = std::numeric_limits<double>::quiet_NaN();  // NaN: not reported
  double effective_rank = 0.0;  // r90 point estimate
  bool rank_censored = false;   // r90 beyond what the sketch holds
  double participation_ratio = 0.0;
};

// A phase change (or an operator action) and the directive content it needs.
struct Decision {
  Phase from = Phase::kAcquisition;
  Phase to = Phase::kAcquisition;
  Cause cause = Cause::kAutomatic;
  std::string reason;
  Evidence evidence;
  DirectivePlan plan;
};

// Not thread-safe: the owner (one run) serialises calls.
class PhaseController {
 public:
  // Precondition: config.Validate().ok().
  explicit PhaseController(const ControllerConfig& config);

  // The ACQUISITION plan a run starts with: linear warm-up from base_lr to
  // peak_lr over [0, warmup_end], first-order optimizer, optional noise.
  DirectivePlan InitialPlan() const;

  // Feeds one evaluation. effective_step: the step a directive issued now
  // would take effect at (ahead of every rank). Returns a decision when a
  // trigger fires; the caller must issue its plan at effective_step.
  std::optional<Decision> OnEvaluation(const Observation& obs,
                                       uint64_t effective_step);

  // Feeds a validation metric reported at `step`.
  std::optional<Decision> OnValidation(uint64_t step, double value,
                                       uint64_t effective_step);

  // Operator: move to `to` now (any phase, also backwards). With hold, the
  // automatic triggers stay off until Release().
  Decision ForcePhase(Phase to, bool hold, const std::string& reason,
                      uint64_t effective_step);

  // Operator: adopt `plan` (its phase field is kept as the current phase) and
  // hold it until Release().
  Decision Pin(DirectivePlan plan, const std::string& reason,
               uint64_t effective_step);

  // Operator: automatic triggers resume. When a pinned directive was in force,
  // returns the decision that re-issues the current phase's own plan.
  std::optional<Decision> Release(const std::string& reason, uint64_t effective_step);

  // The run is over (FinishRun or DONE reached): the STOP plan.
  Decision Finish(Cause cause, const std::string& reason, uint64_t effective_step);

  Phase phase() const { return phase_; }
  bool held() const { return held_; }
  const DirectivePlan& current_plan() const { return plan_; }
  const ControllerConfig& config() const { return config_; }

 private:
  struct Smoothed {
    bool ready = false;
    double rank_now = 0, rank_prev = 0;
    double pr_now = 0, pr_prev = 0;
    double loss_now = 0, loss_prev = 0;
    bool loss_known = false;
    double epochs = 0;  // epochs between the two windows' centres
    bool censored = false;
  };

  // Moves to `to` with `plan`, resetting the per-phase detectors.
  Decision Enter(Phase to, Cause cause, std::string reason, Evidence evidence,
                 DirectivePlan plan, uint64_t effective_step);
  DirectivePlan PlanFor(Phase to, uint64_t effective_step) const;
  Smoothed Smooth() const;
  // Hysteresis-counted condition: returns the updated consecutive count.
  static int Count(bool on, bool clearly_off, int count);

  ControllerConfig config_;
  Phase phase_ = Phase::kAcquisition;
  uint64_t phase_start_step_ = 0;
  bool held_ = false;
  bool pinned_ = false;  // plan_ came from Pin(), not from PlanFor()
  DirectivePlan unpinned_plan_;  // the plan a Release() goes back to
  DirectivePlan plan_;
  std::deque<Observation> window_;  // last 2 * window_evals observations
  int confirm_ = 0;                 // consecutive evals the exit condition held
  bool armed_ = false;              // hysteresis state of the exit condition
  // POLISH validation tracking.
  bool val_seen_ = false;
  double val_best_ = 0.0;
  int val_stale_ = 0;
};

}  // namespace spotter

#endif  // SPOTTER_CORE_PHASE_CONTROLLER_H_
