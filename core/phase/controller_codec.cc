#include "core/phase/controller_codec.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/util/byte_io.h"

namespace spotter {

// Friend of PhaseController. A member added to the controller must be added
// here too; tests/unit/checkpoint_test.cc drives a restored and an original
// controller with the same inputs and compares every decision.
struct ControllerCodecAccess {
  static constexpr uint32_t kMagic = 0x54435053;  // "SPCT"

  static void Put(ByteWriter& w, const DirectivePlan& p) {
    w.U8(static_cast<uint8_t>(p.phase));
    w.U8(static_cast<uint8_t>(p.lr.kind));
    w.U64(p.lr.start_step);
    w.U64(p.lr.end_step);
    w.F64(p.lr.start_lr);
    w.F64(p.lr.end_lr);
    w.U8(static_cast<uint8_t>(p.optimizer.kind));
    w.F64(p.optimizer.damping);
    w.U32(p.optimizer.factor_update_interval);
    w.U32(p.optimizer.inverse_update_interval);
    w.U8(p.stop ? 1 : 0);
    w.F64(p.noise_std);
    w.U64(p.guard_steps);  // version 3
    w.U8(p.rollback ? 1 : 0);
    w.U64(p.snapshot_step);
  }

  static absl::Status Get(ByteReader& r, uint32_t version, const char* what, DirectivePlan* p) {
    uint8_t phase = 0, lr_kind = 0, opt_kind = 0;
    if (!r.U8(&phase) || !r.U8(&lr_kind) || !r.U64(&p->lr.start_step) || !r.U64(&p->lr.end_step) ||
        !r.F64(&p->lr.start_lr) || !r.F64(&p->lr.end_lr) || !r.U8(&opt_kind) ||
        !r.F64(&p->optimizer.damping) || !r.U32(&p->optimizer.factor_update_interval) ||
        !r.U32(&p->optimizer.inverse_update_interval) || !r.Bool(&p->stop) ||
        !r.F64(&p->noise_std)) {
      return Truncated(what);
    }
    // Before version 3: no guard, no rollback.
    if (version >= 3 && (!r.U64(&p->guard_steps) || !r.Bool(&p->rollback) ||
                         !r.U64(&p->snapshot_step))) {
      return Truncated(what);
    }
    if (phase > static_cast<uint8_t>(Phase::kDone) ||
        lr_kind > static_cast<uint8_t>(LrSchedule::Kind::kCosine) ||
        opt_kind > static_cast<uint8_t>(OptimizerInstruction::Kind::kNaturalGradient)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: phase %d, lr kind %d, optimizer kind %d out of range", what, phase,
                          lr_kind, opt_kind));
    }
    p->phase = static_cast<Phase>(phase);
    p->lr.kind = static_cast<LrSchedule::Kind>(lr_kind);
    p->optimizer.kind = static_cast<OptimizerInstruction::Kind>(opt_kind);
    return absl::OkStatus();
  }

  static std::string Encode(const PhaseController& c) {
    ByteWriter w;
    w.U32(kMagic);
    w.U32(kControllerStateVersion);
    w.U8(static_cast<uint8_t>(c.phase_));
    w.U64(c.phase_start_step_);
    w.U8(c.held_ ? 1 : 0);
    w.U8(c.pinned_ ? 1 : 0);
    Put(w, c.unpinned_plan_);
    Put(w, c.plan_);
    w.U32(static_cast<uint32_t>(c.window_.size()));
    for (const Observation& o : c.window_) {
      w.U64(o.step);
      w.F64(o.loss);
      w.F64(o.effective_rank);
      w.U8(o.rank_censored ? 1 : 0);
      w.F64(o.participation_ratio);
      w.U8(o.pr_censored ? 1 : 0);
      w.F64(o.rank_ci_upper);
      w.U8(o.loss_nonfinite ? 1 : 0);  // version 3
    }
    w.I32(c.latched_);
    w.U8(c.val_seen_ ? 1 : 0);
    w.F64(c.val_best_);
    w.I32(c.val_stale_);
    // Version 3: the guarded switch.
    w.U8(c.guard_armed_ ? 1 : 0);
    w.F64(c.pre_switch_loss_);
    w.F64(c.pre_switch_lr_);
    w.I32(c.rollbacks_);
    return w.Take();
  }

  static absl::Status Decode(std::string_view bytes, PhaseController* out) {
    ByteReader r(bytes);
    uint32_t magic = 0, version = 0, n = 0;
    if (!r.U32(&magic) || !r.U32(&version)) return Truncated("header");
    if (magic != kMagic) {
      return absl::InvalidArgumentError(
          absl::StrFormat("not a controller state (magic 0x%08x, expected 0x%08x)", magic, kMagic));
    }
    if (version < kOldestControllerStateVersion || version > kControllerStateVersion) {
      return absl::InvalidArgumentError(
          absl::StrFormat("controller state format version %d; this build reads versions %d to %d",
                          version, kOldestControllerStateVersion, kControllerStateVersion));
    }
    PhaseController c = *out;
    uint8_t phase = 0;
    if (!r.U8(&phase) || !r.U64(&c.phase_start_step_) || !r.Bool(&c.held_) || !r.Bool(&c.pinned_)) {
      return Truncated("header");
    }
    if (phase > static_cast<uint8_t>(Phase::kDone)) {
      return absl::InvalidArgumentError(absl::StrFormat("phase %d out of range", phase));
    }
    c.phase_ = static_cast<Phase>(phase);
    absl::Status s = Get(r, version, "unpinned plan", &c.unpinned_plan_);
    if (!s.ok()) return s;
    s = Get(r, version, "plan", &c.plan_);
    if (!s.ok()) return s;
    if (!r.U32(&n)) return Truncated("window");
    // A span holds at most kMaxSpanEvals evaluations (controller.cc).
    constexpr uint32_t kMaxWindow = 100000;
    if (n > kMaxWindow) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "detector window of %d evaluations; a span keeps at most %d", n, kMaxWindow));
    }
    c.window_.clear();
    for (uint32_t i = 0; i < n; ++i) {
      Observation o;
      if (!r.U64(&o.step) || !r.F64(&o.loss) || !r.F64(&o.effective_rank) ||
          !r.Bool(&o.rank_censored) || !r.F64(&o.participation_ratio)) {
        return Truncated("window");
      }
      // Added in version 2: before it, no PR censoring and no r90 interval
      // (NaN: the point is used).
      if (version >= 2 && (!r.Bool(&o.pr_censored) || !r.F64(&o.rank_ci_upper))) {
        return Truncated("window");
      }
      if (version >= 3 && !r.Bool(&o.loss_nonfinite)) return Truncated("window");
      // Values are data, restored as they were: the controller takes any
      // double (a flat spectrum's corrected PR is +inf, a missing loss NaN).
      c.window_.push_back(o);
    }
    if (!r.I32(&c.latched_) || !r.Bool(&c.val_seen_) || !r.F64(&c.val_best_) ||
        !r.I32(&c.val_stale_)) {
      return Truncated("trailer");
    }
    // Version 3: the guarded switch; before it, no guard armed, no rollbacks.
    c.guard_armed_ = false;
    c.pre_switch_loss_ = 0.0;
    c.pre_switch_lr_ = 0.0;
    c.rollbacks_ = 0;
    if (version >= 3 && (!r.Bool(&c.guard_armed_) || !r.F64(&c.pre_switch_loss_) ||
                         !r.F64(&c.pre_switch_lr_) || !r.I32(&c.rollbacks_))) {
      return Truncated("guard");
    }
    if (c.rollbacks_ < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("rollbacks %d: expected a count >= 0", c.rollbacks_));
    }
    if (c.latched_ < 0 || c.val_stale_ < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "latched %d, val_stale %d: expected counts >= 0", c.latched_, c.val_stale_));
    }
    if (!r.done()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%d bytes after the end of the controller state", r.remaining()));
    }
    *out = std::move(c);
    return absl::OkStatus();
  }

  static absl::Status Truncated(const char* what) {
    return absl::DataLossError(absl::StrFormat("controller state truncated in its %s", what));
  }
};

std::string EncodeControllerState(const PhaseController& controller) {
  return ControllerCodecAccess::Encode(controller);
}

absl::Status DecodeControllerState(std::string_view bytes, PhaseController* controller) {
  return ControllerCodecAccess::Decode(bytes, controller);
}

}  // namespace spotter
