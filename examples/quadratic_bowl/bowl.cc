#include "examples/quadratic_bowl/bowl.h"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace spotter::examples {
namespace {

Eigen::MatrixXd Normal(int rows, int cols, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0.0, 1.0);
  Eigen::MatrixXd m(rows, cols);
  for (int j = 0; j < cols; ++j) {
    for (int i = 0; i < rows; ++i) m(i, j) = n(rng);
  }
  return m;
}

}  // namespace

SpectrumShape ShapeOf(const Eigen::Ref<const Eigen::VectorXd>& eigenvalues) {
  std::vector<double> e(eigenvalues.data(), eigenvalues.data() + eigenvalues.size());
  for (double& v : e) v = std::max(v, 0.0);
  std::sort(e.begin(), e.end(), std::greater<>());
  double trace = 0.0, sq = 0.0;
  for (double v : e) {
    trace += v;
    sq += v * v;
  }
  SpectrumShape s;
  if (!(trace > 0.0)) return s;
  double sum = 0.0;
  for (size_t i = 0; i < e.size(); ++i) {
    sum += e[i];
    if (sum >= 0.9 * trace) {
      s.r90 = static_cast<double>(i + 1);
      break;
    }
  }
  s.pr = trace * trace / sq;
  return s;
}

QuadraticBowl::QuadraticBowl(const BowlOptions& options, uint64_t seed) : o_(options) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull);
  const int p = o_.param_dim, d = o_.signal_dim;
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(Normal(p, d, rng));
  q_ = qr.householderQ() * Eigen::MatrixXd::Identity(p, d);
  lambda_.resize(d);
  for (int i = 0; i < d; ++i) {
    lambda_(i) = d == 1 ? 1.0 : std::pow(o_.condition, -static_cast<double>(i) / (d - 1));
  }
  theta_star_ = Normal(p, 1, rng).col(0);
  theta0_ = theta_star_ + o_.init_scale * Normal(p, 1, rng).col(0);
  val_x_ = Normal(o_.val_examples, d, rng) * lambda_.cwiseSqrt().asDiagonal() * q_.transpose();
  val_y_ = val_x_ * theta_star_ + o_.label_noise * Normal(o_.val_examples, 1, rng).col(0);
}

void QuadraticBowl::Sample(const Eigen::Ref<const Eigen::VectorXd>& theta, std::mt19937_64& rng,
                           Minibatch* out) const {
  const int b = o_.batch;
  Eigen::MatrixXd& x = out->inputs;
  x = Normal(b, o_.signal_dim, rng) * lambda_.cwiseSqrt().asDiagonal() * q_.transpose();
  std::normal_distribution<double> n(0.0, 1.0);
  Eigen::VectorXd& r = out->residuals;
  r = x * (theta - theta_star_);
  for (int i = 0; i < b; ++i) r(i) -= o_.label_noise * n(rng);
  const Eigen::MatrixXd g = r.asDiagonal() * x;  // row i: r_i x_i
  out->per_example = g.cast<float>();
  out->gradient = g.colwise().mean().transpose();
  out->loss = 0.5 * r.squaredNorm() / b;
}

double QuadraticBowl::ExcessLoss(const Eigen::Ref<const Eigen::VectorXd>& theta) const {
  const Eigen::VectorXd z = q_.transpose() * (theta - theta_star_);
  return 0.5 * (lambda_.array() * z.array().square()).sum();
}

double QuadraticBowl::ValidationLoss(const Eigen::Ref<const Eigen::VectorXd>& theta) const {
  return 0.5 * (val_x_ * theta - val_y_).squaredNorm() / static_cast<double>(val_y_.size());
}

Eigen::VectorXd QuadraticBowl::NaturalGradient(const Eigen::Ref<const Eigen::VectorXd>& g,
                                               double damping) const {
  const Eigen::VectorXd z = q_.transpose() * g;
  const Eigen::VectorXd inside = q_ * (z.array() / (lambda_.array() + damping)).matrix();
  return inside + (g - q_ * z) / damping;
}

SpectrumShape QuadraticBowl::GradientCovarianceShape(
    const Eigen::Ref<const Eigen::VectorXd>& theta) const {
  const Eigen::VectorXd z = q_.transpose() * (theta - theta_star_);
  const double two_l = (lambda_.array() * z.array().square()).sum();
  const Eigen::VectorXd lz = lambda_.cwiseProduct(z);
  Eigen::MatrixXd m = lz * lz.transpose();
  m.diagonal() += (two_l + o_.label_noise * o_.label_noise) * lambda_;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(m, Eigen::EigenvaluesOnly);
  return ShapeOf(es.eigenvalues());
}

void MomentumSgd::Step(const QuadraticBowl& bowl, const StepPlan& plan, const Minibatch& batch,
                       std::mt19937_64& rng, Eigen::VectorXd* theta) {
  Eigen::VectorXd g = batch.gradient;
  // (The Monitor adds its noise after preconditioning; spotterd sends noise
  // only with first-order plans, so the order does not matter here.)
  if (plan.noise_std > 0.0) {
    const double rms = std::sqrt(g.squaredNorm() / static_cast<double>(g.size()));
    std::normal_distribution<double> n(0.0, plan.noise_std * rms);
    for (Eigen::Index i = 0; i < g.size(); ++i) g(i) += n(rng);
  }
  Eigen::VectorXd d;
  if (plan.natural_gradient && plan.kfac) {
    if (!kfac_) {
      kfac_.emplace(kfac_options_);
      kfac_since_ = 0;
    }
    kfac_->Configure(plan.damping, plan.factor_update_interval, plan.inverse_update_interval);
    // The KL bound sees the steady-state step of heavy-ball momentum, as the
    // Monitor passes it.
    const double lr = momentum_ >= 0 && momentum_ < 1 ? plan.lr / (1.0 - momentum_) : plan.lr;
    // The layer's gradient matrix is 1 x P (one output).
    d = kfac_->Step(kfac_since_++, batch.inputs, batch.residuals, g.transpose(), lr).transpose();
  } else {
    kfac_.reset();
    d = plan.natural_gradient ? bowl.NaturalGradient(g, plan.damping) : g;
  }
  v_ = momentum_ * v_ + d;
  *theta -= plan.lr * v_;
}

}  // namespace spotter::examples
