// Prometheus metrics of spotterd (catalogue: docs/METRICS.md). No globals: the
// registry is created by the Server and passed in.
#ifndef SPOTTER_SERVER_METRICS_H_
#define SPOTTER_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "core/phase/directive.h"
#include "core/spectrum/summary.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace spotter {

// Server-wide families. Thread-safe (prometheus-cpp metrics are atomic).
class ServerMetrics {
 public:
  explicit ServerMetrics(prometheus::Registry& registry);

  void CountReject(const std::string& reason) { rejects_.Add({{"reason", reason}}).Increment(); }
  void ObserveRpc(const std::string& method, double seconds) {
    rpc_duration_.Add({{"method", method}}, kLatencyBuckets()).Observe(seconds);
  }
  static const prometheus::Histogram::BucketBoundaries& kLatencyBuckets();

  prometheus::Counter& uploads;          // sketch batches applied
  prometheus::Counter& rows;             // sketch rows applied
  prometheus::Counter& bytes;            // sketch data bytes applied
  prometheus::Counter& duplicates;       // replayed uploads dropped
  prometheus::Counter& eval_reports;     // EvalReports applied
  prometheus::Counter& directives;       // directives issued
  prometheus::Counter& evaluations;      // spectral evaluations completed
  prometheus::Counter& eval_dropped;     // evaluations skipped: pool queue full
  prometheus::Histogram& eval_duration;  // seconds per evaluation
  prometheus::Gauge& runs_active;
  prometheus::Gauge& runs_finished;
  prometheus::Gauge& streams;            // open Connect streams
  prometheus::Gauge& watchers;           // open WatchRun streams

  prometheus::Registry& registry() { return registry_; }

 private:
  prometheus::Registry& registry_;
  prometheus::Family<prometheus::Counter>& rejects_;
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
};

// Per-run gauges labelled {run="<name>"}. Removes its series on destruction
// (when the run finishes or is deleted) so label cardinality stays bounded.
// Thread-safe.
class RunMetrics {
 public:
  RunMetrics(prometheus::Registry& registry, const std::string& run);
  ~RunMetrics();
  RunMetrics(const RunMetrics&) = delete;
  RunMetrics& operator=(const RunMetrics&) = delete;

  void SetSummary(const SpectrumSummary& covariance, double noise_scale);
  void SetTraining(uint64_t step, double loss, double lr);
  void SetValMetric(double value);
  void SetPhase(Phase phase, uint64_t directive_version);

 private:
  struct Series;
  std::unique_ptr<Series> s_;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_METRICS_H_
