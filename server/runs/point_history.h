// A run's trajectory points with bounded memory, whatever the run's length.
//
// The newest points (a window of `window` points, at least) stay in memory;
// older ones are read back from the store, where every point is written
// when it is made (server/storage/records.h, table points). A server whose
// store keeps nothing (NullStore) cannot read them back: it keeps a bounded
// archive instead, compacted by min/max downsampling (below), so its history
// loses resolution but never grows without bound.
//
// Reads (GetTrajectory, WatchRun's history) copy a HistorySnapshot under the
// run's lock and read the store outside it, through a PointReader.
//
// Downsampling (GetTrajectoryRequest.max_points, WatchRun's history, the
// archive): the index range is cut into B equal buckets and each bucket
// keeps its points of lowest and highest effective rank (covariance r90), in
// step order; the range's first and last points are always kept. A plot of
// the result keeps every excursion of the rank, which is what an operator
// reads a trajectory for; the other series ride along at the same steps.
#ifndef SPOTTER_SERVER_RUNS_POINT_HISTORY_H_
#define SPOTTER_SERVER_RUNS_POINT_HISTORY_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/storage/store.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// Points kept in memory per run by default (spotterd --points_in_memory).
inline constexpr size_t kDefaultPointWindow = 256;
// The most points a store-less server archives per run before compacting.
inline constexpr size_t kArchiveCapacity = 4096;

// Keeps, of `points` (in step order), at most `max_points` by min/max
// downsampling (see above). max_points >= 4; fewer points pass unchanged.
std::vector<v1::TrajectoryPoint> Downsample(std::vector<v1::TrajectoryPoint> points,
                                            size_t max_points);

// What a reader needs, copied under the run's lock.
struct HistorySnapshot {
  std::string run;
  Store* store = nullptr;  // null: the archive stands in for the store
  // Points [0, base) are in the store (or summarised by `archive`); the
  // window holds [base, base + window.size()). Only published points.
  uint64_t base = 0;
  std::vector<v1::TrajectoryPoint> window;
  // The points the snapshot covers: indices [0, published).
  uint64_t published = 0;
  std::vector<v1::TrajectoryPoint> archive;
  bool archive_compacted = false;
};

// Reads a snapshot's points by position: with a store, position = point
// index; without one, positions run over the archive, then the window.
// Not thread-safe; use one per request.
class PointReader {
 public:
  explicit PointReader(HistorySnapshot snapshot);

  uint64_t size() const;
  // The points read cover indices [0, published()).
  uint64_t published() const { return s_.published; }
  // True when the points were downsampled before the reader saw them.
  bool lossy() const { return s_.store == nullptr && s_.archive_compacted; }
  // Visits positions [begin, end) in order. ABORTED when the store no longer
  // holds them (the run was deleted meanwhile); DATA_LOSS for a damaged row.
  absl::Status Read(uint64_t begin, uint64_t end,
                    const std::function<void(v1::TrajectoryPoint&&)>& visit);
  // The first position whose step is >= `step` (size() when none).
  absl::StatusOr<uint64_t> LowerBound(uint64_t step);

 private:
  absl::StatusOr<uint64_t> StepAt(uint64_t position);
  const HistorySnapshot s_;
};

// Positions [begin, end) of `reader`, min/max downsampled to at most
// max_points (>= 4) in one pass with memory O(max_points).
absl::StatusOr<std::vector<v1::TrajectoryPoint>> ReadDownsampled(PointReader& reader,
                                                                  uint64_t begin, uint64_t end,
                                                                  size_t max_points);

// The in-memory part, kept by the run under its lock.
class PointHistory {
 public:
  // `store`: where points beyond the window are read back from; null when
  // the store keeps nothing (then old points go to the archive).
  PointHistory(std::string run, Store* store, size_t window)
      : run_(std::move(run)), store_(store), window_(window < 1 ? 1 : window) {}

  // A restored run: `total` points stored, of which `tail` are the newest.
  void Restore(uint64_t total, std::vector<v1::TrajectoryPoint> tail);
  void Append(v1::TrajectoryPoint p) { points_.push_back(std::move(p)); }
  // Points made so far.
  uint64_t size() const { return base_ + points_.size(); }
  // The index of the oldest point in memory.
  uint64_t first() const { return base_; }
  bool empty() const { return size() == 0; }
  const v1::TrajectoryPoint& back() const { return points_.back(); }
  // Point `index`, which must still be in memory: index >= size() - window.
  const v1::TrajectoryPoint& at(uint64_t index) const { return points_[index - base_]; }
  // Drops the oldest points beyond the window, of those below `durable`
  // (points the store holds; for a store-less run, those published).
  void Trim(uint64_t durable);
  // The first `published` points, for a reader.
  HistorySnapshot Snapshot(uint64_t published) const;
  // Points held in memory, window and archive (tests, metrics).
  size_t in_memory() const { return points_.size() + archive_.size(); }

 private:
  const std::string run_;
  Store* const store_;
  const size_t window_;
  uint64_t base_ = 0;
  std::deque<v1::TrajectoryPoint> points_;
  std::vector<v1::TrajectoryPoint> archive_;
  bool archive_compacted_ = false;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_POINT_HISTORY_H_
