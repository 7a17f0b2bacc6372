// Frequent Directions (Liberty 2013; Ghashami, Liberty, Phillips, Woodruff
// 2016) with exact scaling for decay, a tracked shrinkage bound and a tracked
// bound on float32 rounding.
//
// The sketch B (at most `capacity` rows of length k, float32) summarises a
// stream of rows A so that, for every unit vector x,
//     -rho <= x^T (A^T A - B^T B) x <= delta + rho,
// where delta is the sum of the shrinkage applied so far and rho bounds every
// floating-point error made on the way (both scaled by any decay since).
// Hence every eigenvalue of A^T A lies in
//     [lambda_i(B^T B) - rho, lambda_i(B^T B) + delta + rho]     (Weyl),
// with lambda_i(B^T B) = 0 beyond the rows the sketch holds. In exact
// arithmetic rho = 0 and this is the FD guarantee; delta obeys
// delta <= ||A - A_r||_F^2 / (l - r) for every r < l. The derivation of rho is
// in docs/DIAGNOSTICS.md ("Float32 rounding").
//
// Rows are appended to a row-major float buffer. When the buffer is full it is
// shrunk to `sketch_rows` rows through the eigen-decomposition of its
// capacity x capacity Gram matrix B B^T (accumulated in double from float
// panels); a k x k matrix is never formed and the shrink works in place.
#ifndef SPOTTER_CORE_SPECTRUM_FREQUENT_DIRECTIONS_H_
#define SPOTTER_CORE_SPECTRUM_FREQUENT_DIRECTIONS_H_

#include <cstdint>
#include <vector>

#include "core/types.h"

namespace spotter {

// The spectrum a sketch certifies. Every eigenvalue lambda_i of the
// summarised A^T A (i = 0, 1, ..., largest first) lies in
//   [eigenvalues[i] - rounding, eigenvalues[i] + delta + rounding]
// where eigenvalues[i] = 0 for i >= eigenvalues.size().
struct SketchSpectrum {
  std::vector<double> eigenvalues;  // of B^T B, largest first, positive only
  double delta = 0.0;               // accumulated shrinkage (exact-arithmetic FD bound)
  double rounding = 0.0;            // bound on all float32/float64 rounding, both sides
  double trace = 0.0;               // exact trace of A^T A (computed in double)
};

// Not thread-safe: one owner at a time (copyable, so a snapshot can be taken
// under the owner's lock and processed elsewhere).
class FrequentDirections {
 public:
  // dim: row length k >= 1. sketch_rows: l >= 1, the rows kept after a shrink.
  // capacity: buffer rows (> sketch_rows); 0 means 2 * sketch_rows.
  FrequentDirections(int dim, int sketch_rows, int capacity = 0);

  // Multiplies the summarised A^T A (and both error bounds) by factor >= 0:
  // the decay of an exponential window. O(1): the factor is folded in lazily.
  // factor == 0 empties the sketch.
  void Scale(double factor);

  // Appends each row of `rows` (cols == dim()) multiplied by sqrt(weight),
  // weight >= 0. The rows may each carry one float rounding (|error| <= 2^-24
  // |value| per entry) relative to the exact rows they stand for; the
  // rounding bound covers it.
  void Append(const Eigen::Ref<const RowMatrixXf>& rows, double weight = 1.0);

  // Appends one row (dim() floats) multiplied by sqrt(weight).
  void AppendRow(const float* row, double weight = 1.0);

  // Appends the sketch of `other` (same dim): afterwards this sketch bounds
  // A^T A + A_other^T A_other with delta = delta + other.delta + the
  // shrinkage of the merge itself, and likewise for the rounding bound.
  void Merge(const FrequentDirections& other);

  // The certified spectrum (see SketchSpectrum), from one eigen-decomposition
  // of the rows_used() x rows_used() Gram matrix. O(rows_used()^2 * dim()).
  SketchSpectrum Spectrum() const;

  // Spectrum().eigenvalues.
  std::vector<double> Eigenvalues() const;

  // The current sketch rows, decay folded in (rows_used() x dim()).
  RowMatrixXf Rows() const;

  // ||B||_F^2 = trace(B^T B), computed in double.
  double FrobeniusSq() const;

  // Exact trace of the summarised A^T A (sum of weight * |row|^2, decayed).
  double trace() const { return trace_; }
  // Accumulated shrinkage (the exact-arithmetic FD error bound).
  double delta() const { return delta_; }
  // Bound on the rounding accumulated by appends, shrinks and merges so far
  // (Spectrum().rounding adds the rounding of the final eigen-decomposition).
  double rounding() const { return rounding_; }

  int dim() const { return dim_; }
  int sketch_rows() const { return sketch_rows_; }
  int capacity() const { return capacity_; }
  int rows_used() const { return used_; }
  // Number of shrinks so far (for tests and benchmarks).
  int64_t shrinks() const { return shrinks_; }

 private:
  friend struct AccumulatorCodecAccess;  // core/spectrum/accumulator_codec.cc

  // Shrinks the full buffer to sketch_rows_ rows.
  void Shrink();
  // Copies rows * sqrt(weight) into the buffer, shrinking when it is full.
  // Returns the sum of the squared row norms of `rows` (unweighted, in
  // double); leaves trace_ and rounding_ to the caller.
  double AppendRows(const Eigen::Ref<const RowMatrixXf>& rows, double weight);
  // The rounding bound of float underflow in storing `rows` rows of total
  // weighted squared norm `mass` (frequent_directions.cc, kTiny).
  double AppendUnderflow(double mass, Eigen::Index rows) const;
  // Folds scale_ into the buffer so that scale_ == 1.
  void Normalize();

  int dim_;
  int sketch_rows_;
  int capacity_;
  int used_ = 0;
  // The summarised sketch is sqrt(scale_) * buf_.topRows(used_).
  RowMatrixXf buf_;
  double scale_ = 1.0;
  double trace_ = 0.0;
  double delta_ = 0.0;
  double rounding_ = 0.0;
  int64_t shrinks_ = 0;
};

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_FREQUENT_DIRECTIONS_H_
