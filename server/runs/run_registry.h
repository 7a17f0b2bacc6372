// The runs a server holds, by name.
#ifndef SPOTTER_SERVER_RUNS_RUN_REGISTRY_H_
#define SPOTTER_SERVER_RUNS_RUN_REGISTRY_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/runs/run.h"
#include "server/storage/records.h"

namespace spotter {

// Thread-safe. Runs are shared: a deleted run lives on until its last stream
// lets go of it.
class RunRegistry {
 public:
  explicit RunRegistry(const RunDeps& deps) : deps_(deps) {}

  // Adds the runs of a loaded state (at startup, before serving).
  // DATA_LOSS when a run does not restore (see Run::Restore).
  absl::Status Restore(std::vector<LoadedRun> runs);

  struct Opened {
    std::shared_ptr<Run> run;
    bool created;
  };
  // Creates the run (owned by `owner`), or returns the existing one when its
  // effective config equals the requested one. INVALID_ARGUMENT: bad name or
  // config. FAILED_PRECONDITION: same name, different config.
  // RESOURCE_EXHAUSTED: the server holds limits.max_runs runs, or `owner`
  // holds limits.max_runs_per_principal. The creation is queued to the
  // committer; callers reply after a barrier.
  absl::StatusOr<Opened> Open(const std::string& name, const v1::RunConfig& config,
                              const std::string& owner);

  // NOT_FOUND when there is no such run.
  absl::StatusOr<std::shared_ptr<Run>> Get(const std::string& name) const;

  // Every run, newest first.
  std::vector<std::shared_ptr<Run>> List() const;

  // Ends the run's streams, forgets it and queues the deletion of its rows.
  // NOT_FOUND when there is none.
  absl::Status Delete(const std::string& name);

  size_t size() const;

  // Adds a run moved from another replica, from the rows its ExportRun
  // returned (every row names `name`): checks them as a restart would
  // (LoadState), restores the run (Run::Restore), and queues the rows to the
  // committer; callers reply after a barrier. The run gets this registry's
  // next creation order and loses the source's tombstone mark.
  // ALREADY_EXISTS: a run of that name is here. INVALID_ARGUMENT: the rows
  // are damaged, belong to another run or do not form one whole run.
  // RESOURCE_EXHAUSTED: the run quotas, as for Open.
  absl::StatusOr<std::shared_ptr<Run>> Import(const std::string& name, std::vector<StoredRow> rows);

 private:
  const RunDeps deps_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Run>> runs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> per_owner_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_RUN_REGISTRY_H_
