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

// Every threshold of the protocol, with its default (docs/PHASES.md). Rates
// are relative and per epoch; windows count evaluations; steps are the
// trainers' optimizer steps.
struct ControllerConfig {
  uint64_t total_steps = 1000;     // planned optimizer steps (> 0); DONE at it
  uint64_t steps_per_epoch = 100;  // converts per-step changes to per-epoch rates (> 0)
  double base_lr = 0.01;           // LR at step 0 of the warm-up (>= 0)
  double peak_lr = 0.1;            // LR at the end of the warm-up (> 0)
  // l, the rows of the run's Frequent Directions sketch. The rank fraction is
  // r90 / l: the share of the eigenvalues the sketch holds that carry 90% of
  // the trace (the spectrum summary reports the same number). It depends on
  // l, so pick l at least 5x the effective rank you expect at the plateau.
  int sketch_rows = 64;

  double warmup_fraction = 0.15;  // warm-up length / total_steps, in (0, 1)
  // ACQUISITION exit: the smoothed participation ratio may change by at most
  // this fraction per epoch, in either direction, over the plateau span (the
  // paper's "ID drop rate below a threshold", made two-sided: a PR rising fast
  // is no more settled than one falling fast). In (0, 10).
  double id_drop_threshold = 0.05;
  double rank_fraction_max = 0.2;  // ACQUISITION exit: r90 / l below this, in (0, 1]
  // Plateau: over the plateau span, the spread (max - min) / mean of the
  // smoothed r90 (and, in REFINEMENT, of the PR) is below this: the signal
  // stayed inside a band, in both directions, for the whole span, so neither
  // a fall, a rise nor a turning point passes. In (0, 10).
  double plateau_epsilon = 0.1;
  // Smoothing window, in evaluations: every signal is a mean over
  // window_evals evaluations. In [1, 1000].
  int window_evals = 5;
  // The plateau span is plateau_windows consecutive smoothing windows (and at
  // least window_memory_steps long): the detectors need that many of the
  // current phase's evaluations before they can fire. In [2, 100].
  int plateau_windows = 3;
  // The run's sketch window memory in steps (the exponential window's
  // 1 / (1 - decay), the fixed window's length; 0: none): a plateau must hold
  // over a span at least this long, or it could be the window's own lag.
  uint64_t window_memory_steps = 0;
  // ACQUISITION exit: the smoothed loss must still fall faster than this,
  // relative, per epoch ("while the loss is still decreasing"). In [0, 10).
  double loss_decrease_min = 0.01;
  // Consecutive evaluations a trigger must stay latched before it fires; it
  // fires only on an evaluation where its condition holds. In [1, 1000].
  int confirm_evals = 3;
  // Hysteresis of every latched trigger: it latches when its condition holds
  // and unlatches only when a value passes its threshold by this factor in
  // the other direction (e.g. rank fraction > 1.5 x 0.2). In [1, 100).
  double hysteresis = 1.5;
  // Least steps a phase is in force (from its directive's effective_step)
  // before any automatic trigger, budget and validation stop included, may
  // leave it. DONE at total_steps ignores it.
  uint64_t min_dwell_steps = 50;
  double lr_cut = 0.5;                   // REFINEMENT LR = lr_cut x LR in force, in (0, 1]
  double refine_loss_rate_min = 0.02;    // REFINEMENT exit: loss improvement per epoch below this
  double refine_budget_fraction = 0.75;  // REFINEMENT exit at the latest at this step fraction
  double lr_min = 0.001;                 // POLISH: cosine decay ends here at total_steps (>= 0)
  int val_patience = 5;                  // POLISH: reports without improvement before STOP
  double val_min_delta = 1e-4;           // POLISH: least improvement that counts (metric units)
  bool val_maximize = false;             // POLISH: the metric's goal
  double kfac_damping = 1e-3;            // REFINEMENT directive: K-FAC damping (> 0)
  uint32_t kfac_factor_interval = 10;    // REFINEMENT directive: steps between factor updates
  uint32_t kfac_inverse_interval = 100;  // REFINEMENT directive: steps between inversions
  double noise_std = 0.0;  // ACQUISITION gradient-noise injection, relative to gradient RMS

  // Divergence signal: the smoothed loss rising faster than this, relative,
  // per epoch, over the plateau span (or any non-finite loss) is divergence,
  // never a plateau. In (0, 10).
  double divergence_loss_rate = 0.01;
  // The guarded switch (docs/PHASES.md): for this many steps after the
  // automatic switch to natural gradient takes effect, a loss above its
  // pre-switch level by rollback_loss_margin, a non-finite loss or the
  // divergence signal rolls the switch back. 0: no guard (and no snapshot).
  // The server's default is 5% of total_steps, as here for the default run.
  uint64_t rollback_window_steps = 50;
  // Relative margin over the pre-switch loss (the smoothed loss the switch
  // decided on): the mean loss of the phase's last window_evals evaluations
  // above (1 + margin) x it fails the guard. Wide by default: it is there to
  // catch a blow-up, not the noise of a small loss. In (0, 100).
  double rollback_loss_margin = 0.5;
  // After a rollback: first-order at this factor x the LR in force before the
  // switch. In (0, 1].
  double rollback_lr_factor = 0.5;
  // Switches retried after rollbacks; once used up, the ACQUISITION exit goes
  // to POLISH (first-order) instead of natural gradient. In [0, 100].
  int rollback_max_retries = 1;
  // Retry k (k = rollbacks so far) needs a plateau band of plateau_epsilon x
  // retry_plateau_factor^k and sends kfac_damping x retry_damping_factor^k.
  double retry_plateau_factor = 0.5;  // In (0, 1].
  double retry_damping_factor = 10.0;  // In [1, 1e6].

  // The last step of the warm-up: round(warmup_fraction x total_steps).
  uint64_t warmup_end() const;
  // The latest step REFINEMENT lasts to: round(refine_budget_fraction x total_steps).
  uint64_t refine_budget_step() const;
  // OK, or INVALID_ARGUMENT naming the first field out of range.
  absl::Status Validate() const;
};

// One evaluation of the run's spectrum, as the controller sees it.
struct Observation {
  uint64_t step = 0;                                       // the highest step the evaluation covers
  double loss = std::numeric_limits<double>::quiet_NaN();  // NaN: not reported
  double effective_rank = 0.0;       // r90 point estimate of the gradient covariance
  bool rank_censored = false;        // r90 beyond what the sketch holds (value is a bound)
  double participation_ratio = 0.0;  // bias-corrected PR
  bool pr_censored = false;          // PR beyond what the sketch holds (value is a bound)
  // Upper end of r90's sampling confidence interval; NaN: unknown (the point
  // is used). The rank-fraction test reads it (docs/PHASES.md, "Which
  // interval each test uses").
  double rank_ci_upper = std::numeric_limits<double>::quiet_NaN();
  // Some rank reported a non-finite loss since the previous evaluation (the
  // loss itself is then the mean of the finite ones, or NaN).
  bool loss_nonfinite = false;
};

// What the ACQUISITION exit's tests measured at one evaluation (the span
// full, the warm-up and the dwell over): the values its thresholds are
// compared with. Calibration (core/calibrate/) reads them to propose
// thresholds from a population of runs.
struct AcquisitionSignals {
  uint64_t step = 0;
  // Smoothed r90 / sketch_rows, and the same from r90's CI upper end (the
  // one compared with rank_fraction_max).
  double rank_fraction = 0.0;
  double rank_fraction_ci_upper = 0.0;
  // (max - min) / mean of r90's window means: vs plateau_epsilon.
  double rank_spread = 0.0;
  // Signed rates per epoch, positive = falling: |PR rate| vs
  // id_drop_threshold, the loss's vs loss_decrease_min (NaN: no loss).
  double pr_drop_per_epoch = 0.0;
  double loss_decrease_per_epoch = 0.0;
  bool censored = false;  // r90 or the PR censored in the last window
};

// A phase change (or an operator action) and the directive content it needs.
// `evidence` names every value, window and threshold that fired it.
struct Decision {
  Phase from = Phase::kAcquisition;
  Phase to = Phase::kAcquisition;
  Cause cause = Cause::kAutomatic;
  std::string reason;
  Evidence evidence;
  DirectivePlan plan;
  // The step of the evaluation or validation report that decided (unset for
  // operator actions). The directive takes effect later, at its effective
  // step: the delivery margin.
  std::optional<uint64_t> decision_step;
};

// The state machine ACQUISITION -> REFINEMENT -> POLISH -> DONE with its
// triggers. A trigger is evaluated only when its phase has been in force for
// min_dwell_steps (counted from the directive's effective_step) and its
// plateau span is full: plateau_windows x window_evals evaluations taken since
// then, covering at least window_memory_steps. Every plateau test is
// two-sided and holds over the whole span (docs/PHASES.md). A trigger latches
// with hysteresis and fires after confirm_evals latched evaluations.
//
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
  // Evaluations of steps before the current phase's effective_step (the
  // trainers were still under the previous directive) are not used.
  std::optional<Decision> OnEvaluation(const Observation& obs, uint64_t effective_step);

  // Feeds a validation metric reported at `step`. Only POLISH uses it, and
  // only reports from steps at or after POLISH took effect; non-finite
  // values are ignored.
  std::optional<Decision> OnValidation(uint64_t step, double value, uint64_t effective_step);

  // Operator: move to `to` now (any phase, also backwards). With hold, the
  // automatic triggers stay off until Release().
  Decision ForcePhase(Phase to, bool hold, const std::string& reason, uint64_t effective_step);

  // Operator: adopt `plan` (its phase field is kept as the current phase) and
  // hold it until Release().
  Decision Pin(DirectivePlan plan, const std::string& reason, uint64_t effective_step);

  // Operator: automatic triggers resume. When a pinned directive was in force,
  // returns the decision that re-issues the current phase's own plan.
  std::optional<Decision> Release(const std::string& reason, uint64_t effective_step);

  // The run is over (FinishRun or DONE reached): the STOP plan.
  Decision Finish(Cause cause, const std::string& reason, uint64_t effective_step);

  Phase phase() const { return phase_; }
  // True while an operator override holds the automatic triggers off.
  bool held() const { return held_; }
  // The effective_step of the decision that entered the current phase.
  uint64_t phase_start_step() const { return phase_start_step_; }
  const DirectivePlan& current_plan() const { return plan_; }
  // Natural-gradient switches rolled back so far.
  int rollbacks() const { return rollbacks_; }
  // The ACQUISITION exit's measurements at the latest evaluation that reached
  // its tests (empty before the first). Not part of the persisted state.
  const std::optional<AcquisitionSignals>& acquisition_signals() const { return signals_; }
  const ControllerConfig& config() const { return config_; }

 private:
  friend struct ControllerCodecAccess;  // core/phase/controller_codec.cc

  // The detectors' inputs over the plateau span: the current phase's latest
  // evaluations, split into plateau_windows consecutive windows, each
  // averaged. `now` is the last window's mean, `first` the first one's.
  struct Smoothed {
    bool ready = false;  // the span is full, long enough and apart in steps
    double rank_now = 0, rank_first = 0;
    double pr_now = 0, pr_first = 0;
    double loss_now = 0, loss_first = 0;
    // (max - min) / mean of the windows' means.
    double rank_spread = 0, pr_spread = 0;
    bool loss_known = false;  // the first and last windows hold a finite loss
    double epochs = 0;        // epochs between the first and last windows' centres
    double span_steps = 0;    // steps from the span's first evaluation to its last
    int span_evals = 0;
    bool censored = false;         // r90 or the PR censored in the last window
    double rank_ci_upper_now = 0;  // mean upper end of r90's CI in the last window
    bool loss_nonfinite = false;   // a non-finite loss reported in the last window
  };

  // Moves to `to` with `plan`, resetting the per-phase detectors.
  Decision Enter(Phase to, Cause cause, std::string reason, Evidence evidence, DirectivePlan plan,
                 uint64_t effective_step);
  DirectivePlan PlanFor(Phase to, uint64_t effective_step) const;
  std::optional<Decision> Decide(const Observation& obs, uint64_t effective_step);
  std::optional<Decision> DecideOnValidation(uint64_t step, double value, uint64_t effective_step);
  Smoothed Smooth() const;
  // The evaluations the plateau span needs: plateau_windows x window_evals,
  // and more when they cover fewer than window_memory_steps.
  size_t SpanEvals() const;
  std::optional<Decision> AcquisitionExit(const Smoothed& s, uint64_t step,
                                          uint64_t effective_step);
  std::optional<Decision> RefinementExit(const Smoothed& s, uint64_t step, uint64_t effective_step);
  // The guard of the switch to natural gradient (controller_guard.cc): a
  // ROLLBACK decision while the guard is armed and the loss failed it.
  std::optional<Decision> Guard(const Observation& obs, const Smoothed& s, uint64_t effective_step);
  // The loss rate over the span, signed per epoch (positive = falling); NaN
  // when the span holds no loss.
  static double LossRate(const Smoothed& s);
  // The divergence signal over the span: a non-finite loss in the last window
  // or the loss rising faster than divergence_loss_rate.
  bool Diverging(const Smoothed& s) const;
  // plateau_epsilon, tightened for a retried switch.
  double PlateauEpsilon() const;
  // The hysteresis latch: how many consecutive evaluations a trigger has been
  // latched, given the previous count. It latches on `on`, stays latched
  // until `clearly_off`.
  static int Latch(bool on, bool clearly_off, int count);
  uint64_t Dwell(uint64_t step) const {
    return step > phase_start_step_ ? step - phase_start_step_ : 0;
  }

  ControllerConfig config_;
  Phase phase_ = Phase::kAcquisition;
  uint64_t phase_start_step_ = 0;
  bool held_ = false;
  bool pinned_ = false;          // plan_ came from Pin(), not from PlanFor()
  DirectivePlan unpinned_plan_;  // the plan a Release() goes back to
  DirectivePlan plan_;
  // The current phase's latest evaluations: the plateau span (see Trim()).
  std::deque<Observation> window_;
  int latched_ = 0;  // consecutive evaluations the exit trigger latched
  // POLISH validation tracking.
  bool val_seen_ = false;
  double val_best_ = 0.0;
  int val_stale_ = 0;
  // The guarded switch: armed from the automatic switch to natural gradient
  // until REFINEMENT ends; what the loss was and the LR in force before it.
  bool guard_armed_ = false;
  double pre_switch_loss_ = 0.0;
  double pre_switch_lr_ = 0.0;
  int rollbacks_ = 0;  // switches rolled back in this run
  std::optional<AcquisitionSignals> signals_;
};

}  // namespace spotter

#endif  // SPOTTER_CORE_PHASE_CONTROLLER_H_
