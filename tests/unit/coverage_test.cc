// The sampling confidence intervals hold the population value about as often
// as their level says (docs/DIAGNOSTICS.md, "Sampling intervals"; the full
// table, 100 seeds per case at k = 512, is bench/coverage_table.cc run by
// scripts/coverage_table.sh). Short form: fewer seeds, P = 2^12 -> k = 256.
//
// The claim tested: over every case of StandardCoverageCases, the nominal 90%
// interval of the participation ratio holds the truth in at least 80% of the
// seeds (pooled), and in at least 60% in every case (24 seeds: binomial noise). An interval that covered
// only the sketch's error (the sketch bound) holds it far less often: the
// test checks that too, so it fails if the "error bar" goes back to being
// the sketch bound.
#include <cmath>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/testing/coverage.h"
#include "tests/testing/planted.h"

namespace spotter {
namespace {

TEST(CoverageTest, NinetyPercentIntervalsHoldThePopulationParticipationRatio) {
  constexpr int kSeeds = 24;
  int covered = 0, sketch_covered = 0, trials = 0;
  for (const testing::CoverageCase& c : testing::StandardCoverageCases(12, 256, 64, 120)) {
    const testing::CoverageResult r = testing::RunCoverage(c, kSeeds, 1);
    const double cov = r.PrCoverage();
    std::printf("%-40s true PR %6.2f  CI covers %3.0f%%  sketch bound covers %3.0f%%  "
                "mean error %+5.1f%%  censored %3.0f%%\n",
                c.name.c_str(), r.true_pr, 100 * cov, 100 * r.PrSketchBoundCoverage(),
                100 * r.MeanPrRelativeError(), 100 * r.CensoredFraction());
    EXPECT_GE(cov, 0.6) << c.name;
    covered += static_cast<int>(std::lround(cov * kSeeds));
    sketch_covered += static_cast<int>(std::lround(r.PrSketchBoundCoverage() * kSeeds));
    trials += kSeeds;
  }
  const double pooled = static_cast<double>(covered) / trials;
  std::printf("pooled: CI covers %.1f%%, sketch bound %.1f%% of %d\n", 100 * pooled,
              100.0 * sketch_covered / trials, trials);
  EXPECT_GE(pooled, 0.8);
  // The sketch bound is not a confidence interval: it misses far more often.
  EXPECT_LT(static_cast<double>(sketch_covered) / trials, 0.7);
}

TEST(CoverageTest, AtTheSketchsEdgeThePrIsALowerBound) {
  // A power law with alpha = 1 through P = 2^11 -> k = 128 summarised with
  // l = 16 rows: a true PR near 2 l, far more spectrum than 16 rows hold. Its
  // point estimate would run low in every seed; it must come out censored,
  // as a lower bound that holds, with an interval that holds the truth.
  testing::CoverageCase c;
  c.name = "edge";
  c.log2_p = 11;
  c.k = 128;
  c.l = 16;
  c.steps = 100;
  c.eigenvalues = testing::PowerLawSpectrum(1 << 11, 1.0);
  const testing::CoverageResult r = testing::RunCoverage(c, 6, 1);
  EXPECT_GT(r.true_pr, 1.5 * c.l);
  EXPECT_EQ(r.CensoredFraction(), 1.0);
  for (const testing::CoverageTrial& t : r.trials) {
    EXPECT_LE(t.pr.value, r.true_pr) << "a censored PR is a lower bound";
    EXPECT_EQ(t.pr.value, t.pr.lower);
  }
  EXPECT_GE(r.PrCoverage(), 5.0 / 6.0);
}

TEST(CoverageTest, UnprojectedRowsGetNoProjectionCorrection) {
  // The same unprojected rows summarised as identity-projected and as if
  // count-sketched: the identity summary is centred on the truth, the
  // mislabelled one over-corrects (the bias the identity kind removes).
  testing::CoverageCase c;
  c.name = "low rank unprojected";
  c.log2_p = 8;
  c.k = 256;
  c.l = 64;
  c.steps = 100;
  c.eigenvalues = testing::LowRankSpectrum(256, 60, 1.0, 0.01);
  c.projection = ProjectionKind::kIdentity;
  const testing::CoverageResult r = testing::RunCoverage(c, 6, 1);
  EXPECT_NEAR(r.MeanPrRelativeError(), 0.0, 0.03) << "true PR " << r.true_pr;
  EXPECT_GE(r.PrCoverage(), 5.0 / 6.0);
  c.summarize_as = static_cast<int>(ProjectionKind::kCountSketch);
  const testing::CoverageResult wrong = testing::RunCoverage(c, 6, 1);
  EXPECT_GT(wrong.MeanPrRelativeError(), 0.1) << "true PR " << wrong.true_pr;
}

}  // namespace
}  // namespace spotter
