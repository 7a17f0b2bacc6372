#include <utility>

#include "core/phase/controller_codec.h"
#include "proto/convert/directive.h"
#include "server/runs/run.h"

namespace spotter {

state::ControllerRecord Run::ControllerRecordLocked() const {
  state::ControllerRecord c;
  c.set_state(state_);
  c.set_controller(EncodeControllerState(controller_));
  c.set_next_eval_step(next_eval_step_);
  c.set_val_metric(val_metric_);
  *c.mutable_latest() = latest_;
  c.set_declared_input_dim(declared_input_dim_);
  for (const auto& [rank, base] : loss_baseline_) {
    state::LossBaseline& b = (*c.mutable_loss_baseline())[rank];
    b.set_sum(base.first);
    b.set_count(base.second);
  }
  c.set_max_step(max_step_);
  c.set_points(queued_.points);
  c.set_transitions(queued_.transitions);
  c.set_directives(queued_.directives);
  for (const v1::RestartEvent& e : restarts_) *c.add_restarts() = e;
  c.set_moved_to(moved_to_);
  return c;
}

void Run::CommitLocked(std::vector<StoreOp> ops, std::function<void()> on_durable) {
  const Published target{static_cast<size_t>(points_.size()), transitions_.size(), directives_.size(),
                         restarts_.size(), state_ != v1::RUN_STATE_ACTIVE};
  if (deps_.persistent) {
    for (size_t i = queued_.points; i < target.points; ++i) {
      ops.push_back(PutPointRecord(name_, i, points_.at(i)));
    }
    for (size_t i = queued_.transitions; i < target.transitions; ++i) {
      ops.push_back(PutTransitionRecord(name_, i, transitions_[i]));
    }
    for (size_t i = queued_.directives; i < target.directives; ++i) {
      ops.push_back(PutDirectiveRecord(name_, ToProto(directives_[i])));
    }
  }
  queued_ = target;
  if (deps_.persistent) ops.push_back(PutControllerRecord(name_, ControllerRecordLocked()));
  std::weak_ptr<Run> weak = weak_from_this();
  journal_->Enqueue(std::move(ops),
                    [weak, target, on_durable = std::move(on_durable)](const absl::Status& s) {
                      // A failed commit publishes nothing: clients must not see what may be
                      // lost. The server stops taking writes (see Committer).
                      if (!s.ok()) return;
                      if (on_durable) on_durable();
                      if (std::shared_ptr<Run> run = weak.lock()) run->Publish(target);
                    });
}

void Run::Publish(const Published& upto) {
  absl::MutexLock l(&mu_);
  for (; published_.points < upto.points; ++published_.points) {
    const size_t i = published_.points;
    // The newest point goes out with its eigenvalues (history keeps none).
    const bool newest = i + 1 == points_.size() && latest_.step() == points_.at(i).step();
    const v1::TrajectoryPoint& p = newest ? latest_ : points_.at(i);
    latest_published_ = p;
    for (RunObserver* o : observers_) o->OnPoint(p);
  }
  for (; published_.transitions < upto.transitions; ++published_.transitions) {
    for (RunObserver* o : observers_) o->OnTransition(transitions_[published_.transitions]);
  }
  for (; published_.directives < upto.directives; ++published_.directives) {
    const v1::Directive d = ToProto(directives_[published_.directives]);
    for (RunObserver* o : observers_) o->OnDirective(d);
  }
  // Published points are durable: beyond the window, the store has them.
  points_.Trim(published_.points);
  // Restarts have no observer event: GetRun and GetTrajectory read them.
  published_.restarts = std::max(published_.restarts, upto.restarts);
  if (upto.ended && !published_.ended) {
    published_.ended = true;
    for (RunObserver* o : observers_) o->OnEnded(state_);
    observers_.clear();
    streams_ = 0;
    watchers_ = 0;
    for (auto& [id, r] : ranks_) r->connected = 0;
  }
}

}  // namespace spotter
