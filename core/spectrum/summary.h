// Spectral summaries of a Frequent Directions sketch: eigenvalues, effective
// rank, participation ratio and friends, each with the interval the sketch
// certifies. The math is written out in docs/DIAGNOSTICS.md.
#ifndef SPOTTER_CORE_SPECTRUM_SUMMARY_H_
#define SPOTTER_CORE_SPECTRUM_SUMMARY_H_

#include <cstdint>
#include <vector>

#include "core/spectrum/frequent_directions.h"
#include "core/spectrum/moments.h"
#include "core/types.h"

namespace spotter {

// A point estimate with two intervals that answer different questions
// (docs/DIAGNOSTICS.md, "Two intervals"):
//   [lower, upper]            the SKETCH BOUND: what the sketch certifies for
//                             the observed (projected, sampled, decayed)
//                             covariance. Holds always, by construction; says
//                             nothing about sampling.
//   [ci_lower, ci_upper]      the SAMPLING CONFIDENCE INTERVAL at
//                             SpectrumOptions::confidence: where the
//                             population value lies given the window's finite
//                             sample (and, for the participation ratio, the
//                             random projection), by the delta method. NaN
//                             when there is no data.
// censored: the sketch cannot resolve the value; value == lower is then a
// lower bound only, upper is what is still possible (+inf for the
// participation ratio) and ci_upper is upper.
struct Estimate {
  double value = 0.0;
  double lower = 0.0;
  double upper = 0.0;
  bool censored = false;
  double ci_lower = 0.0;
  double ci_upper = 0.0;
};

// How spectra are summarised (docs/DIAGNOSTICS.md).
struct SpectrumOptions {
  // Fraction of the trace the effective rank must hold (0.9 gives r90), in
  // (0, 1].
  double mass = 0.9;
  // FD sketch size l, the denominator of the rank fraction.
  int sketch_rows = 64;
  // Dimension k of the projected space: an upper bound for every rank.
  int dim = 256;
  // Projection used by the trainers, for the bias correction of the PR.
  ProjectionKind projection = ProjectionKind::kCountSketch;
  // Correct the PR for the projection's bias (never for kIdentity: the rows
  // are the gradients themselves).
  bool correct_projection = true;
  // Level of the sampling confidence intervals, in (0, 1).
  double confidence = 0.9;
  // Fourth-moment factor of the rows, E|x|^4 / ((tr S)^2 + 2 tr S^2) (1 for
  // Gaussian rows, larger for heavy tails), which scales every sampling
  // variance; <= 0: unknown, taken as 1. Summarize() fills it in.
  double kurtosis = 0.0;
  // Effective number of samples (dof) for the sample-size correction of the
  // PR; <= 1 disables it. Summarize() fills it in from the moments.
  double effective_samples = 0.0;
  // Point estimate of each held eigenvalue: the sketch value plus this
  // fraction of the FD shrinkage Delta, never more than the trace allows. In
  // [0, 1]. 1: a direction the sketch held throughout lost exactly Delta
  // (docs/DIAGNOSTICS.md); 0.5 is robust FD's minimax choice (Luo et al.
  // 2016), which biases the PR up and r90 down (see the accuracy table).
  double point_shift = 1.0;
  // The point r90 is reported only when the sketch CERTIFIES at least
  // (mass - censor_slack) of the trace within that many eigenvalues;
  // otherwise effective_rank is censored (a lower bound). Keeps a flat
  // spectrum, whose mass the sketch cannot hold, from ever being reported as
  // a small rank. In [0, mass).
  double censor_slack = 0.05;
  // The PR is reported as a point only when its sketch bound is no wider
  // than this (upper <= (1 + censor_width) lower); otherwise it is censored:
  // the certified lower end, a lower bound (docs/DIAGNOSTICS.md,
  // "Censoring"). > 0.
  double censor_width = 0.1;
};

// The summary of one covariance, per sample (sums divided by the normaliser).
struct SpectrumSummary {
  bool valid = false;  // false when there was no data (all fields NaN/empty)
  double trace = 0.0;  // exact
  Estimate top_eigenvalue;
  Estimate effective_rank;  // r90 (options.mass)
  Estimate rank_fraction;   // effective_rank / sketch_rows
  // Bias-corrected estimate of the PR of the unprojected population
  // covariance; the interval is the image of the certified interval of the
  // observed tr(C^2) under the (deterministic) correction.
  Estimate participation_ratio;
  // Participation ratio of the observed covariance, uncorrected, with the
  // interval the sketch certifies (participation_ratio_raw is its value).
  Estimate participation_ratio_observed;
  double participation_ratio_raw = 0.0;
  Estimate stable_rank;
  // Lower ends of the certified eigenvalue intervals, largest first (at most
  // sketch_rows of them, zeros dropped); every eigenvalue lies in
  // [eigenvalues[i], eigenvalues[i] + eigenvalue_error] (0 beyond the list).
  std::vector<double> eigenvalues;
  double eigenvalue_error = 0.0;  // certified additive error: Delta + 2 rho
  // What the sampling intervals assumed: the effective number of samples and
  // the rows' fourth-moment factor (1: Gaussian, or unknown).
  double effective_samples = 0.0;
  double kurtosis = 1.0;
  double confidence = 0.9;  // level of the sampling intervals
};

// Summarises a covariance given by a certified sketch spectrum (eigenvalues
// of B^T B with the FD bound delta and the rounding bound rho), the exact
// trace of A^T A and the normaliser (number of samples or dof) that turns
// sums into a per-sample covariance. normaliser <= 0 or trace <= 0 gives
// valid == false.
SpectrumSummary SummarizeSpectrum(const SketchSpectrum& sketch, double trace,
                                  double normaliser, const SpectrumOptions& options);

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

// The rows' fourth-moment factor E|x|^4 / ((tr S)^2 + 2 tr S^2) estimated
// from the moments' centred fourth-moment sums (1 for Gaussian rows); 0 when
// unknown (no batch of 2+ rows, or a state from a version-1 checkpoint).
// `centred` is moments.centred.Spectrum().
double RowKurtosis(const GradientMoments& moments, const SketchSpectrum& centred);

// Participation ratio corrections (docs/DIAGNOSTICS.md). Given the observed
// t1 = tr(C) and t2 = tr(C^2) of a covariance estimated from n effective
// samples and projected to k dims, returns the estimate of
// (tr Sigma)^2 / tr(Sigma^2) of the unprojected population covariance: both
// effects have the Wishart form E tr(C^2) = (1 + 1/n) T2 + T1^2 / n,
// E tr(C)^2 = T1^2 + 2 T2 / n, which is inverted for n (if n > 1) and for k
// (if correct_projection and k > 1). For CountSketch the form holds up to
// terms in sum_i Sigma_ii^2 that vanish for delocalised eigenvectors.
// Returns +inf when the observed spectrum is too flat for n and k to resolve
// (the corrected tr(Sigma^2) is not positive).
double CorrectParticipationRatio(double t1, double t2, double n, int k,
                                 ProjectionKind projection, bool correct_projection);

// First-order variance of log(PR) of a covariance estimated from m Gaussian
// samples (or Gaussian-projected to m dimensions), for the population
// spectrum `eig` (docs/DIAGNOSTICS.md, "Sampling intervals"):
//   8 T2/(m T1^2) + 8 T4/(m T2^2) - 16 T3/(m T1 T2) + 4 (T2^2 - T4)/(m^2 T2^2),
// Tj = sum lambda^j. NaN for m <= 1 or an empty/zero spectrum.
double LogParticipationRatioVariance(const std::vector<double>& eig, double m);

// The standard normal quantile z with P(|Z| <= z) = level, level in (0, 1).
double TwoSidedNormalQuantile(double level);

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_SUMMARY_H_
