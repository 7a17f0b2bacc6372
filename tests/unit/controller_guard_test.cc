// The divergence signal and the guarded switch to natural gradient
// (docs/PHASES.md, "Divergence" and "Guarded switch and rollback"): a rising
// or non-finite loss is never a plateau; after the switch it rolls the
// switch back, and the retry is stricter.
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/phase/controller.h"
#include "core/phase/controller_codec.h"
#include "core/util/byte_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller_script.h"

namespace spotter {
namespace {

using ::testing::HasSubstr;

using namespace ::spotter::controller_testing;  // NOLINT: the scripted-trajectory helpers

// BaseTestConfig with a guard of 100 steps.
ControllerConfig TestConfig() {
  ControllerConfig c = BaseTestConfig();
  c.rollback_window_steps = 100;
  c.rollback_loss_margin = 0.1;
  return c;
}

// Item 1 of issue 16. Under natural gradient the spectrum is flat and the
// loss rises 1.5% per epoch: inside refine_loss_rate_min (2%) in absolute
// value, so the two-sided plateau test read it as slow and went to POLISH at
// step 310 (the first full span after the dwell, confirmed). A rising loss
// is no plateau.
TEST(DivergenceTest, ASlowlyRisingLossIsNoPlateau) {
  PhaseController c = InRefinement(TestConfig());
  // From the pre-switch level (the mean of evaluations 190, 200 and 210) up.
  const double pre = (std::exp(-0.57) + std::exp(-0.6) + std::exp(-0.63)) / 3;
  Script rising;
  rising.loss = [pre](uint64_t t) {
    return pre * std::exp(0.00015 * (static_cast<double>(t) - 215.0));
  };
  auto f = Feed(c, rising, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->decision.to == Phase::kPolish && f->decision.reason.find("budget") ==
                                                        std::string::npos)
      << "plateau exit on a rising loss at step " << f->step << ": " << f->decision.reason;
  // Inside the guard window (100 steps from 215) the divergence signal rolls
  // the switch back at the first full span (220..300), with its evidence.
  EXPECT_EQ(f->step, 300u);
  EXPECT_EQ(f->decision.cause, Cause::kRollback);
  EXPECT_EQ(f->decision.to, Phase::kAcquisition);
  EXPECT_THAT(f->decision.reason, HasSubstr("loss rising 1.5"));
  const auto e = EvidenceMap(f->decision);
  EXPECT_NEAR(e.at("loss_rise_per_epoch"), 0.015, 0.0005);
  EXPECT_DOUBLE_EQ(e.at("divergence_loss_rate"), 0.01);
  EXPECT_DOUBLE_EQ(e.at("loss_nonfinite"), 0);
}

// The quadratic bowl's case: natural gradient takes the loss 400x down, then
// it wobbles at its floor, rising 15%/epoch in relative terms. That is a
// switch that worked: the divergence signal rolls back only a loss above its
// pre-switch level. (It still holds the plateau exit off.)
TEST(DivergenceTest, ARiseFarBelowThePreSwitchLossIsNoFailedSwitch) {
  ControllerConfig config = TestConfig();
  config.rollback_window_steps = 400;
  PhaseController c = InRefinement(config);
  Script floor;
  floor.loss = [](uint64_t t) {
    return 0.0014 * std::exp(0.0015 * (static_cast<double>(t) - 215.0));
  };
  auto f = Feed(c, floor, 220, 620);
  EXPECT_FALSE(f.has_value()) << f->step << ": " << f->decision.reason;
  EXPECT_EQ(c.rollbacks(), 0);
}

// Past the guard window (or without a guard) the divergence signal cannot
// roll back; it still holds the plateau exit off: only the budget ends
// REFINEMENT.
TEST(DivergenceTest, WithoutAGuardARisingLossWaitsForTheBudget) {
  ControllerConfig config = TestConfig();
  config.rollback_window_steps = 0;
  PhaseController c = InRefinement(config);
  EXPECT_EQ(c.current_plan().guard_steps, 0u);
  Script rising;
  rising.loss = [](uint64_t t) { return 0.5 * std::exp(0.00015 * static_cast<double>(t)); };
  auto f = Feed(c, rising, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 1500u);
  EXPECT_THAT(f->decision.reason, HasSubstr("refinement budget reached"));
}

// A loss rising slower than divergence_loss_rate (0.5%/epoch) is noise
// around a plateau: the plateau exit still fires.
TEST(DivergenceTest, ALossInsideTheDivergenceMarginIsAPlateau) {
  ControllerConfig config = TestConfig();
  config.rollback_window_steps = 0;
  PhaseController c = InRefinement(config);
  Script flat;
  flat.loss = [](uint64_t t) { return 0.5 * std::exp(0.00005 * static_cast<double>(t)); };
  auto f = Feed(c, flat, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 310u);
  EXPECT_EQ(f->decision.to, Phase::kPolish);
  EXPECT_THAT(f->decision.reason, HasSubstr("spectrum stable"));
}

// Item 1 of issue 16. The loss goes to +inf right after the switch: the
// plateau test took a non-finite loss for "no loss reported" and let the
// flat spectrum alone go to POLISH (at step 310). A non-finite loss is
// divergence, never a plateau.
TEST(DivergenceTest, ANonFiniteLossIsNoPlateau) {
  PhaseController c = InRefinement(TestConfig());
  Script blown;
  blown.loss = [](uint64_t) { return std::numeric_limits<double>::infinity(); };
  auto f = Feed(c, blown, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->decision.to == Phase::kPolish && f->decision.reason.find("budget") ==
                                                        std::string::npos)
      << "plateau exit on a non-finite loss at step " << f->step << ": " << f->decision.reason;
  // The first evaluation under natural gradient shows it: rollback at once.
  EXPECT_EQ(f->step, 220u);
  EXPECT_EQ(f->decision.cause, Cause::kRollback);
  EXPECT_THAT(f->decision.reason, HasSubstr("non-finite"));
  EXPECT_DOUBLE_EQ(EvidenceMap(f->decision).at("loss_nonfinite"), 1);
}

// The server's flag (a rank reported a NaN loss; the mean is over the
// finite ones) counts like an infinite loss, also past the guard window:
// the plateau exit never fires on it.
TEST(DivergenceTest, AFlaggedNonFiniteLossHoldsThePlateauOff) {
  ControllerConfig config = TestConfig();
  config.rollback_window_steps = 0;
  PhaseController c = InRefinement(config);
  for (uint64_t step = 220; step < 1500; step += kEvalEvery) {
    Observation o;
    o.step = step;
    o.effective_rank = 6;
    o.participation_ratio = 4;
    o.loss = 0.3;
    o.loss_nonfinite = true;
    auto d = c.OnEvaluation(o, step + 5);
    ASSERT_FALSE(d.has_value()) << step << ": " << d->reason;
  }
}

// The guarded switch: the REFINEMENT directive asks for a snapshot; a loss
// (mean of the phase's last 3 evaluations) 10% above its pre-switch level
// inside the window rolls back to the
// snapshot, first-order at half the pre-switch LR; the retry needs a plateau
// band half as wide and damps 10x harder; after the allowed retries the
// ACQUISITION exit goes to POLISH, first-order.
TEST(RollbackTest, ALossAboveItsMarginRollsBackAndTheRetryIsStricter) {
  const ControllerConfig config = TestConfig();
  PhaseController c = InRefinement(config);
  const DirectivePlan& ng = c.current_plan();
  EXPECT_EQ(ng.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
  EXPECT_EQ(ng.guard_steps, 100u);
  EXPECT_DOUBLE_EQ(ng.optimizer.damping, 1e-3);
  // The switch decided on the last window of its span (evaluations 190, 200,
  // 210): loss mean of exp(-0.003 t) there.
  const double pre = (std::exp(-0.57) + std::exp(-0.6) + std::exp(-0.63)) / 3;

  // 50% above it at 250, 35 steps into natural gradient: the mean of 230,
  // 240 and 250 is 16.7% above. (A jump of 11% would wait for three
  // evaluations above: the level test reads the window's mean.)
  Script jump;
  jump.loss = [pre](uint64_t t) { return t < 250 ? pre : pre * 1.5; };
  auto f = Feed(c, jump, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 250u);
  const Decision& d = f->decision;
  EXPECT_EQ(d.cause, Cause::kRollback);
  EXPECT_EQ(d.from, Phase::kRefinement);
  EXPECT_EQ(d.to, Phase::kAcquisition);
  EXPECT_TRUE(d.plan.rollback);
  EXPECT_EQ(d.plan.snapshot_step, 215u);
  EXPECT_EQ(d.plan.optimizer.kind, OptimizerInstruction::Kind::kKeep);
  EXPECT_EQ(d.plan.lr.kind, LrSchedule::Kind::kConstant);
  EXPECT_DOUBLE_EQ(d.plan.lr.start_lr, 0.5 * 0.1);  // half the peak LR in force at the switch
  EXPECT_THAT(d.reason, HasSubstr("failed its guard 35 steps in"));
  EXPECT_THAT(d.reason, HasSubstr("1 retry left"));
  auto e = EvidenceMap(d);
  EXPECT_NEAR(e.at("pre_switch_loss"), pre, 1e-12);
  EXPECT_NEAR(e.at("loss_limit"), 1.1 * pre, 1e-12);
  EXPECT_NEAR(e.at("loss"), pre * 3.5 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(e.at("loss_evals"), 3);
  EXPECT_DOUBLE_EQ(e.at("switch_step"), 215);
  EXPECT_DOUBLE_EQ(e.at("rollbacks"), 1);
  EXPECT_EQ(c.rollbacks(), 1);
  EXPECT_EQ(c.phase(), Phase::kAcquisition);
  EXPECT_EQ(c.phase_start_step(), 255u);

  // The retry: r90 drifting 0.1% per step (its window means spread 6% over
  // a span) would pass the default band of 10% but not the retry's 5%: no
  // switch while it drifts; once it settles, the switch comes back with 10x
  // the damping, guarded again.
  Script wobble;
  wobble.rank = [](uint64_t t) { return 6.0 * std::exp(0.001 * (static_cast<double>(t) - 260)); };
  wobble.loss = [](uint64_t t) { return std::exp(-0.003 * static_cast<double>(t)); };
  EXPECT_FALSE(Feed(c, wobble, 260, 700).has_value());
  PhaseController first_try(config);  // the same drift passes the first switch's band
  auto drift = Feed(first_try, wobble, kEvalEvery, 700);
  ASSERT_TRUE(drift.has_value());
  EXPECT_EQ(drift->decision.to, Phase::kRefinement);
  EXPECT_GT(EvidenceMap(drift->decision).at("rank_spread"), 0.05);
  auto retry = Feed(c, Script{}, 700, 2000);
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->decision.to, Phase::kRefinement);
  EXPECT_THAT(retry->decision.reason, HasSubstr("retry 1 of 1"));
  EXPECT_DOUBLE_EQ(retry->decision.plan.optimizer.damping, 1e-2);
  EXPECT_DOUBLE_EQ(retry->decision.plan.lr.start_lr, 0.5 * 0.05);  // lr_cut x the rolled-back LR
  EXPECT_EQ(retry->decision.plan.guard_steps, 100u);
  EXPECT_DOUBLE_EQ(EvidenceMap(retry->decision).at("plateau_epsilon"), 0.05);

  // It fails again (non-finite): the second rollback leaves no retry.
  const uint64_t eff = c.phase_start_step();
  Script blown;
  blown.loss = [](uint64_t) { return std::numeric_limits<double>::infinity(); };
  auto second = Feed(c, blown, eff + 5, 2000);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->decision.cause, Cause::kRollback);
  EXPECT_EQ(second->decision.plan.snapshot_step, eff);
  EXPECT_DOUBLE_EQ(second->decision.plan.lr.start_lr, 0.5 * 0.05);
  EXPECT_THAT(second->decision.reason, HasSubstr("no retry left"));
  EXPECT_EQ(c.rollbacks(), 2);
  // The next plateau goes to POLISH, first-order.
  auto polish = Feed(c, Script{}, second->step + 10, 2000);
  ASSERT_TRUE(polish.has_value());
  EXPECT_EQ(polish->decision.to, Phase::kPolish);
  EXPECT_EQ(polish->decision.plan.optimizer.kind, OptimizerInstruction::Kind::kKeep);
  EXPECT_THAT(polish->decision.reason, HasSubstr("rolled back 2 times"));
}

// After the window the switch stands: the same jump at step 320 changes
// nothing; evaluations from before the switch took effect never count.
TEST(RollbackTest, TheGuardHoldsOnlyInsideItsWindow) {
  PhaseController c = InRefinement(TestConfig());
  const double pre = (std::exp(-0.57) + std::exp(-0.6) + std::exp(-0.63)) / 3;
  Script late;
  late.loss = [pre](uint64_t t) { return t < 320 ? pre : pre * 1.5; };
  // An evaluation of step 212 (before 215) with a huge loss is the old
  // directive's: ignored.
  Observation before;
  before.step = 212;
  before.effective_rank = 6;
  before.participation_ratio = 4;
  before.loss = 100 * pre;
  EXPECT_FALSE(c.OnEvaluation(before, 217).has_value());
  auto f = Feed(c, late, 220, 1490);
  EXPECT_FALSE(f.has_value() && f->decision.cause == Cause::kRollback)
      << f->step << ": " << f->decision.reason;
  EXPECT_EQ(c.rollbacks(), 0);
}

// The operator's forced switch has no pre-switch level: no guard.
TEST(RollbackTest, AForcedSwitchIsNotGuarded) {
  PhaseController c(TestConfig());
  const Decision d = c.ForcePhase(Phase::kRefinement, false, "", 100);
  EXPECT_EQ(d.plan.guard_steps, 0u);
  Script blown;
  blown.loss = [](uint64_t) { return std::numeric_limits<double>::infinity(); };
  auto f = Feed(c, blown, 110, 1000);
  EXPECT_FALSE(f.has_value() && f->decision.cause == Cause::kRollback);
}

// An operator pin during the guard disarms it; the release re-issues the
// natural-gradient plan without its guard and without a restore.
TEST(RollbackTest, APinDisarmsTheGuardAndTheReleaseAsksForNoSnapshot) {
  PhaseController c = InRefinement(TestConfig());
  ASSERT_EQ(c.current_plan().guard_steps, 100u);
  DirectivePlan pinned = c.current_plan();
  pinned.lr = LrSchedule::Constant(0.01);
  c.Pin(pinned, "hold on", 230);
  auto released = c.Release("go on", 240);
  ASSERT_TRUE(released.has_value());
  EXPECT_EQ(released->plan.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
  EXPECT_EQ(released->plan.guard_steps, 0u);
  EXPECT_FALSE(released->plan.rollback);
  Script blown;
  blown.loss = [](uint64_t) { return std::numeric_limits<double>::infinity(); };
  auto f = Feed(c, blown, 250, 1490);
  EXPECT_FALSE(f.has_value() && f->decision.cause == Cause::kRollback);
}

// A controller state persisted mid-guard restores with its guard: the same
// input rolls both back with the same decision.
TEST(RollbackStateTest, TheGuardRoundTripsThroughTheCodec) {
  PhaseController original = InRefinement(TestConfig());
  Script s;
  s.loss = [](uint64_t) { return 0.55; };
  ASSERT_FALSE(Feed(original, s, 220, 240).has_value());
  const std::string bytes = EncodeControllerState(original);
  PhaseController restored(TestConfig());
  ASSERT_TRUE(DecodeControllerState(bytes, &restored).ok());
  EXPECT_EQ(EncodeControllerState(restored), bytes);
  Script jump;
  jump.loss = [](uint64_t) { return 5.0; };
  auto a = Feed(original, jump, 240, 400);
  auto b = Feed(restored, jump, 240, 400);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->step, b->step);
  EXPECT_EQ(a->decision.reason, b->decision.reason);
  EXPECT_EQ(b->decision.cause, Cause::kRollback);
  EXPECT_EQ(restored.rollbacks(), 1);
  // And after the rollback (count 1, guard disarmed).
  PhaseController again(TestConfig());
  ASSERT_TRUE(DecodeControllerState(EncodeControllerState(restored), &again).ok());
  EXPECT_EQ(again.rollbacks(), 1);
  EXPECT_TRUE(again.current_plan().rollback);
}

// A state written by the previous format (version 2, before the guard)
// still decodes: REFINEMENT with no guard armed and no rollbacks.
TEST(RollbackStateTest, VersionTwoStateStillDecodes) {
  ByteWriter w;
  w.U32(0x54435053);
  w.U32(2);
  w.U8(static_cast<uint8_t>(Phase::kRefinement));
  w.U64(215);  // phase_start_step
  w.U8(0);     // held
  w.U8(0);     // pinned
  auto plan = [&w](Phase phase, uint8_t opt_kind) {
    w.U8(static_cast<uint8_t>(phase));
    w.U8(static_cast<uint8_t>(LrSchedule::Kind::kConstant));
    w.U64(0);
    w.U64(0);
    w.F64(0.05);
    w.F64(0.05);
    w.U8(opt_kind);
    w.F64(1e-3);
    w.U32(10);
    w.U32(100);
    w.U8(0);    // stop
    w.F64(0);   // noise_std
  };
  plan(Phase::kAcquisition, 0);  // unpinned plan
  plan(Phase::kRefinement, 1);   // plan: natural gradient
  w.U32(1);                      // one observation
  w.U64(220);
  w.F64(0.5);
  w.F64(6);
  w.U8(0);
  w.F64(4);
  w.U8(0);
  w.F64(7);
  w.I32(0);  // latched
  w.U8(0);   // val_seen
  w.F64(0);
  w.I32(0);
  const std::string v2 = w.Take();
  PhaseController c(TestConfig());
  ASSERT_TRUE(DecodeControllerState(v2, &c).ok()) << DecodeControllerState(v2, &c);
  EXPECT_EQ(c.phase(), Phase::kRefinement);
  EXPECT_EQ(c.phase_start_step(), 215u);
  EXPECT_EQ(c.rollbacks(), 0);
  EXPECT_EQ(c.current_plan().guard_steps, 0u);
  EXPECT_FALSE(c.current_plan().rollback);
  // No guard: a non-finite loss holds the plateau off but rolls nothing back.
  Script blown;
  blown.loss = [](uint64_t) { return std::numeric_limits<double>::infinity(); };
  auto f = Feed(c, blown, 230, 1490);
  EXPECT_FALSE(f.has_value()) << f->decision.reason;
  // Re-encoded as version 3, it round-trips.
  const std::string v3 = EncodeControllerState(c);
  PhaseController again(TestConfig());
  ASSERT_TRUE(DecodeControllerState(v3, &again).ok());
  EXPECT_EQ(EncodeControllerState(again), v3);
  // Truncated inside the version-3 guard trailer: DATA_LOSS, state untouched.
  EXPECT_EQ(DecodeControllerState(v3.substr(0, v3.size() - 3), &again).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(EncodeControllerState(again), v3);
}

TEST(RollbackConfigTest, BadFieldsAreNamed) {
  struct Case {
    std::function<void(ControllerConfig&)> break_it;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](ControllerConfig& c) { c.divergence_loss_rate = 0; }, "divergence_loss_rate"},
      {[](ControllerConfig& c) { c.rollback_loss_margin = -1; }, "rollback_loss_margin"},
      {[](ControllerConfig& c) { c.rollback_lr_factor = 1.5; }, "rollback_lr_factor"},
      {[](ControllerConfig& c) { c.rollback_max_retries = 101; }, "rollback_max_retries"},
      {[](ControllerConfig& c) { c.retry_plateau_factor = 0; }, "retry_plateau_factor"},
      {[](ControllerConfig& c) { c.retry_damping_factor = 0.5; }, "retry_damping_factor"},
  };
  for (const Case& k : cases) {
    ControllerConfig c;
    k.break_it(c);
    const absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(k.field));
  }
}

}  // namespace
}  // namespace spotter
