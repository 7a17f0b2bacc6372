#include "core/spectrum/summary.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace spotter {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Largest sum of squares of a spectrum with lambda_i in [lo_i, lo_i + delta]
// for the held eigenvalues, tail_slots more in [0, delta], summing to trace.
// The greedy fill (largest first) majorises every feasible spectrum.
double MaxSumSq(const std::vector<double>& lo, double delta, double trace,
                int tail_slots) {
  double extra = std::max(trace - std::accumulate(lo.begin(), lo.end(), 0.0), 0.0);
  double s = 0.0;
  for (double v : lo) {
    const double add = std::min(delta, extra);
    extra -= add;
    s += (v + add) * (v + add);
  }
  if (delta > 0.0 && extra > 0.0 && tail_slots > 0) {
    const double full = std::min(std::floor(extra / delta), static_cast<double>(tail_slots));
    s += full * delta * delta;
    extra -= full * delta;
    if (full < tail_slots) s += extra * extra;
  }
  return s;
}

// Smallest sum of squares under the same constraints: water-filling to a
// common level L, found by bisection.
double MinSumSq(const std::vector<double>& lo, double delta, double trace,
                int tail_slots) {
  const double held = std::accumulate(lo.begin(), lo.end(), 0.0);
  auto fill = [&](double level, double* sum_sq) {
    double mass = 0.0, sq = 0.0;
    for (double v : lo) {
      const double x = std::clamp(level, v, v + delta);
      mass += x;
      sq += x * x;
    }
    const double t = std::clamp(level, 0.0, delta);
    mass += tail_slots * t;
    sq += tail_slots * t * t;
    if (sum_sq) *sum_sq = sq;
    return mass;
  };
  if (trace <= held || delta <= 0.0) {
    double sq = 0.0;
    for (double v : lo) sq += v * v;
    return sq;
  }
  double a = 0.0, b = (lo.empty() ? 0.0 : lo.front()) + delta;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (a + b);
    if (fill(mid, nullptr) < trace) a = mid; else b = mid;
  }
  double sq = 0.0;
  fill(b, &sq);
  return sq;
}

// Smallest r (1-based) with prefix[r] + r * per_rank >= target among the held
// eigenvalues; beyond them every further eigenvalue adds at most `beyond`.
// Returns `cap` when even that never reaches the target.
double FirstReaching(const std::vector<double>& v, double per_rank, double beyond,
                     double target, double cap) {
  double sum = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    sum += v[i] + per_rank;
    if (sum >= target) return static_cast<double>(i + 1);
  }
  if (beyond <= 0.0) return cap;
  const double more = std::ceil((target - sum) / beyond);
  return std::min(cap, static_cast<double>(v.size()) + std::max(more, 1.0));
}

}  // namespace

double CorrectParticipationRatio(double t1, double t2, double n, int k,
                                 ProjectionKind projection, bool correct_projection) {
  double b = t1 * t1;  // estimate of (tr Sigma)^2
  double a = t2;       // estimate of tr(Sigma^2)
  if (n > 1.0) {
    // Wishart with n dof: E tr(C^2) = (1 + 1/n) T2 + T1^2 / n and
    // E tr(C)^2 = T1^2 + 2 T2 / n; solve for unbiased T2 and T1^2.
    const double t2u = n * (n * a - b) / ((n - 1.0) * (n + 2.0));
    b = b - 2.0 * t2u / n;
    a = t2u;
  }
  if (correct_projection && k > 1) {
    const double kd = k;
    if (projection == ProjectionKind::kGaussian) {
      // Same algebra with k in place of n (S Sigma S^T for Gaussian S).
      const double t2u = kd * (kd * a - b) / ((kd - 1.0) * (kd + 2.0));
      b = b - 2.0 * t2u / kd;
      a = t2u;
    } else {
      // CountSketch keeps the trace exactly; E tr((S Sigma S^T)^2) =
      // (1 + 1/k) T2 + T1^2 / k - (2/k) sum_i Sigma_ii^2, the last term
      // dropped (it is at most 2 T2 / k and ~T1^2/P for dense eigenvectors).
      a = (kd * a - b) / (kd + 1.0);
    }
  }
  if (!(a > 0.0) || !(b > 0.0)) return kInf;
  return b / a;
}

SpectrumSummary SummarizeSpectrum(const std::vector<double>& sketch_eig,
                                  double delta, double trace, double normaliser,
                                  const SpectrumOptions& o) {
  SpectrumSummary out;
  if (!(normaliser > 0.0) || !(trace > 0.0) || sketch_eig.empty()) {
    out.trace = normaliser > 0.0 ? trace / normaliser : kNaN;
    out.top_eigenvalue = out.effective_rank = out.rank_fraction =
        out.participation_ratio = out.stable_rank = {kNaN, kNaN, kNaN, false};
    out.participation_ratio_raw = kNaN;
    out.eigenvalue_error = kNaN;
    return out;
  }
  out.valid = true;
  const double inv = 1.0 / normaliser;
  std::vector<double> lo(sketch_eig.size());
  for (size_t i = 0; i < lo.size(); ++i) lo[i] = sketch_eig[i] * inv;
  const double d = delta * inv;
  const double t = trace * inv;
  const int n = static_cast<int>(lo.size());
  const int tail_slots = std::max(o.dim - n, 0);
  const double held = std::accumulate(lo.begin(), lo.end(), 0.0);

  // Point spectrum: each held eigenvalue gets back half the certified error
  // (robust FD), never more than the trace allows; the rest of the trace is
  // spread evenly over the dimensions the sketch does not hold.
  const double add = std::min(0.5 * d, std::max(t - held, 0.0) / n);
  std::vector<double> point(lo);
  for (double& v : point) v += add;
  const double tail = std::max(t - held - add * n, 0.0);

  out.trace = t;
  out.eigenvalues = lo;
  out.eigenvalue_error = d;
  out.top_eigenvalue = {point[0], lo[0], lo[0] + d, false};
  out.stable_rank = {t / point[0], t / (lo[0] + d), t / lo[0], false};

  // Effective rank: the smallest r holding `mass` of the trace.
  const double target = o.mass * t;
  const double cap = static_cast<double>(o.dim);
  const double upper = FirstReaching(lo, 0.0, 0.0, target, cap);
  const double lower = std::min(FirstReaching(lo, d, d, target, cap), upper);
  double r = 0.0;
  bool censored = true;
  {
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      sum += point[i];
      if (sum >= target) {
        r = i + 1;
        censored = false;
        break;
      }
    }
  }
  if (censored) {
    out.effective_rank = {lower, lower, cap, true};
  } else {
    out.effective_rank = {std::clamp(r, lower, upper), lower, upper, false};
  }
  const double l = static_cast<double>(o.sketch_rows);
  out.rank_fraction = {out.effective_rank.value / l, out.effective_rank.lower / l,
                       out.effective_rank.upper / l, out.effective_rank.censored};

  // Participation ratio.
  double sq_point = 0.0;
  for (double v : point) sq_point += v * v;
  if (tail_slots > 0) sq_point += tail * tail / tail_slots;
  const double sq_max = MaxSumSq(lo, d, t, tail_slots);
  const double sq_min = MinSumSq(lo, d, t, tail_slots);
  out.participation_ratio_raw = t * t / sq_point;
  auto corrected = [&](double sq) {
    return CorrectParticipationRatio(t, sq, o.effective_samples, o.dim, o.projection,
                                     o.correct_projection);
  };
  Estimate pr{corrected(sq_point), corrected(sq_max), corrected(sq_min), false};
  if (!std::isfinite(pr.value)) {
    // Too flat to resolve with this k and n: report what is known.
    pr.censored = true;
    pr.value = std::isfinite(pr.lower) ? pr.lower : t * t / sq_max;
    pr.lower = pr.value;
    pr.upper = kInf;
  }
  pr.lower = std::min(pr.lower, pr.value);
  pr.upper = std::max(pr.upper, pr.value);
  out.participation_ratio = pr;
  return out;
}

Diagnostics Summarize(const GradientMoments& m, SpectrumOptions options) {
  Diagnostics out;
  out.rows = m.rows;
  out.effective_samples = m.dof_sq > 0.0 ? m.dof * m.dof / m.dof_sq : 0.0;
  options.effective_samples = out.effective_samples;
  out.covariance = SummarizeSpectrum(m.centred.Eigenvalues(), m.centred.delta(),
                                     m.trace_centred, m.dof, options);
  FrequentDirections second = m.centred;
  second.Merge(m.means);
  SpectrumOptions second_options = options;
  second_options.effective_samples =
      m.samples_sq > 0.0 ? m.samples * m.samples / m.samples_sq : 0.0;
  out.second_moment = SummarizeSpectrum(second.Eigenvalues(), second.delta(),
                                        m.trace_raw, m.samples, second_options);
  out.mean_gradient_sq_norm =
      m.mean_sq_weight > 0.0 ? m.mean_sq_sum / m.mean_sq_weight : kNaN;
  const double example_trace = m.dof > 0.0 ? m.example_trace / m.dof : kNaN;
  out.noise_scale = out.mean_gradient_sq_norm > 0.0
                        ? example_trace / out.mean_gradient_sq_norm
                        : kNaN;
  return out;
}

}  // namespace spotter
