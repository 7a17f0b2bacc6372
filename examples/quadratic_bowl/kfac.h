// K-FAC for one linear layer without bias, as the Python client applies it:
// the math of spotter.torch.KFAC (client/python/spotter/torch/kfac.py) and
// the schedule of the Monitor that drives it (monitor.py, docs/PYTHON.md
// "K-FAC"). The quadratic bowl's estimated natural-gradient arms use it in
// place of the exact (H + damping I)^-1 (docs/EXPERIMENTS.md).
//
// For a layer out = W a with W d_out x d_in, the input factor A = E[a a^T]
// and the output-gradient factor G = E[d d^T] (d = dloss/dout of one
// example: the empirical Fisher) are running averages, the old value
// weighted by factor_decay, of each captured minibatch's A_b = X^T X / B and
// G_b = D^T D / B. K-FAC approximates the layer's Fisher by G (x) A; with
// A = Q_A diag(l_A) Q_A^T and G = Q_G diag(l_G) Q_G^T (eigenvalues clipped at
// 0) the gradient V (d_out x d_in) becomes
//
//   P = Q_G [(Q_G^T V Q_A) / (l_G l_A^T + damping)] Q_A^T,
//
// the solution of G P A + damping P = V, scaled by
// nu = min(1, sqrt(kl_clip / (lr^2 <V, P>))) so that the step's predicted KL
// change stays bounded.
//
// What differs from kfac.py: everything is in double precision (kfac.py
// keeps factors and eigenvectors in float32 and decomposes in float64), and
// there is no bias column to fold in (the bowl's model has no bias; kfac.py
// appends a constant 1 to a when the layer has one). There is one rank, so
// no all-reduce.
#ifndef SPOTTER_EXAMPLES_QUADRATIC_BOWL_KFAC_H_
#define SPOTTER_EXAMPLES_QUADRATIC_BOWL_KFAC_H_

#include <Eigen/Core>
#include <cstdint>

namespace spotter::examples {

// The Python client's defaults (KFAC's and the Monitor's kfac_factor_decay,
// kfac_kl_clip); damping and the intervals are those of spotterd's
// REFINEMENT directive by default (ControllerConfig: kfac_damping,
// kfac_factor_interval, kfac_inverse_interval).
struct KfacOptions {
  double damping = 1e-3;                   // Tikhonov damping (> 0)
  uint32_t factor_update_interval = 10;    // steps between factor captures (>= 1)
  uint32_t inverse_update_interval = 100;  // steps between eigendecompositions (>= 1)
  double factor_decay = 0.95;              // weight of the old factors, in [0, 1)
  double kl_clip = 1e-3;                   // bound of the predicted KL change; <= 0: no clip
};

// Not thread-safe.
class Kfac {
 public:
  explicit Kfac(const KfacOptions& options);

  // A directive's settings (KFAC.configure): a value <= 0 keeps the current one.
  void Configure(double damping, uint32_t factor_update_interval, uint32_t inverse_update_interval);

  // One natural-gradient step, `since` steps after the switch to natural
  // gradient (0 at the switch), as the Monitor runs it: folds this step's
  // factors in when none are held yet or `since` is a multiple of
  // factor_update_interval, eigendecomposes when no decomposition is held
  // yet or `since` is a multiple of inverse_update_interval, and returns
  // Precondition(v, lr).
  //   inputs:    B x d_in, the layer inputs of the minibatch's examples
  //   out_grads: B x d_out, their output gradients dloss_i/dout_i
  //   v:         d_out x d_in, the gradient of the minibatch's mean loss
  //   lr:        the step size the KL bound assumes (with heavy-ball momentum
  //              mu the Monitor passes lr / (1 - mu), the steady-state step)
  Eigen::MatrixXd Step(uint64_t since, const Eigen::Ref<const Eigen::MatrixXd>& inputs,
                       const Eigen::Ref<const Eigen::MatrixXd>& out_grads,
                       const Eigen::Ref<const Eigen::MatrixXd>& v, double lr);

  // Folds X^T X / B and D^T D / B into the running averages (the first
  // capture initialises them). A non-finite factor keeps the old ones and
  // counts as a failure; returns false then.
  bool UpdateFactors(const Eigen::Ref<const Eigen::MatrixXd>& inputs,
                     const Eigen::Ref<const Eigen::MatrixXd>& out_grads);

  // Eigendecomposes A and G. Precondition: has_factors(). A failed
  // decomposition keeps the last one and counts as a failure.
  void UpdateInverses();

  // The preconditioned, KL-clipped v; v itself until the first
  // UpdateInverses(). Sets last_nu().
  Eigen::MatrixXd Precondition(const Eigen::Ref<const Eigen::MatrixXd>& v, double lr);

  bool has_factors() const { return a_.size() > 0; }
  bool ready() const { return q_a_.size() > 0; }
  const Eigen::MatrixXd& a() const { return a_; }
  const Eigen::MatrixXd& g() const { return g_; }
  const KfacOptions& options() const { return o_; }
  double last_nu() const { return last_nu_; }
  uint64_t factor_updates() const { return factor_updates_; }
  uint64_t inverse_updates() const { return inverse_updates_; }
  uint64_t failures() const { return failures_; }

 private:
  KfacOptions o_;
  Eigen::MatrixXd a_, g_;  // running averages; empty before the first capture
  Eigen::MatrixXd q_a_, q_g_;
  Eigen::VectorXd l_a_, l_g_;
  double last_nu_ = 1.0;
  uint64_t factor_updates_ = 0, inverse_updates_ = 0, failures_ = 0;
};

}  // namespace spotter::examples

#endif  // SPOTTER_EXAMPLES_QUADRATIC_BOWL_KFAC_H_
