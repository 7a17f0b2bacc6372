#include "server/storage/records.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <iterator>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "core/util/crc32c.h"

namespace spotter {
namespace {

constexpr uint8_t kFrameVersion = 1;

uint32_t FrameCrc(Table table, std::string_view run, uint64_t k1, uint64_t k2,
                  std::string_view versioned_payload) {
  char key[1 + 16];
  key[0] = static_cast<char>(table);
  std::memcpy(key + 1, &k1, 8);
  std::memcpy(key + 9, &k2, 8);
  uint32_t crc = Crc32c(std::string_view(key, sizeof key));
  crc = Crc32c(run, crc);
  return Crc32c(versioned_payload, crc);
}

std::string RowName(const StoredRow& row) {
  return absl::StrFormat("table %s, run '%s', key (%d, %d)", TableName(row.table), row.run, row.k1,
                         row.k2);
}

absl::Status Damaged(const StoredRow& row, const std::string& what) {
  return absl::DataLossError(absl::StrFormat(
      "state damaged: %s: %s; restore the state file from a backup, or move it aside to "
      "start with empty state",
      RowName(row), what));
}

absl::Status Inconsistent(const std::string& run, const std::string& what) {
  return absl::DataLossError(absl::StrFormat(
      "state inconsistent: run '%s': %s; restore the state file from a backup, or move it "
      "aside to start with empty state",
      run, what));
}

template <typename Message>
StoreOp PutMessage(Table t, const std::string& run, uint64_t k1, uint64_t k2, const Message& m) {
  std::string payload;
  m.SerializeToString(&payload);
  return StoreOp::Put(t, run, k1, k2, FrameRecord(t, run, k1, k2, payload));
}

template <typename Message>
absl::Status Parse(const StoredRow& row, Message* m) {
  absl::StatusOr<std::string_view> payload = UnframeRecord(row);
  if (!payload.ok()) return payload.status();
  if (!m->ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
    return Damaged(row, absl::StrFormat("not a valid %s", m->GetTypeName()));
  }
  return absl::OkStatus();
}

struct Building {
  bool has_run = false;
  bool has_controller = false;
  LoadedRun run;
  // Points are checked as the scan streams them (index order) and only the
  // newest `point_window` kept: a run's history can be far larger than
  // memory. The first gap or step out of order is reported after the count.
  std::deque<v1::TrajectoryPoint> points;
  uint64_t points_seen = 0;
  uint64_t last_step = 0;
  std::string points_problem;
  std::map<uint64_t, v1::PhaseTransition> transitions;
};

}  // namespace

std::string FrameRecord(Table table, std::string_view run, uint64_t k1, uint64_t k2,
                        std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 5);
  out.push_back(static_cast<char>(kFrameVersion));
  out.append(payload);
  const uint32_t crc = FrameCrc(table, run, k1, k2, out);
  out.append(reinterpret_cast<const char*>(&crc), 4);
  return out;
}

absl::StatusOr<std::string_view> UnframeRecord(const StoredRow& row) {
  const std::string& v = row.value;
  if (v.size() < 5) {
    return Damaged(row, absl::StrFormat("value of %d bytes is shorter than its frame", v.size()));
  }
  if (static_cast<uint8_t>(v[0]) != kFrameVersion) {
    return Damaged(row, absl::StrFormat("record frame version %d, expected %d",
                                        static_cast<uint8_t>(v[0]), kFrameVersion));
  }
  uint32_t stored;
  std::memcpy(&stored, v.data() + v.size() - 4, 4);
  const std::string_view body(v.data(), v.size() - 4);
  const uint32_t computed = FrameCrc(row.table, row.run, row.k1, row.k2, body);
  if (stored != computed) {
    return Damaged(row, absl::StrFormat("checksum mismatch (stored 0x%08x, computed 0x%08x)",
                                        stored, computed));
  }
  return body.substr(1);
}

StoreOp PutRunRecord(const state::RunRecord& r) {
  return PutMessage(Table::kRuns, r.name(), 0, 0, r);
}
StoreOp PutControllerRecord(const std::string& run, const state::ControllerRecord& r) {
  return PutMessage(Table::kControllers, run, 0, 0, r);
}
StoreOp PutRankRecord(const std::string& run, const state::RankRecord& r) {
  return PutMessage(Table::kRanks, run, r.rank(), 0, r);
}
StoreOp PutCheckpointRecord(const std::string& run, uint32_t rank,
                            const state::CheckpointRecord& r) {
  return PutMessage(Table::kCheckpoints, run, rank, 0, r);
}
StoreOp PutUploadRecord(const std::string& run, uint32_t rank, const v1::SketchBatch& b) {
  return PutMessage(Table::kUploads, run, rank, b.seq(), b);
}
StoreOp PutPointRecord(const std::string& run, uint64_t index, const v1::TrajectoryPoint& p) {
  return PutMessage(Table::kPoints, run, 0, index, p);
}
StoreOp PutTransitionRecord(const std::string& run, uint64_t index, const v1::PhaseTransition& t) {
  return PutMessage(Table::kTransitions, run, 0, index, t);
}
StoreOp PutDirectiveRecord(const std::string& run, const v1::Directive& d) {
  return PutMessage(Table::kDirectives, run, 0, d.version(), d);
}

absl::Status ParsePointRecord(const StoredRow& row, v1::TrajectoryPoint* p) {
  return Parse(row, p);
}

absl::StatusOr<std::vector<LoadedRun>> LoadState(Store& store, size_t point_window) {
  std::map<std::string, Building> runs;
  absl::Status scanned = store.Scan([&](StoredRow&& row) -> absl::Status {
    Building& b = runs[row.run];
    LoadedRun& r = b.run;
    switch (row.table) {
      case Table::kRuns: {
        if (row.k1 != 0 || row.k2 != 0) return Damaged(row, "unexpected key");
        absl::Status s = Parse(row, &r.run);
        if (!s.ok()) return s;
        if (r.run.name() != row.run) {
          return Damaged(row, absl::StrFormat("record names run '%s'", r.run.name()));
        }
        b.has_run = true;
        return absl::OkStatus();
      }
      case Table::kControllers: {
        if (row.k1 != 0 || row.k2 != 0) return Damaged(row, "unexpected key");
        b.has_controller = true;
        return Parse(row, &r.controller);
      }
      case Table::kRanks: {
        LoadedRank& rank = r.ranks[static_cast<uint32_t>(row.k1)];
        absl::Status s = Parse(row, &rank.record);
        if (!s.ok()) return s;
        if (row.k1 > UINT32_MAX || rank.record.rank() != row.k1 || row.k2 != 0) {
          return Damaged(row, absl::StrFormat("record of rank %d", rank.record.rank()));
        }
        rank.has_record = true;
        return absl::OkStatus();
      }
      case Table::kCheckpoints: {
        if (row.k1 > UINT32_MAX || row.k2 != 0) return Damaged(row, "unexpected key");
        LoadedRank& rank = r.ranks[static_cast<uint32_t>(row.k1)];
        rank.has_checkpoint = true;
        return Parse(row, &rank.checkpoint);
      }
      case Table::kUploads: {
        if (row.k1 > UINT32_MAX) return Damaged(row, "unexpected key");
        LoadedRank& rank = r.ranks[static_cast<uint32_t>(row.k1)];
        v1::SketchBatch batch;
        absl::Status s = Parse(row, &batch);
        if (!s.ok()) return s;
        if (batch.seq() != row.k2) {
          return Damaged(row, absl::StrFormat("upload with seq %d", batch.seq()));
        }
        rank.uploads.push_back(std::move(batch));  // the scan is in seq order
        return absl::OkStatus();
      }
      case Table::kPoints: {
        v1::TrajectoryPoint p;
        absl::Status s = Parse(row, &p);
        if (!s.ok()) return s;
        if (b.points_problem.empty()) {
          if (row.k2 != b.points_seen) {
            b.points_problem = absl::StrFormat("point %d is missing", b.points_seen);
          } else if (b.points_seen > 0 && p.step() <= b.last_step) {
            b.points_problem = absl::StrFormat("point %d at step %d after step %d", row.k2,
                                               p.step(), b.last_step);
          }
        }
        ++b.points_seen;
        b.last_step = p.step();
        b.points.push_back(std::move(p));
        if (b.points.size() > point_window) b.points.pop_front();
        return absl::OkStatus();
      }
      case Table::kTransitions: {
        v1::PhaseTransition t;
        absl::Status s = Parse(row, &t);
        if (!s.ok()) return s;
        b.transitions[row.k2] = std::move(t);
        return absl::OkStatus();
      }
      case Table::kDirectives: {
        v1::Directive d;
        absl::Status s = Parse(row, &d);
        if (!s.ok()) return s;
        if (d.version() != row.k2) {
          return Damaged(row, absl::StrFormat("directive of version %d", d.version()));
        }
        r.directives.push_back(std::move(d));  // the scan is in version order
        return absl::OkStatus();
      }
    }
    return Damaged(row, "unknown table");
  });
  if (!scanned.ok()) return scanned;

  std::vector<LoadedRun> out;
  out.reserve(runs.size());
  for (auto& [name, b] : runs) {
    LoadedRun& r = b.run;
    if (!b.has_run) return Inconsistent(name, "rows without the run's record in table runs");
    if (!b.has_controller) return Inconsistent(name, "no record in table controllers");
    const state::ControllerRecord& c = r.controller;
    if (b.points_seen != c.points() || b.transitions.size() != c.transitions() ||
        r.directives.size() != c.directives()) {
      return Inconsistent(
          name, absl::StrFormat("%d points, %d transitions, %d directives stored; the run's "
                                "record counts %d, %d, %d",
                                b.points_seen, b.transitions.size(), r.directives.size(),
                                c.points(), c.transitions(), c.directives()));
    }
    if (!b.points_problem.empty()) return Inconsistent(name, b.points_problem);
    r.points_total = b.points_seen;
    r.points.assign(std::make_move_iterator(b.points.begin()),
                    std::make_move_iterator(b.points.end()));
    uint64_t i = 0;
    for (auto& [index, t] : b.transitions) {
      if (index != i++) {
        return Inconsistent(name, absl::StrFormat("transition %d is missing", i - 1));
      }
      r.transitions.push_back(std::move(t));
    }
    for (size_t v = 0; v < r.directives.size(); ++v) {
      if (r.directives[v].version() != v + 1) {
        return Inconsistent(name, absl::StrFormat("directive version %d is missing", v + 1));
      }
    }
    if (r.directives.empty()) return Inconsistent(name, "no directives (every run has one)");
    const uint32_t world = r.run.config().world_size();
    for (auto& [rank, lr] : r.ranks) {
      if (rank >= world) {
        return Inconsistent(name,
                            absl::StrFormat("rows of rank %d; world_size is %d", rank, world));
      }
      if (!lr.has_record) {
        return Inconsistent(name, absl::StrFormat("rank %d has a sketch but no record", rank));
      }
      const uint64_t after = lr.has_checkpoint ? lr.checkpoint.seq() : 0;
      if (lr.has_checkpoint && lr.checkpoint.seq() > lr.record.last_seq()) {
        return Inconsistent(
            name, absl::StrFormat("rank %d: checkpoint after seq %d, record at seq %d", rank,
                                  lr.checkpoint.seq(), lr.record.last_seq()));
      }
      for (const v1::SketchBatch& u : lr.uploads) {
        if (u.seq() <= after || u.seq() > lr.record.last_seq()) {
          return Inconsistent(
              name, absl::StrFormat("rank %d: logged upload %d outside (checkpoint %d, last "
                                    "seq %d]",
                                    rank, u.seq(), after, lr.record.last_seq()));
        }
      }
    }
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(),
            [](const LoadedRun& a, const LoadedRun& b) { return a.run.order() < b.run.order(); });
  return out;
}

}  // namespace spotter
