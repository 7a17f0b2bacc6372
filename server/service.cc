#include "server/service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <utility>

#include "absl/strings/str_format.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"

namespace spotter {
namespace {

// Diagnostics are dropped (latest wins later) rather than queued without
// bound when a client reads slowly; directives, acks and rejects never are.
constexpr size_t kMaxQueuedDroppable = 64;

grpc::ByteBuffer Serialize(const google::protobuf::Message& msg) {
  grpc::ByteBuffer out;
  bool own = false;
  grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(msg, &out, &own);
  return out;
}

// Parses a request or stream message after checking its size. Consumes
// `raw`. INVALID_ARGUMENT (reason unparseable) or RESOURCE_EXHAUSTED
// (reason message_too_large).
absl::Status ParseMessage(grpc::ByteBuffer* raw, const Limits& limits,
                          google::protobuf::Message* out) {
  const size_t n = raw->Length();
  if (static_cast<int64_t>(n) > limits.max_message_bytes) {
    return WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                          "a %s of %d bytes exceeds the server's limit of %d bytes "
                          "(--max_message_bytes)",
                          out->GetTypeName(), n, limits.max_message_bytes)),
                      "message_too_large");
  }
  grpc::Status s = grpc::GenericDeserialize<grpc::ProtoBufferReader, google::protobuf::Message>(
      raw, out);
  if (!s.ok()) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "the %d bytes received are not a valid %s", n, out->GetTypeName())),
                      "unparseable");
  }
  return absl::OkStatus();
}

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
  ConnectReactor(SpotterServiceImpl* svc, grpc::CallbackServerContext* ctx)
      : svc_(svc), target_(std::make_shared<AckTarget>(this)) {
    svc_->deps().metrics->streams.Increment();
    last_activity_.store(absl::ToUnixNanos(svc_->deps().clock->Now()));
    if (absl::Status s = svc_->Track(this); !s.ok()) {
      FinishAfterWrites(ToGrpcStatus(s));
      return;
    }
    absl::StatusOr<const Principal*> caller = svc_->Authenticate(ctx, Rpc::kConnect);
    if (!caller.ok()) {
      FinishAfterWrites(ToGrpcStatus(caller.status()));
      return;
    }
    caller_ = *caller;
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
    last_activity_.store(absl::ToUnixNanos(svc_->deps().clock->Now()));
    const absl::Time start = absl::Now();
    const bool more = Handle();
    svc_->deps().metrics->ObserveRpc("Connect", absl::ToDoubleSeconds(absl::Now() - start));
    if (more) MaybeRead();
  }

  void OnDone() override {
    target_->Detach();
    if (run_) run_->Leave(rank_, this);
    svc_->Untrack(this);
    svc_->deps().metrics->streams.Decrement();
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

  // A commit covering message `seq` completed (committer thread).
  void Delivered(uint64_t seq, const absl::Status& status) {
    bool resume = false;
    {
      absl::MutexLock l(&mu_);
      --unacked_;
      if (!status.ok()) {
        svc_->CountReject(WithReason(status, "store_failed"));
        FinishAfterWritesLocked(grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
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
      if (paused_ && !finishing() && unacked_ < svc_->limits().max_unacked_per_stream) {
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
      if (unacked_ >= svc_->limits().max_unacked_per_stream) {
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
    svc_->committer().Enqueue({}, [t = target_, seq](const absl::Status& s) {
      t->Deliver(seq, s);
    });
  }

  // Handles buf_; false when the stream is being closed.
  bool Handle() {
    ServerMetrics& m = *svc_->deps().metrics;
    const Limits& limits = svc_->limits();
    const size_t bytes = buf_.Length();
    if (static_cast<int64_t>(svc_->committer().pending_bytes() + bytes) >
        limits.memory_budget_bytes) {
      absl::Status s = WithReason(
          absl::ResourceExhaustedError(absl::StrFormat(
              "the server's memory budget (--memory_budget_bytes %d) is taken by uploads "
              "awaiting their commit; reconnect later: unacknowledged uploads are replayed",
              limits.memory_budget_bytes)),
          "memory_budget");
      svc_->CountReject(s);
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
      Reject(seq,
             {v1::REJECT_REASON_TOO_LARGE,
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
        std::optional<Rejection> rej =
            DecodeSketch(b, run_->config().sketch_dim(), limits, &rows_);
        bool duplicate = false;
        if (!rej) rej = run_->Ingest(rank_, b, rows_, &duplicate);
        if (rej) {
          Reject(b.seq(), *rej);
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
          Reject(req.eval().seq(), *rej);
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
    absl::StatusOr<std::shared_ptr<Run>> run = svc_->registry().Get(hello.run());
    absl::Status status = run.status();
    if (run.ok()) {
      status = Authorizer::AuthorizeRun(caller_, Rpc::kConnect, hello.run(), (*run)->owner());
    }
    if (status.ok()) {
      absl::StatusOr<RankState*> rank = (*run)->Join(hello, this);
      status = rank.status();
      if (rank.ok()) {
        run_ = *run;
        rank_ = *rank;
        return true;
      }
    }
    svc_->CountReject(status);
    FinishAfterWrites(ToGrpcStatus(status));
    return false;
  }

  bool NoHello() {
    svc_->CountReject(WithReason(absl::InvalidArgumentError(""),
                                 RejectReasonLabel(v1::REJECT_REASON_NO_HELLO)));
    FinishAfterWrites(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "the first message of a Connect stream must be a Hello"));
    return false;
  }

  void Reject(uint64_t seq, const Rejection& rej) {
    svc_->deps().metrics->CountReject(rej.label ? rej.label : RejectReasonLabel(rej.reason));
    if (run_) run_->NoteReject(rank_);
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

  SpotterServiceImpl* const svc_;
  const std::shared_ptr<AckTarget> target_;
  const Principal* caller_ = nullptr;
  grpc::ByteBuffer buf_;  // the message being read
  RowMatrixXf rows_;      // decode buffer, reused
  std::shared_ptr<Run> run_;
  RankState* rank_ = nullptr;
  std::atomic<int64_t> last_activity_{0};  // unix nanos on the deps clock
  uint64_t ack_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t unacked_ ABSL_GUARDED_BY(mu_) = 0;  // messages awaiting their commit
  bool paused_ ABSL_GUARDED_BY(mu_) = false;   // not reading: too many unacked
  bool end_when_acked_ ABSL_GUARDED_BY(mu_) = false;  // the run ended
};

void AckTarget::Deliver(uint64_t seq, const absl::Status& status) {
  absl::MutexLock l(&mu_);
  if (reactor_ != nullptr) reactor_->Delivered(seq, status);
}

// A WatchRun stream: the run's points, transitions and directives.
class WatchReactor final : public QueuedStream<grpc::ServerWriteReactor<grpc::ByteBuffer>>,
                           public RunObserver {
 public:
  WatchReactor(SpotterServiceImpl* svc, grpc::CallbackServerContext* ctx,
               const grpc::ByteBuffer* raw)
      : svc_(svc) {
    svc_->deps().metrics->watchers.Increment();
    if (absl::Status s = svc_->Track(this); !s.ok()) {
      FinishAfterWrites(ToGrpcStatus(s));
      return;
    }
    v1::WatchRunRequest req;
    grpc::ByteBuffer copy(*raw);
    absl::Status status = ParseMessage(&copy, svc_->limits(), &req);
    absl::StatusOr<const Principal*> caller = nullptr;
    if (status.ok()) {
      caller = svc_->Authenticate(ctx, Rpc::kWatchRun);
      if (!caller.ok()) {
        FinishAfterWrites(ToGrpcStatus(caller.status()));
        return;
      }
    }
    absl::StatusOr<std::shared_ptr<Run>> run = status.ok() ? svc_->registry().Get(req.name())
                                                           : absl::StatusOr<std::shared_ptr<Run>>(status);
    status = run.status();
    if (status.ok()) status = (*run)->Watch(this, req.include_history());
    if (!status.ok()) {
      svc_->CountReject(status);
      FinishAfterWrites(ToGrpcStatus(status));
      return;
    }
    run_ = *run;
  }

  void OnDone() override {
    if (run_) run_->Unwatch(this);
    svc_->Untrack(this);
    svc_->deps().metrics->watchers.Decrement();
    delete this;
  }

  void OnDirective(const v1::Directive& d) override {
    v1::WatchRunResponse r;
    *r.mutable_directive() = d;
    Send(r);
  }
  void OnPoint(const v1::TrajectoryPoint& p) override {
    v1::WatchRunResponse r;
    *r.mutable_point() = p;
    Send(r);
  }
  void OnTransition(const v1::PhaseTransition& t) override {
    v1::WatchRunResponse r;
    *r.mutable_transition() = t;
    Send(r);
  }
  void OnEnded(v1::RunState state) override {
    v1::WatchRunResponse r;
    r.set_state(state == v1::RUN_STATE_ACTIVE ? v1::RUN_STATE_FINISHED : state);
    Send(r);
    FinishAfterWrites(grpc::Status::OK);
  }

 private:
  SpotterServiceImpl* const svc_;
  std::shared_ptr<Run> run_;
};

// What a unary handler decided.
template <typename Resp>
struct UnaryResult {
  absl::Status status;
  // Reply once everything queued so far is durable (the call changed state).
  bool after_commit = false;
  // Fills the response (after the commit when after_commit).
  std::function<void(Resp*)> fill;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

SpotterServiceImpl::SpotterServiceImpl(const ServiceOptions& options)
    : options_(options), authorizer_(options.tokens), registry_(options.deps) {
  if (options_.idle_timeout > absl::ZeroDuration() &&
      options_.idle_sweep_interval > absl::ZeroDuration()) {
    sweeper_ = std::thread([this] { SweepLoop(); });
  }
}

SpotterServiceImpl::~SpotterServiceImpl() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (sweeper_.joinable()) sweeper_.join();
}

void SpotterServiceImpl::SweepLoop() {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.idle_sweep_interval)) {
        return;
      }
    }
    SweepIdleStreams();
  }
}

int SpotterServiceImpl::SweepIdleStreams() {
  if (options_.idle_timeout <= absl::ZeroDuration()) return 0;
  const absl::Time cutoff = options_.deps.clock->Now() - options_.idle_timeout;
  const absl::Status idle = WithReason(
      absl::ResourceExhaustedError(absl::StrFormat(
          "no message on this stream for %s (--idle_timeout); clients send heartbeats while "
          "idle",
          absl::FormatDuration(options_.idle_timeout))),
      "idle_timeout");
  int n = 0;
  absl::MutexLock l(&mu_);
  for (StoppableStream* s : streams_) {
    if (s->IdleSince(cutoff)) {
      s->Stop(ToGrpcStatus(idle));
      CountReject(idle);
      ++n;
    }
  }
  return n;
}

absl::Status SpotterServiceImpl::Track(StoppableStream* s) {
  absl::Status status;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return absl::UnavailableError("server shutting down");
    if (streams_.size() >= options_.deps.limits.max_streams) {
      status = WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                              "the server has %d streams open, its limit (--max_streams)",
                              streams_.size())),
                          "stream_quota");
    } else {
      streams_.insert(s);
      return absl::OkStatus();
    }
  }
  CountReject(status);
  return status;
}

void SpotterServiceImpl::Untrack(StoppableStream* s) {
  absl::MutexLock l(&mu_);
  streams_.erase(s);
}

void SpotterServiceImpl::StopStreams() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  for (StoppableStream* s : streams_) {
    s->Stop(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
  }
}

void SpotterServiceImpl::CountReject(const absl::Status& status) {
  if (!status.ok()) options_.deps.metrics->CountReject(ReasonLabel(status));
}

absl::StatusOr<const Principal*> SpotterServiceImpl::Authenticate(
    const grpc::CallbackServerContext* ctx, Rpc rpc) {
  absl::string_view header;
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    header = absl::string_view(it->second.data(), it->second.size());
  }
  absl::StatusOr<const Principal*> p = authorizer_.Authenticate(header, rpc);
  if (!p.ok()) CountReject(p.status());
  return p;
}

template <typename Req, typename Resp, typename Handler>
grpc::ServerUnaryReactor* SpotterServiceImpl::Unary(grpc::CallbackServerContext* ctx, Rpc rpc,
                                                    const grpc::ByteBuffer* raw,
                                                    grpc::ByteBuffer* out, Handler handler) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto finish = [this, reactor, out, rpc, start](absl::Status status, const Resp* resp) {
    if (status.ok() && resp != nullptr) *out = Serialize(*resp);
    CountReject(status);
    options_.deps.metrics->ObserveRpc(RpcName(rpc), absl::ToDoubleSeconds(absl::Now() - start));
    reactor->Finish(ToGrpcStatus(status));
  };
  Req req;
  grpc::ByteBuffer copy(*raw);
  if (absl::Status s = ParseMessage(&copy, limits(), &req); !s.ok()) {
    finish(s, nullptr);
    return reactor;
  }
  absl::StatusOr<const Principal*> caller = Authenticate(ctx, rpc);
  if (!caller.ok()) {
    // Counted by Authenticate.
    options_.deps.metrics->ObserveRpc(RpcName(rpc), absl::ToDoubleSeconds(absl::Now() - start));
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  UnaryResult<Resp> r = handler(*caller, req);
  if (!r.status.ok()) {
    finish(r.status, nullptr);
    return reactor;
  }
  if (!r.after_commit) {
    Resp resp;
    if (r.fill) r.fill(&resp);
    finish(absl::OkStatus(), &resp);
    return reactor;
  }
  committer().Enqueue({}, [finish, fill = std::move(r.fill)](const absl::Status& cs) {
    if (!cs.ok()) {
      finish(WithReason(absl::UnavailableError(absl::StrFormat(
                            "the server cannot persist its state (%s); the change may be "
                            "lost: retry after the server restarts",
                            cs.message())),
                        "store_failed"),
             nullptr);
      return;
    }
    Resp resp;
    if (fill) fill(&resp);
    finish(absl::OkStatus(), &resp);
  });
  return reactor;
}

grpc::ServerUnaryReactor* SpotterServiceImpl::OpenRun(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* raw,
                                                      grpc::ByteBuffer* out) {
  return Unary<v1::OpenRunRequest, v1::OpenRunResponse>(
      ctx, Rpc::kOpenRun, raw, out,
      [this](const Principal* caller, const v1::OpenRunRequest& req) {
        UnaryResult<v1::OpenRunResponse> r;
        // A trainer may join an existing run only when it owns it or holds
        // a grant for it, and create one only within its grants.
        if (absl::StatusOr<std::shared_ptr<Run>> existing = registry_.Get(req.name());
            existing.ok()) {
          r.status = Authorizer::AuthorizeRun(caller, Rpc::kOpenRun, req.name(),
                                              (*existing)->owner());
        } else {
          r.status = Authorizer::AuthorizeCreate(caller, req.name());
        }
        if (!r.status.ok()) return r;
        absl::StatusOr<RunRegistry::Opened> opened =
            registry_.Open(req.name(), req.config(), caller ? caller->name : "");
        if (opened.ok() && !opened->created) {
          // Lost a race with another creator: check ownership again.
          r.status = Authorizer::AuthorizeRun(caller, Rpc::kOpenRun, req.name(),
                                              opened->run->owner());
          if (!r.status.ok()) return r;
        }
        r.status = opened.status();
        if (!opened.ok()) return r;
        // Also for an existing run: its creation may still be in flight.
        r.after_commit = true;
        r.fill = [run = opened->run, created = opened->created](v1::OpenRunResponse* resp) {
          *resp->mutable_run() = run->Info();
          resp->set_created(created);
        };
        return r;
      });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* SpotterServiceImpl::Connect(
    grpc::CallbackServerContext* ctx) {
  return new ConnectReactor(this, ctx);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::GetRun(grpc::CallbackServerContext* ctx,
                                                     const grpc::ByteBuffer* raw,
                                                     grpc::ByteBuffer* out) {
  return Unary<v1::GetRunRequest, v1::GetRunResponse>(
      ctx, Rpc::kGetRun, raw, out, [this](const Principal*, const v1::GetRunRequest& req) {
        UnaryResult<v1::GetRunResponse> r;
        absl::StatusOr<std::shared_ptr<Run>> run = registry_.Get(req.name());
        r.status = run.status();
        if (run.ok()) r.fill = [run = *run](v1::GetRunResponse* resp) {
          *resp->mutable_run() = run->Info();
        };
        return r;
      });
}

grpc::ServerUnaryReactor* SpotterServiceImpl::ListRuns(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* raw,
                                                       grpc::ByteBuffer* out) {
  return Unary<v1::ListRunsRequest, v1::ListRunsResponse>(
      ctx, Rpc::kListRuns, raw, out, [this](const Principal*, const v1::ListRunsRequest& req) {
        UnaryResult<v1::ListRunsResponse> r;
        if (!v1::RunState_IsValid(req.state())) {
          r.status = absl::InvalidArgumentError(absl::StrFormat(
              "state %d: expected UNSPECIFIED, ACTIVE or FINISHED", req.state()));
          return r;
        }
        const v1::RunState want = req.state();
        r.fill = [this, want](v1::ListRunsResponse* resp) {
          for (const auto& run : registry_.List()) {
            v1::RunSummary s = run->Summary();
            if (want == v1::RUN_STATE_UNSPECIFIED || s.state() == want) {
              *resp->add_runs() = std::move(s);
            }
          }
        };
        return r;
      });
}

grpc::ServerUnaryReactor* SpotterServiceImpl::GetTrajectory(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* raw,
                                                            grpc::ByteBuffer* out) {
  return Unary<v1::GetTrajectoryRequest, v1::GetTrajectoryResponse>(
      ctx, Rpc::kGetTrajectory, raw, out,
      [this](const Principal*, const v1::GetTrajectoryRequest& req) {
        UnaryResult<v1::GetTrajectoryResponse> r;
        absl::StatusOr<std::shared_ptr<Run>> run = registry_.Get(req.name());
        r.status = run.status();
        if (run.ok()) {
          r.fill = [run = *run, since = req.since_step()](v1::GetTrajectoryResponse* resp) {
            *resp = run->Trajectory(since);
          };
        }
        return r;
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SpotterServiceImpl::WatchRun(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  return new WatchReactor(this, ctx, raw);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::OverridePhase(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* raw,
                                                            grpc::ByteBuffer* out) {
  return Unary<v1::OverridePhaseRequest, v1::OverridePhaseResponse>(
      ctx, Rpc::kOverridePhase, raw, out,
      [this](const Principal*, const v1::OverridePhaseRequest& req) {
        UnaryResult<v1::OverridePhaseResponse> r;
        absl::StatusOr<std::shared_ptr<Run>> run = registry_.Get(req.name());
        r.status = run.status();
        if (!run.ok()) return r;
        std::optional<v1::Directive> issued;
        r.status = (*run)->Override(req, &issued);
        if (!r.status.ok()) return r;
        r.after_commit = true;
        r.fill = [run = *run, issued](v1::OverridePhaseResponse* resp) {
          *resp->mutable_run() = run->Info();
          if (issued) *resp->mutable_directive() = *issued;
        };
        return r;
      });
}

grpc::ServerUnaryReactor* SpotterServiceImpl::FinishRun(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* raw,
                                                        grpc::ByteBuffer* out) {
  return Unary<v1::FinishRunRequest, v1::FinishRunResponse>(
      ctx, Rpc::kFinishRun, raw, out, [this](const Principal*, const v1::FinishRunRequest& req) {
        UnaryResult<v1::FinishRunResponse> r;
        absl::StatusOr<std::shared_ptr<Run>> run = registry_.Get(req.name());
        r.status = run.status();
        if (!run.ok()) return r;
        (*run)->Finish(req.reason());
        r.after_commit = true;
        r.fill = [run = *run](v1::FinishRunResponse* resp) { *resp->mutable_run() = run->Info(); };
        return r;
      });
}

grpc::ServerUnaryReactor* SpotterServiceImpl::DeleteRun(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* raw,
                                                        grpc::ByteBuffer* out) {
  return Unary<v1::DeleteRunRequest, v1::DeleteRunResponse>(
      ctx, Rpc::kDeleteRun, raw, out, [this](const Principal*, const v1::DeleteRunRequest& req) {
        UnaryResult<v1::DeleteRunResponse> r;
        r.status = registry_.Delete(req.name());
        r.after_commit = r.status.ok();
        return r;
      });
}

}  // namespace spotter
