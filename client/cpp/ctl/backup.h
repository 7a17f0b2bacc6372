// `spotterctl backup`: receives the server's Backup stream into a local file
// and checks it against the server's summary (size and SHA-256) before it
// takes the file's name, so a failed or cut-off backup never leaves a file
// that looks like a backup. The file is spotterd's state file as of the
// backup: restore it by copying it in place of --state_file with spotterd
// stopped (docs/RUNBOOK.md "Restore from a backup").
#ifndef SPOTTER_CLIENT_CPP_CTL_BACKUP_H_
#define SPOTTER_CLIENT_CPP_CTL_BACKUP_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace spotter {

struct BackupOutcome {
  // The call: what the server said (OK when it sent the whole file).
  grpc::Status rpc;
  // This side: writing the file, or checking it against the summary
  // (DATA_LOSS when the bytes received are not the ones the server sent).
  // Checked only when rpc is OK.
  absl::Status local;
  // The server's summary (when both are OK).
  v1::BackupSummary summary;

  bool ok() const { return rpc.ok() && local.ok(); }
};

// Calls Backup with `ctx` (its deadline and token set by the caller) and
// writes the file to `path`: first to `path`.partial, fsynced, renamed to
// `path` only once its size and SHA-256 match the summary. An existing
// `path` is refused (ALREADY_EXISTS, before the call) rather than replaced.
BackupOutcome ReceiveBackup(v1::SpotterService::Stub& stub, grpc::ClientContext* ctx,
                            const std::string& path);

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_CTL_BACKUP_H_
