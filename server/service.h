// The gRPC edge: SpotterService on the callback API. Converts between proto
// and the run registry once, here; nothing below it knows about gRPC.
#ifndef SPOTTER_SERVER_SERVICE_H_
#define SPOTTER_SERVER_SERVICE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/registry.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace spotter {

// A live server stream that can be told to end (at shutdown).
class StoppableStream {
 public:
  virtual ~StoppableStream() = default;
  // Finishes the stream with `status` once its queued messages are written.
  virtual void Stop(const grpc::Status& status) = 0;
};

grpc::Status ToGrpcStatus(const absl::Status& s);

// Thread-safe: gRPC calls every method from its own threads.
class SpotterServiceImpl final : public v1::SpotterService::CallbackService {
 public:
  SpotterServiceImpl(const RunDeps& deps);
  ~SpotterServiceImpl() override;

  grpc::ServerUnaryReactor* OpenRun(grpc::CallbackServerContext* ctx,
                                    const v1::OpenRunRequest* req,
                                    v1::OpenRunResponse* resp) override;
  grpc::ServerBidiReactor<v1::ConnectRequest, v1::ConnectResponse>* Connect(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* ctx,
                                   const v1::GetRunRequest* req,
                                   v1::GetRunResponse* resp) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* ctx,
                                     const v1::ListRunsRequest* req,
                                     v1::ListRunsResponse* resp) override;
  grpc::ServerUnaryReactor* GetTrajectory(grpc::CallbackServerContext* ctx,
                                          const v1::GetTrajectoryRequest* req,
                                          v1::GetTrajectoryResponse* resp) override;
  grpc::ServerWriteReactor<v1::WatchRunResponse>* WatchRun(
      grpc::CallbackServerContext* ctx, const v1::WatchRunRequest* req) override;
  grpc::ServerUnaryReactor* OverridePhase(grpc::CallbackServerContext* ctx,
                                          const v1::OverridePhaseRequest* req,
                                          v1::OverridePhaseResponse* resp) override;
  grpc::ServerUnaryReactor* FinishRun(grpc::CallbackServerContext* ctx,
                                      const v1::FinishRunRequest* req,
                                      v1::FinishRunResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteRun(grpc::CallbackServerContext* ctx,
                                      const v1::DeleteRunRequest* req,
                                      v1::DeleteRunResponse* resp) override;

  // Ends every open stream with UNAVAILABLE (graceful shutdown); streams that
  // start afterwards are refused.
  void StopStreams();

  RunRegistry& registry() { return registry_; }
  const RunDeps& deps() const { return deps_; }
  const Limits& limits() const { return deps_.limits; }

  // Stream bookkeeping, for the reactors. Track returns false after
  // StopStreams.
  bool Track(StoppableStream* s);
  void Untrack(StoppableStream* s);

  // Finishes a unary call: counts a rejection when not OK, records latency.
  grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const char* method,
                                  absl::Time start, const absl::Status& status);

 private:
  const RunDeps deps_;
  RunRegistry registry_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<StoppableStream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_SERVICE_H_
