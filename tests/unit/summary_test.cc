// Spectral summaries against exact references, on planted spectra.
//
// Two kinds of claims, two kinds of tolerance:
//  * Certified intervals (eigenvalues, top eigenvalue, stable rank, r90, rank
//    fraction, observed PR) must contain the exact value of the OBSERVED
//    covariance (projected, decayed, centred; computed k x k in double). The
//    summary's intervals already include the sketch's rounding bound rho
//    (docs/DIAGNOSTICS.md), so the only slack is the double reference's own
//    error: 1e-9 relative.
//  * Point estimates against the unprojected POPULATION truth: within the
//    certified width plus the distortion of the random projection and of
//    sampling. Both are Wishart-form randomisations (docs/DIAGNOSTICS.md):
//    to first order Var(log PR) = V(k) + V(n_eff) with
//      V(m) = 8 T2/(m T1^2) + 8 T4/(m T2^2) - 16 T3/(m T1 T2)
//             + 4 (T2^2 - T4)/(m^2 T2^2),   Tj = sum_i lambda_i^j,
//    and the top-r mass F(r) = A / (A + B) has
//      Var(F) = F^2 (1 - F)^2 (2 sum_{i<=r} lambda_i^2 / A^2
//                              + 2 sum_{i>r} lambda_i^2 / B^2) / m
//    per randomisation, plus an upward leak of the tail into the top r of at
//    most (r/k + r/n_eff)(1 - F). Tests allow 5 standard deviations
//    (two-sided normal tail 6e-7) and, for the PR, the second-order bias of
//    a log-ratio, at most 2 Var.
#include "core/spectrum/summary.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "core/projection/projection.h"
#include "core/spectrum/moments.h"
#include "gtest/gtest.h"
#include "tests/testing/planted.h"

namespace spotter {
namespace {

using testing::EffectiveRank;
using testing::ExactMoments;
using testing::ParticipationRatio;
using testing::RotatedGaussian;
using testing::PlantedGaussian;
using testing::PlantedSpectrum;
using testing::Sum;
using testing::SumSq;

constexpr double kRel = 1e-9;

double Moment(const std::vector<double>& e, int j) {
  double s = 0;
  for (double v : e) s += std::pow(v, j);
  return s;
}

// First-order Var(log PR) under a Wishart-form randomisation of size m.
double LogPrVariance(const std::vector<double>& e, double m) {
  const double t1 = Moment(e, 1), t2 = Moment(e, 2), t3 = Moment(e, 3), t4 = Moment(e, 4);
  return 8 * t2 / (m * t1 * t1) + 8 * t4 / (m * t2 * t2) - 16 * t3 / (m * t1 * t2) +
         4 * (t2 * t2 - t4) / (m * m * t2 * t2);
}

// First-order standard deviation of the top-r mass fraction under a
// randomisation of size m.
double MassVariance(const std::vector<double>& e, int r, double m) {
  double a = 0, a2 = 0, b = 0, b2 = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    (static_cast<int>(i) < r ? a : b) += e[i];
    (static_cast<int>(i) < r ? a2 : b2) += e[i] * e[i];
  }
  const double f = a / (a + b);
  return f * f * (1 - f) * (1 - f) * (2 * a2 / (a * a) + (b > 0 ? 2 * b2 / (b * b) : 0.0)) / m;
}

// Smallest r whose top-r eigenvalues hold mass q of the trace (q clamped to
// (0, 1]).
double RankAtMass(const std::vector<double>& e, double q) {
  return EffectiveRank(e, std::clamp(q, 1e-9, 1.0));
}

// Checks every certified interval of `s` against the exact eigenvalues of
// the observed covariance.
void ExpectContains(const SpectrumSummary& s, const std::vector<double>& ex,
                    const SpectrumOptions& o, double n_eff, const std::string& what) {
  ASSERT_TRUE(s.valid) << what;
  const double t = Sum(ex);
  EXPECT_NEAR(s.trace, t, kRel * t) << what;
  const double slack = kRel * t;
  for (size_t i = 0; i < ex.size(); ++i) {
    const double lo = i < s.eigenvalues.size() ? s.eigenvalues[i] : 0.0;
    ASSERT_GE(ex[i], lo - slack) << what << ": eigenvalue " << i;
    ASSERT_LE(ex[i], lo + s.eigenvalue_error + slack) << what << ": eigenvalue " << i;
  }
  EXPECT_GE(ex[0], s.top_eigenvalue.lower - slack) << what;
  EXPECT_LE(ex[0], s.top_eigenvalue.upper + slack) << what;
  EXPECT_GE(s.top_eigenvalue.value, s.top_eigenvalue.lower) << what;
  EXPECT_LE(s.top_eigenvalue.value, s.top_eigenvalue.upper) << what;
  const double stable = t / ex[0];
  EXPECT_GE(stable, s.stable_rank.lower * (1 - kRel)) << what;
  EXPECT_LE(stable, s.stable_rank.upper * (1 + kRel)) << what;
  const double r90 = EffectiveRank(ex, o.mass);
  EXPECT_GE(r90, s.effective_rank.lower) << what;
  EXPECT_LE(r90, s.effective_rank.upper) << what;
  EXPECT_GE(s.effective_rank.value, s.effective_rank.lower) << what;
  EXPECT_LE(s.effective_rank.value, s.effective_rank.upper) << what;
  if (s.effective_rank.censored) {
    // A censored value is a lower bound: never above the truth.
    EXPECT_LE(s.effective_rank.value, r90) << what;
  }
  EXPECT_DOUBLE_EQ(s.rank_fraction.lower, s.effective_rank.lower / o.sketch_rows);
  EXPECT_DOUBLE_EQ(s.rank_fraction.upper, s.effective_rank.upper / o.sketch_rows);
  const double pr = ParticipationRatio(ex);
  EXPECT_GE(pr, s.participation_ratio_observed.lower * (1 - kRel)) << what;
  EXPECT_LE(pr, s.participation_ratio_observed.upper * (1 + kRel)) << what;
  // The corrected interval is the image of the observed one.
  const double corrected =
      CorrectParticipationRatio(t, SumSq(ex), n_eff, o.dim, o.projection, true);
  if (std::isfinite(corrected)) {
    EXPECT_GE(corrected, s.participation_ratio.lower * (1 - kRel)) << what;
    EXPECT_LE(corrected, s.participation_ratio.upper * (1 + kRel)) << what;
  } else {
    EXPECT_TRUE(s.participation_ratio.censored || !std::isfinite(s.participation_ratio.upper))
        << what;
  }
}

struct Kind {
  std::string name;
  std::vector<double> eig;
};

std::vector<Kind> Kinds(int p) {
  return {{"power-0.6", testing::PowerLawSpectrum(p, 0.6)},
          {"power-1.0", testing::PowerLawSpectrum(p, 1.0)},
          {"power-2.0", testing::PowerLawSpectrum(p, 2.0)},
          {"lowrank+noise", testing::LowRankSpectrum(p, 6, 0.16, 0.04 / p)},
          {"step", testing::StepSpectrum(p, 12, 1.0, 60, 0.05)}};
}

TEST(SummaryTest, CertifiedIntervalsContainTheExactObservedValues) {
  const int log2p = 10, p = 1 << log2p;
  struct Config {
    int k, l;
  };
  for (const Kind& kind : Kinds(p)) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      RotatedGaussian gen(log2p, seed);
      std::mt19937_64 rng(seed);
      Eigen::VectorXd mean = gen.Rotate(Eigen::VectorXd::Constant(p, 0.02));
      for (Config c : {Config{64, 16}, Config{128, 32}}) {
        auto proj = *Projection::Create(ProjectionKind::kCountSketch, seed, p, c.k);
        WindowOptions w;
        w.decay = 0.97;
        RankAccumulator acc(c.k, c.l, w);
        ExactMoments exact(c.k);
        for (int step = 0; step < 60; ++step) {
          const RowMatrixXf x = gen.Sample(kind.eig, 12, rng, mean);
          RowMatrixXf y(x.rows(), c.k);
          proj->ApplyRows(x, y);
          acc.Add(step, y, 1.0);
          if (step > 0) exact.Scale(w.decay);
          exact.AddBatch(y);
        }
        SpectrumOptions o;
        o.dim = c.k;
        o.sketch_rows = c.l;
        const GradientMoments m = MergeAll(acc.Snapshot(59));
        const Diagnostics d = Summarize(m, o);
        const std::string what =
            kind.name + " seed " + std::to_string(seed) + " k " + std::to_string(c.k);
        ExpectContains(d.covariance, exact.CovarianceEigenvalues(), o, d.effective_samples,
                       what + " covariance");
        ExpectContains(d.second_moment, exact.SecondMomentEigenvalues(), o,
                       m.samples * m.samples / m.samples_sq, what + " second moment");
      }
    }
  }
}

TEST(SummaryTest, NoDataIsInvalid) {
  SpectrumOptions o;
  const SpectrumSummary s = SummarizeSpectrum(SketchSpectrum{}, 0.0, 0.0, o);
  EXPECT_FALSE(s.valid);
  EXPECT_TRUE(std::isnan(s.participation_ratio.value));
  const Diagnostics d = Summarize(GradientMoments(16, 4), o);
  EXPECT_FALSE(d.covariance.valid);
  EXPECT_TRUE(std::isnan(d.noise_scale));
}

TEST(SummaryTest, CorrectionInvertsTheWishartExpectations) {
  // E[a] = (1 + 1/m) T2 + T1^2 / m, E[b] = T1^2 + 2 T2 / m, applied for the
  // sample size n and the projection k, is inverted exactly.
  for (double pr : {1.0, 3.0, 40.0, 300.0}) {
    for (double n : {0.0, 5.0, 200.0}) {
      for (int k : {1, 16, 256}) {
        const double t1 = 7.0, t2 = t1 * t1 / pr;
        double a = t2, b = t1 * t1;
        for (double m : {n, static_cast<double>(k)}) {
          if (m <= 1) continue;
          const double na = (1 + 1 / m) * a + b / m, nb = b + 2 * a / m;
          a = na;
          b = nb;
        }
        EXPECT_NEAR(
            CorrectParticipationRatio(std::sqrt(b), a, n, k, ProjectionKind::kGaussian, true), pr,
            1e-9 * pr)
            << "pr " << pr << " n " << n << " k " << k;
      }
    }
  }
  // Without a correction it is the plain ratio; too flat to resolve is +inf.
  EXPECT_DOUBLE_EQ(CorrectParticipationRatio(2.0, 1.0, 0.0, 64, ProjectionKind::kGaussian, false),
                   4.0);
  EXPECT_TRUE(
      std::isinf(CorrectParticipationRatio(8.0, 1.0, 0.0, 64, ProjectionKind::kCountSketch, true)));
}

// The projection bias alone, at the population level (exact S Sigma S^T):
// over many projection seeds the corrected PR is unbiased (within the
// standard error and the second-order bias) while the raw one is not.
TEST(SummaryTest, ProjectionCorrectionRemovesTheBias) {
  const int log2p = 10, p = 1 << log2p, k = 64, seeds = 40;
  RotatedGaussian gen(log2p, 3);
  const std::vector<double> alphas = {2.0, 1.0, 0.6};
  for (ProjectionKind kind : {ProjectionKind::kCountSketch, ProjectionKind::kGaussian}) {
    std::vector<double> sum_c(alphas.size()), sum_r(alphas.size());
    for (int s = 0; s < seeds; ++s) {
      auto proj = *Projection::Create(kind, 500 + s, p, k);
      const Eigen::MatrixXd basis = gen.ProjectedBasis(*proj);
      for (size_t a = 0; a < alphas.size(); ++a) {
        const std::vector<double> eig = testing::PowerLawSpectrum(p, alphas[a]);
        const double truth = ParticipationRatio(eig);
        const double var = LogPrVariance(eig, k);
        const std::vector<double> obs =
            testing::SymmetricEigenvalues(RotatedGaussian::ProjectedCovariance(basis, eig));
        const double c =
            std::log(CorrectParticipationRatio(Sum(obs), SumSq(obs), 0.0, k, kind, true) / truth);
        EXPECT_LE(std::abs(c), 5 * std::sqrt(var) + 2 * var) << "alpha " << alphas[a];
        sum_c[a] += c;
        sum_r[a] += std::log(ParticipationRatio(obs) / truth);
      }
    }
    for (size_t a = 0; a < alphas.size(); ++a) {
      const std::vector<double> eig = testing::PowerLawSpectrum(p, alphas[a]);
      const double truth = ParticipationRatio(eig);
      const double var = LogPrVariance(eig, k);
      const double mean_c = sum_c[a] / seeds, mean_r = sum_r[a] / seeds;
      EXPECT_LE(std::abs(mean_c), 4 * std::sqrt(var / seeds) + 2 * var)
          << "alpha " << alphas[a] << " PR " << truth;
      EXPECT_LT(std::abs(mean_c), std::abs(mean_r)) << "alpha " << alphas[a];
      // Where PR / k is large the raw ratio is off by a factor ~ 1 + PR / k.
      if (truth / k > 0.3) {
        EXPECT_LT(mean_r, -0.5 * std::log1p(truth / k)) << "alpha " << alphas[a];
      }
    }
  }
}

// The sample-size bias alone: k-dimensional Gaussian rows in decayed batches;
// the exact observed covariance, corrected with n_eff.
TEST(SummaryTest, SampleSizeCorrectionRemovesTheBias) {
  const int k = 128, seeds = 40;
  for (double alpha : {1.0, 0.3}) {
    std::vector<double> eig = testing::PowerLawSpectrum(k, alpha);
    const double truth = ParticipationRatio(eig);
    double sum_c = 0, sum_r = 0, var = 0;
    for (int s = 0; s < seeds; ++s) {
      std::mt19937_64 rng(40 + s);
      std::normal_distribution<double> n01;
      ExactMoments exact(k);
      for (int step = 0; step < 60; ++step) {
        RowMatrixXf x(6, k);
        for (int i = 0; i < x.rows(); ++i)
          for (int j = 0; j < k; ++j) x(i, j) = static_cast<float>(std::sqrt(eig[j]) * n01(rng));
        if (step > 0) exact.Scale(0.95);
        exact.AddBatch(x);
      }
      const std::vector<double> obs = exact.CovarianceEigenvalues();
      const double n = exact.EffectiveSamples();
      var = LogPrVariance(eig, n);
      const double c = std::log(
          CorrectParticipationRatio(Sum(obs), SumSq(obs), n, k, ProjectionKind::kGaussian, false) /
          truth);
      EXPECT_LE(std::abs(c), 5 * std::sqrt(var) + 2 * var);
      sum_c += c;
      sum_r += std::log(ParticipationRatio(obs) / truth);
    }
    const double mean_c = sum_c / seeds, mean_r = sum_r / seeds;
    EXPECT_LE(std::abs(mean_c), 4 * std::sqrt(var / seeds) + 2 * var) << "alpha " << alpha;
    EXPECT_LT(std::abs(mean_c), std::abs(mean_r)) << "alpha " << alpha;
  }
}

// End to end: P-dimensional gradients -> CountSketch -> per-rank FD with
// decay -> summary, against the unprojected population.
TEST(SummaryTest, PointEstimatesMatchThePopulationWithinDerivedTolerances) {
  const int log2p = 12, p = 1 << log2p, l = 32, steps = 100, m = 24;
  const std::vector<Kind> kinds = {
      {"power-2.0", testing::PowerLawSpectrum(p, 2.0)},
      {"power-3.0", testing::PowerLawSpectrum(p, 3.0)},
      {"lowrank+noise", testing::LowRankSpectrum(p, 6, 0.16, 0.04 / p)},
      {"step", testing::StepSpectrum(p, 12, 1.0, 60, 0.05)}};
  const std::vector<int> ks = {64, 256};
  std::vector<double> abs_c(ks.size()), abs_r(ks.size());
  for (const Kind& kind : kinds) {
    const double pr_truth = ParticipationRatio(kind.eig);
    const double r90_truth = EffectiveRank(kind.eig);
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      RotatedGaussian gen(log2p, 10 + seed);
      std::mt19937_64 rng(seed);
      std::vector<std::unique_ptr<Projection>> maps;
      std::vector<RankAccumulator> accs;
      WindowOptions w;
      w.decay = 0.98;
      for (int k : ks) {
        maps.push_back(*Projection::Create(ProjectionKind::kCountSketch, 20 + seed, p, k));
        accs.emplace_back(k, l, w);
      }
      for (int step = 0; step < steps; ++step) {
        const RowMatrixXf x = gen.Sample(kind.eig, m, rng);
        for (size_t ki = 0; ki < ks.size(); ++ki) {
          RowMatrixXf y(m, ks[ki]);
          maps[ki]->ApplyRows(x, y);
          accs[ki].Add(step, y, 1.0);
        }
      }
      for (size_t ki = 0; ki < ks.size(); ++ki) {
        const int k = ks[ki];
        SpectrumOptions o;
        o.dim = k;
        o.sketch_rows = l;
        const Diagnostics d = Summarize(MergeAll(accs[ki].Snapshot(steps - 1)), o);
        const SpectrumSummary& s = d.covariance;
        const std::string what =
            kind.name + " k " + std::to_string(k) + " seed " + std::to_string(seed);
        const double n = d.effective_samples;
        // PR: certified width + 5 sigma + second-order bias.
        const double var = LogPrVariance(kind.eig, k) + LogPrVariance(kind.eig, n);
        const Estimate& pr = s.participation_ratio;
        // A PR whose sketch bound is wider than censor_width is censored (a
        // lower bound): it must not sit above the truth beyond the noise, and
        // the truth must lie in its box up to the noise like any estimate's.
        const double width = std::max(std::log(pr.upper / pr.value), std::log(pr.value / pr.lower));
        const double err = std::log(pr.value / pr_truth);
        if (pr.censored) {
          EXPECT_GT(pr.upper, (1 + o.censor_width) * pr.lower) << what;
          EXPECT_LE(err, 5 * std::sqrt(var) + 2 * var) << what;
        }
        EXPECT_LE(std::abs(err), width + 5 * std::sqrt(var) + 2 * var)
            << what << ": PR " << pr.value << " truth " << pr_truth;
        abs_c[ki] += std::abs(err);
        abs_r[ki] += std::abs(std::log(s.participation_ratio_raw / pr_truth));
        // r90: a mass band around 0.9 from the projection and sampling
        // distortion, widened by the certified width of the estimate.
        const int r = static_cast<int>(r90_truth);
        double f = 0;
        for (int i = 0; i < r; ++i) f += kind.eig[i];
        f /= Sum(kind.eig);
        const double eps =
            5 * std::sqrt(MassVariance(kind.eig, r, k) + MassVariance(kind.eig, r, n)) +
            (r / static_cast<double>(k) + r / n) * (1 - f);
        const double width_r = s.effective_rank.upper - s.effective_rank.lower;
        // A censored value is only a lower bound; below l / 4 the sketch must
        // resolve r90.
        if (r90_truth <= l / 4) {
          EXPECT_FALSE(s.effective_rank.censored) << what;
        }
        if (!s.effective_rank.censored) {
          EXPECT_GE(s.effective_rank.value, RankAtMass(kind.eig, 0.9 - eps) - width_r)
              << what << ": r90 " << s.effective_rank.value << " truth " << r90_truth;
        }
        EXPECT_LE(s.effective_rank.value, RankAtMass(kind.eig, 0.9 + eps) + width_r)
            << what << ": r90 " << s.effective_rank.value << " truth " << r90_truth;
      }
    }
  }
  // At k = 64, PR / k is up to 0.4: the correction must pay off on average.
  EXPECT_LT(abs_c[0], abs_r[0]);
}

TEST(SummaryTest, ReportsALowerBoundWhenTheSketchCannotHoldTheRank) {
  // A flat spectrum: r90 of the observed covariance is far beyond l.
  const int log2p = 10, p = 1 << log2p, k = 128, l = 16;
  RotatedGaussian gen(log2p, 9);
  std::mt19937_64 rng(9);
  const std::vector<double> eig = testing::PowerLawSpectrum(p, 0.3);
  auto proj = *Projection::Create(ProjectionKind::kCountSketch, 9, p, k);
  GradientMoments mom(k, l);
  ExactMoments exact(k);
  for (int b = 0; b < 30; ++b) {
    const RowMatrixXf x = gen.Sample(eig, 16, rng);
    RowMatrixXf y(x.rows(), k);
    proj->ApplyRows(x, y);
    mom.AddBatch(y, 1.0);
    exact.AddBatch(y);
  }
  SpectrumOptions o;
  o.dim = k;
  o.sketch_rows = l;
  const Diagnostics d = Summarize(mom, o);
  const std::vector<double> obs = exact.CovarianceEigenvalues();
  ASSERT_TRUE(d.covariance.effective_rank.censored);
  EXPECT_EQ(d.covariance.effective_rank.value, d.covariance.effective_rank.lower);
  EXPECT_LE(d.covariance.effective_rank.value, EffectiveRank(obs));
  EXPECT_GE(d.covariance.effective_rank.upper, EffectiveRank(obs));
  EXPECT_TRUE(d.covariance.rank_fraction.censored);
  ExpectContains(d.covariance, obs, o, d.effective_samples, "flat");
}

TEST(SummaryTest, NormalQuantileAndLogPrVarianceMatchClosedForms) {
  EXPECT_NEAR(TwoSidedNormalQuantile(0.9), 1.6448536269514722, 1e-12);
  EXPECT_NEAR(TwoSidedNormalQuantile(0.95), 1.959963984540054, 1e-12);
  // d equal eigenvalues: T1 = T2 = T3 = T4 = d (times powers of the value,
  // which cancel), so the first-order terms cancel and 4 (1 - 1/d) / m^2 is
  // left.
  const int d = 37;
  const double m = 500;
  EXPECT_NEAR(LogParticipationRatioVariance(std::vector<double>(d, 2.5), m),
              4.0 * (1.0 - 1.0 / d) / (m * m), 1e-15);
  // One eigenvalue: the PR is 1 whatever happens.
  EXPECT_NEAR(LogParticipationRatioVariance({3.0}, m), 0.0, 1e-15);
  EXPECT_TRUE(std::isnan(LogParticipationRatioVariance({1.0, 1.0}, 1.0)));
}

// The rows' fourth-moment factor: 1 for Gaussian rows, (nu - 2) / (nu - 4)
// for multivariate Student t rows with nu degrees of freedom (each Gaussian
// row scaled by sqrt((nu - 2) / chi2_nu), same covariance). Tolerance: the
// estimator's spread over 6,000 rows (the t's fourth moment of |x|^2 is
// heavy: 10% for nu = 8) and its small downward bias from batch centring.
TEST(SummaryTest, RowKurtosisMeasuresTheTails) {
  const int k = 64, l = 16;
  PlantedGaussian gen(k, PlantedSpectrum::PowerLaw(20, 1.0, 1.0, 1e-3), 5);
  for (double nu : {0.0, 8.0}) {
    std::mt19937_64 rng(5);
    std::chi_squared_distribution<double> chi2(nu > 0 ? nu : 1.0);
    GradientMoments m(k, l);
    for (int b = 0; b < 200; ++b) {
      RowMatrixXf x = gen.Sample(30, rng);
      if (nu > 0) {
        for (int i = 0; i < x.rows(); ++i) x.row(i) *= std::sqrt((nu - 2.0) / chi2(rng));
      }
      m.AddBatch(x, 1.0);
    }
    const double want = nu > 0 ? (nu - 2.0) / (nu - 4.0) : 1.0;
    EXPECT_NEAR(RowKurtosis(m, m.centred.Spectrum()), want, nu > 0 ? 0.2 : 0.06) << nu;
  }
  EXPECT_EQ(RowKurtosis(GradientMoments(k, l), GradientMoments(k, l).centred.Spectrum()), 0.0);
}

// B_simple = tr(Sigma_example) / |G|^2 on Gaussian rows with a known mean G
// and covariance Sigma_example / s (s examples averaged per row). Tolerance:
// 5 standard deviations of the estimator, from
//   Var(tr^) / tr^2 = 2 tr(Sigma^2) / (dof tr^2),
//   Var(|G|^2^) = (4 G^T Sigma_row G / m + 2 tr(Sigma_row^2) / (m (m - 1))) / batches.
TEST(SummaryTest, NoiseScaleMatchesTheClosedForm) {
  const int k = 32, m = 16, batches = 400;
  std::vector<double> lam(k);
  for (int i = 0; i < k; ++i) lam[i] = 1.0 / (1 + i);
  Eigen::VectorXd g = Eigen::VectorXd::LinSpaced(k, 0.5, -0.2);
  for (double spr : {1.0, 8.0}) {
    std::mt19937_64 rng(static_cast<uint64_t>(spr));
    std::normal_distribution<double> n01;
    WindowOptions w;
    w.decay = 1.0;
    RankAccumulator acc(k, 8, w);
    for (int b = 0; b < batches; ++b) {
      RowMatrixXf x(m, k);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < k; ++j)
          x(i, j) = static_cast<float>(g[j] + std::sqrt(lam[j] / spr) * n01(rng));
      acc.Add(b, x, spr);
    }
    SpectrumOptions o;
    o.dim = k;
    o.sketch_rows = 8;
    const Diagnostics d = Summarize(MergeAll(acc.Snapshot(batches - 1)), o);
    double tr = 0, tr2 = 0, gsg = 0;
    for (int j = 0; j < k; ++j) {
      tr += lam[j];
      tr2 += lam[j] * lam[j];
      gsg += g[j] * g[j] * lam[j] / spr;
    }
    const double g2 = g.squaredNorm();
    const double truth = tr / g2;
    const double dof = batches * (m - 1.0);
    const double var_num = 2 * tr2 / (dof * tr * tr);
    const double var_den =
        (4 * gsg / m + 2 * tr2 / (spr * spr) / (m * (m - 1.0))) / batches / (g2 * g2);
    EXPECT_NEAR(d.noise_scale, truth, 5 * truth * std::sqrt(var_num + var_den))
        << "samples per row " << spr;
    EXPECT_NEAR(d.mean_gradient_sq_norm, g2, 5 * g2 * std::sqrt(var_den));
  }
}

}  // namespace
}  // namespace spotter
