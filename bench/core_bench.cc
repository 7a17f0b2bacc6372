// Core micro-benchmarks (docs/PERFORMANCE.md, "Core: Frequent Directions").
//
//   BM_Gemm                 this machine's single-core Eigen float GEMM rate
//   BM_FdIngest/k/l         FrequentDirections::Append of 64-row messages,
//                           steady state: rows/s, nominal GFLOP/s (8 l k flops
//                           per row) and efficiency = nominal / GEMM rate
//   BM_AccumulatorIngest    the same through RankAccumulator::Add (batch
//                           centring, traces, means sketch, decay), and the
//                           rounding bound rho / trace in that steady state
//   BM_Summarize/k/l        Summarize of a full window (covariance + second
//                           moment)
//   BM_Merge/k/l/ranks      MergeAll of the ranks' snapshots
//   BM_EvaluateRanks        one server evaluation: merge, summarise, per-rank
//                           summaries, divergence rule
//   BM_AccumulatorMemory    heap bytes a RankAccumulator holds between calls
//                           (resident) and at most during one (peak), against
//                           the budget 2 l k 4 + 256 KiB
//
// The GEMM rate is measured once per process (best thread-CPU time of 15
// runs of a 512 x 512 x 512 product) and shared by every efficiency counter,
// so the ratio compares runs of the same binary on the same core; all rates
// are per CPU-second. Run with --benchmark_repetitions to see the spread on
// a busy machine.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/spectrum/evaluation.h"
#include "core/spectrum/frequent_directions.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"

// ---------------------------------------------------------------------------
// Heap accounting: malloc and friends are interposed (glibc: the executable's
// definitions win; __libc_* are the real allocator) and live / peak bytes
// counted with malloc_usable_size. Eigen and the standard library both
// allocate through malloc.
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void __libc_free(void*);
void* __libc_memalign(size_t, size_t);
}

namespace {
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

void Track(void* p) {
  if (!p) return;
  const int64_t now = g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) +
                      static_cast<int64_t>(malloc_usable_size(p));
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void Untrack(void* p) {
  if (p) g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
}
}  // namespace

extern "C" {
void* malloc(size_t n) {
  void* p = __libc_malloc(n);
  Track(p);
  return p;
}
void* calloc(size_t n, size_t s) {
  void* p = __libc_calloc(n, s);
  Track(p);
  return p;
}
void* realloc(void* old, size_t n) {
  Untrack(old);
  void* p = __libc_realloc(old, n);
  Track(p ? p : (n == 0 ? nullptr : old));
  return p;
}
void free(void* p) {
  Untrack(p);
  __libc_free(p);
}
void* memalign(size_t a, size_t n) {
  void* p = __libc_memalign(a, n);
  Track(p);
  return p;
}
void* aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void** out, size_t a, size_t n) {
  *out = memalign(a, n);
  return *out ? 0 : 12;  // ENOMEM
}
}

namespace spotter {
namespace {

// CPU time of the calling thread: Google Benchmark's rate counters divide by
// CPU time too, so the efficiency compares like with like on a busy machine.
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Single-core float GEMM rate (flop/s), best of 15: the reference every
// efficiency is a fraction of.
double GemmRate() {
  static const double rate = [] {
    const int n = 512;
    Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
    c.noalias() = a * b;  // warm up
    double best = 1e30;
    for (int r = 0; r < 15; ++r) {
      const double t0 = ThreadCpuSeconds();
      c.noalias() = a * b;
      benchmark::DoNotOptimize(c.data());
      best = std::min(best, ThreadCpuSeconds() - t0);
    }
    return 2.0 * n * n * n / best;
  }();
  return rate;
}

void BM_Gemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * n * n * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["best_GFLOPS"] = GemmRate() / 1e9;
}
BENCHMARK(BM_Gemm)->Arg(512)->Unit(benchmark::kMillisecond);

// Rows shaped like gradient sketches: a decaying spectrum with dense
// directions (column j scaled by 1 / (1 + j / 16), then mixed by the
// message's random signs).
RowMatrixXf Message(int rows, int k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01;
  RowMatrixXf x(rows, k);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < k; ++j) x(i, j) = n01(rng) / (1.0f + j / 16.0f);
  return x;
}

constexpr int kMessageRows = 64;

void SetIngestCounters(benchmark::State& state, int k, int l) {
  const double rows = static_cast<double>(state.iterations()) * kMessageRows;
  state.counters["rows_per_s"] = benchmark::Counter(rows, benchmark::Counter::kIsRate);
  state.counters["nominal_GFLOPS"] =
      benchmark::Counter(rows * 8.0 * l * k / 1e9, benchmark::Counter::kIsRate);
  // Efficiency: the nominal rate over the GEMM rate; a rate counter divided
  // by a constant stays a rate.
  state.counters["efficiency"] =
      benchmark::Counter(rows * 8.0 * l * k / GemmRate(), benchmark::Counter::kIsRate);
}

void BM_FdIngest(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), l = static_cast<int>(state.range(1));
  GemmRate();
  FrequentDirections fd(k, l);
  std::vector<RowMatrixXf> messages;
  for (int m = 0; m < 4; ++m) messages.push_back(Message(kMessageRows, k, m));
  for (int m = 0; m < 8; ++m) fd.Append(messages[m % 4]);  // reach steady state
  size_t i = 0;
  for (auto _ : state) fd.Append(messages[i++ % messages.size()]);
  SetIngestCounters(state, k, l);
}
BENCHMARK(BM_FdIngest)
    ->ArgsProduct({{256, 1024, 4096}, {32, 64, 128}})
    ->Unit(benchmark::kMillisecond);

void BM_AccumulatorIngest(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), l = static_cast<int>(state.range(1));
  GemmRate();
  WindowOptions w;
  w.decay = 0.99;
  RankAccumulator acc(k, l, w);
  std::vector<RowMatrixXf> messages;
  for (int m = 0; m < 4; ++m) messages.push_back(Message(kMessageRows, k, m));
  uint64_t step = 0;
  for (int m = 0; m < 8; ++m) acc.Add(step++, messages[m % 4], 1.0);
  for (auto _ : state) {
    acc.Add(step, messages[step % 4], 1.0);
    ++step;
  }
  SetIngestCounters(state, k, l);
  // The certified rounding bound of the covariance sketch in this decayed
  // steady state, relative to the trace (docs/DIAGNOSTICS.md, "Float32
  // rounding").
  const SketchSpectrum sk = MergeAll(acc.Snapshot(step - 1)).centred.Spectrum();
  state.counters["rho_over_trace"] = sk.rounding / sk.trace;
}
BENCHMARK(BM_AccumulatorIngest)->ArgsProduct({{4096}, {64}})->Unit(benchmark::kMillisecond);

GradientMoments FullWindow(int k, int l, uint64_t seed) {
  WindowOptions w;
  w.decay = 0.99;
  RankAccumulator acc(k, l, w);
  for (uint64_t s = 0; s < 12; ++s) acc.Add(s, Message(kMessageRows / 2, k, seed + s), 1.0);
  return MergeAll(acc.Snapshot(11));
}

void BM_Summarize(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), l = static_cast<int>(state.range(1));
  const GradientMoments m = FullWindow(k, l, 1);
  SpectrumOptions o;
  o.dim = k;
  o.sketch_rows = l;
  for (auto _ : state) benchmark::DoNotOptimize(Summarize(m, o));
}
BENCHMARK(BM_Summarize)
    ->ArgsProduct({{256, 1024, 4096}, {32, 64, 128}})
    ->Unit(benchmark::kMillisecond);

void BM_Merge(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), l = static_cast<int>(state.range(1));
  const int ranks = static_cast<int>(state.range(2));
  std::vector<GradientMoments> windows;
  for (int r = 0; r < ranks; ++r) windows.push_back(FullWindow(k, l, 100 * r));
  for (auto _ : state) benchmark::DoNotOptimize(MergeAll(windows));
  state.counters["ranks_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * ranks, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Merge)->ArgsProduct({{1024, 4096}, {64}, {8}})->Unit(benchmark::kMillisecond);

// One evaluation of an 8-rank run as the server does it: merge, summarise,
// per-rank covariance summaries and the divergence rule.
void BM_EvaluateRanks(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), l = static_cast<int>(state.range(1));
  const int ranks = static_cast<int>(state.range(2));
  std::vector<RankWindow> windows;
  for (int r = 0; r < ranks; ++r) {
    windows.push_back({static_cast<uint32_t>(r), {FullWindow(k, l, 100 * r)}});
  }
  SpectrumOptions o;
  o.dim = k;
  o.sketch_rows = l;
  for (auto _ : state) benchmark::DoNotOptimize(EvaluateRanks(windows, o, DivergenceOptions()));
}
BENCHMARK(BM_EvaluateRanks)->ArgsProduct({{1024, 4096}, {64}, {8}})->Unit(benchmark::kMillisecond);

// Heap bytes of one RankAccumulator (exponential window): resident between
// calls once the sketches are full, and the peak during Add (the shrink's
// workspace included), both relative to the heap before it was created.
void BM_AccumulatorMemory(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), l = static_cast<int>(state.range(1));
  const RowMatrixXf message = Message(kMessageRows, k, 5);
  int64_t resident = 0, peak = 0;
  for (auto _ : state) {
    const int64_t base = g_live.load();
    {
      WindowOptions w;
      w.decay = 0.99;
      RankAccumulator acc(k, l, w);
      g_peak.store(g_live.load());
      for (uint64_t s = 0; s < 40; ++s) acc.Add(s, message, 1.0);
      resident = g_live.load() - base;
      peak = g_peak.load() - base;
      benchmark::DoNotOptimize(acc.last_step());
    }
  }
  const double budget = 2.0 * l * k * 4 + 256.0 * 1024;
  state.counters["resident_KiB"] = resident / 1024.0;
  state.counters["peak_KiB"] = peak / 1024.0;
  state.counters["budget_KiB"] = budget / 1024.0;
  state.counters["resident_over_budget"] = resident / budget;
}
BENCHMARK(BM_AccumulatorMemory)
    ->ArgsProduct({{256, 1024, 4096}, {32, 64, 128}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace spotter

BENCHMARK_MAIN();
