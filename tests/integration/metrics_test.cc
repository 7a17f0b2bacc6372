// Per-run metric series: removal on end, idle TTL on a fake clock, the cap on
// exported runs and its counter, and what the exposition looks like.
#include "server/metrics/metrics.h"

#include <cmath>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "tests/testing/http.h"

namespace spotter {
namespace {

using testing::ParseExposition;

class RunMetricsTest : public ::testing::Test {
 protected:
  RunSeriesOptions Options(absl::Duration ttl, size_t max_runs) {
    RunSeriesOptions o;
    o.clock = &clock_;
    o.idle_ttl = ttl;
    o.max_runs = max_runs;
    o.sweep_interval = absl::ZeroDuration();  // the test sweeps
    return o;
  }
  std::map<std::string, double> Scrape() {
    return ParseExposition(prometheus::TextSerializer().Serialize(registry_.Collect()));
  }
  static SpectrumSummary Summary(double rank) {
    SpectrumSummary s;
    s.valid = true;
    s.trace = 2.0;
    s.effective_rank = {rank, rank - 1, rank + 1, false, rank - 2, rank + 2};
    s.participation_ratio = {3.5, 3.0, 4.0, false, 2.5, 4.75};
    return s;
  }

  FakeClock clock_;
  prometheus::Registry registry_;
};

TEST_F(RunMetricsTest, SeriesLiveUntilTheRunEnds) {
  ServerMetrics server(registry_, Options(absl::Minutes(30), 10));
  auto run = std::make_unique<RunMetrics>(server.runs(), "a");
  auto m = Scrape();
  // spotter_build_info carries the one version string (VERSION).
  ASSERT_EQ(m.count("spotter_build_info{version=\"" SPOTTER_VERSION_STRING "\"}"), 1u);
  EXPECT_EQ(m.at("spotter_build_info{version=\"" SPOTTER_VERSION_STRING "\"}"), 1);
  m = Scrape();
  ASSERT_EQ(m.count("spotter_run_effective_rank{run=\"a\"}"), 1u);
  EXPECT_TRUE(std::isnan(m.at("spotter_run_effective_rank{run=\"a\"}")));
  run->SetSummary(Summary(12), 40.0);
  run->SetTraining(500, 0.25, 0.1);
  run->SetPhase(Phase::kRefinement, 3, 560, 510);
  run->SetValMetric(0.9);
  m = Scrape();
  EXPECT_EQ(m.at("spotter_run_effective_rank{run=\"a\"}"), 12);
  EXPECT_EQ(m.at("spotter_run_effective_rank_lower{run=\"a\"}"), 11);
  EXPECT_EQ(m.at("spotter_run_effective_rank_upper{run=\"a\"}"), 13);
  EXPECT_EQ(m.at("spotter_run_participation_ratio{run=\"a\"}"), 3.5);
  EXPECT_EQ(m.at("spotter_run_participation_ratio_lower{run=\"a\"}"), 3.0);
  EXPECT_EQ(m.at("spotter_run_participation_ratio_ci_lower{run=\"a\"}"), 2.5);
  EXPECT_EQ(m.at("spotter_run_participation_ratio_ci_upper{run=\"a\"}"), 4.75);
  EXPECT_EQ(m.at("spotter_run_effective_rank_ci_lower{run=\"a\"}"), 10);
  EXPECT_EQ(m.at("spotter_run_effective_rank_ci_upper{run=\"a\"}"), 14);
  EXPECT_EQ(m.at("spotter_run_noise_scale{run=\"a\"}"), 40);
  EXPECT_EQ(m.at("spotter_run_step{run=\"a\"}"), 500);
  EXPECT_EQ(m.at("spotter_run_learning_rate{run=\"a\"}"), 0.1);
  EXPECT_EQ(m.at("spotter_run_val_metric{run=\"a\"}"), 0.9);
  EXPECT_EQ(m.at("spotter_run_directive_version{run=\"a\"}"), 3);
  EXPECT_EQ(m.at("spotter_run_directive_effective_step{run=\"a\"}"), 560);
  EXPECT_EQ(m.at("spotter_run_directive_decision_step{run=\"a\"}"), 510);
  EXPECT_EQ(m.at("spotter_run_phase{phase=\"refinement\",run=\"a\"}"), 1);
  EXPECT_EQ(m.at("spotter_run_phase{phase=\"acquisition\",run=\"a\"}"), 0);
  EXPECT_EQ(m.at("spotter_metrics_runs_exported"), 1);
  run.reset();
  m = Scrape();
  for (const auto& [series, value] : m)
    EXPECT_EQ(series.find("run=\"a\""), std::string::npos) << series;
  EXPECT_EQ(m.at("spotter_metrics_runs_exported"), 0);
}

TEST_F(RunMetricsTest, IdleRunsExpireAndComeBackWithTheirValues) {
  ServerMetrics server(registry_, Options(absl::Minutes(10), 10));
  RunMetrics idle(server.runs(), "idle");
  RunMetrics busy(server.runs(), "busy");
  idle.SetSummary(Summary(7), 1.0);
  idle.SetPhase(Phase::kPolish, 4, 900, 880);
  clock_.Advance(absl::Minutes(6));
  busy.SetTraining(10, 1.0, 0.1);
  EXPECT_EQ(server.runs().SweepIdle(), 0);
  clock_.Advance(absl::Minutes(4));  // idle: 10 min without an update; busy: 4
  EXPECT_EQ(server.runs().SweepIdle(), 1);
  auto m = Scrape();
  EXPECT_EQ(m.count("spotter_run_effective_rank{run=\"idle\"}"), 0u);
  EXPECT_EQ(m.count("spotter_run_phase{phase=\"polish\",run=\"idle\"}"), 0u);
  EXPECT_EQ(m.count("spotter_run_step{run=\"busy\"}"), 1u);
  EXPECT_EQ(m.at("spotter_metrics_runs_expired_total"), 1);
  EXPECT_EQ(server.runs().exported(), 1u);
  // The next update brings every series back, with the values it had.
  idle.SetTraining(99, 0.5, 0.01);
  m = Scrape();
  EXPECT_EQ(m.at("spotter_run_effective_rank{run=\"idle\"}"), 7);
  EXPECT_EQ(m.at("spotter_run_phase{phase=\"polish\",run=\"idle\"}"), 1);
  EXPECT_EQ(m.at("spotter_run_step{run=\"idle\"}"), 99);
  EXPECT_EQ(server.runs().exported(), 2u);
}

TEST_F(RunMetricsTest, ZeroTtlNeverExpires) {
  ServerMetrics server(registry_, Options(absl::ZeroDuration(), 10));
  RunMetrics run(server.runs(), "a");
  clock_.Advance(absl::Hours(1000));
  EXPECT_EQ(server.runs().SweepIdle(), 0);
  EXPECT_EQ(Scrape().count("spotter_run_step{run=\"a\"}"), 1u);
}

TEST_F(RunMetricsTest, CapDropsAndCountsRunsUntilASlotFrees) {
  ServerMetrics server(registry_, Options(absl::Minutes(10), 2));
  auto a = std::make_unique<RunMetrics>(server.runs(), "a");
  RunMetrics b(server.runs(), "b");
  RunMetrics c(server.runs(), "c");
  c.SetSummary(Summary(5), 1.0);
  c.SetTraining(1, 1.0, 0.1);  // still over the cap: counted once, not per update
  auto m = Scrape();
  EXPECT_EQ(m.count("spotter_run_step{run=\"c\"}"), 0u);
  EXPECT_EQ(m.at("spotter_metrics_runs_dropped_total"), 1);
  EXPECT_EQ(m.at("spotter_metrics_runs_exported"), 2);
  a.reset();  // a slot frees; c is exported at its next update, values intact
  c.SetTraining(2, 1.0, 0.1);
  m = Scrape();
  EXPECT_EQ(m.at("spotter_run_effective_rank{run=\"c\"}"), 5);
  EXPECT_EQ(m.at("spotter_run_step{run=\"c\"}"), 2);
  EXPECT_EQ(m.at("spotter_metrics_runs_dropped_total"), 1);
  // An idle run's slot frees too.
  RunMetrics d(server.runs(), "d");
  EXPECT_EQ(Scrape().at("spotter_metrics_runs_dropped_total"), 2);
  clock_.Advance(absl::Minutes(10));
  c.SetTraining(3, 1.0, 0.1);
  EXPECT_EQ(server.runs().SweepIdle(), 1);  // b
  d.SetTraining(1, 1.0, 0.1);
  m = Scrape();
  EXPECT_EQ(m.count("spotter_run_step{run=\"d\"}"), 1u);
  EXPECT_EQ(m.count("spotter_run_step{run=\"b\"}"), 0u);
}

TEST_F(RunMetricsTest, ZeroCapMeansUnlimited) {
  ServerMetrics server(registry_, Options(absl::Minutes(10), 0));
  std::vector<std::unique_ptr<RunMetrics>> runs;
  for (int i = 0; i < 50; ++i) {
    runs.push_back(std::make_unique<RunMetrics>(server.runs(), absl::StrCat("r", i)));
  }
  EXPECT_EQ(server.runs().exported(), 50u);
  EXPECT_EQ(Scrape().at("spotter_metrics_runs_dropped_total"), 0);
}

TEST_F(RunMetricsTest, TheSweepThreadRemovesIdleRuns) {
  RunSeriesOptions o = Options(absl::Minutes(1), 10);
  o.sweep_interval = absl::Milliseconds(5);
  ServerMetrics server(registry_, o);
  RunMetrics run(server.runs(), "a");
  clock_.Advance(absl::Minutes(2));
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (server.runs().exported() != 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(2));
  EXPECT_EQ(server.runs().exported(), 0u);
  EXPECT_EQ(Scrape().at("spotter_metrics_runs_expired_total"), 1);
}

TEST_F(RunMetricsTest, StoreLatencyIsAHistogramByOperation) {
  ServerMetrics server(registry_, Options(absl::Minutes(1), 10));
  server.ObserveStore("commit", 0.003);
  const auto m = Scrape();
  EXPECT_EQ(m.at("spotter_store_duration_seconds_count{operation=\"commit\"}"), 1);
  EXPECT_EQ(m.at("spotter_store_duration_seconds_bucket{operation=\"commit\",le=\"0.005\"}"), 1);
  EXPECT_EQ(m.at("spotter_store_duration_seconds_bucket{operation=\"commit\",le=\"0.0025\"}"), 0);
}

TEST_F(RunMetricsTest, HeapBytesByState) {
  ServerMetrics server(registry_, Options(absl::Minutes(1), 10));
  server.SetHeap(3.0e6, 5.0e6);
  const auto m = Scrape();
  EXPECT_EQ(m.at("spotter_heap_bytes{state=\"in_use\"}"), 3.0e6);
  EXPECT_EQ(m.at("spotter_heap_bytes{state=\"free\"}"), 5.0e6);
}

}  // namespace
}  // namespace spotter
