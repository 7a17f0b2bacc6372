// Prometheus metrics of spotterd (catalogue: docs/METRICS.md). No globals: the
// registry is created by the Server and passed in.
//
// Per-run series are bounded three ways: they are removed when the run ends,
// when the run has not been updated for an idle TTL (they come back at its next
// update), and at most `max_runs` runs are exported at once (a run over the cap
// is counted in spotter_metrics_runs_dropped_total and tried again at its next
// update).
#ifndef SPOTTER_SERVER_METRICS_METRICS_H_
#define SPOTTER_SERVER_METRICS_METRICS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/phase/directive.h"
#include "core/spectrum/summary.h"
#include "core/util/clock.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace spotter {

// How many per-run series /metrics carries, and for how long.
struct RunSeriesOptions {
  // Time source of the idle TTL. Not owned; must outlive the exporter.
  Clock* clock = Clock::Real();
  // A run not updated (no evaluation, directive or validation report) for
  // this long loses its series until its next update. Zero or negative: never
  // (series then live until the run ends).
  absl::Duration idle_ttl = absl::Minutes(30);
  // Most runs exported at once; 0 means no cap.
  size_t max_runs = 1000;
  // Real-time period of the background thread that removes idle series.
  // Zero or negative: no thread; the owner calls SweepIdle() (tests).
  absl::Duration sweep_interval = absl::Seconds(5);
};

class RunMetrics;

// Owns the per-run metric families and decides which runs are exported.
// Thread-safe. Every RunMetrics made from it must be destroyed before it.
class RunMetricsExporter {
 public:
  // Registers the per-run families and the spotter_metrics_runs_* series in
  // `registry` (which must outlive this), and starts the sweep thread unless
  // options.sweep_interval <= 0.
  RunMetricsExporter(prometheus::Registry& registry, const RunSeriesOptions& options);
  // Stops and joins the sweep thread.
  ~RunMetricsExporter();
  RunMetricsExporter(const RunMetricsExporter&) = delete;
  RunMetricsExporter& operator=(const RunMetricsExporter&) = delete;

  // Removes the series of every exported run whose last update is at least
  // idle_ttl old on the clock. Returns how many runs it removed. The sweep
  // thread calls this; tests with a fake clock may call it directly.
  int SweepIdle();

  // Runs whose series are on /metrics now.
  size_t exported() const;

  const RunSeriesOptions& options() const { return options_; }

  // The series of one run, one value each (docs/METRICS.md).
  enum Slot {
    kEffectiveRank,
    kEffectiveRankLower,
    kEffectiveRankUpper,
    kEffectiveRankCiLower,
    kEffectiveRankCiUpper,
    kRankFraction,
    kParticipationRatio,
    kParticipationRatioLower,
    kParticipationRatioUpper,
    kParticipationRatioCiLower,
    kParticipationRatioCiUpper,
    kGradientTrace,
    kTopEigenvalue,
    kNoiseScale,
    kStep,
    kLoss,
    kLearningRate,
    kValMetric,
    kDirectiveVersion,
    kDirectiveEffectiveStep,
    kDirectiveDecisionStep,
    kPhaseAcquisition,  // the four spotter_run_phase{phase=...} series, in Phase order
    kPhaseRefinement,
    kPhasePolish,
    kPhaseDone,
    kRollbacks,  // natural-gradient switches rolled back (docs/PHASES.md)
    kNumSlots,
  };

 private:
  friend class RunMetrics;

  struct Entry {
    std::string run;
    std::array<double, kNumSlots> values;
    std::array<prometheus::Gauge*, kNumSlots> gauges{};  // non-null while exported
    absl::Time last_update;
    bool exported = false;
    bool dropped = false;  // refused by the cap since its last export
  };

  // RunMetrics calls these.
  void Add(Entry* e) ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(Entry* e) ABSL_LOCKS_EXCLUDED(mu_);
  // Applies `set` to e->values, stamps the update and pushes the values out
  // (exporting the run first if it is not exported and the cap allows).
  template <typename F>
  void Update(Entry* e, F set) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    set(e->values);
    TouchLocked(e);
  }

  void TouchLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExportLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnexportLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int SweepIdleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLoop();

  const RunSeriesOptions options_;
  std::array<prometheus::Family<prometheus::Gauge>*, kNumSlots> families_;
  prometheus::Gauge& exported_gauge_;
  prometheus::Counter& dropped_;
  prometheus::Counter& expired_;

  mutable absl::Mutex mu_;
  absl::flat_hash_set<Entry*> entries_ ABSL_GUARDED_BY(mu_);
  size_t exported_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sweeper_;
};

// Server-wide families. Thread-safe (prometheus-cpp metrics are atomic).
class ServerMetrics {
 public:
  // Registers every server family in `registry`, which must outlive this, and
  // owns the exporter of the per-run series (see RunSeriesOptions).
  explicit ServerMetrics(prometheus::Registry& registry,
                         const RunSeriesOptions& run_series = RunSeriesOptions());

  void CountReject(const std::string& reason) { rejects_.Add({{"reason", reason}}).Increment(); }
  void ObserveRpc(const std::string& method, double seconds) {
    rpc_duration_.Add({{"method", method}}, kLatencyBuckets()).Observe(seconds);
  }
  // One operation of the persistent store ("commit", "load", ...), seconds.
  void ObserveStore(const std::string& operation, double seconds) {
    store_duration_.Add({{"operation", operation}}, kLatencyBuckets()).Observe(seconds);
  }
  static const prometheus::Histogram::BucketBoundaries& kLatencyBuckets();
  // A backup that started (the caller was allowed and the server has a state
  // file) and ended: `ok` when the client got the whole file, then its size
  // and the seconds from start to the last byte sent.
  void ObserveBackup(bool ok, uint64_t bytes, double seconds);
  // The allocator's heap (core/util/allocator.h HeapUsage), bytes: sampled
  // by spotterd every --heap_sample_interval.
  void SetHeap(double in_use, double free);

  prometheus::Gauge& build_info;        // 1, {version}
  prometheus::Counter& uploads;          // sketch batches applied
  prometheus::Counter& rows;             // sketch rows applied
  prometheus::Counter& bytes;            // sketch data bytes applied
  prometheus::Counter& duplicates;       // replayed uploads dropped
  prometheus::Counter& restarts;         // trainer restarts (new incarnations)
  prometheus::Counter& eval_reports;     // EvalReports applied
  prometheus::Counter& directives;       // directives issued
  prometheus::Counter& rollbacks;        // natural-gradient switches rolled back
  prometheus::Counter& nonfinite_losses;  // uploads whose loss was NaN or infinite
  prometheus::Counter& evaluations;      // spectral evaluations completed
  prometheus::Counter& runs_expired;     // finished runs deleted by --finished_run_ttl
  prometheus::Counter& eval_dropped;     // evaluations skipped: pool queue full
  prometheus::Histogram& eval_duration;  // seconds per evaluation
  prometheus::Gauge& runs_active;
  prometheus::Gauge& runs_finished;
  prometheus::Gauge& streams;   // open Connect streams
  prometheus::Gauge& watchers;  // open WatchRun streams

  // Where RunMetrics register; outlives every run of the server.
  RunMetricsExporter& runs() { return *runs_; }

 private:
  prometheus::Family<prometheus::Counter>& rejects_;
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
  prometheus::Family<prometheus::Histogram>& store_duration_;
  prometheus::Counter& backups_ok_;
  prometheus::Counter& backups_failed_;
  prometheus::Counter& backup_bytes_;
  prometheus::Histogram& backup_duration_;
  prometheus::Gauge& backup_last_success_;
  prometheus::Family<prometheus::Gauge>& heap_;
  prometheus::Gauge& heap_in_use_;
  prometheus::Gauge& heap_free_;
  std::unique_ptr<RunMetricsExporter> runs_;
};

// Per-run gauges labelled {run="<name>"}, all NaN until first set. Removes its
// series on destruction (when the run finishes or is deleted); the exporter
// also removes them while the run is idle, and may leave the run off /metrics
// when its cap is reached (see RunSeriesOptions). Thread-safe.
class RunMetrics {
 public:
  // `exporter` must outlive this.
  RunMetrics(RunMetricsExporter& exporter, const std::string& run);
  ~RunMetrics();
  RunMetrics(const RunMetrics&) = delete;
  RunMetrics& operator=(const RunMetrics&) = delete;

  void SetSummary(const SpectrumSummary& covariance, double noise_scale);
  void SetTraining(uint64_t step, double loss, double lr);
  void SetValMetric(double value);
  // The phase of the latest directive, its version, the step it is in force
  // from and the step that decided it.
  void SetPhase(Phase phase, uint64_t directive_version, uint64_t effective_step,
                uint64_t decision_step);
  // Natural-gradient switches of the run rolled back so far.
  void SetRollbacks(int rollbacks);

 private:
  RunMetricsExporter& exporter_;
  std::unique_ptr<RunMetricsExporter::Entry> entry_;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_METRICS_METRICS_H_
