// spotter::RunSession: what a C++ trainer (one rank) links to report to
// spotterd and follow its directives.
//
//   auto session = RunSession::Start(options);      // opens or joins the run
//   for (step = 0; !session->ShouldStop(step); ++step) {
//     double lr = session->LrAt(step, my_lr);        // the directive in force
//     ... train ...
//     session->Upload(step, sketch_rows, loss, lr);  // never blocks
//   }
//   session->Close();
//
// Uploads go through a bounded outbox sent by a background thread; a full
// outbox drops the upload and counts it. Unacknowledged uploads are replayed
// after a reconnect (the server drops what it already applied). If spotterd
// is unreachable the trainer keeps going under the last directive it got and
// the session reconnects with exponential backoff (fail-open).
#ifndef SPOTTER_CLIENT_CPP_RUN_SESSION_H_
#define SPOTTER_CLIENT_CPP_RUN_SESSION_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/phase/directive.h"
#include "core/types.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace grpc {
class Channel;
}

namespace spotter {

struct SessionOptions {
  // spotterd address (host:port). Ignored when `channel` is set.
  std::string target = "127.0.0.1:50051";
  // A ready channel (e.g. Server::InProcessChannel() in tests).
  std::shared_ptr<grpc::Channel> channel;
  // The run to open or join, its config (every rank passes the same), and
  // this process's rank.
  std::string run;
  v1::RunConfig config;
  uint32_t rank = 0;
  // Uploads kept until acknowledged (queued or in flight); beyond it Upload
  // drops and counts.
  size_t outbox_capacity = 1024;
  // Reconnect backoff: doubles from initial to max.
  absl::Duration backoff_initial = absl::Milliseconds(50);
  absl::Duration backoff_max = absl::Seconds(5);
  // A heartbeat is sent when nothing was sent for this long.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // Deadline of each OpenRun attempt.
  absl::Duration rpc_timeout = absl::Seconds(5);
  std::string client_name = "spotter-cpp/0.1";
};

// Counters, for logs and tests. Monotonic.
struct SessionStats {
  uint64_t uploads = 0;     // accepted by Upload/ReportEval
  uint64_t dropped = 0;     // refused by a full outbox
  uint64_t sent = 0;        // messages written (replays included)
  uint64_t acked_seq = 0;   // highest seq the server acknowledged
  uint64_t rejects = 0;     // Rejects received
  uint64_t connects = 0;    // streams opened (1 + reconnects)
  uint64_t directives = 0;  // directives received
  std::string last_reject;  // message of the latest Reject
  std::string last_error;   // latest stream or RPC error
};

// Thread-safe: Upload and the getters may be called from any thread.
class RunSession {
 public:
  // Opens (or joins) the run with OpenRun and starts the background stream.
  // Returns the OpenRun error for a config the server refuses
  // (INVALID_ARGUMENT, FAILED_PRECONDITION...). When the server is
  // unreachable it returns a session anyway (fail-open) that keeps retrying.
  static absl::StatusOr<std::unique_ptr<RunSession>> Start(SessionOptions options);

  ~RunSession();  // Close()
  RunSession(const RunSession&) = delete;
  RunSession& operator=(const RunSession&) = delete;

  // Queues a batch of sketch rows (m x k, row-major) taken at `step`. Never
  // blocks; false when the outbox is full (counted in stats().dropped) or the
  // session is closed. loss NaN = not given.
  bool Upload(uint64_t step, const Eigen::Ref<const RowMatrixXf>& rows, double loss,
              double lr, uint32_t samples_per_row = 1);

  // Queues validation metrics, e.g. {{"val_loss", 0.3}}.
  bool ReportEval(uint64_t step, const std::map<std::string, double>& metrics);

  // The non-advisory directive in force at `step` (the highest version whose
  // effective_step <= step), if any.
  std::optional<Directive> DirectiveAt(uint64_t step) const;
  // The latest directive received, advisory or not.
  std::optional<Directive> LatestDirective() const;
  // lr_at(step) of the directive in force, or `fallback` when there is none.
  double LrAt(uint64_t step, double fallback) const;
  // True when the directive in force at `step` says stop.
  bool ShouldStop(uint64_t step) const;
  // The latest diagnostics the server pushed.
  std::optional<v1::TrajectoryPoint> LatestDiagnostics() const;
  // The run's effective config as the server sent it (after the Welcome).
  std::optional<v1::RunConfig> config() const;

  // Blocks until a directive of version >= `version` arrived; false on timeout.
  bool WaitForDirective(uint64_t version, absl::Duration timeout) const;
  // Blocks until every upload queued so far is acknowledged; false on timeout.
  bool Flush(absl::Duration timeout);

  SessionStats stats() const;

  // Flushes for up to `timeout`, closes the stream and joins the thread.
  // Idempotent.
  void Close(absl::Duration timeout = absl::Seconds(2));

 private:
  struct State;
  explicit RunSession(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_RUN_SESSION_H_
