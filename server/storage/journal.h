// A writer's gate to the Committer that can be closed: once closed, nothing
// more of that writer is queued. A run writes through its own Journal and
// closes it when it is deleted, so no write of it can land after the
// deletion of its rows.
#ifndef SPOTTER_SERVER_STORAGE_JOURNAL_H_
#define SPOTTER_SERVER_STORAGE_JOURNAL_H_

#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/committer.h"
#include "server/storage/store.h"

namespace spotter {

// Thread-safe. The committer outlives the journal.
class Journal {
 public:
  explicit Journal(Committer* committer) : committer_(committer) {}

  // Queues `ops` and `done` to the committer (Committer::Enqueue), unless
  // the journal is closed: then both are dropped and `done` never runs.
  void Enqueue(std::vector<StoreOp> ops, Committer::Callback done) {
    absl::MutexLock l(&mu_);
    if (closed_) return;
    committer_->Enqueue(std::move(ops), std::move(done));
  }

  // Drops every later Enqueue. Idempotent.
  void Close() {
    absl::MutexLock l(&mu_);
    closed_ = true;
  }

 private:
  Committer* const committer_;
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_STORAGE_JOURNAL_H_
