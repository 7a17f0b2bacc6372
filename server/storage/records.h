// spotterd's persisted records: how each is framed into a Store row, and how
// the whole state is read back and checked at startup.
//
// Every stored value is [version byte][payload][CRC-32C], the CRC covering
// the row's table and key as well as the payload, so flipped bits, a torn
// value or a value moved to another key are detected. LoadState also checks
// the invariants the server maintains across tables (every run has its
// records, directive versions run 1..n, counts match, upload logs follow
// their checkpoint), so torn or damaged state is reported at startup with the
// table, run and key, never silently used.
#ifndef SPOTTER_SERVER_STORAGE_RECORDS_H_
#define SPOTTER_SERVER_STORAGE_RECORDS_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/storage/spotter_state.pb.h"
#include "server/storage/store.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// The framed value of row (table, run, k1, k2) holding `payload`.
std::string FrameRecord(Table table, std::string_view run, uint64_t k1, uint64_t k2,
                        std::string_view payload);
// The payload of a stored row. DATA_LOSS naming the row when its frame or
// checksum is wrong.
absl::StatusOr<std::string_view> UnframeRecord(const StoredRow& row);

// Put ops for each record, framed.
StoreOp PutRunRecord(const state::RunRecord& r);
StoreOp PutControllerRecord(const std::string& run, const state::ControllerRecord& r);
StoreOp PutRankRecord(const std::string& run, const state::RankRecord& r);
StoreOp PutCheckpointRecord(const std::string& run, uint32_t rank,
                            const state::CheckpointRecord& r);
StoreOp PutUploadRecord(const std::string& run, uint32_t rank, const v1::SketchBatch& b);
StoreOp PutPointRecord(const std::string& run, uint64_t index, const v1::TrajectoryPoint& p);
StoreOp PutTransitionRecord(const std::string& run, uint64_t index, const v1::PhaseTransition& t);
StoreOp PutDirectiveRecord(const std::string& run, const v1::Directive& d);

// Decodes a point row read back with Store::Read (table points). DATA_LOSS
// naming the row when it does not decode.
absl::Status ParsePointRecord(const StoredRow& row, v1::TrajectoryPoint* p);

struct LoadedRank {
  bool has_record = false;
  state::RankRecord record;
  bool has_checkpoint = false;
  state::CheckpointRecord checkpoint;
  // Uploads applied after the checkpoint (or since the start), seq ascending.
  std::vector<v1::SketchBatch> uploads;
};

struct LoadedRun {
  state::RunRecord run;
  state::ControllerRecord controller;
  // The newest points (at most LoadState's point_window), index order, of
  // points_total stored.
  std::vector<v1::TrajectoryPoint> points;
  uint64_t points_total = 0;
  std::vector<v1::PhaseTransition> transitions;  // index order
  std::vector<v1::Directive> directives;         // versions 1..n
  std::map<uint32_t, LoadedRank> ranks;
};

// Reads and checks every row of `store`. Runs come back in creation order.
// DATA_LOSS with the table, run and key of the first damaged or inconsistent
// record.
// Of each run's points, only the newest `point_window` are returned.
absl::StatusOr<std::vector<LoadedRun>> LoadState(
    Store& store, size_t point_window = std::numeric_limits<size_t>::max());

}  // namespace spotter

#endif  // SPOTTER_SERVER_STORAGE_RECORDS_H_
