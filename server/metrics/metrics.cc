#include "server/metrics/metrics.h"

#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/time/clock.h"

namespace spotter {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Family;
using prometheus::Gauge;

constexpr Phase kPhases[] = {Phase::kAcquisition, Phase::kRefinement, Phase::kPolish, Phase::kDone};

// Name, help and the extra label (phase) of each per-run series, by slot.
struct SlotSpec {
  const char* name;
  const char* help;
  const char* phase;  // nullptr: no phase label
};

constexpr char kPhaseHelp[] = "1 for the run's current phase, 0 for the others.";

// Indexed by RunMetricsExporter::Slot.
constexpr SlotSpec kSlots[] = {
    {"spotter_run_effective_rank",
     "r90 of the gradient covariance: eigenvalues holding 90% of the trace.", nullptr},
    {"spotter_run_effective_rank_lower",
     "Lower end of the sketch bound of spotter_run_effective_rank (what the sketch certifies "
     "for the window's covariance; not an error bar: see the _ci_ series).",
     nullptr},
    {"spotter_run_effective_rank_upper",
     "Upper end of the sketch bound of spotter_run_effective_rank.", nullptr},
    {"spotter_run_effective_rank_ci_lower",
     "Lower end of the 90% sampling confidence interval of spotter_run_effective_rank.",
     nullptr},
    {"spotter_run_effective_rank_ci_upper",
     "Upper end of the 90% sampling confidence interval of spotter_run_effective_rank.",
     nullptr},
    {"spotter_run_rank_fraction", "r90 divided by the sketch size l.", nullptr},
    {"spotter_run_participation_ratio",
     "Participation ratio (intrinsic dimension) of the gradient covariance, bias-corrected.",
     nullptr},
    {"spotter_run_participation_ratio_lower",
     "Lower end of the participation ratio's sketch bound (what the sketch certifies; not an "
     "error bar: see the _ci_ series).",
     nullptr},
    {"spotter_run_participation_ratio_upper",
     "Upper end of the participation ratio's sketch bound (+Inf when censored).", nullptr},
    {"spotter_run_participation_ratio_ci_lower",
     "Lower end of the participation ratio's 90% confidence interval (sampling and "
     "projection error, widened by the sketch bound).",
     nullptr},
    {"spotter_run_participation_ratio_ci_upper",
     "Upper end of the participation ratio's 90% confidence interval.", nullptr},
    {"spotter_run_gradient_trace", "Trace of the gradient covariance, per sample.", nullptr},
    {"spotter_run_top_eigenvalue", "Largest eigenvalue of the gradient covariance, per sample.",
     nullptr},
    {"spotter_run_noise_scale", "Gradient noise scale B_simple = tr(Sigma) / |G|^2, in examples.",
     nullptr},
    {"spotter_run_step", "Step of the run's latest evaluation.", nullptr},
    {"spotter_run_loss", "Mean training loss over the last evaluation interval.", nullptr},
    {"spotter_run_learning_rate", "Learning rate the trainers reported.", nullptr},
    {"spotter_run_val_metric", "Latest validation metric the polish phase watches.", nullptr},
    {"spotter_run_directive_version", "Version of the run's latest directive.", nullptr},
    {"spotter_run_directive_effective_step",
     "Step from which the run's latest directive is in force on every rank.", nullptr},
    {"spotter_run_directive_decision_step",
     "Step of the evaluation or report that decided the run's latest directive; the effective "
     "step trails it by the delivery margin.",
     nullptr},
    {"spotter_run_phase", kPhaseHelp, "acquisition"},
    {"spotter_run_phase", kPhaseHelp, "refinement"},
    {"spotter_run_phase", kPhaseHelp, "polish"},
    {"spotter_run_phase", kPhaseHelp, "done"},
    {"spotter_run_rollbacks",
     "Natural-gradient switches of the run rolled back (the loss failed the switch's guard).",
     nullptr},
};
static_assert(std::size(kSlots) == RunMetricsExporter::kNumSlots);

}  // namespace

RunMetricsExporter::RunMetricsExporter(prometheus::Registry& registry,
                                       const RunSeriesOptions& options)
    : options_(options),
      exported_gauge_(BuildGauge()
                          .Name("spotter_metrics_runs_exported")
                          .Help("Runs whose per-run series are exported now.")
                          .Register(registry)
                          .Add({})),
      dropped_(BuildCounter()
                   .Name("spotter_metrics_runs_dropped_total")
                   .Help("Times a run was left off /metrics because the cap on exported runs "
                         "(--metrics_max_runs) was reached.")
                   .Register(registry)
                   .Add({})),
      expired_(BuildCounter()
                   .Name("spotter_metrics_runs_expired_total")
                   .Help("Times a run's series were removed after --metrics_run_ttl without an "
                         "update.")
                   .Register(registry)
                   .Add({})) {
  for (int i = 0; i < kNumSlots; ++i) {
    families_[i] = &BuildGauge().Name(kSlots[i].name).Help(kSlots[i].help).Register(registry);
  }
  if (options_.sweep_interval > absl::ZeroDuration() && options_.idle_ttl > absl::ZeroDuration()) {
    sweeper_ = std::thread([this] { SweepLoop(); });
  }
}

RunMetricsExporter::~RunMetricsExporter() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (sweeper_.joinable()) sweeper_.join();
}

void RunMetricsExporter::SweepLoop() {
  absl::MutexLock l(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.sweep_interval)) {
    SweepIdleLocked();
  }
}

int RunMetricsExporter::SweepIdle() {
  absl::MutexLock l(&mu_);
  return SweepIdleLocked();
}

int RunMetricsExporter::SweepIdleLocked() {
  if (options_.idle_ttl <= absl::ZeroDuration()) return 0;
  const absl::Time now = options_.clock->Now();
  int removed = 0;
  for (Entry* e : entries_) {
    if (e->exported && now - e->last_update >= options_.idle_ttl) {
      UnexportLocked(e);
      expired_.Increment();
      ++removed;
    }
  }
  return removed;
}

size_t RunMetricsExporter::exported() const {
  absl::MutexLock l(&mu_);
  return exported_;
}

void RunMetricsExporter::Add(Entry* e) {
  absl::MutexLock l(&mu_);
  entries_.insert(e);
  TouchLocked(e);
}

void RunMetricsExporter::Remove(Entry* e) {
  absl::MutexLock l(&mu_);
  if (e->exported) UnexportLocked(e);
  entries_.erase(e);
}

void RunMetricsExporter::TouchLocked(Entry* e) {
  e->last_update = options_.clock->Now();
  if (!e->exported) {
    if (options_.max_runs != 0 && exported_ >= options_.max_runs) {
      if (!e->dropped) dropped_.Increment();
      e->dropped = true;
      return;
    }
    ExportLocked(e);
  }
  for (int i = 0; i < kNumSlots; ++i) e->gauges[i]->Set(e->values[i]);
}

void RunMetricsExporter::ExportLocked(Entry* e) {
  for (int i = 0; i < kNumSlots; ++i) {
    prometheus::Labels labels{{"run", e->run}};
    if (kSlots[i].phase != nullptr) labels["phase"] = kSlots[i].phase;
    e->gauges[i] = &families_[i]->Add(labels);
  }
  e->exported = true;
  e->dropped = false;
  ++exported_;
  exported_gauge_.Set(static_cast<double>(exported_));
}

void RunMetricsExporter::UnexportLocked(Entry* e) {
  for (int i = 0; i < kNumSlots; ++i) {
    families_[i]->Remove(e->gauges[i]);
    e->gauges[i] = nullptr;
  }
  e->exported = false;
  --exported_;
  exported_gauge_.Set(static_cast<double>(exported_));
}

const prometheus::Histogram::BucketBoundaries& ServerMetrics::kLatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  return *b;
}

ServerMetrics::ServerMetrics(prometheus::Registry& registry, const RunSeriesOptions& run_series)
    : build_info(BuildGauge()
                     .Name("spotter_build_info")
                     .Help("1, labelled with the version of the running spotterd.")
                     .Register(registry)
                     .Add({{"version", SPOTTER_VERSION_STRING}})),
      uploads(BuildCounter()
                  .Name("spotter_uploads_total")
                  .Help("Sketch batches applied to a run.")
                  .Register(registry)
                  .Add({})),
      rows(BuildCounter()
               .Name("spotter_rows_total")
               .Help("Gradient-sample rows applied to a run.")
               .Register(registry)
               .Add({})),
      bytes(BuildCounter()
                .Name("spotter_received_bytes_total")
                .Help("Bytes of sketch data applied to a run.")
                .Register(registry)
                .Add({})),
      duplicates(BuildCounter()
                     .Name("spotter_duplicate_uploads_total")
                     .Help("Uploads dropped because their seq was already applied (replays).")
                     .Register(registry)
                     .Add({})),
      restarts(BuildCounter()
                   .Name("spotter_trainer_restarts_total")
                   .Help("Trainer processes that rejoined a run as a new incarnation after it "
                         "had applied data (a job restarted from a checkpoint).")
                   .Register(registry)
                   .Add({})),
      eval_reports(BuildCounter()
                       .Name("spotter_eval_reports_total")
                       .Help("Validation reports applied to a run.")
                       .Register(registry)
                       .Add({})),
      directives(BuildCounter()
                     .Name("spotter_directives_total")
                     .Help("Directives issued, all runs.")
                     .Register(registry)
                     .Add({})),
      rollbacks(BuildCounter()
                    .Name("spotter_rollbacks_total")
                    .Help("Natural-gradient switches rolled back because the loss rose past its "
                          "margin or went non-finite, all runs.")
                    .Register(registry)
                    .Add({})),
      nonfinite_losses(BuildCounter()
                           .Name("spotter_nonfinite_losses_total")
                           .Help("Uploads whose trainer reported a NaN or infinite loss "
                                 "(loss_non_finite; the divergence signal), all runs.")
                           .Register(registry)
                           .Add({})),
      runs_expired(BuildCounter()
                       .Name("spotter_runs_expired_total")
                       .Help("Finished runs deleted, with their history, because they finished "
                             "longer ago than --finished_run_ttl.")
                       .Register(registry)
                       .Add({})),
      evaluations(BuildCounter()
                      .Name("spotter_evaluations_total")
                      .Help("Spectral evaluations completed.")
                      .Register(registry)
                      .Add({})),
      eval_dropped(BuildCounter()
                       .Name("spotter_evaluations_deferred_total")
                       .Help("Evaluations deferred because the evaluation queue was full.")
                       .Register(registry)
                       .Add({})),
      eval_duration(
          BuildHistogram()
              .Name("spotter_eval_duration_seconds")
              .Help("Time to merge the rank sketches of a run and summarise them.")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                               0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                               5})),
      runs_active(BuildGauge()
                      .Name("spotter_runs")
                      .Help("Runs held, by state.")
                      .Register(registry)
                      .Add({{"state", "active"}})),
      runs_finished(BuildGauge()
                        .Name("spotter_runs")
                        .Help("Runs held, by state.")
                        .Register(registry)
                        .Add({{"state", "finished"}})),
      streams(BuildGauge()
                  .Name("spotter_streams")
                  .Help("Open streams, by kind.")
                  .Register(registry)
                  .Add({{"kind", "connect"}})),
      watchers(BuildGauge()
                   .Name("spotter_streams")
                   .Help("Open streams, by kind.")
                   .Register(registry)
                   .Add({{"kind", "watch"}})),
      rejects_(BuildCounter()
                   .Name("spotter_rejects_total")
                   .Help("Messages and requests rejected, by reason.")
                   .Register(registry)),
      rpc_duration_(BuildHistogram()
                        .Name("spotter_rpc_duration_seconds")
                        .Help("Time to handle a unary RPC or one stream message, by method.")
                        .Register(registry)),
      store_duration_(BuildHistogram()
                          .Name("spotter_store_duration_seconds")
                          .Help("Time of one operation of the persistent store, by operation.")
                          .Register(registry)),
      backups_ok_(BuildCounter()
                      .Name("spotter_backups_total")
                      .Help("Online backups of the state file, by result.")
                      .Register(registry)
                      .Add({{"result", "ok"}})),
      backups_failed_(BuildCounter()
                          .Name("spotter_backups_total")
                          .Help("Online backups of the state file, by result.")
                          .Register(registry)
                          .Add({{"result", "failed"}})),
      backup_bytes_(BuildCounter()
                        .Name("spotter_backup_bytes_total")
                        .Help("Bytes of the state-file backups sent to clients in full.")
                        .Register(registry)
                        .Add({})),
      backup_duration_(
          BuildHistogram()
              .Name("spotter_backup_duration_seconds")
              .Help("Time of a successful backup, from its start to the last byte "
                    "sent.")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30,
                                                               60, 300, 900, 3600})),
      backup_last_success_(BuildGauge()
                               .Name("spotter_backup_last_success_timestamp_seconds")
                               .Help("Unix time of the last successful backup; 0 before one.")
                               .Register(registry)
                               .Add({})),
      heap_(BuildGauge()
                .Name("spotter_heap_bytes")
                .Help("The allocator's heap by state: in_use (allocated, not freed) and free "
                      "(freed, kept by the allocator for reuse: resident, not a leak). Sampled "
                      "every --heap_sample_interval.")
                .Register(registry)),
      heap_in_use_(heap_.Add({{"state", "in_use"}})),
      heap_free_(heap_.Add({{"state", "free"}})),
      runs_(std::make_unique<RunMetricsExporter>(registry, run_series)) {
  build_info.Set(1);
}

void ServerMetrics::SetHeap(double in_use, double free) {
  heap_in_use_.Set(in_use);
  heap_free_.Set(free);
}

void ServerMetrics::ObserveBackup(bool ok, uint64_t bytes, double seconds) {
  if (!ok) {
    backups_failed_.Increment();
    return;
  }
  backups_ok_.Increment();
  backup_bytes_.Increment(static_cast<double>(bytes));
  backup_duration_.Observe(seconds);
  backup_last_success_.Set(absl::ToUnixMicros(absl::Now()) / 1e6);
}

RunMetrics::RunMetrics(RunMetricsExporter& exporter, const std::string& run)
    : exporter_(exporter), entry_(std::make_unique<RunMetricsExporter::Entry>()) {
  entry_->run = run;
  entry_->values.fill(std::nan(""));
  exporter_.Add(entry_.get());
}

RunMetrics::~RunMetrics() { exporter_.Remove(entry_.get()); }

void RunMetrics::SetSummary(const SpectrumSummary& c, double noise_scale) {
  using E = RunMetricsExporter;
  exporter_.Update(entry_.get(), [&](auto& v) {
    v[E::kEffectiveRank] = c.effective_rank.value;
    v[E::kEffectiveRankLower] = c.effective_rank.lower;
    v[E::kEffectiveRankUpper] = c.effective_rank.upper;
    v[E::kEffectiveRankCiLower] = c.effective_rank.ci_lower;
    v[E::kEffectiveRankCiUpper] = c.effective_rank.ci_upper;
    v[E::kRankFraction] = c.rank_fraction.value;
    v[E::kParticipationRatio] = c.participation_ratio.value;
    v[E::kParticipationRatioLower] = c.participation_ratio.lower;
    v[E::kParticipationRatioUpper] = c.participation_ratio.upper;
    v[E::kParticipationRatioCiLower] = c.participation_ratio.ci_lower;
    v[E::kParticipationRatioCiUpper] = c.participation_ratio.ci_upper;
    v[E::kGradientTrace] = c.trace;
    v[E::kTopEigenvalue] = c.top_eigenvalue.value;
    v[E::kNoiseScale] = noise_scale;
  });
}

void RunMetrics::SetTraining(uint64_t step, double loss, double lr) {
  using E = RunMetricsExporter;
  exporter_.Update(entry_.get(), [&](auto& v) {
    v[E::kStep] = static_cast<double>(step);
    v[E::kLoss] = loss;
    v[E::kLearningRate] = lr;
  });
}

void RunMetrics::SetValMetric(double value) {
  exporter_.Update(entry_.get(), [&](auto& v) { v[RunMetricsExporter::kValMetric] = value; });
}

void RunMetrics::SetPhase(Phase phase, uint64_t version, uint64_t effective_step,
                          uint64_t decision_step) {
  using E = RunMetricsExporter;
  exporter_.Update(entry_.get(), [&](auto& v) {
    for (Phase p : kPhases) {
      v[E::kPhaseAcquisition + static_cast<int>(p)] = p == phase ? 1.0 : 0.0;
    }
    v[E::kDirectiveVersion] = static_cast<double>(version);
    v[E::kDirectiveEffectiveStep] = static_cast<double>(effective_step);
    v[E::kDirectiveDecisionStep] = static_cast<double>(decision_step);
  });
}

void RunMetrics::SetRollbacks(int rollbacks) {
  exporter_.Update(entry_.get(), [&](auto& v) {
    v[RunMetricsExporter::kRollbacks] = static_cast<double>(rollbacks);
  });
}

}  // namespace spotter
