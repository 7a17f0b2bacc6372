#include "server/runs/run.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/phase/controller_codec.h"
#include "core/spectrum/accumulator_codec.h"
#include "core/spectrum/evaluation.h"
#include "server/runs/trajectory_point.h"

namespace spotter {

Run::Run(std::string name, v1::RunConfig config, std::string owner, uint64_t order,
         const RunDeps& deps)
    : name_(std::move(name)),
      config_(std::move(config)),
      owner_(std::move(owner)),
      order_(order),
      deps_(deps),
      window_(ToWindowOptions(config_)),
      spectrum_(ToSpectrumOptions(config_)),
      journal_(std::make_shared<Journal>(deps.committer)),
      controller_(ToControllerConfig(config_)),
      points_(name_, deps.persistent ? deps.store : nullptr, deps.point_window),
      val_metric_(std::numeric_limits<double>::quiet_NaN()),
      next_eval_step_(config_.eval_every()) {}

std::shared_ptr<Run> Run::Create(std::string name, v1::RunConfig config, std::string owner,
                                 uint64_t order, const RunDeps& deps) {
  std::shared_ptr<Run> run(
      new Run(std::move(name), std::move(config), std::move(owner), order, deps));
  absl::MutexLock l(&run->mu_);
  run->created_at_ = deps.clock->Now();
  run->metrics_ = std::make_unique<RunMetrics>(deps.metrics->runs(), run->name_);
  Decision d;
  d.plan = run->controller_.InitialPlan();
  d.from = d.to = Phase::kAcquisition;
  d.cause = Cause::kAutomatic;
  d.reason = absl::StrFormat("run opened: linear warm-up %.4g -> %.4g over steps [0, %d]",
                             d.plan.lr.start_lr, d.plan.lr.end_lr, d.plan.lr.end_step);
  run->IssueLocked(d, 0);
  run->transitions_.clear();  // the opening directive is not a transition
  std::vector<StoreOp> ops;
  if (deps.persistent) {
    state::RunRecord rec;
    rec.set_name(run->name_);
    *rec.mutable_config() = run->config_;
    rec.set_created_unix_micros(absl::ToUnixMicros(run->created_at_));
    rec.set_order(order);
    rec.set_owner(run->owner_);
    ops.push_back(PutRunRecord(rec));
  }
  run->CommitLocked(std::move(ops));
  deps.metrics->runs_active.Increment();
  return run;
}

Run::~Run() = default;

RankState* Run::RankLocked(uint32_t rank) {
  auto& slot = ranks_[rank];
  if (!slot) {
    slot = std::make_unique<RankState>(rank, static_cast<int>(config_.sketch_dim()),
                                       static_cast<int>(config_.sketch_rows()), window_);
  }
  return slot.get();
}

std::vector<RankState*> Run::RanksByIdLocked() const {
  std::vector<RankState*> ranks;
  ranks.reserve(ranks_.size());
  for (const auto& [id, r] : ranks_) ranks.push_back(r.get());
  std::sort(ranks.begin(), ranks.end(),
            [](const RankState* a, const RankState* b) { return a->rank < b->rank; });
  return ranks;
}

uint32_t Run::StreamQuota() const {
  if (deps_.limits.max_streams_per_run != 0) return deps_.limits.max_streams_per_run;
  return static_cast<uint32_t>(std::min<uint64_t>(2ull * config_.world_size() + 2, UINT32_MAX));
}

absl::StatusOr<RankHandle> Run::Join(const v1::Hello& hello, RunObserver* observer) {
  absl::MutexLock l(&mu_);
  if (moving_) return MovedStatusLocked();
  if (hello.rank() >= config_.world_size()) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "rank %d is outside run %s's world_size %d: expected 0 <= rank < %d",
                          hello.rank(), name_, config_.world_size(), config_.world_size())),
                      "rank_out_of_range");
  }
  const v1::ProjectionSpec& want = config_.projection();
  const v1::ProjectionKind kind = hello.projection().kind() == v1::PROJECTION_KIND_UNSPECIFIED
                                      ? v1::PROJECTION_KIND_COUNT_SKETCH
                                      : hello.projection().kind();
  if (kind != want.kind() || hello.projection().seed() != want.seed()) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrFormat(
            "projection {kind %s, seed %d} differs from run %s's {kind %s, seed %d}: every "
            "rank must sketch with the run's projection",
            v1::ProjectionKind_IsValid(kind) ? v1::ProjectionKind_Name(kind)
                                             : std::to_string(static_cast<int>(kind)),
            hello.projection().seed(), name_, v1::ProjectionKind_Name(want.kind()), want.seed())),
        "projection_mismatch");
  }
  const uint64_t declared = want.input_dim() ? want.input_dim() : declared_input_dim_;
  const uint64_t p = hello.projection().input_dim();
  if (kind == v1::PROJECTION_KIND_IDENTITY && p > config_.sketch_dim()) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "projection input_dim %d with PROJECTION_KIND_IDENTITY: unprojected "
                          "rows hold at most sketch_dim = %d parameters (pad with zeros), or "
                          "project with COUNT_SKETCH",
                          p, config_.sketch_dim())),
                      "projection_mismatch");
  }
  if (p != 0 && declared != 0 && p != declared) {
    return WithReason(absl::FailedPreconditionError(absl::StrFormat(
                          "projection input_dim %d differs from the %d parameters run %s's "
                          "ranks declared",
                          p, declared, name_)),
                      "projection_mismatch");
  }
  if (!published_.ended && streams_ >= static_cast<int>(StreamQuota())) {
    return WithReason(
        absl::ResourceExhaustedError(absl::StrFormat(
            "run %s has %d Connect streams open, its quota (--max_streams_per_run; default "
            "2 x world_size + 2); close stale streams or raise the quota",
            name_, streams_)),
        "run_stream_quota");
  }
  RankState* rank = RankLocked(hello.rank());
  std::vector<StoreOp> ops;
  v1::Welcome welcome;
  *welcome.mutable_config() = config_;
  {
    absl::MutexLock rl(&rank->mu);
    bool restarted = false;
    if (!rank->JoinIncarnationLocked(hello.incarnation(), &restarted)) {
      return WithReason(
          absl::FailedPreconditionError(absl::StrFormat(
              "incarnation %d of run %s rank %d was replaced by a restarted process "
              "(incarnation %d); a replaced process must not rejoin",
              hello.incarnation(), name_, hello.rank(), rank->incarnation)),
          "superseded_incarnation");
    }
    if (restarted && deps_.persistent) {
      // The new seq space starts from a checkpoint of the window: the upload
      // log of the earlier incarnation (its seqs) is gone with it.
      state::CheckpointRecord ckpt;
      ckpt.set_seq(0);
      ckpt.set_accumulator(EncodeRankAccumulator(rank->acc));
      ops.push_back(PutCheckpointRecord(name_, rank->rank, ckpt));
      ops.push_back(
          StoreOp::DeleteUpTo(Table::kUploads, name_, rank->rank, ~static_cast<uint64_t>(0)));
      ops.push_back(PutRankRecord(name_, rank->RecordLocked()));
      rank->logged_uploads = 0;
      rank->logged_bytes = 0;
    }
    welcome.set_last_seq(rank->durable_seq->load());
    rank->last_seen = deps_.clock->Now();
  }
  const bool declare = p != 0 && declared == 0;
  if (declare) declared_input_dim_ = p;
  const RankHandle handle{rank, hello.incarnation()};
  welcome.set_phase(ToProto(controller_.phase()));
  observer->OnWelcome(welcome);
  // Every directive newer than what the stream already holds, the older
  // ones too: a rank resuming from a checkpoint before the current
  // directive's effective_step needs the one in force at its own step. Only
  // durable (published) directives are sent; a newer one reaches the
  // observer when its commit publishes it.
  for (size_t i = 0; i < published_.directives; ++i) {
    if (directives_[i].version > hello.last_directive_version()) {
      observer->OnDirective(ToProto(directives_[i]));
    }
  }
  if (declare || !ops.empty()) CommitLocked(std::move(ops));
  if (published_.ended) {
    observer->OnEnded(state_);
    return handle;
  }
  observers_.insert(observer);
  ++streams_;
  ++rank->connected;
  return handle;
}

void Run::Leave(RankState* rank, RunObserver* observer) {
  absl::MutexLock l(&mu_);
  if (observers_.erase(observer) > 0 && rank != nullptr) {
    --rank->connected;
    --streams_;
  }
}

void Run::NoteReject(RankState* rank) {
  absl::MutexLock l(&mu_);
  ++rank->rejects;
}

std::optional<Rejection> Run::CheckIncarnationLocked(
    RankState* rank, uint64_t incarnation, uint64_t step,
    std::optional<v1::RestartEvent>* resumed) const {
  if (incarnation != rank->incarnation) {
    return Rejection{v1::REJECT_REASON_SUPERSEDED,
                     absl::StrFormat("incarnation %d of rank %d was replaced by a restarted "
                                     "process (incarnation %d); this stream takes no more data",
                                     incarnation, rank->rank, rank->incarnation)};
  }
  if (rank->restart_pending) {
    rank->restart_pending = false;
    v1::RestartEvent e;
    e.set_rank(rank->rank);
    e.set_resume_step(step);
    e.set_uploads_before(rank->uploads_before_restart);
    *resumed = std::move(e);
  }
  return std::nullopt;
}

void Run::AddRestartLocked(v1::RestartEvent e) {
  e.set_generation(static_cast<uint32_t>(restarts_.size() + 1));
  e.set_redone_through(max_step_);
  ToProto(deps_.clock->Now(), e.mutable_time());
  restarts_.push_back(std::move(e));
  deps_.metrics->restarts.Increment();
}

std::optional<Rejection> Run::Ingest(const RankHandle& h, const v1::SketchBatch& b,
                                     const RowMatrixXf& rows, bool* duplicate) {
  *duplicate = false;
  if (b.seq() == 0) {
    return Rejection{v1::REJECT_REASON_SEQ_NOT_INCREASING,
                     "seq is 0; uploads are numbered from 1 and increase"};
  }
  RankState* rank = h.state;
  std::optional<v1::RestartEvent> resumed;
  {
    absl::MutexLock l(&rank->mu);
    if (auto rej = CheckIncarnationLocked(rank, h.incarnation, b.step(), &resumed)) return rej;
    if (b.seq() <= rank->last_seq) {
      *duplicate = true;
      return std::nullopt;
    }
    if (moving_) return MovingRejection(name_);
    if (closed_) {
      return Rejection{v1::REJECT_REASON_RUN_FINISHED,
                       absl::StrFormat("run %s has finished; it takes no more uploads", name_)};
    }
    if (rank->any_step && b.step() < rank->last_step) {
      return Rejection{v1::REJECT_REASON_STEP_BACKWARDS,
                       absl::StrFormat("step %d is before this rank's last step %d; steps "
                                       "never decrease on a rank",
                                       b.step(), rank->last_step)};
    }
    rank->ApplyLocked(b, rows, deps_.clock->Now());
    if (b.loss_non_finite()) deps_.metrics->nonfinite_losses.Increment();
    if (deps_.persistent) {
      // The upload and the rank's new record, in one queue entry (one
      // commit): a restart sees both or neither.
      std::vector<StoreOp> ops;
      ++rank->logged_uploads;
      rank->logged_bytes += b.data().size();
      if (rank->logged_uploads >= deps_.checkpoint.every_uploads ||
          rank->logged_bytes >= deps_.checkpoint.every_bytes) {
        state::CheckpointRecord ckpt;
        ckpt.set_seq(b.seq());
        ckpt.set_accumulator(EncodeRankAccumulator(rank->acc));
        ops.push_back(PutCheckpointRecord(name_, rank->rank, ckpt));
        ops.push_back(StoreOp::DeleteUpTo(Table::kUploads, name_, rank->rank, b.seq()));
        rank->logged_uploads = 0;
        rank->logged_bytes = 0;
      } else {
        ops.push_back(PutUploadRecord(name_, rank->rank, b));
      }
      ops.push_back(PutRankRecord(name_, rank->RecordLocked()));
      journal_->Enqueue(std::move(ops), [mark = rank->MarkDurable(b.seq())](const absl::Status& s) {
        if (s.ok()) mark();
      });
    } else {
      rank->MarkDurable(b.seq())();  // nothing is kept: applied is all there is
    }
  }
  absl::MutexLock l(&mu_);
  if (resumed) {
    AddRestartLocked(*std::move(resumed));
    CommitLocked();
  }
  max_step_ = std::max(max_step_, b.step());
  MaybeScheduleEvalLocked();
  return std::nullopt;
}

std::optional<Rejection> Run::Report(const RankHandle& h, const v1::EvalReport& r,
                                     bool* duplicate) {
  *duplicate = false;
  if (r.seq() == 0) {
    return Rejection{v1::REJECT_REASON_SEQ_NOT_INCREASING,
                     "seq is 0; uploads are numbered from 1 and increase"};
  }
  for (const auto& [key, value] : r.metrics()) {
    if (!std::isfinite(value)) {
      return Rejection{v1::REJECT_REASON_BAD_METRIC,
                       absl::StrFormat("metric %s = %g; metric values must be finite", key, value)};
    }
  }
  // The whole report under the run's lock (reports are rare): its seq, the
  // validation metric and any directive it causes commit together.
  absl::MutexLock l(&mu_);
  const uint64_t eff = EffectiveStepLocked();
  RankState* rank = h.state;
  absl::MutexLock rl(&rank->mu);
  std::optional<v1::RestartEvent> resumed;
  if (auto rej = CheckIncarnationLocked(rank, h.incarnation, r.step(), &resumed)) return rej;
  if (r.seq() <= rank->last_seq) {
    *duplicate = true;
    return std::nullopt;
  }
  if (moving_) return MovingRejection(name_);
  // Recorded with the report's commit below (CommitLocked takes the lot).
  if (resumed) AddRestartLocked(*std::move(resumed));
  rank->last_seq = r.seq();
  rank->last_seen = deps_.clock->Now();
  rank->reported_step = std::max(rank->reported_step, r.step());
  max_step_ = std::max(max_step_, r.step());
  std::vector<StoreOp> ops;
  if (deps_.persistent) ops.push_back(PutRankRecord(name_, rank->RecordLocked()));
  std::function<void()> mark = rank->MarkDurable(r.seq());
  if (!deps_.persistent) mark();
  auto it = r.metrics().find(config_.phase().val_metric());
  if (it != r.metrics().end()) {
    val_metric_ = it->second;
    if (metrics_) metrics_->SetValMetric(val_metric_);
    if (state_ == v1::RUN_STATE_ACTIVE) {
      if (auto d = controller_.OnValidation(r.step(), it->second, eff)) IssueLocked(*d, eff);
    }
  }
  CommitLocked(std::move(ops), std::move(mark));
  return std::nullopt;
}

void Run::Heartbeat(const RankHandle& h, uint64_t step) {
  RankState* rank = h.state;
  {
    absl::MutexLock rl(&rank->mu);
    if (h.incarnation != rank->incarnation) return;  // a replaced process
    rank->last_seen = deps_.clock->Now();
    rank->reported_step = std::max(rank->reported_step, step);
  }
  absl::MutexLock l(&mu_);
  max_step_ = std::max(max_step_, step);
}

uint64_t Run::EffectiveStepLocked() const {
  // A directive must reach every rank before the fastest one gets to its
  // effective step: cover the delivery budget at the fastest observed rate,
  // plus the steps a rank makes between two uploads (the server's view of a
  // rank's step is that stale).
  const double budget = config_.phase().delivery_budget_seconds();
  uint64_t margin = 1;
  for (const auto& [id, r] : ranks_) {
    absl::MutexLock rl(&r->mu);
    margin = std::max(margin, r->DeliveryMarginLocked(budget));
  }
  uint64_t eff = max_step_ + margin;
  if (!directives_.empty()) eff = std::max(eff, directives_.back().effective_step);
  return eff;
}

void Run::RecordTransitionLocked(const Transition& t) { transitions_.push_back(ToProto(t)); }

void Run::IssueLocked(const Decision& decision, uint64_t eff,
                      std::optional<v1::Directive>* issued) {
  Directive d;
  d.version = directives_.empty() ? 1 : directives_.back().version + 1;
  d.effective_step = eff;
  d.plan = decision.plan;
  d.reason = decision.reason;
  d.advisory = config_.mode() == v1::MODE_ADVISE;
  d.cause = decision.cause;
  d.issued_at = deps_.clock->Now();
  directives_.push_back(d);
  const uint64_t decided = decision.decision_step.value_or(max_step_);
  RecordTransitionLocked({eff, d.issued_at, decision.from, decision.to, decision.cause,
                          decision.reason, decision.evidence, d.version, decided});
  deps_.metrics->directives.Increment();
  if (decision.cause == Cause::kRollback) deps_.metrics->rollbacks.Increment();
  if (metrics_) {
    metrics_->SetPhase(d.plan.phase, d.version, eff, decided);
    metrics_->SetRollbacks(controller_.rollbacks());
  }
  if (issued) *issued = ToProto(d);
}

void Run::MaybeScheduleEvalLocked() {
  if (eval_busy_ || state_ != v1::RUN_STATE_ACTIVE || max_step_ < next_eval_step_) return;
  eval_busy_ = true;
  std::weak_ptr<Run> weak = weak_from_this();
  const bool queued = deps_.pool->Submit([weak] {
    if (auto self = weak.lock()) self->Evaluate();
  });
  if (!queued) {
    // Retried at the next upload.
    eval_busy_ = false;
    deps_.metrics->eval_dropped.Increment();
  }
}

void Run::Evaluate() {
  const absl::Time start = absl::Now();
  uint64_t now_step;
  std::vector<RankState*> ranks;
  {
    absl::MutexLock l(&mu_);
    now_step = max_step_;
    ranks = RanksByIdLocked();
  }
  // Copy each rank's window and loss totals under its own lock; merge and
  // summarise unlocked.
  std::vector<RankLossSnapshot> losses;
  std::vector<RankWindow> windows;
  uint64_t nonfinite = 0;
  for (RankState* r : ranks) {
    absl::MutexLock l(&r->mu);
    nonfinite += std::exchange(r->nonfinite_losses, 0);
    losses.push_back(
        {r->rank, r->loss_sum, r->loss_count, r->last_loss, r->last_lr, r->last_step, r->any_step});
    if (r->acc.empty()) continue;
    windows.push_back({r->rank, r->acc.Snapshot(now_step)});
  }
  // The merged diagnostics, and (with >= 3 ranks) per-rank summaries and the
  // ranks whose spectrum diverges from the others' (core/spectrum/evaluation.h).
  const RunEvaluation eval = EvaluateRanks(std::move(windows), spectrum_, DivergenceOptions());
  const std::optional<Diagnostics>& diag = eval.merged;

  absl::MutexLock l(&mu_);
  eval_busy_ = false;
  next_eval_step_ = (now_step / config_.eval_every() + 1) * config_.eval_every();
  // Kept until an observation reaches the controller.
  nonfinite_losses_ += nonfinite;
  if (diag && state_ == v1::RUN_STATE_ACTIVE && !moving_) {
    const PointTraining training = TrainingSince(losses, &loss_baseline_);
    // The phase the trainers are in at this step: the directive in force,
    // which may trail the controller's decision by the directive's margin.
    const Directive* in_force = DirectiveInForce(directives_, now_step, /*skip_advisory=*/false);
    v1::TrajectoryPoint p = BuildTrajectoryPoint(
        now_step, deps_.clock->Now(), in_force ? in_force->plan.phase : controller_.phase(),
        training, val_metric_, eval);
    // Points are strictly increasing in step (an evaluation of a step that
    // already has one, after a restart, replaces nothing).
    if (points_.empty() || now_step > points_.back().step()) {
      latest_ = p;
      p.mutable_covariance()->clear_eigenvalues();
      p.mutable_second_moment()->clear_eigenvalues();
      // A copy, not a move: clear_*() keeps the arrays' capacity, which the
      // history would hold for every point.
      points_.Append(p);
      if (metrics_) {
        metrics_->SetSummary(diag->covariance, diag->noise_scale);
        metrics_->SetTraining(now_step, training.loss, training.lr);
      }
      deps_.metrics->evaluations.Increment();
      if (diag->covariance.valid) {
        Observation obs;
        obs.step = now_step;
        obs.loss = training.loss;
        obs.effective_rank = diag->covariance.effective_rank.value;
        obs.rank_censored = diag->covariance.effective_rank.censored;
        obs.participation_ratio = diag->covariance.participation_ratio.value;
        obs.pr_censored = diag->covariance.participation_ratio.censored;
        obs.rank_ci_upper = diag->covariance.effective_rank.ci_upper;
        obs.loss_nonfinite = std::exchange(nonfinite_losses_, 0) > 0;
        const uint64_t eff = EffectiveStepLocked();
        if (auto d = controller_.OnEvaluation(obs, eff)) IssueLocked(*d, eff);
      }
    }
  }
  if (state_ == v1::RUN_STATE_ACTIVE) CommitLocked();
  deps_.metrics->eval_duration.Observe(absl::ToDoubleSeconds(absl::Now() - start));
  MaybeScheduleEvalLocked();
}

absl::Status Run::Override(const v1::OverridePhaseRequest& req,
                           std::optional<v1::Directive>* issued) {
  absl::MutexLock l(&mu_);
  if (state_ != v1::RUN_STATE_ACTIVE) {
    return absl::FailedPreconditionError(
        absl::StrFormat("run %s is finished; overrides apply to active runs only", name_));
  }
  uint64_t eff = EffectiveStepLocked();
  if (req.effective_step() != 0) {
    if (req.effective_step() < eff) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "effective_step %d is too early for run %s: every rank can get a directive only "
          "from step %d on (the run's highest step plus its delivery margin, and no earlier "
          "than the last directive's)",
          req.effective_step(), name_, eff));
    }
    eff = req.effective_step();
  }
  switch (req.action()) {
    case v1::OverridePhaseRequest::ACTION_FORCE_PHASE: {
      if (req.phase() == v1::PHASE_UNSPECIFIED || !v1::Phase_IsValid(req.phase())) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "FORCE_PHASE needs phase = ACQUISITION, REFINEMENT, POLISH or DONE; got %d",
            req.phase()));
      }
      IssueLocked(controller_.ForcePhase(FromProto(req.phase()), req.hold(), req.reason(), eff),
                  eff, issued);
      break;
    }
    case v1::OverridePhaseRequest::ACTION_PIN_DIRECTIVE: {
      if (!req.has_directive()) {
        return absl::InvalidArgumentError("PIN_DIRECTIVE needs a directive (lr, optimizer)");
      }
      absl::StatusOr<DirectivePlan> plan = PlanFromProto(req.directive());
      if (!plan.ok()) return plan.status();
      IssueLocked(controller_.Pin(*plan, req.reason(), eff), eff, issued);
      break;
    }
    case v1::OverridePhaseRequest::ACTION_RELEASE: {
      if (auto d = controller_.Release(req.reason(), eff)) {
        IssueLocked(*d, eff, issued);
      } else {
        const Phase p = controller_.phase();
        RecordTransitionLocked({eff,
                                deps_.clock->Now(),
                                p,
                                p,
                                Cause::kRelease,
                                "operator released the run to automatic control" +
                                    (req.reason().empty() ? "" : ": " + req.reason()),
                                {},
                                0,
                                max_step_});
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "action %d: expected FORCE_PHASE, PIN_DIRECTIVE or RELEASE", req.action()));
  }
  CommitLocked();
  return absl::OkStatus();
}

void Run::Finish(const std::string& reason) {
  absl::MutexLock l(&mu_);
  if (state_ != v1::RUN_STATE_ACTIVE) return;
  if (controller_.phase() != Phase::kDone) {
    const uint64_t eff = EffectiveStepLocked();
    IssueLocked(
        controller_.Finish(Cause::kFinish,
                           "run finished by the API" + (reason.empty() ? "" : ": " + reason), eff),
        eff);
  }
  state_ = v1::RUN_STATE_FINISHED;
  closed_ = true;
  // Streams end when the stop directive is durable and published.
  CommitLocked();
  metrics_.reset();
  deps_.metrics->runs_active.Decrement();
  deps_.metrics->runs_finished.Increment();
}

void Run::End() {
  absl::MutexLock l(&mu_);
  journal_->Close();
  closed_ = true;
  for (RunObserver* o : observers_) o->OnEnded(state_);
  observers_.clear();
  streams_ = 0;
  watchers_ = 0;
  published_.ended = true;
  for (auto& [id, r] : ranks_) r->connected = 0;
  metrics_.reset();
  if (state_ == v1::RUN_STATE_ACTIVE) {
    deps_.metrics->runs_active.Decrement();
  } else {
    deps_.metrics->runs_finished.Decrement();
  }
  state_ = v1::RUN_STATE_UNSPECIFIED;
}

}  // namespace spotter
