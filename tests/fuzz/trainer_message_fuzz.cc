// Fuzz target: decode + validate + ingest of trainer messages. The input
// picks a run config, then holds length-prefixed ConnectRequests, handled as
// the Connect stream handles them (Hello -> Join, SketchBatch -> DecodeSketch
// + Ingest, EvalReport -> Report, Heartbeat). Invariants: nothing crashes;
// the run's spectrum stays finite; points advance in step and directive
// versions run 1..n; and what the run persisted always restores to the same
// run (the same ranks, seqs, uploads, points and directives).
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "core/util/clock.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"
#include "server/runs/eval_pool.h"
#include "server/runs/rejection.h"
#include "server/runs/run.h"
#include "server/runs/run_config.h"
#include "server/storage/committer.h"
#include "server/storage/records.h"
#include "server/storage/store.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/run_env.h"

namespace spotter {
namespace {

class NullObserver final : public RunObserver {
 public:
  void OnDirective(const v1::Directive&) override {}
  void OnPoint(const v1::TrajectoryPoint&) override {}
  void OnTransition(const v1::PhaseTransition&) override {}
  void OnEnded(v1::RunState) override {}
};

void CheckFinite(const v1::SpectrumSummary& s, const char* what) {
  FUZZ_CHECK(std::isfinite(s.trace()) && s.trace() >= 0, "%s trace %g", what, s.trace());
  for (double e : s.eigenvalues()) FUZZ_CHECK(std::isfinite(e), "%s eigenvalue %g", what, e);
  FUZZ_CHECK(std::isfinite(s.eigenvalue_error()), "%s error %g", what, s.eigenvalue_error());
}

// What must survive a restart. A rank that joined but never sent an upload
// or report has nothing durable (it is listed again when it reconnects).
std::string Describe(const v1::RunInfo& info) {
  std::string out;
  for (const v1::RankStatus& r : info.ranks()) {
    if (r.last_seq() == 0) continue;
    out += std::to_string(r.rank()) + ":" + std::to_string(r.last_seq()) + ":" +
           std::to_string(r.uploads()) + ":" + std::to_string(r.rows()) + " ";
  }
  return out + " points " + std::to_string(info.points()) + " directive " +
         std::to_string(info.directive().version()) + " phase " + std::to_string(info.phase());
}

void Run1(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  Limits limits;
  limits.max_batch_rows = 64;
  v1::RunConfig requested;
  requested.set_sketch_dim(static_cast<uint32_t>(in.InRange(2, 16)));
  requested.set_sketch_rows(static_cast<uint32_t>(in.InRange(2, requested.sketch_dim())));
  requested.set_window(in.U8() & 1 ? v1::WINDOW_KIND_FIXED : v1::WINDOW_KIND_EXPONENTIAL);
  requested.set_decay(0.5 + 0.5 * in.Unit());
  requested.set_window_steps(in.InRange(1, 50));
  requested.set_eval_every(static_cast<uint32_t>(in.InRange(1, 5)));
  requested.set_world_size(static_cast<uint32_t>(in.InRange(1, 3)));
  requested.set_total_steps(in.InRange(20, 400));
  requested.set_peak_lr(0.1);
  requested.mutable_projection()->set_seed(7);
  absl::StatusOr<v1::RunConfig> config = ResolveRunConfig(requested, limits);
  if (!config.ok()) return;
  const bool persistent = in.U8() & 1;

  auto memory = std::make_shared<MemoryStore>();
  NullStore null;
  fuzz::RunEnv env(persistent ? static_cast<Store*>(memory.get()) : &null, 16);
  RunDeps& deps = env.deps;
  deps.persistent = persistent;
  deps.checkpoint.every_uploads = static_cast<uint32_t>(in.InRange(1, 8));
  deps.limits = limits;

  NullObserver observer;
  std::shared_ptr<Run> run = Run::Create("fuzz", *config, "", 0, deps);
  RankHandle rank, stale;
  RowMatrixXf rows;
  while (!in.empty()) {
    v1::ConnectRequest req;
    if (!req.ParseFromString(in.Chunk())) continue;
    bool duplicate = false;
    switch (req.msg_case()) {
      case v1::ConnectRequest::kHello: {
        // A later Hello is another stream of the rank (a reconnect, or a
        // restarted process when its incarnation differs); the earlier
        // stream's handle stays usable, as a zombie trainer's would.
        absl::StatusOr<RankHandle> r = run->Join(req.hello(), &observer);
        if (r.ok()) {
          stale = rank;
          rank = *r;
        }
        break;
      }
      case v1::ConnectRequest::kSketch:
        if (rank.state != nullptr &&
            !DecodeSketch(req.sketch(), config->sketch_dim(), limits, &rows)) {
          run->Ingest(req.sketch().seq() % 2 && stale.state ? stale : rank, req.sketch(), rows,
                      &duplicate);
        }
        break;
      case v1::ConnectRequest::kEval:
        if (rank.state != nullptr) run->Report(rank, req.eval(), &duplicate);
        break;
      case v1::ConnectRequest::kHeartbeat:
        if (rank.state != nullptr) run->Heartbeat(rank, req.heartbeat().step());
        break;
      default:
        break;
    }
    env.clock.Advance(absl::Milliseconds(10));
  }
  env.pool.Drain();
  env.committer.Flush();

  const v1::RunInfo info = run->Info();
  if (info.has_latest()) {
    CheckFinite(info.latest().covariance(), "covariance");
    CheckFinite(info.latest().second_moment(), "second moment");
  }
  TrajectoryQuery everything;
  everything.page_size = std::numeric_limits<size_t>::max() - 1;
  absl::StatusOr<TrajectoryPage> page = run->Trajectory(everything);
  FUZZ_CHECK(page.ok(), "trajectory: %s", page.status().ToString().c_str());
  const v1::GetTrajectoryResponse& t = page->response;
  for (int i = 1; i < t.points_size(); ++i) {
    FUZZ_CHECK(t.points(i).step() > t.points(i - 1).step(), "point %d at step %llu", i,
               static_cast<unsigned long long>(t.points(i).step()));
  }
  for (int i = 0; i < t.directives_size(); ++i) {
    FUZZ_CHECK(t.directives(i).version() == static_cast<uint64_t>(i) + 1, "directive %d", i);
  }
  run->End();  // before the restored twin registers the same run's series
  if (persistent) {
    absl::StatusOr<std::vector<LoadedRun>> loaded = LoadState(*memory);
    FUZZ_CHECK(loaded.ok() && loaded->size() == 1, "%s", loaded.status().ToString().c_str());
    absl::StatusOr<std::shared_ptr<Run>> restored = Run::Restore(std::move(loaded->front()), deps);
    FUZZ_CHECK(restored.ok(), "%s", restored.status().ToString().c_str());
    const std::string before = Describe(info), after = Describe((*restored)->Info());
    FUZZ_CHECK(before == after, "restored %s, was %s", after.c_str(), before.c_str());
    (*restored)->End();
  }
  env.pool.Drain();
  env.committer.Flush();
}

}  // namespace
}  // namespace spotter

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spotter::Run1(data, size);
  return 0;
}
