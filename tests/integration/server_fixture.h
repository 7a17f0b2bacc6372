// The fixture of the integration suites that run one server in the test
// process: ServerFixture starts it with the options a test gives (port 0,
// loopback) and holds a stub to it in-process, over TCP, or over TCP with
// credentials; EachTransportServerFixture starts it with TestOptions() and
// reaches it over each transport in turn (the suite's parameter).
//
//   class MySuite : public ServerFixture {};
//   TEST_F(MySuite, Works) {
//     ServerOptions o = TestOptions();
//     StartServer(o);                    // server_, channel_, stub_
//     ASSERT_TRUE(Open("run", SmallConfig()).ok());
//   }
#ifndef SPOTTER_TESTS_INTEGRATION_SERVER_FIXTURE_H_
#define SPOTTER_TESTS_INTEGRATION_SERVER_FIXTURE_H_

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cpp/paging.h"
#include "client/cpp/run_session.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "spotter/v1/spotter.grpc.pb.h"
#include "tests/integration/reliability_harness.h"
#include "tests/testing/status_matchers.h"

namespace spotter::reliability {

// How the test reaches the server.
enum class Via { kInProcess, kTcp };
inline constexpr Via kEachVia[] = {Via::kTcp, Via::kInProcess};

// Test names for a suite parameterized by Via: "Tcp", "InProcess".
inline std::string ViaName(const ::testing::TestParamInfo<Via>& info) {
  return info.param == Via::kInProcess ? "InProcess" : "Tcp";
}

class ServerFixture : public ::testing::Test {
 protected:
  // Stops the server before the suite's own members (a clock, a store the
  // options point to) are destroyed. Suites that override it call it last.
  void TearDown() override { StopServer(); }

  // Starts a server with `options` (stopping the running one first, if any)
  // and points channel_ and stub_ at it `via` the in-process channel or
  // loopback TCP. A server that does not start is a fatal failure: from
  // SetUp the test is not run; in a test body, wrap the call in
  // ASSERT_NO_FATAL_FAILURE to stop there.
  void StartServer(const ServerOptions& options, Via via = Via::kInProcess) {
    StopServer();
    BuildServer(options);
    if (server_ == nullptr) return;
    Connect(via == Via::kInProcess
                ? server_->InProcessChannel()
                : grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                      grpc::InsecureChannelCredentials()));
  }
  // The same over loopback TCP with `credentials` (e.g. TLS) and `args`.
  void StartServer(const ServerOptions& options,
                   std::shared_ptr<grpc::ChannelCredentials> credentials,
                   const grpc::ChannelArguments& args) {
    StopServer();
    BuildServer(options);
    if (server_ == nullptr) return;
    Connect(grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                      std::move(credentials), args));
  }
  // Drops the stub and the channel, then stops the server (gracefully: it
  // flushes its state). A no-op when none runs.
  void StopServer() {
    stub_.reset();
    channel_.reset();
    server_.reset();
  }

  // OpenRun of `name` with `config`, anonymously or with bearer `token`.
  grpc::Status Open(const std::string& name, const v1::RunConfig& config,
                    v1::OpenRunResponse* response = nullptr) {
    return Open(name, config, "", response);
  }
  grpc::Status Open(const std::string& name, const v1::RunConfig& config, const std::string& token,
                    v1::OpenRunResponse* response = nullptr) {
    grpc::ClientContext ctx;
    AddToken(&ctx, token);
    v1::OpenRunRequest req;
    req.set_name(name);
    *req.mutable_config() = config;
    v1::OpenRunResponse local;
    return stub_->OpenRun(&ctx, req, response != nullptr ? response : &local);
  }

  // GetRun of `name`, which must succeed.
  v1::RunInfo Get(const std::string& name) {
    grpc::ClientContext ctx;
    v1::GetRunRequest req;
    req.set_name(name);
    v1::GetRunResponse resp;
    const grpc::Status s = stub_->GetRun(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << "GetRun " << name << ": " << s.error_message();
    return resp.run();
  }

  // GetTrajectory of `name`, every page, which must succeed.
  v1::GetTrajectoryResponse Trajectory(const std::string& name) {
    v1::GetTrajectoryRequest req;
    req.set_name(name);
    v1::GetTrajectoryResponse resp;
    const grpc::Status s = GetWholeTrajectory(*stub_, req, &resp);
    EXPECT_TRUE(s.ok()) << "GetTrajectory " << name << ": " << s.error_message();
    return resp;
  }

  // A client session of rank `rank` on run `run` over channel_, built from
  // session_options_; nullptr (and a failure) when it does not start.
  std::unique_ptr<RunSession> Session(const std::string& run, const v1::RunConfig& config,
                                      uint32_t rank) {
    SessionOptions o = session_options_;
    o.channel = channel_;
    o.run = run;
    o.config = config;
    o.rank = rank;
    absl::StatusOr<std::unique_ptr<RunSession>> s = RunSession::Start(o);
    EXPECT_THAT(s, testing::IsOk());
    return s.ok() ? *std::move(s) : nullptr;
  }

  // The server's metrics, {"name{labels}" -> value}, and one reject counter.
  std::map<std::string, double> Scrape() const { return reliability::Scrape(*server_); }
  double Rejects(const std::string& reason) const {
    return Counter(*server_, RejectSeries(reason));
  }

  // What Session() starts from (suites change e.g. queue_size).
  SessionOptions session_options_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SpotterService::Stub> stub_;

 private:
  void BuildServer(const ServerOptions& options) {
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(options);
    ASSERT_THAT(s, testing::IsOk());
    server_ = *std::move(s);
  }
  void Connect(std::shared_ptr<grpc::Channel> channel) {
    channel_ = std::move(channel);
    stub_ = v1::SpotterService::NewStub(channel_);
  }
};

// A server with TestOptions(), reached via the suite's parameter:
//   INSTANTIATE_TEST_SUITE_P(Transport, MySuite, ::testing::ValuesIn(kEachVia), ViaName);
class EachTransportServerFixture : public ServerFixture, public ::testing::WithParamInterface<Via> {
 protected:
  void SetUp() override { StartServer(TestOptions(), GetParam()); }
};

}  // namespace spotter::reliability

#endif  // SPOTTER_TESTS_INTEGRATION_SERVER_FIXTURE_H_
