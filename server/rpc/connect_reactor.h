// The Connect stream, the heart of the service: one trainer rank's Hello,
// then its sketches, eval reports and heartbeats in; the Welcome, acks,
// rejects, directives and diagnostics out. Every upload is acknowledged once
// its effect is durable (storage/committer.h); acks are coalesced.
#ifndef SPOTTER_SERVER_RPC_CONNECT_REACTOR_H_
#define SPOTTER_SERVER_RPC_CONNECT_REACTOR_H_

#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/rpc/stream_host.h"

namespace spotter {

// A reactor for one Connect call; it deletes itself when the call is done.
// `host` outlives every stream it starts.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewConnectReactor(
    StreamHost* host, grpc::CallbackServerContext* ctx);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_CONNECT_REACTOR_H_
