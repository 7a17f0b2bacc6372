#include "tests/scenarios/runner.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/util/clock.h"
#include "grpcpp/grpcpp.h"
#include "server/rpc/server.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace spotter::scenarios {
namespace {

using Stream = grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>;

std::string Floats(const RowMatrixXf& m) {
  return std::string(reinterpret_cast<const char*>(m.data()), m.size() * sizeof(float));
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

// Reads until the Ack of `seq`; a Reject or the end of the stream is an
// error. Returns whether a stop directive arrived on the way.
absl::StatusOr<bool> AwaitAck(Stream* stream, uint64_t seq) {
  v1::ConnectResponse r;
  bool stop = false;
  while (stream->Read(&r)) {
    if (r.has_reject()) {
      return absl::InternalError(
          absl::StrCat("upload ", r.reject().seq(), " rejected: ", r.reject().ShortDebugString()));
    }
    if (r.has_directive() && r.directive().stop()) stop = true;
    if (r.has_ack() && r.ack().seq() >= seq) return stop;
  }
  return absl::UnavailableError(absl::StrCat("the stream ended before the ack of ", seq));
}

}  // namespace

v1::RunConfig ScenarioConfig(const ScenarioSpec& spec) {
  v1::RunConfig c;
  c.set_sketch_dim(spec.sketch_dim);
  c.set_sketch_rows(spec.sketch_rows);
  c.set_eval_every(spec.eval_every);
  c.set_window(v1::WINDOW_KIND_EXPONENTIAL);
  c.set_decay(spec.decay);
  c.set_world_size(1);
  c.set_total_steps(spec.total_steps);
  c.set_peak_lr(0.1);
  c.mutable_projection()->set_seed(42);
  c.mutable_phase()->set_delivery_budget_seconds(kDeliveryBudgetSeconds);
  return c;
}

absl::StatusOr<ScenarioRun> RunScenario(const ScenarioSpec& spec, uint64_t seed) {
  const absl::Time start = absl::Now();
  FakeClock clock;
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.clock = &clock;
  options.idle_timeout = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(options);
  if (!server.ok()) return server.status();
  auto stub = v1::SpotterService::NewStub((*server)->InProcessChannel());
  const std::string name = absl::StrCat(spec.name, "-s", seed);

  ScenarioRun out;
  {
    grpc::ClientContext ctx;
    v1::OpenRunRequest req;
    req.set_name(name);
    *req.mutable_config() = ScenarioConfig(spec);
    v1::OpenRunResponse resp;
    const grpc::Status s = stub->OpenRun(&ctx, req, &resp);
    if (!s.ok()) return FromGrpc(s, "OpenRun");
    out.config = resp.run().config();
  }

  ScenarioGenerator gen(spec, seed);
  out.wobble_phase = gen.wobble_phase();
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub->Connect(&ctx);
  v1::ConnectRequest hello;
  hello.mutable_hello()->set_run(name);
  hello.mutable_hello()->mutable_projection()->set_seed(42);
  if (!stream->Write(hello)) return absl::UnavailableError("Hello not sent");
  const uint64_t last = spec.last_step != 0 ? spec.last_step : spec.total_steps;
  uint64_t seq = 0;
  for (uint64_t step = 0; step <= last; ++step) {
    clock.Advance(absl::Seconds(kStepSeconds));
    const RowMatrixXf rows = gen.Rows(step);
    v1::ConnectRequest batch;
    v1::SketchBatch* b = batch.mutable_sketch();
    b->set_seq(++seq);
    b->set_step(step);
    b->set_rows(static_cast<uint32_t>(rows.rows()));
    b->set_cols(static_cast<uint32_t>(rows.cols()));
    b->set_data(Floats(rows));
    b->set_loss(gen.Loss(step));
    b->set_lr(0.1);
    if (!stream->Write(batch)) return absl::UnavailableError("upload not sent");
    absl::StatusOr<bool> stop = AwaitAck(stream.get(), seq);
    if (!stop.ok()) return stop.status();
    (*server)->DrainEvaluations();
    if (const std::optional<double> val = gen.Validation(step)) {
      v1::ConnectRequest report;
      report.mutable_eval()->set_seq(++seq);
      report.mutable_eval()->set_step(step);
      (*report.mutable_eval()->mutable_metrics())["val_loss"] = *val;
      if (!stream->Write(report)) return absl::UnavailableError("report not sent");
      absl::StatusOr<bool> stop_after_report = AwaitAck(stream.get(), seq);
      if (!stop_after_report.ok()) return stop_after_report.status();
      *stop = *stop || *stop_after_report;
    }
    out.last_step = step;
    // The trainer stops (nothing decides after DONE).
    if (*stop) break;
  }
  stream->WritesDone();
  v1::ConnectResponse drain;
  while (stream->Read(&drain)) {
  }
  const grpc::Status finished = stream->Finish();
  if (!finished.ok()) return FromGrpc(finished, "Connect");
  (*server)->DrainEvaluations();

  grpc::ClientContext tctx;
  v1::GetTrajectoryRequest treq;
  treq.set_name(name);
  v1::GetTrajectoryResponse traj;
  const grpc::Status t = stub->GetTrajectory(&tctx, treq, &traj);
  if (!t.ok()) return FromGrpc(t, "GetTrajectory");
  for (const v1::PhaseTransition& x : traj.transitions()) {
    Observed o;
    o.from = x.from_phase();
    o.to = x.to_phase();
    o.cause = x.cause();
    o.effective_step = x.step();
    o.reason = x.reason();
    o.evidence.insert(x.evidence().begin(), x.evidence().end());
    auto it = o.evidence.find("step");
    o.decision_step = it != o.evidence.end() ? static_cast<uint64_t>(std::llround(it->second)) : 0;
    out.transitions.push_back(std::move(o));
  }
  for (const v1::TrajectoryPoint& p : traj.points()) {
    out.points.push_back({p.step(), p.covariance().effective_rank().value(),
                          p.covariance().effective_rank().censored(),
                          p.covariance().participation_ratio().value(), p.loss()});
  }
  stub.reset();
  (*server)->Shutdown(absl::Seconds(2));
  out.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return out;
}

}  // namespace spotter::scenarios
