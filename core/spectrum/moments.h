// Decayed, mergeable second-moment statistics of a stream of gradient batches,
// and the per-rank accumulator that windows them.
#ifndef SPOTTER_CORE_SPECTRUM_MOMENTS_H_
#define SPOTTER_CORE_SPECTRUM_MOMENTS_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "core/spectrum/frequent_directions.h"
#include "core/types.h"

namespace spotter {

// Statistics of batches of projected gradient samples. A batch of m rows x_i
// with mean mu contributes, with weight w (1 when added, multiplied by the
// decay since):
//   centred:  the rows x_i - mu            (gradient covariance, m - 1 dof)
//   means:    the row sqrt(m) * mu         (so centred + means = uncentred)
//   traces, degrees of freedom and the unbiased |G|^2 terms below.
// All first-order sums scale by f under Scale(f); sums of squared weights by
// f^2. Merging adds everything. Not thread-safe; copyable.
//
// Memory: the centred sketch holds 2 * sketch_rows rows of dim floats, the
// means sketch 2 * min(sketch_rows, kMeanSketchRows) rows.
struct GradientMoments {
  // Rows the sketch of batch means keeps. The means enter only the uncentred
  // second moment; their sketch error is certified like any other (its delta
  // adds to the second moment's), and a small sketch keeps a rank's memory
  // close to the covariance sketch's 2 * sketch_rows * dim * 4 bytes.
  static constexpr int kMeanSketchRows = 4;

  GradientMoments(int dim, int sketch_rows);

  // Adds one batch (rows x dim, rows >= 1) with weight 1. samples_per_row: the
  // number of examples averaged into each row (>= 1).
  void AddBatch(const Eigen::Ref<const RowMatrixXf>& rows, double samples_per_row);

  // Multiplies every statistic by the decay factor f in [0, 1].
  void Scale(double f);

  // Adds `other` (same dim) into this.
  void Merge(const GradientMoments& other);

  FrequentDirections centred;
  FrequentDirections means;
  double trace_centred = 0.0;  // sum_b w_b sum_i |x_i - mu_b|^2
  double trace_raw = 0.0;      // sum_b w_b sum_i |x_i|^2
  double dof = 0.0;            // sum_b w_b (m_b - 1): covariance normaliser
  double dof_sq = 0.0;         // sum_b w_b^2 (m_b - 1): for n_eff
  double samples = 0.0;        // sum_b w_b m_b: second-moment normaliser
  double samples_sq = 0.0;     // sum_b w_b^2 m_b
  // Per-example covariance trace numerator: sum_b w_b s_b |x - mu_b|^2 (divide
  // by dof).
  double example_trace = 0.0;
  // Unbiased |G|^2: sum_b w_b (|mu_b|^2 - tr_b / (m_b (m_b - 1))) over batches
  // with m_b >= 2, and the sum of their weights.
  double mean_sq_sum = 0.0;
  double mean_sq_weight = 0.0;
  // Fourth moment of the centred rows, for the kurtosis of the sampling
  // intervals: sum_b w_b sum_i |x_i - mu_b|^4, and sum_b w_b (m_b - 1)^2 / m_b
  // (for Gaussian rows E|x_i - mu_b|^4 = ((m-1)/m)^2 ((tr S)^2 + 2 tr S^2)).
  // Both 0 in a state restored from a version-1 checkpoint: unknown.
  double norm4_centred = 0.0;
  double norm4_weight = 0.0;
  uint64_t rows = 0;     // rows added, undecayed
  uint64_t batches = 0;  // batches added, undecayed
};

// How a rank's samples are windowed.
struct WindowOptions {
  WindowKind kind = WindowKind::kExponential;
  // kExponential: per-step decay gamma in (0, 1]; effective window
  // 1 / (1 - gamma) steps (infinite for gamma = 1).
  double decay = 0.99;
  // kFixed: window length in steps (>= 1). The window is kept as tumbling
  // segments of ceil(window_steps / kFixedSegments) steps, so a snapshot
  // covers between window_steps and window_steps + one segment.
  uint64_t window_steps = 200;
  static constexpr int kFixedSegments = 4;
};

// One rank's (or stream's) windowed statistics. Not thread-safe.
class RankAccumulator {
 public:
  RankAccumulator(int dim, int sketch_rows, const WindowOptions& window);

  // Adds a batch taken at `step`. The window's clock never goes back: a step
  // before last_step() (a restarted job redoing steps) is added at
  // last_step(), undecayed, like any batch of that step.
  void Add(uint64_t step, const Eigen::Ref<const RowMatrixXf>& rows, double samples_per_row);

  // The statistics covering the window that ends at now_step (>= last_step()),
  // decayed to now_step, as separate pieces to be merged by the caller (cheap:
  // copies only).
  std::vector<GradientMoments> Snapshot(uint64_t now_step) const;

  uint64_t last_step() const { return last_step_; }
  bool empty() const { return segments_.empty(); }

 private:
  friend struct AccumulatorCodecAccess;  // core/spectrum/accumulator_codec.cc

  struct Segment {
    uint64_t index;  // kFixed: step / segment_steps_; kExponential: 0
    GradientMoments moments;
  };

  int dim_;
  int sketch_rows_;
  WindowOptions window_;
  uint64_t segment_steps_;
  uint64_t last_step_ = 0;
  std::deque<Segment> segments_;
};

// Merges pieces (possibly from many ranks) into one. Precondition: non-empty,
// all of the same dim.
GradientMoments MergeAll(std::vector<GradientMoments> pieces);

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_MOMENTS_H_
