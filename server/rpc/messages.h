// Bytes in and out of the raw gRPC methods: serialisation, parsing with the
// server's size limit, and the conversion of absl::Status to grpc::Status
// (done once, here at the edge). Stateless; thread-safe.
#ifndef SPOTTER_SERVER_RPC_MESSAGES_H_
#define SPOTTER_SERVER_RPC_MESSAGES_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "server/runs/limits.h"

namespace spotter {

grpc::Status ToGrpcStatus(const absl::Status& s);

grpc::ByteBuffer Serialize(const google::protobuf::Message& msg);

// Parses a request or stream message after checking its size. Consumes
// `raw`. INVALID_ARGUMENT (reason unparseable) or RESOURCE_EXHAUSTED
// (reason message_too_large).
absl::Status ParseMessage(grpc::ByteBuffer* raw, const Limits& limits,
                          google::protobuf::Message* out);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_MESSAGES_H_
