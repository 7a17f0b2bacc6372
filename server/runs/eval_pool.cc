#include "server/runs/eval_pool.h"

#include <utility>

namespace spotter {

EvalPool::EvalPool(int threads, size_t capacity) : capacity_(capacity) {
  for (int i = 0; i < (threads < 1 ? 1 : threads); ++i) {
    workers_.emplace_back([this] { Work(); });
  }
}

EvalPool::~EvalPool() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

bool EvalPool::Submit(std::function<void()> task) {
  absl::MutexLock l(&mu_);
  if (stopping_ || queue_.size() >= capacity_) return false;
  queue_.push_back(std::move(task));
  return true;
}

void EvalPool::Drain() {
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(
      +[](EvalPool* p)
           ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->queue_.empty() && p->running_ == 0; },
      this));
}

size_t EvalPool::queued() const {
  absl::MutexLock l(&mu_);
  return queue_.size();
}

void EvalPool::Work() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](EvalPool* p)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return !p->queue_.empty() || p->stopping_; },
          this));
      if (queue_.empty()) return;  // stopping, nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    task();
    absl::MutexLock l(&mu_);
    --running_;
  }
}

}  // namespace spotter
