#include "client/cpp/ctl/format.h"

#include <cmath>
#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace spotter {

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S",
                          absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos()),
                          absl::LocalTimeZone());
}

std::string PhaseLabel(int phase) {
  if (phase == v1::PHASE_UNSPECIFIED || !v1::Phase_IsValid(phase)) return "unspecified";
  return absl::AsciiStrToLower(v1::Phase_Name(phase).substr(6));  // drop "PHASE_"
}

std::string FormatEstimate(const v1::Estimate& e, int precision) {
  if (std::isnan(e.value())) return "n/a";
  std::string out = e.censored() ? absl::StrFormat("at least %.*f", precision, e.value())
                                 : absl::StrFormat("%.*f", precision, e.value());
  const double level = e.confidence_level();
  if (!(level > 0.0) || std::isnan(e.confidence_lower())) {
    // A server without sampling intervals: the sketch bound is all there is.
    if (!e.censored()) out += " " + FormatSketchBound(e, precision);
    return out;
  }
  if (std::isinf(e.confidence_upper())) {
    absl::StrAppendFormat(&out, " (%.0f%% CI from %.*f)", 100.0 * level, precision,
                          e.confidence_lower());
  } else {
    absl::StrAppendFormat(&out, " (%.0f%% CI %.*f-%.*f)", 100.0 * level, precision,
                          e.confidence_lower(), precision, e.confidence_upper());
  }
  return out;
}

std::string FormatSketchBound(const v1::Estimate& e, int precision) {
  if (std::isnan(e.lower())) return "sketch n/a";
  if (std::isinf(e.upper())) return absl::StrFormat("sketch [%.*f, inf]", precision, e.lower());
  return absl::StrFormat("sketch [%.*f, %.*f]", precision, e.lower(), precision, e.upper());
}

std::string FormatDirective(const v1::Directive& d) {
  std::string lr;
  const v1::LrSchedule& s = d.lr();
  switch (s.kind()) {
    case v1::LrSchedule::KIND_CONSTANT:
      lr = absl::StrFormat("lr constant %.4g", s.start_lr());
      break;
    case v1::LrSchedule::KIND_LINEAR:
      lr = absl::StrFormat("lr linear %.4g -> %.4g over steps [%d, %d]", s.start_lr(), s.end_lr(),
                           s.start_step(), s.end_step());
      break;
    case v1::LrSchedule::KIND_COSINE:
      lr = absl::StrFormat("lr cosine %.4g -> %.4g over steps [%d, %d]", s.start_lr(), s.end_lr(),
                           s.start_step(), s.end_step());
      break;
    default:
      lr = "lr unspecified";
  }
  std::string opt = "own optimizer";
  if (d.optimizer().kind() == v1::OptimizerInstruction::KIND_NATURAL_GRADIENT) {
    opt = absl::StrFormat(
        "natural gradient (K-FAC damping %.3g, factors every %d, inverse "
        "every %d steps)",
        d.optimizer().damping(), d.optimizer().factor_update_interval(),
        d.optimizer().inverse_update_interval());
  }
  std::string out = absl::StrFormat("v%d from step %d: %s, %s, %s", d.version(), d.effective_step(),
                                    PhaseLabel(d.phase()), lr, opt);
  if (d.noise_std() > 0) absl::StrAppendFormat(&out, ", noise %.3g", d.noise_std());
  if (d.guard_steps() > 0) {
    absl::StrAppendFormat(&out, ", guarded %d steps (snapshot at the switch)", d.guard_steps());
  }
  if (d.rollback()) {
    absl::StrAppendFormat(&out, ", ROLLBACK to the snapshot of step %d", d.snapshot_step());
  }
  if (d.stop()) out += ", STOP";
  if (d.advisory()) out += " [advisory]";
  return out;
}

std::string FormatPoint(const v1::TrajectoryPoint& p) {
  std::string out = absl::StrFormat("step %6d  %-11s  loss %-9.4g lr %-9.3g r90 %-22s PR %-26s",
                                    p.step(), PhaseLabel(p.phase()), p.loss(), p.lr(),
                                    FormatEstimate(p.covariance().effective_rank(), 0),
                                    FormatEstimate(p.covariance().participation_ratio(), 1));
  if (!std::isnan(p.noise_scale())) absl::StrAppendFormat(&out, " B_noise %.3g", p.noise_scale());
  if (!std::isnan(p.val_metric())) absl::StrAppendFormat(&out, " val %.4g", p.val_metric());
  return out;
}

std::string FormatTransition(const v1::PhaseTransition& t) {
  std::string cause = absl::AsciiStrToLower(v1::Cause_Name(t.cause()).substr(6));
  // Decided at one step, in force from a later one: the margin a directive
  // needs to reach every rank first.
  std::string out = absl::StrFormat(
      "step %d: %s -> %s (%s, decided at step %d, +%d steps", t.step(), PhaseLabel(t.from_phase()),
      PhaseLabel(t.to_phase()), cause, t.decision_step(),
      t.step() > t.decision_step() ? t.step() - t.decision_step() : 0);
  if (t.directive_version() > 0)
    absl::StrAppendFormat(&out, ", directive v%d", t.directive_version());
  return out + ")";
}

std::string FormatEvidence(const v1::PhaseTransition& t) {
  std::map<std::string, double> sorted(t.evidence().begin(), t.evidence().end());
  std::vector<std::string> parts;
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrFormat("%s=%.4g", k, v));
  return absl::StrJoin(parts, " ");
}

std::string FormatRollbacks(
    const google::protobuf::RepeatedPtrField<v1::PhaseTransition>& transitions) {
  std::vector<std::string> steps;
  for (const v1::PhaseTransition& t : transitions) {
    if (t.cause() != v1::CAUSE_ROLLBACK) continue;
    const auto e = t.evidence().find("switch_step");
    steps.push_back(e == t.evidence().end()
                        ? absl::StrFormat("at step %d", t.step())
                        : absl::StrFormat("at step %d (switch of step %.0f)", t.step(), e->second));
  }
  if (steps.empty()) return "";
  return absl::StrFormat("rollbacks: %d natural-gradient switch%s failed its guard, rolled back %s",
                         steps.size(), steps.size() == 1 ? "" : "es", absl::StrJoin(steps, ", "));
}

}  // namespace spotter
