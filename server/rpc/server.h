// spotterd as a library: options, BuildAndStart, Shutdown. main.cc only parses
// flags into ServerOptions; tests start the same Server in-process on port 0.
#ifndef SPOTTER_SERVER_RPC_SERVER_H_
#define SPOTTER_SERVER_RPC_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/util/clock.h"
#include "server/rpc/auth.h"
#include "server/runs/limits.h"
#include "server/runs/run.h"
#include "server/storage/sqlite_store.h"
#include "server/storage/store.h"

namespace grpc {
class Channel;
}
namespace prometheus {
class Registry;
}

namespace spotter {

struct ServerOptions {
  // gRPC address, host:port; port 0 picks a free port (see Server::port()).
  std::string listen_address = "127.0.0.1:50051";
  // Prometheus /metrics address, host:port; empty disables the exposer.
  std::string metrics_address = "127.0.0.1:9464";
  Limits limits;
  // Threads that merge sketches and compute spectral summaries.
  int eval_threads = 2;
  // Evaluations that may wait for a thread (one per run at most).
  size_t eval_queue = 100000;
  // Time source; not owned, must outlive the server.
  Clock* clock = Clock::Real();
  // Per-run metric series of a run not updated for this long are removed
  // until its next update; zero: only when the run ends.
  absl::Duration metrics_run_ttl = absl::Minutes(30);
  // Most runs with series on /metrics at once; 0: no cap.
  size_t metrics_max_runs = 1000;

  // Durable state (docs/RELIABILITY.md). The SQLite file at state_file
  // (created if missing); empty: nothing survives a restart. `store`, when
  // set, is used instead (tests: MemoryStore, FaultInjectingStore).
  std::string state_file;
  SqliteOptions sqlite;
  std::shared_ptr<Store> store;
  CheckpointPolicy checkpoint;
  // Trajectory points each run keeps in memory; older ones are read back
  // from the store (or, without one, compacted: server/runs/point_history.h).
  size_t point_window = kDefaultPointWindow;
  // Online backups (the Backup RPC, docs/RELIABILITY.md): how the store is
  // copied, and the folder the copy is written to before it is streamed
  // (empty: the state file's folder; it needs room for one more state file).
  BackupOptions backup;
  std::string backup_dir;

  // Security (docs/RELIABILITY.md). TLS when tls_cert_file and tls_key_file
  // are set (PEM); mutual TLS when tls_client_ca_file is set too (clients
  // must present a certificate it signed).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // How often the certificate, key and client CA files are read again, so a
  // renewed certificate (cert-manager, a rotated Secret) is served without a
  // restart; new connections get it, open ones keep theirs. Zero: read once.
  absl::Duration tls_reload_interval = absl::Seconds(60);
  // Bearer tokens with roles (server/auth.h): a tokens file, or a parsed
  // table (tests). Neither: no authentication.
  std::string tokens_file;
  std::shared_ptr<const TokenTable> tokens;
  // Without TLS and tokens the server only listens on loopback addresses;
  // this allows any address anyway.
  bool insecure = false;
  // Connect streams that send nothing for this long are ended
  // (RESOURCE_EXHAUSTED); zero: never. On `clock`.
  absl::Duration idle_timeout = absl::Minutes(5);
  // Refuse run-scoped calls without the x-spotter-run metadata (behind a
  // proxy that routes on it).
  bool require_run_header = false;
  // This replica's name, sent as `x-spotter-replica` initial metadata on
  // every response so operators and spotterctl rebalance can tell which
  // replica behind a gateway answered. Empty: <hostname>:<bound port>.
  std::string replica_id;
  // Finished runs are deleted (history and all) this long after they
  // finished, by the sweep below; zero: kept until DeleteRun. On `clock`.
  absl::Duration finished_run_ttl = absl::ZeroDuration();
  // Real-time period of the idle-stream and retention sweep; zero: only
  // SweepIdleStreams() and ExpireFinishedRuns().
  absl::Duration idle_sweep_interval = absl::Seconds(1);
};

// Thread-safe.
class Server {
 public:
  // Opens the state store and restores every run in it, then starts the gRPC
  // server (with the health service; with reflection unless tokens are on)
  // and the metrics exposer. UNAVAILABLE when an address cannot be bound,
  // with the address in the message; FAILED_PRECONDITION for a non-loopback
  // address without TLS and tokens (and not insecure); the store's error
  // (DATA_LOSS for damaged state, naming the file, table, run and key) when
  // the state cannot be restored; INVALID_ARGUMENT / NOT_FOUND for
  // unreadable certificate or token files.
  static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(const ServerOptions& options);

  // Shuts down with a 2 s deadline if Shutdown was not called.
  ~Server();

  // The bound gRPC port, and the metrics port (0 when disabled).
  int port() const;
  int metrics_port() const;

  // A channel to this server that bypasses the network (tests, embedding).
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // The Prometheus text exposition of every metric, as /metrics serves it.
  std::string ScrapeMetrics() const;

  // Waits until every evaluation queued so far has completed and what it
  // produced (points, directives) is committed and published, so that GetRun
  // and the streams see it (tests).
  void DrainEvaluations();

  // Waits until every change queued so far is committed to the store.
  void FlushState();

  // Ends the Connect streams idle for longer than idle_timeout; returns how
  // many (tests advance a fake clock, then call it).
  int SweepIdleStreams();
  // Deletes the runs that finished longer than finished_run_ttl ago; returns
  // how many (tests advance a fake clock, then call it).
  int ExpireFinishedRuns();
  // Samples the allocator's heap (core/util/allocator.h) into
  // spotter_heap_bytes; spotterd calls it every --heap_sample_interval.
  void SampleHeap();

  // One line each for the logs: where state lives and what was restored, and
  // how the server is secured.
  std::string DescribeState() const;
  std::string DescribeSecurity() const;

  // Ends open streams with UNAVAILABLE, stops accepting calls, and cancels
  // what is still running after `deadline`. Idempotent.
  void Shutdown(absl::Duration deadline);

  // Blocks until the server has shut down.
  void Wait();

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_SERVER_H_
