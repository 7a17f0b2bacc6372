#include "core/spectrum/moments.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace spotter {

GradientMoments::GradientMoments(int dim, int sketch_rows)
    : centred(dim, sketch_rows), means(dim, std::min(sketch_rows, kMeanSketchRows)) {}

namespace {

// sum_j v[j]^2 in double over n floats (float products are exact in double),
// with four independent accumulators so the adds pipeline.
double SquaredNorm(const float* v, Eigen::Index n) {
  double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
  Eigen::Index j = 0;
  for (; j + 3 < n; j += 4) {
    a0 += static_cast<double>(v[j]) * v[j];
    a1 += static_cast<double>(v[j + 1]) * v[j + 1];
    a2 += static_cast<double>(v[j + 2]) * v[j + 2];
    a3 += static_cast<double>(v[j + 3]) * v[j + 3];
  }
  for (; j < n; ++j) a0 += static_cast<double>(v[j]) * v[j];
  return (a0 + a1) + (a2 + a3);
}

// out = float(x - mean) computed in double; returns sum (x - mean)^2 of the
// double values.
double CentreRow(const float* x, const double* mean, Eigen::Index n, float* out) {
  double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
  Eigen::Index j = 0;
  for (; j + 3 < n; j += 4) {
    const double v0 = static_cast<double>(x[j]) - mean[j];
    const double v1 = static_cast<double>(x[j + 1]) - mean[j + 1];
    const double v2 = static_cast<double>(x[j + 2]) - mean[j + 2];
    const double v3 = static_cast<double>(x[j + 3]) - mean[j + 3];
    a0 += v0 * v0;
    a1 += v1 * v1;
    a2 += v2 * v2;
    a3 += v3 * v3;
    out[j] = static_cast<float>(v0);
    out[j + 1] = static_cast<float>(v1);
    out[j + 2] = static_cast<float>(v2);
    out[j + 3] = static_cast<float>(v3);
  }
  for (; j < n; ++j) {
    const double v = static_cast<double>(x[j]) - mean[j];
    a0 += v * v;
    out[j] = static_cast<float>(v);
  }
  return (a0 + a1) + (a2 + a3);
}

}  // namespace

void GradientMoments::AddBatch(const Eigen::Ref<const RowMatrixXf>& x,
                               double samples_per_row) {
  const Eigen::Index m = x.rows();
  const Eigen::Index k = x.cols();
  if (m == 0) return;
  // Mean and raw trace, accumulated in double.
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(k);
  double raw = 0.0;
  for (Eigen::Index i = 0; i < m; ++i) {
    const float* r = x.row(i).data();
    double* mu = mean.data();
    for (Eigen::Index j = 0; j < k; ++j) mu[j] += r[j];
    raw += SquaredNorm(r, k);
  }
  mean /= static_cast<double>(m);
  const double mean_sq = mean.squaredNorm();
  // Centre in double and round once to float (the one input rounding the FD
  // rounding bound allows); the centred trace is taken from the double values
  // (computing it as sum |x|^2 - m |mu|^2 would cancel catastrophically).
  double centred_tr = 0.0;
  if (m >= 2) {
    RowMatrixXf c(m, k);
    const double md = static_cast<double>(m);
    for (Eigen::Index i = 0; i < m; ++i) {
      const double sq = CentreRow(x.row(i).data(), mean.data(), k, c.row(i).data());
      centred_tr += sq;
      norm4_centred += sq * sq;
    }
    norm4_weight += (md - 1.0) * (md - 1.0) / md;
    centred.Append(c);
    mean_sq_sum += mean_sq - centred_tr / (md * (md - 1.0));
    mean_sq_weight += 1.0;
  }
  const Eigen::RowVectorXf scaled_mean =
      (mean * std::sqrt(static_cast<double>(m))).cast<float>().transpose();
  means.AppendRow(scaled_mean.data());

  trace_centred += centred_tr;
  trace_raw += raw;
  dof += static_cast<double>(m - 1);
  dof_sq += static_cast<double>(m - 1);
  samples += static_cast<double>(m);
  samples_sq += static_cast<double>(m);
  example_trace += samples_per_row * centred_tr;
  rows += static_cast<uint64_t>(m);
  batches += 1;
}

void GradientMoments::Scale(double f) {
  centred.Scale(f);
  means.Scale(f);
  trace_centred *= f;
  trace_raw *= f;
  dof *= f;
  dof_sq *= f * f;
  samples *= f;
  samples_sq *= f * f;
  example_trace *= f;
  mean_sq_sum *= f;
  mean_sq_weight *= f;
  norm4_centred *= f;
  norm4_weight *= f;
}

void GradientMoments::Merge(const GradientMoments& o) {
  centred.Merge(o.centred);
  means.Merge(o.means);
  trace_centred += o.trace_centred;
  trace_raw += o.trace_raw;
  dof += o.dof;
  dof_sq += o.dof_sq;
  samples += o.samples;
  samples_sq += o.samples_sq;
  example_trace += o.example_trace;
  mean_sq_sum += o.mean_sq_sum;
  mean_sq_weight += o.mean_sq_weight;
  norm4_centred += o.norm4_centred;
  norm4_weight += o.norm4_weight;
  rows += o.rows;
  batches += o.batches;
}

RankAccumulator::RankAccumulator(int dim, int sketch_rows,
                                 const WindowOptions& window)
    : dim_(dim),
      sketch_rows_(sketch_rows),
      window_(window),
      segment_steps_(std::max<uint64_t>(
          1, (window.window_steps + WindowOptions::kFixedSegments - 1) /
                 WindowOptions::kFixedSegments)) {}

void RankAccumulator::Add(uint64_t step, const Eigen::Ref<const RowMatrixXf>& rows,
                          double samples_per_row) {
  if (!segments_.empty()) step = std::max(step, last_step_);
  if (window_.kind == WindowKind::kExponential) {
    if (segments_.empty()) {
      segments_.push_back({0, GradientMoments(dim_, sketch_rows_)});
    } else if (step > last_step_ && window_.decay < 1.0) {
      segments_.back().moments.Scale(
          std::pow(window_.decay, static_cast<double>(step - last_step_)));
    }
  } else {
    const uint64_t index = step / segment_steps_;
    if (segments_.empty() || segments_.back().index != index) {
      segments_.push_back({index, GradientMoments(dim_, sketch_rows_)});
    }
    // Drop segments that lie entirely before the window ending at `step`.
    while (!segments_.empty() &&
           (segments_.front().index + 1) * segment_steps_ + window_.window_steps <= step) {
      segments_.pop_front();
    }
  }
  last_step_ = step;
  segments_.back().moments.AddBatch(rows, samples_per_row);
}

std::vector<GradientMoments> RankAccumulator::Snapshot(uint64_t now_step) const {
  std::vector<GradientMoments> out;
  if (segments_.empty()) return out;
  if (window_.kind == WindowKind::kExponential) {
    out.push_back(segments_.back().moments);
    if (now_step > last_step_ && window_.decay < 1.0) {
      out.back().Scale(std::pow(window_.decay, static_cast<double>(now_step - last_step_)));
    }
    return out;
  }
  for (const Segment& s : segments_) {
    if ((s.index + 1) * segment_steps_ + window_.window_steps > now_step) {
      out.push_back(s.moments);
    }
  }
  return out;
}

GradientMoments MergeAll(std::vector<GradientMoments> pieces) {
  assert(!pieces.empty());
  GradientMoments out = std::move(pieces.front());
  for (size_t i = 1; i < pieces.size(); ++i) out.Merge(pieces[i]);
  return out;
}

}  // namespace spotter
