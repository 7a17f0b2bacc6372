// A channel to spotterd as its clients reach a secured server: TLS with a CA
// (and optionally a client certificate, for mutual TLS) and a bearer token
// sent with every call. Shared by spotterctl and C++ trainers
// (docs/SECURITY.md).
#ifndef SPOTTER_CLIENT_CPP_CHANNEL_H_
#define SPOTTER_CLIENT_CPP_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace spotter {

struct ChannelSecurity {
  // PEM file of the CA that signed the server's certificate. Empty: plaintext
  // (a server listening on loopback without TLS).
  std::string ca_file;
  // Client certificate and key (PEM), for a server that requires mutual TLS.
  // Both or neither; only with ca_file.
  std::string cert_file;
  std::string key_file;
  // The name the server's certificate must carry, when it differs from the
  // host in the target (e.g. dialing 127.0.0.1 for a certificate of
  // "spotterd.example"). Empty: the target's host.
  std::string server_name;
  // Bearer token, sent as "authorization: Bearer <token>" on every call.
  // Empty: none.
  std::string token;
  // Largest message the channel accepts, bytes; 0: gRPC's default (4 MiB).
  // spotterctl raises it for ExportRun, whose answer holds a whole run.
  int max_receive_message_bytes = 0;
};

// The channel to `target` (host:port) with `security`'s transport.
// INVALID_ARGUMENT when a certificate option is inconsistent, NOT_FOUND /
// PERMISSION_DENIED when a file cannot be read; the message names the file.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelSecurity& security);

// Adds `token` (if any) to a call's metadata.
void AddBearerToken(grpc::ClientContext* ctx, const std::string& token);

// The metadata key that names the run of a run-scoped call, so a proxy can
// route every call about one run to one replica (docs/SCALING.md); spotterd
// refuses a call whose header and request name different runs.
inline constexpr char kRunHeader[] = "x-spotter-run";

// Adds the run header for `run` to a call about it.
void AddRunHeader(grpc::ClientContext* ctx, const std::string& run);

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_CHANNEL_H_
