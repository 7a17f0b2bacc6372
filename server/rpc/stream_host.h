// What the stream reactors need from the service that starts them: the run
// registry and the server's dependencies, stream bookkeeping, authentication
// and reject counting. SpotterServiceImpl implements it; the reactors depend
// on this small interface rather than on the service class.
#ifndef SPOTTER_SERVER_RPC_STREAM_HOST_H_
#define SPOTTER_SERVER_RPC_STREAM_HOST_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"
#include "server/rpc/auth.h"
#include "server/runs/run.h"
#include "server/runs/run_registry.h"

namespace spotter {

// A live server stream that can be told to end (at shutdown, or when idle).
class StoppableStream {
 public:
  virtual ~StoppableStream() = default;
  // Finishes the stream with `status` once its queued messages are written.
  virtual void Stop(const grpc::Status& status) = 0;
  // True when the client has sent nothing since `cutoff` while the server
  // was reading (Connect streams; watchers only listen).
  virtual bool IdleSince(absl::Time cutoff) const { return false; }
};

// The metadata key that names the run of a run-scoped call, for proxies that
// route by run (docs/SCALING.md); clients send it with every such call
// (client/cpp/channel.h has the same key).
inline constexpr char kRunHeader[] = "x-spotter-run";

// Thread-safe: every reactor of the server calls it from gRPC's threads.
class StreamHost {
 public:
  virtual ~StreamHost() = default;

  virtual RunRegistry& runs() = 0;
  virtual const RunDeps& deps() const = 0;
  const Limits& limits() const { return deps().limits; }
  Committer& committer() const { return *deps().committer; }

  // Registers a starting stream. UNAVAILABLE after StopStreams,
  // RESOURCE_EXHAUSTED beyond limits.max_streams (counted). A stream that
  // was tracked calls Untrack in OnDone.
  virtual absl::Status Track(StoppableStream* s) = 0;
  virtual void Untrack(StoppableStream* s) = 0;

  // Authenticates the call for `rpc` from its metadata (counted on failure).
  virtual absl::StatusOr<const Principal*> Authenticate(const grpc::CallbackServerContext* ctx,
                                                        Rpc rpc) = 0;

  // Counts a failed call or message under its reason label.
  virtual void CountReject(const absl::Status& status) = 0;

  // The run named in the call's `x-spotter-run` metadata (kRunHeader), which
  // a proxy may route on, against the run the request names: INVALID_ARGUMENT
  // when they differ, or when the header is absent and the server requires it
  // (--require_run_header). Not counted (the caller counts its failure).
  virtual absl::Status CheckRunHeader(const grpc::CallbackServerContext* ctx,
                                      const std::string& run) const = 0;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_STREAM_HOST_H_
