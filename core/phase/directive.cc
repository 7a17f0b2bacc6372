#include "core/phase/directive.h"

#include <cmath>
#include <numbers>

namespace spotter {

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kAcquisition: return "acquisition";
    case Phase::kRefinement: return "refinement";
    case Phase::kPolish: return "polish";
    case Phase::kDone: return "done";
  }
  return "unknown";
}

const char* CauseName(Cause c) {
  switch (c) {
    case Cause::kAutomatic: return "automatic";
    case Cause::kOverride: return "override";
    case Cause::kRelease: return "release";
    case Cause::kFinish: return "finish";
    case Cause::kRollback: return "rollback";
  }
  return "unknown";
}

double LrSchedule::At(uint64_t step) const {
  if (kind == Kind::kConstant) return start_lr;
  if (step <= start_step) return start_lr;
  if (step >= end_step) return end_lr;
  const double f = static_cast<double>(step - start_step) /
                   static_cast<double>(end_step - start_step);
  if (kind == Kind::kLinear) return start_lr + (end_lr - start_lr) * f;
  return end_lr + (start_lr - end_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * f));
}

const Directive* DirectiveInForce(const std::vector<Directive>& directives,
                                  uint64_t step, bool skip_advisory) {
  for (auto it = directives.rbegin(); it != directives.rend(); ++it) {
    if (skip_advisory && it->advisory) continue;
    if (it->effective_step <= step) return &*it;
  }
  return nullptr;
}

}  // namespace spotter
