#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/phase/controller_codec.h"
#include "core/spectrum/accumulator_codec.h"
#include "server/runs/run.h"
#include "server/runs/run_config.h"

namespace spotter {
namespace {

// Logged uploads passed the admission limits of their time; replaying them
// must not depend on today's limits.
Limits ReplayLimits() {
  Limits l;
  l.max_batch_rows = std::numeric_limits<uint32_t>::max();
  l.max_abs_value = std::numeric_limits<double>::infinity();
  return l;
}
}  // namespace

absl::StatusOr<std::shared_ptr<Run>> Run::Restore(LoadedRun loaded, const RunDeps& deps) {
  const std::string name = loaded.run.name();
  auto fail = [&name](const std::string& what) {
    return absl::DataLossError(absl::StrFormat(
        "state of run '%s': %s; restore the state file from a backup, or move it aside to "
        "start with empty state",
        name, what));
  };
  // Fields added to RunConfig after the state was written (ConfigField::
  // added_later, e.g. phase.hysteresis) take the default the writing server
  // ran with.
  v1::RunConfig stored = loaded.run.config();
  FillFieldsAddedLater(&stored);
  // The stored config must be an effective config within the server's
  // limits (sizes decide the memory a run takes).
  absl::StatusOr<v1::RunConfig> resolved = ResolveRunConfig(stored, deps.limits);
  if (!resolved.ok()) return fail(std::string(resolved.status().message()));
  if (const std::string diff = ConfigDifference(*resolved, stored); !diff.empty()) {
    return fail("its stored config is not an effective config: " + diff);
  }
  const state::ControllerRecord& c = loaded.controller;
  if (c.state() != v1::RUN_STATE_ACTIVE && c.state() != v1::RUN_STATE_FINISHED) {
    return fail(absl::StrFormat("run state %d", static_cast<int>(c.state())));
  }
  std::shared_ptr<Run> run(new Run(name, stored, loaded.run.owner(), loaded.run.order(), deps));
  absl::MutexLock l(&run->mu_);
  if (absl::Status s = DecodeControllerState(c.controller(), &run->controller_); !s.ok()) {
    return fail("controller state: " + std::string(s.message()));
  }
  run->created_at_ = absl::FromUnixMicros(loaded.run.created_unix_micros());
  run->state_ = c.state();
  run->next_eval_step_ = std::max<uint64_t>(c.next_eval_step(), 1);
  run->val_metric_ = c.val_metric();
  run->latest_ = c.latest();
  run->latest_published_ = c.latest();
  run->declared_input_dim_ = c.declared_input_dim();
  run->max_step_ = c.max_step();
  for (const auto& [rank, base] : c.loss_baseline()) {
    run->loss_baseline_[rank] = {base.sum(), base.count()};
  }
  for (const v1::Directive& d : loaded.directives) {
    absl::StatusOr<Directive> dir = DirectiveFromProto(d);
    if (!dir.ok()) {
      return fail(absl::StrFormat("directive v%d: %s", d.version(), dir.status().message()));
    }
    run->directives_.push_back(*std::move(dir));
  }
  run->transitions_ = std::move(loaded.transitions);
  run->points_.Restore(loaded.points_total, std::move(loaded.points));
  run->restarts_.assign(c.restarts().begin(), c.restarts().end());
  run->published_ = {static_cast<size_t>(run->points_.size()), run->transitions_.size(), run->directives_.size(),
                     run->restarts_.size(), run->state_ != v1::RUN_STATE_ACTIVE};
  run->queued_ = run->published_;
  run->closed_ = run->state_ != v1::RUN_STATE_ACTIVE;
  // A tombstone of a run moved to another replica stays frozen.
  run->moved_to_ = c.moved_to();
  run->moving_ = !c.moved_to().empty();

  const absl::Time now = deps.clock->Now();
  for (auto& [id, lr] : loaded.ranks) {
    absl::StatusOr<RankAccumulator> acc = RestoreRankAccumulator(lr, run->config_);
    if (!acc.ok()) return fail(absl::StrFormat("rank %d: %s", id, acc.status().message()));
    RankState* r = run->RankLocked(id);
    absl::MutexLock rl(&r->mu);
    r->acc = *std::move(acc);
    r->RestoreLocked(lr.record, now);
    r->logged_uploads = lr.uploads.size();
    for (const v1::SketchBatch& b : lr.uploads) r->logged_bytes += b.data().size();
    run->max_step_ = std::max(run->max_step_, r->reported_step);
  }
  // A tombstone of a moved run reports no per-run series: its new owner
  // does (dashboards would otherwise see the run on two replicas).
  if (run->state_ == v1::RUN_STATE_ACTIVE && run->moving_) {
    deps.metrics->runs_active.Increment();
  } else if (run->state_ == v1::RUN_STATE_ACTIVE) {
    run->metrics_ = std::make_unique<RunMetrics>(deps.metrics->runs(), run->name_);
    const Directive& d = run->directives_.back();
    uint64_t decided = 0;  // the opening directive has no transition
    for (const v1::PhaseTransition& t : run->transitions_) {
      if (t.directive_version() == d.version) decided = t.decision_step();
    }
    run->metrics_->SetPhase(d.plan.phase, d.version, d.effective_step, decided);
    run->metrics_->SetRollbacks(run->controller_.rollbacks());
    if (!std::isnan(run->val_metric_)) run->metrics_->SetValMetric(run->val_metric_);
    deps.metrics->runs_active.Increment();
  } else {
    deps.metrics->runs_finished.Increment();
  }
  return run;
}

absl::StatusOr<RankAccumulator> RestoreRankAccumulator(const LoadedRank& rank,
                                                       const v1::RunConfig& config) {
  const int dim = static_cast<int>(config.sketch_dim());
  const WindowOptions window = ToWindowOptions(config);
  RankAccumulator acc(dim, static_cast<int>(config.sketch_rows()), window);
  if (rank.has_checkpoint) {
    absl::StatusOr<RankAccumulator> decoded = DecodeRankAccumulator(
        rank.checkpoint.accumulator(), dim, static_cast<int>(config.sketch_rows()), window);
    if (!decoded.ok()) {
      return absl::Status(decoded.status().code(),
                          absl::StrFormat("checkpoint (after seq %d): %s", rank.checkpoint.seq(),
                                          decoded.status().message()));
    }
    acc = *std::move(decoded);
  }
  const Limits replay = ReplayLimits();
  RowMatrixXf rows;
  for (const v1::SketchBatch& b : rank.uploads) {
    if (std::optional<Rejection> rej = DecodeSketch(b, config.sketch_dim(), replay, &rows)) {
      return absl::DataLossError(
          absl::StrFormat("logged upload seq %d no longer decodes: %s", b.seq(), rej->message));
    }
    acc.Add(b.step(), rows, b.samples_per_row() == 0 ? 1.0 : b.samples_per_row());
  }
  return acc;
}

}  // namespace spotter
