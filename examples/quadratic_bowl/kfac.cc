#include "examples/quadratic_bowl/kfac.h"

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>

namespace spotter::examples {

Kfac::Kfac(const KfacOptions& options) : o_(options) {
  o_.factor_update_interval = std::max<uint32_t>(1, o_.factor_update_interval);
  o_.inverse_update_interval = std::max<uint32_t>(1, o_.inverse_update_interval);
}

void Kfac::Configure(double damping, uint32_t factor_update_interval,
                     uint32_t inverse_update_interval) {
  if (damping > 0) o_.damping = damping;
  if (factor_update_interval > 0) o_.factor_update_interval = factor_update_interval;
  if (inverse_update_interval > 0) o_.inverse_update_interval = inverse_update_interval;
}

Eigen::MatrixXd Kfac::Step(uint64_t since, const Eigen::Ref<const Eigen::MatrixXd>& inputs,
                           const Eigen::Ref<const Eigen::MatrixXd>& out_grads,
                           const Eigen::Ref<const Eigen::MatrixXd>& v, double lr) {
  // The Monitor captures factors on the switch step, while it holds none, and
  // every factor_update_interval steps after the switch.
  if (!has_factors() || since % o_.factor_update_interval == 0) UpdateFactors(inputs, out_grads);
  if (has_factors() && (!ready() || since % o_.inverse_update_interval == 0)) UpdateInverses();
  return Precondition(v, lr);
}

bool Kfac::UpdateFactors(const Eigen::Ref<const Eigen::MatrixXd>& inputs,
                         const Eigen::Ref<const Eigen::MatrixXd>& out_grads) {
  // One pass of B examples, one position each: the taps' a^T a / (B T) and
  // d^T d / (B T), d the output gradient times B under a mean loss, i.e. the
  // per-example dloss_i/dout_i.
  const Eigen::MatrixXd a = inputs.transpose() * inputs / static_cast<double>(inputs.rows());
  const Eigen::MatrixXd g =
      out_grads.transpose() * out_grads / static_cast<double>(out_grads.rows());
  if (!a.allFinite() || !g.allFinite()) {
    ++failures_;  // a diverging step: keep the old factors
    return false;
  }
  if (!has_factors()) {
    a_ = a;
    g_ = g;
  } else {
    a_ = o_.factor_decay * a_ + (1.0 - o_.factor_decay) * a;
    g_ = o_.factor_decay * g_ + (1.0 - o_.factor_decay) * g;
  }
  ++factor_updates_;
  return true;
}

void Kfac::UpdateInverses() {
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> ea(a_), eg(g_);
  if (ea.info() == Eigen::Success && eg.info() == Eigen::Success) {
    l_a_ = ea.eigenvalues().cwiseMax(0.0);
    q_a_ = ea.eigenvectors();
    l_g_ = eg.eigenvalues().cwiseMax(0.0);
    q_g_ = eg.eigenvectors();
  } else {
    ++failures_;  // keep the last decomposition
  }
  ++inverse_updates_;
}

Eigen::MatrixXd Kfac::Precondition(const Eigen::Ref<const Eigen::MatrixXd>& v, double lr) {
  if (!ready()) return v;
  Eigen::MatrixXd p = q_g_.transpose() * v * q_a_;
  p.array() /= ((l_g_ * l_a_.transpose()).array() + o_.damping);
  p = q_g_ * p * q_a_.transpose();
  const double vg = p.cwiseProduct(v).sum() * lr * lr;
  double nu = 1.0;
  if (o_.kl_clip > 0 && vg > 0) nu = std::min(1.0, std::sqrt(o_.kl_clip / vg));
  last_nu_ = nu;
  return nu * p;
}

}  // namespace spotter::examples
