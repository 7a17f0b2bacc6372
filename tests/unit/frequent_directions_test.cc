#include "core/spectrum/frequent_directions.h"

#include <random>

#include "gtest/gtest.h"
#include "tests/testing/planted.h"

namespace spotter {
namespace {

using testing::PlantedGaussian;
using testing::PlantedSpectrum;
using testing::ScatterEigenvalues;

// Relative slack for float32 storage of the sketch (the bound itself is exact
// arithmetic): eigenvalues are compared up to this fraction of the trace.
constexpr double kFloatSlack = 2e-5;

double Trace(const std::vector<double>& e) {
  double t = 0;
  for (double v : e) t += v;
  return t;
}

// Every exact eigenvalue of A^T A lies in [lambda_i(B^T B), lambda_i(B^T B) +
// delta], and delta obeys the FD bound ||A - A_r||_F^2 / (l - r).
void ExpectCertified(const FrequentDirections& fd, const std::vector<double>& exact) {
  const std::vector<double> est = fd.Eigenvalues();
  const double slack = kFloatSlack * Trace(exact);
  for (size_t i = 0; i < exact.size() && i < 3 * est.size(); ++i) {
    const double lo = i < est.size() ? est[i] : 0.0;
    EXPECT_GE(exact[i] + slack, lo) << "eigenvalue " << i;
    EXPECT_LE(exact[i], lo + fd.delta() + slack) << "eigenvalue " << i;
  }
  const double total = Trace(exact);
  const int l = fd.sketch_rows();
  for (int r = 0; r < l; r += 4) {
    double tail = total;
    for (int i = 0; i < r; ++i) tail -= exact[i];
    EXPECT_LE(fd.delta(), tail / (l - r) + slack) << "FD bound with r = " << r;
  }
}

TEST(FrequentDirectionsTest, EigenvaluesInsideCertifiedIntervals) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    const int k = 96, l = 16;
    PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(40, 1.2, 1.0, 1e-3), seed);
    std::mt19937_64 rng(seed);
    FrequentDirections fd(k, l);
    RowMatrixXf all(0, k);
    for (int b = 0; b < 20; ++b) {
      RowMatrixXf x = gen.Sample(17, rng);
      fd.Append(x);
      RowMatrixXf next(all.rows() + x.rows(), k);
      next << all, x;
      all = std::move(next);
    }
    EXPECT_GT(fd.shrinks(), 0);
    ExpectCertified(fd, ScatterEigenvalues(all));
  }
}

TEST(FrequentDirectionsTest, ExactWhileBufferHoldsEveryRow) {
  std::mt19937_64 rng(7);
  PlantedGaussian gen(32, PlantedSpectrum::Step(3, 5.0, 5, 1.0), 7);
  FrequentDirections fd(32, 8);
  RowMatrixXf x = gen.Sample(12, rng);
  fd.Append(x);
  EXPECT_EQ(fd.delta(), 0.0);
  const auto exact = ScatterEigenvalues(x);
  const auto est = fd.Eigenvalues();
  for (size_t i = 0; i < est.size(); ++i) EXPECT_NEAR(est[i], exact[i], 1e-4 * exact[0]);
}

TEST(FrequentDirectionsTest, ScaleDecaysSketchAndBound) {
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
  EXPECT_NEAR(b.delta(), 0.25 * a.delta(), 1e-12);
  // Repeated tiny decays fold into the buffer without losing precision.
  for (int i = 0; i < 100; ++i) b.Scale(0.5);
  for (int i = 0; i < 100; ++i) b.Scale(2.0);
  const auto ec = b.Eigenvalues();
  for (size_t i = 0; i < ea.size(); ++i) EXPECT_NEAR(ec[i], 0.25 * ea[i], 1e-4 * ea[0]);
}

TEST(FrequentDirectionsTest, MergeBoundsTheUnion) {
  std::mt19937_64 rng(11);
  PlantedGaussian gen(64, PlantedSpectrum::LowRankPlusNoise(6, 4.0, 0.05), 11);
  FrequentDirections a(64, 12), b(64, 12);
  RowMatrixXf xa = gen.Sample(200, rng), xb = gen.Sample(150, rng);
  a.Append(xa);
  b.Append(xb);
  a.Merge(b);
  RowMatrixXf all(350, 64);
  all << xa, xb;
  ExpectCertified(a, ScatterEigenvalues(all));
}

}  // namespace
}  // namespace spotter
