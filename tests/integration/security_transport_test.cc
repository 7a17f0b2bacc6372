// Transport security and the network policy: TLS and mutual TLS from files
// (throwaway certificates made with openssl), handshakes that must fail, and
// the rule that without TLS and tokens the server listens on loopback only
// unless told --insecure.
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "server/rpc/server.h"
#include "tests/integration/reliability_harness.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suite's helpers
using ::testing::HasSubstr;
using testing::IsOk;

constexpr char kTokens[] = "ops admin admin-token-0123456789abcdef\n";

class TransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new TestPki(MakeTestPki("tls_pki")); }
  static void TearDownTestSuite() {
    RemoveTestPki(*pki_);
    delete pki_;
  }

  std::unique_ptr<Server> Start(bool mutual) {
    ServerOptions o = TestOptions();
    o.tls_cert_file = pki_->server_cert;
    o.tls_key_file = pki_->server_key;
    if (mutual) o.tls_client_ca_file = pki_->ca;
    auto s = Server::BuildAndStart(o);
    EXPECT_THAT(s, IsOk());
    return s.ok() ? *std::move(s) : nullptr;
  }

  // ListRuns over a channel with `creds`.
  static grpc::Status List(const Server& s, std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto stub = v1::SpotterService::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", s.port()), creds, args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListRunsRequest req;
    v1::ListRunsResponse resp;
    return stub->ListRuns(&ctx, req, &resp);
  }

  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca,
                                                       const std::string& cert = "",
                                                       const std::string& key = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadText(ca);
    if (!cert.empty()) {
      o.pem_cert_chain = ReadText(cert);
      o.pem_private_key = ReadText(key);
    }
    return grpc::SslCredentials(o);
  }

  static TestPki* pki_;
};

TestPki* TransportTest::pki_ = nullptr;

TEST_F(TransportTest, TlsServesTrustingClientsOnly) {
  auto server = Start(/*mutual=*/false);
  ASSERT_TRUE(server);
  EXPECT_TRUE(List(*server, Tls(pki_->ca)).ok());
  // Plaintext, or a client that does not trust the server's CA: no call.
  EXPECT_EQ(List(*server, grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(List(*server, Tls(pki_->dir + "/other-ca.pem")).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TransportTest, MutualTlsNeedsAClientCertificateFromTheClientCa) {
  auto server = Start(/*mutual=*/true);
  ASSERT_TRUE(server);
  EXPECT_TRUE(List(*server, Tls(pki_->ca, pki_->client_cert, pki_->client_key)).ok());
  EXPECT_EQ(List(*server, Tls(pki_->ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(
      List(*server, Tls(pki_->ca, pki_->other_client_cert, pki_->other_client_key)).error_code(),
      grpc::StatusCode::UNAVAILABLE);
}

// A renewed certificate is served without a restart: the server's files are
// replaced by a certificate from another CA, and within a few reload
// intervals new connections see it (clients trusting only the new CA get
// in, those trusting only the old one no longer do).
TEST_F(TransportTest, ARenewedCertificateIsServedWithoutARestart) {
  const TestPki next = MakeTestPki("tls_pki_next");
  const std::string dir = pki_->dir + "/live";
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  auto put = [&](const TestPki& from) {
    // Each file replaced atomically (a rename), key first.
    for (const auto& [src, dst] : {std::pair{from.server_key, dir + "/server.key"},
                                   std::pair{from.server_cert, dir + "/server.pem"}}) {
      const std::string cmd = "cp '" + src + "' '" + dst + ".tmp' && mv '" + dst + ".tmp' '" +
                              dst + "'";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
  };
  put(*pki_);
  ServerOptions o = TestOptions();
  o.tls_cert_file = dir + "/server.pem";
  o.tls_key_file = dir + "/server.key";
  o.tls_reload_interval = absl::Seconds(1);
  auto s = Server::BuildAndStart(o);
  ASSERT_THAT(s, IsOk());
  EXPECT_TRUE(List(**s, Tls(pki_->ca)).ok());
  EXPECT_EQ(List(**s, Tls(next.ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
  put(next);
  bool renewed = false;
  for (int i = 0; i < 100 && !renewed; ++i) {
    renewed = List(**s, Tls(next.ca)).ok();
    if (!renewed) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(renewed) << "the new certificate was not served within 10 s";
  EXPECT_EQ(List(**s, Tls(pki_->ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
  RemoveTestPki(next);
}

TEST_F(TransportTest, BadTlsSettingsAreClearErrors) {
  ServerOptions o = TestOptions();
  o.tls_cert_file = pki_->server_cert;
  EXPECT_THAT(Server::BuildAndStart(o).status().message(), HasSubstr("--tls_key"));
  o.tls_key_file = pki_->dir + "/missing.key";
  auto s = Server::BuildAndStart(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("missing.key"));
  ServerOptions m = TestOptions();
  m.tls_client_ca_file = pki_->ca;
  EXPECT_THAT(Server::BuildAndStart(m).status().message(), HasSubstr("needs TLS"));
  ServerOptions t = TestOptions();
  t.tokens_file = pki_->dir + "/no-such-tokens";
  EXPECT_EQ(Server::BuildAndStart(t).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TransportTest, WithoutTlsAndTokensOnlyLoopbackUnlessInsecure) {
  ServerOptions o = TestOptions();
  o.listen_address = "0.0.0.0:0";
  auto refused = Server::BuildAndStart(o);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("--insecure"));
  // Tokens alone or TLS alone are not enough.
  auto tokens = TokenTable::Parse(kTokens);
  ASSERT_THAT(tokens, IsOk());
  o.tokens = *tokens;
  EXPECT_EQ(Server::BuildAndStart(o).status().code(), absl::StatusCode::kFailedPrecondition);
  o.tokens = nullptr;
  o.tls_cert_file = pki_->server_cert;
  o.tls_key_file = pki_->server_key;
  EXPECT_EQ(Server::BuildAndStart(o).status().code(), absl::StatusCode::kFailedPrecondition);
  // Both: served on every address, and it says how.
  o.tokens = *tokens;
  auto both = Server::BuildAndStart(o);
  ASSERT_THAT(both, IsOk());
  EXPECT_EQ((*both)->DescribeSecurity(), "TLS, 1 bearer tokens, network");
  // Or explicitly insecure.
  ServerOptions insecure = TestOptions();
  insecure.listen_address = "0.0.0.0:0";
  insecure.insecure = true;
  auto open = Server::BuildAndStart(insecure);
  ASSERT_THAT(open, IsOk());
  EXPECT_EQ((*open)->DescribeSecurity(), "no TLS, no tokens, network (--insecure)");
  auto local = Server::BuildAndStart(TestOptions());
  ASSERT_THAT(local, IsOk());
  EXPECT_EQ((*local)->DescribeSecurity(), "no TLS, no tokens, loopback only");
}

TEST_F(TransportTest, HealthAnswersProbesWithoutAToken) {
  ServerOptions o = TestOptions();
  auto tokens = TokenTable::Parse(kTokens);
  ASSERT_THAT(tokens, IsOk());
  o.tokens = *tokens;
  auto s = Server::BuildAndStart(o);
  ASSERT_THAT(s, IsOk());
  auto health = grpc::health::v1::Health::NewStub((*s)->InProcessChannel());
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(LoopbackTest, Addresses) {
  for (const char* a : {"127.0.0.1:50051", "127.1.2.3:0", "localhost:9", "[::1]:50051",
                        "unix:/tmp/spotter.sock", "ipv4:127.0.0.1:1"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50051", "[::]:50051", "10.0.0.1:1", "example.com:443",
                        "127.0.0.1.evil.com:1", "1127.0.0.1:1", ":50051", "[::1"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

}  // namespace
}  // namespace spotter
