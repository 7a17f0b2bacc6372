// Random projections of P-dimensional gradients to the run's k dimensions.
//
// The maps are specified bit for bit in docs/PROJECTION.md so that any client
// (this C++ code, the Python package, a GPU kernel) produces the same sketch
// from the same (kind, seed, P, k).
#ifndef SPOTTER_CORE_PROJECTION_PROJECTION_H_
#define SPOTTER_CORE_PROJECTION_PROJECTION_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/types.h"

namespace spotter {

// The j-th output (j = 0, 1, ...) of the SplitMix64 generator seeded with
// `seed`: Mix64(seed + (j + 1) * 0x9E3779B97F4A7C15), wrapping mod 2^64.
uint64_t SplitMix64At(uint64_t seed, uint64_t j);

// SplitMix64's finaliser (Stafford variant 13).
uint64_t Mix64(uint64_t z);

// Where CountSketch sends input coordinate j: bucket in [0, k) and sign +-1.
struct CountSketchCell {
  uint32_t bucket;
  float sign;
};
CountSketchCell CountSketchAt(uint64_t seed, uint64_t j, uint32_t k);

// Entry (b, j) of the Gaussian map before the 1/sqrt(k) scale: a standard
// normal drawn by Box-Muller from outputs 2n and 2n+1, n = j * k + b.
double GaussianEntry(uint64_t seed, uint64_t j, uint32_t b, uint32_t k);

// A fixed linear map R^P -> R^k. Thread-safe: Apply is const and keeps no
// state, so one instance may serve many threads.
class Projection {
 public:
  virtual ~Projection() = default;

  // Creates the map. INVALID_ARGUMENT when input_dim < 1 or output_dim < 1.
  static absl::StatusOr<std::unique_ptr<Projection>> Create(ProjectionKind kind, uint64_t seed,
                                                            uint64_t input_dim,
                                                            uint32_t output_dim);

  // y = S x. Precondition: x.size() == input_dim(), y.size() == output_dim().
  // Sums in double in coordinate order and rounds once to float, so the
  // result is reproducible bit for bit.
  virtual void Apply(absl::Span<const float> x, absl::Span<float> y) const = 0;

  // Y = X S^T for a batch of row vectors. Precondition: x.cols() ==
  // input_dim(), y has x.rows() rows and output_dim() columns. Bit for bit
  // the same as Apply on each row (the same sums in the same order); the
  // hash (or Gaussian entry) of each coordinate is computed once per batch.
  virtual void ApplyRows(const Eigen::Ref<const RowMatrixXf>& x, Eigen::Ref<RowMatrixXf> y) const;

  ProjectionKind kind() const { return kind_; }
  uint64_t seed() const { return seed_; }
  uint64_t input_dim() const { return input_dim_; }
  uint32_t output_dim() const { return output_dim_; }

 protected:
  Projection(ProjectionKind kind, uint64_t seed, uint64_t input_dim, uint32_t output_dim)
      : kind_(kind), seed_(seed), input_dim_(input_dim), output_dim_(output_dim) {}

 private:
  ProjectionKind kind_;
  uint64_t seed_;
  uint64_t input_dim_;
  uint32_t output_dim_;
};

}  // namespace spotter

#endif  // SPOTTER_CORE_PROJECTION_PROJECTION_H_
