#include "server/rpc/backup_reactor.h"

#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/rpc/messages.h"
#include "server/rpc/queued_stream.h"
#include "server/runs/rejection.h"

namespace spotter {

namespace {

// Bytes per BackupResponse: far below gRPC's default 4 MiB receive limit.
constexpr size_t kChunkBytes = 1 << 20;
// Chunks queued for the client at most: the file is read no faster than the
// client takes it, so a slow client costs 4 MiB of memory, not the file.
constexpr size_t kMaxQueuedChunks = 4;

std::string Hex(const unsigned char* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += absl::StrFormat("%02x", p[i]);
  return out;
}

void RemoveTemp(const std::string& path) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
  std::filesystem::remove(path + "-journal", ignored);
}

}  // namespace

// One Backup call. The gRPC side (writes, cancellation) is QueuedStream's;
// the backup thread produces the messages, waiting while kMaxQueuedChunks
// are queued. Deleted by whichever of OnDone and the backup thread is last.
class BackupReactor final : public QueuedStream<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  BackupReactor(StreamHost* host, BackupRunner* runner) : host_(host), runner_(runner) {}

  // Checks the call and starts the backup thread, or finishes the call.
  void Begin(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
    v1::BackupRequest req;
    grpc::ByteBuffer copy(*raw);
    absl::Status status = ParseMessage(&copy, host_->limits(), &req);
    if (status.ok()) {
      absl::StatusOr<const Principal*> caller = host_->Authenticate(ctx, Rpc::kBackup);
      if (!caller.ok()) {  // counted by Authenticate
        FinishAfterWrites(ToGrpcStatus(caller.status()));
        return;
      }
    }
    if (status.ok() &&
        (runner_->settings_.store == nullptr || !runner_->settings_.store->persistent())) {
      status = WithReason(absl::FailedPreconditionError(
                              "this server keeps no state file (spotterd runs without "
                              "--state_file), so there is nothing to back up: its runs live in "
                              "memory only. Start spotterd with --state_file=PATH to keep "
                              "state that can be backed up"),
                          "backup_no_state_file");
    }
    if (!status.ok()) {
      host_->CountReject(status);
      FinishAfterWrites(ToGrpcStatus(status));
      return;
    }
    if (absl::Status s = host_->Track(this); !s.ok()) {  // shutting down, or stream quota
      FinishAfterWrites(ToGrpcStatus(s));
      return;
    }
    tracked_ = true;
    if (!runner_->Acquire()) {
      status = WithReason(absl::AbortedError("another backup of this server is running; retry "
                                             "when it has finished (one at a time)"),
                          "backup_in_progress");
      host_->CountReject(status);
      FinishAfterWrites(ToGrpcStatus(status));
      return;
    }
    {
      absl::MutexLock l(&mu_);
      ++refs_;  // the backup thread's
    }
    runner_->Launch([this] { Work(); });
  }

  void OnDone() override {
    if (tracked_) host_->Untrack(this);
    Unref();
  }

 private:
  void Unref() {
    bool last;
    {
      absl::MutexLock l(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  bool CanSendLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finishing() || queued() < kMaxQueuedChunks;
  }
  bool DrainedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finishing() || queued() == 0;
  }

  // Queues `msg` once there is room; false when the stream is ending
  // (cancelled, shut down) and nothing more will be written.
  bool SendWhenRoom(const v1::BackupResponse& msg) {
    grpc::ByteBuffer bytes = Serialize(msg);
    absl::MutexLock l(&mu_, absl::Condition(this, &BackupReactor::CanSendLocked));
    if (finishing()) return false;
    EnqueueLocked(std::move(bytes));
    return true;
  }

  // The backup thread: copy, stream, remove the copy, finish the call.
  void Work() {
    const BackupSettings& settings = runner_->settings_;
    const absl::Time start = absl::Now();
    RemoveTemp(settings.temp_path);  // a copy left by a crash during a backup
    BackupOptions options = settings.copy;
    options.cancelled = [this] {
      absl::MutexLock l(&mu_);
      return finishing();
    };
    absl::StatusOr<BackupStats> stats = settings.store->Backup(settings.temp_path, options);
    absl::Status status = stats.status();
    v1::BackupSummary summary;
    if (status.ok()) {
      summary.set_copy_seconds(absl::ToDoubleSeconds(stats->copy_time));
      summary.set_steps(static_cast<uint32_t>(stats->steps));
      const absl::Time done = absl::Now();
      summary.mutable_completed_at()->set_seconds(absl::ToUnixSeconds(done));
      summary.mutable_completed_at()->set_nanos(static_cast<int32_t>(
          (done - absl::FromUnixSeconds(absl::ToUnixSeconds(done))) / absl::Nanoseconds(1)));
      status = Stream(settings.temp_path, &summary);
    }
    RemoveTemp(settings.temp_path);
    if (status.ok()) {
      v1::BackupResponse last;
      *last.mutable_summary() = summary;
      if (!SendWhenRoom(last)) status = absl::CancelledError("the client went away");
    }
    if (status.ok()) {
      // Successful once the last message is written, not merely queued.
      absl::MutexLock l(&mu_, absl::Condition(this, &BackupReactor::DrainedLocked));
      if (finishing()) status = absl::CancelledError("the client went away");
    }
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    host_->deps().metrics->ObserveBackup(status.ok(), summary.bytes(), seconds);
    if (status.ok()) {
      std::cerr << absl::StrFormat(
          "spotterd: backup: %d bytes, sha256 %s, copied in %.3f s "
          "(%d steps), sent in %.3f s\n",
          summary.bytes(), summary.sha256(), summary.copy_seconds(), summary.steps(), seconds);
    } else {
      std::cerr << "spotterd: backup failed: " << status.message() << "\n";
    }
    // The slot is free before the client can hear the outcome: a client that
    // backs up again as soon as this call returns must not be refused.
    runner_->Release();
    FinishAfterWrites(ToGrpcStatus(status));
    Unref();
  }

  // Streams the file at `path` in chunks; fills the summary's size and hash.
  absl::Status Stream(const std::string& path, v1::BackupSummary* summary) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::InternalError(absl::StrFormat("cannot read the backup copy %s", path));
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!sha || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) {
      return absl::InternalError("cannot start SHA-256 (OpenSSL)");
    }
    std::vector<char> buf(kChunkBytes);
    uint64_t total = 0;
    for (;;) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const size_t n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      EVP_DigestUpdate(sha.get(), buf.data(), n);
      total += n;
      v1::BackupResponse chunk;
      chunk.set_data(buf.data(), n);
      if (!SendWhenRoom(chunk)) return absl::CancelledError("the client went away");
    }
    if (in.bad()) {
      return absl::InternalError(absl::StrFormat("reading the backup copy %s failed", path));
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(sha.get(), digest, &len);
    summary->set_bytes(total);
    summary->set_sha256(Hex(digest, len));
    return absl::OkStatus();
  }

  StreamHost* const host_;
  BackupRunner* const runner_;
  bool tracked_ = false;               // set before any other thread sees the reactor
  int refs_ ABSL_GUARDED_BY(mu_) = 1;  // OnDone's; +1 while the backup thread runs
};

BackupRunner::~BackupRunner() {
  std::thread t;
  {
    absl::MutexLock l(&mu_);
    t = std::move(thread_);
  }
  if (t.joinable()) t.join();
}

bool BackupRunner::Acquire() {
  absl::MutexLock l(&mu_);
  if (running_) return false;
  running_ = true;
  return true;
}

void BackupRunner::Launch(std::function<void()> work) {
  absl::MutexLock l(&mu_);
  // The previous backup's thread gave the slot back (Release) and has at
  // most its call's Finish left to do.
  if (thread_.joinable()) thread_.join();
  thread_ = std::thread(std::move(work));
}

void BackupRunner::Release() {
  absl::MutexLock l(&mu_);
  running_ = false;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* BackupRunner::Start(StreamHost* host,
                                                                grpc::CallbackServerContext* ctx,
                                                                const grpc::ByteBuffer* raw) {
  auto* reactor = new BackupReactor(host, this);
  reactor->Begin(ctx, raw);
  return reactor;
}

}  // namespace spotter
