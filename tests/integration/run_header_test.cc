// The run in the metadata (docs/SCALING.md): every run-scoped call may carry
// x-spotter-run, which a proxy routes on; spotterd refuses a call whose
// header names another run than its request (so a proxy cannot be misled),
// and with --require_run_header a run-scoped call without it. The clients
// send it: the C++ session works against a server that requires it (the
// Python client and spotterctl are checked the same way in
// tests/python/test_session_spotterd.py and tests/e2e/ctl_secure.sh).
#include <memory>
#include <string>

#include "client/cpp/channel.h"
#include "client/cpp/run_session.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;

class RunHeaderTest : public ServerFixture {
 protected:
  void Start(bool require) {
    ServerOptions o = TestOptions();
    o.require_run_header = require;
    ASSERT_NO_FATAL_FAILURE(StartServer(o));
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, "a");
    v1::OpenRunRequest req;
    req.set_name("a");
    *req.mutable_config() = SmallConfig(1);
    v1::OpenRunResponse resp;
    ASSERT_TRUE(stub_->OpenRun(&ctx, req, &resp).ok());
  }
  // GetRun of `run` with `header` ("" = no header).
  grpc::Status GetRun(const std::string& run, const std::string& header,
                      v1::GetRunResponse* resp = nullptr) {
    grpc::ClientContext ctx;
    if (!header.empty()) AddRunHeader(&ctx, header);
    v1::GetRunRequest req;
    req.set_name(run);
    v1::GetRunResponse local;
    return stub_->GetRun(&ctx, req, resp != nullptr ? resp : &local);
  }
  double Rejects(const std::string& reason) {
    const auto m = Scrape();
    const auto it = m.find("spotter_rejects_total{reason=\"" + reason + "\"}");
    return it == m.end() ? 0.0 : it->second;
  }
};

TEST_F(RunHeaderTest, AHeaderNamingAnotherRunIsRefusedAndCounted) {
  ASSERT_NO_FATAL_FAILURE(Start(/*require=*/false));
  EXPECT_TRUE(GetRun("a", "a").ok());
  EXPECT_TRUE(GetRun("a", "").ok()) << "without --require_run_header the header is optional";
  const grpc::Status s = GetRun("a", "b");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("x-spotter-run metadata names run b"));
  EXPECT_THAT(s.error_message(), HasSubstr("the request names run a"));
  // A stream's Hello and a watch are checked the same way.
  {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, "b");
    auto stream = stub_->Connect(&ctx);
    ASSERT_TRUE(stream->Write(RawStream::Hello("a", 0)));
    stream->WritesDone();
    v1::ConnectResponse r;
    while (stream->Read(&r)) EXPECT_FALSE(r.has_welcome());
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, "b");
    v1::WatchRunRequest req;
    req.set_name("a");
    auto reader = stub_->WatchRun(&ctx, req);
    v1::WatchRunResponse ev;
    while (reader->Read(&ev)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Rejects("run_header_mismatch"), 3);
}

TEST_F(RunHeaderTest, RequiredHeaderRefusesRunCallsWithoutItButNotListRuns) {
  ASSERT_NO_FATAL_FAILURE(Start(/*require=*/true));
  const grpc::Status s = GetRun("a", "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("has no x-spotter-run metadata"));
  EXPECT_EQ(Rejects("run_header_missing"), 1);
  EXPECT_TRUE(GetRun("a", "a").ok());
  grpc::ClientContext ctx;
  v1::ListRunsRequest req;
  v1::ListRunsResponse resp;
  EXPECT_TRUE(stub_->ListRuns(&ctx, req, &resp).ok()) << "ListRuns names no run";
}

TEST_F(RunHeaderTest, TheCppSessionSendsTheHeader) {
  ASSERT_NO_FATAL_FAILURE(Start(/*require=*/true));
  SessionOptions o = session_options_;
  o.channel = channel_;
  o.run = "a";
  o.config = SmallConfig(1);
  o.require_server = true;
  absl::StatusOr<std::unique_ptr<RunSession>> session = RunSession::Start(o);
  ASSERT_THAT(session, testing::IsOk());
  for (uint64_t step = 0; step < 5; ++step) {
    ASSERT_TRUE((*session)->UploadSketch(step, Rows(4, step)));
  }
  ASSERT_TRUE((*session)->Flush(absl::Seconds(30)));
  (*session)->Close();
  EXPECT_EQ(Rejects("run_header_missing"), 0);
  v1::GetRunResponse info;
  ASSERT_TRUE(GetRun("a", "a", &info).ok());
  EXPECT_EQ(info.run().ranks(0).uploads(), 5u);
}

}  // namespace
}  // namespace spotter
