// Byte encoding of a PhaseController's state, so that a server persists it
// with the directives it issued and a restarted server continues the same
// state machine (same phase, same detector windows and latches, same
// validation patience) instead of starting over.
//
// The encoding holds only state, not the ControllerConfig: the caller builds
// the controller from the run's config and restores the state into it.
// Decoding validates the structure (enum ranges, window length, counts) and
// fails with a message rather than producing a controller in a state the
// machine could not reach. Values are restored as they were, NaN and
// infinities included: a state the controller can be in always restores
// (tests/fuzz/controller_fuzz.cc checks the round trip at every step).
#ifndef SPOTTER_CORE_PHASE_CONTROLLER_CODEC_H_
#define SPOTTER_CORE_PHASE_CONTROLLER_CODEC_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "core/phase/controller.h"

namespace spotter {

// Version 2 added Observation::pr_censored and rank_ci_upper; version 3 the
// guarded switch (the plans' guard and rollback fields, loss_nonfinite, the
// guard's state and the rollback count). Versions 1 and 2 are still read.
inline constexpr uint32_t kControllerStateVersion = 3;
inline constexpr uint32_t kOldestControllerStateVersion = 1;

// The state of `controller` (not its config). Thread-compatible.
std::string EncodeControllerState(const PhaseController& controller);

// Restores the state encoded in `bytes` into `controller`, which must have
// been constructed with the run's config. On error `controller` is left
// unchanged. INVALID_ARGUMENT / DATA_LOSS naming the bad field.
absl::Status DecodeControllerState(std::string_view bytes, PhaseController* controller);

}  // namespace spotter

#endif  // SPOTTER_CORE_PHASE_CONTROLLER_CODEC_H_
