// What a Run needs outside a Server, for the fuzz targets and the seed maker
// (tests/fuzz/make_seeds.cc): a fake clock, metrics on a private registry
// without idle sweeps, an evaluation pool and a committer over `store`.
// `deps` points at all of them; callers set the rest of RunDeps.
#ifndef SPOTTER_TESTS_FUZZ_RUN_ENV_H_
#define SPOTTER_TESTS_FUZZ_RUN_ENV_H_

#include <cstddef>

#include "absl/time/time.h"
#include "core/util/clock.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"
#include "server/runs/eval_pool.h"
#include "server/runs/run.h"
#include "server/storage/committer.h"
#include "server/storage/store.h"

namespace spotter::fuzz {

struct RunEnv {
  RunEnv(Store* store, size_t pool_capacity)
      : metrics(metrics_registry, SeriesOptions(&clock)), pool(1, pool_capacity), committer(store) {
    deps.clock = &clock;
    deps.pool = &pool;
    deps.metrics = &metrics;
    deps.committer = &committer;
  }

  FakeClock clock;
  prometheus::Registry metrics_registry;
  ServerMetrics metrics;
  EvalPool pool;
  Committer committer;
  RunDeps deps;

 private:
  static RunSeriesOptions SeriesOptions(FakeClock* clock) {
    RunSeriesOptions series;
    series.clock = clock;
    series.idle_ttl = absl::ZeroDuration();
    series.sweep_interval = absl::ZeroDuration();
    return series;
  }
};

}  // namespace spotter::fuzz

#endif  // SPOTTER_TESTS_FUZZ_RUN_ENV_H_
