#include "proto/convert/directive.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace spotter {

v1::Phase ToProto(Phase p) {
  switch (p) {
    case Phase::kAcquisition: return v1::PHASE_ACQUISITION;
    case Phase::kRefinement: return v1::PHASE_REFINEMENT;
    case Phase::kPolish: return v1::PHASE_POLISH;
    case Phase::kDone: return v1::PHASE_DONE;
  }
  return v1::PHASE_UNSPECIFIED;
}

Phase FromProto(v1::Phase p) {
  switch (p) {
    case v1::PHASE_REFINEMENT: return Phase::kRefinement;
    case v1::PHASE_POLISH: return Phase::kPolish;
    case v1::PHASE_DONE: return Phase::kDone;
    default: return Phase::kAcquisition;
  }
}

v1::Cause ToProto(Cause c) {
  switch (c) {
    case Cause::kAutomatic: return v1::CAUSE_AUTOMATIC;
    case Cause::kOverride: return v1::CAUSE_OVERRIDE;
    case Cause::kRelease: return v1::CAUSE_RELEASE;
    case Cause::kFinish: return v1::CAUSE_FINISH;
    case Cause::kRollback: return v1::CAUSE_ROLLBACK;
  }
  return v1::CAUSE_UNSPECIFIED;
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

v1::Directive ToProto(const Directive& d) {
  v1::Directive o;
  o.set_version(d.version);
  o.set_effective_step(d.effective_step);
  o.set_phase(ToProto(d.plan.phase));
  v1::LrSchedule* lr = o.mutable_lr();
  switch (d.plan.lr.kind) {
    case LrSchedule::Kind::kConstant: lr->set_kind(v1::LrSchedule::KIND_CONSTANT); break;
    case LrSchedule::Kind::kLinear: lr->set_kind(v1::LrSchedule::KIND_LINEAR); break;
    case LrSchedule::Kind::kCosine: lr->set_kind(v1::LrSchedule::KIND_COSINE); break;
  }
  lr->set_start_step(d.plan.lr.start_step);
  lr->set_end_step(d.plan.lr.end_step);
  lr->set_start_lr(d.plan.lr.start_lr);
  lr->set_end_lr(d.plan.lr.end_lr);
  v1::OptimizerInstruction* opt = o.mutable_optimizer();
  opt->set_kind(d.plan.optimizer.kind == OptimizerInstruction::Kind::kNaturalGradient
                    ? v1::OptimizerInstruction::KIND_NATURAL_GRADIENT
                    : v1::OptimizerInstruction::KIND_KEEP);
  opt->set_damping(d.plan.optimizer.damping);
  opt->set_factor_update_interval(d.plan.optimizer.factor_update_interval);
  opt->set_inverse_update_interval(d.plan.optimizer.inverse_update_interval);
  o.set_stop(d.plan.stop);
  o.set_reason(d.reason);
  o.set_advisory(d.advisory);
  o.set_cause(ToProto(d.cause));
  o.set_noise_std(d.plan.noise_std);
  ToProto(d.issued_at, o.mutable_issued_at());
  o.set_guard_steps(d.plan.guard_steps);
  o.set_rollback(d.plan.rollback);
  o.set_snapshot_step(d.plan.snapshot_step);
  return o;
}

absl::StatusOr<DirectivePlan> PlanFromProto(const v1::Directive& d) {
  DirectivePlan p;
  const v1::LrSchedule& lr = d.lr();
  switch (lr.kind()) {
    case v1::LrSchedule::KIND_CONSTANT: p.lr.kind = LrSchedule::Kind::kConstant; break;
    case v1::LrSchedule::KIND_LINEAR: p.lr.kind = LrSchedule::Kind::kLinear; break;
    case v1::LrSchedule::KIND_COSINE: p.lr.kind = LrSchedule::Kind::kCosine; break;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "directive.lr.kind = %d: expected CONSTANT, LINEAR or COSINE", lr.kind()));
  }
  if (!(lr.start_lr() >= 0.0) || !std::isfinite(lr.start_lr()) || !(lr.end_lr() >= 0.0) ||
      !std::isfinite(lr.end_lr())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "directive.lr start_lr = %g, end_lr = %g: expected finite values >= 0",
        lr.start_lr(), lr.end_lr()));
  }
  if (p.lr.kind != LrSchedule::Kind::kConstant && lr.end_step() < lr.start_step()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "directive.lr end_step = %d < start_step = %d", lr.end_step(), lr.start_step()));
  }
  p.lr.start_step = lr.start_step();
  p.lr.end_step = lr.end_step();
  p.lr.start_lr = lr.start_lr();
  p.lr.end_lr = p.lr.kind == LrSchedule::Kind::kConstant ? lr.start_lr() : lr.end_lr();
  const v1::OptimizerInstruction& opt = d.optimizer();
  if (opt.kind() == v1::OptimizerInstruction::KIND_NATURAL_GRADIENT) {
    if (!(opt.damping() > 0.0) || !std::isfinite(opt.damping()) ||
        opt.factor_update_interval() == 0 || opt.inverse_update_interval() == 0) {
      return absl::InvalidArgumentError(
          "directive.optimizer: natural gradient needs damping > 0 and update intervals >= 1");
    }
    p.optimizer = {OptimizerInstruction::Kind::kNaturalGradient, opt.damping(),
                   opt.factor_update_interval(), opt.inverse_update_interval()};
  } else if (opt.kind() == v1::OptimizerInstruction::KIND_KEEP ||
             opt.kind() == v1::OptimizerInstruction::KIND_UNSPECIFIED) {
    p.optimizer.kind = OptimizerInstruction::Kind::kKeep;
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("directive.optimizer.kind = %d is unknown", opt.kind()));
  }
  if (!(d.noise_std() >= 0.0 && d.noise_std() < 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("directive.noise_std = %g: expected [0, 100)", d.noise_std()));
  }
  p.stop = d.stop();
  p.noise_std = d.noise_std();
  return p;
}

v1::PhaseTransition ToProto(const Transition& t) {
  v1::PhaseTransition o;
  o.set_step(t.step);
  ToProto(t.time, o.mutable_time());
  o.set_from_phase(ToProto(t.from));
  o.set_to_phase(ToProto(t.to));
  o.set_cause(ToProto(t.cause));
  o.set_reason(t.reason);
  for (const auto& [k, v] : t.evidence) (*o.mutable_evidence())[k] = v;
  o.set_directive_version(t.directive_version);
  o.set_decision_step(t.decision_step);
  return o;
}

absl::StatusOr<Directive> DirectiveFromProto(const v1::Directive& d) {
  absl::StatusOr<DirectivePlan> plan = PlanFromProto(d);
  if (!plan.ok()) return plan.status();
  Directive out;
  out.version = d.version();
  out.effective_step = d.effective_step();
  out.plan = *plan;
  out.plan.phase = FromProto(d.phase());
  // Only the server's own directives guard or roll back a switch: an
  // operator's pinned plan (PlanFromProto) never does.
  out.plan.guard_steps = d.guard_steps();
  out.plan.rollback = d.rollback();
  out.plan.snapshot_step = d.snapshot_step();
  out.reason = d.reason();
  out.advisory = d.advisory();
  switch (d.cause()) {
    case v1::CAUSE_OVERRIDE: out.cause = Cause::kOverride; break;
    case v1::CAUSE_RELEASE: out.cause = Cause::kRelease; break;
    case v1::CAUSE_FINISH: out.cause = Cause::kFinish; break;
    case v1::CAUSE_ROLLBACK: out.cause = Cause::kRollback; break;
    default: out.cause = Cause::kAutomatic; break;
  }
  out.issued_at = absl::FromUnixSeconds(d.issued_at().seconds()) +
                  absl::Nanoseconds(d.issued_at().nanos());
  return out;
}

}  // namespace spotter
