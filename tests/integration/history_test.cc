// A run's history beyond its in-memory window (server/runs/point_history.h):
// GetTrajectory, its pages and its downsampled form, WatchRun's history and
// a restarted server read the same points whatever --points_in_memory is;
// ListRuns pages; bad paging input is refused with a reason.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "client/cpp/paging.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "server/runs/point_history.h"
#include "server/storage/store.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;

constexpr char kRun[] = "long";

std::vector<std::string> Serialized(
    const google::protobuf::RepeatedPtrField<v1::TrajectoryPoint>& ps) {
  std::vector<std::string> out;
  for (const v1::TrajectoryPoint& p : ps) out.push_back(p.SerializeAsString());
  return out;
}

class HistoryTest : public ServerFixture {
 protected:
  void SetUp() override {
    store_ = std::make_shared<MemoryStore>();
    ASSERT_NO_FATAL_FAILURE(StartServer(Options(kDefaultPointWindow)));
    v1::RunConfig c = SmallConfig(/*world_size=*/1);
    c.set_eval_every(1);
    ASSERT_TRUE(Open(kRun, c).ok());
  }
  ServerOptions Options(size_t window) const {
    ServerOptions o = TestOptions();
    o.store = store_;
    o.point_window = window;
    return o;
  }
  // Steps [from, to), one upload each, every evaluation drained and
  // committed: one point per step.
  void Feed(uint64_t from, uint64_t to) {
    RawStream s(stub_.get(), kRun, 0);
    ASSERT_TRUE(s.AwaitWelcome());
    uint64_t seq = s.welcome().last_seq();
    for (uint64_t step = from; step < to; ++step) {
      ASSERT_TRUE(s.Send(Batch(++seq, step, Rows(3, step), 1.0 / (step + 1))));
      ASSERT_TRUE(s.AwaitAck(seq));
      server_->DrainEvaluations();
      server_->FlushState();
    }
  }
  grpc::Status Page(const v1::GetTrajectoryRequest& req, v1::GetTrajectoryResponse* resp) {
    grpc::ClientContext ctx;
    return stub_->GetTrajectory(&ctx, req, resp);
  }

  std::shared_ptr<MemoryStore> store_;
};

TEST_F(HistoryTest, EveryReadIsTheSameWhateverTheWindow) {
  ASSERT_NO_FATAL_FAILURE(Feed(0, 40));
  const v1::GetTrajectoryResponse all_in_memory = Trajectory(kRun);
  const int before = all_in_memory.points_size();
  ASSERT_GE(before, 35);

  // Restarted with a window of 4: 36 of the points are read back.
  ASSERT_NO_FATAL_FAILURE(StartServer(Options(4)));
  EXPECT_EQ(Serialized(Trajectory(kRun).points()), Serialized(all_in_memory.points()));
  ASSERT_NO_FATAL_FAILURE(Feed(40, 70));
  const v1::GetTrajectoryResponse full = Trajectory(kRun);
  const int n = full.points_size();
  ASSERT_EQ(n, before + 30) << "one point per step";
  EXPECT_EQ(full.run_points(), static_cast<uint64_t>(n));
  EXPECT_FALSE(full.downsampled());
  for (int i = 0; i < before; ++i) {
    EXPECT_EQ(full.points(i).SerializeAsString(), all_in_memory.points(i).SerializeAsString()) << i;
  }
  for (int i = 1; i < n; ++i) EXPECT_GT(full.points(i).step(), full.points(i - 1).step());

  // Pages of 7, concatenated: the same points.
  v1::GetTrajectoryRequest req;
  req.set_name(kRun);
  req.set_page_size(7);
  std::vector<std::string> paged;
  int pages = 0;
  for (;;) {
    v1::GetTrajectoryResponse page;
    ASSERT_TRUE(Page(req, &page).ok());
    ++pages;
    EXPECT_LE(page.points_size(), 7);
    EXPECT_EQ(page.directives_size(), full.directives_size()) << "every page carries them";
    for (const std::string& p : Serialized(page.points())) paged.push_back(p);
    if (page.next_page_token().empty()) break;
    req.set_page_token(page.next_page_token());
  }
  EXPECT_EQ(pages, (n + 6) / 7);
  EXPECT_EQ(paged, Serialized(full.points()));

  // A step range: the points inside it, nothing else.
  const uint64_t since = full.points(11).step(), until = full.points(52).step();
  v1::GetTrajectoryRequest range;
  range.set_name(kRun);
  range.set_since_step(since);
  range.set_until_step(until);
  v1::GetTrajectoryResponse ranged;
  ASSERT_TRUE(GetWholeTrajectory(*stub_, range, &ranged).ok());
  const std::vector<std::string> every = Serialized(full.points());
  EXPECT_EQ(Serialized(ranged.points()),
            std::vector<std::string>(every.begin() + 11, every.begin() + 53));

  // Downsampled: exactly what the documented rule picks from the full list.
  range.set_max_points(10);
  v1::GetTrajectoryResponse down;
  ASSERT_TRUE(Page(range, &down).ok());
  EXPECT_TRUE(down.downsampled());
  EXPECT_TRUE(down.next_page_token().empty());
  std::vector<v1::TrajectoryPoint> expected(full.points().begin() + 11,
                                            full.points().begin() + 53);
  expected = Downsample(std::move(expected), 10);
  ASSERT_EQ(down.points_size(), static_cast<int>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(down.points(i).SerializeAsString(), expected[i].SerializeAsString()) << i;
  }

  // WatchRun's history: the same points, then the transitions and directives.
  grpc::ClientContext wctx;
  v1::WatchRunRequest wreq;
  wreq.set_name(kRun);
  wreq.set_include_history(true);
  auto reader = stub_->WatchRun(&wctx, wreq);
  std::vector<std::string> watched;
  v1::WatchRunResponse ev;
  while (watched.size() < static_cast<size_t>(n) && reader->Read(&ev)) {
    if (ev.has_point()) watched.push_back(ev.point().SerializeAsString());
  }
  wctx.TryCancel();
  EXPECT_EQ(watched, Serialized(full.points()));

  // GetRun's latest is the newest point (with its eigenvalues).
  EXPECT_EQ(Get(kRun).latest().step(), full.points(n - 1).step());
}

TEST_F(HistoryTest, BadPagingInputIsRefusedWithItsReason) {
  ASSERT_NO_FATAL_FAILURE(Feed(0, 12));
  v1::GetTrajectoryRequest req;
  req.set_name(kRun);
  req.set_page_size(5);
  v1::GetTrajectoryResponse first;
  ASSERT_TRUE(Page(req, &first).ok());
  ASSERT_FALSE(first.next_page_token().empty());

  struct Case {
    std::string reason;
    v1::GetTrajectoryRequest req;
  };
  std::vector<Case> cases;
  v1::GetTrajectoryRequest r = req;
  r.set_page_size(-1);
  cases.push_back({"bad_page_size", r});
  r = req;
  r.set_max_points(3);
  cases.push_back({"bad_max_points", r});
  r = req;
  r.set_since_step(9);
  r.set_until_step(8);
  cases.push_back({"bad_step_range", r});
  r = req;
  r.set_page_token("not a token");
  cases.push_back({"bad_page_token", r});
  r = req;
  r.set_page_token(first.next_page_token());
  r.set_until_step(100);  // other filters than the token's
  cases.push_back({"bad_page_token", r});
  for (const Case& c : cases) {
    v1::GetTrajectoryResponse resp;
    const double before = Rejects(c.reason);
    const grpc::Status s = Page(c.req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.reason;
    EXPECT_THAT(s.error_message(), HasSubstr("expected")) << c.reason << ": " << s.error_message();
    EXPECT_EQ(Rejects(c.reason), before + 1) << c.reason;
  }
  // The token still works with the filters it was made for.
  req.set_page_token(first.next_page_token());
  v1::GetTrajectoryResponse second;
  ASSERT_TRUE(Page(req, &second).ok());
  EXPECT_GT(second.points(0).step(), first.points(4).step());
}

TEST_F(HistoryTest, ListRunsPagesNewestFirstWithoutRepeats) {
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(Open("r" + std::to_string(i), SmallConfig(1)).ok());
  v1::ListRunsRequest req;
  req.set_page_size(3);
  std::vector<std::string> names;
  int pages = 0;
  for (;;) {
    grpc::ClientContext ctx;
    v1::ListRunsResponse page;
    ASSERT_TRUE(stub_->ListRuns(&ctx, req, &page).ok());
    ++pages;
    for (const v1::RunSummary& s : page.runs()) names.push_back(s.name());
    if (page.next_page_token().empty()) break;
    if (pages == 1) ASSERT_TRUE(Open("late", SmallConfig(1)).ok());  // newer: not in later pages
    req.set_page_token(page.next_page_token());
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(names, (std::vector<std::string>{"r5", "r4", "r3", "r2", "r1", "r0", kRun}));

  req.set_state(v1::RUN_STATE_FINISHED);  // a token made for another filter
  grpc::ClientContext ctx;
  v1::ListRunsResponse resp;
  EXPECT_EQ(stub_->ListRuns(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::ListRunsResponse all;
  ASSERT_TRUE(ListAllRuns(*stub_, v1::ListRunsRequest(), &all).ok());
  EXPECT_EQ(all.runs_size(), 8);
}

}  // namespace
}  // namespace spotter
