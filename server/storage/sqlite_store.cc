#include "server/storage/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace spotter {
namespace {

constexpr int kSchemaVersion = 1;
constexpr char kFormat[] = "spotterd-state";

// Maps an SQLite result code to the status code callers act on.
absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

int Index(Table t) { return static_cast<int>(t); }

}  // namespace

SqliteStore::SqliteStore(std::string path, SqliteOptions options, sqlite3* db)
    : path_(std::move(path)), options_(options), db_(db) {}

SqliteStore::~SqliteStore() {
  absl::MutexLock l(&mu_);
  for (Statements& s : stmts_) {
    sqlite3_finalize(s.put);
    sqlite3_finalize(s.delete_upto);
    sqlite3_finalize(s.delete_run);
    sqlite3_finalize(s.scan);
    sqlite3_finalize(s.scan_run);
    sqlite3_finalize(s.read);
  }
  sqlite3_finalize(begin_);
  sqlite3_finalize(commit_);
  sqlite3_close(db_);
}

absl::Status SqliteStore::Error(const char* what, int rc) const {
  const char* detail = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  std::string hint;
  switch (CodeFor(rc)) {
    case absl::StatusCode::kDataLoss:
      hint =
          "; the file is damaged: restore it from a backup, or move it aside to start "
          "with empty state";
      break;
    case absl::StatusCode::kResourceExhausted:
      hint = "; the disk is full";
      break;
    default:
      break;
  }
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    hint = "; another process (another spotterd?) holds the file";
  }
  return absl::Status(CodeFor(rc), absl::StrFormat("state file %s: %s: %s (sqlite %d)%s", path_,
                                                   what, detail, rc, hint));
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) return Error(sql, rc);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path,
                                                               const SqliteOptions& options) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, options, db));
  if (rc != SQLITE_OK) return store->Error("open", rc);
  absl::MutexLock l(&store->mu_);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 0);  // a locked file is an error at once, not a wait

  // Exclusive locking: the first transaction takes the lock and keeps it.
  absl::Status s = store->Exec("PRAGMA locking_mode=EXCLUSIVE");
  if (!s.ok()) return s;
  // Uploads are rows of several KiB: 16 KiB pages keep most of them off
  // overflow chains (a new file only; an existing file keeps its size).
  s = store->Exec("PRAGMA page_size=16384");
  if (!s.ok()) return s;
  {
    sqlite3_stmt* st = nullptr;
    int prc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, nullptr);
    if (prc == SQLITE_OK) prc = sqlite3_step(st);
    std::string mode =
        prc == SQLITE_ROW ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0)) : "";
    sqlite3_finalize(st);
    if (prc != SQLITE_ROW) return store->Error("PRAGMA journal_mode=WAL", prc);
    if (mode != "wal") {
      return absl::UnavailableError(absl::StrFormat(
          "state file %s: cannot use write-ahead logging (journal mode %s)", path, mode));
    }
  }
  s = store->Exec(options.sync == SqliteOptions::Sync::kFull ? "PRAGMA synchronous=FULL"
                                                             : "PRAGMA synchronous=NORMAL");
  if (!s.ok()) return s;
  // Keep the WAL file from growing without bound between checkpoints.
  s = store->Exec("PRAGMA journal_size_limit=67108864");
  if (!s.ok()) return s;

  if (options.quick_check) {
    sqlite3_stmt* st = nullptr;
    int qrc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, nullptr);
    std::vector<std::string> problems;
    while (qrc == SQLITE_OK || qrc == SQLITE_ROW) {
      if ((qrc = sqlite3_step(st)) != SQLITE_ROW) break;
      const char* line = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      if (line && std::string(line) != "ok" && problems.size() < 5) problems.push_back(line);
    }
    sqlite3_finalize(st);
    if (qrc != SQLITE_DONE) return store->Error("PRAGMA quick_check", qrc);
    if (!problems.empty()) {
      return absl::DataLossError(absl::StrFormat(
          "state file %s is damaged (quick_check: %s); restore it from a backup, or move it "
          "aside to start with empty state",
          path, absl::StrJoin(problems, "; ")));
    }
  }

  s = store->Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  // An existing file must be ours.
  {
    sqlite3_stmt* st = nullptr;
    int trc = sqlite3_prepare_v2(
        db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name != 'meta'", -1, &st,
        nullptr);
    if (trc == SQLITE_OK) trc = sqlite3_step(st);
    const int64_t tables = trc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (trc != SQLITE_ROW) return store->Error("reading the schema", trc);
    s = store->Exec("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    if (!s.ok()) return s;
    std::string format, version;
    st = nullptr;
    trc = sqlite3_prepare_v2(db, "SELECT key, value FROM meta", -1, &st, nullptr);
    while (trc == SQLITE_OK || trc == SQLITE_ROW) {
      if ((trc = sqlite3_step(st)) != SQLITE_ROW) break;
      const std::string key = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      const std::string value = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
      if (key == "format") format = value;
      if (key == "schema_version") version = value;
    }
    sqlite3_finalize(st);
    if (trc != SQLITE_DONE) return store->Error("reading meta", trc);
    if (format.empty() && tables > 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is an SQLite file but not a spotterd state file (no meta.format)", path));
    }
    if (!format.empty() && format != kFormat) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: meta.format is '%s', expected '%s'", path, format, kFormat));
    }
    if (!version.empty() && version != std::to_string(kSchemaVersion)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s has schema version %s; this spotterd reads version %d", path, version,
                          kSchemaVersion));
    }
    if (format.empty()) {
      s = store->Exec(absl::StrCat("INSERT INTO meta VALUES('format', '", kFormat,
                                   "'), ('schema_version', '", kSchemaVersion, "')")
                          .c_str());
      if (!s.ok()) return s;
    }
  }
  // Rowid tables with a unique key: WITHOUT ROWID would keep the KiB-sized
  // values inside the key's b-tree, which SQLite handles slowly.
  for (Table t : kAllTables) {
    s = store->Exec(absl::StrCat("CREATE TABLE IF NOT EXISTS ", TableName(t),
                                 "(run TEXT NOT NULL, k1 INTEGER NOT NULL, k2 INTEGER NOT NULL, "
                                 "v BLOB NOT NULL, PRIMARY KEY(run, k1, k2))")
                        .c_str());
    if (!s.ok()) return s;
  }
  s = store->Exec("COMMIT");
  if (!s.ok()) return s;
  s = store->Prepare();
  if (!s.ok()) return s;
  return store;
}

absl::Status SqliteStore::Prepare() {
  auto prep = [&](const std::string& sql, sqlite3_stmt** out) {
    const int rc =
        sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, out, nullptr);
    return rc == SQLITE_OK ? absl::OkStatus() : Error(sql.c_str(), rc);
  };
  for (Table t : kAllTables) {
    Statements& s = stmts_[Index(t)];
    const std::string name = TableName(t);
    absl::Status st = prep("INSERT OR REPLACE INTO " + name + " VALUES(?1, ?2, ?3, ?4)", &s.put);
    if (st.ok()) {
      st = prep("DELETE FROM " + name + " WHERE run = ?1 AND k1 = ?2 AND k2 <= ?3", &s.delete_upto);
    }
    if (st.ok()) st = prep("DELETE FROM " + name + " WHERE run = ?1", &s.delete_run);
    if (st.ok()) {
      st = prep("SELECT run, k1, k2, v FROM " + name + " ORDER BY run, k1, k2", &s.scan);
    }
    if (st.ok()) {
      st = prep("SELECT run, k1, k2, v FROM " + name + " WHERE run = ?1 ORDER BY k1, k2",
                &s.scan_run);
    }
    if (st.ok()) {
      st = prep("SELECT run, k1, k2, v FROM " + name +
                    " WHERE run = ?1 AND k1 = ?2 AND k2 >= ?3 AND k2 < ?4 ORDER BY k2",
                &s.read);
    }
    if (!st.ok()) return st;
  }
  absl::Status st = prep("BEGIN", &begin_);
  if (st.ok()) st = prep("COMMIT", &commit_);
  return st;
}

absl::Status SqliteStore::Apply(const std::vector<StoreOp>& ops) {
  absl::MutexLock l(&mu_);
  auto run_step = [&](sqlite3_stmt* st, const char* what) {
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? absl::OkStatus() : Error(what, rc);
  };
  absl::Status s = run_step(begin_, "BEGIN");
  if (!s.ok()) return s;
  for (const StoreOp& op : ops) {
    Statements& t = stmts_[Index(op.table)];
    switch (op.kind) {
      case StoreOp::Kind::kPut:
        sqlite3_bind_text(t.put, 1, op.run.data(), static_cast<int>(op.run.size()), SQLITE_STATIC);
        sqlite3_bind_int64(t.put, 2, static_cast<sqlite3_int64>(op.k1));
        sqlite3_bind_int64(t.put, 3, static_cast<sqlite3_int64>(op.k2));
        sqlite3_bind_blob64(t.put, 4, op.value.data(), op.value.size(), SQLITE_STATIC);
        s = run_step(t.put, "insert");
        break;
      case StoreOp::Kind::kDeleteUpTo:
        sqlite3_bind_text(t.delete_upto, 1, op.run.data(), static_cast<int>(op.run.size()),
                          SQLITE_STATIC);
        sqlite3_bind_int64(t.delete_upto, 2, static_cast<sqlite3_int64>(op.k1));
        sqlite3_bind_int64(t.delete_upto, 3, static_cast<sqlite3_int64>(op.k2));
        s = run_step(t.delete_upto, "delete");
        break;
      case StoreOp::Kind::kDeleteRun:
        for (Table table : kAllTables) {
          sqlite3_stmt* st = stmts_[Index(table)].delete_run;
          sqlite3_bind_text(st, 1, op.run.data(), static_cast<int>(op.run.size()), SQLITE_STATIC);
          s = run_step(st, "delete run");
          if (!s.ok()) break;
        }
        break;
    }
    if (!s.ok()) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return s;
    }
  }
  s = run_step(commit_, "COMMIT");
  if (!s.ok()) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return s;
}

absl::Status SqliteStore::VisitRows(sqlite3_stmt* st, Table t,
                                     const std::function<absl::Status(StoredRow&&)>& visit) {
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    StoredRow row;
    row.table = t;
    const unsigned char* run = sqlite3_column_text(st, 0);
    row.run.assign(reinterpret_cast<const char*>(run), sqlite3_column_bytes(st, 0));
    row.k1 = static_cast<uint64_t>(sqlite3_column_int64(st, 1));
    row.k2 = static_cast<uint64_t>(sqlite3_column_int64(st, 2));
    const void* v = sqlite3_column_blob(st, 3);
    row.value.assign(static_cast<const char*>(v), sqlite3_column_bytes(st, 3));
    absl::Status s = visit(std::move(row));
    if (!s.ok()) {
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      return s;
    }
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_DONE) return Error(absl::StrCat("reading table ", TableName(t)).c_str(), rc);
  return absl::OkStatus();
}

absl::Status SqliteStore::Scan(const std::function<absl::Status(StoredRow&&)>& visit) {
  absl::MutexLock l(&mu_);
  for (Table t : kAllTables) {
    absl::Status s = VisitRows(stmts_[Index(t)].scan, t, visit);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::ScanRun(const std::string& run,
                                  const std::function<absl::Status(StoredRow&&)>& visit) {
  absl::MutexLock l(&mu_);
  for (Table t : kAllTables) {
    sqlite3_stmt* st = stmts_[Index(t)].scan_run;
    sqlite3_bind_text(st, 1, run.data(), static_cast<int>(run.size()), SQLITE_TRANSIENT);
    if (absl::Status s = VisitRows(st, t, visit); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Read(Table table, const std::string& run, uint64_t k1, uint64_t k2_begin,
                               uint64_t k2_end,
                               const std::function<absl::Status(StoredRow&&)>& visit) {
  if (k2_begin >= k2_end) return absl::OkStatus();
  // SQLite integers are signed: clamp the end so a "to the end" bound stays
  // above every key.
  constexpr uint64_t kMax = static_cast<uint64_t>(INT64_MAX);
  absl::MutexLock l(&mu_);
  sqlite3_stmt* st = stmts_[Index(table)].read;
  sqlite3_bind_text(st, 1, run.data(), static_cast<int>(run.size()), SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, static_cast<sqlite3_int64>(k1));
  sqlite3_bind_int64(st, 3, static_cast<sqlite3_int64>(std::min(k2_begin, kMax)));
  sqlite3_bind_int64(st, 4, static_cast<sqlite3_int64>(std::min(k2_end, kMax)));
  return VisitRows(st, table, visit);
}

absl::StatusOr<BackupStats> SqliteStore::Backup(const std::string& path,
                                                const BackupOptions& options) {
  const absl::Time start = absl::Now();
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("backup of %s: %s exists; a backup writes a new file", path_, path));
  }
  auto remove_partial = [&path] {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
    std::filesystem::remove(path + "-journal", ignored);
  };
  sqlite3* dest = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &dest,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto fail = [&](const char* what, int code, const std::string& detail) {
    sqlite3_close(dest);
    remove_partial();
    return absl::Status(CodeFor(code), absl::StrFormat("backup of %s to %s: %s: %s (sqlite %d)",
                                                       path_, path, what, detail, code));
  };
  if (rc != SQLITE_OK) return fail("open", rc, dest ? sqlite3_errmsg(dest) : sqlite3_errstr(rc));
  sqlite3_extended_result_codes(dest, 1);
  sqlite3_backup* backup = nullptr;
  {
    // The backup object hangs on the source connection's pager: every call
    // on it, like every Apply, holds mu_.
    absl::MutexLock l(&mu_);
    backup = sqlite3_backup_init(dest, "main", db_, "main");
  }
  if (backup == nullptr) {
    return fail("start", sqlite3_errcode(dest), sqlite3_errmsg(dest));
  }
  const int pages = std::max(1, options.pages_per_step);
  BackupStats stats;
  absl::Status status;
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      rc = sqlite3_backup_step(backup, pages);
    }
    ++stats.steps;
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) {
      status = absl::Status(CodeFor(rc),
                            absl::StrFormat("copy step %d: %s", stats.steps, sqlite3_errstr(rc)));
      break;
    }
    if (options.cancelled && options.cancelled()) {
      status = absl::CancelledError("the backup was cancelled");
      break;
    }
    if (options.step_pause > absl::ZeroDuration()) absl::SleepFor(options.step_pause);
  }
  {
    absl::MutexLock l(&mu_);
    rc = sqlite3_backup_finish(backup);
  }
  if (status.ok() && rc != SQLITE_OK) {
    return fail("finish", rc, sqlite3_errmsg(dest));
  }
  if (!status.ok()) {
    sqlite3_close(dest);
    remove_partial();
    return absl::Status(status.code(),
                        absl::StrFormat("backup of %s to %s: %s", path_, path, status.message()));
  }
  rc = sqlite3_close(dest);
  dest = nullptr;
  if (rc != SQLITE_OK) return fail("close", rc, sqlite3_errstr(rc));
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return fail("size", SQLITE_IOERR, ec.message());
  stats.bytes = size;
  stats.copy_time = absl::Now() - start;
  return stats;
}

std::string SqliteStore::Describe() const {
  return absl::StrFormat("sqlite %s (WAL, synchronous=%s)", path_,
                         options_.sync == SqliteOptions::Sync::kFull ? "FULL" : "NORMAL");
}

}  // namespace spotter
