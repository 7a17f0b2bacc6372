// Durable state behind a small interface: spotterd's runs, trajectories,
// directives, per-rank sequence numbers and sketch checkpoints are rows of a
// few tables, keyed (run, k1, k2), whose values are opaque framed records
// (server/records.h). SqliteStore (server/sqlite_store.h) is the embedded
// default; MemoryStore and FaultInjectingStore are for tests, NullStore for a
// server that keeps nothing.
//
//   table        k1     k2        value
//   runs         0      0         RunRecord: name, config, owner, creation
//   controllers  0      0         ControllerRecord: phase state, latest point
//   ranks        rank   0         RankRecord: last seq and step, counters
//   checkpoints  rank   0         CheckpointRecord: the rank's sketch state
//   uploads      rank   seq       SketchBatch applied after the checkpoint
//   points       0      index     TrajectoryPoint
//   transitions  0      index     PhaseTransition
//   directives   0      version   Directive
#ifndef SPOTTER_SERVER_STORAGE_STORE_H_
#define SPOTTER_SERVER_STORAGE_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace spotter {

enum class Table : uint8_t {
  kRuns = 1,
  kControllers = 2,
  kRanks = 3,
  kCheckpoints = 4,
  kUploads = 5,
  kPoints = 6,
  kTransitions = 7,
  kDirectives = 8,
};
inline constexpr Table kAllTables[] = {Table::kRuns,        Table::kControllers, Table::kRanks,
                                       Table::kCheckpoints, Table::kUploads,     Table::kPoints,
                                       Table::kTransitions, Table::kDirectives};
// "runs", "controllers", ...: the SQL table names.
const char* TableName(Table t);

// One change. Ops of a batch apply in order.
struct StoreOp {
  enum class Kind : uint8_t {
    kPut,         // insert or replace (table, run, k1, k2) = value
    kDeleteUpTo,  // delete (table, run, k1, k2') for every k2' <= k2
    kDeleteRun,   // delete every row of `run`, in every table
  };
  Kind kind = Kind::kPut;
  Table table = Table::kRuns;
  std::string run;
  uint64_t k1 = 0;
  uint64_t k2 = 0;
  std::string value;

  static StoreOp Put(Table t, std::string run, uint64_t k1, uint64_t k2, std::string value) {
    return {Kind::kPut, t, std::move(run), k1, k2, std::move(value)};
  }
  static StoreOp DeleteUpTo(Table t, std::string run, uint64_t k1, uint64_t k2) {
    return {Kind::kDeleteUpTo, t, std::move(run), k1, k2, {}};
  }
  static StoreOp DeleteRun(std::string run) {
    return {Kind::kDeleteRun, Table::kRuns, std::move(run), 0, 0, {}};
  }
};

// A stored row, as Scan visits it.
struct StoredRow {
  Table table;
  std::string run;
  uint64_t k1;
  uint64_t k2;
  std::string value;
};

// How Store::Backup copies (SqliteStore; spotterd's --backup_* flags).
struct BackupOptions {
  // Database pages copied per step (16 KiB each in a spotterd state file).
  // The store is locked for one step at a time: a commit waits at most one
  // step, never the whole copy. At least 1.
  int pages_per_step = 64;
  // Sleep between two steps, to spread the copy's disk reads; zero: none.
  absl::Duration step_pause = absl::ZeroDuration();
  // Polled between steps; true stops the copy with CANCELLED (the client
  // went away). Null: never.
  std::function<bool()> cancelled;
};

// What a completed Store::Backup wrote.
struct BackupStats {
  uint64_t bytes = 0;  // size of the file written
  int steps = 0;       // steps taken (the store was unlocked between two)
  absl::Duration copy_time;
};

// Implementations are thread-safe, but spotterd calls Apply from one thread
// (the Committer) and Scan once, before serving; Backup from a backup thread
// while Apply goes on.
class Store {
 public:
  virtual ~Store() = default;

  // Applies `ops` in order as one atomic unit: after a crash, Scan sees all of
  // them or none. When it returns OK the batch is durable to the degree the
  // store promises (Describe()). An error means the batch may not be durable;
  // the caller must not acknowledge anything that depended on it.
  virtual absl::Status Apply(const std::vector<StoreOp>& ops) = 0;

  // Visits every row, table by table (in kAllTables order), each ordered by
  // (run, k1, k2). Stops at and returns the first error of `visit`, or the
  // store's own (DATA_LOSS for a damaged file).
  virtual absl::Status Scan(const std::function<absl::Status(StoredRow&&)>& visit) = 0;

  // Visits the rows of one run, table by table, each ordered by (k1, k2);
  // errors as Scan. Unlike Scan it may run while serving (ExportRun reads a
  // run being moved after a committer barrier). The default filters Scan;
  // stores with an index on run override it.
  virtual absl::Status ScanRun(const std::string& run,
                               const std::function<absl::Status(StoredRow&&)>& visit) {
    return Scan(
        [&](StoredRow&& row) { return row.run == run ? visit(std::move(row)) : absl::OkStatus(); });
  }
  // Visits the rows (table, run, k1, k2) with k2 in [k2_begin, k2_end), in
  // k2 order: how a run's history is read back while the server serves
  // (trajectory points beyond the run's in-memory window). Safe to call
  // concurrently with Apply; sees only committed batches.
  virtual absl::Status Read(Table table, const std::string& run, uint64_t k1, uint64_t k2_begin,
                            uint64_t k2_end,
                            const std::function<absl::Status(StoredRow&&)>& visit) = 0;

  // False when nothing survives the process (NullStore): the server then
  // skips building upload logs and checkpoints.
  virtual bool persistent() const = 0;

  // What and where, for logs: "sqlite /var/lib/spotter/state.db (WAL, ...)".
  virtual std::string Describe() const = 0;

  // Writes a consistent copy of the whole store to a new file at `path`,
  // which must not exist, while Apply goes on: the copy holds exactly the
  // batches committed before it completed, and a new store opens it as its
  // state. On error nothing is left at `path`. UNIMPLEMENTED for stores that
  // cannot (the default); FAILED_PRECONDITION for NullStore.
  virtual absl::StatusOr<BackupStats> Backup(const std::string& path, const BackupOptions& options);
};

// Keeps nothing. Apply always succeeds at once.
class NullStore final : public Store {
 public:
  absl::Status Apply(const std::vector<StoreOp>&) override { return absl::OkStatus(); }
  absl::Status Scan(const std::function<absl::Status(StoredRow&&)>&) override {
    return absl::OkStatus();
  }
  absl::Status Read(Table, const std::string&, uint64_t, uint64_t, uint64_t,
                    const std::function<absl::Status(StoredRow&&)>&) override {
    return absl::OkStatus();
  }
  bool persistent() const override { return false; }
  std::string Describe() const override {
    return "in memory only: nothing survives a restart (--state_file=PATH keeps state)";
  }
  absl::StatusOr<BackupStats> Backup(const std::string&, const BackupOptions&) override;
};

// Rows in a map: survives a Server (tests restart a server on the same
// MemoryStore), not the process. Thread-safe.
class MemoryStore final : public Store {
 public:
  absl::Status Apply(const std::vector<StoreOp>& ops) override;
  absl::Status Scan(const std::function<absl::Status(StoredRow&&)>& visit) override;
  absl::Status Read(Table table, const std::string& run, uint64_t k1, uint64_t k2_begin,
                    uint64_t k2_end, const std::function<absl::Status(StoredRow&&)>& visit) override;
  bool persistent() const override { return true; }
  std::string Describe() const override { return "memory (tests)"; }

  // Tests: the number of rows of `table`, and direct access to a value (to
  // damage it). Returns nullptr when the row does not exist; the pointer is
  // valid until the next Apply.
  size_t RowCount(Table table) const;
  std::string* MutableValueForTest(Table table, const std::string& run, uint64_t k1, uint64_t k2);

 private:
  using Key = std::tuple<Table, std::string, uint64_t, uint64_t>;
  mutable absl::Mutex mu_;
  std::map<Key, std::string> rows_ ABSL_GUARDED_BY(mu_);
};

// Wraps a store and injects faults into Apply, as tests ask. Thread-safe.
class FaultInjectingStore final : public Store {
 public:
  explicit FaultInjectingStore(std::shared_ptr<Store> base) : base_(std::move(base)) {}

  // After `n` more successful commits, every Apply fails with `error` (and
  // applies nothing).
  void FailAfter(int n, absl::Status error);
  // While stalled, Apply blocks (the group commit stalls; pending work piles
  // up). Stall(false) releases it.
  void Stall(bool stalled);
  // True while an Apply is blocked by Stall (tests poll it).
  bool blocked() const;
  // Commits applied so far.
  int commits() const;

  absl::Status Apply(const std::vector<StoreOp>& ops) override;
  absl::Status Scan(const std::function<absl::Status(StoredRow&&)>& visit) override {
    return base_->Scan(visit);
  }
  absl::Status ScanRun(const std::string& run,
                       const std::function<absl::Status(StoredRow&&)>& visit) override {
    return base_->ScanRun(run, visit);
  }
  absl::Status Read(Table table, const std::string& run, uint64_t k1, uint64_t k2_begin,
                    uint64_t k2_end, const std::function<absl::Status(StoredRow&&)>& visit) override {
    return base_->Read(table, run, k1, k2_begin, k2_end, visit);
  }
  bool persistent() const override { return base_->persistent(); }
  std::string Describe() const override { return "fault-injecting " + base_->Describe(); }
  absl::StatusOr<BackupStats> Backup(const std::string& path,
                                     const BackupOptions& options) override {
    return base_->Backup(path, options);
  }

 private:
  const std::shared_ptr<Store> base_;
  mutable absl::Mutex mu_;
  int fail_after_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool stalled_ ABSL_GUARDED_BY(mu_) = false;
  bool blocked_ ABSL_GUARDED_BY(mu_) = false;
  int commits_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_STORAGE_STORE_H_
