#include "server/registry.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace spotter {

absl::StatusOr<RunRegistry::Opened> RunRegistry::Open(const std::string& name,
                                                      const v1::RunConfig& requested) {
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
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the server holds %d runs, its limit (--max_runs); finish and delete old runs",
        runs_.size()));
  }
  std::shared_ptr<Run> run = Run::Create(name, std::move(config), deps_);
  runs_[name] = run;
  order_[name] = next_order_++;
  return Opened{run, true};
}

absl::StatusOr<std::shared_ptr<Run>> RunRegistry::Get(const std::string& name) const {
  absl::MutexLock l(&mu_);
  auto it = runs_.find(name);
  if (it == runs_.end()) {
    return absl::NotFoundError(absl::StrFormat("no run named %s; OpenRun creates it", name));
  }
  return it->second;
}

std::vector<std::shared_ptr<Run>> RunRegistry::List() const {
  absl::MutexLock l(&mu_);
  std::vector<std::pair<uint64_t, std::shared_ptr<Run>>> v;
  for (const auto& [name, run] : runs_) v.emplace_back(order_.at(name), run);
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::shared_ptr<Run>> out;
  for (auto& [o, r] : v) out.push_back(std::move(r));
  return out;
}

absl::Status RunRegistry::Delete(const std::string& name) {
  std::shared_ptr<Run> run;
  {
    absl::MutexLock l(&mu_);
    auto it = runs_.find(name);
    if (it == runs_.end()) {
      return absl::NotFoundError(absl::StrFormat("no run named %s", name));
    }
    run = std::move(it->second);
    runs_.erase(it);
    order_.erase(name);
  }
  run->End();
  return absl::OkStatus();
}

}  // namespace spotter
