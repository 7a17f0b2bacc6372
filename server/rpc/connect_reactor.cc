#include "server/rpc/connect_reactor.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>

#include "absl/strings/str_format.h"
#include "server/rpc/messages.h"
#include "server/rpc/queued_stream.h"
#include "server/runs/rejection.h"

namespace spotter {
namespace {

class ConnectReactor;

// Where a Connect stream's commit callbacks deliver: the reactor, until it
// is done. Shared by the reactor and every callback it has queued.
class AckTarget {
 public:
  explicit AckTarget(ConnectReactor* r) : reactor_(r) {}
  void Deliver(uint64_t seq, const absl::Status& status);
  void Detach() {
    absl::MutexLock l(&mu_);
    reactor_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  ConnectReactor* reactor_ ABSL_GUARDED_BY(mu_);
};

// One trainer stream: Hello, then sketches, eval reports and heartbeats in;
// Welcome, acks, rejects, directives and diagnostics out.
class ConnectReactor final
    : public QueuedStream<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>>,
      public RunObserver {
 public:
  ConnectReactor(StreamHost* host, grpc::CallbackServerContext* ctx)
      : host_(host), target_(std::make_shared<AckTarget>(this)) {
    host_->deps().metrics->streams.Increment();
    last_activity_.store(absl::ToUnixNanos(host_->deps().clock->Now()));
    if (absl::Status s = host_->Track(this); !s.ok()) {
      FinishAfterWrites(ToGrpcStatus(s));
      return;
    }
    absl::StatusOr<const Principal*> caller = host_->Authenticate(ctx, Rpc::kConnect);
    if (!caller.ok()) {
      FinishAfterWrites(ToGrpcStatus(caller.status()));
      return;
    }
    caller_ = *caller;
    ctx_ = ctx;  // lives until OnDone: the run header is checked at Hello
    StartRead(&buf_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call ended)
      absl::MutexLock l(&mu_);
      if (unacked_ == 0) {
        EndLocked();
      } else {
        end_when_acked_ = true;  // the acks still owed go out first
      }
      return;
    }
    last_activity_.store(absl::ToUnixNanos(host_->deps().clock->Now()));
    const absl::Time start = absl::Now();
    const bool more = Handle();
    host_->deps().metrics->ObserveRpc("Connect", absl::ToDoubleSeconds(absl::Now() - start));
    if (more) MaybeRead();
  }

  void OnDone() override {
    target_->Detach();
    if (run_) run_->Leave(rank_.state, this);
    host_->Untrack(this);
    host_->deps().metrics->streams.Decrement();
    delete this;
  }

  bool IdleSince(absl::Time cutoff) const override {
    absl::MutexLock l(&mu_);
    // Waiting on the server (commits, backpressure) is not idleness.
    return !finishing() && !paused_ && unacked_ == 0 &&
           last_activity_.load() < absl::ToUnixNanos(cutoff);
  }

  // RunObserver: called under the run's lock; only queue.
  void OnWelcome(const v1::Welcome& w) override {
    v1::ConnectResponse r;
    *r.mutable_welcome() = w;
    Send(r);
  }
  void OnDirective(const v1::Directive& d) override {
    v1::ConnectResponse r;
    *r.mutable_directive() = d;
    Send(r);
  }
  void OnPoint(const v1::TrajectoryPoint& p) override {
    v1::ConnectResponse r;
    *r.mutable_diagnostics() = p;
    Send(r, /*droppable=*/true);
  }
  void OnTransition(const v1::PhaseTransition&) override {}
  // The run ended: the stream ends once the acks still owed are sent.
  void OnEnded(v1::RunState) override {
    absl::MutexLock l(&mu_);
    if (unacked_ == 0) {
      EndLocked();
    } else {
      end_when_acked_ = true;
    }
  }

  // The run moved to another replica: end with UNAVAILABLE at once. Acks
  // still owed are not sent; the trainer replays those uploads to the new
  // owner, which drops the ones it holds as duplicates.
  void OnMoved(const absl::Status& status) override {
    absl::MutexLock l(&mu_);
    FinishAfterWritesLocked(ToGrpcStatus(status));
  }

  // A commit covering message `seq` completed (committer thread).
  void Delivered(uint64_t seq, const absl::Status& status) {
    bool resume = false;
    {
      absl::MutexLock l(&mu_);
      --unacked_;
      if (!status.ok()) {
        host_->CountReject(WithReason(status, "store_failed"));
        FinishAfterWritesLocked(
            grpc::Status(grpc::StatusCode::UNAVAILABLE,
                         absl::StrFormat("the server cannot persist uploads (%s); reconnect later: "
                                         "unacknowledged uploads are replayed",
                                         status.message())));
        return;
      }
      ack_seq_ = std::max(ack_seq_, seq);
      if (!writing_) OnIdleLocked();
      if (end_when_acked_ && unacked_ == 0) {
        EndLocked();
        return;
      }
      if (paused_ && !finishing() && unacked_ < host_->limits().max_unacked_per_stream) {
        paused_ = false;
        resume = true;
      }
    }
    if (resume) StartRead(&buf_);
  }

 private:
  // Starts the next read, unless the stream ends or has too many messages
  // awaiting their commit (then the ack that drains it resumes reading).
  void MaybeRead() {
    {
      absl::MutexLock l(&mu_);
      if (finishing()) return;
      if (unacked_ >= host_->limits().max_unacked_per_stream) {
        paused_ = true;
        return;
      }
    }
    StartRead(&buf_);
  }

  // Counts an ack as owed. Called before the message is handled, so that a
  // run ending meanwhile (OnEnded, from the committer) sees the ack owed and
  // ends the stream only after it: a Reject already sent is then always
  // followed by its ack.
  void OweAck() {
    absl::MutexLock l(&mu_);
    ++unacked_;
  }

  // Acknowledges `seq` (owed by OweAck) once everything handled so far is
  // durable.
  void AckWhenDurable(uint64_t seq) {
    host_->committer().Enqueue({},
                               [t = target_, seq](const absl::Status& s) { t->Deliver(seq, s); });
  }

  // Handles buf_; false when the stream is being closed.
  bool Handle() {
    ServerMetrics& m = *host_->deps().metrics;
    const Limits& limits = host_->limits();
    const size_t bytes = buf_.Length();
    if (static_cast<int64_t>(host_->committer().pending_bytes() + bytes) >
        limits.memory_budget_bytes) {
      absl::Status s = WithReason(
          absl::ResourceExhaustedError(absl::StrFormat(
              "the server's memory budget (--memory_budget_bytes %d) is taken by uploads "
              "awaiting their commit; reconnect later: unacknowledged uploads are replayed",
              limits.memory_budget_bytes)),
          "memory_budget");
      host_->CountReject(s);
      FinishAfterWrites(ToGrpcStatus(s));
      return false;
    }
    // An oversized message is still parsed (it is already in memory, below
    // gRPC's hard cap) so that its Reject carries its seq and the client
    // drops it instead of replaying it forever.
    const bool oversized = static_cast<int64_t>(bytes) > limits.max_message_bytes;
    Limits parse_limits = limits;
    parse_limits.max_message_bytes = std::numeric_limits<int64_t>::max();
    v1::ConnectRequest req;
    if (absl::Status s = ParseMessage(&buf_, parse_limits, &req); !s.ok()) {
      Reject(0, {v1::REJECT_REASON_MALFORMED, std::string(s.message()), "unparseable"});
      return true;
    }
    if (oversized) {
      const uint64_t seq = req.has_sketch() ? req.sketch().seq()
                           : req.has_eval() ? req.eval().seq()
                                            : 0;
      if (!run_ && !req.has_hello()) return NoHello();
      if (seq != 0) OweAck();
      Reject(seq, {v1::REJECT_REASON_TOO_LARGE,
                   absl::StrFormat("a message of %d bytes exceeds the server's limit of %d bytes "
                                   "(--max_message_bytes); send smaller batches",
                                   bytes, limits.max_message_bytes),
                   "message_too_large"});
      if (seq != 0) AckWhenDurable(seq);
      return true;
    }
    switch (req.msg_case()) {
      case v1::ConnectRequest::kHello:
        return HandleHello(req.hello());
      case v1::ConnectRequest::kSketch: {
        if (!run_) return NoHello();
        const v1::SketchBatch& b = req.sketch();
        OweAck();
        std::optional<Rejection> rej = DecodeSketch(b, run_->config().sketch_dim(), limits, &rows_);
        bool duplicate = false;
        if (!rej) rej = run_->Ingest(rank_, b, rows_, &duplicate);
        if (rej && rej->moving) return Moving(*rej);
        if (rej) {
          Reject(b.seq(), *rej);
          if (rej->reason == v1::REJECT_REASON_SUPERSEDED) return Superseded(b.seq(), *rej);
        } else if (duplicate) {
          m.duplicates.Increment();
        } else {
          m.uploads.Increment();
          m.rows.Increment(b.rows());
          m.bytes.Increment(static_cast<double>(b.data().size()));
        }
        AckWhenDurable(b.seq());
        return true;
      }
      case v1::ConnectRequest::kEval: {
        if (!run_) return NoHello();
        OweAck();
        bool duplicate = false;
        if (auto rej = run_->Report(rank_, req.eval(), &duplicate)) {
          if (rej->moving) return Moving(*rej);
          Reject(req.eval().seq(), *rej);
          if (rej->reason == v1::REJECT_REASON_SUPERSEDED) return Superseded(req.eval().seq(), *rej);
        } else if (duplicate) {
          m.duplicates.Increment();
        } else {
          m.eval_reports.Increment();
        }
        AckWhenDurable(req.eval().seq());
        return true;
      }
      case v1::ConnectRequest::kHeartbeat:
        if (!run_) return NoHello();
        run_->Heartbeat(rank_, req.heartbeat().step());
        return true;
      default:
        if (!run_) return NoHello();
        Reject(0, {v1::REJECT_REASON_MALFORMED,
                   "empty ConnectRequest; expected hello, sketch, eval or heartbeat"});
        return true;
    }
  }

  bool HandleHello(const v1::Hello& hello) {
    if (run_) {
      Reject(0, {v1::REJECT_REASON_NO_HELLO,
                 "a second Hello on this stream; open a new stream to join another run"});
      return true;
    }
    absl::Status status = host_->CheckRunHeader(ctx_, hello.run());
    absl::StatusOr<std::shared_ptr<Run>> run =
        status.ok() ? host_->runs().Get(hello.run()) : absl::StatusOr<std::shared_ptr<Run>>(status);
    if (status.ok()) status = run.status();
    if (run.ok()) {
      status = Authorizer::AuthorizeRun(caller_, Rpc::kConnect, hello.run(), (*run)->owner());
    }
    if (status.ok()) {
      absl::StatusOr<RankHandle> rank = (*run)->Join(hello, this);
      status = rank.status();
      if (rank.ok()) {
        run_ = *run;
        rank_ = *rank;
        return true;
      }
    }
    host_->CountReject(status);
    FinishAfterWrites(ToGrpcStatus(status));
    return false;
  }

  // A restarted process replaced this stream's: it ends, so a zombie trainer
  // stops sending (its reconnects get FAILED_PRECONDITION at Hello).
  bool Superseded(uint64_t seq, const Rejection& rej) {
    AckWhenDurable(seq);
    FinishAfterWrites(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, rej.message));
    return false;
  }

  // The upload reached a run frozen for a move: not applied, not
  // acknowledged; the stream ends so the trainer reconnects and replays it.
  bool Moving(const Rejection& rej) {
    const absl::Status s = WithReason(absl::UnavailableError(rej.message), "run_moving");
    host_->CountReject(s);
    FinishAfterWrites(ToGrpcStatus(s));
    return false;
  }

  bool NoHello() {
    host_->CountReject(
        WithReason(absl::InvalidArgumentError(""), RejectReasonLabel(v1::REJECT_REASON_NO_HELLO)));
    FinishAfterWrites(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "the first message of a Connect stream must be a Hello"));
    return false;
  }

  void Reject(uint64_t seq, const Rejection& rej) {
    host_->deps().metrics->CountReject(rej.label ? rej.label : RejectReasonLabel(rej.reason));
    if (run_) run_->NoteReject(rank_.state);
    v1::ConnectResponse r;
    v1::Reject* out = r.mutable_reject();
    out->set_seq(seq);
    out->set_reason(rej.reason);
    out->set_message(rej.message);
    Send(r);
  }

  // Ends the stream with OK after the writes queued so far and the ack owed.
  void EndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    OnIdleLocked();
    FinishAfterWritesLocked(grpc::Status::OK);
  }

  // Acks are coalesced: sent at once when nothing is being written, else
  // when the current writes drain, covering every seq made durable meanwhile.
  void OnIdleLocked() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ack_seq_ <= acked_) return;
    acked_ = ack_seq_;
    v1::ConnectResponse r;
    r.mutable_ack()->set_seq(acked_);
    EnqueueLocked(Serialize(r));
  }

  StreamHost* const host_;
  const std::shared_ptr<AckTarget> target_;
  const Principal* caller_ = nullptr;
  grpc::CallbackServerContext* ctx_ = nullptr;
  grpc::ByteBuffer buf_;  // the message being read
  RowMatrixXf rows_;      // decode buffer, reused
  std::shared_ptr<Run> run_;
  RankHandle rank_;
  std::atomic<int64_t> last_activity_{0};  // unix nanos on the deps clock
  uint64_t ack_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t unacked_ ABSL_GUARDED_BY(mu_) = 0;         // messages awaiting their commit
  bool paused_ ABSL_GUARDED_BY(mu_) = false;          // not reading: too many unacked
  bool end_when_acked_ ABSL_GUARDED_BY(mu_) = false;  // the run ended
};

void AckTarget::Deliver(uint64_t seq, const absl::Status& status) {
  absl::MutexLock l(&mu_);
  if (reactor_ != nullptr) reactor_->Delivered(seq, status);
}

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewConnectReactor(
    StreamHost* host, grpc::CallbackServerContext* ctx) {
  return new ConnectReactor(host, ctx);
}

}  // namespace spotter
