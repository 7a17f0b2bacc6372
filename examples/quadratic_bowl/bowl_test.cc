// The quadratic bowl's closed forms against Monte Carlo and direct algebra:
// the per-example gradient covariance spotterd estimates, the loss, the
// natural-gradient direction, and the redundant flat directions; K-FAC's
// estimate of it (kfac.h) against a direct dense solve.
#include "examples/quadratic_bowl/bowl.h"

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>

#include "examples/quadratic_bowl/kfac.h"
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
    // What K-FAC reads: row i of per_example is r_i x_i.
    EXPECT_LT((m.residuals.asDiagonal() * m.inputs - g).norm(), 1e-5 * g.norm());
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
  Minibatch exact;
  exact.gradient = Hessian(b) * e0;
  sgd.Step(b, plan, exact, rng, &theta);
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
  Minibatch g1, g2;
  g1.gradient = Eigen::VectorXd::Constant(100, 1.0);
  g2.gradient = Eigen::VectorXd::Constant(100, 2.0);
  sgd.Step(b, plan, g1, rng, &theta);  // v = 1, theta = -0.5
  sgd.Step(b, plan, g2, rng, &theta);  // v = 0.9 + 2, theta = -0.5 - 1.45
  EXPECT_NEAR(theta(0), -1.95, 1e-15);
}

// K-FAC's preconditioned direction, computed directly: the solution of
// (G (x) A + damping I) vec(P) = vec(V), vec by rows (P is d_out x d_in), by
// a dense solve of the d_out d_in system.
Eigen::MatrixXd DenseKfacSolve(const Eigen::MatrixXd& g, const Eigen::MatrixXd& a,
                               const Eigen::MatrixXd& v, double damping) {
  const Eigen::Index o = g.rows(), n = a.rows();
  Eigen::MatrixXd k(o * n, o * n);
  for (Eigen::Index i = 0; i < o; ++i) {
    for (Eigen::Index j = 0; j < o; ++j) k.block(i * n, j * n, n, n) = g(i, j) * a;
  }
  k.diagonal().array() += damping;
  Eigen::VectorXd rhs(o * n);
  for (Eigen::Index i = 0; i < o; ++i) rhs.segment(i * n, n) = v.row(i).transpose();
  const Eigen::VectorXd x = k.colPivHouseholderQr().solve(rhs);
  Eigen::MatrixXd p(o, n);
  for (Eigen::Index i = 0; i < o; ++i) p.row(i) = x.segment(i * n, n).transpose();
  return p;
}

Eigen::MatrixXd Gaussian(int rows, int cols, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0.0, 1.0);
  Eigen::MatrixXd m(rows, cols);
  for (int j = 0; j < cols; ++j) {
    for (int i = 0; i < rows; ++i) m(i, j) = n(rng);
  }
  return m;
}

double RelativeError(const Eigen::MatrixXd& got, const Eigen::MatrixXd& want) {
  return (got - want).norm() / want.norm();
}

KfacOptions Exact(double damping) {  // no running average, every step, no clip
  KfacOptions o;
  o.damping = damping;
  o.factor_decay = 0.0;
  o.factor_update_interval = 1;
  o.inverse_update_interval = 1;
  o.kl_clip = 0.0;
  return o;
}

TEST(KfacTest, OneMinibatchGivesItsFactorsAndTheExactDampedSolve) {
  // The bowl's model: inputs x_i, one output, dloss_i/dout_i = r_i.
  const QuadraticBowl b(BowlOptions{}, 11);
  std::mt19937_64 rng(2);
  Kfac kfac(Exact(1e-3));
  Eigen::VectorXd theta = b.theta0();
  Minibatch m;
  for (int step = 0; step < 3; ++step) {  // decay 0: each step's factors are its batch's
    b.Sample(theta, rng, &m);
    const Eigen::MatrixXd v = m.gradient.transpose();
    const Eigen::MatrixXd p = kfac.Step(step, m.inputs, m.residuals, v, 0.01);
    const Eigen::MatrixXd a = m.inputs.transpose() * m.inputs / 16.0;
    const double g = m.residuals.squaredNorm() / 16.0;
    EXPECT_LE((kfac.a() - a).norm(), 1e-12 * a.norm()) << step;
    ASSERT_EQ(kfac.g().size(), 1);
    EXPECT_NEAR(kfac.g()(0, 0), g, 1e-12 * g) << step;
    const Eigen::MatrixXd want = DenseKfacSolve(kfac.g(), a, v, 1e-3);
    EXPECT_LT(RelativeError(p, want), 1e-9) << step;
    EXPECT_EQ(kfac.last_nu(), 1.0);
    theta -= 0.001 * m.gradient;
  }
  EXPECT_EQ(kfac.factor_updates(), 3u);
  EXPECT_EQ(kfac.inverse_updates(), 3u);
  EXPECT_EQ(kfac.failures(), 0u);

  // Several outputs: the Kronecker order (G on the rows of V, A on its columns).
  Kfac wide(Exact(0.05));
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(8, 5), d = Eigen::MatrixXd::Random(8, 3);
  const Eigen::MatrixXd v = Eigen::MatrixXd::Random(3, 5);
  const Eigen::MatrixXd p = wide.Step(0, x, d, v, 0.01);
  EXPECT_LT(RelativeError(wide.a(), x.transpose() * x / 8.0), 1e-12);
  EXPECT_LT(RelativeError(wide.g(), d.transpose() * d / 8.0), 1e-12);
  EXPECT_LT(
      RelativeError(p, DenseKfacSolve(d.transpose() * d / 8.0, x.transpose() * x / 8.0, v, 0.05)),
      1e-9);
}

TEST(KfacTest, RunningAveragesRefreshOnTheMonitorsSchedule) {
  // Decay 0.95, factors every 10 steps after the switch, eigendecompositions
  // every 100: after 101 steps the factors average the batches of steps 0,
  // 10, ..., 100 and the direction at step 99 still uses step 0's.
  KfacOptions o;
  o.kl_clip = 0.0;
  Kfac kfac(o);
  Kfac first(Exact(o.damping));
  std::mt19937_64 rng(4);
  Eigen::MatrixXd a, g;
  for (int step = 0; step <= 100; ++step) {
    const Eigen::MatrixXd x = Gaussian(16, 6, rng), d = Gaussian(16, 1, rng),
                          v = Gaussian(1, 6, rng);
    const Eigen::MatrixXd p = kfac.Step(step, x, d, v, 0.01);
    if (step % 10 == 0) {
      const Eigen::MatrixXd ab = x.transpose() * x / 16.0, gb = d.transpose() * d / 16.0;
      a = step == 0 ? ab : Eigen::MatrixXd(0.95 * a + 0.05 * ab);
      g = step == 0 ? gb : Eigen::MatrixXd(0.95 * g + 0.05 * gb);
    }
    if (step == 0) first.Step(0, x, d, v, 0.01);
    if (step == 99) {
      EXPECT_LT(RelativeError(p, first.Precondition(v, 0.01)), 1e-12);
    }
    if (step == 100) {
      EXPECT_LT(RelativeError(p, DenseKfacSolve(g, a, v, o.damping)), 1e-9);
    }
  }
  EXPECT_LT(RelativeError(kfac.a(), a), 1e-12);
  EXPECT_LT(RelativeError(kfac.g(), g), 1e-12);
  EXPECT_EQ(kfac.factor_updates(), 11u);
  EXPECT_EQ(kfac.inverse_updates(), 2u);
}

TEST(KfacTest, KlClipBoundsThePredictedChange) {
  // nu = min(1, sqrt(kl_clip / (lr^2 <V, P>))): a clipped step's predicted
  // KL change, nu^2 lr^2 <V, P>, is kl_clip exactly; a small step is not clipped.
  KfacOptions o = Exact(1e-3);
  o.kl_clip = 1e-3;
  Kfac kfac(o);
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(16, 10), d = Eigen::MatrixXd::Random(16, 1);
  const Eigen::MatrixXd v = Eigen::MatrixXd::Random(1, 10);
  kfac.Step(0, x, d, v, 1.0);
  Kfac plain(Exact(1e-3));
  const Eigen::MatrixXd p = plain.Step(0, x, d, v, 1.0);
  const double vp = p.cwiseProduct(v).sum();
  for (double lr : {1.0, 0.1, 1e-4}) {
    const Eigen::MatrixXd clipped = kfac.Precondition(v, lr);
    const double nu = kfac.last_nu();
    EXPECT_LT(RelativeError(clipped, nu * p), 1e-12) << lr;
    if (lr * lr * vp > 1e-3) {
      EXPECT_NEAR(nu * nu * lr * lr * vp, 1e-3, 1e-12) << lr;
    } else {
      EXPECT_EQ(nu, 1.0) << lr;
    }
  }
}

TEST(MomentumSgdTest, KfacPlansStepWithTheEstimateAndDropItOnFirstOrder) {
  const QuadraticBowl b(BowlOptions{}, 13);
  KfacOptions o = Exact(1e-3);
  o.kl_clip = 1e-3;
  MomentumSgd sgd(100, 0.9, o);
  std::mt19937_64 rng(5);
  Eigen::VectorXd theta = b.theta0();
  Minibatch m;
  b.Sample(theta, rng, &m);
  StepPlan plan;
  plan.lr = 0.005;
  plan.natural_gradient = true;
  plan.kfac = true;
  plan.damping = 1e-3;
  sgd.Step(b, plan, m, rng, &theta);
  ASSERT_NE(sgd.kfac(), nullptr);
  // The KL bound sees lr / (1 - momentum); momentum's buffer was empty.
  const Eigen::MatrixXd p =
      DenseKfacSolve(Eigen::MatrixXd::Constant(1, 1, m.residuals.squaredNorm() / 16.0),
                     m.inputs.transpose() * m.inputs / 16.0, m.gradient.transpose(), 1e-3);
  const double lr_eff = 0.005 / (1 - 0.9);
  const double nu = std::min(
      1.0, std::sqrt(1e-3 / (lr_eff * lr_eff * p.cwiseProduct(m.gradient.transpose()).sum())));
  EXPECT_LT(nu, 1.0);  // far from the optimum the clip is active
  EXPECT_NEAR(sgd.kfac()->last_nu(), nu, 1e-9 * nu);
  EXPECT_LT((theta - (b.theta0() - 0.005 * nu * p.transpose())).norm(),
            1e-9 * (0.005 * nu * p).norm());
  // The damping of the plan applies on top of the options it started from.
  plan.damping = 0.5;
  b.Sample(theta, rng, &m);
  sgd.Step(b, plan, m, rng, &theta);
  EXPECT_EQ(sgd.kfac()->options().damping, 0.5);
  EXPECT_EQ(sgd.kfac()->factor_updates(), 2u);
  // A first-order plan drops the state.
  plan.natural_gradient = plan.kfac = false;
  sgd.Step(b, plan, m, rng, &theta);
  EXPECT_EQ(sgd.kfac(), nullptr);
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
