#include "server/rpc/server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "core/util/allocator.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/resource_quota.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/metrics.h"
#include "server/rpc/service.h"
#include "server/runs/eval_pool.h"
#include "server/storage/committer.h"
#include "server/storage/records.h"

namespace spotter {
namespace {

// Removes the reflection service from one server (it is registered for every
// server of the process by InitProtoReflectionServerBuilderPlugin).
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const auto& p) { return p->name() == "proto_server_reflection"; }),
        plugins->end());
  }
};

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrFormat("cannot read %s %s", what, path));
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s %s is empty", what, path));
  }
  return ss.str();
}

// Where a backup's copy waits to be streamed: next to the state file unless
// --backup_dir says otherwise (the same name for every backup: one runs at a
// time, and the next one removes a copy left by a crash).
std::string BackupTempPath(const ServerOptions& o) {
  const std::string leaf =
      o.state_file.empty()
          ? absl::StrFormat("spotterd-%d.backup.tmp", getpid())
          : std::filesystem::path(o.state_file).filename().string() + ".backup.tmp";
  std::filesystem::path dir = o.backup_dir;
  if (dir.empty()) {
    std::error_code ec;
    dir = o.state_file.empty() ? std::filesystem::temp_directory_path(ec)
                               : std::filesystem::path(o.state_file).parent_path();
    if (ec) dir = "/tmp";
  }
  return (dir / leaf).string();
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  std::shared_ptr<prometheus::Registry> metrics_registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<EvalPool> pool;
  std::shared_ptr<Store> store;
  std::shared_ptr<const TokenTable> tokens;
  std::unique_ptr<SpotterServiceImpl> service;
  // Destroyed before the service: its last callbacks may reach service calls.
  std::unique_ptr<Committer> committer;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::atomic<grpc::Server*> serving{nullptr};  // for the store-failure hook
  int port = 0;
  int metrics_port = 0;
  size_t restored_runs = 0;
  absl::Duration restore_time;
  bool tls = false;
  bool mtls = false;
  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  Impl* raw = impl.get();

  // Security first: refuse a configuration that would expose the server.
  impl->tokens = options.tokens;
  if (!impl->tokens && !options.tokens_file.empty()) {
    absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Load(options.tokens_file);
    if (!t.ok()) return t.status();
    impl->tokens = *t;
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate and a key (--tls_cert and --tls_key)");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca (mutual TLS) needs TLS: set --tls_cert and --tls_key too");
  }
  impl->tls = !options.tls_cert_file.empty();
  impl->mtls = !options.tls_client_ca_file.empty();
  if (!IsLoopbackAddress(options.listen_address) && !(impl->tls && impl->tokens) &&
      !options.insecure) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "refusing to listen on %s, which is not a loopback address, without TLS and bearer "
        "tokens (--tls_cert, --tls_key, --tokens_file): anyone who can reach it could drive "
        "the runs. Listen on 127.0.0.1, add TLS and tokens, or pass --insecure",
        options.listen_address));
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (impl->tls) {
    absl::StatusOr<std::string> cert = ReadFile(options.tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options.tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    std::string client_ca;
    if (impl->mtls) {
      absl::StatusOr<std::string> ca = ReadFile(options.tls_client_ca_file, "client CA");
      if (!ca.ok()) return ca.status();
      client_ca = *std::move(ca);
    }
    const int64_t reload = absl::ToInt64Seconds(options.tls_reload_interval);
    if (reload > 0) {
      // The files are read now (above: a missing or unreadable one is a
      // startup error) and again every `reload` seconds by gRPC's watcher;
      // a pair that does not parse or match keeps the last good one.
      auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options.tls_key_file, options.tls_cert_file,
          impl->mtls ? options.tls_client_ca_file : std::string(),
          static_cast<unsigned int>(reload));
      grpc::experimental::TlsServerCredentialsOptions tls(provider);
      tls.watch_identity_key_cert_pairs();
      if (impl->mtls) {
        tls.watch_root_certs();
        tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      } else {
        tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      }
      creds = grpc::experimental::TlsServerCredentials(tls);
    } else {
      grpc::SslServerCredentialsOptions ssl(
          impl->mtls ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      ssl.pem_root_certs = client_ca;
      ssl.pem_key_cert_pairs.push_back({*key, *cert});
      creds = grpc::SslServerCredentials(ssl);
    }
  }

  RunSeriesOptions run_series;
  run_series.clock = options.clock;
  run_series.idle_ttl = options.metrics_run_ttl;
  run_series.max_runs = options.metrics_max_runs;
  impl->metrics = std::make_unique<ServerMetrics>(*impl->metrics_registry, run_series);
  impl->pool = std::make_unique<EvalPool>(options.eval_threads, options.eval_queue);

  // State: open the store and read everything back before serving.
  impl->store = options.store;
  if (!impl->store && !options.state_file.empty()) {
    absl::StatusOr<std::unique_ptr<SqliteStore>> s =
        SqliteStore::Open(options.state_file, options.sqlite);
    if (!s.ok()) return s.status();
    impl->store = std::move(*s);
  }
  if (!impl->store) impl->store = std::make_shared<NullStore>();
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::vector<LoadedRun>> loaded = LoadState(*impl->store, options.point_window);
  if (!loaded.ok()) return loaded.status();
  impl->restored_runs = loaded->size();

  impl->committer = std::make_unique<Committer>(
      impl->store.get(),
      [metrics = impl->metrics.get()](absl::Duration d) {
        metrics->ObserveStore("commit", absl::ToDoubleSeconds(d));
      },
      [raw](const absl::Status&) {
        // Writes fail from now on: stop passing health checks.
        if (grpc::Server* s = raw->serving.load()) {
          s->GetHealthCheckService()->SetServingStatus(false);
        }
      });
  ServiceOptions so;
  so.deps.clock = options.clock;
  so.deps.pool = impl->pool.get();
  so.deps.metrics = impl->metrics.get();
  so.deps.committer = impl->committer.get();
  so.deps.persistent = impl->store->persistent();
  so.deps.store = impl->store.get();
  so.deps.point_window = options.point_window;
  so.deps.checkpoint = options.checkpoint;
  so.deps.limits = options.limits;
  so.tokens = impl->tokens;
  so.idle_timeout = options.idle_timeout;
  so.finished_run_ttl = options.finished_run_ttl;
  so.require_run_header = options.require_run_header;
  so.idle_sweep_interval = options.idle_sweep_interval;
  so.backup.store = impl->store.get();
  so.backup.copy = options.backup;
  so.backup.temp_path = BackupTempPath(options);
  impl->service = std::make_unique<SpotterServiceImpl>(so);
  if (absl::Status s = impl->service->runs().Restore(*std::move(loaded)); !s.ok()) return s;
  impl->restore_time = absl::Now() - load_start;
  impl->metrics->ObserveStore("load", absl::ToDoubleSeconds(impl->restore_time));

  if (!options.metrics_address.empty()) {
    try {
      impl->exposer = std::make_unique<prometheus::Exposer>(options.metrics_address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot serve metrics on %s: %s (pick another --metrics_listen, or empty to "
          "disable)",
          options.metrics_address, e.what()));
    }
    impl->exposer->RegisterCollectable(impl->metrics_registry);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    impl->metrics_port = ports.empty() ? 0 : ports.front();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, creds, &impl->port);
  builder.RegisterService(impl->service.get());
  // gRPC's own cap is twice the limit: messages between the two reach the
  // service, which rejects them with a message and a counter.
  const int64_t hard_cap =
      std::min<int64_t>(2 * options.limits.max_message_bytes, std::numeric_limits<int>::max());
  builder.SetMaxReceiveMessageSize(static_cast<int>(hard_cap));
  grpc::ResourceQuota quota("spotterd");
  quota.Resize(static_cast<size_t>(std::max<int64_t>(options.limits.grpc_memory_quota_bytes, 1)));
  builder.SetResourceQuota(quota);
  if (impl->tokens) {
    // Reflection answers without a token; with tokens on it is left out.
    builder.SetOption(std::make_unique<WithoutReflection>());
  }
  impl->grpc_server = builder.BuildAndStart();
  if (!impl->grpc_server || impl->port == 0) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen for gRPC on %s (in use, or not a host:port this machine has)",
        options.listen_address));
  }
  impl->serving.store(impl->grpc_server.get());
  if (options.replica_id.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "spotterd");
    impl->service->SetReplicaId(absl::StrFormat("%s:%d", host, impl->port));
  } else {
    impl->service->SetReplicaId(options.replica_id);
  }
  const bool healthy = impl->committer->status().ok();
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(healthy);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() { Shutdown(absl::Seconds(2)); }

int Server::port() const { return impl_->port; }
int Server::metrics_port() const { return impl_->metrics_port; }

std::shared_ptr<grpc::Channel> Server::InProcessChannel() {
  return impl_->grpc_server->InProcessChannel(grpc::ChannelArguments());
}

std::string Server::ScrapeMetrics() const {
  return prometheus::TextSerializer().Serialize(impl_->metrics_registry->Collect());
}

void Server::DrainEvaluations() {
  impl_->pool->Drain();
  // Evaluations publish through the commit queue (even in memory).
  impl_->committer->Flush();
}

void Server::FlushState() { impl_->committer->Flush(); }

int Server::SweepIdleStreams() { return impl_->service->SweepIdleStreams(); }
int Server::ExpireFinishedRuns() { return impl_->service->ExpireFinishedRuns(); }

void Server::SampleHeap() {
  const HeapUsage heap = ReadHeapUsage();
  impl_->metrics->SetHeap(static_cast<double>(heap.in_use), static_cast<double>(heap.free));
}

std::string Server::DescribeState() const {
  return absl::StrFormat("state %s; %d runs restored in %s", impl_->store->Describe(),
                         impl_->restored_runs, absl::FormatDuration(impl_->restore_time));
}

std::string Server::DescribeSecurity() const {
  const ServerOptions& o = impl_->options;
  std::string transport = impl_->mtls ? "mutual TLS" : impl_->tls ? "TLS" : "no TLS";
  std::string auth = impl_->tokens ? absl::StrFormat("%d bearer tokens", impl_->tokens->size())
                                   : std::string("no tokens");
  std::string reach = IsLoopbackAddress(o.listen_address)
                          ? "loopback only"
                          : (impl_->tls && impl_->tokens ? "network" : "network (--insecure)");
  return absl::StrFormat("%s, %s, %s", transport, auth, reach);
}

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
  impl_->serving.store(nullptr);
  impl_->pool->Drain();
  impl_->committer->Flush();
}

void Server::Wait() { impl_->grpc_server->Wait(); }

}  // namespace spotter
