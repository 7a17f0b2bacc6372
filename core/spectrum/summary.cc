#include "core/spectrum/summary.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace spotter {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The certified box of a spectrum: lambda_i in [lo_i, lo_i + d] for the held
// i < lo.size(), in [0, d] for tail_slots more, and sum lambda = trace.

// Largest sum of squares over the box: the greedy fill (largest first)
// majorises every feasible spectrum.
double MaxSumSq(const std::vector<double>& lo, double d, double trace, int tail_slots) {
  double extra = std::max(trace - std::accumulate(lo.begin(), lo.end(), 0.0), 0.0);
  double s = 0.0;
  for (double v : lo) {
    const double add = std::min(d, extra);
    extra -= add;
    s += (v + add) * (v + add);
  }
  if (d > 0.0 && extra > 0.0 && tail_slots > 0) {
    const double full = std::min(std::floor(extra / d), static_cast<double>(tail_slots));
    s += full * d * d;
    extra -= full * d;
    if (full < tail_slots) s += extra * extra;
  }
  return s;
}

// Smallest sum of squares over the box: water-filling to a common level,
// found by bisection.
double MinSumSq(const std::vector<double>& lo, double d, double trace, int tail_slots) {
  const double held = std::accumulate(lo.begin(), lo.end(), 0.0);
  auto fill = [&](double level, double* sum_sq) {
    double mass = 0.0, sq = 0.0;
    for (double v : lo) {
      const double x = std::clamp(level, v, v + d);
      mass += x;
      sq += x * x;
    }
    const double t = std::clamp(level, 0.0, d);
    mass += tail_slots * t;
    sq += tail_slots * t * t;
    if (sum_sq) *sum_sq = sq;
    return mass;
  };
  if (trace <= held || d <= 0.0) {
    double sq = 0.0;
    for (double v : lo) sq += v * v;
    return sq;
  }
  double a = 0.0, b = (lo.empty() ? 0.0 : lo.front()) + d;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (a + b);
    if (fill(mid, nullptr) < trace) a = mid; else b = mid;
  }
  double sq = 0.0;
  fill(b, &sq);
  return sq;
}

// Inverts E[a] = (1 + 1/n) T2 + B / n, E[b] = B + 2 T2 / n for (T2, B).
void UndoWishart(double n, double* a, double* b) {
  const double t2 = n * (n * *a - *b) / ((n - 1.0) * (n + 2.0));
  *b -= 2.0 * t2 / n;
  *a = t2;
}

// sum_i lambda_i^j for j = 1..4.
struct PowerSums {
  double t1 = 0, t2 = 0, t3 = 0, t4 = 0;
  explicit PowerSums(const std::vector<double>& eig) {
    for (double v : eig) {
      const double v2 = v * v;
      t1 += v;
      t2 += v2;
      t3 += v2 * v;
      t4 += v2 * v2;
    }
  }
};

// First-order variance of log PR for m Wishart-form samples, from the power
// sums of the spectrum they are drawn from.
double LogPrVariance(const PowerSums& p, double m) {
  if (!(m > 1.0) || !(p.t1 > 0.0) || !(p.t2 > 0.0)) return kNaN;
  return 8.0 * p.t2 / (m * p.t1 * p.t1) + 8.0 * p.t4 / (m * p.t2 * p.t2) -
         16.0 * p.t3 / (m * p.t1 * p.t2) +
         4.0 * (p.t2 * p.t2 - p.t4) / (m * m * p.t2 * p.t2);
}

// The power sums of the spectrum a Wishart-form randomisation of size m
// (sampling with m = n_eff, a random projection with m = k) was applied to,
// from the observed ones: the expectations
//   E t2 = (1 + 1/m) T2 + T1^2/m,
//   E t3 = T3 + 3 T1 T2/m + T1^3/m^2,
//   E t4 = T4 + 6 T1 T3/m + 6 T1^2 T2/m^2 + T1^4/m^3
// (the non-crossing-partition expansion of the free multiplicative
// convolution with the Marchenko-Pastur law; for T = k it gives the
// Narayana moments of MP) solved for T2, T3, T4. The observed spectrum's
// eigenvalues are spread by the randomisation, which inflates the plug-in
// variance of a flat-topped spectrum many times over; the corrected sums do
// not. Returns the observed sums when a corrected one is not positive (too
// flat for this m to resolve).
PowerSums Unspread(const PowerSums& o, double m) {
  if (!(m > 1.0)) return o;
  PowerSums p = o;
  const double t1 = o.t1;
  p.t2 = (o.t2 - t1 * t1 / m) / (1.0 + 1.0 / m);
  p.t3 = o.t3 - 3.0 * t1 * p.t2 / m - t1 * t1 * t1 / (m * m);
  p.t4 = o.t4 - 6.0 * t1 * p.t3 / m - 6.0 * t1 * t1 * p.t2 / (m * m) -
         t1 * t1 * t1 * t1 / (m * m * m);
  if (!(p.t2 > 0.0) || !(p.t3 > 0.0) || !(p.t4 > 0.0)) return o;
  return p;
}

// The point spectrum as a full list: the held point eigenvalues, then the
// unheld trace spread evenly over tail_slots dimensions.
std::vector<double> FullSpectrum(const std::vector<double>& point, double tail, int tail_slots) {
  std::vector<double> eig = point;
  if (tail_slots > 0 && tail > 0.0) eig.insert(eig.end(), tail_slots, tail / tail_slots);
  return eig;
}

// The r90 sampling interval (docs/DIAGNOSTICS.md, "Sampling intervals"): the
// top-r mass F(r) = A/(A+B) of the point spectrum has, to first order,
//   Var F = f F^2 (1-F)^2 (2 sum_{i<=r} lambda^2 / A^2 + 2 sum_{i>r} lambda^2 / B^2) / n;
// r90 lies between the first r where F + z sd reaches `mass` and the first r
// where F - z sd does.
std::pair<double, double> RankInterval(const std::vector<double>& eig, double mass, double n,
                                       double f, double z) {
  const int dims = static_cast<int>(eig.size());
  double total = 0.0, total_sq = 0.0;
  for (double v : eig) {
    total += v;
    total_sq += v * v;
  }
  double lo = dims, hi = dims;
  bool found_lo = false;
  double a = 0.0, a_sq = 0.0;
  for (int r = 1; r <= dims; ++r) {
    a += eig[r - 1];
    a_sq += eig[r - 1] * eig[r - 1];
    const double b = std::max(total - a, 0.0), b_sq = std::max(total_sq - a_sq, 0.0);
    const double fr = a / total;
    double var = 0.0;
    if (n > 1.0 && a > 0.0 && b > 0.0) {
      var = f * fr * fr * (1.0 - fr) * (1.0 - fr) * (2.0 * a_sq / (a * a) + 2.0 * b_sq / (b * b)) / n;
    }
    const double sd = std::sqrt(var);
    if (!found_lo && fr + z * sd >= mass) {
      lo = r;
      found_lo = true;
    }
    if (fr - z * sd >= mass) {
      hi = r;
      break;
    }
  }
  return {std::min(lo, hi), hi};
}

}  // namespace

double LogParticipationRatioVariance(const std::vector<double>& eig, double m) {
  return LogPrVariance(PowerSums(eig), m);
}

double TwoSidedNormalQuantile(double level) {
  // P(|Z| <= z) = erf(z / sqrt 2), increasing in z: bisection to double
  // precision.
  double a = 0.0, b = 40.0;
  for (int it = 0; it < 200 && b - a > 1e-15 * b; ++it) {
    const double mid = 0.5 * (a + b);
    if (std::erf(mid / std::sqrt(2.0)) < level) a = mid; else b = mid;
  }
  return 0.5 * (a + b);
}

double CorrectParticipationRatio(double t1, double t2, double n, int k,
                                 ProjectionKind projection, bool correct_projection) {
  double a = t2;       // estimate of tr(Sigma^2)
  double b = t1 * t1;  // estimate of (tr Sigma)^2
  // The two maps commute, so the order does not matter.
  if (n > 1.0) UndoWishart(n, &a, &b);
  // Gaussian S: S Sigma S^T = sum_j lambda_j g_j g_j^T with g_j ~ N(0, I/k),
  // exactly the Wishart form with k in place of n. CountSketch: the same up
  // to -2 D2 / k in both moments, D2 = sum_i Sigma_ii^2 (~ T1^2 / P for
  // delocalised eigenvectors), which is dropped.
  if (correct_projection && projection != ProjectionKind::kIdentity && k > 1) {
    UndoWishart(static_cast<double>(k), &a, &b);
  }
  if (!(a > 0.0) || !(b > 0.0)) return kInf;
  return b / a;
}

SpectrumSummary SummarizeSpectrum(const SketchSpectrum& sketch, double trace,
                                  double normaliser, const SpectrumOptions& o) {
  SpectrumSummary out;
  if (!(normaliser > 0.0) || !(trace > 0.0)) {
    out.trace = normaliser > 0.0 ? trace / normaliser : kNaN;
    out.top_eigenvalue = out.effective_rank = out.rank_fraction =
        out.participation_ratio = out.participation_ratio_observed = out.stable_rank =
            {kNaN, kNaN, kNaN, false, kNaN, kNaN};
    out.participation_ratio_raw = kNaN;
    out.eigenvalue_error = kNaN;
    return out;
  }
  out.valid = true;
  const double inv = 1.0 / normaliser;
  const double t = trace * inv;
  // Certified box per sample: lambda_i in [lo_i, lo_i + d].
  const double rho = sketch.rounding * inv;
  const double d = sketch.delta * inv + 2.0 * rho;
  std::vector<double> lo, point;
  for (double v : sketch.eigenvalues) {
    if (v * inv - rho > 0.0) {
      lo.push_back(v * inv - rho);
      point.push_back(v * inv);
    }
  }
  if (lo.empty()) {
    lo.push_back(0.0);
    point.push_back(sketch.eigenvalues.empty() ? 0.0 : sketch.eigenvalues[0] * inv);
  }
  const int n = static_cast<int>(lo.size());
  const int dims = std::max(o.dim, n);
  const int tail_slots = dims - n;
  const double held = std::accumulate(lo.begin(), lo.end(), 0.0);

  // Point spectrum: each held eigenvalue gets back point_shift of the FD
  // shrinkage Delta (a direction the sketch held throughout lost all of it;
  // the rounding bound is no loss and is not added), never more than the
  // trace allows; the rest of the trace is spread evenly over the dimensions
  // the sketch does not hold.
  const double point_held = std::accumulate(point.begin(), point.end(), 0.0);
  const double add =
      std::min(o.point_shift * sketch.delta * inv, std::max(t - point_held, 0.0) / n);
  for (double& v : point) v += add;
  const double tail = std::max(t - point_held - add * n, 0.0);

  out.trace = t;
  out.eigenvalues = lo;
  out.eigenvalue_error = d;
  out.top_eigenvalue = {point[0], lo[0], lo[0] + d, false};
  out.stable_rank = {t / point[0], t / (lo[0] + d), lo[0] > 0.0 ? t / lo[0] : kInf, false};

  // Sampling intervals (docs/DIAGNOSTICS.md, "Sampling intervals"): delta
  // method on the point spectrum, for n_eff samples whose fourth moments are
  // f times a Gaussian's (elliptical rows: the sample covariance's
  // fluctuation is f times the Gaussian one plus a common scale, which
  // cancels in every scale-free ratio).
  const double n_eff = o.effective_samples;
  const double f = o.kurtosis > 0.0 ? o.kurtosis : 1.0;
  const double z = TwoSidedNormalQuantile(o.confidence);
  out.effective_samples = n_eff;
  out.kurtosis = f;
  out.confidence = o.confidence;
  const std::vector<double> full = FullSpectrum(point, tail, tail_slots);
  // The sampling interval of a positive estimate with Var(log) = var,
  // widened to hold the sketch's box [lower, upper] too (the sketch's error
  // is bounded, not random: the interval holds whenever the sampling error is
  // within z sd).
  // z sd of a log estimate with Var(log) = var (+inf: unknown).
  auto half_width = [&](double var) {
    return n_eff > 1.0 && var >= 0.0 ? z * std::sqrt(var) : kInf;
  };
  auto log_interval = [&](Estimate* e, double var) {
    const double h = half_width(var);
    e->ci_lower = std::min(e->value, e->lower) * std::exp(-h);
    e->ci_upper = std::max(e->value, e->upper) * std::exp(h);
    if (!std::isfinite(e->ci_lower)) e->ci_lower = 0.0;
  };
  {
    // Top eigenvalue: Var log lambda_1 = (2 f + (f - 1)) / n (the common
    // scale of an elliptical sample does not cancel here); stable rank
    // t / lambda_1: f (2 T2/T1^2 + 2 - 4 lambda_1/T1) / n.
    const PowerSums p(full);
    const double top_var = (3.0 * f - 1.0) / n_eff;
    log_interval(&out.top_eigenvalue, top_var);
    // A top eigenvalue that is not isolated (c population eigenvalues
    // closer than the sampling error) comes out of the sample as the largest
    // of c noisy copies, biased up: c equal eigenvalues spread over about
    // +-2 sqrt(f c / n_eff) of their value (the Marchenko-Pastur edges). The
    // lower end then reaches down to the mean of the sample eigenvalues
    // within twice that of the top one, which estimates the common value.
    {
      double sum = 0.0;
      int count = 0;
      for (double v : point) {
        const double spread = 4.0 * std::sqrt(f * (count + 1) / n_eff);
        if (!(v >= point[0] * (1.0 - spread))) break;
        sum += v;
        ++count;
      }
      if (count > 1) {
        out.top_eigenvalue.ci_lower =
            std::min(out.top_eigenvalue.ci_lower, sum / count * std::exp(-half_width(top_var)));
      }
    }
    const double share = point[0] / p.t1;
    log_interval(&out.stable_rank,
                 f * std::max(2.0 * p.t2 / (p.t1 * p.t1) + 2.0 - 4.0 * share, 0.0) / n_eff);
  }

  // Effective rank: the smallest r whose top-r eigenvalues hold `mass` of the
  // trace. With S_r = sum_{i<=r} lo_i (lo_i = 0 beyond the held ones):
  //   sum_{i<=r} lambda_i <= S_r + min(r d, t - held)             (upper),
  //   sum_{i<=r} lambda_i >= max(S_r, t - (held - S_r) - (dims - r) d) (lower),
  // the second from the trace and the box of the other eigenvalues. r90 lies
  // between the first r where the upper curve reaches the target and the
  // first r where the lower one does.
  const double target = o.mass * t;
  double lower = dims, upper = dims;
  {
    double s = 0.0;
    bool found_lower = false;
    for (int r = 1; r <= dims; ++r) {
      if (r <= n) s += lo[r - 1];
      const double hi_curve = s + std::min(r * d, std::max(t - held, 0.0));
      const double lo_curve = std::max(s, t - (held - s) - (dims - r) * d);
      if (!found_lower && hi_curve >= target) {
        lower = r;
        found_lower = true;
      }
      if (lo_curve >= target) {
        upper = r;
        break;
      }
    }
    lower = std::min(lower, upper);
  }
  double r = 0.0;
  bool censored = true;
  {
    double sum = 0.0, certain = 0.0;
    for (int i = 0; i < n; ++i) {
      sum += point[i];
      certain += lo[i];
      if (sum >= target) {
        r = i + 1;
        censored = certain < (o.mass - o.censor_slack) * t;
        break;
      }
    }
  }
  const auto [ci_lo, ci_hi] = RankInterval(full, o.mass, n_eff, f, z);
  if (censored) {
    out.effective_rank = {lower, lower, upper, true, std::min(ci_lo, lower), upper};
  } else {
    const double value = std::clamp(r, lower, upper);
    out.effective_rank = {value, lower, upper, false, std::min(ci_lo, value),
                          std::max(ci_hi, value)};
  }
  const double l = static_cast<double>(o.sketch_rows);
  const Estimate& er = out.effective_rank;
  out.rank_fraction = {er.value / l, er.lower / l, er.upper / l, er.censored,
                       er.ci_lower / l, er.ci_upper / l};

  // Participation ratio t^2 / tr(C^2): tr(C^2) is bracketed by the extreme
  // spectra of the box.
  double sq_point = 0.0;
  for (double v : point) sq_point += v * v;
  if (tail_slots > 0) sq_point += tail * tail / tail_slots;
  const double sq_max = MaxSumSq(lo, d, t, tail_slots);
  const double sq_min = MinSumSq(lo, d, t, tail_slots);
  sq_point = std::clamp(sq_point, sq_min, sq_max);
  out.participation_ratio_raw = t * t / sq_point;
  out.participation_ratio_observed = {out.participation_ratio_raw, t * t / sq_max,
                                      t * t / sq_min, false};
  auto corrected = [&](double sq) {
    return CorrectParticipationRatio(t, sq, o.effective_samples, o.dim, o.projection,
                                     o.correct_projection);
  };
  // The correction decreases in tr(C^2), so the interval maps end to end.
  Estimate pr{corrected(sq_point), corrected(sq_max), corrected(sq_min), false};
  out.participation_ratio_observed.ci_lower = out.participation_ratio_observed.ci_upper = kNaN;
  // Sampling interval of log PR: the sampling variance (n_eff, times f) plus,
  // when the PR is corrected for a random projection, the projection's (the
  // same form with k; the map is fixed for a run, but drawn at random).
  // Each term is evaluated on the spectrum its randomisation acted on: the
  // sampling term on the rows' population (the observed sums unspread for
  // n_eff), the projection term on the unprojected one (unspread for k too).
  const PowerSums rows_population = Unspread(PowerSums(full), n_eff);
  double var = f * LogPrVariance(rows_population, n_eff);
  if (o.correct_projection && o.projection != ProjectionKind::kIdentity && o.dim > 1) {
    const double k = static_cast<double>(o.dim);
    var += LogPrVariance(Unspread(rows_population, k), k);
  }
  // At the sketch's edge (docs/DIAGNOSTICS.md, "Censoring"): when the sketch
  // bound is wider than censor_width, the l rows do not hold enough of the
  // spectrum to place the PR (the unheld rest is spread evenly by
  // assumption, and the truth can be anywhere in the box): as for r90, the
  // certified lower end is reported as a lower bound.
  if (!std::isfinite(pr.value) || !(pr.upper <= (1.0 + o.censor_width) * pr.lower)) {
    pr.censored = true;
    if (!std::isfinite(pr.value)) {
      // Too flat to resolve with this k and n_eff: nothing bounds it above.
      if (!std::isfinite(pr.lower)) pr.lower = out.participation_ratio_observed.lower;
      pr.upper = kInf;
    }
    pr.value = pr.lower;
  }
  // The sketch's box widened by the sampling error at each end, like every
  // other estimate's.
  log_interval(&pr, var);
  out.participation_ratio = pr;
  return out;
}

double RowKurtosis(const GradientMoments& m, const SketchSpectrum& centred) {
  if (!(m.norm4_weight > 0.0) || !(m.dof > 0.0) || !(m.trace_centred > 0.0)) return 0.0;
  // tr S and an unbiased tr S^2 of the rows' (projected) population
  // covariance, tr(C^2) taken as the sum of the sketch's squared eigenvalues
  // (each low by at most Delta: good enough for a factor that scales a
  // variance), corrected for sampling as in CorrectParticipationRatio.
  double sq = 0.0;
  for (double v : centred.eigenvalues) sq += v * v;
  const double t1 = m.trace_centred / m.dof;
  double a = sq / (m.dof * m.dof), b = t1 * t1;
  const double n = m.dof_sq > 0.0 ? m.dof * m.dof / m.dof_sq : 0.0;
  if (n > 1.0) UndoWishart(n, &a, &b);
  const double gaussian = t1 * t1 + 2.0 * std::max(a, 0.0);
  const double f = (m.norm4_centred / m.norm4_weight) / gaussian;
  return std::isfinite(f) && f > 0.0 ? f : 0.0;
}

Diagnostics Summarize(const GradientMoments& m, SpectrumOptions options) {
  Diagnostics out;
  out.rows = m.rows;
  out.effective_samples = m.dof_sq > 0.0 ? m.dof * m.dof / m.dof_sq : 0.0;
  options.effective_samples = out.effective_samples;
  const SketchSpectrum centred = m.centred.Spectrum();
  options.kurtosis = RowKurtosis(m, centred);
  out.covariance = SummarizeSpectrum(centred, m.trace_centred, m.dof, options);
  FrequentDirections second = m.centred;
  second.Merge(m.means);
  SpectrumOptions second_options = options;
  second_options.effective_samples =
      m.samples_sq > 0.0 ? m.samples * m.samples / m.samples_sq : 0.0;
  out.second_moment =
      SummarizeSpectrum(second.Spectrum(), m.trace_raw, m.samples, second_options);
  out.mean_gradient_sq_norm =
      m.mean_sq_weight > 0.0 ? m.mean_sq_sum / m.mean_sq_weight : kNaN;
  const double example_trace = m.dof > 0.0 ? m.example_trace / m.dof : kNaN;
  out.noise_scale = out.mean_gradient_sq_norm > 0.0
                        ? example_trace / out.mean_gradient_sq_norm
                        : kNaN;
  return out;
}

}  // namespace spotter
