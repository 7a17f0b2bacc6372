#include "client/cpp/ctl/backup.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "absl/strings/str_format.h"

namespace spotter {
namespace {

// Writes all of `data` to `fd`; false with errno set on failure.
bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string Hex(const unsigned char* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += absl::StrFormat("%02x", p[i]);
  return out;
}

}  // namespace

BackupOutcome ReceiveBackup(v1::SpotterService::Stub& stub, grpc::ClientContext* ctx,
                            const std::string& path) {
  BackupOutcome out;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    out.local = absl::AlreadyExistsError(
        absl::StrFormat("%s exists; a backup is written to a new file", path));
    return out;
  }
  const std::string partial = path + ".partial";
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    out.local = absl::PermissionDeniedError(
        absl::StrFormat("cannot create %s: %s", partial, std::strerror(errno)));
    return out;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr);
  uint64_t bytes = 0;
  bool have_summary = false;
  v1::BackupRequest req;
  auto reader = stub.Backup(ctx, req);
  v1::BackupResponse chunk;
  while (reader->Read(&chunk)) {
    if (chunk.has_summary()) {
      out.summary = chunk.summary();
      have_summary = true;
      continue;
    }
    if (!out.local.ok()) continue;  // keep reading to learn the call's status
    if (have_summary) {
      out.local = absl::DataLossError("the server sent data after its summary");
      continue;
    }
    if (!WriteAll(fd, chunk.data())) {
      out.local = absl::ResourceExhaustedError(
          absl::StrFormat("writing %s: %s", partial, std::strerror(errno)));
      ctx->TryCancel();  // no point in receiving the rest
      continue;
    }
    EVP_DigestUpdate(sha.get(), chunk.data().data(), chunk.data().size());
    bytes += chunk.data().size();
  }
  out.rpc = reader->Finish();
  if (out.rpc.ok() && out.local.ok() && ::fsync(fd) != 0) {
    out.local = absl::ResourceExhaustedError(
        absl::StrFormat("fsync %s: %s", partial, std::strerror(errno)));
  }
  ::close(fd);
  if (out.rpc.ok() && out.local.ok()) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(sha.get(), digest, &len);
    const std::string got = Hex(digest, len);
    if (!have_summary) {
      out.local = absl::DataLossError("the server ended the backup without its summary");
    } else if (bytes != out.summary.bytes() || got != out.summary.sha256()) {
      out.local = absl::DataLossError(absl::StrFormat(
          "received %d bytes with SHA-256 %s; the server sent %d bytes with SHA-256 %s", bytes, got,
          out.summary.bytes(), out.summary.sha256()));
    } else if (std::rename(partial.c_str(), path.c_str()) != 0) {
      out.local = absl::PermissionDeniedError(
          absl::StrFormat("cannot rename %s to %s: %s", partial, path, std::strerror(errno)));
    }
  }
  if (!out.ok()) std::filesystem::remove(partial, ec);
  return out;
}

}  // namespace spotter
