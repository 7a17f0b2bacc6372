// The outgoing half of a server stream on the callback API: a queue of
// serialised messages with at most one write in flight, and Finish called
// exactly once (also on cancellation or a failed write). The Connect and
// WatchRun reactors derive from it.
#ifndef SPOTTER_SERVER_RPC_QUEUED_STREAM_H_
#define SPOTTER_SERVER_RPC_QUEUED_STREAM_H_

#include <cstddef>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "server/rpc/messages.h"
#include "server/rpc/stream_host.h"

namespace spotter {

// Diagnostics are dropped (latest wins later) rather than queued without
// bound when a client reads slowly; directives, acks and rejects never are.
inline constexpr size_t kMaxQueuedDroppable = 64;

// A server stream reactor with an outgoing queue: at most one write in
// flight, Finish exactly once (also on cancellation). Base is
// grpc::ServerBidiReactor<ByteBuffer, ByteBuffer> or
// grpc::ServerWriteReactor<ByteBuffer>.
template <typename Base>
class QueuedStream : public Base, public StoppableStream {
 public:
  // Queues `msg`. A droppable message is dropped when the queue is long.
  void Send(const google::protobuf::Message& msg, bool droppable = false) {
    grpc::ByteBuffer bytes = Serialize(msg);
    absl::MutexLock l(&mu_);
    if (droppable && queue_.size() >= kMaxQueuedDroppable) return;
    EnqueueLocked(std::move(bytes));
  }

  // Finishes once every queued message is written. Later calls are no-ops.
  void FinishAfterWrites(const grpc::Status& status) {
    absl::MutexLock l(&mu_);
    FinishAfterWritesLocked(status);
  }

  void Stop(const grpc::Status& status) override { FinishAfterWrites(status); }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    queue_.pop_front();
    if (!ok) {  // the stream is broken: nothing more can be written
      queue_.clear();
      writing_ = false;
      if (!finish_requested_) {
        finish_requested_ = true;
        final_ = grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
      }
      FinishLocked();
      return;
    }
    if (queue_.empty() && !finish_requested_) OnIdleLocked();
    if (!queue_.empty()) {
      this->StartWrite(&queue_.front());
      return;
    }
    writing_ = false;
    if (finish_requested_) FinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock l(&mu_);
    if (!finish_requested_) {
      finish_requested_ = true;
      final_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    if (!writing_) FinishLocked();
  }

 protected:
  // Called with mu_ held when the queue has just drained; may enqueue.
  virtual void OnIdleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}

  void EnqueueLocked(grpc::ByteBuffer msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) return;
    queue_.push_back(std::move(msg));
    if (!writing_) {
      writing_ = true;
      this->StartWrite(&queue_.front());
    }
  }

  void FinishAfterWritesLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) return;
    finish_requested_ = true;
    final_ = status;
    if (!writing_) FinishLocked();
  }

  bool finishing() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finish_requested_; }
  // Messages queued, the one being written included.
  size_t queued() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.size(); }

  mutable absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;

 private:
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    this->Finish(final_);
  }

  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);  // front() is being written
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_QUEUED_STREAM_H_
