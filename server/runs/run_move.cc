// Moving a run to another replica: freezing it here so that an export of its
// stored rows holds everything ever acknowledged (docs/SCALING.md).
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/runs/run.h"

namespace spotter {

Rejection Run::MovingRejection(const std::string& run) {
  return Rejection{v1::REJECT_REASON_UNSPECIFIED,
                   absl::StrFormat("run %s is moving to another replica; reconnect: "
                                   "unacknowledged uploads are replayed to its new owner",
                                   run),
                   "run_moving", /*moving=*/true};
}

absl::Status Run::MovedStatusLocked() const {
  if (!moving_) return absl::OkStatus();
  return WithReason(
      absl::UnavailableError(absl::StrFormat(
          "run %s moved to replica %s; retry: the gateway routes it there once its upstream "
          "list is updated (docs/SCALING.md)",
          name_, moved_to_)),
      "run_moving");
}

absl::Status Run::MovedStatus() const {
  absl::MutexLock l(&mu_);
  return MovedStatusLocked();
}

absl::Status Run::Freeze(const std::string& moved_to) {
  absl::MutexLock l(&mu_);
  if (state_ == v1::RUN_STATE_UNSPECIFIED) {
    return absl::NotFoundError(absl::StrFormat("run %s was deleted", name_));
  }
  // Exporting again (a move whose import failed) finds the rows final since
  // the first Freeze; only the tombstone's target may change (the retry may
  // go elsewhere), and the tombstone is rewritten to name it.
  if (moving_) {
    if (moved_to == moved_to_) return absl::OkStatus();
    moved_to_ = moved_to;
    if (deps_.persistent) {
      deps_.committer->Enqueue({PutControllerRecord(name_, ControllerRecordLocked())});
    }
    return absl::OkStatus();
  }
  moved_to_ = moved_to;
  moving_ = true;
  // An upload or report checks moving_ and queues its rows under its rank's
  // lock: once each rank's lock has been taken after moving_ was set, every
  // upload that passed the check has queued its rows (ahead of the caller's
  // barrier) and every later one is refused.
  for (auto& [id, rank] : ranks_) absl::MutexLock rl(&rank->mu);
  // Nothing of the run is written after this record: the journal is closed,
  // and an evaluation finishing now drops its point (Evaluate checks
  // moving_). The controller record marks the tombstone, so a restart of
  // this replica keeps refusing the run instead of reviving a second owner.
  journal_->Close();
  if (deps_.persistent) {
    deps_.committer->Enqueue({PutControllerRecord(name_, ControllerRecordLocked())});
  }
  const absl::Status moved = MovedStatusLocked();
  for (RunObserver* o : observers_) o->OnMoved(moved);
  observers_.clear();
  streams_ = 0;
  watchers_ = 0;
  for (auto& [id, r] : ranks_) r->connected = 0;
  // The new owner reports the run's series from now on; two replicas
  // reporting one run would double it on dashboards that sum.
  metrics_.reset();
  return absl::OkStatus();
}

}  // namespace spotter
