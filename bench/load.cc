// spotter_load: N concurrent Connect streams over M runs on loopback for a
// bounded time, with an operator forcing phases so that directives flow.
// Reports throughput, directive latency (issue to receipt, p50/p99/max) and
// spotterd's resident memory over time, and fails (exit 1) when an upload is
// neither acknowledged nor rejected, a stream ends with an error, or
// spotterd's memory exceeds a bound or keeps growing.
//
//   spotter_load --spotterd build/server/spotterd --streams 64 --runs 8 --seconds 30
//   spotter_load --server 127.0.0.1:50051 --server_pid 1234 ...   (a running one)
//
// Each stream is one rank of its run (world_size = ceil(N / M)): it keeps at
// most --window uploads unacknowledged, as RunSession's outbox does, and
// sends batches of --rows x --dim floats as fast as the window allows (or one
// per --step_ms). Uses the raw stub, not RunSession, to see every ack and
// directive as it arrives.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "spotter/v1/spotter.grpc.pb.h"

ABSL_FLAG(std::string, server, "", "spotterd address; empty: start --spotterd");
ABSL_FLAG(std::string, spotterd, "", "spotterd binary to start (on a free port)");
ABSL_FLAG(std::string, spotterd_args, "",
          "extra spotterd flags, space-separated (e.g. --state_file=/tmp/x.db)");
ABSL_FLAG(int, server_pid, 0, "pid of a running spotterd whose memory to sample");
ABSL_FLAG(int, streams, 64, "concurrent Connect streams");
ABSL_FLAG(int, runs, 8, "runs the streams are spread over");
ABSL_FLAG(double, seconds, 30, "how long to upload");
ABSL_FLAG(int, rows, 8, "rows per batch");
ABSL_FLAG(int, dim, 128, "sketch dimension k");
ABSL_FLAG(int, sketch_rows, 32, "Frequent Directions size l");
ABSL_FLAG(int, window, 32, "uploads a stream keeps unacknowledged");
ABSL_FLAG(double, step_ms, 0, "pace: one batch per stream every this long (0: window-bound)");
ABSL_FLAG(double, override_ms, 500, "the operator forces a phase on some run this often");
ABSL_FLAG(double, rss_limit_mb, 0, "fail when spotterd's RSS exceeds this (0: no check)");
ABSL_FLAG(double, rss_growth_mb, 0,
          "fail when spotterd's RSS grows by more than this over the second half (0: no check)");
ABSL_FLAG(std::string, report, "", "write the figures and the RSS series as JSON here");

namespace spotter {
namespace {

// Resident set size of `pid` in MiB, or -1.
double RssMb(int pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream in(line.substr(6));
      double kb = 0;
      in >> kb;
      return kb / 1024.0;
    }
  }
  return -1;
}

struct Totals {
  std::atomic<uint64_t> sent{0}, acked{0}, rejected{0}, directives{0}, bytes{0};
  std::atomic<int> errors{0}, unacked_streams{0};
  absl::Mutex mu;
  std::vector<double> latency_ms ABSL_GUARDED_BY(mu);
  std::map<std::string, int> error_messages ABSL_GUARDED_BY(mu);
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

std::string RunName(int r) { return absl::StrFormat("load-%d", r); }

v1::RunConfig Config(int world) {
  v1::RunConfig c;
  c.set_sketch_dim(absl::GetFlag(FLAGS_dim));
  c.set_sketch_rows(absl::GetFlag(FLAGS_sketch_rows));
  c.set_eval_every(10);
  c.set_world_size(world);
  c.set_total_steps(1ull << 30);
  c.set_peak_lr(0.1);
  c.mutable_projection()->set_seed(1);
  return c;
}

// One stream: a writer (this thread) and a reader.
void Stream(v1::SpotterService::Stub* stub, int run, int rank, absl::Time end, Totals* t) {
  const int rows = absl::GetFlag(FLAGS_rows), dim = absl::GetFlag(FLAGS_dim);
  const int window = absl::GetFlag(FLAGS_window);
  const absl::Duration pace = absl::Microseconds(1000 * absl::GetFlag(FLAGS_step_ms));
  grpc::ClientContext ctx;
  auto stream = stub->Connect(&ctx);
  absl::Mutex mu;
  uint64_t acked = 0;
  bool welcomed = false, ended = false;
  absl::Time welcome_time = absl::InfiniteFuture();
  std::thread reader([&] {
    v1::ConnectResponse r;
    while (stream->Read(&r)) {
      const absl::Time now = absl::Now();
      absl::MutexLock l(&mu);
      if (r.has_directive()) {
        // Directives issued while the stream was open (not the history a
        // Welcome is followed by).
        const absl::Time issued = absl::FromUnixSeconds(r.directive().issued_at().seconds()) +
                                  absl::Nanoseconds(r.directive().issued_at().nanos());
        t->directives++;
        if (issued >= welcome_time) {
          absl::MutexLock tl(&t->mu);
          t->latency_ms.push_back(absl::ToDoubleMilliseconds(now - issued));
        }
      }
      if (r.has_welcome()) {
        welcomed = true;
        welcome_time = now;
      }
      if (r.has_ack()) acked = std::max(acked, r.ack().seq());
      if (r.has_reject()) t->rejected++;
    }
    absl::MutexLock l(&mu);
    ended = true;
  });
  v1::ConnectRequest hello;
  hello.mutable_hello()->set_run(RunName(run));
  hello.mutable_hello()->set_rank(rank);
  hello.mutable_hello()->mutable_projection()->set_seed(1);
  hello.mutable_hello()->set_client("spotter_load");
  bool ok = stream->Write(hello);
  {
    absl::MutexLock l(&mu);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return welcomed || ended; };
    mu.AwaitWithTimeout(absl::Condition(&cond), absl::Seconds(30));
  }
  std::mt19937 rng(run * 7919 + rank);
  std::normal_distribution<float> n;
  v1::ConnectRequest req;
  v1::SketchBatch* b = req.mutable_sketch();
  b->set_rows(rows);
  b->set_cols(dim);
  b->set_lr(0.1);
  std::string data(static_cast<size_t>(rows) * dim * 4, '\0');
  uint64_t seq = 0;
  absl::Time next = absl::Now();
  while (ok && absl::Now() < end) {
    {
      absl::MutexLock l(&mu);
      auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return ended || seq - acked < static_cast<uint64_t>(window);
      };
      if (!mu.AwaitWithTimeout(absl::Condition(&room), end - absl::Now())) break;
      if (ended) break;
    }
    for (size_t i = 0; i < data.size(); i += 4) {
      const float v = n(rng) / (1.0f + static_cast<float>((i / 4) % dim));
      std::memcpy(&data[i], &v, 4);
    }
    b->set_seq(++seq);
    b->set_step(seq);
    b->set_data(data);
    b->set_loss(1.0 / (1.0 + seq));
    ok = stream->Write(req);
    if (ok) {
      t->sent++;
      t->bytes += data.size();
    }
    if (pace > absl::ZeroDuration()) {
      next += pace;
      absl::SleepFor(next - absl::Now());
    }
  }
  // Drain: every upload sent must be acknowledged (or rejected, which the
  // server also acknowledges).
  {
    absl::MutexLock l(&mu);
    auto drained = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return ended || acked >= seq; };
    mu.AwaitWithTimeout(absl::Condition(&drained), absl::Seconds(60));
    if (acked < seq) t->unacked_streams++;
    t->acked += acked;
  }
  stream->WritesDone();
  reader.join();
  const grpc::Status s = stream->Finish();
  if (!s.ok()) {
    t->errors++;
    absl::MutexLock l(&t->mu);
    t->error_messages[absl::StrCat(s.error_code(), ": ", s.error_message())]++;
  }
}

int Main() {
  const int nstreams = absl::GetFlag(FLAGS_streams), nruns = absl::GetFlag(FLAGS_runs);
  const int world = (nstreams + nruns - 1) / nruns;
  std::string target = absl::GetFlag(FLAGS_server);
  int pid = absl::GetFlag(FLAGS_server_pid);
  pid_t child = 0;
  std::string port_file;
  if (target.empty()) {
    const std::string bin = absl::GetFlag(FLAGS_spotterd);
    if (bin.empty()) {
      std::fprintf(stderr, "spotter_load: give --server or --spotterd\n");
      return 2;
    }
    port_file = absl::StrFormat("/tmp/spotter_load_%d.ports", getpid());
    std::remove(port_file.c_str());
    std::vector<std::string> args = {bin, "--listen=127.0.0.1:0", "--metrics_listen=",
                                     "--port_file=" + port_file};
    std::istringstream extra(absl::GetFlag(FLAGS_spotterd_args));
    for (std::string a; extra >> a;) args.push_back(a);
    child = fork();
    if (child == 0) {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    pid = child;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      std::ifstream f(port_file);
      std::string line;
      if (std::getline(f, line) && line.rfind("grpc=", 0) == 0) {
        target = "127.0.0.1:" + line.substr(5);
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (target.empty()) {
      std::fprintf(stderr, "spotter_load: spotterd did not start\n");
      kill(child, SIGKILL);
      return 1;
    }
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
  // A few channels (HTTP/2 connections), as separate trainer processes would have.
  std::vector<std::unique_ptr<v1::SpotterService::Stub>> stubs;
  for (int i = 0; i < std::min(nstreams, 16); ++i) {
    args.SetInt("spotter_load.channel", i);  // distinct args: distinct connections
    stubs.push_back(v1::SpotterService::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
  }
  for (int r = 0; r < nruns; ++r) {
    grpc::ClientContext ctx;
    v1::OpenRunRequest req;
    req.set_name(RunName(r));
    *req.mutable_config() = Config(world);
    v1::OpenRunResponse resp;
    const grpc::Status s = stubs[0]->OpenRun(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "spotter_load: OpenRun: %s\n", s.error_message().c_str());
      if (child) kill(child, SIGKILL);
      return 1;
    }
  }

  Totals totals;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<std::pair<double, double>> rss;  // (seconds, MiB)
  std::atomic<bool> done{false};
  std::thread sampler([&] {
    while (!done) {
      if (pid > 0) rss.push_back({absl::ToDoubleSeconds(absl::Now() - start), RssMb(pid)});
      absl::SleepFor(absl::Seconds(1));
    }
  });
  std::thread op([&] {
    std::mt19937 rng(5);
    int i = 0;
    while (absl::Now() + absl::Milliseconds(absl::GetFlag(FLAGS_override_ms)) < end) {
      absl::SleepFor(absl::Milliseconds(absl::GetFlag(FLAGS_override_ms)));
      grpc::ClientContext ctx;
      v1::OverridePhaseRequest req;
      req.set_name(RunName(static_cast<int>(rng() % nruns)));
      req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
      req.set_phase(++i % 2 ? v1::PHASE_REFINEMENT : v1::PHASE_ACQUISITION);
      v1::OverridePhaseResponse resp;
      if (!stubs[0]->OverridePhase(&ctx, req, &resp).ok()) totals.errors++;
    }
  });
  std::vector<std::thread> threads;
  for (int i = 0; i < nstreams; ++i) {
    threads.emplace_back(Stream, stubs[i % stubs.size()].get(), i % nruns, i / nruns, end,
                         &totals);
  }
  for (std::thread& th : threads) th.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  op.join();
  done = true;
  sampler.join();
  if (child) {
    kill(child, SIGTERM);
    int st = 0;
    waitpid(child, &st, 0);
    std::remove(port_file.c_str());
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "spotter_load: spotterd exited abnormally (status %d)\n", st);
      totals.errors++;
    }
  }

  std::vector<double> lat;
  std::map<std::string, int> errors;
  {
    absl::MutexLock l(&totals.mu);
    lat = totals.latency_ms;
    errors = totals.error_messages;
  }
  double rss_max = 0, rss_half = 0, rss_end = 0;
  for (const auto& [t, mb] : rss) {
    rss_max = std::max(rss_max, mb);
    if (t <= elapsed / 2) rss_half = mb;
    rss_end = mb;
  }
  const double sent = static_cast<double>(totals.sent.load());
  std::printf(
      "spotter_load: %d streams over %d runs for %.1f s: %.0f uploads sent, %llu acknowledged, "
      "%llu rejected, %d stream errors, %d streams with unacknowledged uploads\n",
      nstreams, nruns, elapsed, sent, static_cast<unsigned long long>(totals.acked.load()),
      static_cast<unsigned long long>(totals.rejected.load()), totals.errors.load(),
      totals.unacked_streams.load());
  std::printf("spotter_load: throughput %.0f uploads/s, %.0f rows/s, %.1f MB/s of sketch data\n",
              sent / elapsed, sent * absl::GetFlag(FLAGS_rows) / elapsed,
              static_cast<double>(totals.bytes.load()) / elapsed / 1e6);
  std::printf(
      "spotter_load: directive latency (issue to receipt, %zu deliveries): p50 %.2f ms, p99 "
      "%.2f ms, max %.2f ms\n",
      lat.size(), Percentile(lat, 0.5), Percentile(lat, 0.99), Percentile(lat, 1.0));
  if (!rss.empty()) {
    std::printf("spotter_load: spotterd RSS %.0f MiB at start, %.0f at half time, %.0f at the end, "
                "max %.0f\n",
                rss.front().second, rss_half, rss_end, rss_max);
  }
  for (const auto& [msg, n] : errors) std::printf("spotter_load: error x%d: %s\n", n, msg.c_str());
  if (const std::string path = absl::GetFlag(FLAGS_report); !path.empty()) {
    std::ofstream f(path);
    f << absl::StrFormat(
        "{\"streams\": %d, \"runs\": %d, \"seconds\": %.2f, \"sent\": %.0f, \"acked\": %d, "
        "\"rejected\": %d, \"errors\": %d, \"uploads_per_s\": %.1f, \"latency_ms\": {\"p50\": "
        "%.3f, \"p99\": %.3f, \"max\": %.3f, \"n\": %d}, \"rss_mb\": [",
        nstreams, nruns, elapsed, sent, totals.acked.load(), totals.rejected.load(),
        totals.errors.load(), sent / elapsed, Percentile(lat, 0.5), Percentile(lat, 0.99),
        Percentile(lat, 1.0), lat.size());
    for (size_t i = 0; i < rss.size(); ++i) {
      f << (i ? ", " : "") << absl::StrFormat("[%.1f, %.1f]", rss[i].first, rss[i].second);
    }
    f << "]}\n";
  }
  bool pass = totals.errors == 0 && totals.unacked_streams == 0 &&
              totals.acked + 0 == totals.sent && totals.rejected == 0 && totals.sent > 0;
  if (const double limit = absl::GetFlag(FLAGS_rss_limit_mb); limit > 0 && rss_max > limit) {
    std::printf("spotter_load: RSS %.0f MiB exceeds the limit %.0f\n", rss_max, limit);
    pass = false;
  }
  if (const double g = absl::GetFlag(FLAGS_rss_growth_mb); g > 0 && rss_end - rss_half > g) {
    std::printf("spotter_load: RSS grew by %.0f MiB over the second half (limit %.0f)\n",
                rss_end - rss_half, g);
    pass = false;
  }
  std::printf("spotter_load: %s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

}  // namespace
}  // namespace spotter

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("drives N Connect streams over M runs against spotterd");
  absl::ParseCommandLine(argc, argv);
  return spotter::Main();
}
