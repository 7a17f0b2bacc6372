#include "server/service.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace spotter {
namespace {

// Diagnostics are dropped (latest wins later) rather than queued without
// bound when a client reads slowly; directives, acks and rejects never are.
constexpr size_t kMaxQueuedDroppable = 64;

std::string CodeLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

// A server stream reactor with an outgoing queue: at most one write in
// flight, Finish exactly once (also on cancellation). Base is
// grpc::ServerBidiReactor<In, Out> or grpc::ServerWriteReactor<Out>.
template <typename Base, typename Out>
class QueuedStream : public Base, public StoppableStream {
 public:
  // Queues `msg`. A droppable message is dropped when the queue is long.
  void Send(Out msg, bool droppable = false) {
    absl::MutexLock l(&mu_);
    if (droppable && queue_.size() >= kMaxQueuedDroppable) return;
    EnqueueLocked(std::move(msg));
  }

  // Finishes once every queued message is written. Later calls are no-ops.
  void FinishAfterWrites(const grpc::Status& status) {
    absl::MutexLock l(&mu_);
    if (finish_requested_) return;
    finish_requested_ = true;
    final_ = status;
    if (!writing_) FinishLocked();
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

  void EnqueueLocked(Out msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) return;
    queue_.push_back(std::move(msg));
    if (!writing_) {
      writing_ = true;
      this->StartWrite(&queue_.front());
    }
  }

  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;

 private:
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    this->Finish(final_);
  }

  std::deque<Out> queue_ ABSL_GUARDED_BY(mu_);  // front() is being written
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

// One trainer stream: Hello, then sketches, eval reports and heartbeats in;
// Welcome, acks, rejects, directives and diagnostics out.
class ConnectReactor final
    : public QueuedStream<grpc::ServerBidiReactor<v1::ConnectRequest, v1::ConnectResponse>,
                          v1::ConnectResponse>,
      public RunObserver {
 public:
  explicit ConnectReactor(SpotterServiceImpl* svc) : svc_(svc) {
    svc_->deps().metrics->streams.Increment();
    if (!svc_->Track(this)) {
      FinishAfterWrites(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
      return;
    }
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call ended)
      FinishAfterWrites(grpc::Status::OK);
      return;
    }
    const absl::Time start = absl::Now();
    const bool more = Handle();
    svc_->deps().metrics->ObserveRpc("Connect", absl::ToDoubleSeconds(absl::Now() - start));
    if (more) StartRead(&req_);
  }

  void OnDone() override {
    if (run_) run_->Leave(rank_, this);
    svc_->Untrack(this);
    svc_->deps().metrics->streams.Decrement();
    delete this;
  }

  // RunObserver: called under the run's lock; only queue.
  void OnWelcome(const v1::Welcome& w) override {
    v1::ConnectResponse r;
    *r.mutable_welcome() = w;
    Send(std::move(r));
  }
  void OnDirective(const v1::Directive& d) override {
    v1::ConnectResponse r;
    *r.mutable_directive() = d;
    Send(std::move(r));
  }
  void OnPoint(const v1::TrajectoryPoint& p) override {
    v1::ConnectResponse r;
    *r.mutable_diagnostics() = p;
    Send(std::move(r), /*droppable=*/true);
  }
  void OnTransition(const v1::PhaseTransition&) override {}
  void OnEnded(v1::RunState) override { FinishAfterWrites(grpc::Status::OK); }

 private:
  // Handles req_; false when the stream is being closed.
  bool Handle() {
    ServerMetrics& m = *svc_->deps().metrics;
    switch (req_.msg_case()) {
      case v1::ConnectRequest::kHello:
        return HandleHello(req_.hello());
      case v1::ConnectRequest::kSketch: {
        if (!run_) return NoHello();
        const v1::SketchBatch& b = req_.sketch();
        std::optional<Rejection> rej =
            DecodeSketch(b, run_->config().sketch_dim(), svc_->limits(), &rows_);
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
        Ack(b.seq());
        return true;
      }
      case v1::ConnectRequest::kEval: {
        if (!run_) return NoHello();
        bool duplicate = false;
        if (auto rej = run_->Report(rank_, req_.eval(), &duplicate)) {
          Reject(req_.eval().seq(), *rej);
        } else if (duplicate) {
          m.duplicates.Increment();
        } else {
          m.eval_reports.Increment();
        }
        Ack(req_.eval().seq());
        return true;
      }
      case v1::ConnectRequest::kHeartbeat:
        if (!run_) return NoHello();
        run_->Heartbeat(rank_, req_.heartbeat().step());
        return true;
      default:
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
    auto run = svc_->registry().Get(hello.run());
    absl::Status status = run.status();
    if (run.ok()) {
      auto rank = (*run)->Join(hello, this);
      status = rank.status();
      if (rank.ok()) {
        run_ = *run;
        rank_ = *rank;
        return true;
      }
    }
    svc_->deps().metrics->CountReject(CodeLabel(status.code()));
    FinishAfterWrites(ToGrpcStatus(status));
    return false;
  }

  bool NoHello() {
    svc_->deps().metrics->CountReject(RejectReasonLabel(v1::REJECT_REASON_NO_HELLO));
    FinishAfterWrites(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "the first message of a Connect stream must be a Hello"));
    return false;
  }

  void Reject(uint64_t seq, const Rejection& rej) {
    svc_->deps().metrics->CountReject(RejectReasonLabel(rej.reason));
    if (run_) run_->NoteReject(rank_);
    v1::ConnectResponse r;
    v1::Reject* out = r.mutable_reject();
    out->set_seq(seq);
    out->set_reason(rej.reason);
    out->set_message(rej.message);
    Send(std::move(r));
  }

  // Acks are coalesced: sent at once when nothing is being written, else
  // when the current writes drain, covering every seq handled meanwhile.
  void Ack(uint64_t seq) {
    absl::MutexLock l(&mu_);
    ack_seq_ = std::max(ack_seq_, seq);
    if (!writing_) OnIdleLocked();
  }

  void OnIdleLocked() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ack_seq_ <= acked_) return;
    acked_ = ack_seq_;
    v1::ConnectResponse r;
    r.mutable_ack()->set_seq(acked_);
    EnqueueLocked(std::move(r));
  }

  SpotterServiceImpl* const svc_;
  v1::ConnectRequest req_;
  RowMatrixXf rows_;  // decode buffer, reused
  std::shared_ptr<Run> run_;
  RankState* rank_ = nullptr;
  uint64_t ack_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
};

// A WatchRun stream: the run's points, transitions and directives.
class WatchReactor final
    : public QueuedStream<grpc::ServerWriteReactor<v1::WatchRunResponse>, v1::WatchRunResponse>,
      public RunObserver {
 public:
  WatchReactor(SpotterServiceImpl* svc, const v1::WatchRunRequest& req) : svc_(svc) {
    svc_->deps().metrics->watchers.Increment();
    if (!svc_->Track(this)) {
      FinishAfterWrites(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
      return;
    }
    auto run = svc_->registry().Get(req.name());
    if (!run.ok()) {
      svc_->deps().metrics->CountReject(CodeLabel(run.status().code()));
      FinishAfterWrites(ToGrpcStatus(run.status()));
      return;
    }
    run_ = *run;
    run_->Watch(this, req.include_history());
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
    Send(std::move(r));
  }
  void OnPoint(const v1::TrajectoryPoint& p) override {
    v1::WatchRunResponse r;
    *r.mutable_point() = p;
    Send(std::move(r));
  }
  void OnTransition(const v1::PhaseTransition& t) override {
    v1::WatchRunResponse r;
    *r.mutable_transition() = t;
    Send(std::move(r));
  }
  void OnEnded(v1::RunState state) override {
    v1::WatchRunResponse r;
    r.set_state(state == v1::RUN_STATE_ACTIVE ? v1::RUN_STATE_FINISHED : state);
    Send(std::move(r));
    FinishAfterWrites(grpc::Status::OK);
  }

 private:
  SpotterServiceImpl* const svc_;
  std::shared_ptr<Run> run_;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

SpotterServiceImpl::SpotterServiceImpl(const RunDeps& deps) : deps_(deps), registry_(deps) {}

SpotterServiceImpl::~SpotterServiceImpl() = default;

bool SpotterServiceImpl::Track(StoppableStream* s) {
  absl::MutexLock l(&mu_);
  if (stopping_) return false;
  streams_.insert(s);
  return true;
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

grpc::ServerUnaryReactor* SpotterServiceImpl::Reply(grpc::CallbackServerContext* ctx,
                                                    const char* method, absl::Time start,
                                                    const absl::Status& status) {
  if (!status.ok()) deps_.metrics->CountReject(CodeLabel(status.code()));
  deps_.metrics->ObserveRpc(method, absl::ToDoubleSeconds(absl::Now() - start));
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(status));
  return r;
}

grpc::ServerUnaryReactor* SpotterServiceImpl::OpenRun(grpc::CallbackServerContext* ctx,
                                                      const v1::OpenRunRequest* req,
                                                      v1::OpenRunResponse* resp) {
  const absl::Time start = absl::Now();
  auto opened = registry_.Open(req->name(), req->config());
  if (opened.ok()) {
    *resp->mutable_run() = opened->run->Info();
    resp->set_created(opened->created);
  }
  return Reply(ctx, "OpenRun", start, opened.status());
}

grpc::ServerBidiReactor<v1::ConnectRequest, v1::ConnectResponse>* SpotterServiceImpl::Connect(
    grpc::CallbackServerContext* ctx) {
  return new ConnectReactor(this);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::GetRun(grpc::CallbackServerContext* ctx,
                                                     const v1::GetRunRequest* req,
                                                     v1::GetRunResponse* resp) {
  const absl::Time start = absl::Now();
  auto run = registry_.Get(req->name());
  if (run.ok()) *resp->mutable_run() = (*run)->Info();
  return Reply(ctx, "GetRun", start, run.status());
}

grpc::ServerUnaryReactor* SpotterServiceImpl::ListRuns(grpc::CallbackServerContext* ctx,
                                                       const v1::ListRunsRequest* req,
                                                       v1::ListRunsResponse* resp) {
  const absl::Time start = absl::Now();
  absl::Status status;
  if (!v1::RunState_IsValid(req->state())) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("state %d: expected UNSPECIFIED, ACTIVE or FINISHED", req->state()));
  } else {
    for (const auto& run : registry_.List()) {
      v1::RunSummary s = run->Summary();
      if (req->state() == v1::RUN_STATE_UNSPECIFIED || s.state() == req->state()) {
        *resp->add_runs() = std::move(s);
      }
    }
  }
  return Reply(ctx, "ListRuns", start, status);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::GetTrajectory(grpc::CallbackServerContext* ctx,
                                                            const v1::GetTrajectoryRequest* req,
                                                            v1::GetTrajectoryResponse* resp) {
  const absl::Time start = absl::Now();
  auto run = registry_.Get(req->name());
  if (run.ok()) *resp = (*run)->Trajectory(req->since_step());
  return Reply(ctx, "GetTrajectory", start, run.status());
}

grpc::ServerWriteReactor<v1::WatchRunResponse>* SpotterServiceImpl::WatchRun(
    grpc::CallbackServerContext* ctx, const v1::WatchRunRequest* req) {
  return new WatchReactor(this, *req);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::OverridePhase(grpc::CallbackServerContext* ctx,
                                                            const v1::OverridePhaseRequest* req,
                                                            v1::OverridePhaseResponse* resp) {
  const absl::Time start = absl::Now();
  auto run = registry_.Get(req->name());
  absl::Status status = run.status();
  if (run.ok()) {
    std::optional<v1::Directive> issued;
    status = (*run)->Override(*req, &issued);
    if (status.ok()) {
      *resp->mutable_run() = (*run)->Info();
      if (issued) *resp->mutable_directive() = *issued;
    }
  }
  return Reply(ctx, "OverridePhase", start, status);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::FinishRun(grpc::CallbackServerContext* ctx,
                                                        const v1::FinishRunRequest* req,
                                                        v1::FinishRunResponse* resp) {
  const absl::Time start = absl::Now();
  auto run = registry_.Get(req->name());
  if (run.ok()) {
    (*run)->Finish(req->reason());
    *resp->mutable_run() = (*run)->Info();
  }
  return Reply(ctx, "FinishRun", start, run.status());
}

grpc::ServerUnaryReactor* SpotterServiceImpl::DeleteRun(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteRunRequest* req,
                                                        v1::DeleteRunResponse* resp) {
  const absl::Time start = absl::Now();
  return Reply(ctx, "DeleteRun", start, registry_.Delete(req->name()));
}

}  // namespace spotter
