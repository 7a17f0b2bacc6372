// One rank of a run: its Frequent Directions window, its sequence numbers,
// its loss totals and its upload cadence (from which a directive's
// effective_step margin is derived).
#ifndef SPOTTER_SERVER_RUNS_RANK_STATE_H_
#define SPOTTER_SERVER_RUNS_RANK_STATE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/spectrum/moments.h"
#include "core/types.h"
#include "server/storage/spotter_state.pb.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// Thread-safe through its own lock `mu`: ingestion for different ranks of a
// run proceeds in parallel. The fields under `mu` are read by the owning Run
// with `mu` held; `rejects` and `connected` belong to the Run's lock. Lock
// order: the Run's lock before `mu`, never the reverse.
class RankState {
 public:
  RankState(uint32_t rank, int dim, int sketch_rows, const WindowOptions& window);

  // Applies a validated batch (decoded `rows`) received at `now`: adds it to
  // the window, advances seq and step, the loss totals and the cadence.
  // Precondition: b.seq() > last_seq and (no step yet or b.step() >= last_step).
  void ApplyLocked(const v1::SketchBatch& b, const RowMatrixXf& rows, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Steps this rank may advance before a directive issued now reaches it:
  // its step rate times `budget_seconds` plus its steps between uploads, plus
  // one. 0 until it has a cadence (two uploads at different steps).
  uint64_t DeliveryMarginLocked(double budget_seconds) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // The durable record of everything but the window, and its restore (the
  // rate baseline restarts at `now`: the time since a crash is no cadence).
  state::RankRecord RecordLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void RestoreLocked(const state::RankRecord& r, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Hello.incarnation `id` joins this rank. Returns false when `id` is a
  // retired incarnation (fenced off). A new id on a rank that already had one
  // starts a new incarnation: a fresh seq space (last_seq and durable_seq 0),
  // no step floor, no cadence, and (when the rank had applied a step) a
  // pending restart, recorded at its first step. Sets *restarted then.
  bool JoinIncarnationLocked(uint64_t id, bool* restarted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Raises durable_seq to `seq` when called (after the entry queued next is
  // committed). The callback may outlive the rank.
  std::function<void()> MarkDurable(uint64_t seq) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  const uint32_t rank;

  absl::Mutex mu;
  RankAccumulator acc ABSL_GUARDED_BY(mu);
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;
  uint64_t last_step ABSL_GUARDED_BY(mu) = 0;
  bool any_step ABSL_GUARDED_BY(mu) = false;
  uint64_t uploads ABSL_GUARDED_BY(mu) = 0;
  uint64_t rows ABSL_GUARDED_BY(mu) = 0;
  double loss_sum ABSL_GUARDED_BY(mu) = 0.0;  // cumulative, uploads with a loss
  uint64_t loss_count ABSL_GUARDED_BY(mu) = 0;
  double last_loss ABSL_GUARDED_BY(mu) = std::numeric_limits<double>::quiet_NaN();
  // Uploads with loss_non_finite since the run's last evaluation took them
  // (not persisted: a restart forgets those not yet evaluated).
  uint64_t nonfinite_losses ABSL_GUARDED_BY(mu) = 0;
  // The latest lr an upload gave (uploads may leave it out: NaN).
  double last_lr ABSL_GUARDED_BY(mu) = std::numeric_limits<double>::quiet_NaN();
  uint64_t reported_step ABSL_GUARDED_BY(mu) = 0;
  absl::Time last_seen ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  // The upload log since the last checkpoint.
  uint64_t logged_uploads ABSL_GUARDED_BY(mu) = 0;
  size_t logged_bytes ABSL_GUARDED_BY(mu) = 0;
  // The highest seq whose effect is durable: what a Welcome and RankStatus
  // report, so that a client never drops an upload a crash could still lose.
  // Set by commit callbacks (which may outlive the run, hence shared).
  // Replaced (not reset) by a new incarnation: commits of the earlier one
  // still in flight raise the old counter, not the new seq space's.
  std::shared_ptr<std::atomic<uint64_t>> durable_seq ABSL_GUARDED_BY(mu) =
      std::make_shared<std::atomic<uint64_t>>(0);
  // The process incarnation whose seq space this is (see JoinIncarnationLocked).
  uint64_t incarnation ABSL_GUARDED_BY(mu) = 0;
  bool incarnation_set ABSL_GUARDED_BY(mu) = false;
  // The current incarnation restarted the rank; cleared by its first step.
  bool restart_pending ABSL_GUARDED_BY(mu) = false;
  uint64_t uploads_before_restart ABSL_GUARDED_BY(mu) = 0;

  // Under the owning Run's lock.
  uint64_t rejects = 0;
  int connected = 0;

 private:
  // Updates the step rate and the gap between uploads for an upload at `step`.
  void NoteCadenceLocked(uint64_t step, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  bool has_upload_ ABSL_GUARDED_BY(mu) = false;
  uint64_t last_upload_step_ ABSL_GUARDED_BY(mu) = 0;
  absl::Time rate_anchor_time_ ABSL_GUARDED_BY(mu);  // start of the current rate baseline
  uint64_t rate_anchor_step_ ABSL_GUARDED_BY(mu) = 0;
  double rate_ ABSL_GUARDED_BY(mu) = 0.0;  // steps per second, over >= kRateBaseline (EMA)
  bool rate_known_ ABSL_GUARDED_BY(mu) = false;
  double gap_ ABSL_GUARDED_BY(mu) = 0.0;  // steps between consecutive uploads (EMA)
  int cadence_samples_ ABSL_GUARDED_BY(mu) = 0;
  // Earlier incarnations of this rank, newest last (at most kRetiredKept).
  std::vector<uint64_t> retired_ ABSL_GUARDED_BY(mu);
};

// A joined stream's rank and the incarnation it joined as.
struct RankHandle {
  RankState* state = nullptr;
  uint64_t incarnation = 0;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_RANK_STATE_H_
