#include "server/storage/committer.h"

#include <utility>

namespace spotter {

Committer::Committer(Store* store, LatencyCallback on_commit,
                     std::function<void(const absl::Status&)> on_failure)
    : store_(store),
      on_commit_(std::move(on_commit)),
      on_failure_(std::move(on_failure)),
      thread_([this] { Loop(); }) {}

Committer::~Committer() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void Committer::Enqueue(std::vector<StoreOp> ops, Callback done) {
  size_t bytes = 0;
  for (const StoreOp& op : ops) bytes += op.value.size() + op.run.size() + 32;
  absl::MutexLock l(&mu_);
  pending_bytes_ += bytes;
  ++enqueued_;
  queue_.push_back(Entry{std::move(ops), std::move(done), bytes});
}

void Committer::Flush() {
  absl::MutexLock l(&mu_);
  const uint64_t target = enqueued_;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_ >= target; };
  mu_.Await(absl::Condition(&done));
}

absl::Status Committer::status() const {
  absl::MutexLock l(&mu_);
  return status_;
}

size_t Committer::pending_bytes() const {
  absl::MutexLock l(&mu_);
  return pending_bytes_;
}

uint64_t Committer::commits() const {
  absl::MutexLock l(&mu_);
  return commits_;
}

void Committer::Loop() {
  for (;;) {
    std::deque<Entry> group;
    absl::Status failed;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](Committer* c)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return !c->queue_.empty() || c->stopping_; },
          this));
      if (queue_.empty()) return;  // stopping, nothing left
      group.swap(queue_);
      failed = status_;
    }
    size_t bytes = 0;
    size_t nops = 0;
    for (const Entry& e : group) {
      bytes += e.bytes;
      nops += e.ops.size();
    }
    absl::Status s = failed;
    if (s.ok() && nops > 0) {
      std::vector<StoreOp> ops;
      ops.reserve(nops);
      for (Entry& e : group) {
        for (StoreOp& op : e.ops) ops.push_back(std::move(op));
      }
      const absl::Time start = absl::Now();
      s = store_->Apply(ops);
      if (on_commit_) on_commit_(absl::Now() - start);
    }
    bool newly_failed = false;
    {
      absl::MutexLock l(&mu_);
      if (!s.ok() && status_.ok()) {
        status_ = s;
        newly_failed = true;
      }
      if (nops > 0 && s.ok()) ++commits_;
      pending_bytes_ -= bytes;
    }
    if (newly_failed && on_failure_) on_failure_(s);
    for (Entry& e : group) {
      if (e.done) e.done(s);
    }
    absl::MutexLock l(&mu_);
    finished_ += group.size();
  }
}

}  // namespace spotter
