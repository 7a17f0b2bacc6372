// One training run: its ranks' sketches, its trajectory, its phase controller
// and the directives it has issued, and the streams that listen to it.
//
// Durability: every change is queued to the server's Committer (group
// commit) in the critical section that makes it, so the store sees changes in
// the order they happened. An upload's rank record and logged batch are one
// queue entry; a directive, its transition, the point that fired it and the
// controller's state are one entry. Events (points, transitions, directives,
// the end of the run) reach observers only after the commit holding them:
// nothing a client saw can be lost or issued twice by a crash.
#ifndef SPOTTER_SERVER_RUNS_RUN_H_
#define SPOTTER_SERVER_RUNS_RUN_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
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
#include "server/metrics/metrics.h"
#include "server/runs/eval_pool.h"
#include "server/runs/limits.h"
#include "server/runs/point_history.h"
#include "server/runs/rank_state.h"
#include "server/runs/rejection.h"
#include "server/runs/run_config.h"
#include "server/runs/trajectory_point.h"
#include "server/storage/committer.h"
#include "server/storage/journal.h"
#include "server/storage/records.h"
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
  // The run is moving to another replica (Run::Freeze): `status` is the
  // UNAVAILABLE that ends the stream; no event follows.
  virtual void OnMoved(const absl::Status& status) { OnEnded(v1::RUN_STATE_UNSPECIFIED); }
};

// When a rank's sketch is checkpointed (and its upload log truncated).
struct CheckpointPolicy {
  // After this many logged uploads of the rank...
  uint32_t every_uploads = 256;
  // ...or this many logged bytes, whichever comes first.
  size_t every_bytes = 16 << 20;
};

// What a run needs from the server. All pointers outlive the run.
struct RunDeps {
  Clock* clock = nullptr;
  EvalPool* pool = nullptr;
  ServerMetrics* metrics = nullptr;
  Committer* committer = nullptr;
  // False when the store keeps nothing: uploads are then not logged.
  bool persistent = false;
  // Where a run's older trajectory points are read back from (when
  // persistent); trajectory points kept in memory per run.
  Store* store = nullptr;
  size_t point_window = kDefaultPointWindow;
  CheckpointPolicy checkpoint;
  Limits limits;
};

// A rank's sketch as the store holds it: its checkpoint (if any), then the
// uploads logged after it, replayed. DATA_LOSS / INVALID_ARGUMENT naming what
// does not decode. (Run::Restore uses it; so does the crash test's checker.)
absl::StatusOr<RankAccumulator> RestoreRankAccumulator(const LoadedRank& rank,
                                                       const v1::RunConfig& config);

// What GetTrajectory asks of a run (the service validates the request).
struct TrajectoryQuery {
  uint64_t since_step = 0;                                   // inclusive
  uint64_t until_step = std::numeric_limits<uint64_t>::max();  // inclusive
  size_t page_size = 1000;
  // > 0: the whole range in one response, downsampled to at most this many
  // points (>= 4) when it holds more; page_size is then ignored.
  size_t max_points = 0;
};

struct TrajectoryPage {
  // Points, transitions, directives, restarts, run_points, downsampled.
  v1::GetTrajectoryResponse response;
  // The first step of the next page; none when this page is the last.
  std::optional<uint64_t> next_step;
};

// Thread-safe. Lock order: Run::mu_ before a rank's lock; a rank's lock is
// never held while taking mu_. The committer's queue lock is taken under
// either.
class Run : public std::enable_shared_from_this<Run> {
 public:
  // A new run. `config` must be an effective config (ResolveRunConfig).
  // `owner` is the principal that created it; `order` its creation order.
  // Its records and opening directive are queued to the committer.
  static std::shared_ptr<Run> Create(std::string name, v1::RunConfig config, std::string owner,
                                     uint64_t order, const RunDeps& deps);
  // A run as the store holds it (LoadState): restores the controller, the
  // directives and history, and every rank's sketch (checkpoint, then the
  // logged uploads replayed). DATA_LOSS naming the run and rank when a record
  // does not decode.
  static absl::StatusOr<std::shared_ptr<Run>> Restore(LoadedRun loaded, const RunDeps& deps);
  ~Run();

  const std::string& name() const { return name_; }
  const v1::RunConfig& config() const { return config_; }
  const std::string& owner() const { return owner_; }
  uint64_t order() const { return order_; }

  // A stream's Hello: checks the rank and projection and attaches `observer`,
  // which first gets the Welcome, then every directive newer than
  // hello.last_directive_version (in version order), then (if the run has
  // ended) OnEnded. Returns the rank's handle for the calls below.
  // INVALID_ARGUMENT: rank out of range. FAILED_PRECONDITION: projection spec
  // differs from the run's. RESOURCE_EXHAUSTED: the run has its quota of
  // Connect streams.
  // FAILED_PRECONDITION too when hello.incarnation is one a restarted
  // process replaced (docs/RESTARTS.md).
  absl::StatusOr<RankHandle> Join(const v1::Hello& hello, RunObserver* observer);
  // Detaches a stream's observer; after it returns the observer gets no calls.
  void Leave(RankState* rank, RunObserver* observer);

  // Applies a decoded batch from a joined rank. nullopt: applied, or dropped
  // as a duplicate (then *duplicate is set); otherwise the rejection
  // (SUPERSEDED once a newer incarnation of the rank has joined).
  std::optional<Rejection> Ingest(const RankHandle& rank, const v1::SketchBatch& batch,
                                  const RowMatrixXf& rows, bool* duplicate);
  std::optional<Rejection> Report(const RankHandle& rank, const v1::EvalReport& report,
                                  bool* duplicate);
  void Heartbeat(const RankHandle& rank, uint64_t step);
  // Counts a rejected message against the rank (RankStatus.rejects).
  void NoteReject(RankState* rank);

  // Attaches a WatchRun observer; with include_history, replays the history
  // to it first. If the run has ended, the observer gets OnEnded at once.
  // RESOURCE_EXHAUSTED when the run has its quota of watchers.
  // History older than the in-memory window is read from the store; beyond
  // history_max_points (>= 4) it is min/max downsampled (point_history.h).
  absl::Status Watch(RunObserver* observer, bool include_history,
                     size_t history_max_points = 5000);
  void Unwatch(RunObserver* observer);

  // Operator control. FAILED_PRECONDITION on a finished run; INVALID_ARGUMENT
  // on a malformed request. Fills the issued directive, if any. The change is
  // queued to the committer; callers reply after a barrier.
  absl::Status Override(const v1::OverridePhaseRequest& request,
                        std::optional<v1::Directive>* issued);

  // Issues the final stop directive (unless already DONE), marks the run
  // finished, ends every stream (once the stop directive is durable) and
  // removes the per-run metric series. Idempotent.
  void Finish(const std::string& reason);
  // Ends every stream and stops persisting anything (the run is being
  // deleted; the registry queues the deletion of its rows).
  void End();

  // Moving the run to another replica (ExportRun, docs/SCALING.md): after it
  // returns, nothing more of the run is acknowledged or written here. Every
  // upload, report or Hello answers UNAVAILABLE naming `moved_to`, every
  // stream ends with that status, evaluations stop, and the journal is
  // closed; a last controller record marking the run moved is queued, so a
  // commit barrier after Freeze covers every acknowledged change and the
  // tombstone survives a restart. Idempotent, except that a later call
  // rewrites the tombstone to name its `moved_to`. NOT_FOUND for a deleted
  // run.
  absl::Status Freeze(const std::string& moved_to);
  // OK, or the UNAVAILABLE a frozen run answers (labelled run_moving).
  absl::Status MovedStatus() const;
  bool moving() const { return moving_; }

  v1::RunInfo Info() const;
  v1::RunSummary Summary() const;
  // A page of the run's published trajectory (older points read back from
  // the store outside the run's lock). ABORTED when the run was deleted
  // while it was read; DATA_LOSS for a damaged stored point.
  absl::StatusOr<TrajectoryPage> Trajectory(const TrajectoryQuery& query) const;
  // Restart events of the run, published ones only.
  std::vector<v1::RestartEvent> Restarts() const;
  bool finished() const;
  // When the run finished (its last directive's issue time); nullopt while
  // it is active.
  std::optional<absl::Time> FinishedAt() const;

 private:
  // What a commit makes visible to observers.
  struct Published {
    size_t points = 0;
    size_t transitions = 0;
    size_t directives = 0;
    size_t restarts = 0;
    bool ended = false;
  };

  Run(std::string name, v1::RunConfig config, std::string owner, uint64_t order,
      const RunDeps& deps);

  // The step a directive issued now takes effect at: beyond every rank's
  // reported step by a margin from the observed upload cadence.
  uint64_t EffectiveStepLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a directive and its transition (published after the next
  // CommitLocked). Takes no rank lock.
  void IssueLocked(const Decision& decision, uint64_t effective_step,
                   std::optional<v1::Directive>* issued = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordTransitionLocked(const Transition& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The rejection for an upload or report of a superseded incarnation, or
  // nullopt. With a pending restart, takes its resume step (`step`) and sets
  // *resumed to the event to record.
  std::optional<Rejection> CheckIncarnationLocked(RankState* rank, uint64_t incarnation,
                                                  uint64_t step,
                                                  std::optional<v1::RestartEvent>* resumed) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(rank->mu);
  // Records a restart (the run's max step as its redone_through); the next
  // CommitLocked persists and publishes it.
  void AddRestartLocked(v1::RestartEvent e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets p.redone from the published restarts.
  void MarkRedoneLocked(v1::TrajectoryPoint* p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The published history, to read outside the lock: a reader and the
  // published restarts (to mark redone points).
  std::pair<PointReader, std::vector<v1::RestartEvent>> HistoryLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `ops`, the unqueued points/transitions/directives and the
  // controller record, and publishes them to observers once durable.
  // `on_durable` runs after that commit, before the events are published.
  void CommitLocked(std::vector<StoreOp> ops = {}, std::function<void()> on_durable = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  state::ControllerRecord ControllerRecordLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends observers the events up to `upto` not sent yet (committer thread).
  void Publish(const Published& upto);
  void MaybeScheduleEvalLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Evaluate();
  RankState* RankLocked(uint32_t rank) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every rank of the run, in rank order.
  std::vector<RankState*> RanksByIdLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t StreamQuota() const;
  absl::Status MovedStatusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What an upload or report of a frozen run gets (Rejection::moving).
  static Rejection MovingRejection(const std::string& run);

  const std::string name_;
  const v1::RunConfig config_;
  const std::string owner_;
  const uint64_t order_;
  const RunDeps deps_;
  const WindowOptions window_;
  const SpectrumOptions spectrum_;
  const std::shared_ptr<Journal> journal_;
  // Set once the run has finished or been deleted: uploads are refused.
  std::atomic<bool> closed_{false};
  // Set once by Freeze (under mu_ and then each rank's lock): the run moved.
  std::atomic<bool> moving_{false};

  mutable absl::Mutex mu_;
  v1::RunState state_ ABSL_GUARDED_BY(mu_) = v1::RUN_STATE_ACTIVE;
  absl::Time created_at_ ABSL_GUARDED_BY(mu_);
  PhaseController controller_ ABSL_GUARDED_BY(mu_);
  uint64_t declared_input_dim_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint32_t, std::unique_ptr<RankState>> ranks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<RunObserver*> observers_ ABSL_GUARDED_BY(mu_);
  int watchers_ ABSL_GUARDED_BY(mu_) = 0;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  // Every point, transition and directive made; the first published_.* of
  // each are durable and have been sent to observers, the first queued_.*
  // are queued to the committer. Of the points only the newest are in
  // memory (point_history.h); published ones beyond it are in the store.
  std::vector<Directive> directives_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::PhaseTransition> transitions_ ABSL_GUARDED_BY(mu_);
  PointHistory points_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::RestartEvent> restarts_ ABSL_GUARDED_BY(mu_);
  Published published_ ABSL_GUARDED_BY(mu_);
  Published queued_ ABSL_GUARDED_BY(mu_);
  v1::TrajectoryPoint latest_ ABSL_GUARDED_BY(mu_);            // with eigenvalues
  v1::TrajectoryPoint latest_published_ ABSL_GUARDED_BY(mu_);  // what readers see
  uint64_t max_step_ ABSL_GUARDED_BY(mu_) = 0;
  // Per rank, the cumulative loss sum and count its last evaluation used.
  LossBaselines loss_baseline_ ABSL_GUARDED_BY(mu_);
  // Non-finite losses the ranks reported that no observation has carried to
  // the controller yet (the divergence signal).
  uint64_t nonfinite_losses_ ABSL_GUARDED_BY(mu_) = 0;
  double val_metric_ ABSL_GUARDED_BY(mu_);
  uint64_t next_eval_step_ ABSL_GUARDED_BY(mu_);
  bool eval_busy_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<RunMetrics> metrics_ ABSL_GUARDED_BY(mu_);
  // Where the run moved (Freeze); empty while it lives here.
  std::string moved_to_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_RUN_H_
