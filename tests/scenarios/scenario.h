// Known-answer training scenarios for the phase controller (docs/PHASES.md,
// "Known-answer scenarios"): a spec of shapes over steps (the planted
// gradient spectrum's rank, the loss, the validation metric) and a generator
// that turns it into what a trainer streams: per-step sketch rows whose
// covariance has the planted spectrum, the step's loss, and the validation
// reports.
//
// The planted spectrum at step t, in k = sketch_dim dimensions, with signal
// share s and rank r = r(t) (which need not be an integer):
//   lambda_i = s / r + (1 - s) / k    for i < floor(r),
//   lambda_i = frac(r) s / r + (1 - s) / k  for i = floor(r),
//   lambda_i = (1 - s) / k            otherwise,
// i.e. r equal eigenvalues holding s of the trace over an isotropic floor
// holding 1 - s; the trace is 1 at every step. For integer r,
//   r90 = ceil(0.9 r / (s + (1 - s) r / k)),
//   PR  = 1 / (s^2 / r + (1 - s^2) / k),
// so with s = 0.95 and k = 256 r90 is r (r = 8, 10) or r - 2 (r = 40), and
// the PR is about r / s^2. Rows are x = sum_i sqrt(lambda_i) z_i e_i with
// z ~ N(0, 1): zero mean, so the server's centred covariance estimates it.
#ifndef SPOTTER_TESTS_SCENARIOS_SCENARIO_H_
#define SPOTTER_TESTS_SCENARIOS_SCENARIO_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/types.h"

namespace spotter::scenarios {

// A piecewise-linear function of the step through `knots` (step, value),
// constant before the first knot and after the last.
struct Curve {
  std::vector<std::pair<double, double>> knots;

  static Curve Constant(double v) { return Curve{{{0.0, v}}}; }
  double At(double step) const;
};

// A smooth relative wobble of the planted rank, r(t) x (1 + amplitude x
// sin(2 pi (t - start) / period + phase)) for t >= start, with a phase drawn
// per seed: a rank that fluctuates around its level without a trend.
struct Wobble {
  double amplitude = 0.0;  // relative; 0: none
  double period = 400.0;   // steps
  double start = 0.0;      // step from which it applies
};

struct ScenarioSpec {
  std::string name;
  std::string description;  // one line: what the shapes are
  // Run config (the rest is the server's defaults).
  uint64_t total_steps = 4000;
  uint32_t sketch_dim = 256;   // k
  uint32_t sketch_rows = 200;  // l
  uint32_t eval_every = 10;
  double decay = 0.99;  // exponential window: memory 1 / (1 - decay) steps
  int rows_per_step = 16;
  // The planted spectrum.
  Curve rank;                                  // r(t)
  Curve signal_share = Curve::Constant(0.95);  // s(t)
  Wobble wobble;
  // ln loss(t); the streamed loss is exp(ln loss(t) + loss_noise x N(0, 1)).
  Curve log_loss;
  double loss_noise = 0.0;
  // ln val(t), reported every val_every steps (0: no validation reports).
  Curve log_val;
  uint64_t val_every = 0;
  // The trainer stops after this step (0: at total_steps), or at the first
  // stop directive.
  uint64_t last_step = 0;
};

// The planted truth at one step.
struct Planted {
  double rank = 0.0;   // r(t), wobble included
  double share = 0.0;  // s(t)
  double r90 = 0.0;    // of the planted eigenvalues
  double pr = 0.0;     // (sum lambda)^2 / sum lambda^2 of the planted eigenvalues
};

// Streams one scenario for one seed. Deterministic given (spec, seed).
class ScenarioGenerator {
 public:
  ScenarioGenerator(ScenarioSpec spec, uint64_t seed);

  // The planted eigenvalues at `step` (k of them, largest first, sum 1).
  std::vector<double> Eigenvalues(uint64_t step) const;
  // r(t), wobble included.
  double RankAt(uint64_t step) const;
  Planted Truth(uint64_t step) const;

  // The step's rows (rows_per_step x k) and loss. Call in step order, rows
  // before loss: both draw from the seed's stream.
  RowMatrixXf Rows(uint64_t step);
  double Loss(uint64_t step);
  // The validation metric reported at `step`, if one is due then.
  std::optional<double> Validation(uint64_t step) const;

  const ScenarioSpec& spec() const { return spec_; }
  double wobble_phase() const { return phase_; }

 private:
  ScenarioSpec spec_;
  double phase_ = 0.0;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_;
};

// Smallest r whose top-r eigenvalues hold `mass` of the trace, and the
// participation ratio, of eigenvalues sorted largest first.
double R90(const std::vector<double>& eigenvalues, double mass = 0.9);
double ParticipationRatio(const std::vector<double>& eigenvalues);

}  // namespace spotter::scenarios

#endif  // SPOTTER_TESTS_SCENARIOS_SCENARIO_H_
