// Frequent Directions (Liberty 2013; Ghashami, Liberty, Phillips, Woodruff
// 2016) with exact scaling for decay and a tracked error bound.
//
// The sketch B (at most `capacity` rows of length k) summarises a stream of
// rows A so that, for every unit vector x,
//     0 <= x^T (A^T A - B^T B) x <= delta(),
// where delta() is the sum of the shrinkage applied so far (scaled by any
// decay since). Hence every eigenvalue of A^T A lies in
// [lambda_i(B^T B), lambda_i(B^T B) + delta()] (Weyl).
//
// Rows are appended to a row-major float buffer. When the buffer is full it is
// shrunk to `sketch_rows` rows through the eigen-decomposition of its
// capacity x capacity Gram matrix B B^T; a k x k matrix is never formed.
#ifndef SPOTTER_CORE_SPECTRUM_FREQUENT_DIRECTIONS_H_
#define SPOTTER_CORE_SPECTRUM_FREQUENT_DIRECTIONS_H_

#include <cstdint>
#include <vector>

#include "core/types.h"

namespace spotter {

// Not thread-safe: one owner at a time (copyable, so a snapshot can be taken
// under the owner's lock and processed elsewhere).
class FrequentDirections {
 public:
  // dim: row length k >= 1. sketch_rows: l >= 1, the rows kept after a shrink.
  // capacity: buffer rows (> sketch_rows); 0 means 2 * sketch_rows.
  FrequentDirections(int dim, int sketch_rows, int capacity = 0);

  // Multiplies the summarised A^T A (and the error bound) by factor >= 0: the
  // decay of an exponential window. O(1): the factor is folded in lazily.
  void Scale(double factor);

  // Appends each row of `rows` (cols == dim()) multiplied by sqrt(weight).
  void Append(const Eigen::Ref<const RowMatrixXf>& rows, double weight = 1.0);

  // Appends one row (size dim()) multiplied by sqrt(weight).
  void AppendRow(const float* row, double weight = 1.0);

  // Appends the sketch of `other` (same dim): afterwards this sketch bounds
  // A^T A + A_other^T A_other with delta() = delta + other.delta + the
  // shrinkage of the merge itself.
  void Merge(const FrequentDirections& other);

  // Eigenvalues of B^T B, largest first (at most rows_used() of them, zeros
  // dropped), computed from the rows_used() x rows_used() Gram matrix.
  std::vector<double> Eigenvalues() const;

  // The current sketch rows, decay folded in (rows_used() x dim()).
  RowMatrixXf Rows() const;

  // ||B||_F^2 = trace(B^T B).
  double FrobeniusSq() const;

  // Certified additive error bound of every eigenvalue (see above).
  double delta() const { return delta_; }

  int dim() const { return dim_; }
  int sketch_rows() const { return sketch_rows_; }
  int capacity() const { return capacity_; }
  int rows_used() const { return used_; }
  // Number of shrinks so far (for tests and benchmarks).
  int64_t shrinks() const { return shrinks_; }

 private:
  // Shrinks the full buffer to sketch_rows_ rows.
  void Shrink();
  // Folds scale_ into the buffer so that scale_ == 1.
  void Normalize();

  int dim_;
  int sketch_rows_;
  int capacity_;
  int used_ = 0;
  // The summarised sketch is sqrt(scale_) * buf_.topRows(used_).
  RowMatrixXf buf_;
  double scale_ = 1.0;
  double delta_ = 0.0;
  int64_t shrinks_ = 0;
};

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_FREQUENT_DIRECTIONS_H_
