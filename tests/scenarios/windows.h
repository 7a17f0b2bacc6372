// The windows a scenario's transitions must fall in, derived from the planted
// truth and the controller's documented lags (docs/PHASES.md, "Known-answer
// scenarios"), never from what a run did.
#ifndef SPOTTER_TESTS_SCENARIOS_WINDOWS_H_
#define SPOTTER_TESTS_SCENARIOS_WINDOWS_H_

#include <cstdint>
#include <string>

#include "spotter/v1/spotter.pb.h"
#include "tests/scenarios/scenario.h"

namespace spotter::scenarios {

// The controller's lags and thresholds for one run, in steps (docs/PHASES.md,
// "Smoothing, rates, dwell, hysteresis" and "Defaults").
struct Lags {
  uint64_t e = 0;        // eval_every: steps between evaluations
  uint64_t epoch = 0;    // steps_per_epoch
  uint64_t warmup = 0;   // warm-up end: round(warmup_fraction x total_steps)
  uint64_t dwell = 0;    // min_dwell_steps
  uint64_t budget = 0;   // refinement budget step: round(refine_budget_fraction x total_steps)
  uint64_t total = 0;    // total_steps
  uint64_t margin = 0;   // delivery margin: effective step - decision step
  int w = 0;             // window_evals
  int c = 0;             // confirm_evals
  int span_evals = 0;    // N: evaluations the plateau tests look back over
  int windows = 0;       // the span's windows (the tests compare their means)
  double decay = 0.0;    // gamma of the exponential window
  double memory = 0.0;   // M = 1 / (1 - gamma) steps
  double id_drop = 0.0;  // id_drop_threshold, per epoch
  double epsilon = 0.0;  // plateau_epsilon
  double loss_decrease_min = 0.0;
  double refine_loss_rate_min = 0.0;
  double hysteresis = 0.0;
  int val_patience = 0;

  // Steps between the centres of the span's first and last windows, of
  // N / windows evaluations each: the distance the rates are taken over.
  uint64_t Distance() const { return static_cast<uint64_t>(span_evals - span_evals / windows) * e; }
  // Steps from the span's first evaluation to its last: (N - 1) e.
  uint64_t Span() const { return static_cast<uint64_t>(span_evals - 1) * e; }
  // The first evaluation step at or after `step`.
  uint64_t Grid(double step) const;
};

// The lags of a run with the effective config `config` whose trainer makes
// one step per step_seconds and uploads every step.
Lags LagsOf(const v1::RunConfig& config, double step_seconds, double delivery_budget_seconds);

// A window of decision steps [lo, hi], and how it was derived.
struct Window {
  uint64_t lo = 0;
  uint64_t hi = 0;
  std::string derivation;
};

// How long after the planted spectrum stops changing at t0 the exponential
// window's mixture has settled enough for the plateau tests: the larger of
// the PR's and r90's settling times (see windows.cc). The spectra before t0
// are the generator's.
struct Settle {
  double pr_steps = 0.0;   // relative PR change over Distance() below id_drop x Distance() / epoch
  double r90_steps = 0.0;  // r90 equal to the plateau's
  double kappa = 0.0;      // max |1 - <lambda_t0, lambda_b> / |lambda_t0|^2| over b < t0
  double steps() const { return pr_steps > r90_steps ? pr_steps : r90_steps; }
};
Settle SettleAfter(const ScenarioGenerator& gen, uint64_t t0, const Lags& lags);

// A rank wobbling around its level (scenario.h, Wobble) moves the PR the
// plateau test reads periodically; around each of the two zero crossings per
// period of its change over the span, the change stays inside the test's
// allowance for this many steps (see windows.cc).
double WobbleQuietSteps(const ScenarioSpec& spec, uint64_t t0, const Lags& lags);

// ACQUISITION -> REFINEMENT when the planted spectrum is flat from t0 on and
// the loss falls well above loss_decrease_min x hysteresis throughout.
Window AcquisitionExit(const ScenarioGenerator& gen, uint64_t t0, const Lags& lags);
// REFINEMENT -> POLISH (plateau) when the loss, falling faster than
// refine_loss_rate_min x hysteresis before t_flat, is flat from t_flat on.
Window RefinementExitOnFlatLoss(uint64_t t_flat, const Lags& lags);
// REFINEMENT -> POLISH at the budget step (the phase took effect by
// refine_effective_hi).
Window RefinementBudget(uint64_t refine_effective_hi, const Lags& lags);
// POLISH -> DONE after validation reports every `every` steps, improving
// until t_flat and flat from then on (POLISH took effect by t_flat).
Window ValidationStop(uint64_t t_flat, uint64_t every, const Lags& lags);
// Any phase -> DONE at total_steps.
Window TotalSteps(const Lags& lags);

}  // namespace spotter::scenarios

#endif  // SPOTTER_TESTS_SCENARIOS_WINDOWS_H_
