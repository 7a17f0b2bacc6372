// GradientMoments and RankAccumulator against exact (k x k, double)
// references: statistics, decay, windows, merging, drift tracking.
#include "core/spectrum/moments.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/spectrum/summary.h"
#include "gtest/gtest.h"
#include "tests/testing/planted.h"

namespace spotter {
namespace {

using testing::ExactMoments;
using testing::PlantedGaussian;
using testing::PlantedSpectrum;
using testing::SymmetricEigenvalues;

// Relative tolerance of scalar statistics accumulated in double in different
// orders (sums of at most ~1e5 terms: 1e5 * 2^-53 ~ 1e-11).
constexpr double kSumTol = 1e-9;

// Every eigenvalue of the exact matrix lies in the sketch's certified
// interval; the slack is the sketch's own rounding bound (plus 1e-12 trace
// for the double reference).
void ExpectCertified(const SketchSpectrum& s, const Eigen::MatrixXd& exact) {
  const std::vector<double> ex = SymmetricEigenvalues(exact);
  const double slack = s.rounding + 1e-12 * exact.trace();
  for (size_t i = 0; i < ex.size(); ++i) {
    const double e = i < s.eigenvalues.size() ? s.eigenvalues[i] : 0.0;
    ASSERT_GE(ex[i], e - slack) << "eigenvalue " << i;
    ASSERT_LE(ex[i], e + s.delta + slack) << "eigenvalue " << i;
  }
}

TEST(GradientMomentsTest, MatchesExactStatistics) {
  const int k = 48, l = 8;
  std::mt19937_64 rng(3);
  PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(30, 1.0, 1.0, 1e-3), 3);
  Eigen::VectorXd mean = Eigen::VectorXd::LinSpaced(k, -1.0, 2.0);
  gen.set_mean(mean);
  GradientMoments m(k, l);
  ExactMoments ex(k);
  double example_trace = 0.0, mean_sq_sum = 0.0, mean_sq_weight = 0.0, raw = 0.0;
  double norm4 = 0.0, norm4_weight = 0.0;
  uint64_t rows = 0;
  for (int b = 0; b < 40; ++b) {
    const int n = 1 + static_cast<int>(rng() % 9);  // includes batches of one row
    const double spr = 1.0 + static_cast<double>(rng() % 4);
    RowMatrixXf x = gen.Sample(n, rng);
    m.AddBatch(x, spr);
    ex.AddBatch(x);
    const Eigen::MatrixXd xd = x.cast<double>();
    const Eigen::RowVectorXd mu = xd.colwise().mean();
    const double ctr = (xd.rowwise() - mu).squaredNorm();
    example_trace += spr * ctr;
    raw += xd.squaredNorm();
    if (n >= 2) {
      mean_sq_sum += mu.squaredNorm() - ctr / (n * (n - 1.0));
      mean_sq_weight += 1.0;
      for (int i = 0; i < n; ++i) norm4 += std::pow((xd.row(i) - mu).squaredNorm(), 2);
      norm4_weight += (n - 1.0) * (n - 1.0) / n;
    }
    rows += n;
  }
  EXPECT_NEAR(m.trace_centred, ex.centred_sum().trace(), kSumTol * m.trace_centred);
  EXPECT_NEAR(m.trace_raw, raw, kSumTol * raw);
  EXPECT_NEAR(m.trace_raw, ex.second_sum().trace(), kSumTol * raw);
  EXPECT_DOUBLE_EQ(m.dof, ex.dof());
  EXPECT_DOUBLE_EQ(m.samples, ex.samples());
  EXPECT_NEAR(m.dof * m.dof / m.dof_sq, ex.EffectiveSamples(), 1e-9);
  EXPECT_NEAR(m.example_trace, example_trace, kSumTol * example_trace);
  EXPECT_NEAR(m.mean_sq_sum, mean_sq_sum, kSumTol * std::abs(mean_sq_sum) + 1e-12);
  EXPECT_DOUBLE_EQ(m.mean_sq_weight, mean_sq_weight);
  EXPECT_NEAR(m.norm4_centred, norm4, kSumTol * norm4);
  EXPECT_NEAR(m.norm4_weight, norm4_weight, 1e-12 * norm4_weight);
  EXPECT_EQ(m.rows, rows);
  EXPECT_EQ(m.batches, 40u);
  // The sketches certify the exact centred and uncentred matrices.
  ExpectCertified(m.centred.Spectrum(), ex.centred_sum());
  FrequentDirections second = m.centred;
  second.Merge(m.means);
  ExpectCertified(second.Spectrum(), ex.second_sum());
  // The means sketch is the small one.
  EXPECT_EQ(m.means.sketch_rows(), std::min(l, GradientMoments::kMeanSketchRows));
}

TEST(GradientMomentsTest, ScaleAndMergeMatchExact) {
  const int k = 40, l = 8;
  std::mt19937_64 rng(8);
  PlantedGaussian gen(k, PlantedSpectrum::LowRankPlusNoise(4, 2.0, 0.1), 8);
  GradientMoments a(k, l), b(k, l);
  ExactMoments ea(k), eb(k);
  for (int i = 0; i < 25; ++i) {
    RowMatrixXf x = gen.Sample(6, rng), y = gen.Sample(4, rng);
    a.Scale(0.9);
    ea.Scale(0.9);
    a.AddBatch(x, 1.0);
    ea.AddBatch(x);
    b.AddBatch(y, 1.0);
    eb.AddBatch(y);
  }
  b.Scale(0.5);
  eb.Scale(0.5);
  a.Merge(b);
  ea.Merge(eb);
  EXPECT_NEAR(a.trace_centred, ea.centred_sum().trace(), kSumTol * a.trace_centred);
  EXPECT_NEAR(a.dof, ea.dof(), kSumTol * a.dof);
  EXPECT_NEAR(a.dof * a.dof / a.dof_sq, ea.EffectiveSamples(), 1e-9 * ea.EffectiveSamples());
  ExpectCertified(a.centred.Spectrum(), ea.centred_sum());
  FrequentDirections second = a.centred;
  second.Merge(a.means);
  ExpectCertified(second.Spectrum(), ea.second_sum());
}

TEST(RankAccumulatorTest, ExponentialWindowEqualsDecayedReference) {
  const int k = 32, l = 8;
  std::mt19937_64 rng(4);
  PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(20, 1.5), 4);
  WindowOptions w;
  w.kind = WindowKind::kExponential;
  w.decay = 0.95;
  RankAccumulator acc(k, l, w);
  ExactMoments ex(k);
  uint64_t step = 10, last = 10;
  for (int i = 0; i < 60; ++i) {
    step += rng() % 3;  // gaps and repeated steps
    ex.Scale(std::pow(w.decay, static_cast<double>(step - last)));
    last = step;
    RowMatrixXf x = gen.Sample(5, rng);
    acc.Add(step, x, 1.0);
    ex.AddBatch(x);
  }
  const uint64_t now = step + 7;
  ex.Scale(std::pow(w.decay, 7.0));
  const std::vector<GradientMoments> snap = acc.Snapshot(now);
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_NEAR(snap[0].trace_centred, ex.centred_sum().trace(), kSumTol * ex.centred_sum().trace());
  EXPECT_NEAR(snap[0].dof, ex.dof(), kSumTol * ex.dof());
  ExpectCertified(snap[0].centred.Spectrum(), ex.centred_sum());
}

TEST(RankAccumulatorTest, DecayGivesTheDocumentedWindow) {
  // One batch per step: sum of weights -> 1 / (1 - gamma) batches, and the
  // effective number of batches (sum w)^2 / sum w^2 -> (1 + gamma) / (1 - gamma).
  const int k = 4;
  for (double gamma : {0.9, 0.99}) {
    WindowOptions w;
    w.decay = gamma;
    RankAccumulator acc(k, 2, w);
    RowMatrixXf x = RowMatrixXf::Random(2, k);  // 1 dof per batch
    const int steps = static_cast<int>(30 / (1 - gamma));
    for (int s = 0; s < steps; ++s) acc.Add(s, x, 1.0);
    const GradientMoments m = MergeAll(acc.Snapshot(steps - 1));
    const double tail = std::pow(gamma, steps);  // the truncation, < e^-30
    EXPECT_NEAR(m.dof, 1.0 / (1.0 - gamma), 1e-9 + tail / (1 - gamma));
    EXPECT_NEAR(m.dof * m.dof / m.dof_sq, (1.0 + gamma) / (1.0 - gamma), 1e-6);
  }
}

TEST(RankAccumulatorTest, FixedWindowCoversTheDocumentedSpan) {
  const int k = 8;
  WindowOptions w;
  w.kind = WindowKind::kFixed;
  w.window_steps = 20;  // segments of 5 steps
  RankAccumulator acc(k, 4, w);
  const uint64_t seg = (w.window_steps + WindowOptions::kFixedSegments - 1) /
                       WindowOptions::kFixedSegments;
  std::mt19937_64 rng(1);
  std::vector<uint64_t> steps;
  for (uint64_t s = 0; s < 97; s += 1 + rng() % 2) {
    acc.Add(s, RowMatrixXf::Random(3, k), 1.0);
    steps.push_back(s);
  }
  for (uint64_t now : {steps.back(), steps.back() + 3, steps.back() + 11}) {
    const GradientMoments m = MergeAll(acc.Snapshot(now));
    // Covered: every step in (now - W, now]; never a step <= now - W - seg.
    uint64_t must = 0, may = 0;
    for (uint64_t s : steps) {
      if (s + w.window_steps > now) ++must;
      if (s + w.window_steps + seg > now) ++may;
    }
    EXPECT_GE(m.batches, must) << "now " << now;
    EXPECT_LE(m.batches, may) << "now " << now;
    EXPECT_EQ(m.rows, 3 * m.batches);
  }
}

// Tracking a drifting spectrum: the covariance scale grows linearly,
// Sigma(t) = s(t) I_k with s(t) = 1 + 2 t / T. An exponential window's
// expected covariance is Sigma at t - lag, lag = gamma / (1 - gamma) (the
// weighted mean age, below the window 1 / (1 - gamma)); a fixed window of
// span S steps lags by (S - 1) / 2. The test recovers the lag from the
// estimated trace and checks it against the stated one within 5 standard
// deviations: Var(tr C) / tr^2 = 2 / (n_eff k) for Gaussian rows.
TEST(RankAccumulatorTest, TracksADriftingSpectrumWithTheStatedLag) {
  const int k = 64, m = 33, total = 1200;
  auto scale = [&](double t) { return 1.0 + 2.0 * t / total; };
  for (WindowKind kind : {WindowKind::kExponential, WindowKind::kFixed}) {
    WindowOptions w;
    w.kind = kind;
    w.decay = 0.99;
    w.window_steps = 200;
    RankAccumulator acc(k, 16, w);
    std::mt19937_64 rng(12);
    std::normal_distribution<double> n01;
    const int now = total - 1;
    for (int t = 0; t <= now; ++t) {
      RowMatrixXf x(m, k);
      const double sd = std::sqrt(scale(t));
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < k; ++j) x(i, j) = static_cast<float>(sd * n01(rng));
      acc.Add(t, x, 1.0);
    }
    const GradientMoments mom = MergeAll(acc.Snapshot(now));
    const double est = mom.trace_centred / mom.dof / k;  // estimated s
    const double n_eff = mom.dof * mom.dof / mom.dof_sq;
    const double lag_hat = now - (est - 1.0) * total / 2.0;
    double lag;
    if (kind == WindowKind::kExponential) {
      lag = w.decay / (1.0 - w.decay);
      EXPECT_LT(lag, 1.0 / (1.0 - w.decay));
    } else {
      // Span covered: from the first step of the oldest live segment to now.
      const uint64_t seg = (w.window_steps + 3) / 4;
      const uint64_t first = ((now - w.window_steps) / seg) * seg;
      const double span = now - first + 1.0;
      EXPECT_GE(span, w.window_steps);
      EXPECT_LE(span, w.window_steps + seg);
      lag = (span - 1.0) / 2.0;
    }
    const double sd_lag = est * std::sqrt(2.0 / (n_eff * k)) * total / 2.0;
    EXPECT_NEAR(lag_hat, lag, 5.0 * sd_lag)
        << (kind == WindowKind::kExponential ? "exponential" : "fixed") << " window";
    // The estimate does lag: the truth at `now` is excluded.
    EXPECT_GT(lag_hat, 5.0 * sd_lag);
  }
}

TEST(RankAccumulatorTest, MergedRanksEqualOneStreamWithinTheBounds) {
  // Ranks sharing a step window, merged, summarise the same rows as one
  // accumulator fed all of them: the scalars agree exactly and the sketches
  // both certify the exact union.
  const int k = 48, l = 12, ranks = 5;
  std::mt19937_64 rng(6);
  PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(40, 1.0, 1.0, 1e-3), 6);
  WindowOptions w;
  w.decay = 0.98;
  std::vector<RankAccumulator> per_rank(ranks, RankAccumulator(k, l, w));
  RankAccumulator single(k, l, w);
  ExactMoments exact(k);
  for (int step = 0; step < 50; ++step) {
    if (step > 0) exact.Scale(w.decay);
    for (int r = 0; r < ranks; ++r) {
      RowMatrixXf x = gen.Sample(4, rng);
      per_rank[r].Add(step, x, 1.0);
      single.Add(step, x, 1.0);
      exact.AddBatch(x);
    }
  }
  std::vector<GradientMoments> pieces;
  for (auto& r : per_rank)
    for (auto& p : r.Snapshot(49)) pieces.push_back(std::move(p));
  const GradientMoments merged = MergeAll(std::move(pieces));
  const GradientMoments one = MergeAll(single.Snapshot(49));
  EXPECT_NEAR(merged.trace_centred, one.trace_centred, kSumTol * one.trace_centred);
  EXPECT_NEAR(merged.dof, one.dof, kSumTol * one.dof);
  EXPECT_NEAR(merged.dof_sq, one.dof_sq, kSumTol * one.dof_sq);
  EXPECT_EQ(merged.rows, one.rows);
  ExpectCertified(merged.centred.Spectrum(), exact.centred_sum());
  ExpectCertified(one.centred.Spectrum(), exact.centred_sum());
  // And the summaries agree within their certified eigenvalue errors.
  SpectrumOptions o;
  o.dim = k;
  o.sketch_rows = l;
  const Diagnostics a = Summarize(merged, o), b = Summarize(one, o);
  EXPECT_NEAR(a.covariance.top_eigenvalue.value, b.covariance.top_eigenvalue.value,
              a.covariance.eigenvalue_error + b.covariance.eigenvalue_error);
  EXPECT_LE(a.covariance.effective_rank.lower, b.covariance.effective_rank.upper);
  EXPECT_LE(b.covariance.effective_rank.lower, a.covariance.effective_rank.upper);
}

}  // namespace
}  // namespace spotter
