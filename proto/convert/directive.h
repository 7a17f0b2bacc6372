// Conversions between the directive-related proto messages and core's value
// types, shared by the server and the clients (core itself never sees a
// protobuf). Stateless; thread-safe.
#ifndef SPOTTER_PROTO_CONVERT_DIRECTIVE_H_
#define SPOTTER_PROTO_CONVERT_DIRECTIVE_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/phase/directive.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

v1::Phase ToProto(Phase p);
// UNSPECIFIED maps to kAcquisition.
Phase FromProto(v1::Phase p);
v1::Cause ToProto(Cause c);
void ToProto(absl::Time t, google::protobuf::Timestamp* out);
v1::Directive ToProto(const Directive& d);
v1::PhaseTransition ToProto(const Transition& t);

// The plan of a proto directive (lr, optimizer, stop, noise_std).
// INVALID_ARGUMENT when the schedule or optimizer is malformed.
absl::StatusOr<DirectivePlan> PlanFromProto(const v1::Directive& d);

// A whole directive, validated like PlanFromProto.
absl::StatusOr<Directive> DirectiveFromProto(const v1::Directive& d);

}  // namespace spotter

#endif  // SPOTTER_PROTO_CONVERT_DIRECTIVE_H_
