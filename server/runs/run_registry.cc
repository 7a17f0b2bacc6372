#include "server/runs/run_registry.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace spotter {

absl::Status RunRegistry::Restore(std::vector<LoadedRun> runs) {
  for (LoadedRun& loaded : runs) {
    ASSIGN_OR_RETURN(std::shared_ptr<Run> run, Run::Restore(std::move(loaded), deps_));
    absl::MutexLock l(&mu_);
    next_order_ = std::max(next_order_, run->order() + 1);
    ++per_owner_[run->owner()];
    runs_[run->name()] = std::move(run);
  }
  return absl::OkStatus();
}

absl::StatusOr<RunRegistry::Opened> RunRegistry::Open(const std::string& name,
                                                      const v1::RunConfig& requested,
                                                      const std::string& owner) {
  RETURN_IF_ERROR(ValidateRunName(name));
  ASSIGN_OR_RETURN(v1::RunConfig config, ResolveRunConfig(requested, deps_.limits));
  absl::MutexLock l(&mu_);
  if (auto it = runs_.find(name); it != runs_.end()) {
    const std::string diff = ConfigDifference(it->second->config(), config);
    if (!diff.empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "run %s exists with a different config (%s); open it with the same config, or "
          "pick a new name",
          name, diff));
    }
    return Opened{it->second, false};
  }
  if (runs_.size() >= deps_.limits.max_runs) {
    return WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                          "the server holds %d runs, its limit (--max_runs); finish and "
                          "delete old runs",
                          runs_.size())),
                      "run_quota");
  }
  if (!owner.empty() && deps_.limits.max_runs_per_principal != 0 &&
      per_owner_[owner] >= deps_.limits.max_runs_per_principal) {
    return WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                          "principal %s holds %d runs, its limit (--max_runs_per_principal); "
                          "delete old runs",
                          owner, per_owner_[owner])),
                      "principal_run_quota");
  }
  std::shared_ptr<Run> run = Run::Create(name, std::move(config), owner, next_order_++, deps_);
  runs_[name] = run;
  ++per_owner_[owner];
  return Opened{run, true};
}

absl::StatusOr<std::shared_ptr<Run>> RunRegistry::Get(const std::string& name) const {
  absl::MutexLock l(&mu_);
  auto it = runs_.find(name);
  if (it == runs_.end()) {
    return WithReason(
        absl::NotFoundError(absl::StrFormat("no run named %s; OpenRun creates it", name)),
        "unknown_run");
  }
  return it->second;
}

std::vector<std::shared_ptr<Run>> RunRegistry::List() const {
  absl::MutexLock l(&mu_);
  std::vector<std::shared_ptr<Run>> out;
  out.reserve(runs_.size());
  for (const auto& [name, run] : runs_) out.push_back(run);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->order() > b->order(); });
  return out;
}

absl::Status RunRegistry::Delete(const std::string& name) {
  std::shared_ptr<Run> run;
  {
    absl::MutexLock l(&mu_);
    auto it = runs_.find(name);
    if (it == runs_.end()) {
      return WithReason(absl::NotFoundError(absl::StrFormat("no run named %s", name)),
                        "unknown_run");
    }
    run = std::move(it->second);
    runs_.erase(it);
    if (--per_owner_[run->owner()] == 0) per_owner_.erase(run->owner());
    // Under mu_, so that a run re-created with this name queues its rows
    // after the deletion of these.
    run->End();
    deps_.committer->Enqueue({StoreOp::DeleteRun(name)});
  }
  return absl::OkStatus();
}

size_t RunRegistry::size() const {
  absl::MutexLock l(&mu_);
  return runs_.size();
}

}  // namespace spotter
