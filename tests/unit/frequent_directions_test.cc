// Frequent Directions against the exact A^T A (k x k, double).
//
// Tolerances: the certified claim is
//   lambda_i(A^T A) in [e_i - rho, e_i + delta + rho]
// with rho the rounding bound the sketch tracks (derived in
// docs/DIAGNOSTICS.md, "Float32 rounding"); the tests add nothing to it but
// the error of the double-precision reference itself, kReferenceSlack *
// trace (a k-term double dot product: k * 2^-53 < 1e-12 for k <= 4096).
#include "core/spectrum/frequent_directions.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <Eigen/QR>

#include "core/spectrum/top_eigen.h"
#include "gtest/gtest.h"
#include "tests/testing/planted.h"

namespace spotter {
namespace {

using testing::PlantedGaussian;
using testing::PlantedSpectrum;
using testing::SymmetricEigenvalues;

constexpr double kReferenceSlack = 1e-12;

// Exact decayed sum_rows w x x^T, the reference every sketch is held to.
class ExactScatter {
 public:
  explicit ExactScatter(int k) : m_(Eigen::MatrixXd::Zero(k, k)) {}
  void Append(const RowMatrixXf& x, double w = 1.0) {
    const Eigen::MatrixXd xd = x.cast<double>();
    m_.noalias() += w * xd.transpose() * xd;
  }
  void Scale(double f) { m_ *= f; }
  void Merge(const ExactScatter& o) { m_ += o.m_; }
  std::vector<double> Eigenvalues() const { return SymmetricEigenvalues(m_); }
  double Trace() const { return m_.trace(); }

 private:
  Eigen::MatrixXd m_;
};

// Checks every certified interval and the FD bound on delta.
void ExpectCertified(const FrequentDirections& fd, const ExactScatter& exact,
                     const std::string& what) {
  const SketchSpectrum s = fd.Spectrum();
  const std::vector<double> ex = exact.Eigenvalues();
  const double trace = exact.Trace();
  const double slack = s.rounding + kReferenceSlack * trace;
  EXPECT_NEAR(s.trace, trace, 1e-9 * trace) << what;
  for (size_t i = 0; i < ex.size(); ++i) {
    const double e = i < s.eigenvalues.size() ? s.eigenvalues[i] : 0.0;
    ASSERT_GE(ex[i], e - slack) << what << ": eigenvalue " << i << " below its interval";
    ASSERT_LE(ex[i], e + s.delta + slack) << what << ": eigenvalue " << i << " above";
  }
  // delta <= ||A - A_r||_F^2 / (l - r). The mass accounting behind it is exact
  // up to the trace of the rounding errors, which is at most their rank (each
  // tracked error matrix has rank <= 2 * capacity) times rho.
  const int l = fd.sketch_rows();
  double tail = trace;
  for (int r = 0; r < l; ++r) {
    EXPECT_LE(s.delta, (tail + 2.0 * fd.capacity() * slack) / (l - r))
        << what << ": FD bound with r = " << r;
    tail -= ex[r];
  }
}

struct Case {
  const char* name;
  PlantedSpectrum spectrum;
};

std::vector<Case> Cases() {
  return {
      {"power law 0.6", PlantedSpectrum::PowerLaw(90, 0.6, 1.0, 1e-3)},
      {"power law 1.2", PlantedSpectrum::PowerLaw(90, 1.2, 1.0, 1e-3)},
      {"power law 2.0", PlantedSpectrum::PowerLaw(90, 2.0, 1.0, 1e-4)},
      {"low rank + noise", PlantedSpectrum::LowRankPlusNoise(6, 4.0, 0.05)},
      {"step", PlantedSpectrum::Step(10, 3.0, 30, 0.4)},
  };
}

TEST(FrequentDirectionsTest, EigenvaluesInsideCertifiedIntervalsOverManySeeds) {
  const int k = 96, l = 16;
  for (const Case& c : Cases()) {
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      PlantedGaussian gen(k, c.spectrum, seed);
      std::mt19937_64 rng(seed);
      FrequentDirections fd(k, l);
      ExactScatter exact(k);
      for (int b = 0; b < 30; ++b) {
        RowMatrixXf x = gen.Sample(1 + static_cast<int>(rng() % 23), rng);
        fd.Append(x);
        exact.Append(x);
      }
      ASSERT_GT(fd.shrinks(), 5);
      ExpectCertified(fd, exact, std::string(c.name) + " seed " + std::to_string(seed));
    }
  }
}

TEST(FrequentDirectionsTest, CertifiedUnderDecayAndWeights) {
  const int k = 80, l = 12;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(60, 1.0, 1.0, 1e-3), seed);
    std::mt19937_64 rng(seed);
    FrequentDirections fd(k, l);
    ExactScatter exact(k);
    for (int step = 0; step < 120; ++step) {
      fd.Scale(0.97);
      exact.Scale(0.97);
      const double w = 0.5 + (rng() % 100) / 50.0;
      RowMatrixXf x = gen.Sample(7, rng);
      fd.Append(x, w);
      exact.Append(x, w);
    }
    ExpectCertified(fd, exact, "decayed seed " + std::to_string(seed));
  }
}

TEST(FrequentDirectionsTest, ExactWhileBufferHoldsEveryRow) {
  std::mt19937_64 rng(7);
  PlantedGaussian gen(32, PlantedSpectrum::Step(3, 5.0, 5, 1.0), 7);
  FrequentDirections fd(32, 8);
  RowMatrixXf x = gen.Sample(12, rng);
  fd.Append(x);
  ExactScatter exact(32);
  exact.Append(x);
  EXPECT_EQ(fd.delta(), 0.0);
  EXPECT_EQ(fd.shrinks(), 0);
  ExpectCertified(fd, exact, "no shrink");
}

TEST(FrequentDirectionsTest, LowRankStreamLosesNothing) {
  // Rank-5 rows: every shrink's (l+1)-th eigenvalue is zero up to rounding.
  std::mt19937_64 rng(5);
  PlantedGaussian gen(64, PlantedSpectrum::LowRankPlusNoise(5, 1.0, 0.0), 5);
  FrequentDirections fd(64, 8);
  ExactScatter exact(64);
  for (int b = 0; b < 20; ++b) {
    RowMatrixXf x = gen.Sample(9, rng);
    fd.Append(x);
    exact.Append(x);
  }
  EXPECT_GT(fd.shrinks(), 0);
  EXPECT_LE(fd.delta(), 1e-5 * exact.Trace());
  ExpectCertified(fd, exact, "rank 5");
}

TEST(FrequentDirectionsTest, ScaleDecaysSketchAndBounds) {
  std::mt19937_64 rng(3);
  PlantedGaussian gen(40, PlantedSpectrum::PowerLaw(20, 1.0), 3);
  FrequentDirections a(40, 8), b(40, 8);
  RowMatrixXf x = gen.Sample(50, rng);
  a.Append(x);
  b.Append(x);
  b.Scale(0.25);
  const auto ea = a.Eigenvalues(), eb = b.Eigenvalues();
  ASSERT_EQ(ea.size(), eb.size());
  for (size_t i = 0; i < ea.size(); ++i) EXPECT_NEAR(eb[i], 0.25 * ea[i], 1e-5 * ea[0]);
  EXPECT_DOUBLE_EQ(b.delta(), 0.25 * a.delta());
  EXPECT_DOUBLE_EQ(b.rounding(), 0.25 * a.rounding());
  EXPECT_DOUBLE_EQ(b.trace(), 0.25 * a.trace());
  // Repeated tiny decays fold into the buffer without losing precision.
  for (int i = 0; i < 100; ++i) b.Scale(0.5);
  for (int i = 0; i < 100; ++i) b.Scale(2.0);
  const auto ec = b.Eigenvalues();
  for (size_t i = 0; i < ea.size(); ++i) EXPECT_NEAR(ec[i], 0.25 * ea[i], 1e-4 * ea[0]);
  // Scale(0) empties the sketch.
  b.Scale(0.0);
  EXPECT_EQ(b.rows_used(), 0);
  EXPECT_EQ(b.trace(), 0.0);
  EXPECT_TRUE(b.Eigenvalues().empty());
}

TEST(FrequentDirectionsTest, MergeBoundsTheUnion) {
  for (uint64_t seed = 11; seed <= 15; ++seed) {
    std::mt19937_64 rng(seed);
    PlantedGaussian gen(64, PlantedSpectrum::LowRankPlusNoise(6, 4.0, 0.05), seed);
    FrequentDirections a(64, 12), b(64, 12);
    ExactScatter ea(64), eb(64);
    RowMatrixXf xa = gen.Sample(200, rng), xb = gen.Sample(150, rng);
    a.Append(xa);
    ea.Append(xa);
    b.Scale(0.5);  // a lazily scaled sketch merges with its scale
    b.Append(xb, 3.0);
    eb.Append(xb, 3.0);
    a.Merge(b);
    ea.Merge(eb);
    ExpectCertified(a, ea, "merged seed " + std::to_string(seed));
  }
}

TEST(FrequentDirectionsTest, MergedSketchAgreesWithSingleSketchWithinBounds) {
  // Both sketches bound the same A^T A from below within their delta, so
  // their eigenvalues differ by at most max(delta) + both rounding bounds.
  const int k = 96, l = 16, ranks = 6;
  std::mt19937_64 rng(21);
  PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(70, 1.0, 1.0, 1e-3), 21);
  FrequentDirections single(k, l);
  std::vector<FrequentDirections> parts(ranks, FrequentDirections(k, l));
  ExactScatter exact(k);
  for (int step = 0; step < 40; ++step) {
    for (int r = 0; r < ranks; ++r) {
      RowMatrixXf x = gen.Sample(5, rng);
      single.Append(x);
      parts[r].Append(x);
      exact.Append(x);
    }
  }
  FrequentDirections merged = parts[0];
  for (int r = 1; r < ranks; ++r) merged.Merge(parts[r]);
  ExpectCertified(merged, exact, "merged");
  ExpectCertified(single, exact, "single");
  const SketchSpectrum sm = merged.Spectrum(), ss = single.Spectrum();
  const double tol = std::max(sm.delta, ss.delta) + sm.rounding + ss.rounding;
  for (size_t i = 0; i < std::max(sm.eigenvalues.size(), ss.eigenvalues.size()); ++i) {
    const double a = i < sm.eigenvalues.size() ? sm.eigenvalues[i] : 0.0;
    const double b = i < ss.eigenvalues.size() ? ss.eigenvalues[i] : 0.0;
    EXPECT_LE(std::abs(a - b), tol) << "eigenvalue " << i;
  }
}

TEST(TopEigenTest, MatchesFullDecomposition) {
  std::mt19937_64 rng(1);
  for (int n : {2, 9, 40, 128}) {
    for (int trial = 0; trial < 4; ++trial) {
      // Spectra with clusters and exact repeats, as FD buffers have.
      Eigen::MatrixXd q = Eigen::MatrixXd::Random(n, n);
      Eigen::HouseholderQR<Eigen::MatrixXd> qr(q);
      q = qr.householderQ();
      Eigen::VectorXd ev(n);
      for (int i = 0; i < n; ++i) {
        ev[i] = trial == 0   ? 1.0 / (i + 1)
                : trial == 1 ? (i < n / 3 ? 5.0 : 1.0)
                : trial == 2 ? (i < n / 2 ? 1.0 + 1e-9 * i : 0.0)
                             : std::exp(-0.3 * i);
      }
      const Eigen::MatrixXd g = q * ev.asDiagonal() * q.transpose();
      const int keep = std::max(1, n / 2);
      const TopEigen fast = TopEigenpairs(g, keep);
      const TopEigen full = TopEigenpairsFull(g, keep);
      const double scale = ev.maxCoeff();
      EXPECT_NEAR(fast.top_value, full.top_value, 1e-12 * scale);
      EXPECT_NEAR(fast.top_sum, full.top_sum, 1e-11 * scale * keep);
      EXPECT_NEAR(fast.next_value, full.next_value, 1e-12 * scale);
      // Orthonormal vectors with small residuals.
      const Eigen::MatrixXd& u = fast.vectors;
      EXPECT_LE((u.transpose() * u - Eigen::MatrixXd::Identity(keep, keep)).norm(), 1e-10);
      const Eigen::MatrixXd gu = g * u;
      for (int i = 0; i < keep; ++i) {
        const double lam = u.col(i).dot(gu.col(i));
        EXPECT_LE((gu.col(i) - lam * u.col(i)).norm(), 1e-9 * scale)
            << "n " << n << " trial " << trial << " vector " << i;
      }
    }
  }
}

}  // namespace
}  // namespace spotter
