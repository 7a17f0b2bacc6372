// The real server, in-process and over TCP on port 0, with the C++ client
// and raw streams: runs, streaming, directives, bad input, metrics.
#include "server/rpc/server.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cpp/run_session.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "spotter/v1/spotter.grpc.pb.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/http.h"
#include "tests/testing/planted.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;
using testing::HttpGet;
using testing::IsOk;
using testing::ParseExposition;
using testing::PlantedGaussian;
using testing::PlantedSpectrum;

// A server with TestOptions() (no metrics endpoint: the exposer, civetweb,
// takes ~2 s to stop; MetricsOverHttp tests it, the other tests read the same
// registry through ScrapeMetrics()), in-process and over TCP.
class ServerTest : public EachTransportServerFixture {};

TEST_P(ServerTest, OpenRunIsIdempotentAndChecksConfig) {
  v1::OpenRunResponse first, again;
  ASSERT_TRUE(Open("r1", SmallConfig(), &first).ok());
  EXPECT_TRUE(first.created());
  EXPECT_EQ(first.run().config().decay(), 0.99);  // default filled in
  EXPECT_EQ(first.run().directive().version(), 1u);
  ASSERT_TRUE(Open("r1", SmallConfig(), &again).ok());
  EXPECT_FALSE(again.created());

  v1::RunConfig other = SmallConfig();
  other.set_sketch_rows(16);
  grpc::Status s = Open("r1", other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("sketch_rows"));

  v1::RunConfig bad = SmallConfig();
  bad.set_decay(1.5);
  s = Open("r2", bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("decay"));
  bad = SmallConfig();
  bad.set_sketch_rows(64);  // > sketch_dim
  EXPECT_EQ(Open("r2", bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = SmallConfig();
  bad.set_total_steps(0);
  EXPECT_EQ(Open("r2", bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Open("bad name!", SmallConfig()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const auto metrics = Scrape();
  EXPECT_GE(metrics.at("spotter_rejects_total{reason=\"invalid_argument\"}"), 4);
  EXPECT_EQ(metrics.at("spotter_rejects_total{reason=\"failed_precondition\"}"), 1);
}

TEST_P(ServerTest, TwoRanksStreamTrajectoryAndDirectives) {
  const v1::RunConfig config = SmallConfig(2, 400);
  auto r0 = Session("job", config, 0);
  auto r1 = Session("job", config, 1);
  ASSERT_TRUE(r0 && r1);
  ASSERT_TRUE(r0->WaitForDirective(1, absl::Seconds(20)));
  ASSERT_TRUE(r1->WaitForDirective(1, absl::Seconds(20)));
  // The opening directive is the warm-up: base_lr at 0 -> peak at 15%.
  EXPECT_DOUBLE_EQ(r0->LrAt(0, -1), 0.01);
  EXPECT_DOUBLE_EQ(r0->LrAt(60, -1), 0.1);

  // The trajectory grows with every chunk of steps both ranks stream.
  PlantedGaussian gen(kDim, PlantedSpectrum::PowerLaw(10, 1.0), 5);
  std::mt19937_64 rng(5);
  uint64_t points = 0;
  for (uint64_t chunk = 0; chunk < 6; ++chunk) {
    for (uint64_t step = chunk * 10; step < chunk * 10 + 10; ++step) {
      ASSERT_TRUE(r0->UploadSketch(step, gen.Sample(6, rng), 1.0 / (1 + step), r0->LrAt(step, 0)));
      ASSERT_TRUE(r1->UploadSketch(step, gen.Sample(6, rng), 1.0 / (1 + step), r1->LrAt(step, 0)));
    }
    ASSERT_TRUE(r0->Flush(absl::Seconds(20)));
    ASSERT_TRUE(r1->Flush(absl::Seconds(20)));
    server_->DrainEvaluations();  // every evaluation the uploads scheduled has run
    const v1::RunInfo info = Get("job");
    EXPECT_GT(info.points(), points) << "chunk " << chunk;
    points = info.points();
    EXPECT_GE(info.latest().step(), chunk * 10 + 5);
    EXPECT_LE(info.latest().step(), chunk * 10 + 9);
  }

  grpc::ClientContext ctx;
  v1::GetTrajectoryRequest req;
  req.set_name("job");
  v1::GetTrajectoryResponse traj;
  ASSERT_TRUE(stub_->GetTrajectory(&ctx, req, &traj).ok());
  ASSERT_EQ(traj.points_size(), static_cast<int>(points));
  const v1::TrajectoryPoint& last = traj.points(traj.points_size() - 1);
  EXPECT_GE(last.step(), 55u);
  const v1::Estimate& pr = last.covariance().participation_ratio();
  EXPECT_GT(pr.value(), 1.0);
  EXPECT_LE(pr.lower(), pr.value());
  EXPECT_GE(pr.upper(), pr.value());
  EXPECT_GE(last.covariance().effective_rank().value(), 1.0);
  // Rows seen by the last evaluation: at most everything sent (2 ranks x 60
  // steps x 6 rows); a slower rank's last batches may land after it.
  EXPECT_LE(last.rows(), 720u);
  EXPECT_GE(last.rows(), 360u);

  // The rank that streams gets the diagnostics too.
  ASSERT_TRUE(Eventually([&] { return r0->LatestDiagnostics().has_value(); }));

  // An operator forces REFINEMENT: both ranks get the directive before its
  // effective step and switch exactly there.
  grpc::ClientContext octx;
  v1::OverridePhaseRequest oreq;
  oreq.set_name("job");
  oreq.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
  oreq.set_phase(v1::PHASE_REFINEMENT);
  oreq.set_reason("test");
  v1::OverridePhaseResponse oresp;
  ASSERT_TRUE(stub_->OverridePhase(&octx, oreq, &oresp).ok());
  const uint64_t eff = oresp.directive().effective_step();
  EXPECT_GT(eff, 59u);
  EXPECT_EQ(oresp.directive().version(), 2u);
  ASSERT_TRUE(r0->WaitForDirective(2, absl::Seconds(20)));
  ASSERT_TRUE(r1->WaitForDirective(2, absl::Seconds(20)));
  for (RunSession* s : {r0.get(), r1.get()}) {
    EXPECT_DOUBLE_EQ(s->LrAt(eff - 1, -1), 0.1);
    EXPECT_DOUBLE_EQ(s->LrAt(eff, -1), 0.05);
    EXPECT_EQ(s->DirectiveAt(eff)->plan.optimizer.kind,
              OptimizerInstruction::Kind::kNaturalGradient);
  }
  const v1::RunInfo info = Get("job");
  EXPECT_EQ(info.phase(), v1::PHASE_REFINEMENT);
  ASSERT_EQ(info.transitions_size(), 1);
  EXPECT_EQ(info.transitions(0).cause(), v1::CAUSE_OVERRIDE);
  EXPECT_EQ(info.ranks_size(), 2);

  const auto metrics = Scrape();
  EXPECT_EQ(metrics.at("spotter_uploads_total"), 120);
  EXPECT_EQ(metrics.at("spotter_rows_total"), 720);
  EXPECT_EQ(metrics.at("spotter_run_phase{phase=\"refinement\",run=\"job\"}"), 1);
  EXPECT_GT(metrics.at("spotter_run_participation_ratio{run=\"job\"}"), 1);
}

TEST_P(ServerTest, LateJoinerGetsCurrentDirectiveAndReconnectGetsNoDuplicate) {
  const v1::RunConfig config = SmallConfig(3);
  auto r0 = Session("late", config, 0);
  ASSERT_TRUE(r0 && r0->WaitForDirective(1, absl::Seconds(20)));
  grpc::ClientContext octx;
  v1::OverridePhaseRequest oreq;
  oreq.set_name("late");
  oreq.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
  oreq.set_phase(v1::PHASE_POLISH);
  v1::OverridePhaseResponse oresp;
  ASSERT_TRUE(stub_->OverridePhase(&octx, oreq, &oresp).ok());
  ASSERT_TRUE(r0->WaitForDirective(2, absl::Seconds(20)));

  // A rank that joins now gets the directive in force, at once.
  auto r2 = Session("late", config, 2);
  ASSERT_TRUE(r2 && r2->WaitForDirective(2, absl::Seconds(20)));
  EXPECT_EQ(r2->LatestDirective()->plan.phase, Phase::kPolish);

  // A raw stream that says it holds v2 gets no directive, only the Welcome.
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  v1::ConnectRequest hello;
  hello.mutable_hello()->set_run("late");
  hello.mutable_hello()->set_rank(1);
  hello.mutable_hello()->mutable_projection()->set_seed(42);
  hello.mutable_hello()->set_last_directive_version(2);
  ASSERT_TRUE(stream->Write(hello));
  v1::ConnectResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_TRUE(resp.has_welcome());
  stream->WritesDone();
  int directives = 0;
  while (stream->Read(&resp)) directives += resp.has_directive();
  EXPECT_EQ(directives, 0);
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_P(ServerTest, BadInputIsRejectedAndCountedAndTheStreamGoesOn) {
  ASSERT_TRUE(Open("bad", SmallConfig()).ok());
  RawStream s(stub_.get(), "bad", 0);
  RowMatrixXf good = RowMatrixXf::Random(4, kDim);
  uint64_t seq = 0;
  struct Case {
    v1::ConnectRequest req;
    v1::RejectReason reason;
  };
  std::vector<Case> cases;
  {
    RowMatrixXf nan = good;
    nan(1, 3) = std::nanf("");
    cases.push_back({Batch(++seq, 1, nan), v1::REJECT_REASON_NON_FINITE});
  }
  {
    RowMatrixXf inf = good;
    inf(0, 0) = -INFINITY;
    cases.push_back({Batch(++seq, 1, inf), v1::REJECT_REASON_NON_FINITE});
  }
  cases.push_back(
      {Batch(++seq, 1, RowMatrixXf::Random(4, kDim + 1)), v1::REJECT_REASON_DIM_MISMATCH});
  {
    v1::ConnectRequest r = Batch(++seq, 1, good);
    r.mutable_sketch()->set_rows(5);  // does not match the bytes
    cases.push_back({r, v1::REJECT_REASON_MALFORMED});
  }
  {
    v1::ConnectRequest r = Batch(++seq, 1, good);
    r.mutable_sketch()->set_rows(0);
    r.mutable_sketch()->clear_data();
    cases.push_back({r, v1::REJECT_REASON_EMPTY});
  }
  {
    v1::ConnectRequest r = Batch(++seq, 1, good);
    r.mutable_sketch()->set_encoding(static_cast<v1::Encoding>(77));
    cases.push_back({r, v1::REJECT_REASON_UNSUPPORTED_ENCODING});
  }
  {
    RowMatrixXf tiny = RowMatrixXf::Constant(4, kDim, 1e-40f);
    cases.push_back({Batch(++seq, 1, tiny), v1::REJECT_REASON_DENORMAL});
  }
  {
    v1::ConnectRequest r;
    r.mutable_eval()->set_seq(++seq);
    (*r.mutable_eval()->mutable_metrics())["val_loss"] = INFINITY;
    cases.push_back({r, v1::REJECT_REASON_BAD_METRIC});
  }
  for (const Case& c : cases) {
    ASSERT_TRUE(s.Send(c.req));
    std::vector<v1::Reject> rejects;
    ASSERT_TRUE(
        s.AwaitAck(c.req.has_sketch() ? c.req.sketch().seq() : c.req.eval().seq(), &rejects));
    ASSERT_EQ(rejects.size(), 1u) << c.req.DebugString();
    EXPECT_EQ(rejects[0].reason(), c.reason) << rejects[0].message();
    EXPECT_FALSE(rejects[0].message().empty());
  }
  // Steps never go backwards on a rank; the stream still accepts good data.
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(s.Send(Batch(++seq, 10, good)));
  ASSERT_TRUE(s.AwaitAck(seq, &rejects));
  ASSERT_TRUE(s.Send(Batch(++seq, 9, good)));
  ASSERT_TRUE(s.AwaitAck(seq, &rejects));
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].reason(), v1::REJECT_REASON_STEP_BACKWARDS);
  // A replayed seq is acknowledged and dropped, not applied twice.
  rejects.clear();
  ASSERT_TRUE(s.Send(Batch(seq - 1, 10, good)));
  ASSERT_TRUE(s.Send(Batch(++seq, 11, good)));
  ASSERT_TRUE(s.AwaitAck(seq, &rejects));
  EXPECT_TRUE(rejects.empty());
  EXPECT_TRUE(s.Close().ok());

  const v1::RunInfo info = Get("bad");
  ASSERT_EQ(info.ranks_size(), 1);
  EXPECT_EQ(info.ranks(0).uploads(), 2u);  // seq 9 (step 10) and the last one
  EXPECT_EQ(info.ranks(0).rejects(), cases.size() + 1);
  const auto m = Scrape();
  EXPECT_EQ(m.at("spotter_rejects_total{reason=\"non_finite\"}"), 2);
  EXPECT_EQ(m.at("spotter_rejects_total{reason=\"dim_mismatch\"}"), 1);
  EXPECT_EQ(m.at("spotter_rejects_total{reason=\"malformed\"}"), 1);
  EXPECT_EQ(m.at("spotter_rejects_total{reason=\"step_backwards\"}"), 1);
  EXPECT_EQ(m.at("spotter_duplicate_uploads_total"), 1);
}

TEST_P(ServerTest, StreamsWithoutAValidHelloAreClosed) {
  ASSERT_TRUE(Open("h", SmallConfig()).ok());
  {
    RawStream s(stub_.get(), "nope", 0);
    EXPECT_EQ(s.Close().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    RawStream s(stub_.get(), "h", 7);  // world_size 2
    grpc::Status st = s.Close();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("world_size"));
  }
  {
    RawStream s(stub_.get(), "h", 0, /*token=*/"", /*seed=*/43);
    grpc::Status st = s.Close();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(st.error_message(), HasSubstr("projection"));
  }
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Connect(&ctx);
    ASSERT_TRUE(stream->Write(Batch(1, 1, RowMatrixXf::Random(2, kDim))));
    stream->WritesDone();
    v1::ConnectResponse r;
    while (stream->Read(&r)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Scrape().at("spotter_rejects_total{reason=\"no_hello\"}"), 1);
}

TEST_P(ServerTest, WatchFinishAndDelete) {
  ASSERT_TRUE(Open("w", SmallConfig(1)).ok());
  grpc::ClientContext wctx;
  v1::WatchRunRequest wreq;
  wreq.set_name("w");
  wreq.set_include_history(true);
  auto watch = stub_->WatchRun(&wctx, wreq);
  v1::WatchRunResponse ev;
  ASSERT_TRUE(watch->Read(&ev));
  EXPECT_EQ(ev.directive().version(), 1u);  // history: the opening directive

  auto s = Session("w", SmallConfig(1), 0);
  ASSERT_TRUE(s);
  PlantedGaussian gen(kDim, PlantedSpectrum::PowerLaw(8, 1.0), 9);
  std::mt19937_64 rng(9);
  for (uint64_t step = 0; step < 10; ++step) s->UploadSketch(step, gen.Sample(4, rng), 0.5, 0.1);
  ASSERT_TRUE(watch->Read(&ev));
  EXPECT_TRUE(ev.has_point());

  EXPECT_GT(Scrape().count("spotter_run_effective_rank{run=\"w\"}"), 0u);
  grpc::ClientContext fctx;
  v1::FinishRunRequest freq;
  freq.set_name("w");
  v1::FinishRunResponse fresp;
  ASSERT_TRUE(stub_->FinishRun(&fctx, freq, &fresp).ok());
  EXPECT_EQ(fresp.run().state(), v1::RUN_STATE_FINISHED);
  EXPECT_TRUE(fresp.run().directive().stop());
  // The watcher sees the stop directive, then the end of the run.
  bool saw_stop = false, saw_end = false;
  while (watch->Read(&ev)) {
    saw_stop |= ev.has_directive() && ev.directive().stop();
    saw_end |= ev.event_case() == v1::WatchRunResponse::kState;
  }
  EXPECT_TRUE(saw_stop && saw_end);
  EXPECT_TRUE(watch->Finish().ok());
  // The trainer learns to stop, and its stream ends.
  EXPECT_TRUE(Eventually([&] { return s->ShouldStop(1u << 30); }));
  // Per-run series are gone; the history stays readable.
  const auto m = Scrape();
  EXPECT_EQ(m.count("spotter_run_effective_rank{run=\"w\"}"), 0u);
  EXPECT_EQ(m.at("spotter_runs{state=\"finished\"}"), 1);
  EXPECT_EQ(Get("w").state(), v1::RUN_STATE_FINISHED);

  grpc::ClientContext dctx;
  v1::DeleteRunRequest dreq;
  dreq.set_name("w");
  v1::DeleteRunResponse dresp;
  ASSERT_TRUE(stub_->DeleteRun(&dctx, dreq, &dresp).ok());
  grpc::ClientContext gctx;
  v1::GetRunRequest greq;
  greq.set_name("w");
  v1::GetRunResponse gresp;
  EXPECT_EQ(stub_->GetRun(&gctx, greq, &gresp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Scrape().at("spotter_runs{state=\"finished\"}"), 0);
}

// A server with its metrics endpoint, over TCP.
class MetricsTest : public ServerFixture {};

TEST_F(MetricsTest, MetricsOverHttp) {
  ServerOptions o = TestOptions();
  o.metrics_address = "127.0.0.1:0";
  ASSERT_NO_FATAL_FAILURE(StartServer(o, Via::kTcp));
  ASSERT_GT(server_->metrics_port(), 0);
  auto s = Session("http", SmallConfig(1), 0);
  ASSERT_TRUE(s);
  PlantedGaussian gen(kDim, PlantedSpectrum::PowerLaw(8, 1.0), 3);
  std::mt19937_64 rng(3);
  for (uint64_t step = 0; step < 12; ++step) s->UploadSketch(step, gen.Sample(4, rng), 0.5, 0.1);
  ASSERT_TRUE(s->Flush(absl::Seconds(20)));
  ASSERT_TRUE(Eventually([&] {
    server_->DrainEvaluations();
    auto body = HttpGet(server_->metrics_port(), "/metrics");
    return body.ok() && ParseExposition(*body).count("spotter_run_effective_rank{run=\"http\"}") &&
           !std::isnan(ParseExposition(*body).at("spotter_run_effective_rank{run=\"http\"}"));
  }));
  auto body = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_THAT(body, IsOk());
  const auto m = ParseExposition(*body);
  EXPECT_EQ(m.at("spotter_uploads_total"), 12);
  EXPECT_EQ(m.at("spotter_rows_total"), 48);
  EXPECT_EQ(m.at("spotter_runs{state=\"active\"}"), 1);
  EXPECT_EQ(m.at("spotter_run_phase{phase=\"acquisition\",run=\"http\"}"), 1);
  EXPECT_EQ(m.at("spotter_run_directive_version{run=\"http\"}"), 1);
  EXPECT_GE(m.at("spotter_evaluations_total"), 1);
  EXPECT_GT(m.at("spotter_run_gradient_trace{run=\"http\"}"), 0);
  EXPECT_THAT(*body, HasSubstr("# TYPE spotter_rpc_duration_seconds histogram"));
  s->Close();
  // A bind failure is a clear error, not an exception.
  ServerOptions clash = o;
  clash.metrics_address = absl::StrCat("127.0.0.1:", server_->metrics_port());
  auto second = Server::BuildAndStart(clash);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("metrics"));
}

INSTANTIATE_TEST_SUITE_P(Transport, ServerTest, ::testing::ValuesIn(kEachVia), ViaName);

}  // namespace
}  // namespace spotter
