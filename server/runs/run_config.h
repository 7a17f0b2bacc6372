// A run's configuration: resolution of the defaults, validation against the
// documented ranges and the server's limits, comparison of two effective
// configs, and the core structs an effective config stands for. Stateless
// functions; thread-safe.
#ifndef SPOTTER_SERVER_RUNS_RUN_CONFIG_H_
#define SPOTTER_SERVER_RUNS_RUN_CONFIG_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/phase/controller.h"
#include "core/phase/directive.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"
#include "core/types.h"
#include "proto/convert/directive.h"
#include "server/runs/limits.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// OK when `name` is 1-128 characters of [A-Za-z0-9._-]; else INVALID_ARGUMENT.
absl::Status ValidateRunName(const std::string &name);

// Fills every defaulted (0 / unset) field of `config` and validates every
// value against its documented range and the server limits. INVALID_ARGUMENT
// names the first bad field, its value and the accepted range.
absl::StatusOr<v1::RunConfig> ResolveRunConfig(const v1::RunConfig &config,
                                               const Limits &limits);

// Empty when two effective configs are the same run (labels are ignored);
// otherwise a description of the first differing field.
std::string ConfigDifference(const v1::RunConfig &a, const v1::RunConfig &b);

// Core views of an effective config.
ControllerConfig ToControllerConfig(const v1::RunConfig &config);
WindowOptions ToWindowOptions(const v1::RunConfig &config);
ProjectionKind ToProjectionKind(v1::ProjectionKind kind);
SpectrumOptions ToSpectrumOptions(const v1::RunConfig &config);

} // namespace spotter

#endif // SPOTTER_SERVER_RUNS_RUN_CONFIG_H_
