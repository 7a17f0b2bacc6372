// The embedded default store: one SQLite file in WAL mode.
#ifndef SPOTTER_SERVER_STORAGE_SQLITE_STORE_H_
#define SPOTTER_SERVER_STORAGE_SQLITE_STORE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace spotter {

struct SqliteOptions {
  // SQLite's `synchronous` in WAL mode:
  //  kFull:   every commit fsyncs the WAL. A committed batch survives a
  //           process crash and a power loss (the default).
  //  kNormal: commits are not fsynced; the WAL is fsynced at checkpoints. A
  //           committed batch survives a process crash (kill -9); a power
  //           loss may roll back the last commits (never tears one).
  enum class Sync { kFull, kNormal };
  Sync sync = Sync::kFull;
  // Run PRAGMA quick_check at open (O(file size)); a damaged file is then
  // reported at startup rather than at the first read of a bad page.
  bool quick_check = true;
};

// Thread-safe (one connection, serialised). The file is opened in exclusive
// locking mode: a second process (another spotterd) cannot open it.
class SqliteStore final : public Store {
 public:
  // Opens or creates the state file at `path`. Errors name the file:
  // UNAVAILABLE when it cannot be opened or is locked by another process,
  // DATA_LOSS when it is damaged (truncated, not a database, fails
  // quick_check), FAILED_PRECONDITION when it is not a spotterd state file or
  // has a newer schema.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                           const SqliteOptions& options);
  ~SqliteStore() override;

  absl::Status Apply(const std::vector<StoreOp>& ops) override;
  absl::Status Scan(const std::function<absl::Status(StoredRow&&)>& visit) override;
  absl::Status ScanRun(const std::string& run,
                       const std::function<absl::Status(StoredRow&&)>& visit) override;
  absl::Status Read(Table table, const std::string& run, uint64_t k1, uint64_t k2_begin,
                    uint64_t k2_end, const std::function<absl::Status(StoredRow&&)>& visit) override;
  bool persistent() const override { return true; }
  std::string Describe() const override;
  // SQLite's online backup API on this store's own connection, `pages_per_step`
  // pages per step with the lock released between steps. Apply keeps
  // committing meanwhile, and because it writes through the same connection
  // SQLite copies each change into the backup as well: the file holds the
  // state as of the last step. ALREADY_EXISTS when `path` exists.
  absl::StatusOr<BackupStats> Backup(const std::string& path,
                                     const BackupOptions& options) override;

 private:
  SqliteStore(std::string path, SqliteOptions options, sqlite3* db);
  absl::Status Prepare();
  absl::Status Exec(const char* sql);
  absl::Status Error(const char* what, int rc) const;

  const std::string path_;
  const SqliteOptions options_;
  mutable absl::Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  // Steps `st` to its end, visiting each row as `t`'s, then resets it.
  absl::Status VisitRows(sqlite3_stmt* st, Table t,
                         const std::function<absl::Status(StoredRow&&)>& visit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Statements {
    sqlite3_stmt* put = nullptr;
    sqlite3_stmt* delete_upto = nullptr;
    sqlite3_stmt* delete_run = nullptr;
    sqlite3_stmt* scan = nullptr;
    sqlite3_stmt* scan_run = nullptr;  // one run's rows, by the primary key
    sqlite3_stmt* read = nullptr;
  };
  Statements stmts_[sizeof(kAllTables) / sizeof(kAllTables[0]) + 1] ABSL_GUARDED_BY(mu_);
  sqlite3_stmt* begin_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* commit_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_STORAGE_SQLITE_STORE_H_
