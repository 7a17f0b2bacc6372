#include "client/cpp/run_session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <random>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "client/cpp/channel.h"
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

// Status codes after which retrying cannot help (the same set as Python's
// PERMANENT_CODES). NOT_FOUND is not one: the run is opened again.
bool Permanent(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::FAILED_PRECONDITION ||
         code == grpc::StatusCode::PERMISSION_DENIED || code == grpc::StatusCode::UNAUTHENTICATED ||
         code == grpc::StatusCode::UNIMPLEMENTED || code == grpc::StatusCode::OUT_OF_RANGE;
}

std::string Describe(const char* rpc, const grpc::Status& s) {
  return absl::StrCat(rpc, ": code ", static_cast<int>(s.error_code()), ": ", s.error_message());
}

absl::Status ToAbsl(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// "REJECT_REASON_DIM_MISMATCH" -> "dim_mismatch", as the Python client names it.
std::string ReasonName(int reason) {
  std::string name = v1::RejectReason_IsValid(reason)
                         ? v1::RejectReason_Name(static_cast<v1::RejectReason>(reason))
                         : absl::StrCat(reason);
  if (absl::StartsWith(name, "REJECT_REASON_")) name.erase(0, sizeof("REJECT_REASON_") - 1);
  return absl::AsciiStrToLower(name);
}

}  // namespace

struct RunSession::State {
  SessionOptions o;
  std::unique_ptr<v1::SpotterService::Stub> stub;
  std::mt19937_64 rng{std::random_device{}()};  // backoff jitter; worker thread only

  mutable absl::Mutex mu;
  std::deque<Pending> queue ABSL_GUARDED_BY(mu);
  size_t cursor ABSL_GUARDED_BY(mu) = 0;    // next queue entry to write on this stream
  bool opened ABSL_GUARDED_BY(mu) = false;  // OpenRun succeeded (since the last NOT_FOUND)
  bool ever_opened ABSL_GUARDED_BY(mu) = false;
  bool welcomed_once ABSL_GUARDED_BY(mu) = false;
  bool welcomed ABSL_GUARDED_BY(mu) = false;  // on the current stream
  bool reader_done ABSL_GUARDED_BY(mu) = false;
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;  // last seq assigned
  // Arrival order, which is (generation, version) order: versions increase
  // within a generation, and a run the server re-created starts a new one.
  std::vector<Directive> directives ABSL_GUARDED_BY(mu);
  uint64_t last_version ABSL_GUARDED_BY(mu) = 0;  // highest version of this generation
  std::optional<v1::TrajectoryPoint> diagnostics ABSL_GUARDED_BY(mu);
  std::optional<v1::RunConfig> config ABSL_GUARDED_BY(mu);
  SessionStats stats ABSL_GUARDED_BY(mu);
  bool any_step ABSL_GUARDED_BY(mu) = false;
  uint64_t last_step ABSL_GUARDED_BY(mu) = 0;   // highest step queued
  uint64_t noted_step ABSL_GUARDED_BY(mu) = 0;  // from NoteStep
  bool refusing ABSL_GUARDED_BY(mu) = false;    // Close(): no more uploads
  bool closing ABSL_GUARDED_BY(mu) = false;     // Close(): end the stream
  bool ended ABSL_GUARDED_BY(mu) = false;       // the server ended the run
  absl::Status error ABSL_GUARDED_BY(mu);       // permanent error that stopped the session
  bool worker_done ABSL_GUARDED_BY(mu) = false;
  grpc::ClientContext* stream_ctx ABSL_GUARDED_BY(mu) = nullptr;
  std::thread worker;

  bool Stopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return ended || !error.ok() || worker_done;
  }

  uint64_t HeartbeatStep() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return std::max(noted_step, last_step);
  }

  void RefuseInvalid() {
    absl::MutexLock l(&mu);
    ++stats.dropped_invalid;
  }

  bool Enqueue(v1::ConnectRequest msg, uint64_t step) {
    absl::MutexLock l(&mu);
    if (any_step && step < last_step) {
      ++stats.dropped_invalid;
      return false;
    }
    if (refusing || Stopped()) {
      ++stats.dropped_closed;
      return false;
    }
    if (queue.size() >= o.queue_size) {
      ++stats.dropped;
      if (!MakeRoom(msg.has_eval())) return false;
    }
    queue.push_back({0, std::move(msg)});
    ++stats.enqueued;
    any_step = true;
    last_step = step;
    return true;
  }

  // DropPolicy::kOldest: evicts the oldest sketch, or for an eval report in
  // a queue of eval reports the oldest one. False when nothing may go.
  bool MakeRoom(bool eval) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (o.drop != DropPolicy::kOldest || queue.empty()) return false;
    auto victim = std::find_if(queue.begin(), queue.end(),
                               [](const Pending& p) { return p.msg.has_sketch(); });
    if (victim == queue.end()) {
      if (!eval) return false;
      victim = queue.begin();
    }
    const size_t i = static_cast<size_t>(victim - queue.begin());
    queue.erase(victim);
    if (i < cursor) --cursor;
    return true;
  }

  // Sleeps for `d` (+-20%) unless Close() interrupts. Returns false when closing.
  bool Backoff(absl::Duration d) {
    const double jitter = std::uniform_real_distribution<double>(0.8, 1.2)(rng);
    absl::MutexLock l(&mu);
    mu.AwaitWithTimeout(absl::Condition(&closing), d * jitter);
    return !closing;
  }

  // Every call of the session: its token and the run header a proxy routes
  // on (client/cpp/channel.h).
  void Prepare(grpc::ClientContext* ctx) const {
    AddBearerToken(ctx, o.token);
    AddRunHeader(ctx, o.run);
  }

  grpc::Status OpenRun() {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + o.open_timeout));
    v1::OpenRunRequest req;
    req.set_name(o.run);
    *req.mutable_config() = o.config;
    v1::OpenRunResponse resp;
    grpc::Status s = stub->OpenRun(&ctx, req, &resp);
    absl::MutexLock l(&mu);
    if (!s.ok()) {
      stats.last_error = Describe("OpenRun", s);
      return s;
    }
    if (resp.created() && ever_opened) {
      // The server lost the run (restart without its state): its directive
      // versions start again at 1, in a new generation.
      last_version = 0;
    }
    opened = ever_opened = true;
    if (!config) config = resp.run().config();  // the Welcome's replaces it
    return s;
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
        if (d->version > last_version) {
          last_version = d->version;
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
        ++stats.rejected[ReasonName(r.reject().reason())];
        stats.last_reject = r.reject().message();
        break;
      case v1::ConnectResponse::kDiagnostics:
        diagnostics = r.diagnostics();
        ++stats.diagnostics;
        break;
      default:
        break;
    }
  }

  void Acknowledge(uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    stats.acked_seq = std::max(stats.acked_seq, seq);
    while (!queue.empty() && queue.front().seq != 0 && queue.front().seq <= seq) {
      queue.pop_front();
      ++stats.acked;
      if (cursor > 0) --cursor;
    }
  }

  // One stream, from Hello to Finish. Returns its final status; *got_welcome
  // says whether it was welcomed.
  grpc::Status Stream(bool* got_welcome) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ConnectRequest hello;
    {
      absl::MutexLock l(&mu);
      if (closing) return grpc::Status::CANCELLED;
      stream_ctx = &ctx;
      welcomed = false;
      reader_done = false;
      if (stats.connects > 0) ++stats.reconnects;
      ++stats.connects;
      v1::Hello* h = hello.mutable_hello();
      h->set_run(o.run);
      h->set_rank(o.rank);
      *h->mutable_projection() = o.config.projection();
      h->set_last_directive_version(last_version);
      h->set_client(o.client_name);
      h->set_incarnation(o.incarnation);
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
    const absl::Time opened_at = absl::Now();
    absl::Time last_write = opened_at;
    bool last = false;
    while (ok && !last) {
      v1::ConnectRequest msg;
      {
        absl::MutexLock l(&mu);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
          return reader_done || closing || (welcomed && cursor < queue.size());
        };
        const absl::Time wake =
            welcomed ? last_write + o.heartbeat_interval : opened_at + o.welcome_timeout;
        mu.AwaitWithTimeout(absl::Condition(&ready), wake - absl::Now());
        if (reader_done) break;
        if (!welcomed) {
          if (closing) break;
          if (absl::Now() >= opened_at + o.welcome_timeout) {
            stats.last_error = "Connect: no Welcome within welcome_timeout";
            ctx.TryCancel();
            break;
          }
          continue;
        }
        if (closing) {
          // The last word: where this rank stopped.
          msg.mutable_heartbeat()->set_step(HeartbeatStep());
          ++stats.heartbeats;
          last = true;
        } else if (cursor < queue.size()) {
          Pending& p = queue[cursor++];
          if (p.seq == 0) {
            p.seq = ++last_seq;
            if (p.msg.has_sketch()) p.msg.mutable_sketch()->set_seq(p.seq);
            if (p.msg.has_eval()) p.msg.mutable_eval()->set_seq(p.seq);
          } else {
            ++stats.replayed;
          }
          msg = p.msg;
          ++stats.sent;
        } else {
          msg.mutable_heartbeat()->set_step(HeartbeatStep());
          ++stats.heartbeats;
        }
      }
      ok = stream->Write(msg);
      last_write = absl::Now();
    }
    stream->WritesDone();
    reader.join();
    grpc::Status status = stream->Finish();
    absl::MutexLock l(&mu);
    *got_welcome = welcomed;
    stream_ctx = nullptr;
    welcomed = false;
    if (!status.ok() && !closing) stats.last_error = Describe("Connect", status);
    return status;
  }

  void Run() {
    absl::Duration backoff = o.backoff_initial;
    for (;;) {
      bool need_open;
      {
        absl::MutexLock l(&mu);
        if (closing) break;
        need_open = !opened;
      }
      if (need_open) {
        grpc::Status s = OpenRun();
        if (!s.ok()) {
          if (Permanent(s.error_code())) {
            Fail(s);
            break;
          }
          if (!Backoff(backoff)) break;
          backoff = std::min(backoff * 2, o.backoff_max);
          continue;
        }
      }
      bool got_welcome = false;
      grpc::Status s = Stream(&got_welcome);
      {
        absl::MutexLock l(&mu);
        if (closing) break;
        // OK: the server ended the stream because the run ended.
        if (s.ok()) {
          ended = true;
          break;
        }
        // The server no longer knows the run (restarted without its state):
        // open it again with the same config.
        if (s.error_code() == grpc::StatusCode::NOT_FOUND) opened = false;
      }
      // A permanent error (wrong rank, projection mismatch) will not heal by
      // retrying.
      if (Permanent(s.error_code())) {
        Fail(s);
        break;
      }
      if (got_welcome) backoff = o.backoff_initial;
      if (!Backoff(backoff)) break;
      backoff = std::min(backoff * 2, o.backoff_max);
    }
    absl::MutexLock l(&mu);
    worker_done = true;
  }

  void Fail(const grpc::Status& s) {
    absl::MutexLock l(&mu);
    error = ToAbsl(s);
  }
};

RunSession::RunSession(std::unique_ptr<State> s) : s_(std::move(s)) {}

absl::StatusOr<std::unique_ptr<RunSession>> RunSession::Start(SessionOptions options) {
  if (options.queue_size < 1) return absl::InvalidArgumentError("queue_size must be >= 1");
  auto s = std::make_unique<State>();
  s->o = std::move(options);
  std::random_device rd;
  while (s->o.incarnation == 0) s->o.incarnation = (uint64_t{rd()} << 32) ^ rd();
  if (s->o.resume) {
    const v1::SessionCheckpoint& c = *s->o.resume;
    if (c.run() != s->o.run || c.rank() != s->o.rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the checkpoint to resume is of run ", c.run(), " rank ", c.rank(),
          "; this session is run ", s->o.run, " rank ", s->o.rank));
    }
    absl::MutexLock l(&s->mu);
    for (const v1::Directive& p : c.directives()) {
      absl::StatusOr<Directive> d = DirectiveFromProto(p);
      if (!d.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("the checkpoint's directive v", p.version(),
                                                       ": ", d.status().message()));
      }
      if (d->version <= s->last_version) {
        return absl::InvalidArgumentError(
            absl::StrCat("the checkpoint's directives are not in version order at v", d->version));
      }
      s->last_version = d->version;
      s->directives.push_back(*std::move(d));
    }
  }
  std::shared_ptr<grpc::Channel> channel =
      s->o.channel ? s->o.channel
                   : grpc::CreateChannel(s->o.target, grpc::InsecureChannelCredentials());
  s->stub = v1::SpotterService::NewStub(channel);
  // The first OpenRun decides between a config error (returned) and an
  // unreachable server (fail-open: the worker keeps retrying).
  grpc::Status first = s->OpenRun();
  if (!first.ok() && (Permanent(first.error_code()) || s->o.require_server)) {
    return ToAbsl(first);
  }
  State* raw = s.get();
  raw->worker = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<RunSession>(new RunSession(std::move(s)));
}

RunSession::~RunSession() { Close(); }

bool RunSession::UploadSketch(uint64_t step, const Eigen::Ref<const RowMatrixXf>& rows, double loss,
                              double lr, uint32_t samples_per_row) {
  if (rows.rows() < 1 || rows.cols() < 1 || !rows.allFinite() || std::isinf(loss) ||
      std::isinf(lr)) {
    s_->RefuseInvalid();
    return false;
  }
  v1::ConnectRequest msg;
  v1::SketchBatch* b = msg.mutable_sketch();
  b->set_step(step);
  b->set_rows(static_cast<uint32_t>(rows.rows()));
  b->set_cols(static_cast<uint32_t>(rows.cols()));
  b->set_encoding(v1::ENCODING_FLOAT32);
  const size_t row_bytes = static_cast<size_t>(rows.cols()) * sizeof(float);
  b->mutable_data()->resize(static_cast<size_t>(rows.rows()) * row_bytes);
  for (Eigen::Index i = 0; i < rows.rows(); ++i) {
    std::memcpy(b->mutable_data()->data() + i * row_bytes, rows.row(i).data(), row_bytes);
  }
  b->set_loss(loss);
  b->set_lr(lr);
  b->set_samples_per_row(samples_per_row);
  return s_->Enqueue(std::move(msg), step);
}

bool RunSession::Enqueue(v1::ConnectRequest msg, uint64_t step) {
  return s_->Enqueue(std::move(msg), step);
}

bool RunSession::ReportEval(uint64_t step, const std::map<std::string, double>& metrics) {
  v1::ConnectRequest msg;
  v1::EvalReport* r = msg.mutable_eval();
  r->set_step(step);
  for (const auto& [k, v] : metrics) {
    if (!std::isfinite(v)) {
      s_->RefuseInvalid();
      return false;
    }
    (*r->mutable_metrics())[k] = v;
  }
  return s_->Enqueue(std::move(msg), step);
}

void RunSession::NoteStep(uint64_t step) {
  absl::MutexLock l(&s_->mu);
  s_->noted_step = step;
}

std::optional<Directive> RunSession::DirectiveAt(uint64_t step) const {
  absl::MutexLock l(&s_->mu);
  const Directive* d = DirectiveInForce(s_->directives, step, /*skip_advisory=*/true);
  if (!d) return std::nullopt;
  return *d;
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

std::optional<Directive> RunSession::Advice() const {
  absl::MutexLock l(&s_->mu);
  for (auto it = s_->directives.rbegin(); it != s_->directives.rend(); ++it) {
    if (it->advisory) return *it;
  }
  return std::nullopt;
}

v1::SessionCheckpoint RunSession::Checkpoint(uint64_t step) const {
  v1::SessionCheckpoint c;
  c.set_run(s_->o.run);
  c.set_rank(s_->o.rank);
  c.set_step(step);
  absl::MutexLock l(&s_->mu);
  for (const Directive& d : s_->directives) *c.add_directives() = ToProto(d);
  return c;
}

uint64_t RunSession::incarnation() const { return s_->o.incarnation; }

std::optional<Directive> RunSession::LatestDirective() const {
  absl::MutexLock l(&s_->mu);
  if (s_->directives.empty()) return std::nullopt;
  return s_->directives.back();
}

std::vector<Directive> RunSession::Directives() const {
  absl::MutexLock l(&s_->mu);
  return s_->directives;
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
  auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) {
    return !s_->directives.empty() && s_->directives.back().version >= version;
  };
  auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) { return arrived() || s_->Stopped(); };
  s_->mu.AwaitWithTimeout(absl::Condition(&cond), timeout);
  return arrived();
}

bool RunSession::Flush(absl::Duration timeout) {
  absl::MutexLock l(&s_->mu);
  auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) {
    return s_->queue.empty() || s_->Stopped();
  };
  s_->mu.AwaitWithTimeout(absl::Condition(&cond), timeout);
  return s_->queue.empty();
}

SessionStats RunSession::stats() const {
  absl::MutexLock l(&s_->mu);
  SessionStats st = s_->stats;
  st.queued = s_->queue.size();
  st.connected = s_->welcomed;
  return st;
}

bool RunSession::connected() const {
  absl::MutexLock l(&s_->mu);
  return s_->welcomed;
}

bool RunSession::ended() const {
  absl::MutexLock l(&s_->mu);
  return s_->ended;
}

absl::Status RunSession::error() const {
  absl::MutexLock l(&s_->mu);
  return s_->error;
}

void RunSession::Close(absl::Duration timeout, bool flush) {
  if (!s_->worker.joinable()) return;
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock l(&s_->mu);
    s_->refusing = true;
  }
  if (flush) Flush(timeout);
  {
    absl::MutexLock l(&s_->mu);
    s_->closing = true;
    // Let the stream end cleanly within the deadline (at least 100 ms), then
    // cancel it.
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) { return s_->worker_done; };
    if (!s_->mu.AwaitWithTimeout(absl::Condition(&done),
                                 std::max(deadline - absl::Now(), absl::Milliseconds(100))) &&
        s_->stream_ctx != nullptr) {
      s_->stream_ctx->TryCancel();
    }
  }
  s_->worker.join();
}

}  // namespace spotter
