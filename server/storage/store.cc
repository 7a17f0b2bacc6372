#include "server/storage/store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace spotter {

const char* TableName(Table t) {
  switch (t) {
    case Table::kRuns:
      return "runs";
    case Table::kControllers:
      return "controllers";
    case Table::kRanks:
      return "ranks";
    case Table::kCheckpoints:
      return "checkpoints";
    case Table::kUploads:
      return "uploads";
    case Table::kPoints:
      return "points";
    case Table::kTransitions:
      return "transitions";
    case Table::kDirectives:
      return "directives";
  }
  return "unknown";
}

absl::StatusOr<BackupStats> Store::Backup(const std::string&, const BackupOptions&) {
  return absl::UnimplementedError(absl::StrCat("backups of this store (", Describe(),
                                               ") are not implemented; only a state file is"));
}

absl::StatusOr<BackupStats> NullStore::Backup(const std::string&, const BackupOptions&) {
  return absl::FailedPreconditionError(
      "this server keeps no state file (spotterd runs without --state_file), so there is "
      "nothing to back up: its runs live in memory only. Start it with --state_file=PATH to "
      "keep state that can be backed up");
}

absl::Status MemoryStore::Apply(const std::vector<StoreOp>& ops) {
  absl::MutexLock l(&mu_);
  for (const StoreOp& op : ops) {
    switch (op.kind) {
      case StoreOp::Kind::kPut:
        rows_[Key{op.table, op.run, op.k1, op.k2}] = op.value;
        break;
      case StoreOp::Kind::kDeleteUpTo: {
        auto begin = rows_.lower_bound(Key{op.table, op.run, op.k1, 0});
        auto end = rows_.upper_bound(Key{op.table, op.run, op.k1, op.k2});
        rows_.erase(begin, end);
        break;
      }
      case StoreOp::Kind::kDeleteRun:
        for (Table t : kAllTables) {
          auto begin = rows_.lower_bound(Key{t, op.run, 0, 0});
          auto end = rows_.lower_bound(Key{t, op.run + '\0', 0, 0});
          rows_.erase(begin, end);
        }
        break;
    }
  }
  return absl::OkStatus();
}

absl::Status MemoryStore::Scan(const std::function<absl::Status(StoredRow&&)>& visit) {
  std::map<Key, std::string> copy;
  {
    absl::MutexLock l(&mu_);
    copy = rows_;
  }
  for (auto& [key, value] : copy) {
    absl::Status s = visit(StoredRow{std::get<0>(key), std::get<1>(key), std::get<2>(key),
                                     std::get<3>(key), std::move(value)});
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status MemoryStore::Read(Table table, const std::string& run, uint64_t k1, uint64_t k2_begin,
                               uint64_t k2_end,
                               const std::function<absl::Status(StoredRow&&)>& visit) {
  if (k2_begin >= k2_end) return absl::OkStatus();
  std::vector<StoredRow> rows;
  {
    absl::MutexLock l(&mu_);
    for (auto it = rows_.lower_bound(Key{table, run, k1, k2_begin});
         it != rows_.end() && it->first < Key{table, run, k1, k2_end}; ++it) {
      rows.push_back({table, run, k1, std::get<3>(it->first), it->second});
    }
  }
  for (StoredRow& row : rows) {
    absl::Status s = visit(std::move(row));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

size_t MemoryStore::RowCount(Table table) const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [key, value] : rows_) n += std::get<0>(key) == table;
  return n;
}

std::string* MemoryStore::MutableValueForTest(Table table, const std::string& run, uint64_t k1,
                                              uint64_t k2) {
  absl::MutexLock l(&mu_);
  auto it = rows_.find(Key{table, run, k1, k2});
  return it == rows_.end() ? nullptr : &it->second;
}

void FaultInjectingStore::FailAfter(int n, absl::Status error) {
  absl::MutexLock l(&mu_);
  fail_after_ = n;
  error_ = std::move(error);
}

void FaultInjectingStore::Stall(bool stalled) {
  absl::MutexLock l(&mu_);
  stalled_ = stalled;
}

bool FaultInjectingStore::blocked() const {
  absl::MutexLock l(&mu_);
  return blocked_;
}

int FaultInjectingStore::commits() const {
  absl::MutexLock l(&mu_);
  return commits_;
}

absl::Status FaultInjectingStore::Apply(const std::vector<StoreOp>& ops) {
  {
    absl::MutexLock l(&mu_);
    blocked_ = stalled_;
    mu_.Await(absl::Condition(
        +[](bool* stalled) { return !*stalled; }, &stalled_));
    blocked_ = false;
    if (fail_after_ == 0) return error_;
    if (fail_after_ > 0) --fail_after_;
  }
  absl::Status s = base_->Apply(ops);
  absl::MutexLock l(&mu_);
  if (s.ok()) ++commits_;
  return s;
}

}  // namespace spotter
