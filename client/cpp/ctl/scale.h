// spotterctl's commands for several replicas behind a gateway
// (docs/SCALING.md): listings and health merged across replicas, the owner
// of a run, moving a run, and rebalancing after the replica list changes.
#ifndef SPOTTER_CLIENT_CPP_CTL_SCALE_H_
#define SPOTTER_CLIENT_CPP_CTL_SCALE_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/cpp/channel.h"

namespace spotter::ctl {

// What every command needs from spotterctl's flags.
struct CtlEnv {
  ChannelSecurity security;                    // carries the bearer token
  absl::Duration timeout = absl::Seconds(10);  // per unary call
  bool json = false;
  // spotterctl's mapping of a failed call to its exit code (and message).
  std::function<int(const grpc::Status&)> fail;
};

// Exit codes shared with spotterctl (its kUsage).
inline constexpr int kExitPartial = 2;  // some replicas answered, some did not
inline constexpr int kExitUsageError = 64;

// "a,b,c" -> addresses; an entry whose host resolves to several addresses
// (a Kubernetes headless service) becomes one address per resolved IP.
// Empty on error, with *error set.
std::vector<std::string> ExpandReplicas(const std::string& list, std::string* error);

// `runs --replicas`: every replica's runs, merged into one table with the
// replica that holds each (tombstones of moved runs marked). `state_filter`
// as ListRunsRequest.state.
int RunsAcross(const CtlEnv& env, const std::vector<std::string>& replicas, int state_filter);

// `health --replicas`: the gRPC health of each replica; 0 only when all serve.
int HealthAcross(const CtlEnv& env, const std::vector<std::string>& replicas);

// `where RUN`: the replica (x-spotter-replica) that answers a call about
// RUN at `server` (a gateway routes it to the run's owner).
int Where(const CtlEnv& env, const std::string& server, const std::string& run);

// `move RUN --from A --to B`: ExportRun on A (which freezes the run and
// leaves a tombstone naming B), then ImportRun on B.
int Move(const CtlEnv& env, const std::string& run, const std::string& from, const std::string& to);

// `rebalance --gateway GW --replicas A,B,...`: moves every run whose owner by
// GW differs from the replica holding it (dry_run: only prints the plan).
// With finish: deletes the tombstones whose run GW routes to the replica it
// moved to and that replica holds.
int Rebalance(const CtlEnv& env, const std::string& gateway,
              const std::vector<std::string>& replicas, bool dry_run, bool finish);

// spotterctl's dispatch for these commands: `runs` and `health` with
// --replicas (or $SPOTTER_REPLICAS), `where RUN`, `move RUN`, `rebalance`.
// `run` is the command's first argument ("" if none), `server` spotterctl's
// --server, `state` its --state, `usage` how it reports bad usage. nullopt
// when `cmd` is not one of them (spotterctl handles it).
std::optional<int> ScaleCommand(const CtlEnv& env, const std::string& cmd, const std::string& run,
                                const std::string& server, const std::string& state,
                                const std::function<int(const std::string&)>& usage);

}  // namespace spotter::ctl

#endif  // SPOTTER_CLIENT_CPP_CTL_SCALE_H_
