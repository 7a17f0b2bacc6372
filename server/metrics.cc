#include "server/metrics.h"

#include <cmath>
#include <vector>

namespace spotter {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Family;
using prometheus::Gauge;

constexpr Phase kPhases[] = {Phase::kAcquisition, Phase::kRefinement, Phase::kPolish,
                             Phase::kDone};

Family<Gauge>& RunGauge(prometheus::Registry& r, const char* name, const char* help) {
  return BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

const prometheus::Histogram::BucketBoundaries& ServerMetrics::kLatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  return *b;
}

ServerMetrics::ServerMetrics(prometheus::Registry& registry)
    : uploads(BuildCounter().Name("spotter_uploads_total")
                  .Help("Sketch batches applied to a run.").Register(registry).Add({})),
      rows(BuildCounter().Name("spotter_rows_total")
               .Help("Gradient-sample rows applied to a run.").Register(registry).Add({})),
      bytes(BuildCounter().Name("spotter_received_bytes_total")
                .Help("Bytes of sketch data applied to a run.").Register(registry).Add({})),
      duplicates(BuildCounter().Name("spotter_duplicate_uploads_total")
                     .Help("Uploads dropped because their seq was already applied (replays).")
                     .Register(registry).Add({})),
      eval_reports(BuildCounter().Name("spotter_eval_reports_total")
                       .Help("Validation reports applied to a run.").Register(registry).Add({})),
      directives(BuildCounter().Name("spotter_directives_total")
                     .Help("Directives issued, all runs.").Register(registry).Add({})),
      evaluations(BuildCounter().Name("spotter_evaluations_total")
                      .Help("Spectral evaluations completed.").Register(registry).Add({})),
      eval_dropped(BuildCounter().Name("spotter_evaluations_deferred_total")
                       .Help("Evaluations deferred because the evaluation queue was full.")
                       .Register(registry).Add({})),
      eval_duration(BuildHistogram().Name("spotter_eval_duration_seconds")
                        .Help("Time to merge the rank sketches of a run and summarise them.")
                        .Register(registry)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25, 0.5, 1, 2.5, 5})),
      runs_active(BuildGauge().Name("spotter_runs").Help("Runs held, by state.")
                      .Register(registry).Add({{"state", "active"}})),
      runs_finished(BuildGauge().Name("spotter_runs").Help("Runs held, by state.")
                        .Register(registry).Add({{"state", "finished"}})),
      streams(BuildGauge().Name("spotter_streams").Help("Open streams, by kind.")
                  .Register(registry).Add({{"kind", "connect"}})),
      watchers(BuildGauge().Name("spotter_streams").Help("Open streams, by kind.")
                   .Register(registry).Add({{"kind", "watch"}})),
      registry_(registry),
      rejects_(BuildCounter().Name("spotter_rejects_total")
                   .Help("Messages and requests rejected, by reason.").Register(registry)),
      rpc_duration_(BuildHistogram().Name("spotter_rpc_duration_seconds")
                        .Help("Time to handle a unary RPC or one stream message, by method.")
                        .Register(registry)) {}

struct RunMetrics::Series {
  struct One {
    Family<Gauge>* family;
    Gauge* gauge;
  };
  std::vector<One> all;
  One effective_rank, effective_rank_lower, effective_rank_upper, rank_fraction;
  One pr, pr_lower, pr_upper, trace, top_eigenvalue, noise_scale;
  One step, loss, lr, val, version;
  One phase[4];
};

RunMetrics::RunMetrics(prometheus::Registry& r, const std::string& run)
    : s_(std::make_unique<Series>()) {
  auto add = [&](const char* name, const char* help,
                 prometheus::Labels extra = {}) -> Series::One {
    Family<Gauge>& f = RunGauge(r, name, help);
    extra["run"] = run;
    Series::One one{&f, &f.Add(extra)};
    one.gauge->Set(std::nan(""));
    s_->all.push_back(one);
    return one;
  };
  s_->effective_rank = add("spotter_run_effective_rank",
                           "r90 of the gradient covariance: eigenvalues holding 90% of the trace.");
  s_->effective_rank_lower = add("spotter_run_effective_rank_lower",
                                 "Certified lower bound of spotter_run_effective_rank.");
  s_->effective_rank_upper = add("spotter_run_effective_rank_upper",
                                 "Certified upper bound of spotter_run_effective_rank.");
  s_->rank_fraction = add("spotter_run_rank_fraction", "r90 divided by the sketch size l.");
  s_->pr = add("spotter_run_participation_ratio",
               "Participation ratio (intrinsic dimension) of the gradient covariance, "
               "bias-corrected.");
  s_->pr_lower = add("spotter_run_participation_ratio_lower",
                     "Lower end of the participation ratio's sketch interval.");
  s_->pr_upper = add("spotter_run_participation_ratio_upper",
                     "Upper end of the participation ratio's sketch interval.");
  s_->trace = add("spotter_run_gradient_trace", "Trace of the gradient covariance, per sample.");
  s_->top_eigenvalue = add("spotter_run_top_eigenvalue",
                           "Largest eigenvalue of the gradient covariance, per sample.");
  s_->noise_scale = add("spotter_run_noise_scale",
                        "Gradient noise scale B_simple = tr(Sigma) / |G|^2, in examples.");
  s_->step = add("spotter_run_step", "Highest step any rank of the run reported.");
  s_->loss = add("spotter_run_loss", "Mean training loss over the last evaluation interval.");
  s_->lr = add("spotter_run_learning_rate", "Learning rate the trainers reported.");
  s_->val = add("spotter_run_val_metric", "Latest validation metric the polish phase watches.");
  s_->version = add("spotter_run_directive_version", "Version of the run's latest directive.");
  for (Phase p : kPhases) {
    s_->phase[static_cast<int>(p)] =
        add("spotter_run_phase", "1 for the run's current phase, 0 for the others.",
            {{"phase", PhaseName(p)}});
  }
}

RunMetrics::~RunMetrics() {
  for (const Series::One& one : s_->all) one.family->Remove(one.gauge);
}

void RunMetrics::SetSummary(const SpectrumSummary& c, double noise_scale) {
  s_->effective_rank.gauge->Set(c.effective_rank.value);
  s_->effective_rank_lower.gauge->Set(c.effective_rank.lower);
  s_->effective_rank_upper.gauge->Set(c.effective_rank.upper);
  s_->rank_fraction.gauge->Set(c.rank_fraction.value);
  s_->pr.gauge->Set(c.participation_ratio.value);
  s_->pr_lower.gauge->Set(c.participation_ratio.lower);
  s_->pr_upper.gauge->Set(c.participation_ratio.upper);
  s_->trace.gauge->Set(c.trace);
  s_->top_eigenvalue.gauge->Set(c.top_eigenvalue.value);
  s_->noise_scale.gauge->Set(noise_scale);
}

void RunMetrics::SetTraining(uint64_t step, double loss, double lr) {
  s_->step.gauge->Set(static_cast<double>(step));
  s_->loss.gauge->Set(loss);
  s_->lr.gauge->Set(lr);
}

void RunMetrics::SetValMetric(double value) { s_->val.gauge->Set(value); }

void RunMetrics::SetPhase(Phase phase, uint64_t version) {
  for (Phase p : kPhases) {
    s_->phase[static_cast<int>(p)].gauge->Set(p == phase ? 1.0 : 0.0);
  }
  s_->version.gauge->Set(static_cast<double>(version));
}

}  // namespace spotter
