#include "server/rpc/auth.h"

#include <fnmatch.h>

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace spotter {
namespace {

constexpr size_t kMinTokenLength = 16;

bool TokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '~' ||
         c == '+' || c == '/' || c == '=' || c == '-';
}

// Equality of two strings in time independent of where they differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

bool Allowed(Role role, Rpc rpc) {
  switch (role) {
    case Role::kAdmin:
      return true;
    case Role::kViewer:
      return rpc == Rpc::kGetRun || rpc == Rpc::kListRuns || rpc == Rpc::kGetTrajectory ||
             rpc == Rpc::kWatchRun;
    case Role::kTrainer:
      return rpc == Rpc::kOpenRun || rpc == Rpc::kConnect;
  }
  return false;
}

const char* NeededRole(Rpc rpc) {
  switch (rpc) {
    case Rpc::kOpenRun:
    case Rpc::kConnect:
      return "trainer or admin";
    case Rpc::kGetRun:
    case Rpc::kListRuns:
    case Rpc::kGetTrajectory:
    case Rpc::kWatchRun:
      return "viewer or admin";
    default:
      return "admin";
  }
}

bool MatchesGrant(const Principal& p, const std::string& run) {
  for (const std::string& g : p.grants) {
    if (fnmatch(g.c_str(), run.c_str(), 0) == 0) return true;
  }
  return false;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kTrainer:
      return "trainer";
    case Role::kViewer:
      return "viewer";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kOpenRun:
      return "OpenRun";
    case Rpc::kConnect:
      return "Connect";
    case Rpc::kGetRun:
      return "GetRun";
    case Rpc::kListRuns:
      return "ListRuns";
    case Rpc::kGetTrajectory:
      return "GetTrajectory";
    case Rpc::kWatchRun:
      return "WatchRun";
    case Rpc::kOverridePhase:
      return "OverridePhase";
    case Rpc::kFinishRun:
      return "FinishRun";
    case Rpc::kDeleteRun:
      return "DeleteRun";
    case Rpc::kBackup:
      return "Backup";
    case Rpc::kExportRun:
      return "ExportRun";
    case Rpc::kImportRun:
      return "ImportRun";
  }
  return "Unknown";
}

absl::StatusOr<std::shared_ptr<const TokenTable>> TokenTable::Parse(absl::string_view text) {
  auto table = std::make_shared<TokenTable>();
  absl::flat_hash_set<std::string> names, tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (f.empty()) continue;
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tokens line %d: %s; expected '<name> <role> <token> [<run-glob> "
                          "...]' with role trainer, viewer or admin",
                          line_no, what));
    };
    if (f.size() < 3) return bad("too few fields");
    Entry e;
    e.principal.name = f[0];
    if (f[1] == "trainer") {
      e.principal.role = Role::kTrainer;
    } else if (f[1] == "viewer") {
      e.principal.role = Role::kViewer;
    } else if (f[1] == "admin") {
      e.principal.role = Role::kAdmin;
    } else {
      return bad(absl::StrFormat("unknown role '%s'", f[1]));
    }
    e.token = f[2];
    if (e.token.size() < kMinTokenLength) {
      return bad(
          absl::StrFormat("the token of %s has %d characters; use at least %d "
                          "random ones (e.g. openssl rand -hex 24)",
                          e.principal.name, e.token.size(), kMinTokenLength));
    }
    for (char c : e.token) {
      if (!TokenChar(c)) return bad("a token character outside [A-Za-z0-9._~+/=-]");
    }
    for (size_t i = 3; i < f.size(); ++i) e.principal.grants.push_back(f[i]);
    if (!names.insert(e.principal.name).second) {
      return bad(absl::StrFormat("principal %s appears twice", e.principal.name));
    }
    if (!tokens.insert(e.token).second) return bad("a token appears twice");
    table->entries_.push_back(std::move(e));
  }
  if (table->entries_.empty()) {
    return absl::InvalidArgumentError("the tokens file names no principal");
  }
  return std::shared_ptr<const TokenTable>(std::move(table));
}

absl::StatusOr<std::shared_ptr<const TokenTable>> TokenTable::Load(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrFormat("cannot read tokens file %s", path));
  std::stringstream ss;
  ss << f.rdbuf();
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = Parse(ss.str());
  if (!t.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.status().message()));
  }
  return t;
}

const Principal* TokenTable::Find(absl::string_view token) const {
  const Principal* found = nullptr;
  for (const Entry& e : entries_) {
    if (ConstantTimeEquals(e.token, token)) found = &e.principal;
  }
  return found;
}

absl::StatusOr<const Principal*> Authorizer::Authenticate(absl::string_view authorization,
                                                          Rpc rpc) const {
  if (!tokens_) return nullptr;
  absl::string_view token = authorization;
  if (authorization.empty()) {
    return absl::UnauthenticatedError(absl::StrFormat(
        "%s needs a bearer token: send metadata 'authorization: Bearer <token>' (the server "
        "uses a tokens file)",
        RpcName(rpc)));
  }
  if (!absl::ConsumePrefix(&token, "Bearer ") && !absl::ConsumePrefix(&token, "bearer ")) {
    return absl::UnauthenticatedError("the authorization metadata is not 'Bearer <token>'");
  }
  const Principal* p = tokens_->Find(absl::StripAsciiWhitespace(token));
  if (p == nullptr) return absl::UnauthenticatedError("unknown bearer token");
  if (!Allowed(p->role, rpc)) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s (role %s) may not call %s: it needs role %s", p->name,
                        RoleName(p->role), RpcName(rpc), NeededRole(rpc)));
  }
  return p;
}

absl::Status Authorizer::AuthorizeRun(const Principal* caller, Rpc rpc, const std::string& run,
                                      const std::string& owner) {
  if (caller == nullptr || caller->role != Role::kTrainer) return absl::OkStatus();
  if (owner == caller->name || MatchesGrant(*caller, run)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrFormat(
      "%s (role trainer) may not call %s on run %s: the run was created by %s and matches "
      "none of its grants (%s)",
      caller->name, RpcName(rpc), run, owner.empty() ? "an anonymous caller" : owner,
      caller->grants.empty() ? "none" : absl::StrJoin(caller->grants, " ")));
}

absl::Status Authorizer::AuthorizeCreate(const Principal* caller, const std::string& run) {
  if (caller == nullptr || caller->role != Role::kTrainer || caller->grants.empty() ||
      MatchesGrant(*caller, run)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrFormat(
      "%s (role trainer) may not create run %s: the name matches none of its grants (%s)",
      caller->name, run, absl::StrJoin(caller->grants, " ")));
}

bool IsLoopbackAddress(const std::string& address) {
  absl::string_view a = address;
  if (absl::StartsWith(a, "unix:") || absl::StartsWith(a, "unix-abstract:")) return true;
  absl::ConsumePrefix(&a, "ipv4:");
  absl::ConsumePrefix(&a, "ipv6:");
  absl::ConsumePrefix(&a, "dns:");
  absl::string_view host = a;
  if (absl::StartsWith(host, "[")) {
    const size_t close = host.find(']');
    if (close == absl::string_view::npos) return false;
    host = host.substr(1, close - 1);
  } else if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8, dotted quad.
  std::vector<absl::string_view> parts = absl::StrSplit(host, '.');
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (absl::string_view p : parts) {
    if (p.empty() || p.size() > 3) return false;
    for (char c : p) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
    }
  }
  return true;
}

}  // namespace spotter
