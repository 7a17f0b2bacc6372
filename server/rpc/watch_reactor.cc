#include "server/rpc/watch_reactor.h"

#include <memory>

#include "server/rpc/messages.h"
#include "server/rpc/queued_stream.h"

namespace spotter {
namespace {

// A WatchRun stream: the run's points, transitions and directives.
class WatchReactor final : public QueuedStream<grpc::ServerWriteReactor<grpc::ByteBuffer>>,
                           public RunObserver {
 public:
  WatchReactor(StreamHost* host, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw)
      : host_(host) {
    host_->deps().metrics->watchers.Increment();
    if (absl::Status s = host_->Track(this); !s.ok()) {
      FinishAfterWrites(ToGrpcStatus(s));
      return;
    }
    v1::WatchRunRequest req;
    grpc::ByteBuffer copy(*raw);
    absl::Status status = ParseMessage(&copy, host_->limits(), &req);
    if (status.ok()) status = host_->CheckRunHeader(ctx, req.name());
    absl::StatusOr<const Principal*> caller = nullptr;
    if (status.ok()) {
      caller = host_->Authenticate(ctx, Rpc::kWatchRun);
      if (!caller.ok()) {
        FinishAfterWrites(ToGrpcStatus(caller.status()));
        return;
      }
    }
    absl::StatusOr<std::shared_ptr<Run>> run =
        status.ok() ? host_->runs().Get(req.name()) : absl::StatusOr<std::shared_ptr<Run>>(status);
    status = run.status();
    if (status.ok()) {
      status = (*run)->Watch(this, req.include_history(),
                             req.history_max_points() == 0 ? 5000 : req.history_max_points());
    }
    if (!status.ok()) {
      host_->CountReject(status);
      FinishAfterWrites(ToGrpcStatus(status));
      return;
    }
    run_ = *run;
  }

  void OnDone() override {
    if (run_) run_->Unwatch(this);
    host_->Untrack(this);
    host_->deps().metrics->watchers.Decrement();
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
  // The run moved to another replica: the watcher reconnects (through the
  // gateway, to the new owner) and asks for the history again.
  void OnMoved(const absl::Status& status) override { FinishAfterWrites(ToGrpcStatus(status)); }

 private:
  StreamHost* const host_;
  std::shared_ptr<Run> run_;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* NewWatchReactor(StreamHost* host,
                                                            grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* raw) {
  return new WatchReactor(host, ctx, raw);
}

}  // namespace spotter
