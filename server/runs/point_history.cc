#include "server/runs/point_history.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "server/storage/records.h"

namespace spotter {
namespace {

double RankOf(const v1::TrajectoryPoint& p) {
  const double r = p.covariance().effective_rank().value();
  return std::isnan(r) ? 0.0 : r;
}

// Min/max downsampling, one point at a time: positions [0, n) into `buckets`
// equal buckets, each keeping its points of lowest and highest rank; the
// first and last point of the range always.
class Bucketer {
 public:
  Bucketer(uint64_t n, size_t max_points)
      : n_(n), buckets_(std::max<uint64_t>(1, (max_points - 2) / 2)) {}

  void Add(v1::TrajectoryPoint&& p) {
    const uint64_t i = seen_++;
    const uint64_t b = i * buckets_ / n_;
    if (b != bucket_) Flush();
    bucket_ = b;
    if (i == 0) {
      out_.push_back(std::move(p));  // the first point, always
      return;
    }
    if (i + 1 == n_) {
      Flush();
      out_.push_back(std::move(p));  // the last point, always
      return;
    }
    const double r = RankOf(p);
    if (!lo_ || r < RankOf(lo_->second)) lo_.emplace(i, p);
    if (!hi_ || r > RankOf(hi_->second)) hi_.emplace(i, std::move(p));
  }

  std::vector<v1::TrajectoryPoint> Finish() {
    Flush();
    return std::move(out_);
  }

 private:
  void Flush() {
    if (lo_ && hi_ && lo_->first == hi_->first) lo_.reset();
    if (lo_ && hi_ && hi_->first < lo_->first) std::swap(lo_, hi_);
    if (lo_) out_.push_back(std::move(lo_->second));
    if (hi_) out_.push_back(std::move(hi_->second));
    lo_.reset();
    hi_.reset();
  }

  const uint64_t n_;
  const uint64_t buckets_;
  uint64_t seen_ = 0;
  uint64_t bucket_ = 0;
  std::optional<std::pair<uint64_t, v1::TrajectoryPoint>> lo_, hi_;
  std::vector<v1::TrajectoryPoint> out_;
};

}  // namespace

std::vector<v1::TrajectoryPoint> Downsample(std::vector<v1::TrajectoryPoint> points,
                                            size_t max_points) {
  if (points.size() <= max_points) return points;
  Bucketer b(points.size(), max_points);
  for (v1::TrajectoryPoint& p : points) b.Add(std::move(p));
  return b.Finish();
}

PointReader::PointReader(HistorySnapshot snapshot) : s_(std::move(snapshot)) {}

uint64_t PointReader::size() const {
  return s_.store ? s_.base + s_.window.size() : s_.archive.size() + s_.window.size();
}

absl::Status PointReader::Read(uint64_t begin, uint64_t end,
                               const std::function<void(v1::TrajectoryPoint&&)>& visit) {
  end = std::min(end, size());
  if (begin >= end) return absl::OkStatus();
  const uint64_t old_end = s_.store ? s_.base : s_.archive.size();
  if (begin < old_end) {
    const uint64_t stop = std::min(end, old_end);
    if (s_.store == nullptr) {
      for (uint64_t i = begin; i < stop; ++i) visit(v1::TrajectoryPoint(s_.archive[i]));
    } else {
      uint64_t next = begin;
      absl::Status s = s_.store->Read(
          Table::kPoints, s_.run, 0, begin, stop, [&](StoredRow&& row) -> absl::Status {
            if (row.k2 != next) {
              return absl::AbortedError(absl::StrFormat(
                  "run %s: point %d is no longer stored (was the run deleted?)", s_.run, next));
            }
            v1::TrajectoryPoint p;
            absl::Status parsed = ParsePointRecord(row, &p);
            if (!parsed.ok()) return parsed;
            ++next;
            visit(std::move(p));
            return absl::OkStatus();
          });
      if (!s.ok()) return s;
      if (next != stop) {
        return absl::AbortedError(absl::StrFormat(
            "run %s: points %d..%d are no longer stored (was the run deleted?)", s_.run, next,
            stop - 1));
      }
    }
    begin = stop;
  }
  for (uint64_t i = begin; i < end; ++i) visit(v1::TrajectoryPoint(s_.window[i - old_end]));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> PointReader::StepAt(uint64_t position) {
  const uint64_t old_end = s_.store ? s_.base : s_.archive.size();
  if (position >= old_end) return s_.window[position - old_end].step();
  if (s_.store == nullptr) return s_.archive[position].step();
  uint64_t step = 0;
  absl::Status s = Read(position, position + 1, [&](v1::TrajectoryPoint&& p) { step = p.step(); });
  if (!s.ok()) return s;
  return step;
}

absl::StatusOr<uint64_t> PointReader::LowerBound(uint64_t step) {
  // Points are strictly increasing in step: binary search, each probe of
  // the stored part one indexed row read.
  uint64_t lo = 0, hi = size();
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    absl::StatusOr<uint64_t> s = StepAt(mid);
    if (!s.ok()) return s.status();
    if (*s < step) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

absl::StatusOr<std::vector<v1::TrajectoryPoint>> ReadDownsampled(PointReader& reader,
                                                                  uint64_t begin, uint64_t end,
                                                                  size_t max_points) {
  end = std::min(end, reader.size());
  std::vector<v1::TrajectoryPoint> out;
  if (begin >= end) return out;
  if (end - begin <= max_points) {
    absl::Status s = reader.Read(begin, end, [&](v1::TrajectoryPoint&& p) {
      out.push_back(std::move(p));
    });
    if (!s.ok()) return s;
    return out;
  }
  Bucketer b(end - begin, max_points);
  // In chunks, so a store read holds the store's lock briefly.
  constexpr uint64_t kChunk = 4096;
  for (uint64_t at = begin; at < end; at += kChunk) {
    absl::Status s = reader.Read(at, std::min(end, at + kChunk),
                                 [&](v1::TrajectoryPoint&& p) { b.Add(std::move(p)); });
    if (!s.ok()) return s;
  }
  return b.Finish();
}

void PointHistory::Restore(uint64_t total, std::vector<v1::TrajectoryPoint> tail) {
  points_.assign(std::make_move_iterator(tail.begin()), std::make_move_iterator(tail.end()));
  base_ = total - points_.size();
  archive_.clear();
  // A store-less server restores nothing, so a restored run always has one.
  archive_compacted_ = false;
}

void PointHistory::Trim(uint64_t durable) {
  // The newest durable point stays (GetRun and ListRuns show it).
  while (points_.size() > window_ && base_ + 1 < durable) {
    if (store_ == nullptr) {
      archive_.push_back(std::move(points_.front()));
      if (archive_.size() >= kArchiveCapacity) {
        archive_ = Downsample(std::move(archive_), kArchiveCapacity / 2);
        archive_compacted_ = true;
      }
    }
    points_.pop_front();
    ++base_;
  }
}

HistorySnapshot PointHistory::Snapshot(uint64_t published) const {
  HistorySnapshot s;
  s.run = run_;
  s.store = store_;
  s.base = base_;
  const uint64_t n = published > base_ ? std::min<uint64_t>(published - base_, points_.size()) : 0;
  s.window.assign(points_.begin(), points_.begin() + static_cast<std::ptrdiff_t>(n));
  s.published = base_ + n;
  if (store_ == nullptr) s.archive = archive_;
  s.archive_compacted = archive_compacted_;
  return s;
}

}  // namespace spotter
