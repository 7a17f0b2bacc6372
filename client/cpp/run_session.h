// spotter::RunSession: what a C++ trainer (one rank) links to report to
// spotterd and follow its directives. The Python client (spotter.RunSession)
// has the same names, counters, defaults and drop policy; docs/CLIENTS.md has
// the table of both.
//
//   auto session = RunSession::Start(options);          // opens or joins the run
//   for (step = 0; !session->ShouldStop(step); ++step) {
//     double lr = session->LrAt(step, my_lr);            // the directive in force
//     ... train ...
//     session->UploadSketch(step, sketch_rows, loss, lr);  // never blocks
//   }
//   session->Close();
//
// Uploads go through a bounded queue sent by a background thread; when it is
// full the oldest queued sketch is evicted to make room (DropPolicy::kOldest,
// the default) or the new upload is refused (kNewest); every drop is counted.
// Sequence numbers are assigned at the first send, continuing from the first
// Welcome's last_seq. Unacknowledged uploads are replayed after a reconnect
// (the server drops what it already applied). If spotterd is unreachable the
// trainer keeps going under the last directive it got and the session
// reconnects with exponential backoff (fail-open).
#ifndef SPOTTER_CLIENT_CPP_RUN_SESSION_H_
#define SPOTTER_CLIENT_CPP_RUN_SESSION_H_

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/phase/directive.h"
#include "core/types.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace grpc {
class Channel;
}

namespace spotter {

// What a full queue does with one more upload (SessionOptions::drop).
enum class DropPolicy {
  // Evicts the oldest queued sketch, sent or not, and queues the new upload.
  // Eval reports are never evicted for a sketch; a new eval report evicts the
  // oldest eval report only when the queue holds no sketch. An evicted upload
  // that already had a seq leaves a gap, which the protocol allows.
  kOldest,
  // Refuses the new upload (UploadSketch / ReportEval return false).
  kNewest,
};

struct SessionOptions {
  // spotterd address (host:port). Ignored when `channel` is set.
  std::string target = "127.0.0.1:50051";
  // A ready channel (e.g. Server::InProcessChannel() in tests, or one from
  // spotter::MakeChannel (client/cpp/channel.h) for TLS).
  std::shared_ptr<grpc::Channel> channel;
  // Bearer token sent with every call (a server with --tokens_file); empty:
  // none.
  std::string token;
  // The run to open or join, its config (every rank passes the same), and
  // this process's rank.
  std::string run;
  v1::RunConfig config;
  uint32_t rank = 0;
  // Most uploads held until acknowledged (queued or in flight), >= 1.
  size_t queue_size = 256;
  // What a full queue drops.
  DropPolicy drop = DropPolicy::kOldest;
  // Deadline of each OpenRun attempt.
  absl::Duration open_timeout = absl::Seconds(5);
  // When true, Start fails if the first OpenRun does (UNAVAILABLE...) instead
  // of returning a session that keeps retrying.
  bool require_server = false;
  // Reconnect backoff: doubles from initial to max, with +-20% jitter.
  absl::Duration backoff_initial = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(5);
  // A heartbeat (the rank's step) is sent when nothing was sent for this long.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // A stream without a Welcome after this long is cancelled and reopened.
  absl::Duration welcome_timeout = absl::Seconds(10);
  std::string client_name = "spotter-cpp/0.1";
  // This process's incarnation (Hello.incarnation); 0 = draw a random one.
  // Every RunSession is a new incarnation: its reconnects replay exactly-once,
  // and a session started after a restart is never taken for a replay.
  uint64_t incarnation = 0;
  // What Checkpoint() returned in the process this one resumes: its
  // directives apply from the first step, before the server is reached.
  // Its run and rank must be this session's (INVALID_ARGUMENT otherwise).
  std::optional<v1::SessionCheckpoint> resume;
};

// Counters of one session, for logs and tests (a snapshot, see stats()). The
// counters are monotonic; queued and connected describe the moment.
struct SessionStats {
  uint64_t enqueued = 0;         // uploads accepted into the queue (sketches + evals)
  uint64_t sent = 0;             // uploads written to a stream, replays included
  uint64_t acked = 0;            // uploads acknowledged (applied, rejected or duplicate)
  uint64_t acked_seq = 0;        // highest seq the server acknowledged
  uint64_t replayed = 0;         // uploads re-sent after a reconnect
  uint64_t dropped = 0;          // uploads dropped because the queue was full
  uint64_t dropped_closed = 0;   // uploads refused after Close(), the run's end or an error
  uint64_t dropped_invalid = 0;  // uploads refused locally (non-finite, empty, step backwards)
  uint64_t rejects = 0;          // Rejects received
  std::map<std::string, uint64_t> rejected;  // Rejects by reason ("dim_mismatch", ...)
  std::string last_reject;                   // message of the latest Reject
  uint64_t connects = 0;                     // streams opened (1 + reconnects)
  uint64_t reconnects = 0;                   // streams opened after the first
  uint64_t heartbeats = 0;                   // heartbeats sent
  uint64_t directives = 0;                   // distinct directives received (advisory included)
  uint64_t diagnostics = 0;                  // trajectory points received
  uint64_t queued = 0;                       // uploads waiting to be acknowledged now
  bool connected = false;                    // a stream is open and welcomed now
  std::string last_error;                    // latest stream or RPC error
};

// Thread-safe: every method may be called from any thread.
class RunSession {
 public:
  static constexpr double kNotGiven = std::numeric_limits<double>::quiet_NaN();

  // Opens (or joins) the run with OpenRun and starts the background stream.
  // Returns the OpenRun error for a config the server refuses
  // (INVALID_ARGUMENT, FAILED_PRECONDITION...) and INVALID_ARGUMENT for
  // queue_size 0. When the server is unreachable it returns a session anyway
  // (fail-open) that keeps retrying, unless options.require_server.
  static absl::StatusOr<std::unique_ptr<RunSession>> Start(SessionOptions options);

  ~RunSession();  // Close()
  RunSession(const RunSession&) = delete;
  RunSession& operator=(const RunSession&) = delete;

  // Queues a batch of sketch rows (m x k, row-major, m >= 1) taken at `step`.
  // Never blocks on the network. Returns false when the upload was refused:
  // closed session, ended run or permanent error (stats().dropped_closed),
  // empty or non-finite rows, infinite loss or a step below the last upload's
  // (dropped_invalid), or a full queue under DropPolicy::kNewest (dropped).
  // True when queued (under kOldest an older sketch may have been evicted for
  // it). loss and lr NaN = not given.
  bool UploadSketch(uint64_t step, const Eigen::Ref<const RowMatrixXf>& rows,
                    double loss = kNotGiven, double lr = kNotGiven, uint32_t samples_per_row = 1);

  // The trainer's loss at `step` was NaN or infinite (e.g. natural gradient
  // diverging; its gradients are then no use to sketch): queues an upload
  // flagged SketchBatch.loss_non_finite, which the server counts for the
  // divergence signal and the guard of the natural-gradient switch
  // (docs/PHASES.md). Otherwise as UploadSketch.
  bool ReportNonFiniteLoss(uint64_t step, double lr = kNotGiven);

  // Queues validation metrics, e.g. {{"val_loss", 0.3}}. Non-finite values
  // are refused (false, dropped_invalid); otherwise as UploadSketch.
  bool ReportEval(uint64_t step, const std::map<std::string, double>& metrics);

  // Tells the session the rank's current step, sent in heartbeats (so the
  // server places effective steps ahead of ranks that do not upload).
  // Heartbeats carry the highest of this and the last upload's step.
  void NoteStep(uint64_t step);

  // The non-advisory directive in force at `step` (the latest one whose
  // effective_step <= step), if any.
  std::optional<Directive> DirectiveAt(uint64_t step) const;
  // lr_at(step) of the directive in force, or `fallback` when there is none.
  double LrAt(uint64_t step, double fallback) const;
  // True when the directive in force at `step` says stop.
  bool ShouldStop(uint64_t step) const;
  // The newest advisory (ADVISE-mode) directive: shown, never applied.
  std::optional<Directive> Advice() const;
  // The latest directive received, advisory or not.
  std::optional<Directive> LatestDirective() const;
  // Every directive received, advisory ones included, oldest first.
  std::vector<Directive> Directives() const;
  // What to keep in the trainer's checkpoint taken before running `step`
  // (see SessionOptions::resume and docs/RESTARTS.md).
  v1::SessionCheckpoint Checkpoint(uint64_t step) const;
  uint64_t incarnation() const;
  // The latest diagnostics (trajectory point) the server pushed.
  std::optional<v1::TrajectoryPoint> LatestDiagnostics() const;
  // The run's effective config as the server sent it (after the first
  // successful OpenRun; the Welcome's from then on).
  std::optional<v1::RunConfig> config() const;

  // Blocks until a directive of version >= `version` arrived; false on
  // timeout or when the session stopped (ended(), error()). Start-up only.
  bool WaitForDirective(uint64_t version, absl::Duration timeout) const;
  // Blocks until every upload queued so far is acknowledged; false on timeout
  // or when the session stopped with uploads still queued.
  bool Flush(absl::Duration timeout);

  SessionStats stats() const;
  // True while a stream is open and welcomed.
  bool connected() const;
  // True once the server ended the run (finished or deleted).
  bool ended() const;
  // The permanent error that stopped the session (it keeps answering
  // DirectiveAt from what it has), or OK.
  absl::Status error() const;

  // Stops accepting uploads, waits up to `timeout` for the queue to be
  // acknowledged (when `flush`; also while reconnecting), sends a last
  // heartbeat, ends the stream and joins the thread. Idempotent.
  void Close(absl::Duration timeout = absl::Seconds(5), bool flush = true);

 private:
  struct State;
  explicit RunSession(std::unique_ptr<State> state);
  // Queues `msg` (an upload) as UploadSketch does.
  bool Enqueue(v1::ConnectRequest msg, uint64_t step);
  std::unique_ptr<State> s_;
};

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_RUN_SESSION_H_
