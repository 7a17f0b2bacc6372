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
//
// The same tool measures the ceilings spotterd is compared against
// (docs/PERFORMANCE.md, "End to end"):
//   --target=null   drives a null service instead of spotterd: the same proto,
//                   a Connect handler that parses, acknowledges (coalesced,
//                   like spotterd) and does nothing else, in its own process
//                   (this binary with --serve_null): the transport ceiling;
//   --core_only     no network: the same batches through DecodeSketch and
//                   RankAccumulator::Add in-process, one rank per thread: the
//                   core ingest rate.
// With --watch it also measures evaluation latency (the first upload that
// reaches an evaluation step to the trajectory point arriving on a
// WatchRun), and --idle_runs opens runs that hold a sketch and stay idle.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/spectrum/moments.h"
#include "core/util/allocator.h"
#include "grpcpp/grpcpp.h"
#include "server/runs/limits.h"
#include "server/runs/rejection.h"
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
ABSL_FLAG(std::string, target, "spotterd",
          "what to drive: spotterd (the real server, --server or --spotterd) or null (a service "
          "with the same proto whose Connect parses, acknowledges and does nothing else, "
          "started as a child process: the transport ceiling)");
ABSL_FLAG(bool, core_only, false,
          "no network: apply the same batches in-process through DecodeSketch and "
          "RankAccumulator::Add, one rank per thread (--core_threads), for --seconds: the "
          "core ingest rate");
ABSL_FLAG(int, core_threads, 0, "threads for --core_only (0: the machine's cores)");
ABSL_FLAG(int, malloc_trim_threshold_mb, 256,
          "--core_only: the allocator settings spotterd uses (its flag of the same name); 0: the "
          "C library's defaults");
ABSL_FLAG(bool, watch, false,
          "open a WatchRun per run and measure evaluation latency: from the first upload that "
          "reaches an evaluation step to the trajectory point of that evaluation arriving");
ABSL_FLAG(int, eval_every, 10, "the runs' eval_every (steps between evaluations)");
ABSL_FLAG(int, idle_runs, 0,
          "before the load, open this many more runs, each with one upload, which then stay "
          "idle (memory per run, cost of idle runs); their RSS is reported");
ABSL_FLAG(bool, serve_null, false, "internal: serve the null service until SIGTERM");
ABSL_FLAG(std::string, port_file, "", "internal: with --serve_null, where to write grpc=PORT");

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
  // Per delivery: issue to receipt on one stream.
  std::vector<double> latency_ms ABSL_GUARDED_BY(mu);
  // Per directive: issue to receipt on the last stream of its run.
  std::map<std::pair<int, uint64_t>, double> directive_all_ms ABSL_GUARDED_BY(mu);
  // Per evaluation: first upload reaching its step to the point on WatchRun.
  std::vector<double> eval_latency_ms ABSL_GUARDED_BY(mu);
  std::map<std::string, int> error_messages ABSL_GUARDED_BY(mu);
};

// When the first upload of each evaluation step (a multiple of eval_every)
// was sent, per run.
struct StepClock {
  absl::Mutex mu;
  absl::flat_hash_map<uint64_t, absl::Time> first_send ABSL_GUARDED_BY(mu);
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

std::string RunName(int r) { return absl::StrFormat("load-%d", r); }

// Every call about a run carries it as metadata, as the clients do, so a
// gateway that routes runs to replicas (docs/SCALING.md) can be measured.
void AddRunHeader(grpc::ClientContext* ctx, const std::string& run) {
  ctx->AddMetadata("x-spotter-run", run);
}

v1::RunConfig Config(int world) {
  v1::RunConfig c;
  c.set_sketch_dim(absl::GetFlag(FLAGS_dim));
  c.set_sketch_rows(absl::GetFlag(FLAGS_sketch_rows));
  c.set_eval_every(absl::GetFlag(FLAGS_eval_every));
  c.set_world_size(world);
  c.set_total_steps(1ull << 30);
  c.set_peak_lr(0.1);
  c.mutable_projection()->set_seed(1);
  return c;
}

// One stream: a writer (this thread) and a reader.
// Batches of --rows x --dim floats, generated once (a power-law-ish spectrum)
// and cycled, so that generating load costs the client nothing but copies.
std::vector<std::string> BatchPool() {
  const int rows = absl::GetFlag(FLAGS_rows), dim = absl::GetFlag(FLAGS_dim);
  std::mt19937 rng(12345);
  std::normal_distribution<float> n;
  std::vector<std::string> pool(8, std::string(static_cast<size_t>(rows) * dim * 4, '\0'));
  for (std::string& data : pool) {
    for (size_t i = 0; i < data.size(); i += 4) {
      const float v = n(rng) / (1.0f + static_cast<float>((i / 4) % dim));
      std::memcpy(&data[i], &v, 4);
    }
  }
  return pool;
}

void Stream(v1::SpotterService::Stub* stub, int run, int rank, absl::Time end,
            const std::vector<std::string>* pool, StepClock* clock, Totals* t) {
  const int rows = absl::GetFlag(FLAGS_rows), dim = absl::GetFlag(FLAGS_dim);
  const int window = absl::GetFlag(FLAGS_window);
  const absl::Duration pace = absl::Microseconds(1000 * absl::GetFlag(FLAGS_step_ms));
  grpc::ClientContext ctx;
  AddRunHeader(&ctx, RunName(run));
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
          const double ms = absl::ToDoubleMilliseconds(now - issued);
          absl::MutexLock tl(&t->mu);
          t->latency_ms.push_back(ms);
          double& all = t->directive_all_ms[{run, r.directive().version()}];
          all = std::max(all, ms);
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
  const uint64_t eval_every = absl::GetFlag(FLAGS_eval_every);
  v1::ConnectRequest req;
  v1::SketchBatch* b = req.mutable_sketch();
  b->set_rows(rows);
  b->set_cols(dim);
  b->set_lr(0.1);
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
    const std::string& data = (*pool)[(seq + static_cast<uint64_t>(rank)) % pool->size()];
    b->set_seq(++seq);
    b->set_step(seq);
    b->set_data(data);
    b->set_loss(1.0 / (1.0 + seq));
    if (clock != nullptr && seq % eval_every == 0) {
      absl::MutexLock cl(&clock->mu);
      clock->first_send.try_emplace(seq, absl::Now());
    }
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

// ---------------------------------------------------------------------------
// The null service: the same proto, nothing behind it.

class NullConnect : public grpc::ServerBidiReactor<v1::ConnectRequest, v1::ConnectResponse> {
 public:
  NullConnect() { StartRead(&req_); }

  void OnReadDone(bool ok) override {
    absl::MutexLock l(&mu_);
    if (!ok) {
      reading_done_ = true;
      MaybeFinishLocked();
      return;
    }
    if (req_.has_hello()) {
      welcome_ = true;
    } else if (req_.has_sketch()) {
      max_seq_ = std::max(max_seq_, req_.sketch().seq());
    } else if (req_.has_eval()) {
      max_seq_ = std::max(max_seq_, req_.eval().seq());
    }
    MaybeWriteLocked();
    if (!finished_) StartRead(&req_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    writing_ = false;
    if (!ok) failed_ = true;
    MaybeWriteLocked();
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  // One write in flight; acks coalesce to the highest seq read meanwhile, as
  // spotterd's do.
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || failed_) return;
    resp_.Clear();
    if (welcome_) {
      resp_.mutable_welcome();
      welcome_ = false;
    } else if (max_seq_ > acked_) {
      resp_.mutable_ack()->set_seq(max_seq_);
      acked_ = max_seq_;
    } else {
      return;
    }
    writing_ = true;
    StartWrite(&resp_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if ((reading_done_ || failed_) && !writing_ && !finished_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  absl::Mutex mu_;
  v1::ConnectRequest req_;
  v1::ConnectResponse resp_ ABSL_GUARDED_BY(mu_);
  bool welcome_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_done_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t max_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
};

class NullService final : public v1::SpotterService::CallbackService {
  grpc::ServerBidiReactor<v1::ConnectRequest, v1::ConnectResponse>* Connect(
      grpc::CallbackServerContext*) override {
    return new NullConnect();
  }
  grpc::ServerUnaryReactor* OpenRun(grpc::CallbackServerContext* ctx, const v1::OpenRunRequest*,
                                    v1::OpenRunResponse*) override {
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }
};

int ServeNull() {
  // SIGTERM is taken by sigwait; block it before gRPC starts its threads.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  NullService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "spotter_load: the null service did not start\n");
    return 1;
  }
  const std::string path = absl::GetFlag(FLAGS_port_file);
  {
    std::ofstream f(path + ".tmp");
    f << "grpc=" << port << "\n";
  }
  std::rename((path + ".tmp").c_str(), path.c_str());
  int sig = 0;
  sigwait(&set, &sig);
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  return 0;
}

// ---------------------------------------------------------------------------
// The core ingest rate, in-process.

int CoreOnly() {
  if (const int trim = absl::GetFlag(FLAGS_malloc_trim_threshold_mb); trim > 0) {
    TuneAllocator(trim);
  }
  int threads = absl::GetFlag(FLAGS_core_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int rows = absl::GetFlag(FLAGS_rows), dim = absl::GetFlag(FLAGS_dim);
  const std::vector<std::string> pool = BatchPool();
  const v1::RunConfig config = Config(1);
  std::atomic<uint64_t> batches{0};
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      WindowOptions w;  // the server's default exponential window
      RankAccumulator acc(dim, static_cast<int>(config.sketch_rows()), w);
      v1::SketchBatch b;
      b.set_rows(rows);
      b.set_cols(dim);
      RowMatrixXf m;
      const Limits limits;
      uint64_t step = 0;
      while (absl::Now() < end) {
        for (int i = 0; i < 8; ++i) {
          b.set_data(pool[(step + static_cast<uint64_t>(t)) % pool.size()]);
          b.set_step(++step);
          if (DecodeSketch(b, dim, limits, &m)) std::abort();  // the pool is valid
          acc.Add(step, m, 1.0);
        }
        batches += 8;
      }
    });
  }
  for (std::thread& th : workers) th.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  auto secs = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  const double cpu =
      secs(after.ru_utime) + secs(after.ru_stime) - secs(before.ru_utime) - secs(before.ru_stime);
  const double n = static_cast<double>(batches.load());
  const double row_count = n * rows;
  std::printf(
      "spotter_load: core only, %d threads, %.1f s: %.0f uploads/s, %.0f rows/s, "
      "%.1f MB/s, %.2f us CPU per row\n",
      threads, elapsed, n / elapsed, row_count / elapsed, n * rows * dim * 4 / elapsed / 1e6,
      cpu / row_count * 1e6);
  if (const std::string path = absl::GetFlag(FLAGS_report); !path.empty()) {
    std::ofstream f(path);
    f << absl::StrFormat(
        "{\"mode\": \"core\", \"threads\": %d, \"rows\": %d, \"dim\": %d, \"sketch_rows\": %d, "
        "\"message_bytes\": %d, \"seconds\": %.3f, \"uploads_per_s\": %.1f, \"rows_per_s\": "
        "%.1f, \"bytes_per_s\": %.1f, \"cpu_seconds\": %.3f, \"cpu_us_per_row\": %.4f}\n",
        threads, rows, dim, config.sketch_rows(), rows * dim * 4, elapsed, n / elapsed,
        row_count / elapsed, n * rows * dim * 4 / elapsed, cpu, cpu / row_count * 1e6);
  }
  return batches.load() > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------
// Against a server.

// CPU seconds (user + system) `pid` has used, or -1.
double CpuSeconds(int pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  // Fields after the command: state is field 3; utime and stime are 14, 15.
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Starts `args` with a port file argument appended; returns the child's pid
// and sets `target` once the port file names the port, or returns 0.
pid_t StartServer(std::vector<std::string> args, std::string* target, std::string* port_file) {
  *port_file = absl::StrFormat("/tmp/spotter_load_%d.ports", getpid());
  std::remove(port_file->c_str());
  args.push_back("--port_file=" + *port_file);
  const pid_t child = fork();
  if (child == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    std::ifstream f(*port_file);
    std::string line;
    if (std::getline(f, line) && line.rfind("grpc=", 0) == 0) {
      *target = "127.0.0.1:" + line.substr(5);
      return child;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  return 0;
}

// Opens `n` runs named idle-<i>, each with one upload from one rank, using
// 8 threads; returns the number that failed.
int OpenIdleRuns(v1::SpotterService::Stub* stub, int n, const std::string& data) {
  std::atomic<int> next{0}, failed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back([&] {
      for (int i = next++; i < n; i = next++) {
        const std::string name = absl::StrFormat("idle-%d", i);
        grpc::ClientContext octx;
        AddRunHeader(&octx, name);
        v1::OpenRunRequest open;
        open.set_name(name);
        *open.mutable_config() = Config(1);
        v1::OpenRunResponse opened;
        if (!stub->OpenRun(&octx, open, &opened).ok()) {
          failed++;
          continue;
        }
        grpc::ClientContext ctx;
        AddRunHeader(&ctx, name);
        auto stream = stub->Connect(&ctx);
        v1::ConnectRequest req;
        req.mutable_hello()->set_run(name);
        req.mutable_hello()->mutable_projection()->set_seed(1);
        stream->Write(req);
        req.Clear();
        v1::SketchBatch* b = req.mutable_sketch();
        b->set_rows(absl::GetFlag(FLAGS_rows));
        b->set_cols(absl::GetFlag(FLAGS_dim));
        b->set_seq(1);
        b->set_step(1);
        b->set_data(data);
        stream->Write(req);
        stream->WritesDone();
        bool acked = false;
        v1::ConnectResponse r;
        while (stream->Read(&r)) {
          if (r.has_ack() && r.ack().seq() >= 1) acked = true;
        }
        if (!stream->Finish().ok() || !acked) failed++;
      }
    });
  }
  for (std::thread& th : workers) th.join();
  return failed.load();
}

int Main() {
  if (absl::GetFlag(FLAGS_serve_null)) return ServeNull();
  if (absl::GetFlag(FLAGS_core_only)) return CoreOnly();
  const std::string mode = absl::GetFlag(FLAGS_target);
  if (mode != "spotterd" && mode != "null") {
    std::fprintf(stderr, "spotter_load: --target=%s; expected spotterd or null\n", mode.c_str());
    return 2;
  }
  const bool null_target = mode == "null";
  const int nstreams = absl::GetFlag(FLAGS_streams), nruns = absl::GetFlag(FLAGS_runs);
  const int world = (nstreams + nruns - 1) / nruns;
  std::string target = absl::GetFlag(FLAGS_server);
  int pid = absl::GetFlag(FLAGS_server_pid);
  pid_t child = 0;
  std::string port_file;
  if (null_target) {
    child = StartServer({"/proc/self/exe", "--serve_null"}, &target, &port_file);
  } else if (target.empty()) {
    const std::string bin = absl::GetFlag(FLAGS_spotterd);
    if (bin.empty()) {
      std::fprintf(stderr, "spotter_load: give --server or --spotterd (or --target=null)\n");
      return 2;
    }
    std::vector<std::string> args = {bin, "--listen=127.0.0.1:0", "--metrics_listen="};
    std::istringstream extra(absl::GetFlag(FLAGS_spotterd_args));
    for (std::string a; extra >> a;) args.push_back(a);
    child = StartServer(args, &target, &port_file);
  }
  if (child) pid = child;
  if (target.empty()) {
    std::fprintf(stderr, "spotter_load: the %s server did not start\n", mode.c_str());
    return 1;
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
  auto stop_child = [&] {
    if (!child) return 0;
    kill(child, SIGTERM);
    int st = 0;
    waitpid(child, &st, 0);
    std::remove(port_file.c_str());
    child = 0;
    return st;
  };
  const std::vector<std::string> pool = BatchPool();
  double rss_before_idle = pid > 0 ? RssMb(pid) : -1, rss_after_idle = rss_before_idle;
  if (const int idle = absl::GetFlag(FLAGS_idle_runs); idle > 0) {
    const int failed = OpenIdleRuns(stubs[0].get(), idle, pool[0]);
    if (failed > 0) {
      std::fprintf(stderr, "spotter_load: %d of %d idle runs failed to open\n", failed, idle);
      stop_child();
      return 1;
    }
    if (pid > 0) rss_after_idle = RssMb(pid);
    std::printf("spotter_load: %d idle runs: spotterd RSS %.1f -> %.1f MiB (%.1f KiB per run)\n",
                idle, rss_before_idle, rss_after_idle,
                (rss_after_idle - rss_before_idle) * 1024 / idle);
  }
  for (int r = 0; r < nruns; ++r) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, RunName(r));
    v1::OpenRunRequest req;
    req.set_name(RunName(r));
    *req.mutable_config() = Config(world);
    v1::OpenRunResponse resp;
    const grpc::Status s = stubs[0]->OpenRun(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "spotter_load: OpenRun: %s\n", s.error_message().c_str());
      stop_child();
      return 1;
    }
  }

  Totals totals;
  std::vector<std::unique_ptr<StepClock>> clocks;
  const bool watch = absl::GetFlag(FLAGS_watch) && !null_target;
  for (int r = 0; r < nruns; ++r) clocks.push_back(std::make_unique<StepClock>());
  // Evaluation latency: a WatchRun per run.
  std::vector<std::unique_ptr<grpc::ClientContext>> watch_ctx;
  std::vector<std::thread> watchers;
  if (watch) {
    for (int r = 0; r < nruns; ++r) {
      watch_ctx.push_back(std::make_unique<grpc::ClientContext>());
      watchers.emplace_back([&, r, ctx = watch_ctx.back().get()] {
        v1::WatchRunRequest req;
        req.set_name(RunName(r));
        AddRunHeader(ctx, RunName(r));
        auto reader = stubs[r % stubs.size()]->WatchRun(ctx, req);
        const uint64_t every = absl::GetFlag(FLAGS_eval_every);
        uint64_t prev = 0;
        v1::WatchRunResponse resp;
        while (reader->Read(&resp)) {
          if (!resp.has_point()) continue;
          const absl::Time now = absl::Now();
          // The evaluation was due at the first multiple of eval_every after
          // the previous point's step; the first upload of that step made it due.
          const uint64_t due = (prev / every + 1) * every;
          prev = resp.point().step();
          absl::Time sent = absl::InfiniteFuture();
          {
            absl::MutexLock l(&clocks[r]->mu);
            auto it = clocks[r]->first_send.find(due);
            if (it != clocks[r]->first_send.end()) sent = it->second;
          }
          if (sent < now) {
            absl::MutexLock l(&totals.mu);
            totals.eval_latency_ms.push_back(absl::ToDoubleMilliseconds(now - sent));
          }
        }
        reader->Finish();
      });
    }
  }
  const absl::Time start = absl::Now();
  const double cpu_start = pid > 0 ? CpuSeconds(pid) : -1;
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
    const double every_ms = absl::GetFlag(FLAGS_override_ms);
    if (null_target || every_ms <= 0) return;
    std::mt19937 rng(5);
    int i = 0;
    while (absl::Now() + absl::Milliseconds(every_ms) < end) {
      absl::SleepFor(absl::Milliseconds(every_ms));
      grpc::ClientContext ctx;
      v1::OverridePhaseRequest req;
      req.set_name(RunName(static_cast<int>(rng() % nruns)));
      AddRunHeader(&ctx, req.name());
      req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
      req.set_phase(++i % 2 ? v1::PHASE_REFINEMENT : v1::PHASE_ACQUISITION);
      v1::OverridePhaseResponse resp;
      if (!stubs[0]->OverridePhase(&ctx, req, &resp).ok()) totals.errors++;
    }
  });
  std::vector<std::thread> threads;
  for (int i = 0; i < nstreams; ++i) {
    threads.emplace_back(Stream, stubs[i % stubs.size()].get(), i % nruns, i / nruns, end, &pool,
                         watch ? clocks[i % nruns].get() : nullptr, &totals);
  }
  for (std::thread& th : threads) th.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  const double cpu = pid > 0 ? CpuSeconds(pid) - cpu_start : -1;
  op.join();
  done = true;
  sampler.join();
  for (auto& ctx : watch_ctx) ctx->TryCancel();
  for (std::thread& th : watchers) th.join();
  if (child) {
    const int st = stop_child();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "spotter_load: the %s server exited abnormally (status %d)\n",
                   mode.c_str(), st);
      totals.errors++;
    }
  }

  std::vector<double> lat, lat_all, eval_lat;
  std::map<std::string, int> errors;
  {
    absl::MutexLock l(&totals.mu);
    lat = totals.latency_ms;
    for (const auto& [key, ms] : totals.directive_all_ms) lat_all.push_back(ms);
    eval_lat = totals.eval_latency_ms;
    errors = totals.error_messages;
  }
  double rss_max = 0, rss_half = 0, rss_end = 0;
  for (const auto& [t, mb] : rss) {
    rss_max = std::max(rss_max, mb);
    if (t <= elapsed / 2) rss_half = mb;
    rss_end = mb;
  }
  const int rows = absl::GetFlag(FLAGS_rows), dim = absl::GetFlag(FLAGS_dim);
  const double sent = static_cast<double>(totals.sent.load());
  const double row_count = sent * rows;
  std::printf(
      "spotter_load: %s, %d streams over %d runs for %.1f s: %.0f uploads sent, %llu "
      "acknowledged, %llu rejected, %d stream errors, %d streams with unacknowledged uploads\n",
      mode.c_str(), nstreams, nruns, elapsed, sent,
      static_cast<unsigned long long>(totals.acked.load()),
      static_cast<unsigned long long>(totals.rejected.load()), totals.errors.load(),
      totals.unacked_streams.load());
  std::printf(
      "spotter_load: throughput %.0f uploads/s, %.0f rows/s, %.1f MB/s of sketch data; "
      "server CPU %.2f us per row\n",
      sent / elapsed, row_count / elapsed, static_cast<double>(totals.bytes.load()) / elapsed / 1e6,
      row_count > 0 ? cpu / row_count * 1e6 : NAN);
  if (!null_target && !lat.empty()) {
    std::printf(
        "spotter_load: directive latency (issue to receipt): per delivery (%zu) p50 %.2f ms, p99 "
        "%.2f ms, max %.2f ms; at every stream of the run (%zu directives) p50 %.2f ms, p99 "
        "%.2f ms\n",
        lat.size(), Percentile(lat, 0.5), Percentile(lat, 0.99), Percentile(lat, 1.0),
        lat_all.size(), Percentile(lat_all, 0.5), Percentile(lat_all, 0.99));
  }
  if (watch) {
    std::printf(
        "spotter_load: evaluation latency (upload reaching the step to its point, %zu "
        "evaluations): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
        eval_lat.size(), Percentile(eval_lat, 0.5), Percentile(eval_lat, 0.99),
        Percentile(eval_lat, 1.0));
  }
  if (!rss.empty()) {
    std::printf(
        "spotter_load: server RSS %.0f MiB at start, %.0f at half time, %.0f at the end, "
        "max %.0f\n",
        rss.front().second, rss_half, rss_end, rss_max);
  }
  for (const auto& [msg, n] : errors) std::printf("spotter_load: error x%d: %s\n", n, msg.c_str());
  if (const std::string path = absl::GetFlag(FLAGS_report); !path.empty()) {
    std::ofstream f(path);
    auto pct = [](const std::vector<double>& v) -> std::string {
      if (v.empty()) return "null";
      return absl::StrFormat("{\"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f, \"n\": %d}",
                             Percentile(v, 0.5), Percentile(v, 0.99), Percentile(v, 1.0), v.size());
    };
    f << absl::StrFormat(
        "{\"mode\": \"%s\", \"streams\": %d, \"runs\": %d, \"idle_runs\": %d, \"rows\": %d, "
        "\"dim\": %d, \"sketch_rows\": %d, \"message_bytes\": %d, \"seconds\": %.2f, "
        "\"sent\": %.0f, \"acked\": %d, \"rejected\": %d, \"errors\": %d, \"uploads_per_s\": "
        "%.1f, \"rows_per_s\": %.1f, \"bytes_per_s\": %.1f, \"server_cpu_seconds\": %.3f, "
        "\"cpu_us_per_row\": %.4f, \"rss_before_idle_mb\": %.2f, \"rss_after_idle_mb\": %.2f, "
        "\"latency_ms\": %s, \"directive_all_streams_ms\": %s, \"eval_latency_ms\": %s, "
        "\"rss_mb\": [",
        mode, nstreams, nruns, absl::GetFlag(FLAGS_idle_runs), rows, dim,
        absl::GetFlag(FLAGS_sketch_rows), rows * dim * 4, elapsed, sent, totals.acked.load(),
        totals.rejected.load(), totals.errors.load(), sent / elapsed, row_count / elapsed,
        static_cast<double>(totals.bytes.load()) / elapsed, cpu,
        row_count > 0 ? cpu / row_count * 1e6 : -1.0, rss_before_idle, rss_after_idle, pct(lat),
        pct(lat_all), pct(eval_lat));
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
  absl::SetProgramUsageMessage(
      "drives N Connect streams over M runs against spotterd (or a null service, or the core "
      "in-process) and reports throughput, latency, server CPU and memory.\n"
      "  spotter_load --spotterd build/server/spotterd --streams 64 --runs 8 --seconds 30\n"
      "  spotter_load --target=null --streams 16 --rows 512 --seconds 5\n"
      "  spotter_load --core_only --rows 512 --seconds 5");
  // List this file's flags under --help (absl lists only those of files
  // named after the program by default).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view f) { return absl::EndsWith(f, "load.cc"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return spotter::Main();
}
