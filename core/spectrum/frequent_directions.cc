#include "core/spectrum/frequent_directions.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include <Eigen/Eigenvalues>

namespace spotter {
namespace {

// Below this, the lazily kept scale is folded into the buffer so that newly
// appended rows (stored divided by sqrt(scale)) stay far from float overflow.
constexpr double kMinScale = 1e-12;

// Eigen-decomposes the lower triangle of a symmetric Gram matrix in double.
Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> SolveGram(
    const Eigen::Ref<const RowMatrixXf>& rows, bool vectors) {
  Eigen::MatrixXf g = Eigen::MatrixXf::Zero(rows.rows(), rows.rows());
  g.selfadjointView<Eigen::Lower>().rankUpdate(rows);
  return Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(
      g.cast<double>(), vectors ? Eigen::ComputeEigenvectors : Eigen::EigenvaluesOnly);
}

}  // namespace

FrequentDirections::FrequentDirections(int dim, int sketch_rows, int capacity)
    : dim_(dim),
      sketch_rows_(sketch_rows),
      capacity_(capacity > sketch_rows ? capacity : 2 * sketch_rows),
      buf_(RowMatrixXf::Zero(capacity_, dim)) {
  assert(dim >= 1 && sketch_rows >= 1);
}

void FrequentDirections::Scale(double factor) {
  assert(factor >= 0.0);
  if (factor == 0.0) {
    used_ = 0;
    scale_ = 1.0;
    delta_ = 0.0;
    return;
  }
  scale_ *= factor;
  delta_ *= factor;
  if (scale_ < kMinScale) Normalize();
}

void FrequentDirections::Normalize() {
  if (scale_ == 1.0) return;
  buf_.topRows(used_) *= static_cast<float>(std::sqrt(scale_));
  scale_ = 1.0;
}

void FrequentDirections::AppendRow(const float* row, double weight) {
  if (used_ == capacity_) Shrink();
  const float s = static_cast<float>(std::sqrt(weight / scale_));
  buf_.row(used_++) = Eigen::Map<const Eigen::RowVectorXf>(row, dim_) * s;
}

void FrequentDirections::Append(const Eigen::Ref<const RowMatrixXf>& rows,
                                double weight) {
  assert(rows.cols() == dim_);
  Eigen::Index done = 0;
  while (done < rows.rows()) {
    if (used_ == capacity_) Shrink();
    const Eigen::Index n = std::min<Eigen::Index>(capacity_ - used_, rows.rows() - done);
    // The scale may have changed in Shrink; recompute per chunk.
    const float sc = static_cast<float>(std::sqrt(weight / scale_));
    buf_.middleRows(used_, n) = rows.middleRows(done, n) * sc;
    used_ += static_cast<int>(n);
    done += n;
  }
}

void FrequentDirections::Merge(const FrequentDirections& other) {
  assert(other.dim_ == dim_);
  if (other.used_ > 0) Append(other.buf_.topRows(other.used_), other.scale_);
  delta_ += other.delta_;
}

void FrequentDirections::Shrink() {
  const int l = sketch_rows_;
  auto es = SolveGram(buf_.topRows(used_), /*vectors=*/true);
  const Eigen::VectorXd& ev = es.eigenvalues();  // ascending
  const int n = used_;
  // lambda_desc[i] = ev[n - 1 - i]; the shrinkage is the (l+1)-th largest.
  const double shrink = l < n ? std::max(ev[n - 1 - l], 0.0) : 0.0;
  const int keep = std::min(l, n);
  Eigen::MatrixXf w(keep, n);
  for (int i = 0; i < keep; ++i) {
    const double lambda = ev[n - 1 - i];
    const double s = lambda > shrink ? std::sqrt((lambda - shrink) / lambda) : 0.0;
    w.row(i) = (es.eigenvectors().col(n - 1 - i) * s).cast<float>().transpose();
  }
  RowMatrixXf next = w * buf_.topRows(n);
  buf_.topRows(keep) = next;
  used_ = keep;
  delta_ += shrink * scale_;
  ++shrinks_;
}

std::vector<double> FrequentDirections::Eigenvalues() const {
  std::vector<double> out;
  if (used_ == 0) return out;
  auto es = SolveGram(buf_.topRows(used_), /*vectors=*/false);
  out.reserve(used_);
  for (int i = used_ - 1; i >= 0; --i) {
    const double v = es.eigenvalues()[i] * scale_;
    if (v > 0.0) out.push_back(v);
  }
  return out;
}

RowMatrixXf FrequentDirections::Rows() const {
  return buf_.topRows(used_) * static_cast<float>(std::sqrt(scale_));
}

double FrequentDirections::FrobeniusSq() const {
  double sum = 0.0;
  for (int i = 0; i < used_; ++i) {
    const float* r = buf_.row(i).data();
    for (int j = 0; j < dim_; ++j) sum += static_cast<double>(r[j]) * r[j];
  }
  return sum * scale_;
}

}  // namespace spotter
