// The whole role x RPC matrix, on a plain loopback server, over TLS and over
// mutual TLS: every RPC checks the caller's bearer token and role on every
// path; allowed calls succeed, the others get UNAUTHENTICATED (no or an
// unknown token) or PERMISSION_DENIED (a role or run it may not use).
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "server/rpc/server.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;
using testing::IsOk;

constexpr char kAdmin[] = "admin-token-0123456789abcdef";
constexpr char kViewer[] = "viewer-token-0123456789abcdef";
constexpr char kAlice[] = "alice-token-0123456789abcdef";  // trainer, grant shared-*
constexpr char kBob[] = "bob-token-0123456789abcdef";      // trainer, no grants
constexpr char kBogus[] = "bogus-token-0123456789abcdef";

constexpr char kTokens[] = R"(# name   role     token                          grants
ops      admin    admin-token-0123456789abcdef
grafana  viewer   viewer-token-0123456789abcdef
alice    trainer  alice-token-0123456789abcdef   shared-*
bob      trainer  bob-token-0123456789abcdef
)";

enum class Transport { kPlain, kTls, kMutualTls };

// Who calls: a name for messages and the token it sends ("" = none).
struct Caller {
  const char* name;
  const char* token;
};
const Caller kCallers[] = {{"no token", ""},    {"unknown token", kBogus}, {"admin", kAdmin},
                           {"viewer", kViewer}, {"alice", kAlice},         {"bob", kBob}};

class RoleMatrixTest : public ServerFixture, public ::testing::WithParamInterface<Transport> {
 protected:
  static void SetUpTestSuite() { pki_ = new TestPki(MakeTestPki("roles_pki")); }
  static void TearDownTestSuite() {
    RemoveTestPki(*pki_);
    delete pki_;
  }

  void SetUp() override {
    ServerOptions o = TestOptions();
    // A state file, so that the admin's Backup succeeds like its other calls.
    o.state_file = TempPath("roles.db");
    o.sqlite.sync = SqliteOptions::Sync::kNormal;
    auto tokens = TokenTable::Parse(kTokens);
    ASSERT_THAT(tokens, IsOk());
    o.tokens = *tokens;
    if (GetParam() != Transport::kPlain) {
      o.tls_cert_file = pki_->server_cert;
      o.tls_key_file = pki_->server_key;
    }
    if (GetParam() == Transport::kMutualTls) o.tls_client_ca_file = pki_->ca;
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    grpc::ChannelArguments args;
    if (GetParam() != Transport::kPlain) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = ReadText(pki_->ca);
      if (GetParam() == Transport::kMutualTls) {
        ssl.pem_cert_chain = ReadText(pki_->client_cert);
        ssl.pem_private_key = ReadText(pki_->client_key);
      }
      creds = grpc::SslCredentials(ssl);
      args.SetSslTargetNameOverride("localhost");
    }
    ASSERT_NO_FATAL_FAILURE(StartServer(o, creds, args));
    // The runs the matrix acts on: one of the admin's (alice has a grant for
    // it), one of bob's, and one per destructive call.
    for (const char* run : {"shared-1", "victim-finish", "victim-delete"}) {
      ASSERT_TRUE(Call(Rpc::kOpenRun, kAdmin, run).ok()) << run;
    }
    ASSERT_TRUE(Call(Rpc::kOpenRun, kBob, "bob-run").ok());
  }

  // Calls `rpc` on `run` with `token`; the call's status.
  grpc::Status Call(Rpc rpc, const std::string& token, const std::string& run) {
    grpc::ClientContext ctx;
    AddToken(&ctx, token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    switch (rpc) {
      case Rpc::kOpenRun: {
        v1::OpenRunRequest req;
        req.set_name(run);
        *req.mutable_config() = SmallConfig(1);
        v1::OpenRunResponse resp;
        return stub_->OpenRun(&ctx, req, &resp);
      }
      case Rpc::kConnect: {
        RawStream s(stub_.get(), run, 0, token);
        if (s.AwaitWelcome()) {
          s.context()->TryCancel();
          s.Drain();
          return grpc::Status::OK;
        }
        return s.Drain();
      }
      case Rpc::kGetRun: {
        v1::GetRunRequest req;
        req.set_name(run);
        v1::GetRunResponse resp;
        return stub_->GetRun(&ctx, req, &resp);
      }
      case Rpc::kListRuns: {
        v1::ListRunsRequest req;
        v1::ListRunsResponse resp;
        return stub_->ListRuns(&ctx, req, &resp);
      }
      case Rpc::kGetTrajectory: {
        v1::GetTrajectoryRequest req;
        req.set_name(run);
        v1::GetTrajectoryResponse resp;
        return stub_->GetTrajectory(&ctx, req, &resp);
      }
      case Rpc::kWatchRun: {
        v1::WatchRunRequest req;
        req.set_name(run);
        req.set_include_history(true);
        auto reader = stub_->WatchRun(&ctx, req);
        v1::WatchRunResponse ev;
        if (reader->Read(&ev)) {
          ctx.TryCancel();
          while (reader->Read(&ev)) {
          }
          reader->Finish();
          return grpc::Status::OK;
        }
        return reader->Finish();
      }
      case Rpc::kOverridePhase: {
        v1::OverridePhaseRequest req;
        req.set_name(run);
        req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
        req.set_phase(v1::PHASE_REFINEMENT);
        v1::OverridePhaseResponse resp;
        return stub_->OverridePhase(&ctx, req, &resp);
      }
      case Rpc::kFinishRun: {
        v1::FinishRunRequest req;
        req.set_name(run);
        v1::FinishRunResponse resp;
        return stub_->FinishRun(&ctx, req, &resp);
      }
      case Rpc::kDeleteRun: {
        v1::DeleteRunRequest req;
        req.set_name(run);
        v1::DeleteRunResponse resp;
        return stub_->DeleteRun(&ctx, req, &resp);
      }
      case Rpc::kBackup: {  // not about a run; the bytes are dropped
        auto reader = stub_->Backup(&ctx, v1::BackupRequest());
        v1::BackupResponse chunk;
        while (reader->Read(&chunk)) {
        }
        return reader->Finish();
      }
      // Requests that pass the role check and then fail validation (no
      // target, no rows): the matrix checks who gets past authorization
      // without moving runs (move_test.cc moves them).
      case Rpc::kExportRun: {
        v1::ExportRunRequest req;
        req.set_name(run);
        auto reader = stub_->ExportRun(&ctx, req);
        v1::ExportRunResponse part;
        while (reader->Read(&part)) {
        }
        return reader->Finish();
      }
      case Rpc::kImportRun: {
        v1::ImportRunRequest req;
        req.set_name(run);
        req.set_last(true);
        v1::ImportRunResponse resp;
        auto writer = stub_->ImportRun(&ctx, &resp);
        writer->Write(req);
        writer->WritesDone();
        return writer->Finish();
      }
    }
    return grpc::Status(grpc::StatusCode::INTERNAL, "unknown rpc");
  }

  static TestPki* pki_;
};

TestPki* RoleMatrixTest::pki_ = nullptr;

// The expected outcome of `caller` calling `rpc` on `run`.
grpc::StatusCode Expected(const Caller& caller, Rpc rpc, const std::string& run) {
  const std::string token = caller.token;
  if (token.empty() || token == kBogus) return grpc::StatusCode::UNAUTHENTICATED;
  if (token == kAdmin) {
    // Admin only, and the matrix sends them invalid (see Call).
    const bool move = rpc == Rpc::kExportRun || rpc == Rpc::kImportRun;
    return move ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::OK;
  }
  const bool read = rpc == Rpc::kGetRun || rpc == Rpc::kListRuns || rpc == Rpc::kGetTrajectory ||
                    rpc == Rpc::kWatchRun;
  const bool train = rpc == Rpc::kOpenRun || rpc == Rpc::kConnect;
  if (token == kViewer) return read ? grpc::StatusCode::OK : grpc::StatusCode::PERMISSION_DENIED;
  // Trainers: only OpenRun and Connect, on runs they own or hold a grant for.
  if (!train) return grpc::StatusCode::PERMISSION_DENIED;
  if (token == kAlice) {
    return run.rfind("shared-", 0) == 0 ? grpc::StatusCode::OK
                                        : grpc::StatusCode::PERMISSION_DENIED;
  }
  return run == "bob-run" ? grpc::StatusCode::OK : grpc::StatusCode::PERMISSION_DENIED;
}

TEST_P(RoleMatrixTest, EveryRoleTimesEveryRpc) {
  // Destructive calls last, each on its own run, so that an allowed call
  // does not change what the others see.
  struct Cell {
    Rpc rpc;
    std::string run;
  };
  std::vector<Cell> cells;
  for (Rpc rpc : kAllRpcs) {
    if (rpc == Rpc::kFinishRun || rpc == Rpc::kDeleteRun) continue;
    for (const char* run : {"shared-1", "bob-run"}) cells.push_back({rpc, run});
  }
  cells.push_back({Rpc::kFinishRun, "victim-finish"});
  cells.push_back({Rpc::kDeleteRun, "victim-delete"});
  int checked = 0, allowed = 0;
  for (const Cell& cell : cells) {
    for (const Caller& caller : kCallers) {
      const grpc::Status got = Call(cell.rpc, caller.token, cell.run);
      const grpc::StatusCode want = Expected(caller, cell.rpc, cell.run);
      EXPECT_EQ(got.error_code(), want) << caller.name << " calling " << RpcName(cell.rpc) << " on "
                                        << cell.run << ": " << got.error_message();
      if (want != grpc::StatusCode::OK) {
        EXPECT_FALSE(got.error_message().empty());
      }
      ++checked;
      allowed += want == grpc::StatusCode::OK;
    }
  }
  // 10 RPCs on 2 runs, FinishRun and DeleteRun on one each; 6 callers.
  ASSERT_EQ(cells.size(), 22u);
  EXPECT_EQ(checked, 22 * 6);
  EXPECT_GT(allowed, 20);
  // Every refusal was counted.
  EXPECT_EQ(Counter(*server_, RejectSeries("unauthenticated")), 2 * 22);
  EXPECT_GE(Counter(*server_, RejectSeries("permission_denied")), 22);
}

TEST_P(RoleMatrixTest, ATrainerMayCreateOnlyWithinItsGrantsAndNobodyJoinsOthersRuns) {
  EXPECT_TRUE(Call(Rpc::kOpenRun, kAlice, "shared-new").ok());
  const grpc::Status outside = Call(Rpc::kOpenRun, kAlice, "elsewhere");
  EXPECT_EQ(outside.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(outside.error_message(), HasSubstr("matches none of its grants (shared-*)"));
  EXPECT_TRUE(Call(Rpc::kOpenRun, kBob, "bob-second").ok());
  const grpc::Status foreign = Call(Rpc::kConnect, kBob, "shared-new");
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(foreign.error_message(), HasSubstr("created by alice"));
}

INSTANTIATE_TEST_SUITE_P(Transport, RoleMatrixTest,
                         ::testing::Values(Transport::kPlain, Transport::kTls,
                                           Transport::kMutualTls),
                         [](const auto& info) {
                           switch (info.param) {
                             case Transport::kPlain:
                               return "Plain";
                             case Transport::kTls:
                               return "Tls";
                             default:
                               return "MutualTls";
                           }
                         });

TEST(TokenTableTest, ParsesAndRefusesBadFiles) {
  auto t = TokenTable::Parse(kTokens);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ((*t)->size(), 4u);
  ASSERT_NE((*t)->Find(kAlice), nullptr);
  EXPECT_EQ((*t)->Find(kAlice)->name, "alice");
  EXPECT_EQ((*t)->Find(kAlice)->grants, std::vector<std::string>{"shared-*"});
  EXPECT_EQ((*t)->Find("alice-token-0123456789abcde"), nullptr);  // a prefix
  EXPECT_EQ((*t)->Find(""), nullptr);
  struct Bad {
    const char* text;
    const char* says;
  } bad[] = {
      {"a admin short", "at least 16"},
      {"a root 0123456789abcdef0123", "unknown role 'root'"},
      {"a admin", "too few fields"},
      {"a admin 0123456789abcdef0123\nb viewer 0123456789abcdef0123", "appears twice"},
      {"a admin 0123456789abcdef0123\na viewer 0123456789abcdef9999", "appears twice"},
      {"a admin 0123456789abcdef012\"3", "outside"},
      {"# only a comment\n", "names no principal"},
  };
  for (const Bad& b : bad) {
    auto r = TokenTable::Parse(b.text);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << b.text;
    EXPECT_THAT(r.status().message(), HasSubstr(b.says)) << b.text;
  }
  auto line = TokenTable::Parse("ok admin 0123456789abcdef0123\n\nbad nobody x");
  EXPECT_THAT(line.status().message(), HasSubstr("line 3"));
}

TEST(AuthorizerTest, HeaderForms) {
  auto t = TokenTable::Parse(kTokens);
  ASSERT_THAT(t, IsOk());
  Authorizer a(*t);
  EXPECT_THAT(a.Authenticate(absl::StrCat("Bearer ", kViewer), Rpc::kGetRun), IsOk());
  EXPECT_THAT(a.Authenticate(absl::StrCat("bearer ", kViewer), Rpc::kGetRun), IsOk());
  EXPECT_EQ(a.Authenticate(kViewer, Rpc::kGetRun).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(a.Authenticate(absl::StrCat("Basic ", kViewer), Rpc::kGetRun).status().code(),
            absl::StatusCode::kUnauthenticated);
  Authorizer off(nullptr);
  EXPECT_THAT(off.Authenticate("", Rpc::kDeleteRun), IsOk());
}

}  // namespace
}  // namespace spotter
