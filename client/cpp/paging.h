// Reading paged listings (AIP-158) whole: GetTrajectory and ListRuns answer
// a page at a time (at most 1000 points / 500 runs by default); these follow
// next_page_token to the end and merge the pages.
#ifndef SPOTTER_CLIENT_CPP_PAGING_H_
#define SPOTTER_CLIENT_CPP_PAGING_H_

#include <functional>

#include "grpcpp/grpcpp.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace spotter {

// Sets up each call's context (deadline, token, x-spotter-run); may be null.
using PrepareContext = std::function<void(grpc::ClientContext*)>;

// Every point of `request`'s range from its page_token on, with the run's
// transitions, directives and restarts (from the last page). A request with
// max_points is one call.
grpc::Status GetWholeTrajectory(v1::SpotterService::StubInterface& stub,
                                v1::GetTrajectoryRequest request, v1::GetTrajectoryResponse* out,
                                const PrepareContext& prepare = nullptr);

// Every run `request` selects, newest first.
grpc::Status ListAllRuns(v1::SpotterService::StubInterface& stub, v1::ListRunsRequest request,
                         v1::ListRunsResponse* out, const PrepareContext& prepare = nullptr);

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_PAGING_H_
