// Per-message rejections and the status labels of spotter_rejects_total:
// what a bad upload gets back, and the decoding of sketch data that finds it.
// Stateless functions; thread-safe.
#ifndef SPOTTER_SERVER_RUNS_REJECTION_H_
#define SPOTTER_SERVER_RUNS_REJECTION_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/types.h"
#include "server/runs/limits.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// A per-message rejection: the reason (a metric label) and what was expected.
struct Rejection {
  v1::RejectReason reason;
  std::string message;
  // The spotter_rejects_total label when more specific than the reason's
  // (RejectReasonLabel); nullptr: the reason's.
  const char* label = nullptr;
  // The run is moving to another replica (Run::Freeze): the message was not
  // applied. The stream ends with UNAVAILABLE and acknowledges nothing, so
  // the trainer replays it to the new owner.
  bool moving = false;
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

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_REJECTION_H_
