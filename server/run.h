// One training run: its ranks' sketches, its trajectory, its phase controller
// and the directives it has issued, and the streams that listen to it.
#ifndef SPOTTER_SERVER_RUN_H_
#define SPOTTER_SERVER_RUN_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/phase/controller.h"
#include "core/spectrum/moments.h"
#include "core/util/clock.h"
#include "server/convert.h"
#include "server/eval_pool.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// Receives a run's events. Called with the run's lock held: implementations
// only queue the event and must not call back into the Run.
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  // Connect streams only: the answer to their Hello, before any directive.
  virtual void OnWelcome(const v1::Welcome& welcome) {}
  virtual void OnDirective(const v1::Directive& directive) = 0;
  virtual void OnPoint(const v1::TrajectoryPoint& point) = 0;
  virtual void OnTransition(const v1::PhaseTransition& transition) = 0;
  // The run finished or was deleted; no event follows.
  virtual void OnEnded(v1::RunState state) = 0;
};

// What a run needs from the server. All pointers outlive the run.
struct RunDeps {
  Clock* clock = nullptr;
  EvalPool* pool = nullptr;
  ServerMetrics* metrics = nullptr;
  prometheus::Registry* registry = nullptr;
  Limits limits;
};

// A rank's ingestion state. Ingest for different ranks proceeds in parallel:
// each rank has its own lock.
struct RankState;

// Thread-safe. Lock order: Run::mu_ before a rank's lock; a rank's lock is
// never held while taking mu_.
class Run : public std::enable_shared_from_this<Run> {
 public:
  // `config` must be an effective config (ResolveRunConfig).
  static std::shared_ptr<Run> Create(std::string name, v1::RunConfig config,
                                     const RunDeps& deps);
  ~Run();

  const std::string& name() const { return name_; }
  const v1::RunConfig& config() const { return config_; }

  // A stream's Hello: checks the rank and projection and attaches `observer`,
  // which first gets the Welcome, then every directive newer than
  // hello.last_directive_version (in version order), then (if the run has
  // ended) OnEnded. Returns the rank's handle for the calls below.
  // INVALID_ARGUMENT: rank out of range. FAILED_PRECONDITION: projection spec
  // differs from the run's.
  absl::StatusOr<RankState*> Join(const v1::Hello& hello, RunObserver* observer);
  // Detaches a stream's observer; after it returns the observer gets no calls.
  void Leave(RankState* rank, RunObserver* observer);

  // Applies a decoded batch from a joined rank. nullopt: applied, or dropped
  // as a duplicate (then *duplicate is set); otherwise the rejection.
  std::optional<Rejection> Ingest(RankState* rank, const v1::SketchBatch& batch,
                                  const RowMatrixXf& rows, bool* duplicate);
  std::optional<Rejection> Report(RankState* rank, const v1::EvalReport& report,
                                  bool* duplicate);
  void Heartbeat(RankState* rank, uint64_t step);
  // Counts a rejected message against the rank (RankStatus.rejects).
  void NoteReject(RankState* rank);

  // Attaches a WatchRun observer; with include_history, replays the history
  // to it first. If the run has ended, the observer gets OnEnded at once.
  void Watch(RunObserver* observer, bool include_history);
  void Unwatch(RunObserver* observer);

  // Operator control. FAILED_PRECONDITION on a finished run; INVALID_ARGUMENT
  // on a malformed request. Fills the issued directive, if any.
  absl::Status Override(const v1::OverridePhaseRequest& request,
                        std::optional<v1::Directive>* issued);

  // Issues the final stop directive (unless already DONE), marks the run
  // finished, ends every stream and removes the per-run metric series.
  // Idempotent.
  void Finish(const std::string& reason);
  // Ends every stream (the run is being deleted).
  void End();

  v1::RunInfo Info() const;
  v1::RunSummary Summary() const;
  v1::GetTrajectoryResponse Trajectory(uint64_t since_step) const;
  bool finished() const;

 private:
  Run(std::string name, v1::RunConfig config, const RunDeps& deps);

  // The step a directive issued now takes effect at: beyond every rank's
  // reported step by a margin from the observed upload cadence.
  uint64_t EffectiveStepLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IssueLocked(const Decision& decision, uint64_t effective_step,
                   std::optional<v1::Directive>* issued = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordTransitionLocked(const Transition& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeScheduleEvalLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Evaluate();
  RankState* RankLocked(uint32_t rank) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const v1::RunConfig config_;
  const RunDeps deps_;
  const WindowOptions window_;
  const SpectrumOptions spectrum_;

  mutable absl::Mutex mu_;
  v1::RunState state_ ABSL_GUARDED_BY(mu_) = v1::RUN_STATE_ACTIVE;
  absl::Time created_at_ ABSL_GUARDED_BY(mu_);
  PhaseController controller_ ABSL_GUARDED_BY(mu_);
  uint64_t declared_input_dim_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint32_t, std::unique_ptr<RankState>> ranks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<RunObserver*> observers_ ABSL_GUARDED_BY(mu_);
  std::vector<Directive> directives_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::PhaseTransition> transitions_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::TrajectoryPoint> points_ ABSL_GUARDED_BY(mu_);
  v1::TrajectoryPoint latest_ ABSL_GUARDED_BY(mu_);  // with eigenvalues
  uint64_t max_step_ ABSL_GUARDED_BY(mu_) = 0;
  double loss_sum_ ABSL_GUARDED_BY(mu_) = 0.0;  // since the last evaluation
  uint64_t loss_count_ ABSL_GUARDED_BY(mu_) = 0;
  double last_loss_ ABSL_GUARDED_BY(mu_);
  double last_lr_ ABSL_GUARDED_BY(mu_);
  double val_metric_ ABSL_GUARDED_BY(mu_);
  uint64_t next_eval_step_ ABSL_GUARDED_BY(mu_);
  bool eval_busy_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<RunMetrics> metrics_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUN_H_
