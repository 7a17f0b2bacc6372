// The server's edge between proto messages and core value types: config
// defaults and validation, sketch decoding, and conversions of directives,
// transitions and summaries. Stateless functions; thread-safe.
#ifndef SPOTTER_SERVER_CONVERT_H_
#define SPOTTER_SERVER_CONVERT_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/phase/controller.h"
#include "core/phase/directive.h"
#include "proto/convert/directive.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"
#include "core/types.h"
#include "server/limits.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// OK when `name` is 1-128 characters of [A-Za-z0-9._-]; else INVALID_ARGUMENT.
absl::Status ValidateRunName(const std::string& name);

// Fills every defaulted (0 / unset) field of `config` and validates every
// value against its documented range and the server limits. INVALID_ARGUMENT
// names the first bad field, its value and the accepted range.
absl::StatusOr<v1::RunConfig> ResolveRunConfig(const v1::RunConfig& config,
                                               const Limits& limits);

// Empty when two effective configs are the same run (labels are ignored);
// otherwise a description of the first differing field.
std::string ConfigDifference(const v1::RunConfig& a, const v1::RunConfig& b);

// Core views of an effective config.
ControllerConfig ToControllerConfig(const v1::RunConfig& config);
WindowOptions ToWindowOptions(const v1::RunConfig& config);
ProjectionKind ToProjectionKind(v1::ProjectionKind kind);
SpectrumOptions ToSpectrumOptions(const v1::RunConfig& config);

// A per-message rejection: the reason (a metric label) and what was expected.
struct Rejection {
  v1::RejectReason reason;
  std::string message;
  // The spotter_rejects_total label when more specific than the reason's
  // (RejectReasonLabel); nullptr: the reason's.
  const char* label = nullptr;
};

// Attaches the spotter_rejects_total{reason} label to an error status (a
// status payload; it never reaches the client).
absl::Status WithReason(absl::Status status, absl::string_view reason);
// The label attached with WithReason, else the status code in snake_case
// ("invalid_argument", "not_found", ...).
std::string ReasonLabel(const absl::Status& status);

// Short snake_case name of a reject reason, used as the metric label.
const char* RejectReasonLabel(v1::RejectReason reason);

// Decodes and validates SketchBatch data for a run with sketch dim k. On
// success fills `out` (rows x k) and returns nullopt.
std::optional<Rejection> DecodeSketch(const v1::SketchBatch& batch, uint32_t k,
                                      const Limits& limits, RowMatrixXf* out);

void ToProto(const Estimate& e, v1::Estimate* out);
void ToProto(const SpectrumSummary& s, v1::SpectrumSummary* out);

}  // namespace spotter

#endif  // SPOTTER_SERVER_CONVERT_H_
