// Page tokens (AIP-158) for ListRuns and GetTrajectory: opaque to clients,
// bound to the request that made them (a token used with other filters is
// INVALID_ARGUMENT), and naming a position by value rather than by offset
// (a step, a run's creation order), so they stay valid while runs grow and
// other runs are created or deleted.
#ifndef SPOTTER_SERVER_RPC_PAGE_TOKEN_H_
#define SPOTTER_SERVER_RPC_PAGE_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spotter {

// `scope` identifies the request's filters; `position` where the next page
// starts.
std::string EncodePageToken(absl::string_view scope, uint64_t position);
// INVALID_ARGUMENT (reason bad_page_token) when `token` is not one this
// server made for `scope`.
absl::StatusOr<uint64_t> DecodePageToken(absl::string_view token, absl::string_view scope);

// The page size a request asks for: `requested` if in (0, max], `fallback`
// for 0, `max` above it; INVALID_ARGUMENT (bad_page_size) when negative.
absl::StatusOr<size_t> PageSize(int32_t requested, size_t fallback, size_t max);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_PAGE_TOKEN_H_
