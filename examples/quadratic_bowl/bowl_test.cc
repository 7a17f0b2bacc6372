// The quadratic bowl's closed forms against Monte Carlo and direct algebra:
// the per-example gradient covariance spotterd estimates, the loss, the
// natural-gradient direction, and the redundant flat directions.
#include "examples/quadratic_bowl/bowl.h"

#include <cmath>

#include <Eigen/Eigenvalues>

#include "gtest/gtest.h"

namespace spotter::examples {
namespace {

Eigen::MatrixXd Hessian(const QuadraticBowl& b) {
  return b.basis() * b.curvatures().asDiagonal() * b.basis().transpose();
}

TEST(QuadraticBowlTest, GeometryIsTheDocumentedOne) {
  const QuadraticBowl b(BowlOptions{}, 3);
  const Eigen::MatrixXd& q = b.basis();
  EXPECT_EQ(q.rows(), 100);
  EXPECT_EQ(q.cols(), 20);
  EXPECT_LT((q.transpose() * q - Eigen::MatrixXd::Identity(20, 20)).norm(), 1e-12);
  EXPECT_DOUBLE_EQ(b.curvatures()(0), 1.0);
  EXPECT_NEAR(b.curvatures()(19), 1e-3, 1e-15);
  for (int i = 1; i < 20; ++i) {
    EXPECT_NEAR(b.curvatures()(i) / b.curvatures()(i - 1), std::pow(1e-3, 1.0 / 19), 1e-12);
  }
  // 80 exactly flat directions: moving along null(H) changes nothing.
  Eigen::VectorXd flat = Eigen::VectorXd::Random(100);
  flat -= q * (q.transpose() * flat);
  EXPECT_NEAR(b.ExcessLoss(b.theta_star() + 10 * flat), 0.0, 1e-20);
  EXPECT_GT(b.ExcessLoss(b.theta0()), 0.1);
  // The same seed gives the same instance.
  const QuadraticBowl again(BowlOptions{}, 3);
  EXPECT_EQ(again.theta0(), b.theta0());
}

TEST(QuadraticBowlTest, PerExampleGradientsMatchTheClosedForms) {
  // Mean H e, covariance (2L + s^2) H + H e e^T H, loss L + s^2 / 2, and
  // nothing in the flat directions. n examples; the tolerances are 5
  // standard errors (for the covariance: the Gaussian rate sqrt((tr S^2 +
  // tr(S)^2) / n), times 3 for the heavier tails of a product of Gaussians).
  BowlOptions o;
  o.batch = 50;
  o.label_noise = 0.1;
  const QuadraticBowl b(o, 5);
  const Eigen::VectorXd theta = b.theta0();
  const Eigen::VectorXd e = theta - b.theta_star();
  const Eigen::MatrixXd h = Hessian(b);
  const double l = b.ExcessLoss(theta);
  const double s2 = o.label_noise * o.label_noise;
  const Eigen::MatrixXd cov = (2 * l + s2) * h + h * e * e.transpose() * h;

  std::mt19937_64 rng(1);
  const int batches = 400, n = batches * o.batch;
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(100);
  Eigen::MatrixXd second = Eigen::MatrixXd::Zero(100, 100);
  double loss = 0, loss_sq = 0, outside = 0;
  Minibatch m;
  for (int i = 0; i < batches; ++i) {
    b.Sample(theta, rng, &m);
    const Eigen::MatrixXd g = m.per_example.cast<double>();
    mean += g.colwise().sum().transpose();
    second += g.transpose() * g;
    loss += m.loss;
    loss_sq += m.loss * m.loss;
    outside += (g.transpose() - b.basis() * (b.basis().transpose() * g.transpose())).norm();
    EXPECT_LT((m.gradient - g.colwise().mean().transpose()).norm(), 1e-5 * m.gradient.norm());
  }
  mean /= n;
  const Eigen::MatrixXd sample_cov = second / n - mean * mean.transpose();
  const double tr = cov.trace(), tr2 = (cov * cov).trace();
  EXPECT_LT((mean - h * e).norm(), 5 * std::sqrt(tr / n));
  EXPECT_LT((sample_cov - cov).norm(), 5 * 3 * std::sqrt((tr2 + tr * tr) / n));
  const double loss_mean = loss / batches;
  const double loss_se = std::sqrt((loss_sq / batches - loss_mean * loss_mean) / batches);
  EXPECT_NEAR(loss_mean, l + s2 / 2, 5 * loss_se);
  EXPECT_LT(outside / batches, 1e-5);  // float rounding only

  // The summary of the closed form is that of the full P x P matrix.
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(cov, Eigen::EigenvaluesOnly);
  const SpectrumShape want = ShapeOf(es.eigenvalues());
  const SpectrumShape got = b.GradientCovarianceShape(theta);
  EXPECT_EQ(got.r90, want.r90);
  EXPECT_NEAR(got.pr, want.pr, 1e-9 * want.pr);
}

TEST(QuadraticBowlTest, NaturalGradientSolvesTheDampedSystem) {
  const QuadraticBowl b(BowlOptions{}, 7);
  const Eigen::VectorXd g = Eigen::VectorXd::Random(100);
  for (double damping : {1e-3, 0.1}) {
    const Eigen::VectorXd p = b.NaturalGradient(g, damping);
    const Eigen::MatrixXd a = Hessian(b) + damping * Eigen::MatrixXd::Identity(100, 100);
    EXPECT_LT((a * p - g).norm(), 1e-9 * g.norm()) << damping;
  }
  // One step with lr 1 and no momentum on the exact gradient H e leaves
  // z_i damping / (lambda_i + damping) of each coordinate.
  MomentumSgd sgd(100, 0.0);
  Eigen::VectorXd theta = b.theta0();
  const Eigen::VectorXd e0 = theta - b.theta_star();
  std::mt19937_64 rng(0);
  StepPlan plan;
  plan.lr = 1.0;
  plan.natural_gradient = true;
  plan.damping = 0.01;
  sgd.Step(b, plan, Hessian(b) * e0, rng, &theta);
  const Eigen::VectorXd z0 = b.basis().transpose() * e0;
  const Eigen::VectorXd z1 = b.basis().transpose() * (theta - b.theta_star());
  for (int i = 0; i < 20; ++i) {
    const double lambda = b.curvatures()(i);
    EXPECT_NEAR(z1(i), z0(i) * 0.01 / (lambda + 0.01), 1e-12) << i;
  }
}

TEST(QuadraticBowlTest, MomentumFollowsTheHeavyBallRecursion) {
  const QuadraticBowl b(BowlOptions{}, 9);
  MomentumSgd sgd(100, 0.9);
  Eigen::VectorXd theta = Eigen::VectorXd::Zero(100);
  std::mt19937_64 rng(0);
  StepPlan plan;
  plan.lr = 0.5;
  const Eigen::VectorXd g1 = Eigen::VectorXd::Constant(100, 1.0);
  const Eigen::VectorXd g2 = Eigen::VectorXd::Constant(100, 2.0);
  sgd.Step(b, plan, g1, rng, &theta);  // v = 1, theta = -0.5
  sgd.Step(b, plan, g2, rng, &theta);  // v = 0.9 + 2, theta = -0.5 - 1.45
  EXPECT_NEAR(theta(0), -1.95, 1e-15);
}

TEST(ShapeOfTest, KnownSpectra) {
  EXPECT_EQ(ShapeOf(Eigen::Vector4d(1, 1, 1, 1)).r90, 4);
  EXPECT_DOUBLE_EQ(ShapeOf(Eigen::Vector4d(1, 1, 1, 1)).pr, 4);
  EXPECT_EQ(ShapeOf(Eigen::Vector3d(0, 5, 0)).r90, 1);
  EXPECT_DOUBLE_EQ(ShapeOf(Eigen::Vector3d(0, 5, 0)).pr, 1);
  // 0.5, 0.3, 0.15, 0.05: 90% needs three.
  EXPECT_EQ(ShapeOf(Eigen::Vector4d(0.05, 0.3, 0.5, 0.15)).r90, 3);
  EXPECT_DOUBLE_EQ(ShapeOf(Eigen::Vector2d(-1, 2)).pr, 1);  // negatives clipped
}

}  // namespace
}  // namespace spotter::examples
