// The phase controller fed scripted trajectories: every trigger fires when,
// and only when, it should; smoothing absorbs noise; hysteresis latches;
// operator overrides hold and release; decisions carry their evidence.
#include "core/phase/controller.h"

#include <array>
#include <cmath>
#include <limits>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller_script.h"

namespace spotter {
namespace {

using ::testing::HasSubstr;

using namespace ::spotter::controller_testing;  // NOLINT: the scripted-trajectory helpers

ControllerConfig TestConfig() {
  ControllerConfig c = BaseTestConfig();
  c.val_patience = 3;
  c.val_min_delta = 0.01;
  return c;
}

TEST(ControllerConfigTest, DefaultsAreValidAndBadFieldsAreNamed) {
  EXPECT_TRUE(ControllerConfig{}.Validate().ok());
  EXPECT_EQ(ControllerConfig{}.warmup_end(), 150u);
  EXPECT_EQ(ControllerConfig{}.refine_budget_step(), 750u);
  struct Case {
    std::function<void(ControllerConfig&)> break_it;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](ControllerConfig& c) { c.total_steps = 0; }, "total_steps"},
      {[](ControllerConfig& c) { c.peak_lr = 0; }, "peak_lr"},
      {[](ControllerConfig& c) { c.warmup_fraction = 1.0; }, "warmup_fraction"},
      {[](ControllerConfig& c) { c.rank_fraction_max = 0; }, "rank_fraction_max"},
      {[](ControllerConfig& c) { c.window_evals = 0; }, "window_evals"},
      {[](ControllerConfig& c) { c.confirm_evals = 0; }, "confirm_evals"},
      {[](ControllerConfig& c) { c.hysteresis = 0.9; }, "hysteresis"},
      {[](ControllerConfig& c) { c.lr_cut = 1.5; }, "lr_cut"},
      {[](ControllerConfig& c) { c.kfac_damping = 0; }, "kfac_damping"},
      {[](ControllerConfig& c) { c.lr_min = NAN; }, "lr_min"},
  };
  for (const Case& k : cases) {
    ControllerConfig c;
    k.break_it(c);
    const absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.field;
    EXPECT_THAT(s.message(), HasSubstr(k.field));
  }
}

TEST(PhaseControllerTest, StartsWithTheLinearWarmUp) {
  PhaseController c(TestConfig());
  const DirectivePlan p = c.InitialPlan();
  EXPECT_EQ(p.phase, Phase::kAcquisition);
  EXPECT_EQ(p.optimizer.kind, OptimizerInstruction::Kind::kKeep);
  EXPECT_DOUBLE_EQ(p.lr.At(0), 0.01);
  EXPECT_DOUBLE_EQ(p.lr.At(100), 0.055);
  EXPECT_DOUBLE_EQ(p.lr.At(200), 0.1);
  EXPECT_DOUBLE_EQ(p.lr.At(5000), 0.1);
  EXPECT_EQ(c.phase(), Phase::kAcquisition);
}

TEST(PhaseControllerTest, AcquisitionExitsRightAfterWarmUpOnACleanPlateau) {
  // Rank, PR flat and the loss falling 30%/epoch from the start: only the
  // warm-up holds the trigger back. At step 200 it latches, at 210 (the
  // second latched evaluation) it fires.
  PhaseController c(TestConfig());
  auto f = Feed(c, Script{}, kEvalEvery, 1000, /*margin=*/7);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 210u);
  const Decision& d = f->decision;
  EXPECT_EQ(d.from, Phase::kAcquisition);
  EXPECT_EQ(d.to, Phase::kRefinement);
  EXPECT_EQ(d.cause, Cause::kAutomatic);
  EXPECT_EQ(c.phase(), Phase::kRefinement);
  EXPECT_EQ(c.phase_start_step(), 217u);
  // Natural gradient and the LR cut from the peak LR in force at step 217.
  EXPECT_EQ(d.plan.phase, Phase::kRefinement);
  EXPECT_EQ(d.plan.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
  EXPECT_DOUBLE_EQ(d.plan.optimizer.damping, 1e-3);
  EXPECT_EQ(d.plan.optimizer.factor_update_interval, 10u);
  EXPECT_EQ(d.plan.optimizer.inverse_update_interval, 100u);
  EXPECT_EQ(d.plan.lr.kind, LrSchedule::Kind::kConstant);
  EXPECT_DOUBLE_EQ(d.plan.lr.At(217), 0.05);
  // The evidence names the values, windows and thresholds.
  const auto e = EvidenceMap(d);
  EXPECT_DOUBLE_EQ(e.at("step"), 210);
  EXPECT_DOUBLE_EQ(e.at("effective_rank"), 6);
  EXPECT_DOUBLE_EQ(e.at("rank_fraction"), 6.0 / 64);
  EXPECT_DOUBLE_EQ(e.at("rank_fraction_max"), 0.2);
  EXPECT_DOUBLE_EQ(e.at("rank_spread"), 0);
  EXPECT_DOUBLE_EQ(e.at("pr_drop_per_epoch"), 0);
  EXPECT_DOUBLE_EQ(e.at("id_drop_threshold"), 0.05);
  // The span's first and last windows (130..150, 190..210) are 60 steps
  // apart: 0.6 epoch; the loss falls by exp(-0.003 * 60) between them.
  EXPECT_NEAR(e.at("loss_decrease_per_epoch"), (1 - std::exp(-0.18)) / 0.6, 1e-12);
  EXPECT_DOUBLE_EQ(e.at("window_evals"), 3);
  EXPECT_DOUBLE_EQ(e.at("plateau_windows"), 3);
  EXPECT_DOUBLE_EQ(e.at("span_evals"), 9);
  EXPECT_DOUBLE_EQ(e.at("span_steps"), 80);
  EXPECT_DOUBLE_EQ(e.at("latched_evals"), 2);
  EXPECT_DOUBLE_EQ(e.at("confirm_evals"), 2);
  EXPECT_DOUBLE_EQ(e.at("lr_before"), 0.1);
  EXPECT_DOUBLE_EQ(e.at("lr_after"), 0.05);
  // No r90 interval in these observations: the point stands in for its upper
  // end.
  EXPECT_THAT(d.reason, HasSubstr("rank fraction 0.094, 90% CI up to 0.094 < 0.20"));
  EXPECT_THAT(d.reason, HasSubstr("LR 0.1 -> 0.05"));
}

TEST(PhaseControllerTest, AcquisitionWaitsForTheRankToPlateau) {
  // r90 and PR fall 12% every 30 steps until step 500, then stay: the
  // trigger fires only once the windows are (nearly) past the fall.
  Script s;
  s.rank = [](uint64_t t) { return 60.0 * std::pow(0.88, std::min<uint64_t>(t, 500) / 30.0); };
  s.pr = [](uint64_t t) { return 40.0 * std::pow(0.88, std::min<uint64_t>(t, 500) / 30.0); };
  PhaseController c(TestConfig());
  auto f = Feed(c, s, kEvalEvery, 2000);
  ASSERT_TRUE(f.has_value());
  // r90 passes 12.8 (rank fraction 0.2) at step ~360 while still falling
  // 12% per window, and the PR 40%/epoch: no fire until the fall stops.
  EXPECT_GE(f->step, 500u);
  // The span (490..570 at step 570) has one value before the plateau; its
  // first window's mean is 1.4% above the rest: PR change -2.4%/epoch over
  // the 0.6 epoch between the first and last windows, spread 1.4%. At 560
  // (480..560) the PR still changes -7%/epoch. Latched at 570, fired at 580.
  EXPECT_EQ(f->step, 580u);
  const auto e = EvidenceMap(f->decision);
  EXPECT_LT(e.at("rank_spread"), 0.1);
  EXPECT_LT(e.at("pr_drop_per_epoch"), 0.05);
}

TEST(PhaseControllerTest, AcquisitionNeedsTheLossStillFalling) {
  Script s;
  s.loss = [](uint64_t t) { return t < 600 ? 1.0 : std::exp(-0.003 * (t - 600.0)); };
  PhaseController c(TestConfig());
  EXPECT_FALSE(Feed(c, s, kEvalEvery, 600).has_value());
  // Once the loss falls again, the window before it must also see the fall.
  auto f = Feed(c, s, 600, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_GE(f->step, 610u);
  EXPECT_LE(f->step, 640u);

  // Without any loss report ACQUISITION never exits on its own.
  Script unreported;
  unreported.loss = [](uint64_t) { return std::numeric_limits<double>::quiet_NaN(); };
  PhaseController quiet(TestConfig());
  EXPECT_FALSE(Feed(quiet, unreported, kEvalEvery, 1990).has_value());
  EXPECT_EQ(quiet.phase(), Phase::kAcquisition);
}

TEST(PhaseControllerTest, AcquisitionNeedsALowRankFraction) {
  // A flat spectrum of r90 = 14 in a sketch of 64 rows: fraction 0.22.
  Script s;
  s.rank = [](uint64_t) { return 14.0; };
  PhaseController c(TestConfig());
  EXPECT_FALSE(Feed(c, s, kEvalEvery, 1990).has_value());
  // The same r90 counts as low in a sketch of 128 rows (0.11).
  ControllerConfig wide = TestConfig();
  wide.sketch_rows = 128;
  PhaseController w(wide);
  EXPECT_TRUE(Feed(w, s, kEvalEvery, 1990).has_value());
  // A censored r90 (the sketch cannot hold 90% of the trace) never passes.
  Script censored;
  censored.censored = [](uint64_t) { return true; };
  PhaseController k(TestConfig());
  EXPECT_FALSE(Feed(k, censored, kEvalEvery, 1990).has_value());
}

TEST(PhaseControllerTest, AFastPrDropHoldsAcquisition) {
  // The PR still drops 8%/epoch (above 5%) while r90 is flat.
  Script s;
  s.pr = [](uint64_t t) { return 30.0 * std::exp(-0.0008 * t); };
  PhaseController c(TestConfig());
  EXPECT_FALSE(Feed(c, s, kEvalEvery, 1990).has_value());
  // 3%/epoch passes.
  Script slow;
  slow.pr = [](uint64_t t) { return 30.0 * std::exp(-0.0003 * t); };
  PhaseController d(TestConfig());
  auto f = Feed(d, slow, kEvalEvery, 1990);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 210u);
  EXPECT_NEAR(EvidenceMap(f->decision).at("pr_drop_per_epoch"), (1 - std::exp(-0.018)) / 0.6,
              1e-9);
}

TEST(PhaseControllerTest, NoiseOnAFallingSpectrumDoesNotTrigger) {
  // r90 falls 20% every 30 steps (7% per evaluation) with +-30% noise on
  // each evaluation, so that single evaluations often look flat or rising;
  // the smoothed signal (windows of 5) falls 31% between windows.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> jitter(0.7, 1.3);
  std::map<uint64_t, double> noise;
  for (uint64_t t = 0; t < 2000; t += kEvalEvery) noise[t] = jitter(rng);
  Script s;
  s.rank = [&](uint64_t t) { return 60.0 * std::pow(0.8, t / 30.0) * noise[t]; };
  ControllerConfig config = TestConfig();
  config.window_evals = 5;
  config.confirm_evals = 3;
  PhaseController c(config);
  for (uint64_t t = kEvalEvery; t < 400; t += kEvalEvery) {
    EXPECT_FALSE(c.OnEvaluation(At(s, t), t + 5).has_value()) << "step " << t;
  }
}

TEST(PhaseControllerTest, NoiseOnAPlateauIsSmoothedAway) {
  // Noise around a flat r90 of 6 (+-10%) and PR of 4 (+-5%), on a loss
  // falling 30%/epoch (+-10%): the plateau is found, at the first step
  // allowed (220: latched from the end of the warm-up at 200, confirmed on
  // the third evaluation) or a little later.
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> rank_jitter(0.9, 1.1), pr_jitter(0.95, 1.05),
      loss_jitter(0.9, 1.1);
  std::map<uint64_t, std::array<double, 3>> noise;
  for (uint64_t t = 0; t < 2000; t += kEvalEvery) {
    noise[t] = {rank_jitter(rng), pr_jitter(rng), loss_jitter(rng)};
  }
  Script s;
  s.rank = [&](uint64_t t) { return 6.0 * noise[t][0]; };
  s.pr = [&](uint64_t t) { return 4.0 * noise[t][1]; };
  s.loss = [&](uint64_t t) { return std::exp(-0.003 * t) * noise[t][2]; };
  ControllerConfig config = TestConfig();
  config.window_evals = 5;
  config.confirm_evals = 3;
  PhaseController c(config);
  auto f = Feed(c, s, kEvalEvery, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_GE(f->step, 220u);
  EXPECT_LE(f->step, 400u);
}

TEST(PhaseControllerTest, AnOutlierEvaluationDoesNotTrigger) {
  // r90 at rank fraction 0.3 with one evaluation at r90 = 1: the smoothed
  // fraction stays above 0.2 and the jump unlatches the plateau test.
  Script s;
  s.rank = [](uint64_t t) { return t == 300 ? 1.0 : 19.2; };
  PhaseController c(TestConfig());
  EXPECT_FALSE(Feed(c, s, kEvalEvery, 1990).has_value());
}

// Without smoothing (window of one evaluation) the latch is visible
// directly: the rank fraction alone moves it; plateau_epsilon is wide so
// that the rank's own moves (spread at most 0.58 over a span) stay inside
// the band.
class HysteresisTest : public ::testing::Test {
 protected:
  // Evaluations through the warm-up at a band value (0.25) fill the window.
  HysteresisTest() : c_(Config()) {
    for (step_ = kEvalEvery; step_ < 200; step_ += kEvalEvery) {
      Script s;
      s.rank = [](uint64_t) { return 0.25 * 64; };
      EXPECT_FALSE(c_.OnEvaluation(At(s, step_), step_ + 5));
    }
    step_ -= kEvalEvery;
  }
  static ControllerConfig Config() {
    ControllerConfig c = TestConfig();
    c.window_evals = 1;
    c.confirm_evals = 3;
    c.hysteresis = 1.5;  // latched until the fraction exceeds 0.3
    c.plateau_epsilon = 0.9;
    return c;
  }
  // Feeds one evaluation at the next step with r90 = fraction * 64.
  std::optional<Decision> Next(double fraction) {
    step_ += kEvalEvery;
    Script s;
    s.rank = [fraction](uint64_t) { return fraction * 64; };
    return c_.OnEvaluation(At(s, step_), step_ + 5);
  }
  PhaseController c_;
  uint64_t step_ = 0;  // of the last evaluation fed
};

TEST_F(HysteresisTest, TheLatchSurvivesTheBandAndFiresOnlyWhenTheConditionHolds) {
  EXPECT_FALSE(Next(0.18));  // latched 1
  EXPECT_FALSE(Next(0.25));  // in the band (0.2, 0.3]: latched 2
  EXPECT_FALSE(Next(0.25));  // latched 3, but the condition does not hold now
  auto d = Next(0.18);       // latched 4 and holding: fires
  ASSERT_TRUE(d.has_value());
  EXPECT_DOUBLE_EQ(EvidenceMap(*d).at("latched_evals"), 4);
  EXPECT_DOUBLE_EQ(EvidenceMap(*d).at("rank_fraction"), 0.18);
}

TEST_F(HysteresisTest, PassingTheLooseThresholdUnlatches) {
  EXPECT_FALSE(Next(0.18));
  EXPECT_FALSE(Next(0.18));
  EXPECT_FALSE(Next(0.31));  // clearly off: the latch resets
  EXPECT_FALSE(Next(0.18));  // latched 1
  EXPECT_FALSE(Next(0.18));  // latched 2
  EXPECT_TRUE(Next(0.18).has_value());
}

TEST_F(HysteresisTest, ABandValueNeverLatches) {
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(Next(0.25)) << i;
}

TEST(PhaseControllerTest, RefinementWaitsForDwellAndIgnoresEvaluationsBeforeItsStep) {
  ControllerConfig config = TestConfig();
  config.min_dwell_steps = 200;
  PhaseController c(config);
  auto f = Feed(c, Script{}, kEvalEvery, 1000, /*margin=*/100);
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->step, 210u);
  ASSERT_EQ(c.phase_start_step(), 310u);
  // Until step 310 the trainers still run ACQUISITION: wild evaluations
  // there must not count for REFINEMENT.
  Script wild;
  wild.rank = [](uint64_t t) { return t % 20 == 0 ? 50.0 : 2.0; };
  EXPECT_FALSE(Feed(c, wild, 220, 310).has_value());
  // A stable spectrum and a flat loss from step 310: REFINEMENT may leave at
  // 310 + 200 (dwell); the span is full since 390; two latched
  // evaluations: 510, 520.
  Script flat;
  flat.loss = [](uint64_t) { return 0.01; };
  auto g = Feed(c, flat, 310, 2000, /*margin=*/100);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->step, 520u);
  EXPECT_EQ(g->decision.from, Phase::kRefinement);
  EXPECT_EQ(g->decision.to, Phase::kPolish);
  const auto e = EvidenceMap(g->decision);
  EXPECT_DOUBLE_EQ(e.at("loss_improvement_per_epoch"), 0);
  EXPECT_DOUBLE_EQ(e.at("dwell_steps"), 210);
  // POLISH: cosine from the refinement LR (0.05) at its effective step down
  // to lr_min at total_steps, optimizer kept.
  const DirectivePlan& p = g->decision.plan;
  EXPECT_EQ(p.lr.kind, LrSchedule::Kind::kCosine);
  EXPECT_EQ(p.lr.start_step, 620u);
  EXPECT_EQ(p.lr.end_step, 2000u);
  EXPECT_DOUBLE_EQ(p.lr.At(620), 0.05);
  EXPECT_NEAR(p.lr.At(1310), 0.5 * (0.05 + 0.001), 1e-15);
  EXPECT_DOUBLE_EQ(p.lr.At(2000), 0.001);
  EXPECT_EQ(p.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
}

TEST(PhaseControllerTest, WindowsHoldOnlyEvaluationsOfThePhaseInForce) {
  // REFINEMENT decided at step 210 takes effect at 310. The evaluations in
  // between look like a finished refinement already (flat loss, stable
  // spectrum), but they measured ACQUISITION: REFINEMENT must collect its
  // own span of 3 x 3 evaluations (310..390), latch at 390 and fire at 400.
  ControllerConfig config = TestConfig();
  config.min_dwell_steps = 20;
  PhaseController c(config);
  ASSERT_TRUE(Feed(c, Script{}, kEvalEvery, 1000, /*margin=*/100).has_value());
  ASSERT_EQ(c.phase_start_step(), 310u);
  Script flat;
  flat.loss = [](uint64_t) { return 0.01; };
  auto f = Feed(c, flat, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 400u);
  EXPECT_DOUBLE_EQ(EvidenceMap(f->decision).at("span_steps"), 80);
}

TEST(PhaseControllerTest, ARisingLossIsNoPlateau) {
  // Under natural gradient (from step 215) the spectrum is flat and the loss
  // rises 22% per epoch: a loss that moves fast is not "slow", whichever way
  // it moves. Only the budget (step 1500) ends REFINEMENT. (The old one-sided
  // test took any rise for a plateau and fired at the first full span.)
  // Without the guarded switch: with it, the rise rolls the switch back
  // (controller_guard_test.cc).
  ControllerConfig config = TestConfig();
  config.rollback_window_steps = 0;
  PhaseController c = InRefinement(config);
  Script rising;
  rising.loss = [](uint64_t t) { return std::exp(0.002 * (static_cast<double>(t) - 200.0)); };
  auto f = Feed(c, rising, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->decision.to, Phase::kPolish);
  EXPECT_EQ(f->step, 1500u);
  EXPECT_THAT(f->decision.reason, HasSubstr("refinement budget reached"));
}

TEST(PhaseControllerTest, ATurningPointIsNoPlateau) {
  // r90 and the PR swing with a period of 300 steps and never settle; the
  // loss falls 30%/epoch. Two windows on either side of a minimum read the
  // same, but over the whole span the rank moves far outside the band.
  Script swinging;
  swinging.rank = [](uint64_t t) { return 8.0 + 6.0 * std::cos(2 * M_PI * t / 300.0); };
  swinging.pr = [](uint64_t t) { return 5.0 + 3.0 * std::cos(2 * M_PI * t / 300.0); };
  PhaseController c(TestConfig());
  EXPECT_FALSE(Feed(c, swinging, kEvalEvery, 1990).has_value());
  EXPECT_EQ(c.phase(), Phase::kAcquisition);
  // The same in REFINEMENT with a flat loss: no POLISH until the budget.
  PhaseController r = InRefinement(TestConfig());
  swinging.loss = [](uint64_t) { return 0.01; };
  auto f = Feed(r, swinging, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 1500u);
}

TEST(PhaseControllerTest, APrRisingFastHoldsAcquisition) {
  // r90 flat, the PR rising 8%/epoch: not settled either (two-sided).
  Script s;
  s.pr = [](uint64_t t) { return 4.0 * std::exp(0.0008 * t); };
  PhaseController c(TestConfig());
  EXPECT_FALSE(Feed(c, s, kEvalEvery, 1990).has_value());
}

TEST(PhaseControllerTest, ThePlateauMustOutlastTheWindowMemory) {
  // A sketch window with a memory of 200 steps: the span must cover 200
  // steps (21 evaluations) instead of the 9 the windows alone need. On the
  // clean plateau that latches at 200 and fires at 210 without it, the span
  // at step 200 covers only 10..200 (190 steps): it latches at 210 and
  // fires at 220.
  ControllerConfig config = TestConfig();
  config.window_memory_steps = 200;
  PhaseController c(config);
  auto f = Feed(c, Script{}, kEvalEvery, 1000);
  ASSERT_TRUE(f.has_value());
  const auto e = EvidenceMap(f->decision);
  EXPECT_GE(e.at("span_steps"), 200);
  EXPECT_DOUBLE_EQ(e.at("window_memory_steps"), 200);
  EXPECT_EQ(f->step, 220u);
}

TEST(PhaseControllerTest, RefinementStaysWhileTheLossImproves) {
  // The loss falls 30%/epoch under natural gradient: no plateau exit, only
  // the budget (75% of 2000 = step 1500) ends REFINEMENT.
  PhaseController c = InRefinement(TestConfig());
  auto f = Feed(c, Script{}, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 1500u);
  EXPECT_EQ(f->decision.to, Phase::kPolish);
  EXPECT_THAT(f->decision.reason, HasSubstr("budget"));
  EXPECT_DOUBLE_EQ(EvidenceMap(f->decision).at("refine_budget_step"), 1500);
}

TEST(PhaseControllerTest, RefinementStaysWhileTheSpectrumMoves) {
  PhaseController c = InRefinement(TestConfig());
  Script s;
  s.loss = [](uint64_t) { return 0.01; };
  s.pr = [](uint64_t t) { return 4.0 * std::pow(1.2, t / 30.0); };  // +20% per window
  auto f = Feed(c, s, 220, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 1500u);  // the budget, not the plateau
}

TEST(PhaseControllerTest, TheBudgetRespectsTheMinimumDwell) {
  // An operator forces REFINEMENT late, past the budget step: it stays for
  // the minimum dwell first.
  PhaseController c(TestConfig());
  c.ForcePhase(Phase::kRefinement, /*hold=*/false, "late", 1600);
  EXPECT_FALSE(Feed(c, Script{}, 1600, 1650).has_value());
  auto f = Feed(c, Script{}, 1650, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 1650u);
  EXPECT_THAT(f->decision.reason, HasSubstr("budget"));
}

// POLISH entered at step 620 with val_patience 3, val_min_delta 0.01.
class PolishTest : public ::testing::Test {
 protected:
  PolishTest() : c_(Config()) {
    c_.ForcePhase(Phase::kPolish, /*hold=*/false, "", 620);
  }
  static ControllerConfig Config() {
    ControllerConfig c = TestConfig();
    c.min_dwell_steps = 100;
    return c;
  }
  PhaseController c_;
};

TEST_F(PolishTest, StopsAfterPatienceReportsWithoutImprovement) {
  EXPECT_FALSE(c_.OnValidation(650, 1.00, 660));  // first report: the best
  EXPECT_FALSE(c_.OnValidation(700, 0.95, 710));  // improved by 0.05
  EXPECT_FALSE(c_.OnValidation(750, 0.945, 760));  // 0.005 < min_delta: stale 1
  EXPECT_FALSE(c_.OnValidation(800, 0.96, 810));   // stale 2
  auto d = c_.OnValidation(850, 0.942, 860);        // stale 3: stop
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->to, Phase::kDone);
  EXPECT_TRUE(d->plan.stop);
  EXPECT_EQ(c_.phase(), Phase::kDone);
  const auto e = EvidenceMap(*d);
  EXPECT_DOUBLE_EQ(e.at("val_best"), 0.95);
  EXPECT_DOUBLE_EQ(e.at("val_last"), 0.942);
  EXPECT_DOUBLE_EQ(e.at("val_stale_reports"), 3);
  EXPECT_DOUBLE_EQ(e.at("val_patience"), 3);
  // DONE is final for the automatic triggers.
  EXPECT_FALSE(c_.OnValidation(900, 0.5, 910));
  EXPECT_FALSE(c_.OnEvaluation(At(Script{}, 1990), 2000));
}

TEST_F(PolishTest, AnImprovementResetsPatience) {
  EXPECT_FALSE(c_.OnValidation(650, 1.0, 660));
  EXPECT_FALSE(c_.OnValidation(700, 1.0, 710));
  EXPECT_FALSE(c_.OnValidation(750, 1.0, 760));
  EXPECT_FALSE(c_.OnValidation(800, 0.98, 810));  // improved: stale 0
  EXPECT_FALSE(c_.OnValidation(850, 0.98, 860));
  EXPECT_FALSE(c_.OnValidation(900, 0.98, 910));
  EXPECT_TRUE(c_.OnValidation(950, 0.98, 960).has_value());
}

TEST_F(PolishTest, ReportsBeforePolishTookEffectAndNonFiniteOnesAreIgnored) {
  EXPECT_FALSE(c_.OnValidation(600, 0.1, 610));  // before step 620
  EXPECT_FALSE(c_.OnValidation(650, NAN, 660));
  EXPECT_FALSE(c_.OnValidation(680, 1.0, 690));  // the first counted report
  EXPECT_FALSE(c_.OnValidation(690, 1.0, 700));
  EXPECT_FALSE(c_.OnValidation(700, 1.0, 710));
  // Stale 3 at step 710, but POLISH has been in force only 90 < 100 steps.
  EXPECT_FALSE(c_.OnValidation(710, 1.0, 720));
  EXPECT_TRUE(c_.OnValidation(720, 1.0, 730).has_value());
}

TEST(PhaseControllerTest, MaximizedMetricsStopOnTheirPlateau) {
  ControllerConfig config = TestConfig();
  config.val_maximize = true;
  config.min_dwell_steps = 0;
  PhaseController c(config);
  c.ForcePhase(Phase::kPolish, false, "", 100);
  EXPECT_FALSE(c.OnValidation(100, 0.80, 110));
  EXPECT_FALSE(c.OnValidation(110, 0.70, 120));  // worse: stale 1
  EXPECT_FALSE(c.OnValidation(120, 0.85, 130));  // better: stale 0
  EXPECT_FALSE(c.OnValidation(130, 0.855, 140));
  EXPECT_FALSE(c.OnValidation(140, 0.855, 150));
  EXPECT_TRUE(c.OnValidation(150, 0.855, 160).has_value());
}

TEST(PhaseControllerTest, ValidationOutsidePolishIsIgnored) {
  PhaseController c(TestConfig());
  for (uint64_t t = 0; t < 100; ++t) EXPECT_FALSE(c.OnValidation(t, 1.0, t + 1));
}

TEST(PhaseControllerTest, DoneAtThePlannedSteps) {
  // From ACQUISITION, whatever the triggers say.
  PhaseController c(TestConfig());
  Script s;
  s.loss = [](uint64_t) { return 1.0; };
  EXPECT_FALSE(Feed(c, s, kEvalEvery, 2000).has_value());
  auto d = c.OnEvaluation(At(s, 2000), 2003);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->from, Phase::kAcquisition);
  EXPECT_EQ(d->to, Phase::kDone);
  EXPECT_TRUE(d->plan.stop);
  EXPECT_DOUBLE_EQ(d->plan.lr.At(2003), 0.1);
}

TEST(PhaseControllerTest, HoldKeepsTriggersOffUntilRelease) {
  PhaseController c(TestConfig());
  const Decision forced = c.ForcePhase(Phase::kAcquisition, /*hold=*/true, "investigating", 15);
  EXPECT_EQ(forced.cause, Cause::kOverride);
  EXPECT_THAT(forced.reason, HasSubstr("operator forced acquisition (held): investigating"));
  EXPECT_TRUE(c.held());
  // A clean plateau: held, nothing fires, not even DONE at total_steps.
  EXPECT_FALSE(Feed(c, Script{}, 20, 2010).has_value());
  // Release without a pinned directive re-issues nothing; the detectors,
  // which kept their windows, resume at once.
  EXPECT_FALSE(c.Release("done looking", 2010).has_value());
  EXPECT_FALSE(c.held());
  ControllerConfig config = TestConfig();
  config.total_steps = 5000;
  PhaseController d(config);
  d.ForcePhase(Phase::kAcquisition, true, "", 15);
  EXPECT_FALSE(Feed(d, Script{}, 20, 800).has_value());
  d.Release("", 800);
  auto f = Feed(d, Script{}, 800, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->step, 810u);  // latched at 800, confirmed at 810
  EXPECT_EQ(f->decision.to, Phase::kRefinement);
}

TEST(PhaseControllerTest, ForceWithoutHoldLetsTheTriggersGoOn) {
  PhaseController c(TestConfig());
  const Decision d = c.ForcePhase(Phase::kRefinement, /*hold=*/false, "", 100);
  EXPECT_EQ(d.from, Phase::kAcquisition);
  EXPECT_EQ(d.to, Phase::kRefinement);
  EXPECT_EQ(d.plan.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
  EXPECT_NEAR(d.plan.lr.At(100), 0.5 * 0.055, 1e-15);
  EXPECT_FALSE(c.held());
  Script flat;
  flat.loss = [](uint64_t) { return 0.5; };
  auto f = Feed(c, flat, 100, 2000);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->decision.to, Phase::kPolish);
  // Backwards: POLISH -> ACQUISITION goes back to the warm-up plan, which
  // is at its peak LR this late.
  const Decision back = c.ForcePhase(Phase::kAcquisition, false, "", 900);
  EXPECT_EQ(back.from, Phase::kPolish);
  EXPECT_EQ(back.plan.optimizer.kind, OptimizerInstruction::Kind::kKeep);
  EXPECT_DOUBLE_EQ(back.plan.lr.At(900), 0.1);
}

TEST(PhaseControllerTest, PinHoldsAPlanAndReleaseRestoresThePhasePlan) {
  PhaseController c = InRefinement(TestConfig());
  const DirectivePlan refine = c.current_plan();
  DirectivePlan pin;
  pin.lr = LrSchedule::Constant(0.003);
  pin.phase = Phase::kPolish;  // ignored: a pin keeps the current phase
  const Decision p = c.Pin(pin, "manual LR", 400);
  EXPECT_EQ(p.cause, Cause::kOverride);
  EXPECT_EQ(p.from, Phase::kRefinement);
  EXPECT_EQ(p.to, Phase::kRefinement);
  EXPECT_EQ(p.plan.phase, Phase::kRefinement);
  EXPECT_DOUBLE_EQ(p.plan.lr.At(500), 0.003);
  EXPECT_TRUE(c.held());
  // A second pin replaces the first; release still goes back to the plan
  // from before the first.
  pin.lr = LrSchedule::Constant(0.002);
  c.Pin(pin, "", 450);
  Script flat;
  flat.loss = [](uint64_t) { return 0.5; };
  EXPECT_FALSE(Feed(c, flat, 450, 1400).has_value());
  auto r = c.Release("back to automatic", 1400);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->cause, Cause::kRelease);
  EXPECT_EQ(r->to, Phase::kRefinement);
  EXPECT_DOUBLE_EQ(r->plan.lr.At(1400), refine.lr.At(1400));
  EXPECT_EQ(r->plan.optimizer.kind, OptimizerInstruction::Kind::kNaturalGradient);
  EXPECT_FALSE(c.held());
  // A pinned stop is DONE.
  DirectivePlan stop;
  stop.stop = true;
  EXPECT_EQ(c.Pin(stop, "", 1500).to, Phase::kDone);
}

TEST(PhaseControllerTest, FinishIssuesTheStopPlan) {
  PhaseController c(TestConfig());
  const Decision d = c.Finish(Cause::kFinish, "run finished by the API", 42);
  EXPECT_EQ(d.to, Phase::kDone);
  EXPECT_EQ(d.cause, Cause::kFinish);
  EXPECT_TRUE(d.plan.stop);
  EXPECT_EQ(c.phase(), Phase::kDone);
}

TEST(PhaseControllerTest, DecisionsAreDeterministic) {
  // Two controllers fed the same noisy inputs decide the same things at the
  // same steps, with the same evidence.
  auto run = [] {
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> jitter(0.9, 1.1);
    PhaseController c(TestConfig());
    std::vector<std::pair<uint64_t, Decision>> out;
    for (uint64_t t = kEvalEvery; t <= 2000; t += kEvalEvery) {
      Observation o;
      o.step = t;
      o.effective_rank = 6 * jitter(rng);
      o.participation_ratio = 4 * jitter(rng);
      o.loss = t < 1000 ? std::exp(-0.003 * t) : 0.05;
      if (auto d = c.OnEvaluation(o, t + 3)) out.emplace_back(t, *d);
      if (c.phase() == Phase::kPolish && t % 50 == 0) {
        if (auto d = c.OnValidation(t, 0.5, t + 3)) out.emplace_back(t, *d);
      }
    }
    return out;
  };
  const auto a = run(), b = run();
  ASSERT_EQ(a.size(), 3u);  // REFINEMENT, POLISH, DONE
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.to, b[i].second.to);
    EXPECT_EQ(a[i].second.reason, b[i].second.reason);
    EXPECT_EQ(a[i].second.evidence, b[i].second.evidence);
  }
}

}  // namespace
}  // namespace spotter
