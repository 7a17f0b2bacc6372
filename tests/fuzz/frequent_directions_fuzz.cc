// Fuzz target: the Frequent Directions sketch with adversarial floats (the
// magnitudes the server admits: finite, |value| <= 1e9, subnormals flushed),
// weights, decays and merges, against the exact A^T A kept in double. The
// invariant is the sketch's certificate: every exact eigenvalue lies in
// [sketch - rounding, sketch + delta + rounding], and the trace is exact.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Eigenvalues>

#include "core/spectrum/frequent_directions.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace spotter {
namespace {

constexpr float kMaxAbs = 1e9f;  // the server's default --max_abs_value

float Value(fuzz::FuzzInput& in) {
  float v = in.F32();
  if (!std::isfinite(v)) return 0.0f;
  if (std::fpclassify(v) == FP_SUBNORMAL) return 0.0f;  // DecodeSketch flushes them
  return std::clamp(v, -kMaxAbs, kMaxAbs);
}

RowMatrixXf Batch(fuzz::FuzzInput& in, int k) {
  const int m = static_cast<int>(in.InRange(1, 6));
  RowMatrixXf rows(m, k);
  const int scale_exp = static_cast<int>(in.InRange(0, 12)) - 6;  // mixed magnitudes
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < k; ++j) {
      float v = Value(in);
      if (in.U8() % 4 == 0) v = static_cast<float>(v * std::pow(10.0, scale_exp));
      // What DecodeSketch admits: finite, bounded, subnormals flushed.
      if (!std::isfinite(v) || std::fpclassify(v) == FP_SUBNORMAL) v = 0.0f;
      rows(i, j) = std::clamp(v, -kMaxAbs, kMaxAbs);
    }
  }
  return rows;
}

void AddExact(Eigen::MatrixXd& g, const RowMatrixXf& rows, double w) {
  const Eigen::MatrixXd r = rows.cast<double>();
  g += w * r.transpose() * r;
}

void Run1(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const int k = static_cast<int>(in.InRange(1, 12));
  const int l = static_cast<int>(in.InRange(1, k));
  FrequentDirections fd(k, l);
  Eigen::MatrixXd exact = Eigen::MatrixXd::Zero(k, k);
  int ops = 0;
  while (!in.empty() && ops++ < 200) {
    switch (in.U8() % 8) {
      case 6: {
        const double f = in.Unit();
        fd.Scale(f);
        exact *= f;
        break;
      }
      case 7: {
        FrequentDirections other(k, l);
        const RowMatrixXf rows = Batch(in, k);
        other.Append(rows);
        fd.Merge(other);
        AddExact(exact, rows, 1.0);
        break;
      }
      default: {
        // The server's weights: samples per row, >= 1.
        const double w = in.U8() & 1 ? 1.0 : 1.0 + 4.0 * in.Unit();
        const RowMatrixXf rows = Batch(in, k);
        fd.Append(rows, w);
        // The sketch stores sqrt(w) * row in float: the exact reference is
        // of the rows the sketch was given, weighted.
        AddExact(exact, rows, w);
        break;
      }
    }
  }
  const SketchSpectrum s = fd.Spectrum();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(exact, Eigen::EigenvaluesOnly);
  std::vector<double> lambda(es.eigenvalues().data(), es.eigenvalues().data() + k);
  std::sort(lambda.rbegin(), lambda.rend());
  const double trace = exact.trace();
  // Slack for the reference's own rounding (double, k <= 12).
  const double slack = 1e-9 * std::max(trace, 0.0) + 1e-300;
  FUZZ_CHECK(std::isfinite(s.delta) && s.delta >= 0, "delta %g", s.delta);
  FUZZ_CHECK(std::isfinite(s.rounding) && s.rounding >= 0, "rounding %g", s.rounding);
  FUZZ_CHECK(std::fabs(s.trace - trace) <= 1e-9 * trace + s.rounding + 1e-300,
             "trace %.17g, exact %.17g", s.trace, trace);
  for (double e : s.eigenvalues) FUZZ_CHECK(std::isfinite(e) && e >= 0, "eigenvalue %g", e);
  for (int i = 0; i < k; ++i) {
    const double est = i < static_cast<int>(s.eigenvalues.size()) ? s.eigenvalues[i] : 0.0;
    FUZZ_CHECK(lambda[i] >= est - s.rounding - slack &&
                   lambda[i] <= est + s.delta + s.rounding + slack,
               "eigenvalue %d: exact %.17g outside [%.17g - %.3g, %.17g + %.3g + %.3g] "
               "(k %d, l %d, trace %.3g)",
               i, lambda[i], est, s.rounding, est, s.delta, s.rounding, k, l, trace);
  }
}

}  // namespace
}  // namespace spotter

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spotter::Run1(data, size);
  return 0;
}
