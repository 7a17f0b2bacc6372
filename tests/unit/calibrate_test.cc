// Threshold calibration (core/calibrate/) against exact references: scripted
// populations whose per-evaluation measurements have closed forms, so each
// run's quantile and the proposal are known before the code runs.
#include "core/calibrate/calibrate.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "controller_script.h"
#include "gtest/gtest.h"

namespace spotter {
namespace {

using controller_testing::At;
using controller_testing::BaseTestConfig;
using controller_testing::kEvalEvery;
using controller_testing::Script;

// Evaluations every 10 steps from 10 to 1990 (total_steps 2000). With
// BaseTestConfig the exit's tests are reached from step 200 (the warm-up's
// end; the span of 9 evaluations and the dwell are full long before): 180
// evaluations, 200..1990. A span ending at s has windows centred at s - 70,
// s - 40 and s - 10, 0.6 epochs apart end to end.
CalibrationRun Scripted(const std::string& name, const Script& s,
                        uint64_t last_first_order_step = UINT64_MAX) {
  CalibrationRun r;
  r.name = name;
  r.config = BaseTestConfig();
  for (uint64_t step = kEvalEvery; step < 2000; step += kEvalEvery) {
    r.observations.push_back(At(s, step));
  }
  r.last_first_order_step = last_first_order_step;
  return r;
}

TEST(EmpiricalQuantileTest, IsTheInverseEmpiricalCdf) {
  const std::vector<double> v = {5, 1, 3, 2, 4};
  EXPECT_EQ(EmpiricalQuantile(v, 0.2), 1);
  EXPECT_EQ(EmpiricalQuantile(v, 0.21), 2);
  EXPECT_EQ(EmpiricalQuantile(v, 0.5), 3);
  EXPECT_EQ(EmpiricalQuantile(v, 0.8), 4);  // 0.8 x 5 = 4: the 4th value
  EXPECT_EQ(EmpiricalQuantile(v, 1.0), 5);
}

TEST(RoundUpTwoDigitsTest, IsTheNextTwoDigitValueStrictlyAbove) {
  EXPECT_EQ(RoundUpTwoDigits(0.3125), 0.32);
  EXPECT_EQ(RoundUpTwoDigits(0.31), 0.32);  // strictly above: the tests are "<"
  EXPECT_EQ(RoundUpTwoDigits(0.0999), 0.1);
  EXPECT_EQ(RoundUpTwoDigits(7.0), 7.1);
  EXPECT_EQ(RoundUpTwoDigits(123.0), 130.0);
  EXPECT_EQ(RoundUpTwoDigits(0.00011), 0.00012);
}

// Five runs on flat plateaus at r90 = 10, 20, 30, 40, 50 of 64 rows, the
// loss exp(-0.003 t): every run's rank fraction is r / 64 at every
// evaluation, its spread and PR rate 0, its loss rate (1 - e^-0.18) / 0.6.
TEST(CalibrateTest, RankFractionIsTheCoverageQuantileOfThePlateaus) {
  std::vector<CalibrationRun> runs;
  for (double r : {30.0, 10.0, 50.0, 20.0, 40.0}) {
    Script s;
    s.rank = [r](uint64_t) { return r; };
    runs.push_back(Scripted(absl::StrCat("r", r), s));
  }
  absl::StatusOr<Calibration> c = Calibrate(runs, {.run_quantile = 0.5, .coverage = 0.8});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->runs.size(), 5u);
  const double loss_rate = (1.0 - std::exp(-0.18)) / 0.6;
  for (const RunSignals& r : c->runs) {
    EXPECT_EQ(r.evaluations, 180) << r.name;
    EXPECT_NEAR(r.rank_spread, 0.0, 1e-15);
    EXPECT_NEAR(r.abs_pr_drop_per_epoch, 0.0, 1e-15);
    EXPECT_NEAR(r.loss_decrease_per_epoch, loss_rate, 1e-12) << r.name;
  }
  EXPECT_DOUBLE_EQ(c->runs[0].rank_fraction_ci_upper, 30.0 / 64);
  // The 4th of the five fractions (0.8 x 5), 40 / 64 = 0.625 -> 0.63.
  EXPECT_EQ(c->rank_fraction_max, 0.63);
  // Spread and rate 0 everywhere: the floor 1e-4, next two-digit value up.
  EXPECT_EQ(c->plateau_epsilon, 0.00011);
  EXPECT_EQ(c->id_drop_threshold, 0.00011);
  // Replayed: the four runs below 0.63 latch at 200 and fire at 210
  // (confirm_evals 2); r90 = 50 (0.78) never does.
  EXPECT_EQ(c->runs_switched, 4);
  for (const RunSignals& r : c->runs) {
    if (r.name == "r50") {
      EXPECT_FALSE(r.switch_step.has_value());
    } else {
      ASSERT_TRUE(r.switch_step.has_value()) << r.name;
      EXPECT_EQ(*r.switch_step, 210u) << r.name;
      EXPECT_NE(r.switch_reason.find("gradient-covariance rank plateaued"), std::string::npos);
    }
    // With the runs' own thresholds (rank_fraction_max 0.2) only r90 = 10
    // (0.156) passes; the spread and rate tests (0.1, 0.05) hold for all.
    if (r.name == "r10") {
      ASSERT_TRUE(r.own_switch_step.has_value());
      EXPECT_EQ(*r.own_switch_step, 210u);
    } else {
      EXPECT_FALSE(r.own_switch_step.has_value()) << r.name;
    }
  }
}

// Ramps: r90 = 10 + b t and PR = 20 - p t. Over a span ending at s the
// window means are r(s - 70), r(s - 40), r(s - 10), so the spread is
// 60 b / r(s - 40) (falling in s) and the PR rate 100 p / PR(s - 70)
// (rising in s). The median of 180 evaluations is the 90th smallest: at
// s = 1100 for the spread (counted from 1990 down), s = 1090 for the rate
// and the rank fraction r(1080) / 64.
TEST(CalibrateTest, SpreadAndRateAreTheControllersOwnMeasurements) {
  std::vector<CalibrationRun> runs;
  std::vector<double> spread, rate, fraction;
  for (int i = 1; i <= 5; ++i) {
    const double b = 0.001 * i, p = 0.0005 * i;
    Script s;
    s.rank = [b](uint64_t t) { return 10.0 + b * t; };
    s.pr = [p](uint64_t t) { return 20.0 - p * t; };
    runs.push_back(Scripted(absl::StrCat("ramp", i), s));
    spread.push_back(60 * b / (10.0 + b * 1060));
    rate.push_back(100 * p / (20.0 - p * 1020));
    fraction.push_back((10.0 + b * 1080) / 64);
  }
  absl::StatusOr<Calibration> c = Calibrate(runs, {.run_quantile = 0.5, .coverage = 0.8});
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(c->runs[i].rank_spread, spread[i], 1e-12 * spread[i]) << i;
    EXPECT_NEAR(c->runs[i].abs_pr_drop_per_epoch, rate[i], 1e-12 * rate[i]) << i;
    EXPECT_NEAR(c->runs[i].rank_fraction_ci_upper, fraction[i], 1e-12) << i;
  }
  EXPECT_EQ(c->plateau_epsilon, RoundUpTwoDigits(spread[3]));
  EXPECT_EQ(c->id_drop_threshold, RoundUpTwoDigits(rate[3]));
  EXPECT_EQ(c->rank_fraction_max, RoundUpTwoDigits(fraction[3]));
}

// Evaluations after the first switch (a CONTROL run under natural gradient)
// describe other training: they are left out.
TEST(CalibrateTest, OnlyTheFirstOrderPartCounts) {
  Script s;
  s.rank = [](uint64_t t) { return t <= 500 ? 16.0 : 48.0; };
  absl::StatusOr<Calibration> c = Calibrate({Scripted("switched", s, 500)}, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runs[0].evaluations, 31);  // 200..500
  EXPECT_DOUBLE_EQ(c->runs[0].rank_fraction_ci_upper, 0.25);
}

TEST(CalibrateTest, RunsWithoutEvaluationsPastTheWarmUpAreSkippedOrRefused) {
  Script s;
  CalibrationRun short_run = Scripted("short", s, 150);
  absl::StatusOr<Calibration> none = Calibrate({short_run}, {});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("warm-up"), std::string::npos);

  absl::StatusOr<Calibration> some = Calibrate({short_run, Scripted("long", s)}, {});
  ASSERT_TRUE(some.ok()) << some.status();
  EXPECT_EQ(some->skipped, std::vector<std::string>{"short"});
  ASSERT_EQ(some->runs.size(), 1u);
  EXPECT_EQ(some->runs[0].name, "long");
}

TEST(CalibrateTest, OptionsOutOfRangeAreInvalidArguments) {
  std::vector<CalibrationRun> runs = {Scripted("a", Script{})};
  EXPECT_EQ(Calibrate(runs, {.run_quantile = 0.0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Calibrate(runs, {.coverage = 1.5}).status().code(), absl::StatusCode::kInvalidArgument);
  runs[0].config.window_evals = 0;
  absl::StatusOr<Calibration> bad = Calibrate(runs, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("run a"), std::string::npos);
}

}  // namespace
}  // namespace spotter
