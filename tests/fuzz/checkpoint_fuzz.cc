// Fuzz target: the checkpoint loader. The input is read three ways: as a
// rank checkpoint (core/spectrum/accumulator_codec.h), as a controller state
// (core/phase/controller_codec.h), and as the rows of a state store handed
// to LoadState and Run::Restore (the startup path). Invariants: nothing
// crashes; what decodes re-encodes to the same bytes and keeps working (a
// restored accumulator takes a batch and summarises to finite values); a
// store either restores or fails with DATA_LOSS, nothing else.
#include <cmath>
#include <cstring>
#include <cstdint>
#include <memory>
#include <string>

#include "core/phase/controller_codec.h"
#include "core/spectrum/accumulator_codec.h"
#include "core/util/clock.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"
#include "server/runs/eval_pool.h"
#include "server/runs/run.h"
#include "server/storage/committer.h"
#include "server/storage/records.h"
#include "server/storage/store.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/run_env.h"

namespace spotter {
namespace {

// The format version after the 4-byte magic (0 when too short).
uint32_t FormatVersion(const std::string& bytes) {
  uint32_t v = 0;
  if (bytes.size() >= 8) std::memcpy(&v, bytes.data() + 4, 4);
  return v;
}

void Accumulator(fuzz::FuzzInput& in) {
  const int dim = static_cast<int>(in.InRange(1, 8));
  const int rows = static_cast<int>(in.InRange(1, dim));
  WindowOptions w;
  w.kind = in.U8() & 1 ? WindowKind::kFixed : WindowKind::kExponential;
  w.decay = in.U8() & 1 ? 0.9 : 1.0;
  w.window_steps = in.InRange(1, 16);
  const std::string bytes = in.Chunk();
  absl::StatusOr<RankAccumulator> acc = DecodeRankAccumulator(bytes, dim, rows, w);
  if (!acc.ok()) return;
  if (FormatVersion(bytes) == kRankCheckpointVersion) {
    FUZZ_CHECK(EncodeRankAccumulator(*acc) == bytes, "a decoded checkpoint re-encodes differently");
  } else {
    // An older version re-encodes as the current one, which round-trips.
    const std::string re = EncodeRankAccumulator(*acc);
    absl::StatusOr<RankAccumulator> again = DecodeRankAccumulator(re, dim, rows, w);
    FUZZ_CHECK(again.ok() && EncodeRankAccumulator(*again) == re,
               "an upgraded checkpoint does not round-trip");
  }
  const uint64_t step = acc->empty() ? 0 : acc->last_step();
  acc->Add(step + 1, RowMatrixXf::Ones(2, dim), 1.0);
  for (const GradientMoments& m : acc->Snapshot(step + 2)) {
    for (double e : m.centred.Eigenvalues()) FUZZ_CHECK(std::isfinite(e), "eigenvalue %g", e);
  }
}

void Controller(fuzz::FuzzInput& in) {
  ControllerConfig c;
  c.window_evals = static_cast<int>(in.InRange(1, 6));
  PhaseController controller(c);
  const std::string before = EncodeControllerState(controller);
  const std::string bytes = in.Chunk();
  if (!DecodeControllerState(bytes, &controller).ok()) {
    FUZZ_CHECK(EncodeControllerState(controller) == before, "a failed decode changed the state");
    return;
  }
  if (FormatVersion(bytes) == kControllerStateVersion) {
    FUZZ_CHECK(EncodeControllerState(controller) == bytes,
               "a decoded state re-encodes differently");
  } else {
    // An older version re-encodes as the current one, which round-trips.
    const std::string re = EncodeControllerState(controller);
    PhaseController again(c);
    FUZZ_CHECK(DecodeControllerState(re, &again).ok() && EncodeControllerState(again) == re,
               "an upgraded state does not round-trip");
  }
  Observation o;
  o.step = 1000000;
  o.loss = 1;
  o.effective_rank = 2;
  o.participation_ratio = 2;
  controller.OnEvaluation(o, o.step + 1);
  controller.OnValidation(o.step, 0.5, o.step + 1);
}

void StoreRows(fuzz::FuzzInput& in) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<StoreOp> ops;
  while (!in.empty() && ops.size() < 64) {
    const Table t = kAllTables[in.U8() % 8];
    const std::string run = in.U8() & 1 ? "r" : "s";
    const uint64_t k1 = in.InRange(0, 3), k2 = in.InRange(0, 5);
    std::string payload = in.Chunk();
    // Mostly well-framed (so that the parsers behind the frame are reached).
    ops.push_back(
        StoreOp::Put(t, run, k1, k2, in.U8() % 8 ? FrameRecord(t, run, k1, k2, payload) : payload));
  }
  if (!store->Apply(ops).ok()) return;
  absl::StatusOr<std::vector<LoadedRun>> loaded = LoadState(*store);
  if (!loaded.ok()) {
    FUZZ_CHECK(loaded.status().code() == absl::StatusCode::kDataLoss, "%s",
               loaded.status().ToString().c_str());
    return;
  }
  NullStore null;
  fuzz::RunEnv env(&null, 4);
  RunDeps& deps = env.deps;
  deps.limits.max_sketch_dim = 64;  // a damaged config must not take gigabytes
  deps.limits.max_sketch_rows = 16;
  deps.limits.max_world_size = 16;
  for (LoadedRun& r : *loaded) {
    absl::StatusOr<std::shared_ptr<Run>> run = Run::Restore(std::move(r), deps);
    if (!run.ok()) {
      FUZZ_CHECK(run.status().code() == absl::StatusCode::kDataLoss, "%s",
                 run.status().ToString().c_str());
      continue;
    }
    (*run)->Info();
    (*run)->End();
  }
}

}  // namespace
}  // namespace spotter

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spotter::fuzz::FuzzInput in(data, size);
  switch (in.U8() % 3) {
    case 0:
      spotter::Accumulator(in);
      break;
    case 1:
      spotter::Controller(in);
      break;
    default:
      spotter::StoreRows(in);
      break;
  }
  return 0;
}
