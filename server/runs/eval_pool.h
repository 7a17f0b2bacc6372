// A fixed set of worker threads for the eigen work, so that it never runs on a
// gRPC thread. Bounded: Submit refuses work when the queue is full.
#ifndef SPOTTER_SERVER_RUNS_EVAL_POOL_H_
#define SPOTTER_SERVER_RUNS_EVAL_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace spotter {

// Thread-safe.
class EvalPool {
 public:
  // threads >= 1 workers; at most `capacity` tasks wait in the queue.
  EvalPool(int threads, size_t capacity);
  // Runs the queued tasks, then joins the workers.
  ~EvalPool();
  EvalPool(const EvalPool&) = delete;
  EvalPool& operator=(const EvalPool&) = delete;

  // Queues `task`; false (and the task is dropped) when the queue is full or
  // the pool is stopping.
  bool Submit(std::function<void()> task);

  // Blocks until the queue is empty and no task runs (for tests and shutdown).
  void Drain();

  size_t queued() const;

 private:
  void Work();

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_EVAL_POOL_H_
