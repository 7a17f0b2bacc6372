#include "server/run.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"

namespace spotter {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Smoothing of the upload-cadence estimates (EMA weight of a new sample).
constexpr double kCadenceAlpha = 0.3;
// The step rate is measured over at least this long, so bursts of uploads
// (a trainer catching up) do not read as absurd rates.
constexpr absl::Duration kRateBaseline = absl::Seconds(1);
// Until a rank's first full baseline, its rate since its first upload, once
// that spans this long: directives issued in a run's first second must cover
// the delivery budget too.
constexpr absl::Duration kProvisionalBaseline = absl::Milliseconds(100);
}  // namespace

struct RankState {
  RankState(uint32_t r, int dim, int rows, const WindowOptions& w)
      : rank(r), acc(dim, rows, w) {}
  const uint32_t rank;

  // Ingestion, under `mu`.
  absl::Mutex mu;
  RankAccumulator acc ABSL_GUARDED_BY(mu);
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;
  uint64_t last_step ABSL_GUARDED_BY(mu) = 0;
  bool any_step ABSL_GUARDED_BY(mu) = false;

  // Status and cadence, under the owning Run's mu_.
  uint64_t uploads = 0;
  uint64_t rows = 0;
  uint64_t rejects = 0;
  uint64_t reported_step = 0;
  int connected = 0;
  absl::Time last_seen = absl::InfinitePast();
  bool has_upload = false;
  uint64_t last_upload_step = 0;
  absl::Time rate_anchor_time;  // start of the current rate baseline
  uint64_t rate_anchor_step = 0;
  double rate = 0.0;  // steps per second, over >= kRateBaseline (EMA); provisional before
  bool rate_known = false;
  double gap = 0.0;   // steps between consecutive uploads (EMA)
  int cadence_samples = 0;
};

Run::Run(std::string name, v1::RunConfig config, const RunDeps& deps)
    : name_(std::move(name)),
      config_(std::move(config)),
      deps_(deps),
      window_(ToWindowOptions(config_)),
      spectrum_(ToSpectrumOptions(config_)),
      controller_(ToControllerConfig(config_)),
      last_loss_(kNaN),
      last_lr_(kNaN),
      val_metric_(kNaN),
      next_eval_step_(config_.eval_every()) {}

std::shared_ptr<Run> Run::Create(std::string name, v1::RunConfig config,
                                 const RunDeps& deps) {
  std::shared_ptr<Run> run(new Run(std::move(name), std::move(config), deps));
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

absl::StatusOr<RankState*> Run::Join(const v1::Hello& hello, RunObserver* observer) {
  absl::MutexLock l(&mu_);
  if (hello.rank() >= config_.world_size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rank %d is outside run %s's world_size %d: expected 0 <= rank < %d", hello.rank(),
        name_, config_.world_size(), config_.world_size()));
  }
  const v1::ProjectionSpec& want = config_.projection();
  const v1::ProjectionKind kind = hello.projection().kind() == v1::PROJECTION_KIND_UNSPECIFIED
                                      ? v1::PROJECTION_KIND_COUNT_SKETCH
                                      : hello.projection().kind();
  if (kind != want.kind() || hello.projection().seed() != want.seed()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "projection {kind %s, seed %d} differs from run %s's {kind %s, seed %d}: every rank "
        "must sketch with the run's projection",
        v1::ProjectionKind_Name(kind), hello.projection().seed(), name_,
        v1::ProjectionKind_Name(want.kind()), want.seed()));
  }
  const uint64_t declared = want.input_dim() ? want.input_dim() : declared_input_dim_;
  const uint64_t p = hello.projection().input_dim();
  if (p != 0 && declared != 0 && p != declared) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "projection input_dim %d differs from the %d parameters run %s's ranks declared", p,
        declared, name_));
  }
  if (p != 0 && declared == 0) declared_input_dim_ = p;

  RankState* rank = RankLocked(hello.rank());
  v1::Welcome welcome;
  *welcome.mutable_config() = config_;
  {
    absl::MutexLock rl(&rank->mu);
    welcome.set_last_seq(rank->last_seq);
  }
  welcome.set_phase(ToProto(controller_.phase()));
  observer->OnWelcome(welcome);
  // Every directive newer than what the stream already holds, the older
  // ones too: a rank resuming from a checkpoint before the current
  // directive's effective_step needs the one in force at its own step.
  for (const Directive& d : directives_) {
    if (d.version > hello.last_directive_version()) observer->OnDirective(ToProto(d));
  }
  if (state_ != v1::RUN_STATE_ACTIVE) {
    observer->OnEnded(state_);
    return rank;
  }
  observers_.insert(observer);
  ++rank->connected;
  rank->last_seen = deps_.clock->Now();
  return rank;
}

void Run::Leave(RankState* rank, RunObserver* observer) {
  absl::MutexLock l(&mu_);
  if (observers_.erase(observer) > 0 && rank != nullptr) --rank->connected;
}

void Run::NoteReject(RankState* rank) {
  absl::MutexLock l(&mu_);
  ++rank->rejects;
}

std::optional<Rejection> Run::Ingest(RankState* rank, const v1::SketchBatch& b,
                                     const RowMatrixXf& rows, bool* duplicate) {
  *duplicate = false;
  if (b.seq() == 0) {
    return Rejection{v1::REJECT_REASON_SEQ_NOT_INCREASING,
                     "seq is 0; uploads are numbered from 1 and increase"};
  }
  {
    absl::MutexLock l(&rank->mu);
    if (b.seq() <= rank->last_seq) {
      *duplicate = true;
      return std::nullopt;
    }
    if (rank->any_step && b.step() < rank->last_step) {
      return Rejection{v1::REJECT_REASON_STEP_BACKWARDS,
                       absl::StrFormat("step %d is before this rank's last step %d; steps "
                                       "never decrease on a rank",
                                       b.step(), rank->last_step)};
    }
    rank->acc.Add(b.step(), rows, b.samples_per_row() == 0 ? 1.0 : b.samples_per_row());
    rank->last_seq = b.seq();
    rank->last_step = b.step();
    rank->any_step = true;
  }
  absl::MutexLock l(&mu_);
  const absl::Time now = deps_.clock->Now();
  ++rank->uploads;
  rank->rows += b.rows();
  rank->last_seen = now;
  rank->reported_step = std::max(rank->reported_step, b.step());
  if (!rank->has_upload) {
    rank->has_upload = true;
    rank->last_upload_step = b.step();
    rank->rate_anchor_time = now;
    rank->rate_anchor_step = b.step();
  } else if (b.step() > rank->last_upload_step) {
    const double ds = static_cast<double>(b.step() - rank->last_upload_step);
    const double a = rank->cadence_samples == 0 ? 1.0 : kCadenceAlpha;
    rank->gap = (1 - a) * rank->gap + a * ds;
    ++rank->cadence_samples;
    rank->last_upload_step = b.step();
    const absl::Duration span = now - rank->rate_anchor_time;
    if (span >= kRateBaseline) {
      const double r = static_cast<double>(b.step() - rank->rate_anchor_step) /
                       absl::ToDoubleSeconds(span);
      rank->rate = rank->rate_known ? 0.5 * rank->rate + 0.5 * r : r;
      rank->rate_known = true;
      rank->rate_anchor_time = now;
      rank->rate_anchor_step = b.step();
    } else if (!rank->rate_known && span >= kProvisionalBaseline) {
      rank->rate = static_cast<double>(b.step() - rank->rate_anchor_step) /
                   absl::ToDoubleSeconds(span);
    }
  }
  max_step_ = std::max(max_step_, b.step());
  if (!std::isnan(b.loss())) {
    loss_sum_ += b.loss();
    ++loss_count_;
    last_loss_ = b.loss();
  }
  last_lr_ = b.lr();
  MaybeScheduleEvalLocked();
  return std::nullopt;
}

std::optional<Rejection> Run::Report(RankState* rank, const v1::EvalReport& r,
                                     bool* duplicate) {
  *duplicate = false;
  if (r.seq() == 0) {
    return Rejection{v1::REJECT_REASON_SEQ_NOT_INCREASING,
                     "seq is 0; uploads are numbered from 1 and increase"};
  }
  for (const auto& [key, value] : r.metrics()) {
    if (!std::isfinite(value)) {
      return Rejection{v1::REJECT_REASON_BAD_METRIC,
                       absl::StrFormat("metric %s = %g; metric values must be finite", key,
                                       value)};
    }
  }
  {
    absl::MutexLock l(&rank->mu);
    if (r.seq() <= rank->last_seq) {
      *duplicate = true;
      return std::nullopt;
    }
    rank->last_seq = r.seq();
  }
  absl::MutexLock l(&mu_);
  rank->last_seen = deps_.clock->Now();
  rank->reported_step = std::max(rank->reported_step, r.step());
  max_step_ = std::max(max_step_, r.step());
  auto it = r.metrics().find(config_.phase().val_metric());
  if (it == r.metrics().end()) return std::nullopt;
  val_metric_ = it->second;
  if (metrics_) metrics_->SetValMetric(val_metric_);
  if (state_ != v1::RUN_STATE_ACTIVE) return std::nullopt;
  const uint64_t eff = EffectiveStepLocked();
  if (auto d = controller_.OnValidation(r.step(), it->second, eff)) IssueLocked(*d, eff);
  return std::nullopt;
}

void Run::Heartbeat(RankState* rank, uint64_t step) {
  absl::MutexLock l(&mu_);
  rank->last_seen = deps_.clock->Now();
  rank->reported_step = std::max(rank->reported_step, step);
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
    if (r->cadence_samples == 0) continue;
    const double m = std::ceil(r->rate * budget + r->gap) + 1.0;
    margin = std::max<uint64_t>(margin, static_cast<uint64_t>(std::min(m, 1e9)));
  }
  uint64_t eff = max_step_ + margin;
  if (!directives_.empty()) eff = std::max(eff, directives_.back().effective_step);
  return eff;
}

void Run::RecordTransitionLocked(const Transition& t) {
  transitions_.push_back(ToProto(t));
  for (RunObserver* o : observers_) o->OnTransition(transitions_.back());
}

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
  RecordTransitionLocked({eff, d.issued_at, decision.from, decision.to, decision.cause,
                          decision.reason, decision.evidence, d.version});
  const v1::Directive proto = ToProto(d);
  for (RunObserver* o : observers_) o->OnDirective(proto);
  deps_.metrics->directives.Increment();
  if (metrics_) metrics_->SetPhase(d.plan.phase, d.version);
  if (issued) *issued = proto;
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
  double loss;
  std::vector<RankState*> ranks;
  {
    absl::MutexLock l(&mu_);
    now_step = max_step_;
    loss = loss_count_ > 0 ? loss_sum_ / static_cast<double>(loss_count_) : last_loss_;
    loss_sum_ = 0.0;
    loss_count_ = 0;
    ranks.reserve(ranks_.size());
    for (auto& [id, r] : ranks_) ranks.push_back(r.get());
  }
  // Copy each rank's window under its own lock; merge and summarise unlocked.
  std::vector<GradientMoments> pieces;
  for (RankState* r : ranks) {
    absl::MutexLock l(&r->mu);
    if (r->acc.empty()) continue;
    for (GradientMoments& m : r->acc.Snapshot(now_step)) pieces.push_back(std::move(m));
  }
  std::optional<Diagnostics> diag;
  if (!pieces.empty()) diag = Summarize(MergeAll(std::move(pieces)), spectrum_);

  absl::MutexLock l(&mu_);
  eval_busy_ = false;
  next_eval_step_ = (now_step / config_.eval_every() + 1) * config_.eval_every();
  if (diag && state_ == v1::RUN_STATE_ACTIVE) {
    v1::TrajectoryPoint p;
    p.set_step(now_step);
    ToProto(deps_.clock->Now(), p.mutable_time());
    // The phase the trainers are in at this step: the directive in force,
    // which may trail the controller's decision by the directive's margin.
    const Directive* in_force = DirectiveInForce(directives_, now_step, /*skip_advisory=*/false);
    p.set_phase(ToProto(in_force ? in_force->plan.phase : controller_.phase()));
    p.set_loss(loss);
    p.set_lr(last_lr_);
    ToProto(diag->covariance, p.mutable_covariance());
    ToProto(diag->second_moment, p.mutable_second_moment());
    p.set_noise_scale(diag->noise_scale);
    p.set_mean_gradient_sq_norm(diag->mean_gradient_sq_norm);
    p.set_effective_samples(diag->effective_samples);
    p.set_val_metric(val_metric_);
    p.set_rows(diag->rows);
    latest_ = p;
    for (RunObserver* o : observers_) o->OnPoint(latest_);
    p.mutable_covariance()->clear_eigenvalues();
    p.mutable_second_moment()->clear_eigenvalues();
    points_.push_back(std::move(p));
    if (metrics_) {
      metrics_->SetSummary(diag->covariance, diag->noise_scale);
      metrics_->SetTraining(now_step, loss, last_lr_);
    }
    deps_.metrics->evaluations.Increment();
    if (diag->covariance.valid) {
      Observation obs;
      obs.step = now_step;
      obs.loss = loss;
      obs.effective_rank = diag->covariance.effective_rank.value;
      obs.rank_censored = diag->covariance.effective_rank.censored;
      obs.participation_ratio = diag->covariance.participation_ratio.value;
      const uint64_t eff = EffectiveStepLocked();
      if (auto d = controller_.OnEvaluation(obs, eff)) IssueLocked(*d, eff);
    }
  }
  deps_.metrics->eval_duration.Observe(absl::ToDoubleSeconds(absl::Now() - start));
  MaybeScheduleEvalLocked();
}

void Run::Watch(RunObserver* observer, bool include_history) {
  absl::MutexLock l(&mu_);
  if (include_history) {
    for (const v1::TrajectoryPoint& p : points_) observer->OnPoint(p);
    for (const v1::PhaseTransition& t : transitions_) observer->OnTransition(t);
    for (const Directive& d : directives_) observer->OnDirective(ToProto(d));
  }
  if (state_ != v1::RUN_STATE_ACTIVE) {
    observer->OnEnded(state_);
    return;
  }
  observers_.insert(observer);
}

void Run::Unwatch(RunObserver* observer) {
  absl::MutexLock l(&mu_);
  observers_.erase(observer);
}

absl::Status Run::Override(const v1::OverridePhaseRequest& req,
                           std::optional<v1::Directive>* issued) {
  absl::MutexLock l(&mu_);
  if (state_ != v1::RUN_STATE_ACTIVE) {
    return absl::FailedPreconditionError(
        absl::StrFormat("run %s is finished; overrides apply to active runs only", name_));
  }
  const uint64_t eff = EffectiveStepLocked();
  switch (req.action()) {
    case v1::OverridePhaseRequest::ACTION_FORCE_PHASE: {
      if (req.phase() == v1::PHASE_UNSPECIFIED || !v1::Phase_IsValid(req.phase())) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "FORCE_PHASE needs phase = ACQUISITION, REFINEMENT, POLISH or DONE; got %d",
            req.phase()));
      }
      IssueLocked(controller_.ForcePhase(FromProto(req.phase()), req.hold(), req.reason(), eff),
                  eff, issued);
      return absl::OkStatus();
    }
    case v1::OverridePhaseRequest::ACTION_PIN_DIRECTIVE: {
      if (!req.has_directive()) {
        return absl::InvalidArgumentError("PIN_DIRECTIVE needs a directive (lr, optimizer)");
      }
      absl::StatusOr<DirectivePlan> plan = PlanFromProto(req.directive());
      if (!plan.ok()) return plan.status();
      IssueLocked(controller_.Pin(*plan, req.reason(), eff), eff, issued);
      return absl::OkStatus();
    }
    case v1::OverridePhaseRequest::ACTION_RELEASE: {
      if (auto d = controller_.Release(req.reason(), eff)) {
        IssueLocked(*d, eff, issued);
      } else {
        const Phase p = controller_.phase();
        RecordTransitionLocked({eff, deps_.clock->Now(), p, p, Cause::kRelease,
                                "operator released the run to automatic control" +
                                    (req.reason().empty() ? "" : ": " + req.reason()),
                                {}, 0});
      }
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "action %d: expected FORCE_PHASE, PIN_DIRECTIVE or RELEASE", req.action()));
  }
}

void Run::Finish(const std::string& reason) {
  absl::MutexLock l(&mu_);
  if (state_ != v1::RUN_STATE_ACTIVE) return;
  if (controller_.phase() != Phase::kDone) {
    const uint64_t eff = EffectiveStepLocked();
    IssueLocked(controller_.Finish(Cause::kFinish,
                                   "run finished by the API" +
                                       (reason.empty() ? "" : ": " + reason),
                                   eff),
                eff);
  }
  state_ = v1::RUN_STATE_FINISHED;
  for (RunObserver* o : observers_) o->OnEnded(state_);
  observers_.clear();
  for (auto& [id, r] : ranks_) r->connected = 0;
  metrics_.reset();
  deps_.metrics->runs_active.Decrement();
  deps_.metrics->runs_finished.Increment();
}

void Run::End() {
  absl::MutexLock l(&mu_);
  for (RunObserver* o : observers_) o->OnEnded(state_);
  observers_.clear();
  for (auto& [id, r] : ranks_) r->connected = 0;
  metrics_.reset();
  if (state_ == v1::RUN_STATE_ACTIVE) {
    deps_.metrics->runs_active.Decrement();
  } else {
    deps_.metrics->runs_finished.Decrement();
  }
  state_ = v1::RUN_STATE_UNSPECIFIED;
}

bool Run::finished() const {
  absl::MutexLock l(&mu_);
  return state_ != v1::RUN_STATE_ACTIVE;
}

v1::RunInfo Run::Info() const {
  absl::MutexLock l(&mu_);
  v1::RunInfo info;
  info.set_name(name_);
  *info.mutable_config() = config_;
  info.set_state(state_);
  info.set_phase(ToProto(controller_.phase()));
  info.set_overridden(controller_.held());
  if (!directives_.empty()) *info.mutable_directive() = ToProto(directives_.back());
  if (latest_.step() > 0 || latest_.has_covariance()) *info.mutable_latest() = latest_;
  std::vector<const RankState*> ranks;
  for (const auto& [id, r] : ranks_) ranks.push_back(r.get());
  std::sort(ranks.begin(), ranks.end(),
            [](const RankState* a, const RankState* b) { return a->rank < b->rank; });
  for (const RankState* r : ranks) {
    v1::RankStatus* s = info.add_ranks();
    s->set_rank(r->rank);
    s->set_last_step(r->reported_step);
    {
      absl::MutexLock rl(&const_cast<RankState*>(r)->mu);
      s->set_last_seq(r->last_seq);
    }
    s->set_uploads(r->uploads);
    s->set_rows(r->rows);
    s->set_rejects(r->rejects);
    s->set_connected(r->connected > 0);
    if (r->last_seen != absl::InfinitePast()) ToProto(r->last_seen, s->mutable_last_seen());
  }
  for (const v1::PhaseTransition& t : transitions_) *info.add_transitions() = t;
  ToProto(created_at_, info.mutable_created_at());
  info.set_max_step(max_step_);
  info.set_points(points_.size());
  return info;
}

v1::RunSummary Run::Summary() const {
  absl::MutexLock l(&mu_);
  v1::RunSummary s;
  s.set_name(name_);
  s.set_state(state_);
  s.set_phase(ToProto(controller_.phase()));
  s.set_mode(config_.mode());
  s.set_max_step(max_step_);
  s.set_total_steps(config_.total_steps());
  uint32_t connected = 0;
  for (const auto& [id, r] : ranks_) connected += r->connected > 0 ? 1 : 0;
  s.set_connected_ranks(connected);
  s.set_world_size(config_.world_size());
  if (!points_.empty()) *s.mutable_latest() = points_.back();
  ToProto(created_at_, s.mutable_created_at());
  *s.mutable_labels() = config_.labels();
  return s;
}

v1::GetTrajectoryResponse Run::Trajectory(uint64_t since_step) const {
  absl::MutexLock l(&mu_);
  v1::GetTrajectoryResponse out;
  for (const v1::TrajectoryPoint& p : points_) {
    if (p.step() >= since_step) *out.add_points() = p;
  }
  for (const v1::PhaseTransition& t : transitions_) *out.add_transitions() = t;
  for (const Directive& d : directives_) *out.add_directives() = ToProto(d);
  return out;
}

}  // namespace spotter
