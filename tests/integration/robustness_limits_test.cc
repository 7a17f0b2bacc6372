// Limits: message size, concurrent streams (server-wide and per run),
// watchers per run, run quotas (server-wide and per principal), the idle
// stream timeout, the memory budget and per-stream backpressure. Each breach
// is answered with RESOURCE_EXHAUSTED (or, for one oversized message on a
// stream, a Reject) with a message naming the limit, and counted.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "server/rpc/server.h"
#include "server/storage/store.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;
using testing::IsOk;

// Each test starts its own server (StartServer) with the limits it tests.
class LimitsTest : public ServerFixture {
 protected:
  uint64_t Applied(const std::string& run) {
    grpc::ClientContext ctx;
    v1::GetRunRequest req;
    req.set_name(run);
    v1::GetRunResponse resp;
    EXPECT_TRUE(stub_->GetRun(&ctx, req, &resp).ok());
    uint64_t n = 0;
    for (const v1::RankStatus& r : resp.run().ranks()) n += r.uploads();
    return n;
  }
};

TEST_F(LimitsTest, OversizedMessages) {
  ServerOptions o = TestOptions();
  o.limits.max_message_bytes = 64 << 10;
  StartServer(o);
  v1::RunConfig config = SmallConfig(1);
  config.set_sketch_dim(1024);
  config.set_sketch_rows(8);
  ASSERT_TRUE(Open("big", config).ok());
  RawStream s(stub_.get(), "big", 0);
  ASSERT_TRUE(s.AwaitWelcome());
  // 24 rows x 1024 floats = 96 KiB: over the limit, under gRPC's hard cap.
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(s.Send(Batch(1, 1, Rows(1, 1, 24, 1024))));
  ASSERT_TRUE(s.AwaitAck(1, &rejects));
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].reason(), v1::REJECT_REASON_TOO_LARGE);
  EXPECT_EQ(rejects[0].seq(), 1u);  // so that the client drops it
  EXPECT_THAT(rejects[0].message(), HasSubstr("--max_message_bytes"));
  EXPECT_EQ(Rejects("message_too_large"), 1);
  // The stream goes on.
  ASSERT_TRUE(s.Send(Batch(2, 2, Rows(1, 2, 4, 1024))));
  rejects.clear();
  ASSERT_TRUE(s.AwaitAck(2, &rejects));
  EXPECT_TRUE(rejects.empty());
  // Above twice the limit gRPC itself refuses the message (and the stream).
  ASSERT_TRUE(s.Send(Batch(3, 3, Rows(1, 3, 40, 1024))));
  EXPECT_EQ(s.Drain().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A unary request over the limit.
  v1::RunConfig labelled = SmallConfig(1);
  (*labelled.mutable_labels())["blob"] = std::string(80 << 10, 'x');
  const grpc::Status st = Open("labelled", labelled);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("--max_message_bytes"));
  EXPECT_EQ(Rejects("message_too_large"), 2);
  EXPECT_EQ(Applied("big"), 1u);
}

TEST_F(LimitsTest, StreamQuotas) {
  ServerOptions o = TestOptions();
  o.limits.max_streams = 6;
  o.limits.max_watchers_per_run = 1;
  StartServer(o);
  ASSERT_TRUE(Open("q", SmallConfig(1)).ok());  // per-run quota 2 x 1 + 2 = 4
  std::vector<std::unique_ptr<RawStream>> open;
  for (int i = 0; i < 4; ++i) {
    open.push_back(std::make_unique<RawStream>(stub_.get(), "q", 0));
    ASSERT_TRUE(open.back()->AwaitWelcome()) << i;
  }
  {
    RawStream fifth(stub_.get(), "q", 0);
    const grpc::Status st = fifth.Close();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(st.error_message(), HasSubstr("--max_streams_per_run"));
  }
  EXPECT_EQ(Rejects("run_stream_quota"), 1);
  // The refused stream counts against --max_streams until the server is done
  // with it, which may be after the client has its status.
  ASSERT_TRUE(
      Eventually([&] { return Counter(*server_, "spotter_streams{kind=\"connect\"}") == 4; }));
  // Watchers per run.
  grpc::ClientContext w1;
  v1::WatchRunRequest wreq;
  wreq.set_name("q");
  wreq.set_include_history(true);
  auto watch = stub_->WatchRun(&w1, wreq);
  v1::WatchRunResponse ev;
  ASSERT_TRUE(watch->Read(&ev));
  {
    grpc::ClientContext w2;
    auto second = stub_->WatchRun(&w2, wreq);
    while (second->Read(&ev)) {
    }
    const grpc::Status st = second->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(st.error_message(), HasSubstr("--max_watchers_per_run"));
  }
  EXPECT_EQ(Rejects("run_watcher_quota"), 1);
  // Server-wide: 4 Connect + 1 watcher open (once the refused ones are
  // done); one more fits, then none.
  ASSERT_TRUE(Eventually([&] {
    return Counter(*server_, "spotter_streams{kind=\"connect\"}") == 4 &&
           Counter(*server_, "spotter_streams{kind=\"watch\"}") == 1;
  }));
  ASSERT_TRUE(Open("other", SmallConfig(1)).ok());
  RawStream sixth(stub_.get(), "other", 0);
  ASSERT_TRUE(sixth.AwaitWelcome());
  RawStream seventh(stub_.get(), "other", 0);
  const grpc::Status st = seventh.Close();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("--max_streams"));
  EXPECT_EQ(Rejects("stream_quota"), 1);
  // Closing one frees a slot.
  EXPECT_TRUE(open.back()->Close().ok());
  ASSERT_TRUE(Eventually([&] {
    RawStream again(stub_.get(), "other", 0);
    const bool ok = again.AwaitWelcome();
    again.Close();
    return ok;
  }));
  w1.TryCancel();
  while (watch->Read(&ev)) {
  }
  watch->Finish();
}

TEST_F(LimitsTest, RunQuotas) {
  ServerOptions o = TestOptions();
  o.limits.max_runs = 3;
  o.limits.max_runs_per_principal = 2;
  auto tokens = TokenTable::Parse(
      "ops admin admin-token-0123456789abcdef\n"
      "bob trainer bob-token-0123456789abcdef\n");
  ASSERT_THAT(tokens, IsOk());
  o.tokens = *tokens;
  StartServer(o);
  const std::string bob = "bob-token-0123456789abcdef";
  const std::string ops = "admin-token-0123456789abcdef";
  ASSERT_TRUE(Open("b1", SmallConfig(1), bob).ok());
  ASSERT_TRUE(Open("b2", SmallConfig(1), bob).ok());
  grpc::Status st = Open("b3", SmallConfig(1), bob);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("--max_runs_per_principal"));
  EXPECT_EQ(Rejects("principal_run_quota"), 1);
  // Reopening one's own run is no new run.
  EXPECT_TRUE(Open("b1", SmallConfig(1), bob).ok());
  ASSERT_TRUE(Open("o1", SmallConfig(1), ops).ok());
  st = Open("o2", SmallConfig(1), ops);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("--max_runs"));
  EXPECT_EQ(Rejects("run_quota"), 1);
  // Deleting frees both quotas.
  grpc::ClientContext ctx;
  AddToken(&ctx, ops);
  v1::DeleteRunRequest req;
  req.set_name("b2");
  v1::DeleteRunResponse resp;
  ASSERT_TRUE(stub_->DeleteRun(&ctx, req, &resp).ok());
  EXPECT_TRUE(Open("b3", SmallConfig(1), bob).ok());
}

TEST_F(LimitsTest, IdleStreamsAreEnded) {
  FakeClock clock;
  ServerOptions o = TestOptions();
  o.clock = &clock;
  o.idle_timeout = absl::Seconds(30);
  o.idle_sweep_interval = absl::ZeroDuration();  // the test sweeps
  StartServer(o);
  ASSERT_TRUE(Open("idle", SmallConfig(2)).ok());
  RawStream quiet(stub_.get(), "idle", 0);
  RawStream chatty(stub_.get(), "idle", 1);
  ASSERT_TRUE(quiet.AwaitWelcome());
  ASSERT_TRUE(chatty.AwaitWelcome());
  clock.Advance(absl::Seconds(20));
  EXPECT_EQ(server_->SweepIdleStreams(), 0);
  v1::ConnectRequest hb;
  hb.mutable_heartbeat()->set_step(1);
  ASSERT_TRUE(chatty.Send(hb));
  // The heartbeat is handled when the run sees the step.
  ASSERT_TRUE(Eventually([&] {
    grpc::ClientContext ctx;
    v1::GetRunRequest req;
    req.set_name("idle");
    v1::GetRunResponse resp;
    return stub_->GetRun(&ctx, req, &resp).ok() && resp.run().max_step() == 1;
  }));
  clock.Advance(absl::Seconds(15));
  EXPECT_EQ(server_->SweepIdleStreams(), 1);
  const grpc::Status st = quiet.Drain();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("--idle_timeout"));
  EXPECT_EQ(Rejects("idle_timeout"), 1);
  EXPECT_EQ(server_->SweepIdleStreams(), 0);  // counted once
  EXPECT_TRUE(chatty.Close().ok());
}

TEST_F(LimitsTest, MemoryBudgetAndBackpressure) {
  auto memory = std::make_shared<MemoryStore>();
  auto faulty = std::make_shared<FaultInjectingStore>(memory);
  ServerOptions o = TestOptions();
  o.store = faulty;
  o.limits.memory_budget_bytes = 256 << 10;
  o.limits.max_unacked_per_stream = 8;
  // Over loopback TCP, where HTTP/2 flow control buffers what the server
  // does not read yet (the in-process transport buffers nothing).
  StartServer(o, Via::kTcp);
  ASSERT_TRUE(Open("m", SmallConfig(2)).ok());
  faulty->Stall(true);
  // Backpressure: with commits stalled a stream is read up to 8 messages
  // awaiting their commit, then no further (the rest waits in flow control).
  RawStream slow(stub_.get(), "m", 0);
  ASSERT_TRUE(slow.AwaitWelcome());
  for (uint64_t seq = 1; seq <= 20; ++seq) ASSERT_TRUE(slow.Send(Batch(seq, seq, Rows(3, seq))));
  ASSERT_TRUE(Eventually([&] { return Applied("m") >= 8; }));
  EXPECT_EQ(Applied("m"), 8u);
  // The memory budget: uploads awaiting their commit, server-wide. Large
  // batches on another stream fill it; the stream that overflows it is ended.
  RawStream big(stub_.get(), "m", 1);
  ASSERT_TRUE(big.AwaitWelcome());
  grpc::Status st;
  uint64_t sent = 0;
  for (uint64_t seq = 1; seq <= 8; ++seq) {
    if (!big.Send(Batch(seq, seq, Rows(4, seq, 400)))) break;  // 51 KB each
    sent = seq;
  }
  st = big.Drain();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("--memory_budget_bytes"));
  EXPECT_EQ(Rejects("memory_budget"), 1);
  EXPECT_GE(sent, 5u);
  // Released, everything read is acknowledged and the slow stream resumes.
  faulty->Stall(false);
  ASSERT_TRUE(slow.AwaitAck(20));
  EXPECT_TRUE(slow.Close().ok());
  EXPECT_GE(Applied("m"), 20u);
}

}  // namespace
}  // namespace spotter
