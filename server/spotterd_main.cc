// spotterd: parses flags into ServerOptions, starts the server, and shuts it
// down gracefully on SIGINT or SIGTERM.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "server/server.h"

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
ABSL_FLAG(absl::Duration, metrics_run_ttl, absl::Minutes(30),
          "remove a run's per-run metric series after this long without an update (0: only "
          "when the run ends)");
ABSL_FLAG(uint32_t, metrics_max_runs, 1000, "most runs exported on /metrics at once (0: no cap)");
ABSL_FLAG(double, shutdown_grace_seconds, 5.0,
          "on SIGINT/SIGTERM, time left to running calls before they are cancelled");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "training monitor. Trainers stream gradient sketches over gRPC; spotterd "
      "tracks each run's Fisher effective rank and participation ratio, drives the "
      "three-phase schedule with directives, and exports Prometheus metrics.\n"
      "Usage: spotterd [--listen=127.0.0.1:50051] [--metrics_listen=127.0.0.1:9464] ...");
  absl::ParseCommandLine(argc, argv);

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
    const std::string mhost =
        options.metrics_address.substr(0, options.metrics_address.rfind(':'));
    std::cerr << absl::StrFormat(", metrics at http://%s:%d/metrics", mhost,
                                 (*server)->metrics_port());
  }
  std::cerr << std::endl;
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp);
      f << "grpc=" << (*server)->port() << "\nmetrics=" << (*server)->metrics_port() << "\n";
    }
    std::rename(tmp.c_str(), path.c_str());
  }

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "spotterd: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down"
            << std::endl;
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  std::cerr << "spotterd: stopped" << std::endl;
  return 0;
}
