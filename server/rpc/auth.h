// Who may call what: bearer tokens with roles, read from a tokens file, and
// the network policy (loopback only unless TLS and tokens, or --insecure).
//
// Roles (each RPC is checked on every path, secure or not):
//   trainer  OpenRun, Connect: for runs it created, or whose names match one
//            of its grants (globs).
//   viewer   GetRun, ListRuns, GetTrajectory, WatchRun: every run.
//   admin    every RPC on every run (OverridePhase, FinishRun, DeleteRun and
//            Backup are admin only; so are ExportRun and ImportRun, which
//            move runs).
// Without a tokens file every caller is anonymous and may call everything
// (and the server is then loopback-only unless --insecure).
#ifndef SPOTTER_SERVER_RPC_AUTH_H_
#define SPOTTER_SERVER_RPC_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spotter {

enum class Role { kTrainer, kViewer, kAdmin };
const char* RoleName(Role role);

// The Spotter RPCs, for authorization and metric labels.
enum class Rpc {
  kOpenRun,
  kConnect,
  kGetRun,
  kListRuns,
  kGetTrajectory,
  kWatchRun,
  kOverridePhase,
  kFinishRun,
  kDeleteRun,
  kBackup,
  kExportRun,  // admin only: moving runs between replicas
  kImportRun,
};
inline constexpr Rpc kAllRpcs[] = {
    Rpc::kOpenRun,  Rpc::kConnect,       Rpc::kGetRun,    Rpc::kListRuns,  Rpc::kGetTrajectory,
    Rpc::kWatchRun, Rpc::kOverridePhase, Rpc::kFinishRun, Rpc::kDeleteRun, Rpc::kBackup,
    Rpc::kExportRun, Rpc::kImportRun};
const char* RpcName(Rpc rpc);  // "OpenRun", ...

// One line of the tokens file.
struct Principal {
  std::string name;
  Role role = Role::kViewer;
  // Trainer: globs (fnmatch, e.g. "exp-*") of runs it may open and stream to
  // besides those it created. Ignored for other roles.
  std::vector<std::string> grants;
};

// An immutable table of tokens. Thread-safe.
//
// File format: one principal per line, `#` starts a comment:
//   <name> <role> <token> [<run-glob> ...]
// e.g.
//   ci-trainer  trainer  3f9c...e1  exp-*  nightly-*
//   grafana     viewer   77ab...02
//   ops         admin    d41e...9c
// Names and tokens are unique; a token has at least 16 characters of
// [A-Za-z0-9._~+/=-] (the characters of RFC 6750 bearer tokens).
class TokenTable {
 public:
  // INVALID_ARGUMENT naming the line of the first error.
  static absl::StatusOr<std::shared_ptr<const TokenTable>> Parse(absl::string_view text);
  // Reads and parses `path`; NOT_FOUND / INVALID_ARGUMENT naming the file.
  static absl::StatusOr<std::shared_ptr<const TokenTable>> Load(const std::string& path);

  // The principal whose token is `token`, or nullptr. Compares in time that
  // does not depend on where a wrong token differs.
  const Principal* Find(absl::string_view token) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string token;
    Principal principal;
  };
  std::vector<Entry> entries_;
};

// Decides every call. Thread-safe (immutable).
class Authorizer {
 public:
  // `tokens` null: no authentication (every caller anonymous, all allowed).
  explicit Authorizer(std::shared_ptr<const TokenTable> tokens) : tokens_(std::move(tokens)) {}

  // The caller of `rpc`, from the value of its `authorization` metadata
  // (empty when absent). nullptr (anonymous) when tokens are off.
  // UNAUTHENTICATED: tokens are on and the header is missing, not "Bearer
  // <token>", or the token is unknown. PERMISSION_DENIED: the caller's role
  // may not call `rpc`.
  absl::StatusOr<const Principal*> Authenticate(absl::string_view authorization, Rpc rpc) const;

  // Whether `caller` may call `rpc` on run `run` created by `owner`: a
  // trainer only for its own runs or runs matching a grant. OK for other
  // roles and for anonymous callers. PERMISSION_DENIED otherwise.
  static absl::Status AuthorizeRun(const Principal* caller, Rpc rpc, const std::string& run,
                                   const std::string& owner);
  // Whether a trainer may create a run of this name (its grants, if it has
  // any, must match). OK for other roles. PERMISSION_DENIED otherwise.
  static absl::Status AuthorizeCreate(const Principal* caller, const std::string& run);

 private:
  std::shared_ptr<const TokenTable> tokens_;
};

// True for addresses only this machine can reach: 127.0.0.0/8, ::1,
// localhost, and unix sockets.
bool IsLoopbackAddress(const std::string& address);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RPC_AUTH_H_
