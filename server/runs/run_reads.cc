// Run's read side: WatchRun's attach with its history, GetRun, ListRuns and
// GetTrajectory. Older trajectory points are read from the store outside
// the run's lock (point_history.h).
#include <algorithm>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "proto/convert/directive.h"
#include "server/runs/run.h"

namespace spotter {

namespace {

void MarkRedone(const v1::RestartEvent* restarts, size_t n, v1::TrajectoryPoint* p) {
  for (size_t i = 0; i < n; ++i) {
    const v1::RestartEvent& e = restarts[i];
    if (p->step() >= e.resume_step() && p->step() <= e.redone_through()) {
      p->set_redone(true);
      return;
    }
  }
}

}  // namespace

void Run::MarkRedoneLocked(v1::TrajectoryPoint* p) const {
  MarkRedone(restarts_.data(), published_.restarts, p);
}

std::pair<PointReader, std::vector<v1::RestartEvent>> Run::HistoryLocked() const {
  return {PointReader(points_.Snapshot(published_.points)),
          {restarts_.begin(), restarts_.begin() + static_cast<std::ptrdiff_t>(published_.restarts)}};
}

absl::Status Run::Watch(RunObserver* observer, bool include_history,
                        size_t history_max_points) {
  // The history beyond the in-memory window is read outside the lock; the
  // points published meanwhile are still in memory (unless more than a
  // window of them was: then it reads again).
  for (;;) {
    std::vector<v1::TrajectoryPoint> history;
    uint64_t read_upto = 0;
    if (include_history) {
      std::optional<PointReader> reader;
      {
        absl::MutexLock l(&mu_);
        reader.emplace(HistoryLocked().first);
      }
      absl::StatusOr<std::vector<v1::TrajectoryPoint>> read =
          ReadDownsampled(*reader, 0, reader->size(), std::max<size_t>(history_max_points, 4));
      if (!read.ok()) return read.status();
      history = *std::move(read);
      read_upto = reader->published();
    }
    absl::MutexLock l(&mu_);
    if (include_history && points_.first() > read_upto) continue;
    if (!published_.ended && watchers_ >= static_cast<int>(deps_.limits.max_watchers_per_run)) {
      return WithReason(absl::ResourceExhaustedError(
                            absl::StrFormat("run %s has %d WatchRun streams open, its quota "
                                            "(--max_watchers_per_run)",
                                            name_, watchers_)),
                        "run_watcher_quota");
    }
    if (include_history) {
      for (v1::TrajectoryPoint& p : history) {
        MarkRedoneLocked(&p);
        observer->OnPoint(p);
      }
      for (uint64_t i = read_upto; i < published_.points; ++i) {
        v1::TrajectoryPoint p = points_.at(i);
        MarkRedoneLocked(&p);
        observer->OnPoint(p);
      }
      for (size_t i = 0; i < published_.transitions; ++i) observer->OnTransition(transitions_[i]);
      for (size_t i = 0; i < published_.directives; ++i) {
        observer->OnDirective(ToProto(directives_[i]));
      }
    }
    if (published_.ended) {
      observer->OnEnded(state_);
      return absl::OkStatus();
    }
    observers_.insert(observer);
    ++watchers_;
    return absl::OkStatus();
  }
}

void Run::Unwatch(RunObserver* observer) {
  absl::MutexLock l(&mu_);
  if (observers_.erase(observer) > 0) --watchers_;
}

bool Run::finished() const {
  absl::MutexLock l(&mu_);
  return state_ != v1::RUN_STATE_ACTIVE;
}

std::optional<absl::Time> Run::FinishedAt() const {
  absl::MutexLock l(&mu_);
  if (state_ == v1::RUN_STATE_ACTIVE || directives_.empty()) return std::nullopt;
  return directives_.back().issued_at;
}

v1::RunInfo Run::Info() const {
  absl::MutexLock l(&mu_);
  v1::RunInfo info;
  info.set_name(name_);
  *info.mutable_config() = config_;
  info.set_state(state_);
  info.set_moved_to(moved_to_);
  info.set_phase(ToProto(controller_.phase()));
  info.set_overridden(controller_.held());
  if (published_.directives > 0) {
    *info.mutable_directive() = ToProto(directives_[published_.directives - 1]);
  }
  if (published_.points > 0) *info.mutable_latest() = latest_published_;
  for (RankState* r : RanksByIdLocked()) {
    v1::RankStatus* s = info.add_ranks();
    s->set_rank(r->rank);
    s->set_rejects(r->rejects);
    s->set_connected(r->connected > 0);
    absl::MutexLock rl(&r->mu);
    s->set_last_step(r->reported_step);
    s->set_last_seq(r->durable_seq->load());
    s->set_uploads(r->uploads);
    s->set_rows(r->rows);
    if (r->last_seen != absl::InfinitePast()) ToProto(r->last_seen, s->mutable_last_seen());
  }
  for (size_t i = 0; i < published_.transitions; ++i) *info.add_transitions() = transitions_[i];
  ToProto(created_at_, info.mutable_created_at());
  info.set_max_step(max_step_);
  info.set_points(published_.points);
  for (size_t i = 0; i < published_.restarts; ++i) *info.add_restarts() = restarts_[i];
  return info;
}

v1::RunSummary Run::Summary() const {
  absl::MutexLock l(&mu_);
  v1::RunSummary s;
  s.set_name(name_);
  s.set_state(state_);
  s.set_moved_to(moved_to_);
  s.set_phase(ToProto(controller_.phase()));
  s.set_mode(config_.mode());
  s.set_max_step(max_step_);
  s.set_total_steps(config_.total_steps());
  uint32_t connected = 0;
  for (const auto& [id, r] : ranks_) connected += r->connected > 0 ? 1 : 0;
  s.set_connected_ranks(connected);
  s.set_world_size(config_.world_size());
  if (published_.points > 0) *s.mutable_latest() = points_.at(published_.points - 1);
  ToProto(created_at_, s.mutable_created_at());
  *s.mutable_labels() = config_.labels();
  return s;
}

absl::StatusOr<TrajectoryPage> Run::Trajectory(const TrajectoryQuery& q) const {
  TrajectoryPage page;
  v1::GetTrajectoryResponse& out = page.response;
  std::optional<PointReader> reader;
  std::vector<v1::RestartEvent> restarts;
  {
    absl::MutexLock l(&mu_);
    auto [r, rs] = HistoryLocked();
    reader.emplace(std::move(r));
    restarts = std::move(rs);
    for (size_t i = 0; i < published_.transitions; ++i) *out.add_transitions() = transitions_[i];
    for (size_t i = 0; i < published_.directives; ++i) {
      *out.add_directives() = ToProto(directives_[i]);
    }
    out.set_run_points(published_.points);
  }
  for (const v1::RestartEvent& e : restarts) *out.add_restarts() = e;
  // Outside the lock: the stored part may take a few indexed reads.
  absl::StatusOr<uint64_t> lo = reader->LowerBound(q.since_step);
  if (!lo.ok()) return lo.status();
  absl::StatusOr<uint64_t> hi = reader->size();
  if (q.until_step != std::numeric_limits<uint64_t>::max()) {
    hi = reader->LowerBound(q.until_step + 1);
    if (!hi.ok()) return hi.status();
  }
  auto add = [&](v1::TrajectoryPoint&& p) {
    MarkRedone(restarts.data(), restarts.size(), &p);
    *out.add_points() = std::move(p);
  };
  if (q.max_points > 0) {
    absl::StatusOr<std::vector<v1::TrajectoryPoint>> points =
        ReadDownsampled(*reader, *lo, *hi, q.max_points);
    if (!points.ok()) return points.status();
    for (v1::TrajectoryPoint& p : *points) add(std::move(p));
    out.set_downsampled(reader->lossy() || *hi - *lo > q.max_points);
    return page;
  }
  // One point past the page names the next page's first step.
  const uint64_t end = q.page_size >= *hi - *lo ? *hi : *lo + q.page_size + 1;
  absl::Status s = reader->Read(*lo, end, [&](v1::TrajectoryPoint&& p) {
    if (static_cast<size_t>(out.points_size()) < q.page_size) {
      add(std::move(p));
    } else {
      page.next_step = p.step();
    }
  });
  if (!s.ok()) return s;
  out.set_downsampled(reader->lossy());
  return page;
}

std::vector<v1::RestartEvent> Run::Restarts() const {
  absl::MutexLock l(&mu_);
  return {restarts_.begin(), restarts_.begin() + static_cast<std::ptrdiff_t>(published_.restarts)};
}

}  // namespace spotter
