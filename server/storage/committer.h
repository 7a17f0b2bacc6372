// Group commit: the one thread that writes to the Store. Work from every run
// and stream is queued as batches of ops with a callback; the committer takes
// everything queued, applies it as one atomic Store::Apply (one fsync for many
// uploads), then runs the callbacks in queue order. While a commit is in
// progress the next group accumulates, so the commit rate adapts to the load
// with no timer.
//
// Callbacks run on the committer thread in the order their batches were
// queued: an Ack sent from a callback implies that everything queued before
// it is durable too. After a failed commit the committer is failed for good:
// that callback and every later one gets the error, and nothing more is
// written (the server's state may be ahead of the disk; restarting recovers
// from the disk and clients replay what was not acknowledged).
#ifndef SPOTTER_SERVER_STORAGE_COMMITTER_H_
#define SPOTTER_SERVER_STORAGE_COMMITTER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/storage/store.h"

namespace spotter {

// Thread-safe.
class Committer {
 public:
  using Callback = std::function<void(const absl::Status&)>;

  // Time one Store::Apply took (for the store-latency histogram).
  using LatencyCallback = std::function<void(absl::Duration)>;

  // `store` outlives the committer. `on_commit` (may be null) runs on the
  // committer thread after every Store::Apply with its duration;
  // `on_failure` (may be null) runs once, on the committer thread, when a
  // commit fails.
  explicit Committer(Store* store, LatencyCallback on_commit = nullptr,
                     std::function<void(const absl::Status&)> on_failure = nullptr);
  // Commits what is queued, then stops the thread.
  ~Committer();
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  // Queues `ops` (may be empty: a barrier) and `done` (may be null). `done`
  // runs after the commit holding `ops` and everything queued before it, with
  // its status. Never blocks on I/O. The queue lock is a leaf: callers may
  // hold run and stream locks (callbacks take those, but never while the
  // committer holds its own lock).
  void Enqueue(std::vector<StoreOp> ops, Callback done = nullptr);

  // Blocks until everything queued so far is committed (or failed). Tests and
  // shutdown.
  void Flush();

  // OK, or the error of the commit that failed.
  absl::Status status() const;
  // Bytes of op values queued and not yet committed (the memory the group
  // commit holds; compared against the server's memory budget).
  size_t pending_bytes() const;
  // Commits done so far (tests, metrics).
  uint64_t commits() const;

 private:
  struct Entry {
    std::vector<StoreOp> ops;
    Callback done;
    size_t bytes = 0;
  };
  void Loop();

  Store* const store_;
  const LatencyCallback on_commit_;
  const std::function<void(const absl::Status&)> on_failure_;
  mutable absl::Mutex mu_;
  std::deque<Entry> queue_ ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;  // entries queued, ever
  uint64_t finished_ ABSL_GUARDED_BY(mu_) = 0;  // entries whose callback ran
  uint64_t commits_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_STORAGE_COMMITTER_H_
