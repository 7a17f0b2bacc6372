// LR schedules as every trainer evaluates them, and the rule that picks the
// directive in force at a step (advisory directives are never applied).
#include "core/phase/directive.h"

#include <cmath>
#include <numbers>
#include <vector>

#include "gtest/gtest.h"

namespace spotter {
namespace {

TEST(LrScheduleTest, ConstantIgnoresSteps) {
  const LrSchedule s = LrSchedule::Constant(0.3);
  EXPECT_DOUBLE_EQ(s.At(0), 0.3);
  EXPECT_DOUBLE_EQ(s.At(1u << 30), 0.3);
}

TEST(LrScheduleTest, LinearInterpolatesAndClampsAtBothEnds) {
  const LrSchedule s{LrSchedule::Kind::kLinear, 100, 200, 0.01, 0.11};
  EXPECT_DOUBLE_EQ(s.At(0), 0.01);
  EXPECT_DOUBLE_EQ(s.At(100), 0.01);
  EXPECT_DOUBLE_EQ(s.At(125), 0.01 + 0.1 * 0.25);
  EXPECT_DOUBLE_EQ(s.At(200), 0.11);
  EXPECT_DOUBLE_EQ(s.At(10000), 0.11);
}

TEST(LrScheduleTest, CosineFollowsTheHalfPeriod) {
  const LrSchedule s{LrSchedule::Kind::kCosine, 1000, 2000, 0.1, 0.001};
  EXPECT_DOUBLE_EQ(s.At(999), 0.1);
  EXPECT_DOUBLE_EQ(s.At(1000), 0.1);
  for (uint64_t step : {1100u, 1250u, 1500u, 1900u}) {
    const double f = (step - 1000.0) / 1000.0;
    EXPECT_NEAR(s.At(step), 0.001 + 0.099 * 0.5 * (1 + std::cos(std::numbers::pi * f)), 1e-15)
        << step;
  }
  EXPECT_DOUBLE_EQ(s.At(2000), 0.001);
  // Monotone from start to end.
  for (uint64_t step = 1000; step < 2000; ++step) EXPECT_GE(s.At(step), s.At(step + 1));
}

Directive Make(uint64_t version, uint64_t effective_step, double lr, bool advisory = false) {
  Directive d;
  d.version = version;
  d.effective_step = effective_step;
  d.plan.lr = LrSchedule::Constant(lr);
  d.advisory = advisory;
  return d;
}

TEST(DirectiveInForceTest, PicksTheHighestVersionThatHasTakenEffect) {
  const std::vector<Directive> ds = {Make(1, 0, 0.1), Make(2, 500, 0.05), Make(3, 800, 0.02)};
  EXPECT_EQ(DirectiveInForce(ds, 0)->version, 1u);
  EXPECT_EQ(DirectiveInForce(ds, 499)->version, 1u);
  EXPECT_EQ(DirectiveInForce(ds, 500)->version, 2u);  // switches exactly at its step
  EXPECT_EQ(DirectiveInForce(ds, 799)->version, 2u);
  EXPECT_EQ(DirectiveInForce(ds, 800)->version, 3u);
  EXPECT_EQ(DirectiveInForce({}, 5), nullptr);
  const std::vector<Directive> later = {Make(4, 100, 0.1)};
  EXPECT_EQ(DirectiveInForce(later, 99), nullptr);
  // Two directives for the same step: the newer one.
  const std::vector<Directive> same = {Make(1, 0, 0.1), Make(2, 50, 0.2), Make(3, 50, 0.3)};
  EXPECT_EQ(DirectiveInForce(same, 50)->version, 3u);
}

TEST(DirectiveInForceTest, AdvisoryDirectivesAreNeverApplied) {
  // ADVISE mode: every directive is advisory; trainers apply none of them.
  const std::vector<Directive> advise = {Make(1, 0, 0.1, true), Make(2, 500, 0.05, true)};
  EXPECT_EQ(DirectiveInForce(advise, 1000), nullptr);
  // Shown (skip_advisory = false) they are the same as in CONTROL.
  EXPECT_EQ(DirectiveInForce(advise, 1000, /*skip_advisory=*/false)->version, 2u);
  // Mixed: the latest applicable one.
  const std::vector<Directive> mixed = {Make(1, 0, 0.1), Make(2, 500, 0.05, true)};
  EXPECT_EQ(DirectiveInForce(mixed, 1000)->version, 1u);
}

TEST(PhaseNamesTest, EveryValueHasAName) {
  EXPECT_STREQ(PhaseName(Phase::kAcquisition), "acquisition");
  EXPECT_STREQ(PhaseName(Phase::kRefinement), "refinement");
  EXPECT_STREQ(PhaseName(Phase::kPolish), "polish");
  EXPECT_STREQ(PhaseName(Phase::kDone), "done");
  EXPECT_STREQ(CauseName(Cause::kAutomatic), "automatic");
  EXPECT_STREQ(CauseName(Cause::kOverride), "override");
  EXPECT_STREQ(CauseName(Cause::kRelease), "release");
  EXPECT_STREQ(CauseName(Cause::kFinish), "finish");
}

}  // namespace
}  // namespace spotter
