// spotterd as a library: options, BuildAndStart, Shutdown. main.cc only parses
// flags into ServerOptions; tests start the same Server in-process on port 0.
#ifndef SPOTTER_SERVER_SERVER_H_
#define SPOTTER_SERVER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/util/clock.h"
#include "server/limits.h"

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
};

// Thread-safe.
class Server {
 public:
  // Starts the gRPC server (with the health service and reflection) and the
  // metrics exposer. UNAVAILABLE when an address cannot be bound, with the
  // address in the message.
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

  // Waits until every evaluation queued so far has completed (tests).
  void DrainEvaluations();

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

#endif  // SPOTTER_SERVER_SERVER_H_
