// Writes the seed corpora of the fuzz targets (checked in under
// tests/fuzz/corpus/<target>/). Run by hand when a target's input format
// changes:   build/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/phase/controller.h"
#include "core/phase/controller_codec.h"
#include "core/spectrum/accumulator_codec.h"
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
#include "spotter/v1/spotter.pb.h"
#include "tests/fuzz/run_env.h"

namespace spotter {
namespace {

class Bytes {
 public:
  template <typename T>
  Bytes& Put(T v) {
    s_.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Bytes& Chunk(const std::string& c) {
    Put<uint16_t>(static_cast<uint16_t>(c.size()));
    s_ += c;
    return *this;
  }
  Bytes& Raw(const std::string& c) {
    s_ += c;
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

void Write(const std::filesystem::path& dir, const std::string& name, const std::string& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

v1::ConnectRequest Sketch(uint64_t seq, uint64_t step, int rows, int cols, std::mt19937_64& rng,
                          float scale = 1.0f) {
  v1::ConnectRequest r;
  v1::SketchBatch* b = r.mutable_sketch();
  b->set_seq(seq);
  b->set_step(step);
  b->set_rows(rows);
  b->set_cols(cols);
  std::normal_distribution<float> n(0.0f, scale);
  std::string data;
  for (int i = 0; i < rows * cols; ++i) {
    const float v = n(rng) / (1.0f + static_cast<float>(i % cols));
    data.append(reinterpret_cast<const char*>(&v), 4);
  }
  b->set_data(data);
  b->set_loss(1.0 / (1.0 + step));
  b->set_lr(0.05);
  return r;
}

void TrainerMessages(const std::filesystem::path& dir) {
  std::mt19937_64 rng(1);
  for (int variant = 0; variant < 6; ++variant) {
    const uint64_t k = 4 + variant, l = 2 + variant % 3;
    Bytes b;
    // InRange(2, 16) of k, InRange(2, k) of l: values v with v % range = want.
    b.Put<uint64_t>(k - 2).Put<uint64_t>(l - 2).Put<uint8_t>(variant % 2);
    b.Put<uint32_t>(0xC0000000u).Put<uint64_t>(7).Put<uint64_t>(variant % 3);  // decay, steps, eval
    b.Put<uint64_t>(0).Put<uint64_t>(200).Put<uint8_t>(variant < 3);  // world 1, steps, persist
    b.Put<uint64_t>(2);                                               // checkpoint every 3
    v1::ConnectRequest hello;
    hello.mutable_hello()->set_run("fuzz");
    hello.mutable_hello()->mutable_projection()->set_seed(7);
    b.Chunk(hello.SerializeAsString());
    uint64_t seq = 0;
    for (uint64_t step = 0; step < 12; ++step) {
      b.Chunk(Sketch(++seq, step, 3, static_cast<int>(k), rng, variant == 5 ? 1e8f : 1.0f)
                  .SerializeAsString());
      if (step % 4 == 3) {
        v1::ConnectRequest e;
        e.mutable_eval()->set_seq(++seq);
        e.mutable_eval()->set_step(step);
        (*e.mutable_eval()->mutable_metrics())["val_loss"] = 1.0 / (step + 1);
        b.Chunk(e.SerializeAsString());
      }
      if (variant == 4 && step == 6) {
        b.Chunk(Sketch(seq, step, 3, static_cast<int>(k), rng).SerializeAsString());  // replay
        v1::ConnectRequest hb;
        hb.mutable_heartbeat()->set_step(step + 1);
        b.Chunk(hb.SerializeAsString());
      }
    }
    Write(dir, "seq" + std::to_string(variant), b.str());
  }
}

void ControllerOps(const std::filesystem::path& dir) {
  std::mt19937_64 rng(2);
  for (int variant = 0; variant < 6; ++variant) {
    Bytes b;
    b.Put<uint64_t>(999).Put<uint64_t>(99).Put<uint32_t>(1u << 30).Put<uint32_t>(1u << 31);
    b.Put<uint64_t>(63).Put<uint32_t>(1u << 28).Put<uint64_t>(2).Put<uint64_t>(1);
    b.Put<uint64_t>(20).Put<uint32_t>(1u << 31).Put<uint32_t>(1u << 20).Put<uint64_t>(2);
    b.Put<uint8_t>(variant & 1);
    for (int i = 0; i < 80; ++i) {
      const uint8_t op = i % 9 == 8 ? static_cast<uint8_t>(3 + variant % 5) : 0x40;
      b.Put<uint8_t>(op).Put<uint64_t>(10).Put<uint64_t>(3);
      if ((op & 7) <= 2) {
        b.Put<double>(5.0 * std::exp(-0.01 * i)).Put<double>(i < 40 ? 20 - i * 0.4 : 3);
        b.Put<uint8_t>(0).Put<double>(i < 40 ? 10 - i * 0.2 : 2);
      } else if ((op & 7) == 3) {
        b.Put<double>(1.0 + 0.01 * (rng() % 3));
      } else {
        b.Put<uint8_t>(static_cast<uint8_t>(rng())).Put<uint8_t>(static_cast<uint8_t>(rng()));
      }
    }
    Write(dir, "ops" + std::to_string(variant), b.str());
  }
}

void FdInputs(const std::filesystem::path& dir) {
  std::mt19937_64 rng(3);
  for (int variant = 0; variant < 8; ++variant) {
    std::string s(64 + 256 * variant, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    Write(dir, "random" + std::to_string(variant), s);
  }
}

void Checkpoints(const std::filesystem::path& dir) {
  std::mt19937_64 rng(4);
  // Accumulators, encoded with the parameters the target decodes with.
  for (int variant = 0; variant < 4; ++variant) {
    const int dim = 3 + variant, rows = 2;
    WindowOptions w;
    w.kind = variant % 2 ? WindowKind::kFixed : WindowKind::kExponential;
    w.decay = variant < 2 ? 0.9 : 1.0;
    w.window_steps = 5;
    RankAccumulator acc(dim, rows, w);
    std::normal_distribution<float> n;
    for (uint64_t step = 0; step < 20; ++step) {
      RowMatrixXf m(3, dim);
      for (int i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
      acc.Add(step, m, 1.0);
    }
    Bytes b;
    b.Put<uint8_t>(0).Put<uint64_t>(dim - 1).Put<uint64_t>(rows - 1);
    b.Put<uint8_t>(variant % 2).Put<uint8_t>(variant < 2).Put<uint64_t>(4);
    b.Chunk(EncodeRankAccumulator(acc));
    Write(dir, "accumulator" + std::to_string(variant), b.str());
  }
  // Controller states.
  for (int variant = 0; variant < 3; ++variant) {
    ControllerConfig c;
    c.window_evals = 2 + variant;
    PhaseController p(c);
    for (uint64_t s = 0; s < 30; ++s) {
      Observation o;
      o.step = 10 * s;
      o.loss = 1.0 / (1 + s);
      o.effective_rank = 5;
      o.participation_ratio = 3;
      p.OnEvaluation(o, o.step + 2);
    }
    if (variant == 2) p.Pin(p.current_plan(), "seed", 400);
    Bytes b;
    b.Put<uint8_t>(1).Put<uint64_t>(c.window_evals - 1);
    b.Chunk(EncodeControllerState(p));
    Write(dir, "controller" + std::to_string(variant), b.str());
  }
  // A stored run, as rows (a store op per row, as the target reads them):
  // one rank, a checkpoint after 2 uploads, then 1 logged upload.
  auto memory = std::make_shared<MemoryStore>();
  fuzz::RunEnv env(memory.get(), 4);
  RunDeps& deps = env.deps;
  deps.persistent = true;
  deps.checkpoint.every_uploads = 2;
  v1::RunConfig requested;
  requested.set_sketch_dim(4);
  requested.set_sketch_rows(2);
  requested.set_eval_every(2);
  requested.set_total_steps(100);
  requested.set_peak_lr(0.1);
  requested.mutable_projection()->set_seed(7);
  std::shared_ptr<Run> run =
      Run::Create("r", *ResolveRunConfig(requested, deps.limits), "", 0, deps);
  struct Nop final : RunObserver {
    void OnDirective(const v1::Directive&) override {}
    void OnPoint(const v1::TrajectoryPoint&) override {}
    void OnTransition(const v1::PhaseTransition&) override {}
    void OnEnded(v1::RunState) override {}
  } nop;
  v1::Hello hello;
  hello.set_run("r");
  hello.mutable_projection()->set_seed(7);
  const RankHandle rank = *run->Join(hello, &nop);
  RowMatrixXf rows;
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    const v1::ConnectRequest r = Sketch(seq, seq, 3, 4, rng);
    DecodeSketch(r.sketch(), 4, deps.limits, &rows);
    bool dup = false;
    run->Ingest(rank, r.sketch(), rows, &dup);
    env.pool.Drain();
  }
  run->Leave(rank.state, &nop);
  env.pool.Drain();
  env.committer.Flush();
  Bytes b;
  b.Put<uint8_t>(2);
  (void)memory->Scan([&](StoredRow&& row) {
    const std::string payload = row.value.substr(1, row.value.size() - 5);
    b.Put<uint8_t>(static_cast<uint8_t>(static_cast<int>(row.table) - 1)).Put<uint8_t>(1);
    b.Put<uint64_t>(row.k1).Put<uint64_t>(row.k2).Chunk(payload).Put<uint8_t>(1);
    return absl::OkStatus();
  });
  Write(dir, "store_run", b.str());
  run->End();
}

}  // namespace
}  // namespace spotter

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_ROOT\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root = argv[1];
  spotter::TrainerMessages(root / "trainer_message");
  spotter::ControllerOps(root / "controller");
  spotter::FdInputs(root / "frequent_directions");
  spotter::Checkpoints(root / "checkpoint");
  return 0;
}
