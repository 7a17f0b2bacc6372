#include "client/cpp/ctl/scale.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "spotter/v1/spotter.grpc.pb.h"

ABSL_FLAG(std::string, replicas, "",
          "runs, health, rebalance: the replicas, host:port,...; a name resolving to several "
          "addresses (a headless service) stands for all of them [$SPOTTER_REPLICAS]");
ABSL_FLAG(std::string, from, "", "move: the replica (host:port) holding the run");
ABSL_FLAG(std::string, to, "", "move: the replica (host:port) to move it to");
ABSL_FLAG(std::string, gateway, "",
          "rebalance: a gateway (host:port) routing by the new replica list");
ABSL_FLAG(bool, dry_run, false, "rebalance: print what would be moved or deleted, change nothing");
ABSL_FLAG(bool, finish, false,
          "rebalance: delete the tombstones of moved runs the gateway now routes to their new "
          "owner");

namespace spotter::ctl {
namespace {

namespace v1 = spotter::v1;

// The metadata naming the replica that answered (spotterd --replica_id).
constexpr char kReplicaHeader[] = "x-spotter-replica";
// ExportRun streams a run in messages of about 1 MiB, but a single row
// (a rank's checkpoint at a large sketch dimension) may be larger: accept up
// to 1 GiB (the server's --max_message_bytes bounds it first).
constexpr int kMaxMessage = 1 << 30;

std::shared_ptr<grpc::Channel> Channel(const CtlEnv& env, const std::string& address,
                                       std::string* error) {
  ChannelSecurity security = env.security;
  security.max_receive_message_bytes = kMaxMessage;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> made = MakeChannel(address, security);
  if (!made.ok()) {
    *error = std::string(made.status().message());
    return nullptr;
  }
  return *made;
}

void Prepare(const CtlEnv& env, grpc::ClientContext* ctx, const std::string& run) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + env.timeout));
  AddBearerToken(ctx, env.security.token);
  if (!run.empty()) AddRunHeader(ctx, run);
}

// The replica that answered the call, from its initial or trailing
// metadata; empty when the server does not send it (an older spotterd).
std::string ReplicaOf(const grpc::ClientContext& ctx) {
  for (const auto* md : {&ctx.GetServerInitialMetadata(), &ctx.GetServerTrailingMetadata()}) {
    if (auto it = md->find(kReplicaHeader); it != md->end()) {
      return std::string(it->second.data(), it->second.size());
    }
  }
  return "";
}

std::string Json(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(m, &json, opts).ok()) return "null";
  return json;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// One replica's ListRuns answer.
struct Listing {
  std::string address;
  std::string id;  // its x-spotter-replica
  grpc::Status status;
  std::vector<v1::RunSummary> runs;
};

Listing List(const CtlEnv& env, const std::string& address, int state_filter) {
  Listing l;
  l.address = address;
  std::string error;
  std::shared_ptr<grpc::Channel> channel = Channel(env, address, &error);
  if (!channel) {
    l.status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
    return l;
  }
  auto stub = v1::SpotterService::NewStub(channel);
  v1::ListRunsRequest req;
  req.set_state(static_cast<v1::RunState>(state_filter));
  do {  // every page (AIP-158)
    grpc::ClientContext ctx;
    Prepare(env, &ctx, "");
    v1::ListRunsResponse resp;
    l.status = stub->ListRuns(&ctx, req, &resp);
    if (!l.status.ok()) break;
    l.id = ReplicaOf(ctx);
    l.runs.insert(l.runs.end(), resp.runs().begin(), resp.runs().end());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return l;
}

// The replica id that answers a call about `run` at `server` (a gateway
// routes it to the run's owner), whether or not it holds the run.
grpc::Status Owner(const CtlEnv& env, const std::string& server, const std::string& run,
                   std::string* id, bool* holds) {
  std::string error;
  std::shared_ptr<grpc::Channel> channel = Channel(env, server, &error);
  if (!channel) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
  auto stub = v1::SpotterService::NewStub(channel);
  grpc::ClientContext ctx;
  Prepare(env, &ctx, run);
  v1::GetRunRequest req;
  req.set_name(run);
  v1::GetRunResponse resp;
  const grpc::Status s = stub->GetRun(&ctx, req, &resp);
  *id = ReplicaOf(ctx);
  *holds = s.ok() && resp.run().moved_to().empty();
  if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) return s;
  if (id->empty()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrFormat("%s answered without %s metadata: the replicas must be "
                                        "spotterd with --replica_id support",
                                        server, kReplicaHeader));
  }
  return grpc::Status::OK;
}

grpc::Status Delete(const CtlEnv& env, const std::string& address, const std::string& run) {
  std::string error;
  std::shared_ptr<grpc::Channel> channel = Channel(env, address, &error);
  if (!channel) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
  auto stub = v1::SpotterService::NewStub(channel);
  grpc::ClientContext ctx;
  Prepare(env, &ctx, run);
  v1::DeleteRunRequest req;
  req.set_name(run);
  v1::DeleteRunResponse resp;
  return stub->DeleteRun(&ctx, req, &resp);
}

grpc::Status Prefixed(const std::string& what, const grpc::Status& s) {
  return grpc::Status(s.error_code(), what + ": " + s.error_message());
}

}  // namespace

std::vector<std::string> ExpandReplicas(const std::string& list, std::string* error) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (absl::string_view entry : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    const size_t colon = entry.rfind(':');
    if (colon == absl::string_view::npos || colon == 0 || colon + 1 == entry.size()) {
      *error = absl::StrFormat("replica '%s': expected host:port", entry);
      return {};
    }
    const std::string host(absl::StripPrefix(absl::StripSuffix(entry.substr(0, colon), "]"), "["));
    const std::string port(entry.substr(colon + 1));
    addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
      *error =
          absl::StrFormat("replica '%s': cannot resolve %s: %s", entry, host, gai_strerror(rc));
      return {};
    }
    // IPv4 addresses when there are any: "localhost" resolving to both
    // 127.0.0.1 and ::1 is one server, not two.
    std::vector<std::string> ips, ips6;
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      char ip[NI_MAXHOST];
      if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), nullptr, 0, NI_NUMERICHOST) != 0) {
        continue;
      }
      std::vector<std::string>& into = a->ai_family == AF_INET6 ? ips6 : ips;
      const std::string addr = a->ai_family == AF_INET6 ? absl::StrFormat("[%s]:%s", ip, port)
                                                        : absl::StrFormat("%s:%s", ip, port);
      if (std::find(into.begin(), into.end(), addr) == into.end()) into.push_back(addr);
    }
    freeaddrinfo(res);
    if (ips.empty()) ips = std::move(ips6);
    // One name with one address stays a name (TLS checks it); a name with
    // several (a headless service) is every replica behind it.
    if (ips.size() <= 1) ips = {std::string(entry)};
    for (const std::string& a : ips) {
      if (seen.insert(a).second) out.push_back(a);
    }
  }
  if (out.empty()) *error = "no replicas given: expected --replicas host:port[,host:port...]";
  return out;
}

int RunsAcross(const CtlEnv& env, const std::vector<std::string>& replicas, int state_filter) {
  std::vector<Listing> listings;
  for (const std::string& r : replicas) listings.push_back(List(env, r, state_filter));
  int rc = 0;
  std::map<std::string, std::vector<std::string>> holders;  // live copies of each run
  for (const Listing& l : listings) {
    if (!l.status.ok()) {
      std::cerr << "spotterctl: replica " << l.address << ": " << l.status.error_message()
                << " (gRPC code " << l.status.error_code() << ")\n";
      rc = kExitPartial;
    }
    for (const v1::RunSummary& s : l.runs) {
      if (s.moved_to().empty()) holders[s.name()].push_back(l.address);
    }
  }
  for (const auto& [run, on] : holders) {
    if (on.size() > 1) {
      std::cerr << "spotterctl: run " << run << " is held by " << on.size()
                << " replicas: " << absl::StrJoin(on, ", ") << "\n";
      rc = kExitPartial;
    }
  }
  if (env.json) {
    std::vector<std::string> parts;
    for (const Listing& l : listings) {
      std::vector<std::string> runs;
      for (const v1::RunSummary& s : l.runs) runs.push_back(Json(s));
      parts.push_back(
          absl::StrFormat("{\"address\": %s, \"replica\": %s, \"error\": %s, \"runs\": [%s]}",
                          JsonString(l.address), JsonString(l.id),
                          l.status.ok() ? "null" : JsonString(l.status.error_message()),
                          absl::StrJoin(runs, ", ")));
    }
    std::printf("{\"replicas\": [%s]}\n", absl::StrJoin(parts, ", ").c_str());
    return rc;
  }
  std::printf("%-28s %-9s %-13s %-7s %-22s %s\n", "RUN", "STATE", "STEP", "RANKS", "REPLICA",
              "NOTE");
  for (const Listing& l : listings) {
    for (const v1::RunSummary& s : l.runs) {
      std::printf("%-28s %-9s %-13s %-7s %-22s %s\n", s.name().c_str(),
                  s.state() == v1::RUN_STATE_ACTIVE ? "active" : "finished",
                  absl::StrFormat("%d/%d", s.max_step(), s.total_steps()).c_str(),
                  absl::StrFormat("%d/%d", s.connected_ranks(), s.world_size()).c_str(),
                  l.address.c_str(),
                  s.moved_to().empty() ? "" : ("moved to " + s.moved_to()).c_str());
    }
  }
  return rc;
}

int HealthAcross(const CtlEnv& env, const std::vector<std::string>& replicas) {
  int rc = 0;
  std::vector<std::string> parts;
  if (!env.json) std::printf("%-28s %s\n", "REPLICA", "STATUS");
  for (const std::string& r : replicas) {
    std::string status;
    std::string error;
    if (std::shared_ptr<grpc::Channel> channel = Channel(env, r, &error)) {
      auto stub = grpc::health::v1::Health::NewStub(channel);
      grpc::ClientContext ctx;
      Prepare(env, &ctx, "");
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      const grpc::Status s = stub->Check(&ctx, req, &resp);
      status = s.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status())
                      : "UNREACHABLE (" + s.error_message() + ")";
      if (!s.ok() || resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) rc = 1;
    } else {
      status = "BAD ADDRESS (" + error + ")";
      rc = 1;
    }
    if (env.json) {
      parts.push_back(
          absl::StrFormat("{\"address\": %s, \"status\": %s}", JsonString(r), JsonString(status)));
    } else {
      std::printf("%-28s %s\n", r.c_str(), status.c_str());
    }
  }
  if (env.json) std::printf("{\"replicas\": [%s]}\n", absl::StrJoin(parts, ", ").c_str());
  return rc;
}

int Where(const CtlEnv& env, const std::string& server, const std::string& run) {
  std::string id;
  bool holds = false;
  if (grpc::Status s = Owner(env, server, run, &id, &holds); !s.ok()) return env.fail(s);
  if (env.json) {
    std::printf("{\"run\": %s, \"replica\": %s, \"holds\": %s}\n", JsonString(run).c_str(),
                JsonString(id).c_str(), holds ? "true" : "false");
  } else {
    std::printf("run %s -> replica %s (%s)\n", run.c_str(), id.c_str(),
                holds ? "holds it" : "does not hold it");
  }
  return 0;
}

int Move(const CtlEnv& env, const std::string& run, const std::string& from,
         const std::string& to) {
  std::string error;
  std::shared_ptr<grpc::Channel> src = Channel(env, from, &error);
  std::shared_ptr<grpc::Channel> dst = src ? Channel(env, to, &error) : nullptr;
  if (!src || !dst) {
    std::cerr << "spotterctl: " << error << "\n";
    return kExitUsageError;
  }
  // The export's messages are passed on to the import as they arrive, so
  // spotterctl holds one message of rows at a time. The import is marked
  // last only once the export ended OK: an export that fails half way
  // imports nothing.
  grpc::ClientContext export_ctx;
  Prepare(env, &export_ctx, run);
  v1::ExportRunRequest export_req;
  export_req.set_name(run);
  export_req.set_moved_to(to);
  std::unique_ptr<grpc::ClientReader<v1::ExportRunResponse>> exporter =
      v1::SpotterService::NewStub(src)->ExportRun(&export_ctx, export_req);
  grpc::ClientContext import_ctx;
  Prepare(env, &import_ctx, run);
  v1::ImportRunResponse imported;
  std::unique_ptr<grpc::ClientWriter<v1::ImportRunRequest>> importer =
      v1::SpotterService::NewStub(dst)->ImportRun(&import_ctx, &imported);
  v1::ExportRunResponse part;
  v1::ImportRunRequest next;
  next.set_name(run);
  size_t bytes = 0;
  bool writing = true;
  while (exporter->Read(&part)) {
    for (const v1::RunRow& row : part.rows()) bytes += row.value().size();
    *next.mutable_rows() = std::move(*part.mutable_rows());
    if (writing && !importer->Write(next)) writing = false;  // the import failed: see Finish
    next.Clear();
  }
  if (grpc::Status s = exporter->Finish(); !s.ok()) {
    import_ctx.TryCancel();
    importer->Finish();
    return env.fail(Prefixed("export of " + run + " from " + from, s));
  }
  next.set_last(true);
  if (writing) importer->Write(next);
  importer->WritesDone();
  if (grpc::Status s = importer->Finish(); !s.ok()) {
    return env.fail(Prefixed(absl::StrFormat("import of %s into %s (the run stays frozen on "
                                             "%s; fix the cause and run the move again)",
                                             run, to, from),
                             s));
  }
  if (env.json) {
    absl::PrintF("{\"moved\": %s, \"from\": %s, \"to\": %s, \"bytes\": %d}\n", JsonString(run),
                 JsonString(from), JsonString(to), bytes);
  } else {
    absl::PrintF(
        "run %s moved from %s to %s (%d bytes, %d points); %s keeps a frozen "
        "tombstone until the gateway routes the run to %s and it is deleted there\n",
        run, from, to, bytes, imported.run().points(), from, to);
  }
  return 0;
}

int Rebalance(const CtlEnv& env, const std::string& gateway,
              const std::vector<std::string>& replicas, bool dry_run, bool finish) {
  std::vector<Listing> listings;
  std::map<std::string, std::string> address_of;  // replica id -> address
  for (const std::string& r : replicas) {
    Listing l = List(env, r, 0);
    if (!l.status.ok()) return env.fail(Prefixed("replica " + r, l.status));
    if (l.id.empty()) {
      return env.fail(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                   "replica " + r + " sends no x-spotter-replica metadata"));
    }
    if (address_of.contains(l.id)) {
      return env.fail(grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrFormat("replicas %s and %s both call themselves %s: give each a distinct "
                          "--replica_id",
                          address_of[l.id], r, l.id)));
    }
    address_of[l.id] = r;
    listings.push_back(std::move(l));
  }
  int moved = 0, pending = 0, failed = 0;
  for (const Listing& l : listings) {
    for (const v1::RunSummary& s : l.runs) {
      const bool tombstone = !s.moved_to().empty();
      if (finish && !tombstone) continue;  // finish deletes tombstones only
      std::string id;
      bool holds = false;
      if (grpc::Status st = Owner(env, gateway, s.name(), &id, &holds); !st.ok()) {
        return env.fail(Prefixed("asking " + gateway + " for the owner of " + s.name(), st));
      }
      if (!address_of.contains(id)) {
        return env.fail(grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            absl::StrFormat("the gateway routes run %s to replica %s, which is not in --replicas",
                            s.name(), id)));
      }
      const std::string& owner = address_of[id];
      if (finish) {
        // The tombstone goes once the gateway routes the run to where it
        // moved and the run is there.
        if (owner != s.moved_to() || !holds) {
          std::printf("keep tombstone of %s on %s: the gateway routes it to %s%s\n",
                      s.name().c_str(), l.address.c_str(), owner.c_str(),
                      holds ? "" : ", which does not hold it");
          ++pending;
          continue;
        }
        if (dry_run) {
          std::printf("would delete the tombstone of %s on %s\n", s.name().c_str(),
                      l.address.c_str());
          continue;
        }
        if (grpc::Status st = Delete(env, l.address, s.name()); !st.ok()) {
          env.fail(Prefixed("deleting the tombstone of " + s.name() + " on " + l.address, st));
          ++failed;
          continue;
        }
        std::printf("deleted the tombstone of %s on %s (owner %s)\n", s.name().c_str(),
                    l.address.c_str(), owner.c_str());
        ++moved;
        continue;
      }
      if (owner == l.address) continue;
      // A tombstone whose run its owner does not hold: a move that froze
      // the run and then failed to import it. Exporting again returns the
      // same rows, so the move is retried.
      if (tombstone && holds) continue;
      if (dry_run) {
        std::printf("would move %s from %s to %s\n", s.name().c_str(), l.address.c_str(),
                    owner.c_str());
        ++moved;
        continue;
      }
      if (Move(env, s.name(), l.address, owner) != 0) {
        ++failed;
        continue;
      }
      ++moved;
    }
  }
  if (finish) {
    std::printf("%d tombstones deleted, %d kept, %d failed\n", moved, pending, failed);
  } else {
    std::printf("%d runs %s, %d failed%s\n", moved, dry_run ? "to move" : "moved", failed,
                dry_run || moved == 0
                    ? ""
                    : "; now point the gateway at the new replica list and reload it, then run "
                      "rebalance --finish");
  }
  return failed > 0 ? kExitPartial : (pending > 0 ? kExitPartial : 0);
}

std::optional<int> ScaleCommand(const CtlEnv& env, const std::string& cmd, const std::string& run,
                                const std::string& server, const std::string& state,
                                const std::function<int(const std::string&)>& usage) {
  std::vector<std::string> replicas;
  std::string list = absl::GetFlag(FLAGS_replicas);
  if (list.empty()) {
    if (const char* e = std::getenv("SPOTTER_REPLICAS")) list = e;
  }
  if (!list.empty() && (cmd == "runs" || cmd == "health" || cmd == "rebalance")) {
    std::string error;
    replicas = ExpandReplicas(list, &error);
    if (replicas.empty()) return usage(error);
  }
  if (cmd == "health" && !replicas.empty()) return HealthAcross(env, replicas);
  if (cmd == "runs" && !replicas.empty()) {
    if (!state.empty() && state != "active" && state != "finished") {
      return usage("--state must be active or finished");
    }
    return RunsAcross(env, replicas,
                      state == "active"     ? v1::RUN_STATE_ACTIVE
                      : state == "finished" ? v1::RUN_STATE_FINISHED
                                            : v1::RUN_STATE_UNSPECIFIED);
  }
  if (cmd == "rebalance") {
    if (absl::GetFlag(FLAGS_gateway).empty() || replicas.empty()) {
      return usage("rebalance needs --gateway and --replicas");
    }
    return Rebalance(env, absl::GetFlag(FLAGS_gateway), replicas, absl::GetFlag(FLAGS_dry_run),
                     absl::GetFlag(FLAGS_finish));
  }
  if (cmd != "where" && cmd != "move") return std::nullopt;
  if (run.empty()) return usage(cmd + " needs a run name");
  if (cmd == "where") return Where(env, server, run);
  if (absl::GetFlag(FLAGS_from).empty() || absl::GetFlag(FLAGS_to).empty()) {
    return usage("move needs --from and --to");
  }
  return Move(env, run, absl::GetFlag(FLAGS_from), absl::GetFlag(FLAGS_to));
}

}  // namespace spotter::ctl
