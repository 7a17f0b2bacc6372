// The crash test's workload and checker (tests/crash/crash_loop.sh runs them
// around a spotterd that it kills with SIGKILL at random moments).
//
// Drive mode: R runs x W ranks, each rank a RunSession uploading steps
// [0, T) of deterministic gradient rows (and a validation report every 25
// steps), while per run a WatchRun reader (reconnecting after every crash)
// records every directive it sees, and an operator thread forces phases from
// time to time. Sessions replay what was not acknowledged after every
// reconnect. When every upload is acknowledged it writes what it observed.
//
// Verify mode (spotterd stopped): reads the state file and checks that
//  - every rank holds exactly its T uploads and its reports (no loss, no
//    double application), and its sketch equals an uninterrupted accumulator
//    fed the same rows, within the Frequent Directions tolerance;
//  - the run's directives are versions 1..n and every directive any client
//    saw (streams, watchers, override replies) is stored with the same
//    content: none lost, none issued twice with different content;
//  - every session ended holding the run's latest directive.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cpp/run_session.h"
#include "core/spectrum/summary.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "proto/convert/directive.h"
#include "server/runs/run.h"
#include "server/runs/run_config.h"
#include "server/storage/records.h"
#include "server/storage/sqlite_store.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "spotterd address (drive mode)");
ABSL_FLAG(std::string, out, "", "directory for the observations (both modes)");
ABSL_FLAG(bool, verify, false, "check the state file against the observations");
ABSL_FLAG(std::string, state_file, "", "spotterd's state file (verify mode)");
ABSL_FLAG(uint32_t, runs, 3, "runs");
ABSL_FLAG(uint32_t, ranks, 2, "ranks per run");
ABSL_FLAG(uint64_t, steps, 400, "steps per rank");
ABSL_FLAG(double, step_ms, 20.0, "wall time per step (pacing)");
ABSL_FLAG(double, override_ms, 700.0, "mean time between operator overrides");
ABSL_FLAG(double, flush_timeout_s, 300.0, "time allowed for the last acknowledgements");

namespace spotter {
namespace {

constexpr uint32_t kDim = 32;
constexpr uint32_t kRows = 8;
constexpr int kBatchRows = 6;
constexpr uint64_t kEvalEvery = 25;

std::string RunName(uint32_t r) { return absl::StrFormat("crash-%d", r); }

v1::RunConfig Config(uint32_t world, uint64_t steps) {
  v1::RunConfig c;
  c.set_sketch_dim(kDim);
  c.set_sketch_rows(kRows);
  c.set_eval_every(10);
  c.set_world_size(world);
  c.set_total_steps(steps * 4);  // the controller never reaches DONE on its own
  c.set_peak_lr(0.1);
  c.mutable_projection()->set_seed(42);
  c.mutable_phase()->set_delivery_budget_seconds(0.2);
  return c;
}

// The rows rank `rank` of run `run` uploads at `step`: a decaying spectrum.
RowMatrixXf Rows(uint32_t run, uint32_t rank, uint64_t step) {
  RowMatrixXf m(kBatchRows, kDim);
  uint64_t x = (run * 1000003ull + rank) * 0x9E3779B97F4A7C15ull + step * 0xBF58476D1CE4E5B9ull;
  for (int i = 0; i < m.size(); ++i) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    const double u = static_cast<double>(x >> 11) / 9007199254740992.0 - 0.5;
    m.data()[i] = static_cast<float>(u / (1.0 + (i % kDim)));
  }
  return m;
}

// Directives seen by clients, by run and version; conflicts are violations.
class Observed {
 public:
  void Add(const std::string& run, const v1::Directive& d, const char* where) {
    std::lock_guard<std::mutex> l(mu_);
    auto [it, fresh] = seen_[run].emplace(d.version(), d);
    if (!fresh && !google::protobuf::util::MessageDifferencer::Equals(it->second, d)) {
      violations_.push_back(
          absl::StrFormat("%s: directive v%d seen twice with different content (%s): %s vs %s", run,
                          d.version(), where, it->second.ShortDebugString(), d.ShortDebugString()));
    }
  }
  void Save(const std::filesystem::path& dir) {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [run, byv] : seen_) {
      v1::GetTrajectoryResponse t;
      for (const auto& [v, d] : byv) *t.add_directives() = d;
      std::ofstream(dir / ("observed_" + run + ".pb"), std::ios::binary) << t.SerializeAsString();
    }
    std::ofstream f(dir / "violations.txt");
    for (const std::string& v : violations_) f << v << "\n";
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::map<uint64_t, v1::Directive>> seen_;
  std::vector<std::string> violations_;
};

int Drive() {
  const std::string target = absl::GetFlag(FLAGS_server);
  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  const uint32_t runs = absl::GetFlag(FLAGS_runs), world = absl::GetFlag(FLAGS_ranks);
  const uint64_t steps = absl::GetFlag(FLAGS_steps);
  const absl::Duration step_time = absl::Microseconds(1000 * absl::GetFlag(FLAGS_step_ms));
  std::filesystem::create_directories(out);
  // Reconnect quickly after a crash: gRPC's own channel backoff (1 s growing
  // to 120 s by default) would otherwise hold every retry of the sessions,
  // and a connect attempt is given up after 1 s (MIN_RECONNECT_BACKOFF is
  // also the connect timeout; 20 s by default). One channel per session.
  auto new_channel = [&target] {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  };
  auto stub = v1::SpotterService::NewStub(new_channel());
  Observed observed;
  std::atomic<bool> uploads_done{false}, stop{false};

  // Watchers: every directive of the run, across crashes.
  std::vector<std::thread> watchers;
  std::vector<std::unique_ptr<grpc::ClientContext>> watch_ctx(runs);
  std::mutex watch_mu;
  for (uint32_t r = 0; r < runs; ++r) {
    watchers.emplace_back([&, r] {
      while (!stop) {
        auto ctx = std::make_unique<grpc::ClientContext>();
        {
          std::lock_guard<std::mutex> l(watch_mu);
          if (stop) break;
          watch_ctx[r] = std::move(ctx);
        }
        v1::WatchRunRequest req;
        req.set_name(RunName(r));
        req.set_include_history(true);
        auto reader = stub->WatchRun(watch_ctx[r].get(), req);
        v1::WatchRunResponse ev;
        while (reader->Read(&ev)) {
          if (ev.has_directive()) observed.Add(RunName(r), ev.directive(), "watch");
        }
        reader->Finish();
        absl::SleepFor(absl::Milliseconds(50));  // reconnect pacing: the server is restarting
      }
    });
  }
  // The operator: forced phases (ACQUISITION / REFINEMENT, never DONE).
  std::thread op([&] {
    std::mt19937_64 rng(99);
    std::exponential_distribution<double> gap(1.0 / absl::GetFlag(FLAGS_override_ms));
    int i = 0;
    while (!uploads_done) {
      absl::SleepFor(absl::Milliseconds(gap(rng)));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::OverridePhaseRequest req;
      req.set_name(RunName(static_cast<uint32_t>(rng() % runs)));
      req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
      req.set_phase(++i % 2 ? v1::PHASE_REFINEMENT : v1::PHASE_ACQUISITION);
      req.set_reason(absl::StrFormat("crash test override %d", i));
      v1::OverridePhaseResponse resp;
      if (stub->OverridePhase(&ctx, req, &resp).ok() && resp.has_directive()) {
        observed.Add(req.name(), resp.directive(), "override reply");
      }
    }
  });

  struct Rank {
    uint32_t run, rank;
    std::unique_ptr<RunSession> session;
  };
  std::vector<Rank> ranks;
  for (uint32_t r = 0; r < runs; ++r) {
    for (uint32_t k = 0; k < world; ++k) {
      SessionOptions o;
      o.channel = new_channel();
      o.run = RunName(r);
      o.config = Config(world, steps);
      o.rank = k;
      o.queue_size = steps + steps / kEvalEvery + 16;  // nothing is ever dropped
      o.drop = DropPolicy::kNewest;  // so that a full queue shows (UploadSketch fails)
      o.backoff_initial = absl::Milliseconds(20);
      o.backoff_max = absl::Milliseconds(200);
      o.heartbeat_interval = absl::Seconds(1);
      o.open_timeout = absl::Seconds(2);
      auto s = RunSession::Start(o);
      if (!s.ok()) {
        std::fprintf(stderr, "crash_workload: %s\n", s.status().ToString().c_str());
        return 1;
      }
      ranks.push_back({r, k, *std::move(s)});
    }
  }
  std::vector<std::thread> trainers;
  for (Rank& rk : ranks) {
    trainers.emplace_back([&, p = &rk] {
      absl::Time next = absl::Now();
      for (uint64_t step = 0; step < steps; ++step) {
        if (!p->session->UploadSketch(step, Rows(p->run, p->rank, step), 1.0 / (1.0 + step),
                                      p->session->LrAt(step, 0.01))) {
          std::fprintf(stderr, "crash_workload: upload dropped (queue full)\n");
          std::abort();
        }
        if (step % kEvalEvery == kEvalEvery - 1) {
          p->session->ReportEval(step, {{"val_loss", 1.0 / (1.0 + step)}});
        }
        next += step_time;
        absl::SleepFor(next - absl::Now());
      }
    });
  }
  for (std::thread& t : trainers) t.join();
  uploads_done = true;
  std::ofstream(out / "uploads_done") << "1\n";  // the kill loop stops here
  op.join();
  int status = 0;
  const absl::Duration flush = absl::Seconds(absl::GetFlag(FLAGS_flush_timeout_s));
  for (Rank& rk : ranks) {
    if (!rk.session->Flush(flush)) {
      std::fprintf(stderr, "crash_workload: run %d rank %d: uploads still unacknowledged\n", rk.run,
                   rk.rank);
      status = 1;
    }
  }
  // Every session holds the run's latest directive: wait for it (a directive
  // issued by the last evaluations may still be on its way), until the
  // run's latest version no longer changes.
  for (uint32_t r = 0; r < runs; ++r) {
    uint64_t version = 0;
    for (int round = 0; round < 20; ++round) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::GetRunRequest req;
      req.set_name(RunName(r));
      v1::GetRunResponse resp;
      if (!stub->GetRun(&ctx, req, &resp).ok()) {
        absl::SleepFor(absl::Milliseconds(200));  // the server is restarting
        continue;
      }
      const uint64_t now = resp.run().directive().version();
      if (now == version) break;
      version = now;
      for (Rank& rk : ranks) {
        if (rk.run == r) rk.session->WaitForDirective(version, absl::Seconds(30));
      }
    }
  }
  std::ofstream sessions(out / "sessions.txt");
  uint64_t connects = 0;
  for (Rank& rk : ranks) {
    const SessionStats st = rk.session->stats();
    connects += st.connects;
    if (!st.last_error.empty()) {
      std::printf("crash_workload: run %u rank %u: %llu streams, last error: %s\n", rk.run, rk.rank,
                  static_cast<unsigned long long>(st.connects), st.last_error.c_str());
    }
    std::optional<Directive> latest = rk.session->LatestDirective();
    sessions << rk.run << " " << rk.rank << " " << (latest ? latest->version : 0) << " "
             << st.acked_seq << " " << st.enqueued << " " << st.rejects << " " << st.dropped << " "
             << st.connects << "\n";
  }
  sessions.close();
  for (Rank& rk : ranks) rk.session->Close(absl::Seconds(5));
  stop = true;
  {
    std::lock_guard<std::mutex> l(watch_mu);
    for (auto& c : watch_ctx) {
      if (c) c->TryCancel();
    }
  }
  for (std::thread& t : watchers) t.join();
  observed.Save(out);
  std::printf("crash_workload: %zu sessions, %llu stream attempts (reconnects included)\n",
              ranks.size(), static_cast<unsigned long long>(connects));
  return status;
}

int Verify() {
  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  const uint32_t runs = absl::GetFlag(FLAGS_runs), world = absl::GetFlag(FLAGS_ranks);
  const uint64_t steps = absl::GetFlag(FLAGS_steps);
  std::vector<std::string> failures;
  auto fail = [&](const std::string& f) { failures.push_back(f); };
  {
    std::ifstream v(out / "violations.txt");
    for (std::string line; std::getline(v, line);) fail(line);
  }
  SqliteOptions so;
  auto store = SqliteStore::Open(absl::GetFlag(FLAGS_state_file), so);
  if (!store.ok()) {
    std::fprintf(stderr, "FAIL: %s\n", store.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::vector<LoadedRun>> loaded = LoadState(**store);
  if (!loaded.ok()) {
    std::fprintf(stderr, "FAIL: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  std::map<std::string, const LoadedRun*> by_name;
  for (const LoadedRun& r : *loaded) by_name[r.run.name()] = &r;
  const uint64_t reports = steps / kEvalEvery;
  size_t directives = 0, points = 0;
  double worst = 0.0;
  bool identical = true;
  for (uint32_t r = 0; r < runs; ++r) {
    const std::string name = RunName(r);
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      fail(name + ": not in the state file");
      continue;
    }
    const LoadedRun& run = *it->second;
    directives += run.directives.size();
    points += run.points.size();
    // Uploads: all there, each applied once; the sketch as if never killed.
    std::vector<GradientMoments> got, want;
    for (uint32_t k = 0; k < world; ++k) {
      auto rk = run.ranks.find(k);
      if (rk == run.ranks.end()) {
        fail(absl::StrFormat("%s rank %d: no state", name, k));
        continue;
      }
      const state::RankRecord& rec = rk->second.record;
      if (rec.uploads() != steps || rec.rows() != steps * kBatchRows ||
          rec.last_seq() != steps + reports) {
        fail(absl::StrFormat("%s rank %d: %d uploads, %d rows, last seq %d; expected %d, %d, %d",
                             name, k, rec.uploads(), rec.rows(), rec.last_seq(), steps,
                             steps * kBatchRows, steps + reports));
      }
      absl::StatusOr<RankAccumulator> acc = RestoreRankAccumulator(rk->second, run.run.config());
      if (!acc.ok()) {
        fail(absl::StrFormat("%s rank %d: %s", name, k, acc.status().ToString()));
        continue;
      }
      RankAccumulator reference(kDim, kRows, ToWindowOptions(run.run.config()));
      for (uint64_t step = 0; step < steps; ++step) reference.Add(step, Rows(r, k, step), 1.0);
      for (GradientMoments& m : acc->Snapshot(steps - 1)) got.push_back(std::move(m));
      for (GradientMoments& m : reference.Snapshot(steps - 1)) want.push_back(std::move(m));
    }
    if (got.empty() || want.empty()) continue;
    const GradientMoments a = MergeAll(std::move(got)), b = MergeAll(std::move(want));
    const SketchSpectrum sa = a.centred.Spectrum(), sb = b.centred.Spectrum();
    const double tol = sa.delta + sb.delta + sa.rounding + sb.rounding;
    const size_t n = std::max(sa.eigenvalues.size(), sb.eigenvalues.size());
    for (size_t i = 0; i < n; ++i) {
      const double x = i < sa.eigenvalues.size() ? sa.eigenvalues[i] : 0.0;
      const double y = i < sb.eigenvalues.size() ? sb.eigenvalues[i] : 0.0;
      identical &= x == y;
      worst = std::max(worst, std::fabs(x - y) / std::max(tol, 1e-300));
      if (std::fabs(x - y) > tol) {
        fail(
            absl::StrFormat("%s: eigenvalue %d is %.9g; an uninterrupted run has %.9g "
                            "(FD tolerance %.3g)",
                            name, i, x, y, tol));
      }
    }
    if (std::fabs(a.trace_centred - b.trace_centred) > 1e-9 * b.trace_centred) {
      fail(absl::StrFormat("%s: trace %.12g, uninterrupted %.12g", name, a.trace_centred,
                           b.trace_centred));
    }
    // Directives: every one a client saw is stored, with the same content.
    v1::GetTrajectoryResponse seen;
    {
      std::ifstream f(out / ("observed_" + name + ".pb"), std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      seen.ParseFromString(bytes);
    }
    if (seen.directives_size() == 0) fail(name + ": no directive observed at all");
    for (const v1::Directive& d : seen.directives()) {
      if (d.version() == 0 || d.version() > run.directives.size()) {
        fail(absl::StrFormat("%s: directive v%d was seen but is not stored (lost)", name,
                             d.version()));
      } else if (!google::protobuf::util::MessageDifferencer::Equals(
                     d, run.directives[d.version() - 1])) {
        fail(absl::StrFormat("%s: directive v%d was seen as %s but is stored as %s", name,
                             d.version(), d.ShortDebugString(),
                             run.directives[d.version() - 1].ShortDebugString()));
      }
    }
  }
  // Every session ended with the latest directive of its run.
  std::ifstream sessions(out / "sessions.txt");
  uint32_t run_id, rank_id;
  uint64_t latest, acked, uploads, rejects, dropped, connects, reconnects = 0;
  size_t nsessions = 0;
  while (sessions >> run_id >> rank_id >> latest >> acked >> uploads >> rejects >> dropped >>
         connects) {
    ++nsessions;
    reconnects += connects - 1;
    auto it = by_name.find(RunName(run_id));
    if (it == by_name.end()) continue;
    const uint64_t newest = it->second->directives.size();
    if (latest != newest) {
      fail(absl::StrFormat("run %d rank %d ended holding directive v%d; the run's latest is v%d",
                           run_id, rank_id, latest, newest));
    }
    if (acked != steps + reports || rejects != 0 || dropped != 0) {
      fail(absl::StrFormat("run %d rank %d: acked %d of %d, %d rejects, %d dropped", run_id,
                           rank_id, acked, steps + reports, rejects, dropped));
    }
  }
  if (nsessions != runs * world) fail("sessions.txt is incomplete");
  for (const std::string& f : failures) std::fprintf(stderr, "FAIL: %s\n", f.c_str());
  std::printf(
      "crash_workload verify: %u runs x %u ranks x %llu steps; %zu directives, %zu points, "
      "%llu reconnect attempts; sketches %s (worst |difference| / FD tolerance %.3g); %s\n",
      runs, world, static_cast<unsigned long long>(steps), directives, points,
      static_cast<unsigned long long>(reconnects),
      identical ? "bit-identical to an uninterrupted run" : "within FD tolerance", worst,
      failures.empty() ? "PASS" : "FAIL");
  return failures.empty() ? 0 : 1;
}

}  // namespace
}  // namespace spotter

int main(int argc, char** argv) {
  // A channel's reconnection progresses only while some thread polls it; the
  // sessions' calls fail fast while the server is down, so without polling
  // gRPC's backup poller (every 5 s) would decide how soon they reconnect.
  setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "20", /*overwrite=*/0);
  absl::ParseCommandLine(argc, argv);
  return absl::GetFlag(FLAGS_verify) ? spotter::Verify() : spotter::Drive();
}
