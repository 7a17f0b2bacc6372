// Coverage of the sampling confidence intervals (docs/DIAGNOSTICS.md,
// "Sampling intervals"): gradient samples with a planted population spectrum,
// projected as a trainer would, streamed through the core's RankAccumulator
// and summarised as the server does; then, per seed, whether each interval
// holds the population value. Used by tests/unit/coverage_test.cc (short
// form) and bench/coverage_table.cc (the table in docs/DIAGNOSTICS.md).
#ifndef SPOTTER_TESTS_TESTING_COVERAGE_H_
#define SPOTTER_TESTS_TESTING_COVERAGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/spectrum/summary.h"
#include "core/types.h"

namespace spotter::testing {

// One planted case. Rows are Gaussian with population covariance
// Q diag(eigenvalues) Q^T in P = 2^log2_p dimensions (dense eigenvectors,
// RotatedGaussian), or elliptical (multivariate Student t with `t_dof`
// degrees of freedom, each row a Gaussian one times sqrt((dof - 2) / chi2)):
// the same covariance, heavier tails. Then projected to k (kIdentity: P == k)
// with a map drawn per seed, `rows_per_step` rows per step for `steps`
// steps into an exponential window of `decay`, summarised with l rows.
struct CoverageCase {
  std::string name;
  std::vector<double> eigenvalues;  // P of them, largest first
  int log2_p = 12;
  ProjectionKind projection = ProjectionKind::kCountSketch;
  int k = 512;
  int l = 64;
  int rows_per_step = 32;
  int steps = 200;
  double decay = 0.99;
  double t_dof = 0.0;  // 0: Gaussian rows
  double confidence = 0.9;
  // Summarise as if the trainer had declared this projection (tests of the
  // declaration); -1: `projection`.
  int summarize_as = -1;
};

// Per seed: the covariance summary's estimates, as reported.
struct CoverageTrial {
  Estimate pr, r90, top;  // participation ratio, effective rank, top eigenvalue
  double effective_samples = 0, kurtosis = 0;
};

struct CoverageResult {
  CoverageCase spec;
  double true_pr = 0, true_r90 = 0, true_top = 0;
  std::vector<CoverageTrial> trials;

  // Fraction of seeds whose sampling interval holds the truth; the r90 and
  // top-eigenvalue ones only for kIdentity (their target is the covariance of
  // the projected rows, the PR's the unprojected population).
  double PrCoverage() const;
  double PrSketchBoundCoverage() const;  // the certified [lower, upper]
  double R90Coverage() const;
  double TopCoverage() const;
  double CensoredFraction() const;
  double MeanPrRelativeError() const;  // mean of PR / truth - 1
  double MeanPrRelativeHalfWidth() const;
};

// Runs `seeds` seeds (first_seed, first_seed + 1, ...).
CoverageResult RunCoverage(const CoverageCase& c, int seeds, uint64_t first_seed);

// The standard cases of the coverage table, in P = 2^log2_p dimensions
// (projected to k) and in k dimensions (unprojected).
std::vector<CoverageCase> StandardCoverageCases(int log2_p, int k, int l, int steps);

}  // namespace spotter::testing

#endif  // SPOTTER_TESTS_TESTING_COVERAGE_H_
