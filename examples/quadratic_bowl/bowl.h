// The overparameterized quadratic bowl of the seed paper's section 5.1 and
// appendix B.1, as a stochastic least-squares problem with per-example
// gradients (docs/EXPERIMENTS.md, "Quadratic bowl").
//
// Parameters theta live in R^P (P = 100). Examples are x = Q Lambda^(1/2) u,
// u ~ N(0, I_d), with Q a random P x d orthonormal basis (d = 20) and
// Lambda = diag(lambda_1..lambda_d) log-spaced from 1 down to 1/condition;
// labels y = x^T theta* + s eps, eps ~ N(0, 1). The population loss is
//
//   E[(x^T theta - y)^2] / 2 = L(theta) + s^2 / 2,
//   L(theta) = (theta - theta*)^T H (theta - theta*) / 2,  H = Q Lambda Q^T,
//
// an ill-conditioned 20-dimensional quadratic embedded in 100 dimensions:
// the P - d directions orthogonal to Q are exactly flat (redundant
// parameters: every point of theta* + null(H) is a minimum). The gradient
// noise is the minibatch noise of this model: its covariance per example is
// (2 L + s^2) H + H e e^T H with e = theta - theta*, so the label noise keeps
// a noise floor that a constant learning rate cannot get under.
//
// The metric of the experiment is the excess loss L(theta). The Fisher of
// the Gaussian likelihood of this model is H / s^2 ~ H: the exact
// natural-gradient arms precondition with (H + damping I)^-1, the estimated
// ones with K-FAC's estimate from the minibatches (kfac.h): the model is one
// linear layer without bias, inputs x, one output x^T theta.
#ifndef SPOTTER_EXAMPLES_QUADRATIC_BOWL_BOWL_H_
#define SPOTTER_EXAMPLES_QUADRATIC_BOWL_BOWL_H_

#include <Eigen/Core>
#include <cstdint>
#include <optional>
#include <random>

#include "core/types.h"
#include "examples/quadratic_bowl/kfac.h"

namespace spotter::examples {

struct BowlOptions {
  int param_dim = 100;        // P: parameters (>= signal_dim)
  int signal_dim = 20;        // d: directions with curvature (>= 1)
  double condition = 1000.0;  // lambda_max / lambda_min of H on its range (>= 1)
  double label_noise = 0.01;  // s: label noise std; the excess-loss floor scales with s^2
  int batch = 16;             // B: examples per step; each is one sketch row (>= 2)
  double init_scale = 1.0;    // theta_0 - theta* ~ N(0, init_scale^2 I_P)
  int val_examples = 1024;    // held-out examples behind ValidationLoss()
};

// A minibatch at theta: per-example gradients, their mean, and the loss.
struct Minibatch {
  RowMatrixXf per_example;   // B x P, float (what the trainer sketches)
  Eigen::VectorXd gradient;  // mean of the per-example gradients (double)
  double loss = 0.0;         // mean of (x^T theta - y)^2 / 2 over the batch
  // What K-FAC sees of the one layer: its inputs (row i: x_i) and the
  // per-example output gradients r_i = x_i^T theta - y_i (row i of
  // per_example is r_i x_i).
  Eigen::MatrixXd inputs;     // B x P
  Eigen::VectorXd residuals;  // B
};

// The r90 and participation ratio of a spectrum.
struct SpectrumShape {
  double r90 = 0.0;  // smallest r whose top r eigenvalues hold 90% of the trace
  double pr = 0.0;   // (sum lambda)^2 / sum lambda^2
};

// One problem instance (basis, optimum, start, validation set) per seed.
// Thread-compatible: const methods may be called concurrently; each caller
// brings its own random generator.
class QuadraticBowl {
 public:
  // Precondition: options within the ranges documented above.
  QuadraticBowl(const BowlOptions& options, uint64_t seed);

  // Draws a minibatch of `batch` examples at theta (size P) into *out.
  void Sample(const Eigen::Ref<const Eigen::VectorXd>& theta, std::mt19937_64& rng,
              Minibatch* out) const;

  // L(theta): the excess population loss (0 at every minimum).
  double ExcessLoss(const Eigen::Ref<const Eigen::VectorXd>& theta) const;

  // Mean (x^T theta - y)^2 / 2 over the fixed held-out set.
  double ValidationLoss(const Eigen::Ref<const Eigen::VectorXd>& theta) const;

  // The damped natural-gradient direction (H + damping I)^-1 g, exact.
  // Precondition: damping > 0.
  Eigen::VectorXd NaturalGradient(const Eigen::Ref<const Eigen::VectorXd>& g, double damping) const;

  // The exact covariance of one example's gradient at theta,
  // (2 L + s^2) H + H e e^T H, summarised: what spotterd estimates from the
  // sketches. Computed in the d-dimensional range of H.
  SpectrumShape GradientCovarianceShape(const Eigen::Ref<const Eigen::VectorXd>& theta) const;

  // The eigenvalues of H on its range, largest first.
  const Eigen::VectorXd& curvatures() const { return lambda_; }
  const Eigen::VectorXd& theta0() const { return theta0_; }
  const Eigen::VectorXd& theta_star() const { return theta_star_; }
  const Eigen::MatrixXd& basis() const { return q_; }
  const BowlOptions& options() const { return o_; }

 private:
  BowlOptions o_;
  Eigen::MatrixXd q_;           // P x d, orthonormal columns
  Eigen::VectorXd lambda_;      // d
  Eigen::VectorXd theta_star_;  // P
  Eigen::VectorXd theta0_;      // P
  Eigen::MatrixXd val_x_;       // n x P
  Eigen::VectorXd val_y_;       // n
};

// What an optimizer step does at one step of training.
struct StepPlan {
  double lr = 0.0;
  bool natural_gradient = false;  // precondition with (H + damping I)^-1 ...
  bool kfac = false;              // ... or, with natural_gradient, K-FAC's estimate of it
  double damping = 1e-3;          // natural gradient only (> 0)
  // K-FAC only: steps between factor captures and between eigendecompositions
  // (0: keep the current value; 10 and 100 to begin with, KfacOptions).
  uint32_t factor_update_interval = 0;
  uint32_t inverse_update_interval = 0;
  double noise_std = 0.0;  // injected N(0, (noise_std x RMS(g))^2) per coordinate
};

// SGD with heavy-ball momentum, PyTorch's convention:
//   v <- momentum v + d;  theta <- theta - lr v,
// with d the gradient or its natural-gradient direction. The buffer carries
// over when the plan switches optimizer. Under K-FAC plans it keeps the K-FAC
// state as the Python Monitor does: created at the first K-FAC step (factors
// captured from that step on), kept while the plans ask for K-FAC, dropped
// at the first plan that does not (a later switch starts from fresh factors,
// like the Monitor's retry after a rollback). Not thread-safe.
class MomentumSgd {
 public:
  // `kfac`: the K-FAC settings a K-FAC stint starts from; its plans'
  // damping and intervals then apply on top (Kfac::Configure).
  MomentumSgd(int dim, double momentum, const KfacOptions& kfac = KfacOptions())
      : v_(Eigen::VectorXd::Zero(dim)), momentum_(momentum), kfac_options_(kfac) {}

  // One update of *theta with the minibatch's gradient under `plan`. Only
  // K-FAC plans read more of `batch` than its gradient.
  void Step(const QuadraticBowl& bowl, const StepPlan& plan, const Minibatch& batch,
            std::mt19937_64& rng, Eigen::VectorXd* theta);

  // The K-FAC state of the current stint; nullptr outside one.
  const Kfac* kfac() const { return kfac_ ? &*kfac_ : nullptr; }

 private:
  Eigen::VectorXd v_;
  double momentum_;
  KfacOptions kfac_options_;
  std::optional<Kfac> kfac_;
  uint64_t kfac_since_ = 0;  // K-FAC steps so far in this stint
};

// r90 and PR of `eigenvalues` (any order, negatives clipped to 0).
SpectrumShape ShapeOf(const Eigen::Ref<const Eigen::VectorXd>& eigenvalues);

}  // namespace spotter::examples

#endif  // SPOTTER_EXAMPLES_QUADRATIC_BOWL_BOWL_H_
