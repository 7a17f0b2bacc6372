// The WatchRun stream: a run's points, transitions and directives as they are
// published (after their commit), optionally after its history.
#ifndef SPOTTER_SERVER_RPC_WATCH_REACTOR_H_
#define SPOTTER_SERVER_RPC_WATCH_REACTOR_H_

#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/rpc/stream_host.h"

namespace spotter {

// A reactor for one WatchRun call with request `raw`; it deletes itself when
// the call is done. `host` outlives every stream it starts.
grpc::ServerWriteReactor<grpc::ByteBuffer>* NewWatchReactor(StreamHost* host,
                                                            grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* raw);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_WATCH_REACTOR_H_
