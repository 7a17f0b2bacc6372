#include "server/rpc/service.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/rpc/connect_reactor.h"
#include "server/rpc/messages.h"
#include "server/rpc/move_reactors.h"
#include "server/rpc/page_token.h"
#include "server/rpc/watch_reactor.h"
#include "server/runs/rejection.h"

namespace spotter {
namespace {

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

SpotterServiceImpl::SpotterServiceImpl(const ServiceOptions& options)
    : options_(options),
      authorizer_(options.tokens),
      runs_(options.deps),
      backups_(options.backup) {
  if ((options_.idle_timeout > absl::ZeroDuration() ||
       options_.finished_run_ttl > absl::ZeroDuration()) &&
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
    ExpireFinishedRuns();
  }
}

int SpotterServiceImpl::ExpireFinishedRuns() {
  if (options_.finished_run_ttl <= absl::ZeroDuration()) return 0;
  const absl::Time cutoff = options_.deps.clock->Now() - options_.finished_run_ttl;
  int n = 0;
  for (const std::shared_ptr<Run>& run : runs_.List()) {
    const std::optional<absl::Time> finished = run->FinishedAt();
    if (!finished || *finished > cutoff) continue;
    // NOT_FOUND: an operator deleted it meanwhile.
    if (runs_.Delete(run->name()).ok()) {
      options_.deps.metrics->runs_expired.Increment();
      ++n;
    }
  }
  return n;
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
      status = WithReason(
          absl::ResourceExhaustedError(absl::StrFormat(
              "the server has %d streams open, its limit (--max_streams)", streams_.size())),
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

absl::Status SpotterServiceImpl::CheckRunHeader(const grpc::CallbackServerContext* ctx,
                                                const std::string& run) const {
  const auto& md = ctx->client_metadata();
  const auto it = md.find(kRunHeader);
  if (it == md.end()) {
    if (!options_.require_run_header) return absl::OkStatus();
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "the call names run %s in its request but has no %s metadata; this "
                          "server requires it (--require_run_header: a proxy routes on it). "
                          "Send %s: %s with every call about a run",
                          run, kRunHeader, kRunHeader, run)),
                      "run_header_missing");
  }
  const absl::string_view header(it->second.data(), it->second.size());
  if (header == run) return absl::OkStatus();
  return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                        "%s metadata names run %s but the request names run %s; they must be "
                        "the same (a proxy routes on the metadata)",
                        kRunHeader, header, run)),
                    "run_header_mismatch");
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
  AddReplicaHeader(ctx);
  {
    // Also in the trailers: an error answered before any message may reach
    // the client as trailers only (spotterctl where reads either).
    absl::ReaderMutexLock l(&replica_mu_);
    if (!replica_id_.empty()) ctx->AddTrailingMetadata(kReplicaHeader, replica_id_);
  }
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
  if constexpr (requires { req.name(); }) {  // a run-scoped call (all but ListRuns)
    if (absl::Status s = CheckRunHeader(ctx, req.name()); !s.ok()) {
      finish(s, nullptr);
      return reactor;
    }
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
      finish(StoreFailed(cs), nullptr);
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
      ctx, Rpc::kOpenRun, raw, out, [this](const Principal* caller, const v1::OpenRunRequest& req) {
        UnaryResult<v1::OpenRunResponse> r;
        // A trainer may join an existing run only when it owns it or holds
        // a grant for it, and create one only within its grants.
        if (absl::StatusOr<std::shared_ptr<Run>> existing = runs_.Get(req.name()); existing.ok()) {
          r.status =
              Authorizer::AuthorizeRun(caller, Rpc::kOpenRun, req.name(), (*existing)->owner());
        } else {
          r.status = Authorizer::AuthorizeCreate(caller, req.name());
        }
        if (!r.status.ok()) return r;
        absl::StatusOr<RunRegistry::Opened> opened =
            runs_.Open(req.name(), req.config(), caller ? caller->name : "");
        if (opened.ok() && !opened->created) {
          // Lost a race with another creator: check ownership again.
          r.status =
              Authorizer::AuthorizeRun(caller, Rpc::kOpenRun, req.name(), opened->run->owner());
          if (!r.status.ok()) return r;
        }
        r.status = opened.status();
        if (!opened.ok()) return r;
        // A run moved to another replica is not reopened here: that would
        // make a second owner (docs/SCALING.md).
        r.status = opened->run->MovedStatus();
        if (!r.status.ok()) return r;
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
  AddReplicaHeader(ctx);
  return NewConnectReactor(this, ctx);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::GetRun(grpc::CallbackServerContext* ctx,
                                                     const grpc::ByteBuffer* raw,
                                                     grpc::ByteBuffer* out) {
  return Unary<v1::GetRunRequest, v1::GetRunResponse>(
      ctx, Rpc::kGetRun, raw, out, [this](const Principal*, const v1::GetRunRequest& req) {
        UnaryResult<v1::GetRunResponse> r;
        absl::StatusOr<std::shared_ptr<Run>> run = runs_.Get(req.name());
        r.status = run.status();
        if (run.ok())
          r.fill = [run = *run](v1::GetRunResponse* resp) { *resp->mutable_run() = run->Info(); };
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
          r.status = absl::InvalidArgumentError(
              absl::StrFormat("state %d: expected UNSPECIFIED, ACTIVE or FINISHED", req.state()));
          return r;
        }
        const v1::RunState want = req.state();
        absl::StatusOr<size_t> page_size = PageSize(req.page_size(), 500, 1000);
        if (!page_size.ok()) {
          r.status = page_size.status();
          return r;
        }
        // Newest first: a page starts below the creation order the token names.
        const std::string scope = absl::StrCat("runs/", want);
        uint64_t below = std::numeric_limits<uint64_t>::max();
        if (!req.page_token().empty()) {
          absl::StatusOr<uint64_t> pos = DecodePageToken(req.page_token(), scope);
          if (!pos.ok()) {
            r.status = pos.status();
            return r;
          }
          below = *pos;
        }
        r.fill = [this, want, below, scope, n = *page_size](v1::ListRunsResponse* resp) {
          uint64_t last = 0;
          for (const auto& run : runs_.List()) {
            if (run->order() >= below) continue;
            v1::RunSummary s = run->Summary();
            if (want != v1::RUN_STATE_UNSPECIFIED && s.state() != want) continue;
            if (static_cast<size_t>(resp->runs_size()) == n) {
              resp->set_next_page_token(EncodePageToken(scope, last));
              break;
            }
            last = run->order();
            *resp->add_runs() = std::move(s);
          }
        };
        return r;
      });
}

namespace {

// What a page token of GetTrajectory is bound to.
std::string TrajectoryTokenScope(const v1::GetTrajectoryRequest& req) {
  return absl::StrCat("trajectory/", req.name(), "/", req.until_step(), "/", req.max_points());
}

absl::StatusOr<TrajectoryQuery> ParseTrajectoryQuery(const v1::GetTrajectoryRequest& req) {
  constexpr size_t kMaxPage = 10000;
  TrajectoryQuery q;
  absl::StatusOr<size_t> page_size = PageSize(req.page_size(), 1000, kMaxPage);
  if (!page_size.ok()) return page_size.status();
  q.page_size = *page_size;
  if (req.max_points() > 0 && req.max_points() < 4) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "max_points %d: expected 0 (every point, paged) or at least 4 (the "
                          "first, the last and a low and high point per bucket)",
                          req.max_points())),
                      "bad_max_points");
  }
  q.max_points = std::min<size_t>(req.max_points(), kMaxPage);
  q.since_step = req.since_step();
  if (req.until_step() > 0) q.until_step = req.until_step();
  if (q.until_step < q.since_step) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "until_step %d is below since_step %d: expected until_step >= "
                          "since_step, or 0 for no bound",
                          req.until_step(), req.since_step())),
                      "bad_step_range");
  }
  if (!req.page_token().empty()) {
    absl::StatusOr<uint64_t> next = DecodePageToken(req.page_token(), TrajectoryTokenScope(req));
    if (!next.ok()) return next.status();
    q.since_step = std::max(q.since_step, *next);
  }
  return q;
}

}  // namespace

grpc::ServerUnaryReactor* SpotterServiceImpl::GetTrajectory(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* raw,
                                                            grpc::ByteBuffer* out) {
  return Unary<v1::GetTrajectoryRequest, v1::GetTrajectoryResponse>(
      ctx, Rpc::kGetTrajectory, raw, out,
      [this](const Principal*, const v1::GetTrajectoryRequest& req) {
        UnaryResult<v1::GetTrajectoryResponse> r;
        absl::StatusOr<TrajectoryQuery> q = ParseTrajectoryQuery(req);
        if (!q.ok()) {
          r.status = q.status();
          return r;
        }
        absl::StatusOr<std::shared_ptr<Run>> run = runs_.Get(req.name());
        if (!run.ok()) {
          r.status = run.status();
          return r;
        }
        absl::StatusOr<TrajectoryPage> page = (*run)->Trajectory(*q);
        if (!page.ok()) {
          r.status = page.status();
          return r;
        }
        if (page->next_step) {
          page->response.set_next_page_token(
              EncodePageToken(TrajectoryTokenScope(req), *page->next_step));
        }
        r.fill = [page = std::make_shared<v1::GetTrajectoryResponse>(
                      std::move(page->response))](v1::GetTrajectoryResponse* resp) {
          resp->Swap(page.get());
        };
        return r;
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SpotterServiceImpl::WatchRun(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  AddReplicaHeader(ctx);
  return NewWatchReactor(this, ctx, raw);
}

grpc::ServerUnaryReactor* SpotterServiceImpl::OverridePhase(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* raw,
                                                            grpc::ByteBuffer* out) {
  return Unary<v1::OverridePhaseRequest, v1::OverridePhaseResponse>(
      ctx, Rpc::kOverridePhase, raw, out,
      [this](const Principal*, const v1::OverridePhaseRequest& req) {
        UnaryResult<v1::OverridePhaseResponse> r;
        absl::StatusOr<std::shared_ptr<Run>> run = runs_.Get(req.name());
        r.status = run.status();
        if (!run.ok()) return r;
        r.status = (*run)->MovedStatus();
        if (!r.status.ok()) return r;
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
        absl::StatusOr<std::shared_ptr<Run>> run = runs_.Get(req.name());
        r.status = run.status();
        if (!run.ok()) return r;
        r.status = (*run)->MovedStatus();
        if (!r.status.ok()) return r;
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
        r.status = runs_.Delete(req.name());
        r.after_commit = r.status.ok();
        return r;
      });
}

void SpotterServiceImpl::SetReplicaId(const std::string& id) {
  absl::MutexLock l(&replica_mu_);
  replica_id_ = id;
}

void SpotterServiceImpl::AddReplicaHeader(grpc::CallbackServerContext* ctx) {
  absl::ReaderMutexLock l(&replica_mu_);
  if (!replica_id_.empty()) ctx->AddInitialMetadata(kReplicaHeader, replica_id_);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SpotterServiceImpl::ExportRun(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  AddReplicaHeader(ctx);
  return StartExport(this, ctx, raw);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* SpotterServiceImpl::ImportRun(
    grpc::CallbackServerContext* ctx, grpc::ByteBuffer* response) {
  AddReplicaHeader(ctx);
  return StartImport(this, ctx, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SpotterServiceImpl::Backup(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  return backups_.Start(this, ctx, raw);
}

}  // namespace spotter
