// server/rpc/auth: the tokens file (from text and from a file), the roles and
// the RPCs each may call, the bearer header, run grants, and the mode without
// tokens. No server: the TokenTable and the Authorizer alone.
#include "server/rpc/auth.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsNull;
using testing::IsOk;
using ::testing::Not;
using ::testing::NotNull;
using testing::StatusIs;

constexpr char kAdminToken[] = "admin-token-0123456789abcdef";
constexpr char kViewerToken[] = "viewer-token-0123456789abcdef";
constexpr char kAliceToken[] = "alice-token-0123456789abcdef";  // trainer, grants exp-* ci-?
constexpr char kBobToken[] = "bob-token-0123456789abcdef";      // trainer, no grants

constexpr char kTokens[] = R"(# name  role     token                          grants
ops     admin    admin-token-0123456789abcdef
grafana viewer   viewer-token-0123456789abcdef
alice   trainer  alice-token-0123456789abcdef   exp-*  ci-?
bob     trainer  bob-token-0123456789abcdef
)";

// The message of `s` as a string (gtest prints a string_view char by char).
std::string MessageOf(const absl::Status& s) { return std::string(s.message()); }

std::shared_ptr<const TokenTable> MustParse(const std::string& text) {
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Parse(text);
  EXPECT_THAT(t, IsOk());
  return t.ok() ? *t : nullptr;
}

// The RPCs each role may call, as auth.h states them.
std::set<Rpc> AllowedRpcs(Role role) {
  switch (role) {
    case Role::kTrainer:
      return {Rpc::kOpenRun, Rpc::kConnect};
    case Role::kViewer:
      return {Rpc::kGetRun, Rpc::kListRuns, Rpc::kGetTrajectory, Rpc::kWatchRun};
    case Role::kAdmin:
      return std::set<Rpc>(std::begin(kAllRpcs), std::end(kAllRpcs));
  }
  return {};
}

// A file under the test's temporary directory holding `text`, removed at the
// end of the scope.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = absl::StrCat(::testing::TempDir(), "/spotter_auth_", getpid(), "_", info->name(),
                         ".tokens");
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------
// Names

TEST(NamesTest, RolesAndRpcsHaveTheirNames) {
  EXPECT_STREQ(RoleName(Role::kTrainer), "trainer");
  EXPECT_STREQ(RoleName(Role::kViewer), "viewer");
  EXPECT_STREQ(RoleName(Role::kAdmin), "admin");
  const std::vector<std::string> names({"OpenRun", "Connect", "GetRun", "ListRuns", "GetTrajectory",
                                        "WatchRun", "OverridePhase", "FinishRun", "DeleteRun",
                                        "Backup", "ExportRun", "ImportRun"});
  ASSERT_EQ(std::size(kAllRpcs), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(RpcName(kAllRpcs[i]), names[i]);
}

// ---------------------------------------------------------------------------
// TokenTable::Parse

TEST(TokenTableParseTest, ReadsEveryPrincipalWithItsRoleAndGrants) {
  std::shared_ptr<const TokenTable> t = MustParse(kTokens);
  ASSERT_THAT(t, NotNull());
  EXPECT_EQ(t->size(), 4u);

  const Principal* ops = t->Find(kAdminToken);
  ASSERT_THAT(ops, NotNull());
  EXPECT_EQ(ops->name, "ops");
  EXPECT_EQ(ops->role, Role::kAdmin);
  EXPECT_THAT(ops->grants, IsEmpty());

  const Principal* grafana = t->Find(kViewerToken);
  ASSERT_THAT(grafana, NotNull());
  EXPECT_EQ(grafana->name, "grafana");
  EXPECT_EQ(grafana->role, Role::kViewer);

  const Principal* alice = t->Find(kAliceToken);
  ASSERT_THAT(alice, NotNull());
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->role, Role::kTrainer);
  EXPECT_THAT(alice->grants, ElementsAre("exp-*", "ci-?"));

  const Principal* bob = t->Find(kBobToken);
  ASSERT_THAT(bob, NotNull());
  EXPECT_EQ(bob->role, Role::kTrainer);
  EXPECT_THAT(bob->grants, IsEmpty());
}

TEST(TokenTableParseTest, SkipsCommentsBlankLinesAndExtraWhitespace) {
  std::shared_ptr<const TokenTable> t = MustParse(
      "# a comment line\n"
      "\n"
      "   \t  \n"
      "\tops \t admin\t0123456789abcdef   # a trailing comment\r\n"
      "ci trainer 0123456789abcdeg exp-* # grants end at the comment: not-a-grant\n"
      "   # an indented comment\n");
  ASSERT_THAT(t, NotNull());
  EXPECT_EQ(t->size(), 2u);
  const Principal* ops = t->Find("0123456789abcdef");
  ASSERT_THAT(ops, NotNull());
  EXPECT_EQ(ops->name, "ops");
  EXPECT_EQ(ops->role, Role::kAdmin);
  const Principal* ci = t->Find("0123456789abcdeg");
  ASSERT_THAT(ci, NotNull());
  EXPECT_THAT(ci->grants, ElementsAre("exp-*"));
}

TEST(TokenTableParseTest, AcceptsEveryBearerTokenCharacterAndSixteenCharacters) {
  std::shared_ptr<const TokenTable> t = MustParse(
      "a admin 0123456789abcdef\n"               // exactly 16
      "b viewer AZaz09._~+/=-AZaz09._~+/=-\n");  // the whole alphabet
  ASSERT_THAT(t, NotNull());
  EXPECT_THAT(t->Find("0123456789abcdef"), NotNull());
  EXPECT_THAT(t->Find("AZaz09._~+/=-AZaz09._~+/=-"), NotNull());
}

TEST(TokenTableParseTest, FindMatchesOnlyTheWholeToken) {
  std::shared_ptr<const TokenTable> t = MustParse(kTokens);
  ASSERT_THAT(t, NotNull());
  const std::string alice = kAliceToken;
  EXPECT_THAT(t->Find(alice.substr(0, alice.size() - 1)), IsNull());  // a prefix
  EXPECT_THAT(t->Find(alice + "0"), IsNull());                        // an extension
  EXPECT_THAT(t->Find(alice.substr(1)), IsNull());                    // a suffix
  std::string flipped = alice;
  flipped[0] = 'A';
  EXPECT_THAT(t->Find(flipped), IsNull());  // tokens are case-sensitive
  EXPECT_THAT(t->Find(""), IsNull());
  EXPECT_THAT(t->Find("ops"), IsNull());  // a name is no token
}

// One malformed tokens text and what its error must say.
struct BadTokens {
  const char* what;
  const char* text;
  const char* says;
};

class TokenTableRefusesTest : public ::testing::TestWithParam<BadTokens> {};

TEST_P(TokenTableRefusesTest, WithInvalidArgumentSayingWhatIsWrong) {
  const BadTokens& b = GetParam();
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Parse(b.text);
  EXPECT_THAT(t, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MessageOf(t.status()), HasSubstr(b.says));
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, TokenTableRefusesTest,
    ::testing::Values(
        BadTokens{"Empty", "", "names no principal"},
        BadTokens{"OnlyComments", "# nothing\n\n   # here\n", "names no principal"},
        BadTokens{"NameOnly", "ops", "line 1: too few fields"},
        BadTokens{"NoToken", "ops admin", "line 1: too few fields"},
        BadTokens{"UnknownRole", "ops root 0123456789abcdef", "line 1: unknown role 'root'"},
        BadTokens{"RoleIsCaseSensitive", "ops Admin 0123456789abcdef", "unknown role 'Admin'"},
        BadTokens{"ShortToken", "ops admin 0123456789abcde",
                  "the token of ops has 15 characters; use at least 16"},
        BadTokens{"QuoteInToken", "ops admin 0123456789abcdef\"", "outside [A-Za-z0-9._~+/=-]"},
        BadTokens{"NonAsciiInToken", "ops admin 0123456789abcdef\xc3\xa9", "outside"},
        BadTokens{"CommaInToken", "ops admin 0123456789,abcdef", "outside"},
        BadTokens{"NameTwice", "a admin 0123456789abcdef\na viewer 0123456789abcdeg",
                  "line 2: principal a appears twice"},
        BadTokens{"TokenTwice", "a admin 0123456789abcdef\nb viewer 0123456789abcdef",
                  "line 2: a token appears twice"}),
    [](const ::testing::TestParamInfo<BadTokens>& info) { return info.param.what; });

TEST(TokenTableParseTest, ErrorsNameTheLineCountingCommentsAndBlankLines) {
  auto t = TokenTable::Parse(
      "# header\n"
      "ops admin 0123456789abcdef\n"
      "\n"
      "grafana viewer 0123456789abcdeg\n"
      "broken nobody 0123456789abcdeh\n");
  EXPECT_THAT(t, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MessageOf(t.status()), HasSubstr("tokens line 5: unknown role 'nobody'"));
}

TEST(TokenTableParseTest, ErrorsShowTheExpectedFormat) {
  auto t = TokenTable::Parse("ops");
  EXPECT_THAT(MessageOf(t.status()), AllOf(HasSubstr("<name> <role> <token> [<run-glob> ...]"),
                                           HasSubstr("trainer, viewer or admin")));
}

TEST(TokenTableParseTest, ErrorsNeverEchoAToken) {
  // A rejected file may hold real tokens: the error names the line, not them.
  for (const char* text : {"ops admin 0123456789abcdef\nops viewer s3cret-0123456789abcdef",
                           "ops admin s3cret-0123456789abcdef\nb viewer s3cret-0123456789abcdef",
                           "ops admin s3cret-012345678\"9abcdef"}) {
    auto t = TokenTable::Parse(text);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_THAT(MessageOf(t.status()), Not(HasSubstr("s3cret"))) << text;
  }
}

// ---------------------------------------------------------------------------
// TokenTable::Load

TEST(TokenTableLoadTest, ReadsAFile) {
  TempFile f(kTokens);
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Load(f.path());
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ((*t)->size(), 4u);
  ASSERT_THAT((*t)->Find(kViewerToken), NotNull());
  EXPECT_EQ((*t)->Find(kViewerToken)->name, "grafana");
}

TEST(TokenTableLoadTest, AMissingFileIsNotFoundNamingThePath) {
  const std::string path = ::testing::TempDir() + "/spotter_auth_no_such_dir/tokens";
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Load(path);
  EXPECT_THAT(t, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(MessageOf(t.status()), HasSubstr(path));
}

TEST(TokenTableLoadTest, ABadFileIsInvalidArgumentNamingThePathAndTheLine) {
  TempFile f("ops admin 0123456789abcdef\nbob trainer short\n");
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Load(f.path());
  EXPECT_THAT(t, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MessageOf(t.status()), AllOf(HasSubstr(f.path()), HasSubstr("line 2"),
                                           HasSubstr("the token of bob has 5 characters")));
}

TEST(TokenTableLoadTest, AnEmptyFileIsInvalidArgumentNamingThePath) {
  TempFile f("");
  absl::StatusOr<std::shared_ptr<const TokenTable>> t = TokenTable::Load(f.path());
  EXPECT_THAT(t, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MessageOf(t.status()), AllOf(HasSubstr(f.path()), HasSubstr("names no principal")));
}

// ---------------------------------------------------------------------------
// Authorizer::Authenticate

class AuthenticateTest : public ::testing::Test {
 protected:
  AuthenticateTest() : auth_(MustParse(kTokens)) {}
  Authorizer auth_;
};

TEST_F(AuthenticateTest, EachRoleMayCallExactlyItsRpcs) {
  const struct {
    const char* token;
    Role role;
  } callers[] = {{kAdminToken, Role::kAdmin},
                 {kViewerToken, Role::kViewer},
                 {kAliceToken, Role::kTrainer},
                 {kBobToken, Role::kTrainer}};
  for (const auto& c : callers) {
    const std::set<Rpc> allowed = AllowedRpcs(c.role);
    for (Rpc rpc : kAllRpcs) {
      absl::StatusOr<const Principal*> p =
          auth_.Authenticate(absl::StrCat("Bearer ", c.token), rpc);
      if (allowed.count(rpc)) {
        ASSERT_THAT(p, IsOk()) << RoleName(c.role) << " " << RpcName(rpc);
        ASSERT_THAT(*p, NotNull());
        EXPECT_EQ((*p)->role, c.role);
      } else {
        EXPECT_THAT(p, StatusIs(absl::StatusCode::kPermissionDenied))
            << RoleName(c.role) << " " << RpcName(rpc);
      }
    }
  }
}

TEST_F(AuthenticateTest, OnlyAdminsMayOverrideFinishOrDelete) {
  for (Rpc rpc : {Rpc::kOverridePhase, Rpc::kFinishRun, Rpc::kDeleteRun}) {
    EXPECT_THAT(auth_.Authenticate(absl::StrCat("Bearer ", kAdminToken), rpc), IsOk());
    for (const char* token : {kViewerToken, kAliceToken, kBobToken}) {
      EXPECT_THAT(auth_.Authenticate(absl::StrCat("Bearer ", token), rpc),
                  StatusIs(absl::StatusCode::kPermissionDenied))
          << RpcName(rpc);
    }
  }
}

TEST_F(AuthenticateTest, ReturnsThePrincipalOfTheToken) {
  absl::StatusOr<const Principal*> p =
      auth_.Authenticate(absl::StrCat("Bearer ", kAliceToken), Rpc::kOpenRun);
  ASSERT_THAT(p, IsOk());
  ASSERT_THAT(*p, NotNull());
  EXPECT_EQ((*p)->name, "alice");
  EXPECT_THAT((*p)->grants, ElementsAre("exp-*", "ci-?"));
}

TEST_F(AuthenticateTest, ARefusedRoleSaysWhoWhatAndWhichRoleItNeeds) {
  auto viewer = auth_.Authenticate(absl::StrCat("Bearer ", kViewerToken), Rpc::kDeleteRun);
  EXPECT_THAT(viewer, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(MessageOf(viewer.status()),
              AllOf(HasSubstr("grafana (role viewer) may not call DeleteRun"),
                    HasSubstr("needs role admin")));

  auto trainer = auth_.Authenticate(absl::StrCat("Bearer ", kBobToken), Rpc::kWatchRun);
  EXPECT_THAT(MessageOf(trainer.status()),
              AllOf(HasSubstr("bob (role trainer) may not call WatchRun"),
                    HasSubstr("needs role viewer or admin")));

  auto reader = auth_.Authenticate(absl::StrCat("Bearer ", kViewerToken), Rpc::kConnect);
  EXPECT_THAT(MessageOf(reader.status()),
              AllOf(HasSubstr("grafana (role viewer) may not call Connect"),
                    HasSubstr("needs role trainer or admin")));
}

TEST_F(AuthenticateTest, AMissingHeaderIsUnauthenticatedNamingTheRpcAndTheHeader) {
  for (Rpc rpc : kAllRpcs) {
    auto p = auth_.Authenticate("", rpc);
    EXPECT_THAT(p, StatusIs(absl::StatusCode::kUnauthenticated)) << RpcName(rpc);
    EXPECT_THAT(MessageOf(p.status()),
                AllOf(HasSubstr(absl::StrCat(RpcName(rpc), " needs a bearer token")),
                      HasSubstr("authorization: Bearer <token>")));
  }
}

TEST_F(AuthenticateTest, AHeaderNotOfTheBearerFormIsUnauthenticated) {
  for (const std::string& header : {std::string(kAdminToken),               // no scheme
                                    absl::StrCat("Basic ", kAdminToken),    // another scheme
                                    absl::StrCat("Bearer:", kAdminToken),   // no space
                                    absl::StrCat(" Bearer ", kAdminToken),  // leading space
                                    std::string("Bearer"),                  // the scheme alone
                                    absl::StrCat("Token ", kAdminToken)}) {
    auto p = auth_.Authenticate(header, Rpc::kGetRun);
    EXPECT_THAT(p, StatusIs(absl::StatusCode::kUnauthenticated)) << header;
    EXPECT_THAT(MessageOf(p.status()), HasSubstr("is not 'Bearer <token>'")) << header;
  }
}

TEST_F(AuthenticateTest, TheSchemeMayBeCapitalisedOrNotAndTheTokenPadded) {
  for (const std::string& header :
       {absl::StrCat("Bearer ", kAdminToken), absl::StrCat("bearer ", kAdminToken),
        absl::StrCat("Bearer  ", kAdminToken, " "), absl::StrCat("Bearer \t", kAdminToken),
        absl::StrCat("Bearer ", kAdminToken, "\r\n")}) {
    auto p = auth_.Authenticate(header, Rpc::kDeleteRun);
    ASSERT_THAT(p, IsOk()) << header;
    EXPECT_EQ((*p)->name, "ops") << header;
  }
}

TEST_F(AuthenticateTest, AnUnknownTokenIsUnauthenticatedAndNotEchoed) {
  for (const std::string& token : {std::string("unknown-0123456789abcdef"),
                                   std::string(kAdminToken).substr(1), std::string("")}) {
    auto p = auth_.Authenticate(absl::StrCat("Bearer ", token), Rpc::kListRuns);
    EXPECT_THAT(p, StatusIs(absl::StatusCode::kUnauthenticated)) << token;
    EXPECT_THAT(MessageOf(p.status()), HasSubstr("unknown bearer token")) << token;
    if (!token.empty()) {
      EXPECT_THAT(MessageOf(p.status()), Not(HasSubstr(token)));
    }
  }
}

// ---------------------------------------------------------------------------
// Without tokens

TEST(UnauthenticatedModeTest, EveryCallerIsAnonymousAndMayCallEverything) {
  Authorizer off(nullptr);
  for (Rpc rpc : kAllRpcs) {
    for (const std::string& header :
         {std::string(""), std::string("Bearer whatever"), std::string("garbage"),
          absl::StrCat("Bearer ", kAdminToken)}) {
      absl::StatusOr<const Principal*> p = off.Authenticate(header, rpc);
      ASSERT_THAT(p, IsOk()) << RpcName(rpc) << " " << header;
      EXPECT_THAT(*p, IsNull()) << RpcName(rpc) << " " << header;
    }
  }
}

TEST(UnauthenticatedModeTest, AnonymousCallersMayActOnAndCreateAnyRun) {
  for (Rpc rpc : kAllRpcs) {
    EXPECT_THAT(Authorizer::AuthorizeRun(nullptr, rpc, "any", "alice"), IsOk());
    EXPECT_THAT(Authorizer::AuthorizeRun(nullptr, rpc, "any", ""), IsOk());
  }
  EXPECT_THAT(Authorizer::AuthorizeCreate(nullptr, "any"), IsOk());
}

// ---------------------------------------------------------------------------
// Run grants

Principal Trainer(const std::string& name, std::vector<std::string> grants = {}) {
  Principal p;
  p.name = name;
  p.role = Role::kTrainer;
  p.grants = std::move(grants);
  return p;
}

TEST(AuthorizeRunTest, ATrainerMayActOnRunsItCreated) {
  const Principal bob = Trainer("bob");
  for (Rpc rpc : {Rpc::kOpenRun, Rpc::kConnect}) {
    EXPECT_THAT(Authorizer::AuthorizeRun(&bob, rpc, "bob-run", "bob"), IsOk());
  }
}

TEST(AuthorizeRunTest, ATrainerMayActOnRunsMatchingAGrantWhoeverCreatedThem) {
  const Principal alice = Trainer("alice", {"exp-*", "ci-?"});
  EXPECT_THAT(Authorizer::AuthorizeRun(&alice, Rpc::kConnect, "exp-1", "ops"), IsOk());
  EXPECT_THAT(Authorizer::AuthorizeRun(&alice, Rpc::kConnect, "exp-", "bob"), IsOk());
  EXPECT_THAT(Authorizer::AuthorizeRun(&alice, Rpc::kOpenRun, "ci-7", ""), IsOk());
}

TEST(AuthorizeRunTest, ATrainerIsDeniedOthersRunsOutsideItsGrants) {
  const Principal alice = Trainer("alice", {"exp-*", "ci-?"});
  for (const char* run : {"prod", "ci-10", "my-exp-1", "EXP-1"}) {
    EXPECT_THAT(Authorizer::AuthorizeRun(&alice, Rpc::kConnect, run, "bob"),
                StatusIs(absl::StatusCode::kPermissionDenied))
        << run;
  }
}

TEST(AuthorizeRunTest, ADenialNamesCallerRpcRunOwnerAndGrants) {
  const Principal alice = Trainer("alice", {"exp-*", "ci-?"});
  absl::Status s = Authorizer::AuthorizeRun(&alice, Rpc::kConnect, "prod", "bob");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(
      MessageOf(s),
      AllOf(HasSubstr("alice (role trainer) may not call Connect on run prod"),
            HasSubstr("created by bob"), HasSubstr("matches none of its grants (exp-* ci-?)")));

  const Principal bob = Trainer("bob");
  s = Authorizer::AuthorizeRun(&bob, Rpc::kOpenRun, "legacy", "");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(MessageOf(s),
              AllOf(HasSubstr("bob (role trainer) may not call OpenRun on run legacy"),
                    HasSubstr("created by an anonymous caller"), HasSubstr("grants (none)")));
}

TEST(AuthorizeRunTest, ViewersAndAdminsMayActOnEveryRunWhateverTheirGrants) {
  Principal viewer;
  viewer.name = "grafana";
  viewer.role = Role::kViewer;
  viewer.grants = {"nothing-*"};  // ignored for viewers
  Principal admin;
  admin.name = "ops";
  admin.role = Role::kAdmin;
  admin.grants = {"nothing-*"};  // ignored for admins
  for (Rpc rpc : kAllRpcs) {
    EXPECT_THAT(Authorizer::AuthorizeRun(&viewer, rpc, "alice-run", "alice"), IsOk());
    EXPECT_THAT(Authorizer::AuthorizeRun(&admin, rpc, "alice-run", "alice"), IsOk());
  }
}

TEST(AuthorizeCreateTest, ATrainerWithoutGrantsMayCreateAnyName) {
  const Principal bob = Trainer("bob");
  EXPECT_THAT(Authorizer::AuthorizeCreate(&bob, "anything"), IsOk());
}

TEST(AuthorizeCreateTest, ATrainerWithGrantsMayCreateOnlyMatchingNames) {
  const Principal alice = Trainer("alice", {"exp-*", "ci-?"});
  EXPECT_THAT(Authorizer::AuthorizeCreate(&alice, "exp-42"), IsOk());
  EXPECT_THAT(Authorizer::AuthorizeCreate(&alice, "ci-1"), IsOk());
  absl::Status s = Authorizer::AuthorizeCreate(&alice, "prod");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(MessageOf(s), AllOf(HasSubstr("alice (role trainer) may not create run prod"),
                                  HasSubstr("matches none of its grants (exp-* ci-?)")));
}

TEST(AuthorizeCreateTest, ViewersAndAdminsAreNotLimitedByGrants) {
  Principal viewer;
  viewer.role = Role::kViewer;
  viewer.grants = {"nothing-*"};
  Principal admin;
  admin.role = Role::kAdmin;
  admin.grants = {"nothing-*"};
  EXPECT_THAT(Authorizer::AuthorizeCreate(&viewer, "prod"), IsOk());
  EXPECT_THAT(Authorizer::AuthorizeCreate(&admin, "prod"), IsOk());
}

TEST(AuthorizeRunTest, GrantsFromAParsedTableApply) {
  std::shared_ptr<const TokenTable> t = MustParse(kTokens);
  ASSERT_THAT(t, NotNull());
  const Principal* alice = t->Find(kAliceToken);
  ASSERT_THAT(alice, NotNull());
  EXPECT_THAT(Authorizer::AuthorizeRun(alice, Rpc::kConnect, "exp-3", "bob"), IsOk());
  EXPECT_THAT(Authorizer::AuthorizeRun(alice, Rpc::kConnect, "bob-run", "bob"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(Authorizer::AuthorizeCreate(alice, "bob-run"),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

// ---------------------------------------------------------------------------
// Loopback addresses

TEST(IsLoopbackAddressTest, AcceptsLoopbackHostsAndUnixSockets) {
  for (const char* a :
       {"127.0.0.1:50051", "127.255.0.9:1", "localhost:50051", "[::1]:50051", "ipv4:127.0.0.1:1",
        "ipv6:[::1]:1", "dns:localhost:1", "unix:/run/spotter.sock", "unix-abstract:spotter"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
}

TEST(IsLoopbackAddressTest, RefusesEverythingElse) {
  for (const char* a : {"0.0.0.0:50051", "[::]:50051", "10.0.0.1:1", "128.0.0.1:1",
                        "example.com:443", "localhost.example.com:1", "127.0.0.1.evil.com:1",
                        "1127.0.0.1:1", "127.0.0:1", "127.0.0.1a:1", ":50051", "[::1", ""}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

}  // namespace
}  // namespace spotter
