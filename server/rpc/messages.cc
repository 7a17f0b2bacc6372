#include "server/rpc/messages.h"

#include <cstdint>

#include "absl/strings/str_format.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "server/runs/rejection.h"

namespace spotter {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::ByteBuffer Serialize(const google::protobuf::Message& msg) {
  grpc::ByteBuffer out;
  bool own = false;
  grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(msg, &out, &own);
  return out;
}

absl::Status ParseMessage(grpc::ByteBuffer* raw, const Limits& limits,
                          google::protobuf::Message* out) {
  const size_t n = raw->Length();
  if (static_cast<int64_t>(n) > limits.max_message_bytes) {
    return WithReason(absl::ResourceExhaustedError(
                          absl::StrFormat("a %s of %d bytes exceeds the server's limit of %d bytes "
                                          "(--max_message_bytes)",
                                          out->GetTypeName(), n, limits.max_message_bytes)),
                      "message_too_large");
  }
  grpc::Status s =
      grpc::GenericDeserialize<grpc::ProtoBufferReader, google::protobuf::Message>(raw, out);
  if (!s.ok()) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "the %d bytes received are not a valid %s", n, out->GetTypeName())),
                      "unparseable");
  }
  return absl::OkStatus();
}

}  // namespace spotter
