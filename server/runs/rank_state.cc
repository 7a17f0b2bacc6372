#include "server/runs/rank_state.h"

#include <algorithm>
#include <cmath>

namespace spotter {
namespace {
// Smoothing of the upload-cadence estimates (EMA weight of a new sample).
constexpr double kCadenceAlpha = 0.3;
// The step rate is measured over at least this long, so bursts of uploads
// (a trainer catching up) do not read as absurd rates.
constexpr absl::Duration kRateBaseline = absl::Seconds(1);
// Until a rank's first full baseline, its rate since its first upload, once
// that spans this long: directives issued in a run's first second must cover
// the delivery budget too.
constexpr absl::Duration kProvisionalBaseline = absl::Milliseconds(100);
// Retired incarnations remembered per rank (a zombie older than these could
// rejoin; restarts are rare, so this is many restarts deep).
constexpr size_t kRetiredKept = 32;
}  // namespace

RankState::RankState(uint32_t r, int dim, int sketch_rows, const WindowOptions& window)
    : rank(r), acc(dim, sketch_rows, window) {}

void RankState::ApplyLocked(const v1::SketchBatch& b, const RowMatrixXf& batch_rows,
                            absl::Time now) {
  // A non-finite loss carries placeholder rows (its gradients were likely
  // non-finite too): counted for the divergence signal, not sketched.
  if (b.loss_non_finite()) {
    ++nonfinite_losses;
  } else {
    acc.Add(b.step(), batch_rows, b.samples_per_row() == 0 ? 1.0 : b.samples_per_row());
    rows += b.rows();
  }
  last_seq = b.seq();
  last_step = b.step();
  any_step = true;
  ++uploads;
  last_seen = now;
  reported_step = std::max(reported_step, b.step());
  if (!std::isnan(b.loss())) {
    loss_sum += b.loss();
    ++loss_count;
    last_loss = b.loss();
  }
  if (!std::isnan(b.lr())) last_lr = b.lr();
  NoteCadenceLocked(b.step(), now);
}

void RankState::NoteCadenceLocked(uint64_t step, absl::Time now) {
  if (!has_upload_) {
    has_upload_ = true;
    last_upload_step_ = step;
    rate_anchor_time_ = now;
    rate_anchor_step_ = step;
    return;
  }
  if (step <= last_upload_step_) return;
  const double ds = static_cast<double>(step - last_upload_step_);
  const double a = cadence_samples_ == 0 ? 1.0 : kCadenceAlpha;
  gap_ = (1 - a) * gap_ + a * ds;
  ++cadence_samples_;
  last_upload_step_ = step;
  const absl::Duration span = now - rate_anchor_time_;
  if (span >= kRateBaseline) {
    const double r = static_cast<double>(step - rate_anchor_step_) / absl::ToDoubleSeconds(span);
    rate_ = rate_known_ ? 0.5 * rate_ + 0.5 * r : r;
    rate_known_ = true;
    rate_anchor_time_ = now;
    rate_anchor_step_ = step;
  } else if (!rate_known_ && span >= kProvisionalBaseline) {
    rate_ = static_cast<double>(step - rate_anchor_step_) / absl::ToDoubleSeconds(span);
  }
}

uint64_t RankState::DeliveryMarginLocked(double budget_seconds) const {
  if (cadence_samples_ == 0) return 0;
  const double m = std::ceil(rate_ * budget_seconds + gap_) + 1.0;
  return static_cast<uint64_t>(std::min(m, 1e9));
}

bool RankState::JoinIncarnationLocked(uint64_t id, bool* restarted) {
  *restarted = false;
  if (!incarnation_set) {
    // The rank's first stream (or state from a server without incarnations):
    // adopt the id and keep the seq space.
    incarnation = id;
    incarnation_set = true;
    return true;
  }
  if (id == incarnation) return true;
  if (std::find(retired_.begin(), retired_.end(), id) != retired_.end()) return false;
  retired_.push_back(incarnation);
  if (retired_.size() > kRetiredKept) retired_.erase(retired_.begin());
  incarnation = id;
  *restarted = any_step || last_seq > 0;
  if (*restarted) {
    restart_pending = true;
    uploads_before_restart = uploads;
  }
  last_seq = 0;
  durable_seq = std::make_shared<std::atomic<uint64_t>>(0);
  any_step = false;  // the new process may resume before the last step
  // The cadence restarts from the new process's first upload; the rate and
  // the gap between uploads carry over (the same job, the same pace).
  has_upload_ = false;
  return true;
}

std::function<void()> RankState::MarkDurable(uint64_t seq) const {
  return [d = durable_seq, seq] {
    uint64_t cur = d->load();
    while (cur < seq && !d->compare_exchange_weak(cur, seq)) {
    }
  };
}

state::RankRecord RankState::RecordLocked() const {
  state::RankRecord r;
  r.set_rank(rank);
  r.set_last_seq(last_seq);
  r.set_last_step(last_step);
  r.set_any_step(any_step);
  r.set_uploads(uploads);
  r.set_rows(rows);
  r.set_loss_sum(loss_sum);
  r.set_loss_count(loss_count);
  r.set_last_loss(last_loss);
  r.set_last_lr(last_lr);
  r.set_reported_step(reported_step);
  r.set_gap(gap_);
  r.set_rate(rate_);
  r.set_rate_known(rate_known_);
  r.set_cadence_samples(static_cast<uint32_t>(cadence_samples_));
  r.set_last_upload_step(last_upload_step_);
  r.set_incarnation(incarnation);
  r.set_incarnation_set(incarnation_set);
  for (uint64_t id : retired_) r.add_retired_incarnations(id);
  r.set_restart_pending(restart_pending);
  r.set_uploads_before_restart(uploads_before_restart);
  return r;
}

void RankState::RestoreLocked(const state::RankRecord& r, absl::Time now) {
  last_seq = r.last_seq();
  last_step = r.last_step();
  any_step = r.any_step();
  uploads = r.uploads();
  rows = r.rows();
  loss_sum = r.loss_sum();
  loss_count = r.loss_count();
  last_loss = r.last_loss();
  last_lr = r.last_lr();
  reported_step = r.reported_step();
  gap_ = r.gap();
  rate_ = r.rate();
  rate_known_ = r.rate_known();
  cadence_samples_ = static_cast<int>(std::min<uint32_t>(r.cadence_samples(), 1u << 30));
  last_upload_step_ = r.last_upload_step();
  has_upload_ = r.uploads() > 0;
  // The rate baseline restarts: the time since the crash is no cadence.
  rate_anchor_time_ = now;
  rate_anchor_step_ = last_upload_step_;
  incarnation = r.incarnation();
  incarnation_set = r.incarnation_set();
  retired_.assign(r.retired_incarnations().begin(), r.retired_incarnations().end());
  restart_pending = r.restart_pending();
  uploads_before_restart = r.uploads_before_restart();
  durable_seq->store(last_seq);
}

}  // namespace spotter
