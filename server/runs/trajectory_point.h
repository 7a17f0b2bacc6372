// How an evaluation becomes a trajectory point: the loss and learning rate
// the ranks reported since the previous evaluation, and the point itself
// (diagnostics of the merged window, phase in force, validation metric,
// divergent ranks). Stateless functions; thread-safe.
#ifndef SPOTTER_SERVER_RUNS_TRAJECTORY_POINT_H_
#define SPOTTER_SERVER_RUNS_TRAJECTORY_POINT_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "core/phase/directive.h"
#include "core/spectrum/evaluation.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// A rank's loss totals and latest values, copied under its lock.
struct RankLossSnapshot {
  uint32_t rank = 0;
  double sum = 0.0;    // cumulative loss of the uploads that carried one
  uint64_t count = 0;  // how many did
  double last_loss = 0.0;
  double last_lr = 0.0;
  uint64_t last_step = 0;
  bool any_step = false;  // the rank has applied an upload
};

// Per rank, the cumulative (sum, count) the previous evaluation used.
using LossBaselines = absl::flat_hash_map<uint32_t, std::pair<double, uint64_t>>;

struct PointTraining {
  double loss;  // NaN: no rank reported one
  double lr;    // NaN: no rank has uploaded
};

// The mean loss reported since the previous evaluation (advancing
// `baselines` to the ranks' totals); without a new one, the latest loss of
// the rank furthest ahead (lowest rank on ties). The lr is that rank's.
PointTraining TrainingSince(const std::vector<RankLossSnapshot>& ranks, LossBaselines* baselines);

// The point of an evaluation covering steps up to `step`, with the
// eigenvalues of both spectra (the history keeps a copy without them).
// Precondition: eval.merged has a value.
v1::TrajectoryPoint BuildTrajectoryPoint(uint64_t step, absl::Time now, Phase phase_in_force,
                                         const PointTraining& training, double val_metric,
                                         const RunEvaluation& eval);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_TRAJECTORY_POINT_H_
