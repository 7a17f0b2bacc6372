#include "client/cpp/channel.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace spotter {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string msg =
        absl::StrCat("cannot read the ", what, " ", path, ": ", std::strerror(err));
    return err == EACCES ? absl::PermissionDeniedError(msg) : absl::NotFoundError(msg);
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelSecurity& o) {
  if (o.cert_file.empty() != o.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs both the certificate and its key (--cert and --key)");
  }
  if (!o.cert_file.empty() && o.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate (mutual TLS) needs TLS: give the server's CA too (--ca)");
  }
  if (!o.server_name.empty() && o.ca_file.empty()) {
    return absl::InvalidArgumentError("--tls_server_name needs TLS: give the server's CA (--ca)");
  }
  grpc::ChannelArguments args;
  if (o.max_receive_message_bytes > 0) args.SetMaxReceiveMessageSize(o.max_receive_message_bytes);
  if (o.ca_file.empty()) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> ca = ReadPem(o.ca_file, "CA certificate");
  if (!ca.ok()) return ca.status();
  ssl.pem_root_certs = *ca;
  if (!o.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(o.cert_file, "client certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(o.key_file, "client key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  if (!o.server_name.empty()) args.SetSslTargetNameOverride(o.server_name);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

void AddRunHeader(grpc::ClientContext* ctx, const std::string& run) {
  ctx->AddMetadata(kRunHeader, run);
}

void AddBearerToken(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

}  // namespace spotter
