// The gRPC edge: SpotterService on the callback API. Converts between proto
// and the run registry once, here; nothing below it knows about gRPC. The
// unary methods are here; the streams are reactors of their own
// (connect_reactor.h, watch_reactor.h) that see the service only as a
// StreamHost.
//
// Every method is registered raw (grpc::ByteBuffer in and out) so that the
// edge, not gRPC, parses requests: an oversized or unparseable message is
// answered with a clear status or Reject and counted, like every other bad
// input, instead of gRPC's bare UNIMPLEMENTED or a silently ended stream.
// Every call is authenticated and authorized (server/auth.h) before it
// touches a run. Calls that change state reply, and uploads are acknowledged,
// only once the change is durable (server/committer.h).
#ifndef SPOTTER_SERVER_RPC_SERVICE_H_
#define SPOTTER_SERVER_RPC_SERVICE_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/rpc/auth.h"
#include "server/rpc/backup_reactor.h"
#include "server/rpc/stream_host.h"
#include "server/runs/run_registry.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace spotter {

// Every method of SpotterService, raw.
using RawSpotterService = v1::SpotterService::WithRawCallbackMethod_OpenRun<
    v1::SpotterService::WithRawCallbackMethod_Connect<
        v1::SpotterService::WithRawCallbackMethod_GetRun<
            v1::SpotterService::WithRawCallbackMethod_ListRuns<
                v1::SpotterService::WithRawCallbackMethod_GetTrajectory<
                    v1::SpotterService::WithRawCallbackMethod_WatchRun<
                        v1::SpotterService::WithRawCallbackMethod_OverridePhase<
                            v1::SpotterService::WithRawCallbackMethod_FinishRun<
                                v1::SpotterService::WithRawCallbackMethod_DeleteRun<
                                    v1::SpotterService::WithRawCallbackMethod_Backup<
                                        v1::SpotterService::WithRawCallbackMethod_ExportRun<
                                            v1::SpotterService::WithRawCallbackMethod_ImportRun<
                                                v1::SpotterService::Service>>>>>>>>>>>>;

struct ServiceOptions {
  RunDeps deps;
  // Bearer tokens; null: no authentication.
  std::shared_ptr<const TokenTable> tokens;
  // A Connect stream that sends nothing (not even a heartbeat) for this long
  // is ended with RESOURCE_EXHAUSTED; zero: never. Measured on deps.clock.
  absl::Duration idle_timeout = absl::Minutes(5);
  // Finished runs older than this are deleted by the sweep; zero: never.
  absl::Duration finished_run_ttl = absl::ZeroDuration();
  // How often the idle streams are looked for (real time); zero: only when
  // SweepIdleStreams is called.
  absl::Duration idle_sweep_interval = absl::Seconds(1);
  // Refuse run-scoped calls without the x-spotter-run header (a deployment
  // behind a proxy that routes on it: a call without it would land on an
  // arbitrary replica).
  bool require_run_header = false;
  // The Backup RPC: the store to copy and how (server/rpc/backup_reactor.h).
  BackupSettings backup;
};

// The initial-metadata key naming the replica that answered a call
// (ServerOptions::replica_id; docs/SCALING.md).
inline constexpr char kReplicaHeader[] = "x-spotter-replica";

// Thread-safe: gRPC calls every method from its own threads.
class SpotterServiceImpl final : public RawSpotterService, public StreamHost {
 public:
  explicit SpotterServiceImpl(const ServiceOptions& options);
  ~SpotterServiceImpl() override;

  grpc::ServerUnaryReactor* OpenRun(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetTrajectory(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* req,
                                          grpc::ByteBuffer* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchRun(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* OverridePhase(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* req,
                                          grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* FinishRun(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                      grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* DeleteRun(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                      grpc::ByteBuffer* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Backup(grpc::CallbackServerContext* ctx,
                                                     const grpc::ByteBuffer* req) override;
  // server/rpc/move_reactors.h
  grpc::ServerWriteReactor<grpc::ByteBuffer>* ExportRun(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* req) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* ImportRun(grpc::CallbackServerContext* ctx,
                                                       grpc::ByteBuffer* resp) override;

  // The name sent as kReplicaHeader with every response from now on.
  void SetReplicaId(const std::string& id);

  // Ends every open stream with UNAVAILABLE (graceful shutdown); streams that
  // start afterwards are refused.
  void StopStreams();
  // Ends the Connect streams idle for longer than the idle timeout; returns
  // how many. The sweeper thread calls it; tests call it after advancing a
  // fake clock.
  int SweepIdleStreams();
  // Deletes the runs that finished more than finished_run_ttl ago (on
  // deps.clock), counting them; returns how many.
  int ExpireFinishedRuns();

  // StreamHost.
  RunRegistry& runs() override { return runs_; }
  const RunDeps& deps() const override { return options_.deps; }
  absl::Status Track(StoppableStream* s) override;
  void Untrack(StoppableStream* s) override;
  absl::StatusOr<const Principal*> Authenticate(const grpc::CallbackServerContext* ctx,
                                                Rpc rpc) override;
  void CountReject(const absl::Status& status) override;
  absl::Status CheckRunHeader(const grpc::CallbackServerContext* ctx,
                              const std::string& run) const override;

 private:
  template <typename Req, typename Resp, typename Handler>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, Rpc rpc,
                                  const grpc::ByteBuffer* raw, grpc::ByteBuffer* out,
                                  Handler handler);
  void SweepLoop();
  // Adds kReplicaHeader to the call's initial metadata.
  void AddReplicaHeader(grpc::CallbackServerContext* ctx);

  const ServiceOptions options_;
  const Authorizer authorizer_;
  RunRegistry runs_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<StoppableStream*> streams_ ABSL_GUARDED_BY(mu_);
  std::thread sweeper_;
  mutable absl::Mutex replica_mu_;
  std::string replica_id_ ABSL_GUARDED_BY(replica_mu_);
  // Last: its destructor waits for a running backup, which uses the above.
  BackupRunner backups_;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_SERVICE_H_
