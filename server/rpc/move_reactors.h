// The two RPCs that move a run between replicas (docs/SCALING.md, "Moving
// runs"), as streams so that a run of any size moves:
//
// - ExportRun (server streaming) freezes the run, waits for the group commit
//   to make everything it acknowledged durable, then reads the run's rows
//   from the store and streams them in messages of about 1 MiB (or half of
//   --max_message_bytes, so that a replica configured alike accepts them).
// - ImportRun (client streaming) collects the rows of one run from any
//   number of messages, up to Limits::max_import_bytes, and restores the run
//   (RunRegistry::Import) only after a message marked `last`: a client that
//   dies half way imports nothing. It answers once the rows are durable.
//
// Both authenticate for their Rpc (admin only), check the x-spotter-run
// header against the run, count refusals under their reason and observe the
// call's time like the unary RPCs.
#ifndef SPOTTER_SERVER_RPC_MOVE_REACTORS_H_
#define SPOTTER_SERVER_RPC_MOVE_REACTORS_H_

#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/rpc/stream_host.h"

namespace spotter {

// Rows per ExportRun message: the rows of about this many bytes, or of half
// of --max_message_bytes when that is less (a larger row travels alone).
inline constexpr size_t kExportChunkBytes = 1 << 20;

grpc::ServerWriteReactor<grpc::ByteBuffer>* StartExport(StreamHost* host,
                                                        grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* raw);
grpc::ServerReadReactor<grpc::ByteBuffer>* StartImport(StreamHost* host,
                                                       grpc::CallbackServerContext* ctx,
                                                       grpc::ByteBuffer* response);

// The answer to a call whose change the store failed to commit (`commit` is
// the committer's error): UNAVAILABLE, reason store_failed.
absl::Status StoreFailed(const absl::Status& commit);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_MOVE_REACTORS_H_
