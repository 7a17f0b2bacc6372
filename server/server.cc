#include "server/server.h"

#include <exception>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/eval_pool.h"
#include "server/metrics.h"
#include "server/service.h"

namespace spotter {

struct Server::Impl {
  ServerOptions options;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<EvalPool> pool;
  std::unique_ptr<SpotterServiceImpl> service;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<prometheus::Exposer> exposer;
  int port = 0;
  int metrics_port = 0;
  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  RunSeriesOptions run_series;
  run_series.clock = options.clock;
  run_series.idle_ttl = options.metrics_run_ttl;
  run_series.max_runs = options.metrics_max_runs;
  impl->metrics = std::make_unique<ServerMetrics>(*impl->registry, run_series);
  impl->pool = std::make_unique<EvalPool>(options.eval_threads, options.eval_queue);
  RunDeps deps;
  deps.clock = options.clock;
  deps.pool = impl->pool.get();
  deps.metrics = impl->metrics.get();
  deps.registry = impl->registry.get();
  deps.limits = options.limits;
  impl->service = std::make_unique<SpotterServiceImpl>(deps);

  if (!options.metrics_address.empty()) {
    try {
      impl->exposer = std::make_unique<prometheus::Exposer>(options.metrics_address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot serve metrics on %s: %s (pick another --metrics_listen, or empty to "
          "disable)",
          options.metrics_address, e.what()));
    }
    impl->exposer->RegisterCollectable(impl->registry);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    impl->metrics_port = ports.empty() ? 0 : ports.front();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(),
                           &impl->port);
  builder.RegisterService(impl->service.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.limits.max_message_bytes));
  impl->grpc_server = builder.BuildAndStart();
  if (!impl->grpc_server || impl->port == 0) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen for gRPC on %s (in use, or not a host:port this machine has)",
        options.listen_address));
  }
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() { Shutdown(absl::Seconds(2)); }

int Server::port() const { return impl_->port; }
int Server::metrics_port() const { return impl_->metrics_port; }

std::shared_ptr<grpc::Channel> Server::InProcessChannel() {
  return impl_->grpc_server->InProcessChannel(grpc::ChannelArguments());
}

std::string Server::ScrapeMetrics() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

void Server::DrainEvaluations() { impl_->pool->Drain(); }

void Server::Shutdown(absl::Duration deadline) {
  {
    absl::MutexLock l(&impl_->mu);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
  }
  impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
  impl_->service->StopStreams();
  impl_->grpc_server->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  impl_->grpc_server->Wait();
  impl_->pool->Drain();
}

void Server::Wait() { impl_->grpc_server->Wait(); }

}  // namespace spotter
