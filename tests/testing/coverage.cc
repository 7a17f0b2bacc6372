#include "tests/testing/coverage.h"

#include <cmath>
#include <memory>
#include <random>

#include "core/projection/projection.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"
#include "tests/testing/planted.h"

namespace spotter::testing {
namespace {

template <typename Hit>
double Fraction(const std::vector<CoverageTrial>& trials, Hit hit) {
  if (trials.empty()) return NAN;
  int n = 0;
  for (const CoverageTrial& t : trials) n += hit(t) ? 1 : 0;
  return static_cast<double>(n) / static_cast<double>(trials.size());
}

// A sample's interval holds x (hi may be +inf).
bool Holds(double lo, double hi, double x) { return lo <= x && x <= hi; }

}  // namespace

double CoverageResult::PrCoverage() const {
  return Fraction(trials, [&](const CoverageTrial& t) {
    return Holds(t.pr.ci_lower, t.pr.ci_upper, true_pr);
  });
}

double CoverageResult::PrSketchBoundCoverage() const {
  return Fraction(trials,
                  [&](const CoverageTrial& t) { return Holds(t.pr.lower, t.pr.upper, true_pr); });
}

double CoverageResult::R90Coverage() const {
  if (spec.projection != ProjectionKind::kIdentity) return NAN;
  return Fraction(trials, [&](const CoverageTrial& t) {
    return Holds(t.r90.ci_lower, t.r90.ci_upper, true_r90);
  });
}

double CoverageResult::TopCoverage() const {
  if (spec.projection != ProjectionKind::kIdentity) return NAN;
  return Fraction(trials, [&](const CoverageTrial& t) {
    return Holds(t.top.ci_lower, t.top.ci_upper, true_top);
  });
}

double CoverageResult::CensoredFraction() const {
  return Fraction(trials, [](const CoverageTrial& t) { return t.pr.censored; });
}

double CoverageResult::MeanPrRelativeError() const {
  double s = 0.0;
  for (const CoverageTrial& t : trials) s += t.pr.value / true_pr - 1.0;
  return trials.empty() ? NAN : s / trials.size();
}

double CoverageResult::MeanPrRelativeHalfWidth() const {
  double s = 0.0;
  int n = 0;
  for (const CoverageTrial& t : trials) {
    if (!std::isfinite(t.pr.ci_upper)) continue;
    s += 0.5 * (t.pr.ci_upper - t.pr.ci_lower) / t.pr.value;
    ++n;
  }
  return n ? s / n : NAN;
}

CoverageResult RunCoverage(const CoverageCase& c, int seeds, uint64_t first_seed) {
  CoverageResult out;
  out.spec = c;
  out.true_pr = ParticipationRatio(c.eigenvalues);
  out.true_r90 = EffectiveRank(c.eigenvalues, 0.9);
  out.true_top = c.eigenvalues.front();
  const int p = 1 << c.log2_p;
  for (int s = 0; s < seeds; ++s) {
    const uint64_t seed = first_seed + static_cast<uint64_t>(s);
    RotatedGaussian gen(c.log2_p, 7919 * seed + 1);
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 17);
    std::chi_squared_distribution<double> chi2(c.t_dof > 0.0 ? c.t_dof : 1.0);
    std::unique_ptr<Projection> map =
        *Projection::Create(c.projection, 1000003 * seed + 11, static_cast<uint64_t>(p),
                            static_cast<uint32_t>(c.k));
    WindowOptions window;
    window.kind = WindowKind::kExponential;
    window.decay = c.decay;
    RankAccumulator acc(c.k, c.l, window);
    RowMatrixXf y(c.rows_per_step, c.k);
    for (int step = 1; step <= c.steps; ++step) {
      RowMatrixXf x = gen.Sample(c.eigenvalues, c.rows_per_step, rng);
      if (c.t_dof > 0.0) {
        for (int i = 0; i < x.rows(); ++i) {
          x.row(i) *= static_cast<float>(std::sqrt((c.t_dof - 2.0) / chi2(rng)));
        }
      }
      map->ApplyRows(x, y);
      acc.Add(static_cast<uint64_t>(step), y, 1.0);
    }
    SpectrumOptions o;
    o.sketch_rows = c.l;
    o.dim = c.k;
    o.projection =
        c.summarize_as < 0 ? c.projection : static_cast<ProjectionKind>(c.summarize_as);
    o.confidence = c.confidence;
    const Diagnostics d = Summarize(MergeAll(acc.Snapshot(c.steps)), o);
    const SpectrumSummary& cov = d.covariance;
    CoverageTrial t;
    t.pr = cov.participation_ratio;
    t.r90 = cov.effective_rank;
    t.top = cov.top_eigenvalue;
    t.effective_samples = cov.effective_samples;
    t.kurtosis = cov.kurtosis;
    out.trials.push_back(t);
  }
  return out;
}

std::vector<CoverageCase> StandardCoverageCases(int log2_p, int k, int l, int steps) {
  const int p = 1 << log2_p;
  int log2_k = 0;
  while ((1 << log2_k) < k) ++log2_k;
  std::vector<CoverageCase> out;
  auto add = [&](std::string name, bool projected, std::vector<double> eig, double t_dof = 0.0) {
    CoverageCase c;
    c.name = std::move(name);
    c.eigenvalues = std::move(eig);
    c.log2_p = projected ? log2_p : log2_k;
    c.projection = projected ? ProjectionKind::kCountSketch : ProjectionKind::kIdentity;
    c.k = k;
    c.l = l;
    c.steps = steps;
    c.t_dof = t_dof;
    out.push_back(std::move(c));
  };
  for (bool projected : {true, false}) {
    const int n = projected ? p : k;
    const std::string where = projected ? "" : " unprojected";
    add("power law 1.5" + where, projected, PowerLawSpectrum(n, 1.5));
    // Ten directions over an isotropic floor holding 20% of the trace.
    add("low rank 10 + noise" + where, projected, LowRankSpectrum(n, 10, 1.0, 2.5 / n));
    add("step 5 x 1, 30 x 0.1" + where, projected, StepSpectrum(n, 5, 1.0, 30, 0.1));
    add("power law 1.5, Student t6" + where, projected, PowerLawSpectrum(n, 1.5), 6.0);
    add("power law 1.0 (edge)" + where, projected, PowerLawSpectrum(n, 1.0));
  }
  return out;
}

}  // namespace spotter::testing
