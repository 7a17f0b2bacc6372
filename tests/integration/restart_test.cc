// Trainer restarts (docs/RESTARTS.md): a process that rejoins a rank with a new
// incarnation starts a new seq space and may go back in step; the process it
// replaced is fenced off; the restart is recorded, survives a server restart,
// and marks the points of the redone steps. Operators can place a directive
// at a chosen step. The C++ session resumes the directives of its checkpoint.
#include <memory>
#include <string>
#include <vector>

#include "client/cpp/run_session.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "server/storage/store.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;

constexpr char kRun[] = "restart";

v1::ConnectRequest Hello(uint64_t incarnation, uint32_t rank = 0) {
  v1::ConnectRequest h = RawStream::Hello(kRun, rank);
  h.mutable_hello()->set_incarnation(incarnation);
  return h;
}

class RestartTest : public ServerFixture {
 protected:
  void SetUp() override {
    store_ = std::make_shared<MemoryStore>();
    ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
    v1::RunConfig c = SmallConfig(/*world_size=*/1);
    c.set_eval_every(2);
    ASSERT_TRUE(Open(kRun, c).ok());
  }
  ServerOptions Options() const {
    ServerOptions o = TestOptions();
    o.store = store_;
    o.checkpoint.every_uploads = 3;  // checkpoints before and after the restart
    return o;
  }
  // Sends steps [from, to) on `s` with seqs from *seq + 1, each acknowledged
  // and its evaluation drained (the trajectory does not depend on timing).
  void Feed(RawStream& s, uint64_t from, uint64_t to, uint64_t* seq,
            std::vector<v1::Reject>* rejects = nullptr) {
    for (uint64_t step = from; step < to; ++step) {
      ASSERT_TRUE(s.Send(Batch(++*seq, step, Rows(3, step), 1.0)));
      ASSERT_TRUE(s.AwaitAck(*seq, rejects));
      server_->DrainEvaluations();
      server_->FlushState();
    }
  }

  std::shared_ptr<MemoryStore> store_;
};

TEST_F(RestartTest, ANewIncarnationIsAppliedFromSeqOneAndMayRedoSteps) {
  RawStream first(stub_.get());
  ASSERT_TRUE(first.Send(Hello(111)));
  ASSERT_TRUE(first.AwaitWelcome());
  uint64_t seq = 0;
  ASSERT_NO_FATAL_FAILURE(Feed(first, 0, 20, &seq));
  ASSERT_EQ(Get(kRun).ranks(0).uploads(), 20u);

  // The job restarts from its checkpoint of step 12, the old process still
  // connected (a zombie).
  RawStream second(stub_.get());
  ASSERT_TRUE(second.Send(Hello(222)));
  ASSERT_TRUE(second.AwaitWelcome());
  EXPECT_EQ(second.welcome().last_seq(), 0u) << "a new incarnation's seqs start again";
  uint64_t seq2 = 0;
  std::vector<v1::Reject> rejects;
  ASSERT_NO_FATAL_FAILURE(Feed(second, 12, 30, &seq2, &rejects));
  EXPECT_THAT(rejects, ::testing::IsEmpty());

  v1::RunInfo info = Get(kRun);
  EXPECT_EQ(info.ranks(0).uploads(), 38u) << "every upload of both processes is applied";
  EXPECT_EQ(info.ranks(0).last_seq(), 18u);
  ASSERT_EQ(info.restarts_size(), 1);
  const v1::RestartEvent& e = info.restarts(0);
  EXPECT_EQ(e.rank(), 0u);
  EXPECT_EQ(e.generation(), 1u);
  EXPECT_EQ(e.resume_step(), 12u);
  EXPECT_EQ(e.redone_through(), 19u);
  EXPECT_EQ(e.uploads_before(), 20u);
  EXPECT_EQ(Counter(*server_, "spotter_trainer_restarts_total"), 1.0);

  // Points of steps 12..19 are the first pass's and say so; the redone pass
  // made no points there, and points resume after step 19.
  const v1::GetTrajectoryResponse t = Trajectory(kRun);
  ASSERT_EQ(t.restarts_size(), 1);
  uint64_t last = 0;
  int redone = 0;
  for (const v1::TrajectoryPoint& p : t.points()) {
    EXPECT_GT(p.step(), last) << "points stay strictly increasing in step";
    last = p.step();
    EXPECT_EQ(p.redone(), p.step() >= 12 && p.step() <= 19) << "step " << p.step();
    redone += p.redone();
  }
  EXPECT_GT(redone, 0);
  EXPECT_GE(last, 28u);

  // The replaced process is fenced off: its next upload is refused and its
  // stream ends; it cannot rejoin.
  const double superseded = Rejects("superseded");
  ASSERT_TRUE(first.Send(Batch(++seq, 20, Rows(3, 20), 1.0)));
  const grpc::Status ended = first.Drain();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(ended.error_message(), HasSubstr("replaced by a restarted process"));
  EXPECT_EQ(Rejects("superseded"), superseded + 1);
  RawStream zombie(stub_.get());
  ASSERT_TRUE(zombie.Send(Hello(111)));
  const grpc::Status refused = zombie.Drain();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("incarnation 111"));
  EXPECT_EQ(Get(kRun).ranks(0).uploads(), 38u);

  // A reconnect of the new process stays exactly-once.
  EXPECT_TRUE(second.Close().ok());
  RawStream again(stub_.get());
  ASSERT_TRUE(again.Send(Hello(222)));
  ASSERT_TRUE(again.AwaitWelcome());
  EXPECT_EQ(again.welcome().last_seq(), 18u);
  const double duplicates = Counter(*server_, "spotter_duplicate_uploads_total");
  ASSERT_TRUE(again.Send(Batch(18, 29, Rows(3, 29), 1.0)));
  ASSERT_TRUE(again.AwaitAck(18));
  EXPECT_EQ(Counter(*server_, "spotter_duplicate_uploads_total"), duplicates + 1);
  EXPECT_TRUE(again.Close().ok());

  // Everything survives a server restart: the seq space, the fence, the event.
  const std::string before = Trajectory(kRun).DebugString();
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  EXPECT_EQ(Trajectory(kRun).DebugString(), before);
  info = Get(kRun);
  ASSERT_EQ(info.restarts_size(), 1);
  EXPECT_EQ(info.restarts(0).resume_step(), 12u);
  RawStream after(stub_.get());
  ASSERT_TRUE(after.Send(Hello(222)));
  ASSERT_TRUE(after.AwaitWelcome());
  EXPECT_EQ(after.welcome().last_seq(), 18u);
  ASSERT_NO_FATAL_FAILURE(Feed(after, 30, 32, &seq2));
  EXPECT_EQ(Get(kRun).ranks(0).uploads(), 40u);
  EXPECT_TRUE(after.Close().ok());
  RawStream zombie2(stub_.get());
  ASSERT_TRUE(zombie2.Send(Hello(111)));
  EXPECT_EQ(zombie2.Drain().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(RestartTest, AFirstStreamOrAReconnectIsNoRestart) {
  RawStream a(stub_.get());
  ASSERT_TRUE(a.Send(Hello(7)));
  ASSERT_TRUE(a.AwaitWelcome());
  uint64_t seq = 0;
  ASSERT_NO_FATAL_FAILURE(Feed(a, 0, 4, &seq));
  EXPECT_TRUE(a.Close().ok());
  RawStream b(stub_.get());
  ASSERT_TRUE(b.Send(Hello(7)));
  ASSERT_TRUE(b.AwaitWelcome());
  EXPECT_EQ(b.welcome().last_seq(), 4u);
  // Still one incarnation: a step before the last is refused as ever.
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(b.Send(Batch(5, 1, Rows(3, 1), 1.0)));
  ASSERT_TRUE(b.AwaitAck(5, &rejects));
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].reason(), v1::REJECT_REASON_STEP_BACKWARDS);
  EXPECT_EQ(Get(kRun).restarts_size(), 0);
  EXPECT_TRUE(b.Close().ok());
}

TEST_F(RestartTest, AnOverrideTakesEffectAtTheStepTheOperatorChose) {
  RawStream s(stub_.get());
  ASSERT_TRUE(s.Send(Hello(1)));
  ASSERT_TRUE(s.AwaitWelcome());
  uint64_t seq = 0;
  ASSERT_NO_FATAL_FAILURE(Feed(s, 0, 10, &seq));
  auto force = [&](uint64_t at, v1::OverridePhaseResponse* resp) {
    grpc::ClientContext ctx;
    v1::OverridePhaseRequest req;
    req.set_name(kRun);
    req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
    req.set_phase(v1::PHASE_REFINEMENT);
    req.set_effective_step(at);
    return stub_->OverridePhase(&ctx, req, resp);
  };
  v1::OverridePhaseResponse resp;
  const grpc::Status early = force(9, &resp);
  EXPECT_EQ(early.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(early.error_message(), HasSubstr("effective_step 9 is too early"));
  ASSERT_TRUE(force(500, &resp).ok());
  EXPECT_EQ(resp.directive().effective_step(), 500u);
  EXPECT_EQ(resp.directive().phase(), v1::PHASE_REFINEMENT);
  // Later directives never take effect before it.
  ASSERT_TRUE(force(0, &resp).ok());
  EXPECT_GE(resp.directive().effective_step(), 500u);
  EXPECT_TRUE(s.Close().ok());
}

// The C++ session: its checkpoint carries the directives, a session resumed
// from it applies them before it reaches any server, and its uploads from the
// redone steps are applied (a new incarnation).
TEST_F(RestartTest, TheCppSessionResumesFromItsCheckpoint) {
  v1::RunConfig c = SmallConfig(/*world_size=*/1);
  c.set_eval_every(2);
  SessionOptions o = session_options_;
  o.channel = channel_;
  o.run = kRun;
  o.config = c;
  absl::StatusOr<std::unique_ptr<RunSession>> first = RunSession::Start(o);
  ASSERT_THAT(first, testing::IsOk());
  for (uint64_t step = 0; step < 10; ++step) {
    ASSERT_TRUE((*first)->UploadSketch(step, Rows(5, step)));
  }
  ASSERT_TRUE((*first)->Flush(absl::Seconds(30)));
  {
    grpc::ClientContext ctx;
    v1::OverridePhaseRequest req;
    req.set_name(kRun);
    req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
    req.set_phase(v1::PHASE_REFINEMENT);
    req.set_effective_step(40);
    v1::OverridePhaseResponse resp;
    ASSERT_TRUE(stub_->OverridePhase(&ctx, req, &resp).ok());
  }
  ASSERT_TRUE((*first)->WaitForDirective(2, absl::Seconds(30)));
  const v1::SessionCheckpoint ckpt = (*first)->Checkpoint(6);
  EXPECT_EQ(ckpt.step(), 6u);
  ASSERT_EQ(ckpt.directives_size(), 2);
  EXPECT_EQ(ckpt.directives(1).effective_step(), 40u);
  const uint64_t first_incarnation = (*first)->incarnation();
  first->reset();  // the process dies (after a flush: nothing is in flight)

  // Resumed with no server reachable: the checkpoint's directives apply.
  SessionOptions offline = o;
  offline.channel = nullptr;
  offline.target = "127.0.0.1:1";
  offline.resume = ckpt;
  absl::StatusOr<std::unique_ptr<RunSession>> cut = RunSession::Start(offline);
  ASSERT_THAT(cut, testing::IsOk());
  ASSERT_TRUE((*cut)->DirectiveAt(40).has_value());
  EXPECT_EQ((*cut)->DirectiveAt(40)->plan.phase, Phase::kRefinement);
  EXPECT_EQ((*cut)->DirectiveAt(39)->plan.phase, Phase::kAcquisition);
  cut->reset();

  SessionOptions wrong = offline;
  wrong.rank = 1;
  EXPECT_EQ(RunSession::Start(wrong).status().code(), absl::StatusCode::kInvalidArgument);

  o.resume = ckpt;
  absl::StatusOr<std::unique_ptr<RunSession>> resumed = RunSession::Start(o);
  ASSERT_THAT(resumed, testing::IsOk());
  EXPECT_NE((*resumed)->incarnation(), first_incarnation);
  for (uint64_t step = 6; step < 16; ++step) {
    ASSERT_TRUE((*resumed)->UploadSketch(step, Rows(5, step)));
  }
  ASSERT_TRUE((*resumed)->Flush(absl::Seconds(30)));
  const SessionStats stats = (*resumed)->stats();
  EXPECT_EQ(stats.rejects, 0u) << stats.last_reject;
  const v1::RunInfo info = Get(kRun);
  EXPECT_EQ(info.ranks(0).uploads(), 20u) << "server count equals the trainer's";
  ASSERT_EQ(info.restarts_size(), 1);
  EXPECT_EQ(info.restarts(0).resume_step(), 6u);
  EXPECT_EQ((*resumed)->Directives().size(), 2u) << "no directive twice";
}

}  // namespace
}  // namespace spotter
