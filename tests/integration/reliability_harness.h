// Helpers shared by the integration suites (server_fixture.h builds on
// them): server options on port 0, run configs and deterministic batches, raw
// streams that send what the client library never would (with an optional
// bearer token), metrics, polling, temporary files and a test PKI.
#ifndef SPOTTER_TESTS_INTEGRATION_RELIABILITY_HARNESS_H_
#define SPOTTER_TESTS_INTEGRATION_RELIABILITY_HARNESS_H_

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/types.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "spotter/v1/spotter.grpc.pb.h"
#include "tests/testing/http.h"

namespace spotter::reliability {

inline constexpr uint32_t kDim = 32;
inline constexpr uint32_t kRows = 8;

// Polls `cond` until it holds or `timeout` passes (no fixed sleeps).
template <typename F>
bool Eventually(F cond, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return cond();
}

inline v1::RunConfig SmallConfig(uint32_t world_size = 2, uint64_t total_steps = 1000) {
  v1::RunConfig c;
  c.set_sketch_dim(kDim);
  c.set_sketch_rows(kRows);
  c.set_eval_every(5);
  c.set_world_size(world_size);
  c.set_total_steps(total_steps);
  c.set_peak_lr(0.1);
  c.mutable_projection()->set_seed(42);
  c.mutable_phase()->set_delivery_budget_seconds(0.05);
  return c;
}

inline std::string Floats(const RowMatrixXf& m) {
  return std::string(reinterpret_cast<const char*>(m.data()), m.size() * sizeof(float));
}

inline v1::ConnectRequest Batch(uint64_t seq, uint64_t step, const RowMatrixXf& rows,
                                double loss = std::nan("")) {
  v1::ConnectRequest r;
  v1::SketchBatch* b = r.mutable_sketch();
  b->set_seq(seq);
  b->set_step(step);
  b->set_rows(static_cast<uint32_t>(rows.rows()));
  b->set_cols(static_cast<uint32_t>(rows.cols()));
  b->set_data(Floats(rows));
  b->set_loss(loss);
  b->set_lr(0.1);
  return r;
}

// Deterministic rows for (seed, step): the same inputs for every server.
inline RowMatrixXf Rows(uint64_t seed, uint64_t step, int n = 6, int dim = kDim) {
  RowMatrixXf m(n, dim);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + step * 0xBF58476D1CE4E5B9ull + 1;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < dim; ++j) {
      x ^= x >> 30;
      x *= 0xBF58476D1CE4E5B9ull;
      x ^= x >> 27;
      x *= 0x94D049BB133111EBull;
      x ^= x >> 31;
      // A decaying spectrum: column j scaled by 1 / (1 + j).
      const double u = static_cast<double>(x >> 11) / 9007199254740992.0 - 0.5;
      m(i, j) = static_cast<float>(u / (1.0 + j));
    }
  }
  return m;
}

inline void AddToken(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

// A raw Connect stream.
class RawStream {
 public:
  RawStream(v1::SpotterService::Stub* stub, const std::string& token = "") {
    AddToken(&ctx_, token);
    stream_ = stub->Connect(&ctx_);
  }
  RawStream(v1::SpotterService::Stub* stub, const std::string& run, uint32_t rank,
            const std::string& token = "", uint64_t seed = 42)
      : RawStream(stub, token) {
    Send(Hello(run, rank, seed));
  }
  static v1::ConnectRequest Hello(const std::string& run, uint32_t rank, uint64_t seed = 42) {
    v1::ConnectRequest hello;
    hello.mutable_hello()->set_run(run);
    hello.mutable_hello()->set_rank(rank);
    hello.mutable_hello()->mutable_projection()->set_seed(seed);
    return hello;
  }
  bool Send(const v1::ConnectRequest& r) { return stream_->Write(r); }
  bool Read(v1::ConnectResponse* r) { return stream_->Read(r); }
  // Reads until an Ack covering `seq`; collects rejects and directives.
  bool AwaitAck(uint64_t seq, std::vector<v1::Reject>* rejects = nullptr,
                std::vector<v1::Directive>* directives = nullptr) {
    v1::ConnectResponse r;
    while (stream_->Read(&r)) {
      if (r.has_welcome()) welcome_ = r.welcome();
      if (r.has_reject() && rejects) rejects->push_back(r.reject());
      if (r.has_directive() && directives) directives->push_back(r.directive());
      if (r.has_ack() && r.ack().seq() >= seq) return true;
    }
    return false;
  }
  // Reads until the Welcome.
  bool AwaitWelcome() {
    v1::ConnectResponse r;
    while (stream_->Read(&r)) {
      if (r.has_welcome()) {
        welcome_ = r.welcome();
        return true;
      }
    }
    return false;
  }
  const v1::Welcome& welcome() const { return welcome_; }
  grpc::Status Close() {
    stream_->WritesDone();
    v1::ConnectResponse r;
    while (stream_->Read(&r)) {
    }
    return stream_->Finish();
  }
  // Reads to the end without half-closing (the server ends the stream).
  grpc::Status Drain() {
    v1::ConnectResponse r;
    while (stream_->Read(&r)) {
    }
    return stream_->Finish();
  }
  grpc::ClientContext* context() { return &ctx_; }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>> stream_;
  v1::Welcome welcome_;
};

// Server options for tests: loopback, port 0, no metrics endpoint.
inline ServerOptions TestOptions() {
  ServerOptions o;
  o.listen_address = "127.0.0.1:0";
  o.metrics_address = "";
  return o;
}

inline std::map<std::string, double> Scrape(const Server& s) {
  return testing::ParseExposition(s.ScrapeMetrics());
}

// The value of a counter, 0 when it has no series yet.
inline double Counter(const Server& s, const std::string& series) {
  const auto m = Scrape(s);
  auto it = m.find(series);
  return it == m.end() ? 0.0 : it->second;
}

inline std::string RejectSeries(const std::string& reason) {
  return absl::StrCat("spotter_rejects_total{reason=\"", reason, "\"}");
}

// `t` without its wall-clock fields (point and transition times, directive
// issue times), to compare the histories of two runs or two servers.
inline v1::GetTrajectoryResponse WithoutTimes(v1::GetTrajectoryResponse t) {
  for (v1::TrajectoryPoint& p : *t.mutable_points()) p.clear_time();
  for (v1::PhaseTransition& x : *t.mutable_transitions()) x.clear_time();
  for (v1::Directive& d : *t.mutable_directives()) d.clear_issued_at();
  return t;
}

// A fresh path under the test's temporary directory (removed first, with
// its SQLite companions).
inline std::string TempPath(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string leaf =
      absl::StrCat("spotter_", info->test_suite_name(), "_", info->name(), "_", name);
  for (char& c : leaf) {
    if (c == '/' || c == '\\') c = '_';
  }
  const std::string out = absl::StrCat(::testing::TempDir(), "/", leaf);
  std::remove(out.c_str());
  std::remove((out + "-wal").c_str());
  std::remove((out + "-shm").c_str());
  return out;
}

// Throwaway certificates made with the openssl command line: a CA, a server
// certificate for localhost / 127.0.0.1 and a client certificate it signed,
// and a second CA with its own client certificate (not trusted).
struct TestPki {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key;
  std::string other_client_cert, other_client_key;
};

inline std::string ReadText(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// Made in a directory of this process's own under the test's temporary
// directory (ctest -j runs a suite's tests as concurrent processes).
// Fails the test when openssl is missing.
inline TestPki MakeTestPki(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/spotter_", getpid(), "_", name);
  std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str());
  const std::string script_path = dir + "/make_pki.sh";
  if (FILE* f = std::fopen(script_path.c_str(), "w")) {
    std::fputs(
        "set -e\n"
        "cd \"$(dirname \"$0\")\"\n"
        "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\"; }\n"
        "sign() { openssl x509 -req -in \"$1.csr\" -CA \"$2.pem\" -CAkey \"$2.key\" "
        "-CAcreateserial -days 2 -out \"$1.pem\" $3; }\n"
        "key ca.key\n"
        "openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=spotter-test-ca\n"
        "key other-ca.key\n"
        "openssl req -x509 -new -key other-ca.key -out other-ca.pem -days 2 "
        "-subj /CN=spotter-other-ca\n"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext\n"
        "key server.key\n"
        "openssl req -new -key server.key -out server.csr -subj /CN=localhost\n"
        "sign server ca '-extfile server.ext'\n"
        "key client.key\n"
        "openssl req -new -key client.key -out client.csr -subj /CN=trainer-1\n"
        "sign client ca\n"
        "key other.key\n"
        "openssl req -new -key other.key -out other.csr -subj /CN=intruder\n"
        "sign other other-ca\n",
        f);
    std::fclose(f);
  }
  const int rc = std::system(("bash '" + script_path + "' >/dev/null 2>&1").c_str());
  EXPECT_EQ(rc, 0) << "openssl failed; is it installed?";
  TestPki p;
  p.dir = dir;
  p.ca = dir + "/ca.pem";
  p.server_cert = dir + "/server.pem";
  p.server_key = dir + "/server.key";
  p.client_cert = dir + "/client.pem";
  p.client_key = dir + "/client.key";
  p.other_client_cert = dir + "/other.pem";
  p.other_client_key = dir + "/other.key";
  return p;
}

inline void RemoveTestPki(const TestPki& p) { std::system(("rm -rf '" + p.dir + "'").c_str()); }

}  // namespace spotter::reliability

#endif  // SPOTTER_TESTS_INTEGRATION_RELIABILITY_HARNESS_H_
