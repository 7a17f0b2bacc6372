#include "client/cpp/paging.h"

#include <utility>

namespace spotter {

grpc::Status GetWholeTrajectory(v1::SpotterService::StubInterface& stub,
                                v1::GetTrajectoryRequest request, v1::GetTrajectoryResponse* out,
                                const PrepareContext& prepare) {
  out->Clear();
  for (;;) {
    grpc::ClientContext ctx;
    if (prepare) prepare(&ctx);
    v1::GetTrajectoryResponse page;
    grpc::Status s = stub.GetTrajectory(&ctx, request, &page);
    if (!s.ok()) return s;
    // Points accumulate; the rest describes the run as of the last page.
    google::protobuf::RepeatedPtrField<v1::TrajectoryPoint> points;
    points.Swap(out->mutable_points());
    for (v1::TrajectoryPoint& p : *page.mutable_points()) *points.Add() = std::move(p);
    page.clear_points();
    const bool downsampled = out->downsampled() || page.downsampled();
    *out = std::move(page);
    out->mutable_points()->Swap(&points);
    out->set_downsampled(downsampled);
    if (out->next_page_token().empty()) return grpc::Status::OK;
    request.set_page_token(out->next_page_token());
    out->clear_next_page_token();
  }
}

grpc::Status ListAllRuns(v1::SpotterService::StubInterface& stub, v1::ListRunsRequest request,
                         v1::ListRunsResponse* out, const PrepareContext& prepare) {
  out->Clear();
  for (;;) {
    grpc::ClientContext ctx;
    if (prepare) prepare(&ctx);
    v1::ListRunsResponse page;
    grpc::Status s = stub.ListRuns(&ctx, request, &page);
    if (!s.ok()) return s;
    for (v1::RunSummary& r : *page.mutable_runs()) *out->add_runs() = std::move(r);
    if (page.next_page_token().empty()) return grpc::Status::OK;
    request.set_page_token(page.next_page_token());
  }
}

}  // namespace spotter
