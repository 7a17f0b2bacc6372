// Retention (--finished_run_ttl): a finished run is deleted, with its stored
// history, once it finished longer ago than the TTL; active runs and runs
// finished more recently stay; the deletion is counted and survives a
// restart (the rows are gone from the store).
#include <memory>
#include <string>

#include "core/util/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "server/storage/store.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers

class RetentionTest : public ServerFixture {
 protected:
  ServerOptions Options() {
    ServerOptions o = TestOptions();
    o.clock = &clock_;
    o.store = store_;
    o.finished_run_ttl = absl::Hours(24);
    o.idle_sweep_interval = absl::ZeroDuration();  // the test sweeps
    return o;
  }
  grpc::Status Finish(const std::string& name) {
    grpc::ClientContext ctx;
    v1::FinishRunRequest req;
    req.set_name(name);
    req.set_reason("done");
    v1::FinishRunResponse resp;
    return stub_->FinishRun(&ctx, req, &resp);
  }
  grpc::Status GetStatus(const std::string& name) {
    grpc::ClientContext ctx;
    v1::GetRunRequest req;
    req.set_name(name);
    v1::GetRunResponse resp;
    return stub_->GetRun(&ctx, req, &resp);
  }

  FakeClock clock_;
  std::shared_ptr<MemoryStore> store_ = std::make_shared<MemoryStore>();
};

TEST_F(RetentionTest, FinishedRunsAreDeletedAfterTheTtlAndOnlyThem) {
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  for (const char* name : {"old", "recent", "active"}) {
    ASSERT_TRUE(Open(name, SmallConfig(1)).ok()) << name;
  }
  ASSERT_TRUE(Finish("old").ok());
  clock_.Advance(absl::Hours(20));
  ASSERT_TRUE(Finish("recent").ok());
  EXPECT_EQ(server_->ExpireFinishedRuns(), 0) << "nothing finished 24 h ago yet";

  clock_.Advance(absl::Hours(5));  // "old" finished 25 h ago, "recent" 5 h ago
  EXPECT_EQ(server_->ExpireFinishedRuns(), 1);
  EXPECT_EQ(GetStatus("old").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GetStatus("recent").ok());
  EXPECT_TRUE(GetStatus("active").ok());
  EXPECT_EQ(Counter(*server_, "spotter_runs_expired_total"), 1.0);

  // The rows went with it: a restarted server does not bring it back.
  server_->FlushState();
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  EXPECT_EQ(GetStatus("old").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GetStatus("recent").ok());

  clock_.Advance(absl::Hours(100));  // an active run never expires
  EXPECT_EQ(server_->ExpireFinishedRuns(), 1);
  EXPECT_TRUE(GetStatus("active").ok());
}

TEST_F(RetentionTest, ZeroKeepsFinishedRuns) {
  ServerOptions o = Options();
  o.finished_run_ttl = absl::ZeroDuration();
  ASSERT_NO_FATAL_FAILURE(StartServer(o));
  ASSERT_TRUE(Open("kept", SmallConfig(1)).ok());
  ASSERT_TRUE(Finish("kept").ok());
  clock_.Advance(absl::Hours(24 * 365));
  EXPECT_EQ(server_->ExpireFinishedRuns(), 0);
  EXPECT_TRUE(GetStatus("kept").ok());
}

}  // namespace
}  // namespace spotter
