// PointHistory, PointReader and min/max downsampling against exact
// references: the in-memory part stays bounded however many points a run
// makes, reads through the store return exactly the points written, and the
// downsampled series is the one the documented rule selects.
#include "server/runs/point_history.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/records.h"
#include "server/storage/store.h"
#include "spotter/v1/spotter.pb.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using testing::IsOk;
using testing::StatusIs;

// A point whose effective rank follows a deterministic, jagged pattern.
v1::TrajectoryPoint PointAt(uint64_t index) {
  v1::TrajectoryPoint p;
  p.set_step(10 * (index + 1));
  p.set_loss(1.0 / static_cast<double>(index + 1));
  p.mutable_covariance()->mutable_effective_rank()->set_value(
      static_cast<double>((index * 7919) % 101));
  return p;
}

std::vector<uint64_t> Steps(const std::vector<v1::TrajectoryPoint>& points) {
  std::vector<uint64_t> out;
  for (const auto& p : points) out.push_back(p.step());
  return out;
}

// The rule written out plainly: the first and last point always; the others
// fall in bucket i*B/n of B = (max_points-2)/2, each keeping its first-seen
// lowest and highest rank.
std::vector<uint64_t> ReferenceDownsample(const std::vector<v1::TrajectoryPoint>& points,
                                          size_t max_points) {
  const uint64_t n = points.size();
  if (n <= max_points) return Steps(points);
  const uint64_t buckets = std::max<uint64_t>(1, (max_points - 2) / 2);
  std::set<uint64_t> keep = {0, n - 1};
  for (uint64_t b = 0; b < buckets; ++b) {
    int64_t lo = -1, hi = -1;
    for (uint64_t i = 1; i + 1 < n; ++i) {
      if (i * buckets / n != b) continue;
      const double r = points[i].covariance().effective_rank().value();
      if (lo < 0 || r < points[lo].covariance().effective_rank().value()) lo = i;
      if (hi < 0 || r > points[hi].covariance().effective_rank().value()) hi = i;
    }
    if (lo >= 0) keep.insert(lo);
    if (hi >= 0) keep.insert(hi);
  }
  std::vector<uint64_t> out;
  for (uint64_t i : keep) out.push_back(points[i].step());
  return out;
}

TEST(DownsampleTest, KeepsFirstLastAndEachBucketsExtremes) {
  std::vector<v1::TrajectoryPoint> points;
  for (uint64_t i = 0; i < 1000; ++i) points.push_back(PointAt(i));
  for (size_t max_points : {4u, 5u, 10u, 64u, 999u, 1000u, 5000u}) {
    const std::vector<v1::TrajectoryPoint> got = Downsample(points, max_points);
    EXPECT_LE(got.size(), max_points) << max_points;
    EXPECT_EQ(Steps(got), ReferenceDownsample(points, max_points)) << max_points;
  }
}

TEST(DownsampleTest, KeepsASpikeWhereverItFalls) {
  for (uint64_t spike : {1u, 17u, 498u, 998u}) {
    std::vector<v1::TrajectoryPoint> points;
    for (uint64_t i = 0; i < 1000; ++i) {
      v1::TrajectoryPoint p = PointAt(i);
      p.mutable_covariance()->mutable_effective_rank()->set_value(i == spike ? 1e6 : 5.0);
      points.push_back(p);
    }
    const std::vector<uint64_t> got = Steps(Downsample(points, 8));
    EXPECT_TRUE(std::count(got.begin(), got.end(), points[spike].step()) == 1) << spike;
  }
}

// A run's history over a MemoryStore: every point written as the server
// writes it, the window trimmed after each "commit".
class StoredHistoryTest : public ::testing::Test {
 protected:
  void Make(uint64_t n, size_t window) {
    history_ = std::make_unique<PointHistory>("run", &store_, window);
    for (uint64_t i = 0; i < n; ++i) {
      history_->Append(PointAt(i));
      ASSERT_THAT(store_.Apply({PutPointRecord("run", i, PointAt(i))}), IsOk());
      history_->Trim(i + 1);
    }
  }
  MemoryStore store_;
  std::unique_ptr<PointHistory> history_;
};

TEST_F(StoredHistoryTest, MemoryStaysAtTheWindowAndReadsReturnEveryPoint) {
  Make(5000, 16);
  EXPECT_EQ(history_->size(), 5000u);
  EXPECT_LE(history_->in_memory(), 16u);
  PointReader reader(history_->Snapshot(5000));
  ASSERT_EQ(reader.size(), 5000u);
  std::vector<v1::TrajectoryPoint> all;
  ASSERT_THAT(reader.Read(0, 5000, [&](v1::TrajectoryPoint&& p) { all.push_back(p); }), IsOk());
  ASSERT_EQ(all.size(), 5000u);
  for (uint64_t i = 0; i < 5000; ++i) {
    ASSERT_EQ(all[i].SerializeAsString(), PointAt(i).SerializeAsString()) << i;
  }
  for (uint64_t step : {0u, 5u, 10u, 11u, 20000u, 49990u, 50000u, 50001u}) {
    absl::StatusOr<uint64_t> lb = reader.LowerBound(step);
    ASSERT_THAT(lb.status(), IsOk());
    const uint64_t want = step <= 10 ? 0 : std::min<uint64_t>(5000, (step + 9) / 10 - 1);
    EXPECT_EQ(*lb, want) << step;
  }
  absl::StatusOr<std::vector<v1::TrajectoryPoint>> down = ReadDownsampled(reader, 100, 4100, 50);
  ASSERT_THAT(down.status(), IsOk());
  EXPECT_EQ(Steps(*down), ReferenceDownsample({all.begin() + 100, all.begin() + 4100}, 50));
}

TEST_F(StoredHistoryTest, OnlyPublishedPointsAreRead) {
  Make(60, 8);
  for (uint64_t i = 60; i < 100; ++i) history_->Append(PointAt(i));  // made, not yet durable
  PointReader reader(history_->Snapshot(60));
  EXPECT_EQ(reader.size(), 60u);
  EXPECT_EQ(reader.published(), 60u);
  std::vector<uint64_t> steps;
  ASSERT_THAT(reader.Read(0, 100, [&](v1::TrajectoryPoint&& p) { steps.push_back(p.step()); }),
              IsOk());
  ASSERT_EQ(steps.size(), 60u);
  EXPECT_EQ(steps.back(), PointAt(59).step());
}

TEST_F(StoredHistoryTest, APointMissingFromTheStoreIsAnError) {
  Make(100, 8);
  ASSERT_THAT(store_.Apply({StoreOp::DeleteRun("run")}), IsOk());
  PointReader reader(history_->Snapshot(100));
  EXPECT_THAT(reader.Read(0, 50, [](v1::TrajectoryPoint&&) {}),
              StatusIs(absl::StatusCode::kAborted));
}

TEST(ArchiveTest, WithoutAStoreOldPointsAreCompactedNotKept) {
  PointHistory history("run", nullptr, 16);
  const uint64_t n = 50000;
  for (uint64_t i = 0; i < n; ++i) {
    history.Append(PointAt(i));
    history.Trim(i + 1);
    ASSERT_LE(history.in_memory(), 16 + kArchiveCapacity) << i;
  }
  PointReader reader(history.Snapshot(n));
  EXPECT_TRUE(reader.lossy());
  std::vector<uint64_t> steps;
  ASSERT_THAT(
      reader.Read(0, reader.size(), [&](v1::TrajectoryPoint&& p) { steps.push_back(p.step()); }),
      IsOk());
  EXPECT_EQ(steps.front(), PointAt(0).step());  // the first point survives every compaction
  EXPECT_EQ(steps.back(), PointAt(n - 1).step());
  EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
  EXPECT_EQ(std::adjacent_find(steps.begin(), steps.end()), steps.end());
}

}  // namespace
}  // namespace spotter
