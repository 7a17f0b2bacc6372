#include "client/cpp/run_session.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "proto/convert/directive.h"

namespace spotter {
namespace {

// An upload kept until acknowledged. seq is 0 until its first send: seqs
// continue from the server's last_seq for this rank, learnt from the first
// Welcome, so a restarted trainer never collides with what was applied.
struct Pending {
  uint64_t seq = 0;
  v1::ConnectRequest msg;
};

bool Permanent(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::FAILED_PRECONDITION ||
         code == grpc::StatusCode::NOT_FOUND || code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::UNIMPLEMENTED;
}

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", static_cast<int>(s.error_code()), ": ", s.error_message());
}

}  // namespace

struct RunSession::State {
  SessionOptions o;
  std::unique_ptr<v1::SpotterService::Stub> stub;

  mutable absl::Mutex mu;
  std::deque<Pending> outbox ABSL_GUARDED_BY(mu);
  size_t cursor ABSL_GUARDED_BY(mu) = 0;  // next outbox entry to write on this stream
  bool welcomed_once ABSL_GUARDED_BY(mu) = false;
  bool welcomed ABSL_GUARDED_BY(mu) = false;  // on the current stream
  bool reader_done ABSL_GUARDED_BY(mu) = false;
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;  // last seq assigned
  std::vector<Directive> directives ABSL_GUARDED_BY(mu);
  std::optional<v1::TrajectoryPoint> diagnostics ABSL_GUARDED_BY(mu);
  std::optional<v1::RunConfig> config ABSL_GUARDED_BY(mu);
  SessionStats stats ABSL_GUARDED_BY(mu);
  uint64_t last_step ABSL_GUARDED_BY(mu) = 0;
  bool closing ABSL_GUARDED_BY(mu) = false;
  bool worker_done ABSL_GUARDED_BY(mu) = false;
  grpc::ClientContext* stream_ctx ABSL_GUARDED_BY(mu) = nullptr;
  std::thread worker;

  bool Enqueue(v1::ConnectRequest msg, uint64_t step) {
    absl::MutexLock l(&mu);
    if (closing || outbox.size() >= o.outbox_capacity) {
      ++stats.dropped;
      return false;
    }
    outbox.push_back({0, std::move(msg)});
    ++stats.uploads;
    last_step = std::max(last_step, step);
    return true;
  }

  // Sleeps for `d` unless Close() interrupts. Returns false when closing.
  bool Backoff(absl::Duration d) {
    absl::MutexLock l(&mu);
    mu.AwaitWithTimeout(absl::Condition(&closing), d);
    return !closing;
  }

  grpc::Status OpenRun() {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + o.rpc_timeout));
    v1::OpenRunRequest req;
    req.set_name(o.run);
    *req.mutable_config() = o.config;
    v1::OpenRunResponse resp;
    return stub->OpenRun(&ctx, req, &resp);
  }

  void Handle(const v1::ConnectResponse& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    switch (r.msg_case()) {
      case v1::ConnectResponse::kWelcome: {
        config = r.welcome().config();
        if (!welcomed_once) {
          welcomed_once = true;
          last_seq = std::max(last_seq, r.welcome().last_seq());
        }
        Acknowledge(r.welcome().last_seq());
        cursor = 0;  // replay everything not yet applied
        welcomed = true;
        break;
      }
      case v1::ConnectResponse::kDirective: {
        absl::StatusOr<Directive> d = DirectiveFromProto(r.directive());
        if (!d.ok()) {
          stats.last_error = std::string(d.status().message());
          break;
        }
        if (directives.empty() || d->version > directives.back().version) {
          directives.push_back(*std::move(d));
          ++stats.directives;
        }
        break;
      }
      case v1::ConnectResponse::kAck:
        Acknowledge(r.ack().seq());
        break;
      case v1::ConnectResponse::kReject:
        ++stats.rejects;
        stats.last_reject = r.reject().message();
        break;
      case v1::ConnectResponse::kDiagnostics:
        diagnostics = r.diagnostics();
        break;
      default:
        break;
    }
  }

  void Acknowledge(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    stats.acked_seq = std::max(stats.acked_seq, seq);
    while (!outbox.empty() && outbox.front().seq != 0 && outbox.front().seq <= seq) {
      outbox.pop_front();
      if (cursor > 0) --cursor;
    }
  }

  // One stream, from Hello to Finish. Returns its final status.
  grpc::Status Stream() {
    grpc::ClientContext ctx;
    v1::ConnectRequest hello;
    {
      absl::MutexLock l(&mu);
      if (closing) return grpc::Status::CANCELLED;
      stream_ctx = &ctx;
      welcomed = false;
      reader_done = false;
      ++stats.connects;
      v1::Hello* h = hello.mutable_hello();
      h->set_run(o.run);
      h->set_rank(o.rank);
      *h->mutable_projection() = o.config.projection();
      h->set_last_directive_version(directives.empty() ? 0 : directives.back().version);
      h->set_client(o.client_name);
    }
    std::unique_ptr<grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>> stream =
        stub->Connect(&ctx);
    std::thread reader([&] {
      v1::ConnectResponse r;
      while (stream->Read(&r)) {
        absl::MutexLock l(&mu);
        Handle(r);
      }
      absl::MutexLock l(&mu);
      reader_done = true;
    });
    bool ok = stream->Write(hello);
    absl::Time last_write = absl::Now();
    while (ok) {
      v1::ConnectRequest msg;
      {
        absl::MutexLock l(&mu);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
          return reader_done || closing || (welcomed && cursor < outbox.size());
        };
        mu.AwaitWithTimeout(absl::Condition(&ready),
                            last_write + o.heartbeat_interval - absl::Now());
        if (reader_done || closing) break;
        if (welcomed && cursor < outbox.size()) {
          Pending& p = outbox[cursor++];
          if (p.seq == 0) {
            p.seq = ++last_seq;
            if (p.msg.has_sketch()) p.msg.mutable_sketch()->set_seq(p.seq);
            if (p.msg.has_eval()) p.msg.mutable_eval()->set_seq(p.seq);
          }
          msg = p.msg;
          ++stats.sent;
        } else if (welcomed) {
          msg.mutable_heartbeat()->set_step(last_step);
        } else {
          continue;
        }
      }
      ok = stream->Write(msg);
      last_write = absl::Now();
    }
    stream->WritesDone();
    reader.join();
    grpc::Status status = stream->Finish();
    absl::MutexLock l(&mu);
    stream_ctx = nullptr;
    welcomed = false;
    if (!status.ok()) stats.last_error = Describe(status);
    return status;
  }

  void Run() {
    absl::Duration backoff = o.backoff_initial;
    bool opened = false;
    for (;;) {
      {
        absl::MutexLock l(&mu);
        if (closing) break;
      }
      if (!opened) {
        grpc::Status s = OpenRun();
        if (s.ok()) {
          opened = true;
        } else {
          {
            absl::MutexLock l(&mu);
            stats.last_error = Describe(s);
          }
          if (Permanent(s.error_code())) break;
          if (!Backoff(backoff)) break;
          backoff = std::min(backoff * 2, o.backoff_max);
          continue;
        }
      }
      grpc::Status s = Stream();
      bool got_welcome;
      {
        absl::MutexLock l(&mu);
        got_welcome = welcomed_once;
        if (closing) break;
      }
      // OK: the server ended the stream because the run ended. A permanent
      // error (wrong rank, projection mismatch) will not heal by retrying.
      if (s.ok() || Permanent(s.error_code())) break;
      if (got_welcome) backoff = o.backoff_initial;
      if (!Backoff(backoff)) break;
      backoff = std::min(backoff * 2, o.backoff_max);
    }
    absl::MutexLock l(&mu);
    worker_done = true;
  }
};

RunSession::RunSession(std::unique_ptr<State> s) : s_(std::move(s)) {}

absl::StatusOr<std::unique_ptr<RunSession>> RunSession::Start(SessionOptions options) {
  auto s = std::make_unique<State>();
  s->o = std::move(options);
  std::shared_ptr<grpc::Channel> channel =
      s->o.channel ? s->o.channel
                   : grpc::CreateChannel(s->o.target, grpc::InsecureChannelCredentials());
  s->stub = v1::SpotterService::NewStub(channel);
  // The first OpenRun decides between a config error (returned) and an
  // unreachable server (fail-open: the worker keeps retrying).
  grpc::Status first = s->OpenRun();
  if (!first.ok() && Permanent(first.error_code())) {
    return absl::Status(static_cast<absl::StatusCode>(first.error_code()),
                        first.error_message());
  }
  State* raw = s.get();
  raw->worker = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<RunSession>(new RunSession(std::move(s)));
}

RunSession::~RunSession() { Close(); }

bool RunSession::Upload(uint64_t step, const Eigen::Ref<const RowMatrixXf>& rows, double loss,
                        double lr, uint32_t samples_per_row) {
  v1::ConnectRequest msg;
  v1::SketchBatch* b = msg.mutable_sketch();
  b->set_step(step);
  b->set_rows(static_cast<uint32_t>(rows.rows()));
  b->set_cols(static_cast<uint32_t>(rows.cols()));
  b->set_encoding(v1::ENCODING_FLOAT32);
  std::string* data = b->mutable_data();
  data->resize(static_cast<size_t>(rows.rows() * rows.cols()) * sizeof(float));
  char* out = data->data();
  const size_t row_bytes = static_cast<size_t>(rows.cols()) * sizeof(float);
  for (Eigen::Index i = 0; i < rows.rows(); ++i) {
    std::memcpy(out + i * row_bytes, rows.row(i).data(), row_bytes);
  }
  b->set_loss(loss);
  b->set_lr(lr);
  b->set_samples_per_row(samples_per_row);
  return s_->Enqueue(std::move(msg), step);
}

bool RunSession::ReportEval(uint64_t step, const std::map<std::string, double>& metrics) {
  v1::ConnectRequest msg;
  v1::EvalReport* r = msg.mutable_eval();
  r->set_step(step);
  for (const auto& [k, v] : metrics) (*r->mutable_metrics())[k] = v;
  return s_->Enqueue(std::move(msg), step);
}

std::optional<Directive> RunSession::DirectiveAt(uint64_t step) const {
  absl::MutexLock l(&s_->mu);
  const Directive* d = DirectiveInForce(s_->directives, step, /*skip_advisory=*/true);
  if (!d) return std::nullopt;
  return *d;
}

std::optional<Directive> RunSession::LatestDirective() const {
  absl::MutexLock l(&s_->mu);
  if (s_->directives.empty()) return std::nullopt;
  return s_->directives.back();
}

double RunSession::LrAt(uint64_t step, double fallback) const {
  absl::MutexLock l(&s_->mu);
  const Directive* d = DirectiveInForce(s_->directives, step, /*skip_advisory=*/true);
  return d ? d->plan.lr.At(step) : fallback;
}

bool RunSession::ShouldStop(uint64_t step) const {
  absl::MutexLock l(&s_->mu);
  const Directive* d = DirectiveInForce(s_->directives, step, /*skip_advisory=*/true);
  return d && d->plan.stop;
}

std::optional<v1::TrajectoryPoint> RunSession::LatestDiagnostics() const {
  absl::MutexLock l(&s_->mu);
  return s_->diagnostics;
}

std::optional<v1::RunConfig> RunSession::config() const {
  absl::MutexLock l(&s_->mu);
  return s_->config;
}

bool RunSession::WaitForDirective(uint64_t version, absl::Duration timeout) const {
  absl::MutexLock l(&s_->mu);
  auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) {
    return !s_->directives.empty() && s_->directives.back().version >= version;
  };
  return s_->mu.AwaitWithTimeout(absl::Condition(&cond), timeout);
}

bool RunSession::Flush(absl::Duration timeout) {
  absl::MutexLock l(&s_->mu);
  auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) {
    return s_->outbox.empty() || s_->worker_done;
  };
  return s_->mu.AwaitWithTimeout(absl::Condition(&cond), timeout) && s_->outbox.empty();
}

SessionStats RunSession::stats() const {
  absl::MutexLock l(&s_->mu);
  return s_->stats;
}

void RunSession::Close(absl::Duration timeout) {
  if (!s_->worker.joinable()) return;
  Flush(timeout);
  {
    absl::MutexLock l(&s_->mu);
    s_->closing = true;
    // Give the stream a moment to end cleanly, then cancel it.
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) { return s_->worker_done; };
    if (!s_->mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(1)) &&
        s_->stream_ctx != nullptr) {
      s_->stream_ctx->TryCancel();
    }
  }
  s_->worker.join();
}

}  // namespace spotter
