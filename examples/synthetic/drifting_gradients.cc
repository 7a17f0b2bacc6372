#include "examples/synthetic/drifting_gradients.h"

#include <algorithm>
#include <cmath>

#include <Eigen/QR>

namespace spotter::examples {

DriftingGradients::DriftingGradients(const DriftOptions& o, uint64_t seed)
    : o_(o), rng_(seed), loss_(o.loss_start) {
  // The directions are shared by every rank of a job: seeded independently
  // of the rank's sampling seed.
  std::mt19937_64 basis_rng(0x5eed);
  std::normal_distribution<double> n01;
  Eigen::MatrixXd g(o.param_dim, o.directions);
  for (int j = 0; j < o.directions; ++j)
    for (int i = 0; i < o.param_dim; ++i) g(i, j) = n01(basis_rng);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  basis_ = (qr.householderQ() * Eigen::MatrixXd::Identity(o.param_dim, o.directions)).cast<float>();
}

std::vector<double> DriftingGradients::Top(uint64_t step) const {
  const double f = std::min(1.0, static_cast<double>(step) / static_cast<double>(o_.collapse_end));
  const double alpha = o_.alpha_start + (o_.alpha_end - o_.alpha_start) * f;
  // The gradient noise shrinks with the loss, as it does in real training.
  const double scale = (loss_ - o_.loss_min + 0.05) / (o_.loss_start - o_.loss_min + 0.05);
  std::vector<double> top(o_.directions);
  for (int i = 0; i < o_.directions; ++i) top[i] = scale * std::pow(i + 1.0, -alpha);
  return top;
}

RowMatrixXf DriftingGradients::Sample(uint64_t step, int m) {
  std::normal_distribution<float> n01;
  const std::vector<double> top = Top(step);
  Eigen::MatrixXf z(o_.directions, m);
  for (int j = 0; j < m; ++j)
    for (int i = 0; i < o_.directions; ++i) z(i, j) = n01(rng_) * static_cast<float>(std::sqrt(top[i]));
  // Mean gradient: along the first direction, shrinking with the loss.
  z.row(0).array() += static_cast<float>(std::sqrt(loss_ - o_.loss_min + 1e-3));
  RowMatrixXf out = (basis_ * z).transpose();
  const float floor = static_cast<float>(std::sqrt(o_.noise_floor * top[0]));
  for (Eigen::Index i = 0; i < out.size(); ++i) out.data()[i] += floor * n01(rng_);
  return out;
}

void DriftingGradients::Step(double lr) {
  loss_ = o_.loss_min + (loss_ - o_.loss_min) * std::exp(-o_.loss_rate * lr / 100.0);
}

double DriftingGradients::ValidationLoss() {
  std::normal_distribution<double> n01;
  return loss_ + o_.val_gap + o_.val_noise * n01(rng_);
}

std::vector<double> DriftingGradients::Eigenvalues(uint64_t step) const {
  std::vector<double> e = Top(step);
  const double floor = o_.noise_floor * e[0];
  for (double& v : e) v += floor;
  e.resize(o_.param_dim, floor);
  std::sort(e.rbegin(), e.rend());
  return e;
}

}  // namespace spotter::examples
