#include "core/spectrum/accumulator_codec.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/util/byte_io.h"

namespace spotter {

// Friend of FrequentDirections and RankAccumulator: the only code that reads
// and writes their private state. A member added to either class must be
// added here too (the round-trip test in tests/unit/checkpoint_test.cc feeds
// a restored and an original accumulator the same batches and compares them
// bit for bit, so a forgotten member fails it).
struct AccumulatorCodecAccess {
  static constexpr uint32_t kMagic = 0x41525053;  // "SPRA"

  static void Put(ByteWriter& w, const FrequentDirections& fd) {
    w.I32(fd.dim_);
    w.I32(fd.sketch_rows_);
    w.I32(fd.capacity_);
    w.I32(fd.used_);
    w.F64(fd.scale_);
    w.F64(fd.trace_);
    w.F64(fd.delta_);
    w.F64(fd.rounding_);
    w.I64(fd.shrinks_);
    // Rows beyond used_ are never read before being overwritten: not stored.
    for (int i = 0; i < fd.used_; ++i) w.Floats(fd.buf_.row(i).data(), fd.dim_);
  }

  static absl::Status Get(ByteReader& r, const char* what, FrequentDirections* fd) {
    int32_t dim = 0, rows = 0, capacity = 0, used = 0;
    double scale = 0, trace = 0, delta = 0, rounding = 0;
    int64_t shrinks = 0;
    if (!r.I32(&dim) || !r.I32(&rows) || !r.I32(&capacity) || !r.I32(&used) || !r.F64(&scale) ||
        !r.F64(&trace) || !r.F64(&delta) || !r.F64(&rounding) || !r.I64(&shrinks)) {
      return Truncated(what);
    }
    if (dim != fd->dim_ || rows != fd->sketch_rows_ || capacity != fd->capacity_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: sketch of %d x %d (capacity %d) where the run needs %d x %d (capacity %d)", what,
          rows, dim, capacity, fd->sketch_rows_, fd->dim_, fd->capacity_));
    }
    if (used < 0 || used > capacity) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d rows used of a capacity of %d", what, used, capacity));
    }
    if (!(std::isfinite(scale) && scale > 0.0) || !(std::isfinite(trace) && trace >= 0.0) ||
        !(std::isfinite(delta) && delta >= 0.0) || !(std::isfinite(rounding) && rounding >= 0.0) ||
        shrinks < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: scale %g, trace %g, delta %g, rounding %g, shrinks %d: expected finite, "
          "scale > 0, the others >= 0",
          what, scale, trace, delta, rounding, shrinks));
    }
    if (static_cast<size_t>(used) * static_cast<size_t>(dim) > r.remaining() / sizeof(float)) {
      return Truncated(what);
    }
    for (int i = 0; i < used; ++i) {
      float* row = fd->buf_.row(i).data();
      if (!r.Floats(row, static_cast<size_t>(dim))) return Truncated(what);
      for (int j = 0; j < dim; ++j) {
        if (!std::isfinite(row[j])) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: row %d col %d is %g; sketch rows are finite", what, i, j, row[j]));
        }
      }
    }
    fd->used_ = used;
    fd->scale_ = scale;
    fd->trace_ = trace;
    fd->delta_ = delta;
    fd->rounding_ = rounding;
    fd->shrinks_ = shrinks;
    return absl::OkStatus();
  }

  static void Put(ByteWriter& w, const GradientMoments& m) {
    Put(w, m.centred);
    Put(w, m.means);
    for (double v : {m.trace_centred, m.trace_raw, m.dof, m.dof_sq, m.samples, m.samples_sq,
                     m.example_trace, m.mean_sq_sum, m.mean_sq_weight, m.norm4_centred,
                     m.norm4_weight}) {
      w.F64(v);
    }
    w.U64(m.rows);
    w.U64(m.batches);
  }

  static absl::Status Get(ByteReader& r, uint32_t version, GradientMoments* m) {
    absl::Status s = Get(r, "centred sketch", &m->centred);
    if (!s.ok()) return s;
    s = Get(r, "means sketch", &m->means);
    if (!s.ok()) return s;
    double* fields[] = {&m->trace_centred, &m->trace_raw,   &m->dof,
                        &m->dof_sq,        &m->samples,     &m->samples_sq,
                        &m->example_trace, &m->mean_sq_sum, &m->mean_sq_weight,
                        &m->norm4_centred, &m->norm4_weight};
    for (double* f : fields) {
      if (version < 2 && (f == &m->norm4_centred || f == &m->norm4_weight)) continue;
      if (!r.F64(f)) return Truncated("moments");
      if (!std::isfinite(*f)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("moments: a statistic is %g; every statistic is finite", *f));
      }
    }
    if (!r.U64(&m->rows) || !r.U64(&m->batches)) return Truncated("moments");
    return absl::OkStatus();
  }

  static std::string Encode(const RankAccumulator& a) {
    ByteWriter w;
    w.U32(kMagic);
    w.U32(kRankCheckpointVersion);
    w.I32(a.dim_);
    w.I32(a.sketch_rows_);
    w.U8(a.window_.kind == WindowKind::kFixed ? 1 : 0);
    w.F64(a.window_.decay);
    w.U64(a.window_.window_steps);
    w.U64(a.last_step_);
    w.U32(static_cast<uint32_t>(a.segments_.size()));
    for (const RankAccumulator::Segment& s : a.segments_) {
      w.U64(s.index);
      Put(w, s.moments);
    }
    return w.Take();
  }

  static absl::StatusOr<RankAccumulator> Decode(std::string_view bytes, int dim, int sketch_rows,
                                                const WindowOptions& window) {
    ByteReader r(bytes);
    uint32_t magic = 0, version = 0, nseg = 0;
    int32_t edim = 0, erows = 0;
    uint8_t kind = 0;
    double decay = 0;
    uint64_t window_steps = 0, last_step = 0;
    if (!r.U32(&magic) || !r.U32(&version)) return Truncated("header");
    if (magic != kMagic) {
      return absl::InvalidArgumentError(
          absl::StrFormat("not a rank checkpoint (magic 0x%08x, expected 0x%08x)", magic, kMagic));
    }
    if (version < 1 || version > kRankCheckpointVersion) {
      return absl::InvalidArgumentError(
          absl::StrFormat("rank checkpoint format version %d; this build reads versions 1 to %d",
                          version, kRankCheckpointVersion));
    }
    if (!r.I32(&edim) || !r.I32(&erows) || !r.U8(&kind) || !r.F64(&decay) ||
        !r.U64(&window_steps) || !r.U64(&last_step) || !r.U32(&nseg)) {
      return Truncated("header");
    }
    const uint8_t want_kind = window.kind == WindowKind::kFixed ? 1 : 0;
    if (edim != dim || erows != sketch_rows || kind != want_kind || !(decay == window.decay) ||
        window_steps != window.window_steps) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "checkpoint of a %d x %d sketch with window {kind %d, decay %g, steps %d}; the run "
          "has %d x %d with {kind %d, decay %g, steps %d}",
          erows, edim, kind, decay, window_steps, sketch_rows, dim, want_kind, window.decay,
          window.window_steps));
    }
    const uint32_t max_segments =
        window.kind == WindowKind::kFixed ? WindowOptions::kFixedSegments + 2 : 1;
    if (nseg > max_segments) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "checkpoint holds %d window segments; at most %d are possible", nseg, max_segments));
    }
    RankAccumulator acc(dim, sketch_rows, window);
    acc.last_step_ = last_step;
    for (uint32_t i = 0; i < nseg; ++i) {
      uint64_t index = 0;
      if (!r.U64(&index)) return Truncated("segment");
      if (window.kind == WindowKind::kExponential && index != 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("exponential window segment with index %d; expected 0", index));
      }
      if (i > 0 && index <= acc.segments_.back().index) {
        return absl::InvalidArgumentError(
            absl::StrFormat("window segment %d has index %d after %d; indexes increase", i, index,
                            acc.segments_.back().index));
      }
      if (window.kind == WindowKind::kFixed && index > last_step / acc.segment_steps_) {
        return absl::InvalidArgumentError(
            absl::StrFormat("window segment index %d is past the last step %d", index, last_step));
      }
      acc.segments_.push_back({index, GradientMoments(dim, sketch_rows)});
      absl::Status s = Get(r, version, &acc.segments_.back().moments);
      if (!s.ok()) return s;
    }
    if (!r.done()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%d bytes after the end of the checkpoint", r.remaining()));
    }
    return acc;
  }

  static absl::Status Truncated(const char* what) {
    return absl::DataLossError(absl::StrFormat("rank checkpoint truncated in its %s", what));
  }
};

std::string EncodeRankAccumulator(const RankAccumulator& acc) {
  return AccumulatorCodecAccess::Encode(acc);
}

absl::StatusOr<RankAccumulator> DecodeRankAccumulator(std::string_view bytes, int dim,
                                                      int sketch_rows,
                                                      const WindowOptions& window) {
  if (dim < 1 || sketch_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sketch of %d x %d: both sizes must be >= 1", sketch_rows, dim));
  }
  return AccumulatorCodecAccess::Decode(bytes, dim, sketch_rows, window);
}

}  // namespace spotter
