// Spectral summaries of a Frequent Directions sketch: eigenvalues, effective
// rank, participation ratio and friends, each with the interval the sketch
// certifies. The math is written out in docs/DIAGNOSTICS.md.
#ifndef SPOTTER_CORE_SPECTRUM_SUMMARY_H_
#define SPOTTER_CORE_SPECTRUM_SUMMARY_H_

#include <cstdint>
#include <vector>

#include "core/spectrum/moments.h"
#include "core/types.h"

namespace spotter {

// A point estimate and the interval [lower, upper] the sketch guarantees for
// the observed (projected, sampled) covariance. censored: the sketch cannot
// resolve the value; value == lower is then a lower bound only.
struct Estimate {
  double value = 0.0;
  double lower = 0.0;
  double upper = 0.0;
  bool censored = false;
};

struct SpectrumOptions {
  // Fraction of the trace the effective rank must hold (0.9 gives r90).
  double mass = 0.9;
  // FD sketch size l, the denominator of the rank fraction.
  int sketch_rows = 64;
  // Dimension k of the projected space: an upper bound for every rank.
  int dim = 256;
  // Projection used by the trainers, for the bias correction of the PR.
  ProjectionKind projection = ProjectionKind::kCountSketch;
  // Correct the PR for the projection's bias.
  bool correct_projection = true;
  // Effective number of samples (dof) for the sample-size correction of the
  // PR; <= 1 disables it.
  double effective_samples = 0.0;
};

struct SpectrumSummary {
  bool valid = false;  // false when there was no data (all fields NaN/empty)
  double trace = 0.0;  // per sample
  Estimate top_eigenvalue;
  Estimate effective_rank;
  Estimate rank_fraction;
  Estimate participation_ratio;  // bias-corrected
  double participation_ratio_raw = 0.0;
  Estimate stable_rank;
  std::vector<double> eigenvalues;  // per sample, largest first
  double eigenvalue_error = 0.0;    // certified additive error, per sample
};

// Summarises a covariance given by the sketch eigenvalues `sketch_eig`
// (largest first, of B^T B), the FD error bound `delta`, the exact trace of
// A^T A and the normaliser (number of samples or dof) that turns sums into a
// per-sample covariance. normaliser <= 0 or trace <= 0 gives valid == false.
SpectrumSummary SummarizeSpectrum(const std::vector<double>& sketch_eig,
                                  double delta, double trace, double normaliser,
                                  const SpectrumOptions& options);

// Everything one evaluation reports.
struct Diagnostics {
  SpectrumSummary covariance;     // rows centred within their batch
  SpectrumSummary second_moment;  // uncentred (empirical Fisher)
  // B_simple = tr(Sigma_example) / |G|^2, NaN when |G|^2 <= 0 is unresolved.
  double noise_scale = 0.0;
  double mean_gradient_sq_norm = 0.0;  // unbiased |G|^2 (projected)
  double effective_samples = 0.0;      // (sum w (m-1))^2 / sum w^2 (m-1)
  uint64_t rows = 0;
};

// Summarises merged moments. options.effective_samples is filled in from the
// moments.
Diagnostics Summarize(const GradientMoments& moments, SpectrumOptions options);

// Participation ratio corrections (docs/DIAGNOSTICS.md). Given the observed
// T1 = tr(C) and T2 = tr(C^2) of a covariance estimated from n dof and
// projected to k dims, returns the estimate of (tr Sigma)^2 / tr(Sigma^2) of
// the unprojected population covariance. Returns +inf when the observed
// spectrum is too flat for n and k to resolve (the corrected tr(Sigma^2) is
// not positive).
double CorrectParticipationRatio(double t1, double t2, double n, int k,
                                 ProjectionKind projection, bool correct_projection);

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_SUMMARY_H_
