// The Backup RPC: an online copy of the state file, streamed to an admin.
//
// Why stream the bytes rather than write a file on the server: the operator
// who backs up is usually on another host (a laptop, a CronJob pod), and
// spotterd's volume is only reachable through spotterd. The server copies
// its store to a temporary file next to the state file (SQLite's online
// backup API, Store::Backup), streams that file in 1 MiB chunks with its
// SHA-256 and size in a final summary, and removes it. The copy and the
// stream run on a thread of their own, never on a gRPC thread; at most one
// backup runs at a time.
#ifndef SPOTTER_SERVER_RPC_BACKUP_REACTOR_H_
#define SPOTTER_SERVER_RPC_BACKUP_REACTOR_H_

#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/rpc/stream_host.h"
#include "server/storage/store.h"

namespace spotter {

struct BackupSettings {
  // The store to copy; not owned, outlives the BackupRunner. Null: no
  // backups (FAILED_PRECONDITION).
  Store* store = nullptr;
  // The file the copy is written to before it is streamed (and removed
  // after). Must be on a filesystem with room for one more state file.
  std::string temp_path;
  BackupOptions copy;
};

// Starts Backup calls and owns the thread of the one running. Thread-safe.
class BackupRunner {
 public:
  explicit BackupRunner(BackupSettings settings) : settings_(std::move(settings)) {}
  // Waits for the running backup's thread (its stream is ended by then:
  // StopStreams at shutdown, or the call ended).
  ~BackupRunner();

  // The reactor of one Backup call. Authenticates the caller for
  // Rpc::kBackup (admin), then refuses with FAILED_PRECONDITION when the
  // server keeps no state file and ABORTED while another backup runs.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Start(StreamHost* host,
                                                    grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* raw);

 private:
  friend class BackupReactor;
  // Takes the one backup slot; false when a backup runs.
  bool Acquire();
  // Runs `work` on the backup thread (after Acquire); `work` calls Release
  // before it finishes the call.
  void Launch(std::function<void()> work);
  void Release();

  const BackupSettings settings_;
  absl::Mutex mu_;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_BACKUP_REACTOR_H_
