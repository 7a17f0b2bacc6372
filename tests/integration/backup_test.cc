// Online backup and restore: a backup taken while trainers stream is a state
// file a new server starts on, and every run there is the original's up to
// the backup's point (config, a prefix of its points, transitions and
// directives; rank seqs covering what was acknowledged before the backup
// and never beyond what was acknowledged at all). The original keeps
// acknowledging uploads while the copy runs. Only admins may back up; a
// server without a state file says so.
#include "client/cpp/ctl/backup.h"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "server/rpc/server.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

constexpr int kRuns = 3;
constexpr int kRanks = 2;

std::string RunName(int r) { return absl::StrCat("run-", r); }

// Field by field, NaN equal to NaN (a point without a validation metric).
bool Same(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  google::protobuf::util::DefaultFieldComparator fields;
  fields.set_treat_nan_as_equal(true);
  MessageDifferencer d;
  d.set_field_comparator(&fields);
  return d.Compare(a, b);
}

// A state file on SQLite; commits need not reach the disk (the backup's
// consistency does not depend on it, and the test stays fast).
ServerOptions StateOptions(const std::string& path) {
  ServerOptions o = TestOptions();
  o.state_file = path;
  o.sqlite.sync = SqliteOptions::Sync::kNormal;
  o.checkpoint.every_uploads = 16;  // checkpoints truncate upload logs during the copy
  return o;
}

grpc::Status Force(v1::SpotterService::Stub* stub, const std::string& run, v1::Phase phase) {
  grpc::ClientContext ctx;
  v1::OverridePhaseRequest req;
  req.set_name(run);
  req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
  req.set_phase(phase);
  req.set_reason("backup test");
  v1::OverridePhaseResponse resp;
  return stub->OverridePhase(&ctx, req, &resp);
}

BackupOutcome Backup(v1::SpotterService::Stub* stub, const std::string& path,
                     const std::string& token = "") {
  grpc::ClientContext ctx;
  AddToken(&ctx, token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return ReceiveBackup(*stub, &ctx, path);
}

// One rank streaming uploads, one at a time, each awaited: `acked` is the
// highest seq the server acknowledged.
class Trainer {
 public:
  Trainer(v1::SpotterService::Stub* stub, int run, int rank, std::atomic<int>* total_acks)
      : run_(run), rank_(rank), total_acks_(total_acks) {
    thread_ = std::thread([this, stub] { Loop(stub); });
  }
  ~Trainer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t acked() const { return acked_; }
  bool failed() const { return failed_; }

 private:
  void Loop(v1::SpotterService::Stub* stub) {
    RawStream s(stub, RunName(run_), static_cast<uint32_t>(rank_));
    if (!s.AwaitWelcome()) {
      failed_ = true;
      return;
    }
    for (uint64_t seq = 1; !stop_; ++seq) {
      const uint64_t seed = static_cast<uint64_t>(100 * run_ + rank_);
      if (!s.Send(Batch(seq, seq, Rows(seed, seq), 1.0 / static_cast<double>(seq))) ||
          !s.AwaitAck(seq)) {
        failed_ = true;
        return;
      }
      acked_ = seq;
      total_acks_->fetch_add(1);
    }
    s.Close();
  }

  const int run_, rank_;
  std::atomic<int>* const total_acks_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<uint64_t> acked_{0};
  std::thread thread_;
};

class BackupTest : public ServerFixture {};

TEST_F(BackupTest, BackupUnderLoadRestoresEveryRunUpToTheBackupPoint) {
  const std::string original = TempPath("original.db");
  const std::string backup = TempPath("backup.db");
  ServerOptions o = StateOptions(original);
  // One page per step with a pause: the copy spans many commits (dozens of
  // steps, most of a second).
  o.backup.pages_per_step = 1;
  o.backup.step_pause = absl::Milliseconds(10);
  ASSERT_NO_FATAL_FAILURE(StartServer(o));
  for (int r = 0; r < kRuns; ++r) ASSERT_TRUE(Open(RunName(r), SmallConfig(kRanks, 1000000)).ok());

  std::atomic<int> total_acks{0};
  std::vector<std::unique_ptr<Trainer>> trainers;
  for (int r = 0; r < kRuns; ++r) {
    for (int k = 0; k < kRanks; ++k) {
      trainers.push_back(std::make_unique<Trainer>(stub_.get(), r, k, &total_acks));
    }
  }
  auto all_acked = [&](const std::vector<uint64_t>& floor) {
    for (size_t i = 0; i < trainers.size(); ++i) {
      if (trainers[i]->acked() < floor[i]) return false;
    }
    return true;
  };
  ASSERT_TRUE(Eventually([&] { return all_acked(std::vector<uint64_t>(trainers.size(), 40)); }));
  // A transition and a directive before the backup (kept) ...
  ASSERT_TRUE(Force(stub_.get(), RunName(0), v1::PHASE_REFINEMENT).ok());

  std::vector<uint64_t> before(trainers.size());
  for (size_t i = 0; i < trainers.size(); ++i) before[i] = trainers[i]->acked();
  const int acks_before = total_acks.load();
  const BackupOutcome got = Backup(stub_.get(), backup);
  const int acks_during = total_acks.load() - acks_before;
  ASSERT_TRUE(got.ok()) << got.rpc.error_message() << got.local;
  EXPECT_EQ(got.summary.bytes(), std::filesystem::file_size(backup));
  EXPECT_EQ(got.summary.sha256().size(), 64u);
  EXPECT_GE(got.summary.steps(), 10u) << "the copy should take many steps";
  // The server kept acknowledging uploads while the copy ran. A copy that
  // held the store would allow none; the trainers' few hundred per second,
  // even under a sanitizer on a loaded machine (98 in 0.15 s seen), leave a
  // wide margin above 20.
  EXPECT_GE(acks_during, 20) << "copy took " << got.summary.copy_seconds() << " s";

  // ... and after it (not in the backup).
  std::vector<uint64_t> after(trainers.size());
  for (size_t i = 0; i < trainers.size(); ++i) after[i] = trainers[i]->acked() + 20;
  ASSERT_TRUE(Eventually([&] { return all_acked(after); }));
  ASSERT_TRUE(Force(stub_.get(), RunName(1), v1::PHASE_POLISH).ok());
  for (auto& t : trainers) t->Stop();
  for (auto& t : trainers) EXPECT_FALSE(t->failed());
  server_->DrainEvaluations();

  std::vector<v1::RunInfo> want_info;
  std::vector<v1::GetTrajectoryResponse> want_traj;
  for (int r = 0; r < kRuns; ++r) {
    want_info.push_back(Get(RunName(r)));
    want_traj.push_back(Trajectory(RunName(r)));
  }
  EXPECT_EQ(Counter(*server_, "spotter_backups_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Counter(*server_, "spotter_backups_total{result=\"failed\"}"), 0);
  EXPECT_EQ(Counter(*server_, "spotter_backup_bytes_total"),
            static_cast<double>(got.summary.bytes()));
  EXPECT_EQ(Counter(*server_, "spotter_backup_duration_seconds_count"), 1);
  // The copy waiting to be streamed is gone.
  EXPECT_FALSE(std::filesystem::exists(original + ".backup.tmp"));

  // A new server on the backup file itself, as --state_file.
  StopServer();
  ASSERT_NO_FATAL_FAILURE(StartServer(StateOptions(backup)));
  grpc::ClientContext ctx;
  v1::ListRunsResponse listed;
  ASSERT_TRUE(stub_->ListRuns(&ctx, v1::ListRunsRequest(), &listed).ok());
  ASSERT_EQ(listed.runs_size(), kRuns);
  int points_behind = 0, seqs_past_start = 0;
  for (int r = 0; r < kRuns; ++r) {
    SCOPED_TRACE(RunName(r));
    const v1::RunInfo info = Get(RunName(r));
    const v1::GetTrajectoryResponse traj = Trajectory(RunName(r));
    EXPECT_TRUE(Same(info.config(), want_info[r].config()));
    // A prefix of the original's history, element by element.
    ASSERT_LE(traj.points_size(), want_traj[r].points_size());
    EXPECT_GT(traj.points_size(), 0);
    for (int i = 0; i < traj.points_size(); ++i) {
      EXPECT_TRUE(Same(traj.points(i), want_traj[r].points(i)))
          << "point " << i << ":\n"
          << traj.points(i).DebugString() << "original:\n"
          << want_traj[r].points(i).DebugString();
    }
    points_behind += want_traj[r].points_size() - traj.points_size();
    ASSERT_LE(traj.transitions_size(), want_traj[r].transitions_size());
    for (int i = 0; i < traj.transitions_size(); ++i) {
      EXPECT_TRUE(Same(traj.transitions(i), want_traj[r].transitions(i)));
    }
    ASSERT_LE(traj.directives_size(), want_traj[r].directives_size());
    for (int i = 0; i < traj.directives_size(); ++i) {
      EXPECT_TRUE(Same(traj.directives(i), want_traj[r].directives(i)));
    }
    ASSERT_EQ(info.ranks_size(), kRanks);
    for (const v1::RankStatus& k : info.ranks()) {
      const size_t i = static_cast<size_t>(r * kRanks + static_cast<int>(k.rank()));
      // Everything acknowledged before the backup started is in it; nothing
      // beyond what the original acknowledged is.
      EXPECT_GE(k.last_seq(), before[i]) << "rank " << k.rank();
      EXPECT_LE(k.last_seq(), trainers[i]->acked()) << "rank " << k.rank();
      EXPECT_LT(k.last_seq(), trainers[i]->acked()) << "rank " << k.rank() << ": mid-stream";
      seqs_past_start += static_cast<int>(k.last_seq() - before[i]);
    }
  }
  // The backup's point is mid-stream: it holds uploads committed while the
  // copy ran, the original went on past it, run-0's pre-backup override is
  // in it and run-1's later one is not.
  EXPECT_GT(seqs_past_start, 0);
  EXPECT_GT(points_behind, 0);
  EXPECT_EQ(Get(RunName(0)).phase(), v1::PHASE_REFINEMENT);
  EXPECT_EQ(want_info[1].phase(), v1::PHASE_POLISH);
  EXPECT_NE(Get(RunName(1)).phase(), v1::PHASE_POLISH);

  // The restored server carries on: its ranks resume after their last seq.
  {
    const v1::RunInfo info = Get(RunName(2));
    RawStream s(stub_.get(), RunName(2), 0);
    ASSERT_TRUE(s.AwaitWelcome());
    const uint64_t next = s.welcome().last_seq() + 1;
    EXPECT_EQ(next - 1, info.ranks(0).last_seq());
    ASSERT_TRUE(s.Send(Batch(next, next, Rows(200, next))));
    ASSERT_TRUE(s.AwaitAck(next));
    s.Close();
  }
}

TEST_F(BackupTest, AServerWithoutAStateFileRefusesWithFailedPrecondition) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TestOptions()));
  const std::string out = TempPath("none.db");
  const BackupOutcome got = Backup(stub_.get(), out);
  EXPECT_EQ(got.rpc.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(got.rpc.error_message(), HasSubstr("--state_file"));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  EXPECT_EQ(Rejects("backup_no_state_file"), 1);
  EXPECT_EQ(Counter(*server_, "spotter_backups_total{result=\"failed\"}"), 0);
}

TEST_F(BackupTest, OnlyAnAdminMayBackUp) {
  constexpr char kTokens[] =
      "ops admin admin-token-0123456789abcdef\n"
      "grafana viewer viewer-token-0123456789abcdef\n"
      "ci trainer trainer-token-0123456789abcdef\n";
  ServerOptions o = StateOptions(TempPath("roles.db"));
  auto tokens = TokenTable::Parse(kTokens);
  ASSERT_TRUE(tokens.ok());
  o.tokens = *tokens;
  ASSERT_NO_FATAL_FAILURE(StartServer(o));
  const std::string out = TempPath("roles-backup.db");
  for (const char* token : {"viewer-token-0123456789abcdef", "trainer-token-0123456789abcdef"}) {
    const BackupOutcome got = Backup(stub_.get(), out, token);
    EXPECT_EQ(got.rpc.error_code(), grpc::StatusCode::PERMISSION_DENIED) << token;
    EXPECT_THAT(got.rpc.error_message(), HasSubstr("needs role admin"));
    EXPECT_FALSE(std::filesystem::exists(out));
  }
  EXPECT_EQ(Backup(stub_.get(), out).rpc.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Rejects("permission_denied"), 2);
  const BackupOutcome got = Backup(stub_.get(), out, "admin-token-0123456789abcdef");
  EXPECT_TRUE(got.ok()) << got.rpc.error_message() << got.local;
  EXPECT_TRUE(std::filesystem::exists(out));
}

TEST_F(BackupTest, OneBackupAtATimeAndACancelledOneLeavesNothing) {
  const std::string state = TempPath("slow.db");
  ServerOptions o = StateOptions(state);
  o.backup.pages_per_step = 1;
  o.backup.step_pause = absl::Milliseconds(100);  // >= 1 s for the ~10 pages of a new file
  ASSERT_NO_FATAL_FAILURE(StartServer(o));
  ASSERT_TRUE(Open("r", SmallConfig()).ok());
  grpc::ClientContext first;
  const std::string out = TempPath("first.db");
  BackupOutcome first_got;
  std::thread t([&] { first_got = ReceiveBackup(*stub_, &first, out); });
  // While the first copies (its copy exists next to the state file), a
  // second is refused.
  EXPECT_TRUE(Eventually([&] { return std::filesystem::exists(state + ".backup.tmp"); }));
  const grpc::Status second = Backup(stub_.get(), TempPath("second.db")).rpc;
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(second.error_message(), HasSubstr("another backup"));
  EXPECT_EQ(Rejects("backup_in_progress"), 1);
  first.TryCancel();
  t.join();
  EXPECT_EQ(first_got.rpc.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  // The server notices between two steps, removes its copy and counts it.
  EXPECT_TRUE(Eventually(
      [&] { return Counter(*server_, "spotter_backups_total{result=\"failed\"}") == 1; }));
  EXPECT_FALSE(std::filesystem::exists(state + ".backup.tmp"));
  // The slot is free again.
  EXPECT_TRUE(Eventually([&] {
    const std::string path = TempPath("third.db");
    return Backup(stub_.get(), path).ok();
  }));
}

// The slot is given back before the client hears the outcome, so a script
// that backs up twice in a row never meets its own first backup.
TEST_F(BackupTest, ASecondBackupRightAfterTheFirstSucceeds) {
  ASSERT_NO_FATAL_FAILURE(StartServer(StateOptions(TempPath("sequential.db"))));
  ASSERT_TRUE(Open("r", SmallConfig()).ok());
  for (int i = 0; i < 40; ++i) {
    const BackupOutcome got = Backup(stub_.get(), TempPath(absl::StrCat("seq-", i, ".db")));
    ASSERT_TRUE(got.ok()) << "backup " << i << ": " << got.rpc.error_message() << got.local;
  }
  EXPECT_EQ(Rejects("backup_in_progress"), 0);
  EXPECT_EQ(Counter(*server_, "spotter_backups_total{result=\"ok\"}"), 40);
}

}  // namespace
}  // namespace spotter
