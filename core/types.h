// Value types shared by every part of core/. No gRPC, no protobuf, no I/O.
#ifndef SPOTTER_CORE_TYPES_H_
#define SPOTTER_CORE_TYPES_H_

#include <cstdint>

#include <Eigen/Core>

namespace spotter {

// Row-major float matrix: one gradient sample (or sketch row) per row, the
// layout SketchBatch.data arrives in.
using RowMatrixXf =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixXd =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// How a trainer maps a P-dimensional gradient to k dimensions
// (docs/PROJECTION.md).
enum class ProjectionKind {
  kCountSketch,  // one +-1 per input coordinate, in a hashed bucket
  kGaussian,     // dense N(0, 1/k) entries; the reference map
  kIdentity,     // no projection: the rows are the gradients (P == k)
};

// How a run forgets old gradient samples (docs/DIAGNOSTICS.md).
enum class WindowKind {
  kExponential,  // covariance decays by gamma per step
  kFixed,        // covariance of the last window_steps steps
};

}  // namespace spotter

#endif  // SPOTTER_CORE_TYPES_H_
