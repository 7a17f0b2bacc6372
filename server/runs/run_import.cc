// RunRegistry::Import: a run moved here from another replica (ImportRun).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"
#include "server/runs/run_registry.h"

namespace spotter {
namespace {

absl::Status BadRows(const std::string& name, absl::string_view why) {
  return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                        "the rows of run %s do not form a run: %s; import exactly the rows "
                        "ExportRun returned for it",
                        name, why)),
                    "import_bad_rows");
}

}  // namespace

absl::StatusOr<std::shared_ptr<Run>> RunRegistry::Import(const std::string& name,
                                                         std::vector<StoredRow> rows) {
  RETURN_IF_ERROR(ValidateRunName(name));
  auto exists = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return WithReason(absl::AlreadyExistsError(absl::StrFormat(
                          "run %s already exists on this replica: it was imported before, or "
                          "trainers opened it here; delete it here first to import it again",
                          name)),
                      "import_exists");
  };
  {
    absl::MutexLock l(&mu_);
    if (runs_.contains(name)) return exists();
  }
  // The checks of a restart, on the rows alone: frames and checksums (which
  // cover the run name and key), then the invariants across tables.
  std::vector<StoreOp> ops;
  ops.reserve(rows.size());
  for (StoredRow& row : rows) {
    if (row.run != name) return BadRows(name, "a row names run " + row.run);
    ops.push_back(StoreOp::Put(row.table, name, row.k1, row.k2, std::move(row.value)));
  }
  MemoryStore staged;
  RETURN_IF_ERROR(staged.Apply(ops));
  // As a restart would: the newest points in memory, the rest read back
  // from this replica's store once the rows below are committed (a read of
  // older points racing the import's commit may see fewer; the ImportRun
  // reply waits for it).
  absl::StatusOr<std::vector<LoadedRun>> loaded = LoadState(staged, deps_.point_window);
  if (!loaded.ok()) return BadRows(name, loaded.status().message());
  if (loaded->size() != 1 || (*loaded)[0].run.name() != name) {
    return BadRows(name, absl::StrFormat("they hold %d runs", loaded->size()));
  }
  LoadedRun run_rows = std::move((*loaded)[0]);
  // The source's tombstone mark stays behind: the run lives here now.
  run_rows.controller.clear_moved_to();
  {
    absl::MutexLock l(&mu_);
    run_rows.run.set_order(next_order_++);
  }
  for (StoreOp& op : ops) {
    if (op.table == Table::kRuns) op = PutRunRecord(run_rows.run);
    if (op.table == Table::kControllers) op = PutControllerRecord(name, run_rows.controller);
  }
  absl::StatusOr<std::shared_ptr<Run>> run = Run::Restore(std::move(run_rows), deps_);
  if (!run.ok()) return BadRows(name, run.status().message());

  absl::MutexLock l(&mu_);
  absl::Status refused;
  if (runs_.contains(name)) {
    refused = exists();  // trainers opened it meanwhile
  } else if (runs_.size() >= deps_.limits.max_runs) {
    refused = WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                             "the server holds %d runs, its limit (--max_runs)", runs_.size())),
                         "run_quota");
  } else if (const std::string& owner = (*run)->owner();
             !owner.empty() && deps_.limits.max_runs_per_principal != 0 &&
             per_owner_[owner] >= deps_.limits.max_runs_per_principal) {
    refused = WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                             "principal %s holds %d runs, its limit (--max_runs_per_principal)",
                             owner, per_owner_[owner])),
                         "principal_run_quota");
  }
  if (!refused.ok()) {
    (*run)->End();  // undoes the restore's metric series and counts
    return refused;
  }
  // Under mu_, so that a later deletion or re-creation of the name queues
  // after these rows.
  deps_.committer->Enqueue(std::move(ops));
  ++per_owner_[(*run)->owner()];
  runs_[name] = *run;
  return *run;
}

}  // namespace spotter
