// Per-rank summaries and the divergent-rank rule (docs/DIAGNOSTICS.md,
// "Divergent ranks").
#include "core/spectrum/evaluation.h"

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/planted.h"

namespace spotter {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::PlantedGaussian;
using testing::PlantedSpectrum;

constexpr int kDim = 64, kRows = 16;

SpectrumOptions Options() {
  SpectrumOptions o;
  o.dim = kDim;
  o.sketch_rows = kRows;
  return o;
}

// One rank's window: `steps` batches of 16 rows from `gen`, decay 0.97
// (n_eff ~ 1000 rows), scaled by sqrt(gain) (gain multiplies the trace).
RankWindow Window(uint32_t rank, const PlantedGaussian& gen, std::mt19937_64& rng,
                  double gain = 1.0, int steps = 40) {
  WindowOptions w;
  w.decay = 0.97;
  RankAccumulator acc(kDim, kRows, w);
  for (int s = 0; s < steps; ++s) {
    RowMatrixXf x = gen.Sample(16, rng) * static_cast<float>(std::sqrt(gain));
    acc.Add(s, x, 1.0);
  }
  return {rank, acc.Snapshot(steps - 1)};
}

std::vector<uint32_t> Ranks(const std::vector<RankDivergence>& d) {
  std::vector<uint32_t> out;
  for (const RankDivergence& r : d) out.push_back(r.rank);
  return out;
}

const PlantedSpectrum kSpectrum = PlantedSpectrum::PowerLaw(40, 1.0, 1.0, 0.01);

TEST(DivergenceTest, FlagsARankWithAScaledGradient) {
  std::mt19937_64 rng(1);
  PlantedGaussian gen(kDim, kSpectrum, 1);
  std::vector<RankWindow> windows;
  for (uint32_t r = 0; r < 8; ++r) windows.push_back(Window(r, gen, rng, r == 5 ? 3.0 : 1.0));
  const RunEvaluation e = EvaluateRanks(std::move(windows), Options(), DivergenceOptions());
  EXPECT_THAT(Ranks(e.divergent), ElementsAre(5u));
  ASSERT_EQ(e.divergent.size(), 1u);
  EXPECT_THAT(e.divergent[0].reasons[0], HasSubstr("trace"));
  EXPECT_EQ(e.ranks.size(), 8u);
}

TEST(DivergenceTest, SkipsThePerRankPassAboveMaxRanks) {
  std::mt19937_64 rng(1);
  PlantedGaussian gen(kDim, kSpectrum, 1);
  std::vector<RankWindow> windows;
  for (uint32_t r = 0; r < 5; ++r) windows.push_back(Window(r, gen, rng, r == 3 ? 3.0 : 1.0));
  DivergenceOptions o;
  o.max_ranks = 4;
  const RunEvaluation e = EvaluateRanks(std::move(windows), Options(), o);
  EXPECT_TRUE(e.ranks.empty());
  EXPECT_TRUE(e.divergent.empty());
  ASSERT_TRUE(e.merged.has_value());
  EXPECT_EQ(e.merged->rows, 5u * 40u * 16u);
}

TEST(DivergenceTest, FlagsARankWithADifferentSpectrumOfTheSameTrace) {
  std::mt19937_64 rng(2);
  PlantedGaussian gen(kDim, kSpectrum, 2);
  // Rank 2's gradients live in 3 directions instead of ~40, same total variance.
  PlantedGaussian odd(kDim, PlantedSpectrum::LowRankPlusNoise(3, 1.0, 0.002), 3);
  const double gain = [&] {
    double a = 0, b = 0;
    for (double v : gen.Eigenvalues()) a += v;
    for (double v : odd.Eigenvalues()) b += v;
    return a / b;
  }();
  std::vector<RankWindow> windows;
  for (uint32_t r = 0; r < 6; ++r) {
    windows.push_back(r == 2 ? Window(r, odd, rng, gain) : Window(r, gen, rng));
  }
  const RunEvaluation e = EvaluateRanks(std::move(windows), Options(), DivergenceOptions());
  ASSERT_THAT(Ranks(e.divergent), ElementsAre(2u));
  const std::string all = ::testing::PrintToString(e.divergent[0].reasons);
  EXPECT_THAT(all, HasSubstr("pr"));
  EXPECT_THAT(all, ::testing::Not(HasSubstr("trace")));
}

TEST(DivergenceTest, NoFalsePositivesAmongIdenticallyDistributedRanks) {
  int flagged = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(100 + seed);
    PlantedGaussian gen(kDim, kSpectrum, seed);
    std::vector<RankWindow> windows;
    // Ranks see different amounts of data (a slow rank has a shorter window).
    for (uint32_t r = 0; r < 8; ++r) windows.push_back(Window(r, gen, rng, 1.0, 20 + 5 * r));
    flagged += EvaluateRanks(std::move(windows), Options(), DivergenceOptions()).divergent.size();
  }
  EXPECT_EQ(flagged, 0);
}

TEST(DivergenceTest, NeedsThreeRanksToCallOneTheOddOneOut) {
  std::mt19937_64 rng(4);
  PlantedGaussian gen(kDim, kSpectrum, 4);
  std::vector<RankWindow> windows;
  windows.push_back(Window(0, gen, rng));
  windows.push_back(Window(1, gen, rng, 10.0));
  const RunEvaluation e = EvaluateRanks(std::move(windows), Options(), DivergenceOptions());
  EXPECT_TRUE(e.divergent.empty());
  EXPECT_TRUE(e.ranks.empty());  // per-rank summaries are skipped below min_ranks
  ASSERT_TRUE(e.merged.has_value());
  EXPECT_TRUE(e.merged->covariance.valid);
}

TEST(DivergenceTest, UsesTheCertifiedIntervals) {
  // Five ranks agree on PR ~ 10; a sixth reports PR 30. Flagged only when its
  // certified interval excludes the median.
  auto summary = [](uint32_t rank, double pr, double lo, double hi) {
    RankSummary s;
    s.rank = rank;
    s.example_trace = 1.0;
    s.covariance.valid = true;
    s.covariance.trace = 1.0;
    s.covariance.top_eigenvalue = {0.2, 0.2, 0.2, false};
    s.covariance.effective_rank = {12, 12, 12, false};
    s.covariance.participation_ratio = {pr, lo, hi, false};
    return s;
  };
  std::vector<RankSummary> ranks;
  for (uint32_t r = 0; r < 5; ++r) ranks.push_back(summary(r, 10 + 0.1 * r, 9.9, 10.5));
  ranks.push_back(summary(5, 30, 9.0, 40));
  EXPECT_TRUE(DivergentRanks(ranks, DivergenceOptions()).empty());
  ranks.back() = summary(5, 30, 25, 40);
  EXPECT_THAT(Ranks(DivergentRanks(ranks, DivergenceOptions())), ElementsAre(5u));
  // Invalid summaries are ignored, and never flagged.
  ranks.back().covariance.valid = false;
  EXPECT_TRUE(DivergentRanks(ranks, DivergenceOptions()).empty());
  // The relative floor: a 40% difference is not flagged at min_relative 0.5,
  // but is at 0.2.
  ranks.back() = summary(5, 14, 14, 14);
  EXPECT_TRUE(DivergentRanks(ranks, DivergenceOptions()).empty());
  DivergenceOptions tight;
  tight.min_relative = 0.2;
  EXPECT_THAT(Ranks(DivergentRanks(ranks, tight)), ElementsAre(5u));
}

TEST(DivergenceTest, MergedDiagnosticsEqualSummarizeOfTheMergedWindows) {
  std::mt19937_64 rng(7);
  PlantedGaussian gen(kDim, kSpectrum, 7);
  gen.set_mean(Eigen::VectorXd::Constant(kDim, 0.5));  // so |G|^2 > 0
  std::vector<RankWindow> windows;
  for (uint32_t r = 0; r < 4; ++r) windows.push_back(Window(r, gen, rng));
  std::vector<GradientMoments> pieces;
  for (const RankWindow& w : windows)
    for (const GradientMoments& m : w.pieces) pieces.push_back(m);
  const Diagnostics direct = Summarize(MergeAll(pieces), Options());
  windows.push_back({9, {}});  // a rank without data is skipped
  const RunEvaluation e = EvaluateRanks(std::move(windows), Options(), DivergenceOptions());
  ASSERT_TRUE(e.merged.has_value());
  EXPECT_EQ(e.ranks.size(), 4u);
  EXPECT_EQ(e.merged->rows, direct.rows);
  EXPECT_DOUBLE_EQ(e.merged->covariance.trace, direct.covariance.trace);
  EXPECT_DOUBLE_EQ(e.merged->covariance.participation_ratio.value,
                   direct.covariance.participation_ratio.value);
  ASSERT_TRUE(std::isfinite(direct.noise_scale));
  EXPECT_DOUBLE_EQ(e.merged->noise_scale, direct.noise_scale);
  EXPECT_FALSE(EvaluateRanks({}, Options(), DivergenceOptions()).merged.has_value());
}

}  // namespace
}  // namespace spotter
