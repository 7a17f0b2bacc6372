// spotterd: parses flags into ServerOptions, starts the server, and shuts it
// down gracefully on SIGINT or SIGTERM.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "core/util/allocator.h"
#include "server/rpc/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC address host:port (port 0 picks a free one)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address host:port (port 0 picks a free one; empty disables)");
ABSL_FLAG(std::string, port_file, "",
          "after start-up, write 'grpc=<port>' and 'metrics=<port>' lines to this file");
ABSL_FLAG(uint32_t, max_sketch_dim, 16384, "largest sketch dimension k a run may use");
ABSL_FLAG(uint32_t, max_sketch_rows, 1024, "largest Frequent Directions size l a run may use");
ABSL_FLAG(uint32_t, max_batch_rows, 8192, "most rows in one SketchBatch");
ABSL_FLAG(uint32_t, max_world_size, 65536, "most ranks in one run");
ABSL_FLAG(uint32_t, max_runs, 10000, "most runs held at once");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "largest gRPC message accepted, bytes");
ABSL_FLAG(int32_t, eval_threads, 2, "threads computing spectral summaries");
ABSL_FLAG(int32_t, malloc_trim_threshold_mb, 256,
          "keep up to this much freed heap per malloc arena instead of returning it to the "
          "kernel, and serve blocks up to 32 MiB from the heap (the sketch math allocates and "
          "frees such blocks per message); 0: the C library's defaults");
ABSL_FLAG(absl::Duration, heap_sample_interval, absl::Seconds(15),
          "sample the allocator's heap (in use, free) into spotter_heap_bytes this often; "
          "0: never");
ABSL_FLAG(absl::Duration, metrics_run_ttl, absl::Minutes(30),
          "remove a run's per-run metric series after this long without an update (0: only "
          "when the run ends)");
ABSL_FLAG(uint32_t, metrics_max_runs, 1000, "most runs exported on /metrics at once (0: no cap)");
ABSL_FLAG(int64_t, max_import_bytes, int64_t{512} << 20,
          "most bytes of rows one ImportRun (a run moved here) may hold in memory");
ABSL_FLAG(uint32_t, max_runs_per_principal, 0,
          "most runs one token's principal may hold (0: no cap; only with --tokens_file)");
ABSL_FLAG(uint32_t, max_streams, 4096, "most Connect + WatchRun streams open at once");
ABSL_FLAG(uint32_t, max_streams_per_run, 0,
          "most Connect streams open on one run (0: 2 x world_size + 2)");
ABSL_FLAG(uint32_t, max_watchers_per_run, 64, "most WatchRun streams open on one run");
ABSL_FLAG(double, max_abs_value, 1e9, "largest |value| accepted in a sketch batch");
ABSL_FLAG(int64_t, memory_budget_bytes, int64_t{512} << 20,
          "bytes of uploads awaiting their commit (server-wide) before streams that send more "
          "are closed with RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, grpc_memory_quota_bytes, int64_t{1} << 30,
          "memory gRPC may use for connections and messages being read (ResourceQuota)");
ABSL_FLAG(bool, require_run_header, false,
          "refuse run-scoped calls without the x-spotter-run metadata naming their run (set it "
          "behind a proxy that routes runs by that header: docs/SCALING.md)");
ABSL_FLAG(std::string, replica_id, "",
          "this replica's name, sent as x-spotter-replica metadata with every response (behind "
          "a gateway it says which replica answered; spotterctl rebalance uses it). Empty: "
          "<hostname>:<gRPC port>");
ABSL_FLAG(absl::Duration, finished_run_ttl, absl::ZeroDuration(),
          "delete a finished run, with its history, this long after it finished (e.g. 720h), "
          "counted in spotter_runs_expired_total; 0: keep finished runs until DeleteRun. "
          "Finished runs count against --max_runs while kept");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Minutes(5),
          "end Connect streams that send nothing (not even a heartbeat) for this long (0: "
          "never)");
ABSL_FLAG(std::string, state_file, "",
          "SQLite state file (WAL mode; created if missing): runs, trajectories, directives "
          "and sketch checkpoints survive restarts. Empty: state is kept in memory only");
ABSL_FLAG(std::string, state_sync, "full",
          "full: every commit is fsynced (acknowledged uploads survive a power loss); normal: "
          "they survive a process crash, a power loss may lose the last commits");
ABSL_FLAG(uint32_t, checkpoint_every, 256,
          "checkpoint a rank's sketch (and truncate its upload log) after this many uploads");
ABSL_FLAG(uint32_t, points_in_memory, 256,
          "trajectory points each run keeps in memory; older ones are read back from "
          "--state_file when asked for (without one they are downsampled to at most 4096 "
          "per run). Memory per run stays bounded whatever its length");
ABSL_FLAG(std::string, backup_dir, "",
          "Backup RPC (spotterctl backup): the folder its copy of the state file is written "
          "to before it is streamed to the client, then removed; it needs room for one more "
          "state file. Empty: the state file's folder");
ABSL_FLAG(int32_t, backup_pages_per_step, 64,
          "Backup RPC: 16 KiB pages copied per step; commits wait for at most one step");
ABSL_FLAG(absl::Duration, backup_step_pause, absl::ZeroDuration(),
          "Backup RPC: pause between two steps, to spread the copy's disk reads (0: none)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(int32_t, tls_reload_seconds, 60,
          "re-read --tls_cert, --tls_key and --tls_client_ca this often, so renewed "
          "certificates are served without a restart (new connections); 0: read once");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates it signed (mutual TLS)");
ABSL_FLAG(std::string, tokens_file, "",
          "bearer tokens with roles, one '<name> <role> <token> [<run-glob>...]' per line "
          "(role trainer, viewer or admin); every RPC then needs 'authorization: Bearer "
          "<token>'");
ABSL_FLAG(bool, insecure, false, "allow a non-loopback --listen address without TLS and tokens");
ABSL_FLAG(double, shutdown_grace_seconds, 5.0,
          "on SIGINT/SIGTERM, time left to running calls before they are cancelled");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "training monitor. Trainers stream gradient sketches over gRPC; spotterd "
      "tracks the effective rank and participation ratio of each run's gradient covariance, drives the "
      "three-phase schedule with directives, and exports Prometheus metrics.\n"
      "Usage: spotterd [--listen=127.0.0.1:50051] [--metrics_listen=127.0.0.1:9464] ...");
  absl::ParseCommandLine(argc, argv);
  if (const int trim = absl::GetFlag(FLAGS_malloc_trim_threshold_mb); trim > 0) {
    if (!spotter::TuneAllocator(trim)) {
      std::fprintf(
          stderr, "spotterd: the C library refused the malloc settings; running on its defaults\n");
    }
  }

  // Block the shutdown signals in every thread; main waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  spotter::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_listen);
  options.limits.max_sketch_dim = absl::GetFlag(FLAGS_max_sketch_dim);
  options.limits.max_sketch_rows = absl::GetFlag(FLAGS_max_sketch_rows);
  options.limits.max_batch_rows = absl::GetFlag(FLAGS_max_batch_rows);
  options.limits.max_world_size = absl::GetFlag(FLAGS_max_world_size);
  options.limits.max_runs = absl::GetFlag(FLAGS_max_runs);
  options.limits.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.eval_threads = absl::GetFlag(FLAGS_eval_threads);
  options.limits.max_runs_per_principal = absl::GetFlag(FLAGS_max_runs_per_principal);
  options.limits.max_streams = absl::GetFlag(FLAGS_max_streams);
  options.limits.max_streams_per_run = absl::GetFlag(FLAGS_max_streams_per_run);
  options.limits.max_watchers_per_run = absl::GetFlag(FLAGS_max_watchers_per_run);
  options.limits.max_abs_value = absl::GetFlag(FLAGS_max_abs_value);
  options.limits.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_bytes);
  options.limits.grpc_memory_quota_bytes = absl::GetFlag(FLAGS_grpc_memory_quota_bytes);
  options.limits.max_import_bytes = absl::GetFlag(FLAGS_max_import_bytes);
  options.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  options.finished_run_ttl = absl::GetFlag(FLAGS_finished_run_ttl);
  options.require_run_header = absl::GetFlag(FLAGS_require_run_header);
  options.replica_id = absl::GetFlag(FLAGS_replica_id);
  options.state_file = absl::GetFlag(FLAGS_state_file);
  const std::string sync = absl::GetFlag(FLAGS_state_sync);
  if (sync != "full" && sync != "normal") {
    std::cerr << "spotterd: --state_sync=" << sync << ": expected full or normal\n";
    return 2;
  }
  options.sqlite.sync =
      sync == "full" ? spotter::SqliteOptions::Sync::kFull : spotter::SqliteOptions::Sync::kNormal;
  options.checkpoint.every_uploads = std::max<uint32_t>(1, absl::GetFlag(FLAGS_checkpoint_every));
  options.point_window = std::max<uint32_t>(1, absl::GetFlag(FLAGS_points_in_memory));
  options.backup_dir = absl::GetFlag(FLAGS_backup_dir);
  options.backup.pages_per_step = std::max(1, absl::GetFlag(FLAGS_backup_pages_per_step));
  options.backup.step_pause = absl::GetFlag(FLAGS_backup_step_pause);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls_reload_interval = absl::Seconds(std::max(0, absl::GetFlag(FLAGS_tls_reload_seconds)));
  options.tokens_file = absl::GetFlag(FLAGS_tokens_file);
  options.insecure = absl::GetFlag(FLAGS_insecure);
  options.metrics_run_ttl = absl::GetFlag(FLAGS_metrics_run_ttl);
  options.metrics_max_runs = absl::GetFlag(FLAGS_metrics_max_runs);

  auto server = spotter::Server::BuildAndStart(options);
  if (!server.ok()) {
    std::cerr << "spotterd: " << server.status().message() << "\n";
    return 1;
  }
  const std::string host = options.listen_address.substr(0, options.listen_address.rfind(':'));
  std::cerr << absl::StrFormat("spotterd: gRPC on %s:%d", host, (*server)->port());
  if ((*server)->metrics_port() != 0) {
    const std::string mhost = options.metrics_address.substr(0, options.metrics_address.rfind(':'));
    std::cerr << absl::StrFormat(", metrics at http://%s:%d/metrics", mhost,
                                 (*server)->metrics_port());
  }
  std::cerr << std::endl;
  std::cerr << "spotterd: " << (*server)->DescribeState() << std::endl;
  std::cerr << "spotterd: security: " << (*server)->DescribeSecurity() << std::endl;
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp);
      f << "grpc=" << (*server)->port() << "\nmetrics=" << (*server)->metrics_port() << "\n";
    }
    std::rename(tmp.c_str(), path.c_str());
  }

  // Wait for a shutdown signal, sampling the heap meanwhile.
  const absl::Duration sample_every = absl::GetFlag(FLAGS_heap_sample_interval);
  int sig = 0;
  if (sample_every <= absl::ZeroDuration()) {
    sigwait(&signals, &sig);
  } else {
    (*server)->SampleHeap();
    const timespec timeout = absl::ToTimespec(sample_every);
    while ((sig = sigtimedwait(&signals, nullptr, &timeout)) < 0) {
      if (errno == EAGAIN) (*server)->SampleHeap();  // else EINTR: wait again
    }
  }
  std::cerr << "spotterd: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down"
            << std::endl;
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  std::cerr << "spotterd: stopped" << std::endl;
  return 0;
}
