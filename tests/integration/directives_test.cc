// Directives across the ranks of one run, with the real server (in-process
// and over TCP) and the C++ client: four ranks at different speeds all hold
// the controller's directive before its effective_step and switch exactly
// there; a late joiner and a resumed rank get what they need; a reconnecting
// stream gets no directive twice; ADVISE never changes what trainers apply;
// pins, holds and releases go through the API into the history; transitions
// keep their evidence through GetTrajectory.
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cpp/run_session.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "spotter/v1/spotter.grpc.pb.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/planted.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using reliability::EachTransportServerFixture;
using reliability::kEachVia;
using reliability::ViaName;
using ::testing::HasSubstr;
using testing::IsOk;
using testing::PlantedGaussian;
using testing::PlantedSpectrum;

constexpr uint32_t kDim = 32;
constexpr uint32_t kRows = 16;
constexpr double kPeakLr = 0.1;

// A run whose controller leaves ACQUISITION soon after step 150 when fed
// the planted data below: a rank-2 spectrum (r90 2 of 16 rows, fraction
// 0.125) with a falling loss.
v1::RunConfig Config(uint32_t world_size, v1::Mode mode = v1::MODE_CONTROL) {
  v1::RunConfig c;
  c.set_sketch_dim(kDim);
  c.set_sketch_rows(kRows);
  c.set_eval_every(5);
  c.set_world_size(world_size);
  c.set_total_steps(3000);
  c.set_steps_per_epoch(100);
  c.set_peak_lr(kPeakLr);
  c.set_mode(mode);
  c.mutable_projection()->set_seed(42);
  v1::PhaseConfig* p = c.mutable_phase();
  p->set_warmup_fraction(0.05);  // warm-up ends at step 150
  p->set_window_evals(3);
  p->set_confirm_evals(2);
  p->set_min_dwell_steps(20);
  p->set_hysteresis(2.0);  // not the default: the evidence shows it reached the controller
  // The fastest rank runs ~1000 steps/s: the margin is ~500 steps.
  p->set_delivery_budget_seconds(0.5);
  return c;
}

double Loss(uint64_t step) { return 1.0 / (1.0 + 0.01 * static_cast<double>(step)); }

// What one rank did at every step it trained.
struct RankLog {
  uint64_t first_step = 0;
  std::vector<uint64_t> applied;         // version in force, per step from first_step
  std::vector<double> lr;                // LR applied, per step
  std::map<uint64_t, uint64_t> seen_at;  // version -> first step it was held at
  uint64_t Applied(uint64_t step) const { return applied.at(step - first_step); }
  double Lr(uint64_t step) const { return lr.at(step - first_step); }
};

// Trains one rank from `first_step`: at every step boundary it notes the
// directives it holds, applies the one in force, and uploads planted rows
// and the loss; one step takes `pace`. Stops before `stop(step)` holds.
void Train(RunSession* s, uint64_t first_step, absl::Duration pace, uint64_t seed,
           const std::function<bool(uint64_t)>& stop, RankLog* log) {
  PlantedGaussian gen(kDim, PlantedSpectrum::LowRankPlusNoise(2, 1.0, 1e-3), 7);
  std::mt19937_64 rng(seed);
  log->first_step = first_step;
  absl::Time next = absl::Now();
  for (uint64_t step = first_step; !stop(step) && step < 4000; ++step) {
    if (auto d = s->LatestDirective()) {
      for (uint64_t v = 1; v <= d->version; ++v) log->seen_at.emplace(v, step);
    }
    const std::optional<Directive> in_force = s->DirectiveAt(step);
    log->applied.push_back(in_force ? in_force->version : 0);
    log->lr.push_back(s->LrAt(step, -1.0));
    s->UploadSketch(step, gen.Sample(4, rng), Loss(step), log->lr.back());
    next += pace;
    absl::SleepFor(next - absl::Now());
  }
}

// Reads the stream up to its next directive (diagnostics may come first).
bool NextDirective(grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>* stream,
                   v1::ConnectResponse* resp) {
  while (stream->Read(resp)) {
    if (resp->has_directive()) return true;
  }
  return false;
}

// A server in-process and over TCP; sessions keep every upload of a rank
// that runs ahead of the server.
class DirectivesTest : public EachTransportServerFixture {
 protected:
  DirectivesTest() { session_options_.queue_size = 8192; }

  v1::Directive Override(const std::string& run, v1::Phase phase) {
    grpc::ClientContext ctx;
    v1::OverridePhaseRequest req;
    req.set_name(run);
    req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
    req.set_phase(phase);
    req.set_reason("test");
    v1::OverridePhaseResponse resp;
    EXPECT_TRUE(stub_->OverridePhase(&ctx, req, &resp).ok());
    return resp.directive();
  }
};

TEST_P(DirectivesTest, FourRanksAtDifferentSpeedsSwitchAtTheSameStep) {
  const v1::RunConfig config = Config(4);
  std::vector<std::unique_ptr<RunSession>> sessions;
  for (uint32_t r = 0; r < 4; ++r) {
    sessions.push_back(Session("four", config, r));
    ASSERT_TRUE(sessions.back() && sessions.back()->WaitForDirective(1, absl::Seconds(20)));
  }
  // Each rank trains until 10 steps past the refinement directive's
  // effective step, once it holds it. Rank r takes 1 + r/2 ms per step.
  std::vector<RankLog> logs(4);
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      RunSession* s = sessions[r].get();
      auto stop = [s](uint64_t step) {
        const auto d = s->LatestDirective();
        return d && d->version >= 2 && step >= d->effective_step + 10;
      };
      Train(s, 0, absl::Microseconds(1000 + 500 * r), 100 + r, stop, &logs[r]);
    });
  }
  for (auto& t : threads) t.join();

  // The controller moved the run to REFINEMENT on its own, once.
  const v1::GetTrajectoryResponse traj = Trajectory("four");
  ASSERT_GE(traj.directives_size(), 2);
  const v1::Directive& refine = traj.directives(1);
  EXPECT_EQ(refine.version(), 2u);
  EXPECT_EQ(refine.phase(), v1::PHASE_REFINEMENT);
  EXPECT_EQ(refine.cause(), v1::CAUSE_AUTOMATIC);
  EXPECT_FALSE(refine.advisory());
  const uint64_t eff = refine.effective_step();
  EXPECT_GT(eff, 150u);  // never during the warm-up
  for (uint32_t r = 0; r < 4; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    const RankLog& log = logs[r];
    ASSERT_TRUE(log.seen_at.count(2));
    // Held strictly before the step it takes effect at, by every rank.
    EXPECT_LT(log.seen_at.at(2), eff);
    ASSERT_GT(log.applied.size(), eff + 5);
    // The warm-up's peak LR up to the step before, the cut LR and the
    // natural gradient from the step itself: the same step on every rank.
    EXPECT_EQ(log.Applied(eff - 1), 1u);
    EXPECT_EQ(log.Applied(eff), 2u);
    EXPECT_DOUBLE_EQ(log.Lr(eff - 1), kPeakLr);
    EXPECT_DOUBLE_EQ(log.Lr(eff), 0.5 * kPeakLr);
    const auto first_v2 = std::find(log.applied.begin(), log.applied.end(), 2u);
    EXPECT_EQ(static_cast<uint64_t>(first_v2 - log.applied.begin()), eff);
    EXPECT_TRUE(std::all_of(first_v2, log.applied.end(), [](uint64_t v) { return v == 2; }));
    EXPECT_EQ(sessions[r]->DirectiveAt(eff)->plan.optimizer.kind,
              OptimizerInstruction::Kind::kNaturalGradient);
    EXPECT_EQ(sessions[r]->stats().directives, 2u);
  }

  // The transition and its evidence, through GetTrajectory, GetRun and a
  // WatchRun replay: the same record.
  ASSERT_EQ(traj.transitions_size(), 1);
  const v1::PhaseTransition& t = traj.transitions(0);
  EXPECT_EQ(t.from_phase(), v1::PHASE_ACQUISITION);
  EXPECT_EQ(t.to_phase(), v1::PHASE_REFINEMENT);
  EXPECT_EQ(t.cause(), v1::CAUSE_AUTOMATIC);
  EXPECT_EQ(t.step(), eff);
  EXPECT_EQ(t.directive_version(), 2u);
  EXPECT_THAT(t.reason(), HasSubstr("gradient-covariance rank plateaued"));
  EXPECT_EQ(t.reason(), refine.reason());
  const auto& e = t.evidence();
  for (const char* key :
       {"effective_rank", "rank_fraction", "rank_fraction_max", "rank_spread",
        "plateau_epsilon", "participation_ratio", "pr_drop_per_epoch", "id_drop_threshold",
        "loss_decrease_per_epoch", "loss_decrease_min", "window_evals", "plateau_windows",
        "span_evals", "span_steps", "window_memory_steps", "latched_evals", "confirm_evals",
        "step", "lr_before", "lr_after"}) {
    EXPECT_TRUE(e.count(key)) << key;
  }
  ASSERT_TRUE(e.count("hysteresis"));
  EXPECT_EQ(e.at("hysteresis"), 2.0);
  EXPECT_LT(e.at("rank_fraction"), e.at("rank_fraction_max"));
  EXPECT_DOUBLE_EQ(e.at("rank_fraction"), e.at("effective_rank") / kRows);
  EXPECT_LT(e.at("rank_spread"), e.at("plateau_epsilon"));
  EXPECT_LT(std::abs(e.at("pr_drop_per_epoch")), e.at("id_drop_threshold"));
  EXPECT_GE(e.at("span_steps"), e.at("window_memory_steps"));
  // Decided at the evaluation of `step`, in force from the effective step.
  EXPECT_EQ(t.decision_step(), static_cast<uint64_t>(e.at("step")));
  EXPECT_GT(t.step(), t.decision_step());
  EXPECT_GT(e.at("loss_decrease_per_epoch"), e.at("loss_decrease_min"));
  EXPECT_EQ(e.at("window_evals"), 3);
  EXPECT_GE(e.at("latched_evals"), e.at("confirm_evals"));
  EXPECT_GE(e.at("step"), 150);
  EXPECT_LT(e.at("step"), eff);
  EXPECT_DOUBLE_EQ(e.at("lr_after"), 0.5 * kPeakLr);

  const v1::RunInfo info = Get("four");
  EXPECT_EQ(info.phase(), v1::PHASE_REFINEMENT);
  ASSERT_EQ(info.transitions_size(), 1);
  EXPECT_TRUE(MessageDifferencer::Equals(info.transitions(0), t));
  // The points before the switch say ACQUISITION, those after REFINEMENT.
  for (const v1::TrajectoryPoint& p : traj.points()) {
    EXPECT_EQ(p.phase(), p.step() < eff ? v1::PHASE_ACQUISITION : v1::PHASE_REFINEMENT)
        << "step " << p.step();
  }
  grpc::ClientContext wctx;
  wctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::WatchRunRequest wreq;
  wreq.set_name("four");
  wreq.set_include_history(true);
  auto watch = stub_->WatchRun(&wctx, wreq);
  v1::WatchRunResponse ev;
  bool replayed = false;
  while (!replayed && watch->Read(&ev)) {
    if (ev.has_transition()) {
      EXPECT_TRUE(MessageDifferencer::Equals(ev.transition(), t));
      replayed = true;
    }
  }
  EXPECT_TRUE(replayed);
  wctx.TryCancel();
  watch->Finish();
}

TEST_P(DirectivesTest, LateAndResumingRanksGetTheDirectivesTheyNeed) {
  const v1::RunConfig config = Config(4);
  std::vector<std::unique_ptr<RunSession>> ranks;
  for (uint32_t r = 0; r < 3; ++r) ranks.push_back(Session("late", config, r));
  PlantedGaussian gen(kDim, PlantedSpectrum::LowRankPlusNoise(2, 1.0, 1e-3), 7);
  std::mt19937_64 rng(1);
  for (uint64_t step = 0; step < 40; ++step) {
    for (auto& s : ranks) s->UploadSketch(step, gen.Sample(4, rng), Loss(step), kPeakLr);
  }
  for (auto& s : ranks) ASSERT_TRUE(s->Flush(absl::Seconds(20)));
  const v1::Directive refine = Override("late", v1::PHASE_REFINEMENT);
  const uint64_t eff = refine.effective_step();
  EXPECT_GT(eff, 39u);
  for (auto& s : ranks) ASSERT_TRUE(s->WaitForDirective(2, absl::Seconds(20)));
  for (uint64_t step = 40; step < eff + 5; ++step) {
    for (auto& s : ranks) s->UploadSketch(step, gen.Sample(4, rng), Loss(step), s->LrAt(step, -1));
  }
  for (auto& s : ranks) ASSERT_TRUE(s->Flush(absl::Seconds(20)));

  // Rank 3 joins now, when REFINEMENT is in force: it holds it at once, and
  // the warm-up before it, so that resuming from a checkpoint a few steps
  // before the switch it trains the same steps as the others did.
  auto late = Session("late", config, 3);
  ASSERT_TRUE(late && late->WaitForDirective(2, absl::Seconds(20)));
  EXPECT_EQ(late->LatestDirective()->plan.phase, Phase::kRefinement);
  EXPECT_EQ(late->stats().directives, 2u);
  RankLog log;
  Train(
      late.get(), eff - 5, absl::ZeroDuration(), 9, [&](uint64_t step) { return step >= eff + 5; },
      &log);
  // Forced during the warm-up: the warm-up LR up to eff - 1, half the LR
  // it gives at eff from eff on.
  const double warmup_lr = 0.01 + 0.09 * static_cast<double>(eff - 1) / 150;
  EXPECT_EQ(log.Applied(eff - 1), 1u);
  EXPECT_NEAR(log.Lr(eff - 1), std::min(warmup_lr, kPeakLr), 1e-12);
  EXPECT_EQ(log.Applied(eff), 2u);
  EXPECT_DOUBLE_EQ(log.Lr(eff), refine.lr().start_lr());
  EXPECT_NEAR(refine.lr().start_lr(),
              0.5 * std::min(0.01 + 0.09 * static_cast<double>(eff) / 150, kPeakLr), 1e-12);

  // Reconnecting streams: the Hello says what the stream holds, and only
  // newer directives come, each once, also when one is issued later.
  auto hello = [](uint64_t holds) {
    v1::ConnectRequest r;
    r.mutable_hello()->set_run("late");
    r.mutable_hello()->set_rank(1);
    r.mutable_hello()->mutable_projection()->set_seed(42);
    r.mutable_hello()->set_last_directive_version(holds);
    return r;
  };
  for (uint64_t holds : {0u, 1u, 2u}) {
    SCOPED_TRACE(absl::StrCat("holds v", holds));
    grpc::ClientContext ctx;
    // A directive that never comes fails the test instead of hanging it.
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    auto stream = stub_->Connect(&ctx);
    ASSERT_TRUE(stream->Write(hello(holds)));
    v1::ConnectResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_TRUE(resp.has_welcome());
    std::vector<uint64_t> got;
    for (uint64_t v = holds + 1; v <= 2; ++v) {
      ASSERT_TRUE(NextDirective(stream.get(), &resp));
      got.push_back(resp.directive().version());
    }
    std::vector<uint64_t> want;
    for (uint64_t v = holds + 1; v <= 2; ++v) want.push_back(v);
    EXPECT_EQ(got, want);
    if (holds == 2) {
      // Still connected: a new directive arrives exactly once.
      const v1::Directive polish = Override("late", v1::PHASE_POLISH);
      ASSERT_TRUE(NextDirective(stream.get(), &resp));
      EXPECT_EQ(resp.directive().version(), polish.version());
    }
    stream->WritesDone();
    int more = 0;
    while (stream->Read(&resp)) more += resp.has_directive();
    EXPECT_EQ(more, 0);
    const grpc::Status st = stream->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  // The sessions got every directive once, over one stream each.
  for (auto& s : ranks) {
    ASSERT_TRUE(s->WaitForDirective(3, absl::Seconds(20)));
    EXPECT_EQ(s->stats().directives, 3u);
    EXPECT_EQ(s->stats().connects, 1u);
  }
}

TEST_P(DirectivesTest, AdviseNeverChangesWhatTrainersApply) {
  const v1::RunConfig config = Config(2, v1::MODE_ADVISE);
  auto r0 = Session("advise", config, 0);
  auto r1 = Session("advise", config, 1);
  ASSERT_TRUE(r0 && r1);
  ASSERT_TRUE(r0->WaitForDirective(1, absl::Seconds(20)));
  constexpr double kOwnLr = 0.123;
  PlantedGaussian gen(kDim, PlantedSpectrum::LowRankPlusNoise(2, 1.0, 1e-3), 7);
  std::mt19937_64 rng(2);
  auto check = [&](uint64_t step) {
    for (RunSession* s : {r0.get(), r1.get()}) {
      EXPECT_DOUBLE_EQ(s->LrAt(step, kOwnLr), kOwnLr) << step;
      EXPECT_FALSE(s->DirectiveAt(step).has_value()) << step;
      EXPECT_FALSE(s->ShouldStop(step)) << step;
    }
  };
  // Stream until the controller, computing as in CONTROL, has advised
  // REFINEMENT; every step the trainers keep their own LR.
  uint64_t step = 0;
  for (; step < 1500 && Get("advise").phase() == v1::PHASE_ACQUISITION; ++step) {
    check(step);
    for (RunSession* s : {r0.get(), r1.get()}) {
      s->UploadSketch(step, gen.Sample(4, rng), Loss(step), s->LrAt(step, kOwnLr));
    }
    if (step % 10 == 9) {
      ASSERT_TRUE(r0->Flush(absl::Seconds(20)));
      ASSERT_TRUE(r1->Flush(absl::Seconds(20)));
      server_->DrainEvaluations();
    }
  }
  ASSERT_EQ(Get("advise").phase(), v1::PHASE_REFINEMENT);
  ASSERT_TRUE(r0->WaitForDirective(2, absl::Seconds(20)));
  const Directive advised = *r0->LatestDirective();
  EXPECT_TRUE(advised.advisory);
  EXPECT_EQ(advised.plan.phase, Phase::kRefinement);
  EXPECT_EQ(advised.plan.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
  // An operator override and the end of the run are advisory too.
  Override("advise", v1::PHASE_POLISH);
  grpc::ClientContext fctx;
  v1::FinishRunRequest freq;
  freq.set_name("advise");
  v1::FinishRunResponse fresp;
  ASSERT_TRUE(stub_->FinishRun(&fctx, freq, &fresp).ok());
  ASSERT_TRUE(r0->WaitForDirective(4, absl::Seconds(20)));
  ASSERT_TRUE(r1->WaitForDirective(4, absl::Seconds(20)));
  EXPECT_TRUE(r0->LatestDirective()->plan.stop);
  for (uint64_t s = 0; s < step + 5000; s += 7) check(s);
  // Shown: the history holds every directive, all advisory, with the
  // transitions that produced them.
  const v1::GetTrajectoryResponse traj = Trajectory("advise");
  ASSERT_EQ(traj.directives_size(), 4);
  for (const v1::Directive& d : traj.directives()) EXPECT_TRUE(d.advisory());
  ASSERT_EQ(traj.transitions_size(), 3);
  EXPECT_EQ(traj.transitions(0).cause(), v1::CAUSE_AUTOMATIC);
  EXPECT_GT(traj.transitions(0).evidence().size(), 10);
  EXPECT_EQ(traj.transitions(1).cause(), v1::CAUSE_OVERRIDE);
  EXPECT_EQ(traj.transitions(2).cause(), v1::CAUSE_FINISH);
}

TEST_P(DirectivesTest, PinHoldAndReleaseThroughTheApi) {
  const v1::RunConfig config = Config(1);
  auto s = Session("pin", config, 0);
  ASSERT_TRUE(s && s->WaitForDirective(1, absl::Seconds(20)));
  auto override = [&](v1::OverridePhaseRequest req) {
    req.set_name("pin");
    grpc::ClientContext ctx;
    v1::OverridePhaseResponse resp;
    const grpc::Status st = stub_->OverridePhase(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  };
  // Pin a constant LR with natural gradient: trainers apply it from its
  // effective step, the run shows the hold.
  v1::OverridePhaseRequest pin;
  pin.set_action(v1::OverridePhaseRequest::ACTION_PIN_DIRECTIVE);
  pin.mutable_directive()->mutable_lr()->set_kind(v1::LrSchedule::KIND_CONSTANT);
  pin.mutable_directive()->mutable_lr()->set_start_lr(0.003);
  pin.mutable_directive()->mutable_optimizer()->set_kind(
      v1::OptimizerInstruction::KIND_NATURAL_GRADIENT);
  pin.mutable_directive()->mutable_optimizer()->set_damping(0.01);
  pin.mutable_directive()->mutable_optimizer()->set_factor_update_interval(10);
  pin.mutable_directive()->mutable_optimizer()->set_inverse_update_interval(100);
  pin.set_reason("manual");
  const v1::Directive pinned = override(pin).directive();
  EXPECT_EQ(pinned.version(), 2u);
  EXPECT_EQ(pinned.cause(), v1::CAUSE_OVERRIDE);
  ASSERT_TRUE(s->WaitForDirective(2, absl::Seconds(20)));
  EXPECT_DOUBLE_EQ(s->LrAt(pinned.effective_step(), -1), 0.003);
  EXPECT_EQ(s->DirectiveAt(pinned.effective_step())->plan.optimizer.kind,
            OptimizerInstruction::Kind::kNaturalGradient);
  EXPECT_TRUE(Get("pin").overridden());
  // Release: the warm-up plan of the phase comes back, the hold goes.
  v1::OverridePhaseRequest release;
  release.set_action(v1::OverridePhaseRequest::ACTION_RELEASE);
  const v1::Directive back = override(release).directive();
  EXPECT_EQ(back.version(), 3u);
  EXPECT_EQ(back.cause(), v1::CAUSE_RELEASE);
  EXPECT_EQ(back.phase(), v1::PHASE_ACQUISITION);
  EXPECT_EQ(back.lr().kind(), v1::LrSchedule::KIND_LINEAR);
  EXPECT_EQ(back.optimizer().kind(), v1::OptimizerInstruction::KIND_KEEP);
  EXPECT_FALSE(Get("pin").overridden());
  // A held force, then a release that has no directive to restore: both
  // are in the history, the release without a directive.
  v1::OverridePhaseRequest force;
  force.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
  force.set_phase(v1::PHASE_POLISH);
  force.set_hold(true);
  EXPECT_EQ(override(force).directive().phase(), v1::PHASE_POLISH);
  EXPECT_TRUE(Get("pin").overridden());
  EXPECT_FALSE(override(release).has_directive());
  EXPECT_FALSE(Get("pin").overridden());
  const v1::GetTrajectoryResponse traj = Trajectory("pin");
  ASSERT_EQ(traj.transitions_size(), 4);
  EXPECT_EQ(traj.transitions(0).cause(), v1::CAUSE_OVERRIDE);
  EXPECT_THAT(traj.transitions(0).reason(), HasSubstr("manual"));
  EXPECT_EQ(traj.transitions(1).cause(), v1::CAUSE_RELEASE);
  EXPECT_EQ(traj.transitions(1).directive_version(), 3u);
  EXPECT_EQ(traj.transitions(2).to_phase(), v1::PHASE_POLISH);
  EXPECT_EQ(traj.transitions(3).cause(), v1::CAUSE_RELEASE);
  EXPECT_EQ(traj.transitions(3).from_phase(), v1::PHASE_POLISH);
  EXPECT_EQ(traj.transitions(3).to_phase(), v1::PHASE_POLISH);
  EXPECT_EQ(traj.transitions(3).directive_version(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Transport, DirectivesTest, ::testing::ValuesIn(kEachVia), ViaName);

}  // namespace
}  // namespace spotter
