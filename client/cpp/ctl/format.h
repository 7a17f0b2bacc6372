// Human-readable one-line renderings of proto messages, shared by spotterctl
// and the examples.
#ifndef SPOTTER_CLIENT_CPP_CTL_FORMAT_H_
#define SPOTTER_CLIENT_CPP_CTL_FORMAT_H_

#include <string>

#include "spotter/v1/spotter.pb.h"

namespace spotter {

// "refinement" for PHASE_REFINEMENT, etc.
std::string PhaseLabel(int phase);

// A timestamp in the local time zone, to the second.
std::string FormatTimestamp(const google::protobuf::Timestamp& t);
// The value with its sampling confidence interval, the error bar:
// "5.2 (90% CI 5.0-5.5)", "at least 41.0 (90% CI 36.0-68.1)",
// "at least 64 (90% CI from 60)". From a server without sampling intervals:
// "5.2 sketch [5.1, 5.3]".
std::string FormatEstimate(const spotter::v1::Estimate& e, int precision);
// The sketch bound, what the sketch certifies for the window's covariance
// (not an error bar): "sketch [5.1, 5.3]", "sketch [41.0, inf]".
std::string FormatSketchBound(const spotter::v1::Estimate& e, int precision);
// "v2 from step 1251: refinement, lr constant 0.05, natural gradient (...)"
std::string FormatDirective(const spotter::v1::Directive& d);
// "step 120  acquisition  loss 0.53  lr 0.08  r90 12 [11, 14]  PR 9.1 [...]"
std::string FormatPoint(const spotter::v1::TrajectoryPoint& p);
// "step 1251: acquisition -> refinement (automatic, directive v2)"
std::string FormatTransition(const spotter::v1::PhaseTransition& t);
// Evidence as "name=value name=value ...", in name order.
std::string FormatEvidence(const spotter::v1::PhaseTransition& t);
// The run's rolled-back natural-gradient switches, one line: "rollbacks: 1
// (step 1320: loss 0.91 > 0.66 ...)"; empty when there were none.
std::string FormatRollbacks(
    const google::protobuf::RepeatedPtrField<spotter::v1::PhaseTransition>& transitions);

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_CTL_FORMAT_H_
