// Durable state: a restarted server restores every run and continues the
// very same estimate; acknowledgements wait for the commit (and commits are
// grouped); a failing store stops acknowledging and loses nothing that was
// acknowledged; damaged or torn state is reported at startup, never used.
#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "client/cpp/run_session.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "server/storage/records.h"
#include "server/storage/sqlite_store.h"
#include "server/storage/store.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;
using testing::IsOk;

enum class Backend { kMemory, kSqlite };

// A server that can be restarted on the same state.
class Restartable {
 public:
  Restartable(Backend backend, std::string path, Clock* clock)
      : backend_(backend), path_(std::move(path)), clock_(clock) {
    if (backend_ == Backend::kMemory) memory_ = std::make_shared<MemoryStore>();
  }

  ServerOptions Options() const {
    ServerOptions o = TestOptions();
    o.clock = clock_;
    o.checkpoint.every_uploads = 7;  // restarts land between checkpoints
    if (backend_ == Backend::kMemory) {
      o.store = memory_;
    } else {
      o.state_file = path_;
    }
    return o;
  }

  absl::Status Start() {
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(Options());
    if (!s.ok()) return s.status();
    server_ = *std::move(s);
    channel_ = server_->InProcessChannel();
    stub_ = v1::SpotterService::NewStub(channel_);
    return absl::OkStatus();
  }
  void Stop() {
    stub_.reset();
    channel_.reset();
    server_.reset();  // graceful: flushes the committer, closes the store
  }
  absl::Status Restart() {
    Stop();
    return Start();
  }

  Server& server() { return *server_; }
  v1::SpotterService::Stub* stub() { return stub_.get(); }
  MemoryStore* memory() { return memory_.get(); }

 private:
  const Backend backend_;
  const std::string path_;
  Clock* const clock_;
  std::shared_ptr<MemoryStore> memory_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SpotterService::Stub> stub_;
};

grpc::Status Open(v1::SpotterService::Stub* stub, const std::string& name, const v1::RunConfig& c,
                  v1::OpenRunResponse* resp = nullptr) {
  grpc::ClientContext ctx;
  v1::OpenRunRequest req;
  req.set_name(name);
  *req.mutable_config() = c;
  v1::OpenRunResponse local;
  return stub->OpenRun(&ctx, req, resp ? resp : &local);
}

v1::RunInfo GetRun(v1::SpotterService::Stub* stub, const std::string& name) {
  grpc::ClientContext ctx;
  v1::GetRunRequest req;
  req.set_name(name);
  v1::GetRunResponse resp;
  grpc::Status s = stub->GetRun(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.run();
}

v1::GetTrajectoryResponse Trajectory(v1::SpotterService::Stub* stub, const std::string& name) {
  grpc::ClientContext ctx;
  v1::GetTrajectoryRequest req;
  req.set_name(name);
  v1::GetTrajectoryResponse resp;
  EXPECT_TRUE(stub->GetTrajectory(&ctx, req, &resp).ok());
  return resp;
}

v1::OverridePhaseResponse Force(v1::SpotterService::Stub* stub, const std::string& name,
                                v1::Phase phase) {
  grpc::ClientContext ctx;
  v1::OverridePhaseRequest req;
  req.set_name(name);
  req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
  req.set_phase(phase);
  v1::OverridePhaseResponse resp;
  grpc::Status s = stub->OverridePhase(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

// Everything a client can read back about the run's estimate, without
// wall-clock fields.
std::string Fingerprint(v1::SpotterService::Stub* stub, const std::string& name) {
  const v1::GetTrajectoryResponse t = WithoutTimes(Trajectory(stub, name));
  v1::RunInfo info = GetRun(stub, name);
  v1::TrajectoryPoint latest = info.latest();
  latest.clear_time();
  std::string out = t.DebugString() + latest.DebugString();
  for (const v1::RankStatus& r : info.ranks()) {
    out += absl::StrCat("rank ", r.rank(), " seq ", r.last_seq(), " step ", r.last_step(),
                        " uploads ", r.uploads(), " rows ", r.rows(), "\n");
  }
  return out;
}

class StorageTest : public ::testing::TestWithParam<Backend> {
 protected:
  FakeClock clock_;
};

// One rank uploads steps [from, to) one at a time, each acknowledged and its
// evaluation drained, so that the evaluations (and so the trajectory and the
// directives) do not depend on timing.
void Feed(Restartable& r, const std::string& run, uint64_t from, uint64_t to, uint64_t* seq) {
  RawStream s(r.stub(), run, 0);
  ASSERT_TRUE(s.AwaitWelcome());
  EXPECT_EQ(s.welcome().last_seq(), *seq) << "the server lost or invented uploads";
  for (uint64_t step = from; step < to; ++step) {
    ASSERT_TRUE(s.Send(Batch(++*seq, step, Rows(7, step), 2.0 / (1.0 + step))));
    ASSERT_TRUE(s.AwaitAck(*seq));
    r.server().DrainEvaluations();
    r.server().FlushState();
  }
  EXPECT_TRUE(s.Close().ok());
}

TEST_P(StorageTest, RestartContinuesTheSameEstimateAndDirectives) {
  const std::string path = TempPath("state.db");
  Restartable a(GetParam(), path, &clock_);
  Restartable b(Backend::kMemory, "", &clock_);
  ASSERT_THAT(a.Start(), IsOk());
  ASSERT_THAT(b.Start(), IsOk());
  const v1::RunConfig config = SmallConfig(1, 300);
  ASSERT_TRUE(Open(a.stub(), "job", config).ok());
  ASSERT_TRUE(Open(b.stub(), "job", config).ok());

  // Server a restarts three times (between checkpoints, after an override);
  // server b never does. Both see the same inputs in the same order.
  uint64_t seq_a = 0, seq_b = 0;
  const std::vector<uint64_t> cuts = {0, 23, 41, 58, 90};
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    Feed(a, "job", cuts[i], cuts[i + 1], &seq_a);
    Feed(b, "job", cuts[i], cuts[i + 1], &seq_b);
    if (i == 1) {
      EXPECT_EQ(Force(a.stub(), "job", v1::PHASE_REFINEMENT).directive().version(),
                Force(b.stub(), "job", v1::PHASE_REFINEMENT).directive().version());
    }
    ASSERT_THAT(a.Restart(), IsOk());
  }
  ASSERT_TRUE(!Trajectory(a.stub(), "job").points().empty());
  EXPECT_EQ(Fingerprint(a.stub(), "job"), Fingerprint(b.stub(), "job"));

  // Directive versions keep increasing across the restarts.
  const uint64_t last = GetRun(a.stub(), "job").directive().version();
  EXPECT_GE(last, 2u);
  EXPECT_EQ(Force(a.stub(), "job", v1::PHASE_POLISH).directive().version(), last + 1);
  ASSERT_THAT(a.Restart(), IsOk());
  EXPECT_EQ(GetRun(a.stub(), "job").directive().version(), last + 1);
  EXPECT_EQ(Force(a.stub(), "job", v1::PHASE_REFINEMENT).directive().version(), last + 2);
}

TEST_P(StorageTest, RestartRestoresEveryRunItsHistoryAndItsState) {
  Restartable a(GetParam(), TempPath("state.db"), &clock_);
  ASSERT_THAT(a.Start(), IsOk());
  v1::RunConfig labelled = SmallConfig(2);
  (*labelled.mutable_labels())["team"] = "vision";
  ASSERT_TRUE(Open(a.stub(), "first", labelled).ok());
  ASSERT_TRUE(Open(a.stub(), "second", SmallConfig(1)).ok());
  uint64_t seq = 0;
  Feed(a, "second", 0, 12, &seq);
  {
    grpc::ClientContext ctx;
    v1::FinishRunRequest req;
    req.set_name("second");
    req.set_reason("done");
    v1::FinishRunResponse resp;
    ASSERT_TRUE(a.stub()->FinishRun(&ctx, req, &resp).ok());
  }
  const v1::RunInfo first = GetRun(a.stub(), "first");
  const std::string second = Fingerprint(a.stub(), "second");
  ASSERT_THAT(a.Restart(), IsOk());

  EXPECT_EQ(GetRun(a.stub(), "first").config().DebugString(), first.config().DebugString());
  EXPECT_EQ(Fingerprint(a.stub(), "second"), second);
  const v1::RunInfo finished = GetRun(a.stub(), "second");
  EXPECT_EQ(finished.state(), v1::RUN_STATE_FINISHED);
  EXPECT_TRUE(finished.directive().stop());
  {
    grpc::ClientContext ctx;
    v1::ListRunsRequest req;
    v1::ListRunsResponse resp;
    ASSERT_TRUE(a.stub()->ListRuns(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.runs_size(), 2);
    EXPECT_EQ(resp.runs(0).name(), "second");  // newest first, as before
    EXPECT_EQ(resp.runs(1).labels().at("team"), "vision");
  }
  // Reopening with the same config joins; a different one is refused.
  v1::OpenRunResponse opened;
  ASSERT_TRUE(Open(a.stub(), "first", labelled, &opened).ok());
  EXPECT_FALSE(opened.created());
  v1::RunConfig other = labelled;
  other.set_sketch_rows(4);
  EXPECT_EQ(Open(a.stub(), "first", other).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // A rank joining the finished run gets the stop directive and the end.
  RawStream late(a.stub(), "second", 0);
  std::vector<v1::Directive> directives;
  v1::ConnectResponse r;
  while (late.Read(&r)) {
    if (r.has_directive()) directives.push_back(r.directive());
  }
  ASSERT_FALSE(directives.empty());
  EXPECT_TRUE(directives.back().stop());
  // Deleted runs stay deleted; the name can be reused from scratch.
  {
    grpc::ClientContext ctx;
    v1::DeleteRunRequest req;
    req.set_name("second");
    v1::DeleteRunResponse resp;
    ASSERT_TRUE(a.stub()->DeleteRun(&ctx, req, &resp).ok());
  }
  ASSERT_THAT(a.Restart(), IsOk());
  grpc::ClientContext ctx;
  v1::GetRunRequest req;
  req.set_name("second");
  v1::GetRunResponse resp;
  EXPECT_EQ(a.stub()->GetRun(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Open(a.stub(), "second", SmallConfig(1)).ok());
  EXPECT_EQ(GetRun(a.stub(), "second").points(), 0u);
  EXPECT_EQ(GetRun(a.stub(), "second").directive().version(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Store, StorageTest, ::testing::Values(Backend::kMemory, Backend::kSqlite),
                         [](const auto& info) {
                           return info.param == Backend::kMemory ? "Memory" : "Sqlite";
                         });

// A server on a FaultInjectingStore over a MemoryStore.
class FaultTest : public ServerFixture {
 protected:
  void SetUp() override {
    memory_ = std::make_shared<MemoryStore>();
    faulty_ = std::make_shared<FaultInjectingStore>(memory_);
    Start(faulty_);
  }
  void TearDown() override {
    faulty_->Stall(false);
    ServerFixture::TearDown();
  }
  void Start(std::shared_ptr<Store> store) {
    ServerOptions o = TestOptions();
    o.store = std::move(store);
    StartServer(o);
  }
  uint64_t DurableSeq(const std::string& run) {
    const v1::RunInfo info = GetRun(stub_.get(), run);
    return info.ranks_size() ? info.ranks(0).last_seq() : 0;
  }
  uint64_t AppliedUploads(const std::string& run) {
    const v1::RunInfo info = GetRun(stub_.get(), run);
    return info.ranks_size() ? info.ranks(0).uploads() : 0;
  }

  std::shared_ptr<MemoryStore> memory_;
  std::shared_ptr<FaultInjectingStore> faulty_;
};

TEST_F(FaultTest, AcksWaitForTheCommitAndCommitsAreGrouped) {
  // No evaluation in 50 steps: its commit would be a third group whenever it
  // finishes after the second one started (as under a sanitizer).
  v1::RunConfig config = SmallConfig(1);
  config.set_eval_every(1000);
  ASSERT_TRUE(Open("g", config).ok());
  RawStream s(stub_.get(), "g", 0);
  ASSERT_TRUE(s.AwaitWelcome());
  faulty_->Stall(true);
  const int before = faulty_->commits();
  constexpr uint64_t kUploads = 50;
  for (uint64_t seq = 1; seq <= kUploads; ++seq) {
    ASSERT_TRUE(s.Send(Batch(seq, seq, Rows(1, seq))));
  }
  // Applied in memory, none durable: the commit is blocked, so no ack can
  // have been sent (acks are sent by the commit's callbacks).
  ASSERT_TRUE(Eventually([&] { return AppliedUploads("g") == kUploads; }));
  ASSERT_TRUE(faulty_->blocked());
  EXPECT_EQ(DurableSeq("g"), 0u);
  faulty_->Stall(false);
  ASSERT_TRUE(s.AwaitAck(kUploads));
  EXPECT_EQ(DurableSeq("g"), kUploads);
  // The blocked commit, then one group with everything queued behind it.
  EXPECT_LE(faulty_->commits() - before, 2);
  EXPECT_TRUE(s.Close().ok());
}

TEST_F(FaultTest, AFailedCommitStopsAcksAndARestartLosesNothingAcknowledged) {
  ASSERT_TRUE(Open("f", SmallConfig(1)).ok());
  RawStream s(stub_.get(), "f", 0);
  ASSERT_TRUE(s.AwaitWelcome());
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    ASSERT_TRUE(s.Send(Batch(seq, seq, Rows(2, seq))));
    ASSERT_TRUE(s.AwaitAck(seq));
  }
  faulty_->FailAfter(0, absl::UnavailableError("injected: disk I/O error"));
  ASSERT_TRUE(s.Send(Batch(11, 11, Rows(2, 11))));
  std::vector<v1::Reject> rejects;
  EXPECT_FALSE(s.AwaitAck(11, &rejects)) << "acknowledged an upload that is not durable";
  const grpc::Status st = s.Drain();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(st.error_message(), HasSubstr("injected: disk I/O error"));
  EXPECT_EQ(Counter(*server_, RejectSeries("store_failed")), 1);
  // Health says so; state-changing calls fail clearly.
  {
    auto health = grpc::health::v1::Health::NewStub(server_->InProcessChannel());
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  const grpc::Status open = Open("g", SmallConfig(1));
  EXPECT_EQ(open.error_code(), grpc::StatusCode::UNAVAILABLE);

  // Restart on what the disk holds: 10 uploads; the client replays 11..20.
  StopServer();
  Start(memory_);
  RawStream again(stub_.get(), "f", 0);
  ASSERT_TRUE(again.AwaitWelcome());
  EXPECT_EQ(again.welcome().last_seq(), 10u);
  for (uint64_t seq = 11; seq <= 20; ++seq) {
    ASSERT_TRUE(again.Send(Batch(seq, seq, Rows(2, seq))));
  }
  ASSERT_TRUE(again.AwaitAck(20));
  EXPECT_EQ(AppliedUploads("f"), 20u);
  EXPECT_EQ(DurableSeq("f"), 20u);
  EXPECT_TRUE(again.Close().ok());
}

TEST_F(FaultTest, AReconnectingClientIsNeverToldAnUnsavedUploadIsSaved) {
  ASSERT_TRUE(Open("w", SmallConfig(1)).ok());
  {
    RawStream s(stub_.get(), "w", 0);
    ASSERT_TRUE(s.AwaitWelcome());
    ASSERT_TRUE(s.Send(Batch(1, 1, Rows(3, 1))));
    ASSERT_TRUE(s.AwaitAck(1));
    faulty_->Stall(true);
    ASSERT_TRUE(s.Send(Batch(2, 2, Rows(3, 2))));
    ASSERT_TRUE(Eventually([&] { return AppliedUploads("w") == 2; }));
    s.context()->TryCancel();
    s.Drain();
  }
  // Applied in memory but not durable: the Welcome says 1, so the client
  // replays 2; the server drops the replay as a duplicate once 2 is durable.
  RawStream again(stub_.get(), "w", 0);
  ASSERT_TRUE(again.AwaitWelcome());
  EXPECT_EQ(again.welcome().last_seq(), 1u);
  ASSERT_TRUE(again.Send(Batch(2, 2, Rows(3, 2))));
  faulty_->Stall(false);
  ASSERT_TRUE(again.AwaitAck(2));
  EXPECT_EQ(AppliedUploads("w"), 2u);
  EXPECT_EQ(Counter(*server_, "spotter_duplicate_uploads_total"), 1);
  EXPECT_TRUE(again.Close().ok());
}

// Writes a little state with a checkpoint into `store` through a server.
void MakeState(std::shared_ptr<Store> store, const std::string& path = "") {
  ServerOptions o = TestOptions();
  o.store = store;
  o.state_file = path;
  o.checkpoint.every_uploads = 3;
  auto server = Server::BuildAndStart(o);
  ASSERT_THAT(server, IsOk());
  auto stub = v1::SpotterService::NewStub((*server)->InProcessChannel());
  ASSERT_TRUE(Open(stub.get(), "c", SmallConfig(1)).ok());
  RawStream s(stub.get(), "c", 0);
  ASSERT_TRUE(s.AwaitWelcome());
  for (uint64_t seq = 1; seq <= 12; ++seq) {
    ASSERT_TRUE(s.Send(Batch(seq, seq, Rows(4, seq))));
  }
  ASSERT_TRUE(s.AwaitAck(12));
  (*server)->DrainEvaluations();
  Force(stub.get(), "c", v1::PHASE_POLISH);
  EXPECT_TRUE(s.Close().ok());
}

absl::Status StartOn(std::shared_ptr<Store> store, const std::string& path = "") {
  ServerOptions o = TestOptions();
  o.store = std::move(store);
  o.state_file = path;
  return Server::BuildAndStart(o).status();
}

TEST(CorruptionTest, AFlippedByteInACheckpointIsReportedAtStartup) {
  auto memory = std::make_shared<MemoryStore>();
  MakeState(memory);
  ASSERT_THAT(StartOn(memory), IsOk());
  std::string* ckpt = memory->MutableValueForTest(Table::kCheckpoints, "c", 0, 0);
  ASSERT_NE(ckpt, nullptr);
  (*ckpt)[ckpt->size() / 2] ^= 0x10;
  const absl::Status s = StartOn(memory);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("table checkpoints, run 'c', key (0, 0)"));
  EXPECT_THAT(s.message(), HasSubstr("checksum mismatch"));
}

TEST(CorruptionTest, TornStateIsReportedAtStartup) {
  auto memory = std::make_shared<MemoryStore>();
  MakeState(memory);
  // A directive row gone (as if a commit were torn): the counts disagree.
  ASSERT_THAT(memory->Apply({StoreOp::DeleteUpTo(Table::kDirectives, "c", 0, 1)}), IsOk());
  absl::Status s = StartOn(memory);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("state inconsistent: run 'c'"));
  EXPECT_THAT(s.message(), HasSubstr("directives"));

  // A run's rows without its record.
  auto orphan = std::make_shared<MemoryStore>();
  MakeState(orphan);
  ASSERT_THAT(orphan->Apply({StoreOp::DeleteUpTo(Table::kRuns, "c", 0, 0)}), IsOk());
  s = StartOn(orphan);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("without the run's record"));

  // A valid frame around a checkpoint that does not decode.
  auto bad = std::make_shared<MemoryStore>();
  MakeState(bad);
  state::CheckpointRecord ckpt;
  ckpt.set_seq(3);
  ckpt.set_accumulator("not a sketch");
  ASSERT_THAT(bad->Apply({PutCheckpointRecord("c", 0, ckpt)}), IsOk());
  s = StartOn(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("rank 0: checkpoint (after seq 3)"));
}

TEST(UpgradeTest, StateWrittenBeforeHysteresisWasConfigurableRestoresWithTheDefault) {
  auto memory = std::make_shared<MemoryStore>();
  MakeState(memory);
  // Rewrite the run's record as a server without PhaseConfig.hysteresis
  // wrote it.
  absl::StatusOr<std::vector<LoadedRun>> loaded = LoadState(*memory);
  ASSERT_THAT(loaded, IsOk());
  ASSERT_EQ(loaded->size(), 1u);
  state::RunRecord old = (*loaded)[0].run;
  ASSERT_EQ(old.config().phase().hysteresis(), 1.5);
  old.mutable_config()->mutable_phase()->clear_hysteresis();
  ASSERT_THAT(memory->Apply({PutRunRecord(old)}), IsOk());

  ServerOptions o = TestOptions();
  o.store = memory;
  auto server = Server::BuildAndStart(o);
  ASSERT_THAT(server, IsOk());
  auto stub = v1::SpotterService::NewStub((*server)->InProcessChannel());
  EXPECT_EQ(GetRun(stub.get(), "c").config().phase().hysteresis(), 1.5);
  // The same client config as before joins the run (no config mismatch).
  EXPECT_TRUE(Open(stub.get(), "c", SmallConfig(1)).ok());
}

TEST(SqliteTest, StateSurvivesAndTheFileIsExclusive) {
  const std::string path = TempPath("state.db");
  MakeState(nullptr, path);
  auto first = SqliteStore::Open(path, {});
  ASSERT_THAT(first, IsOk());
  auto second = SqliteStore::Open(path, {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("another process"));
  first->reset();
  EXPECT_THAT(StartOn(nullptr, path), IsOk());
}

TEST(SqliteTest, ATruncatedFileIsReportedAtStartup) {
  const std::string path = TempPath("state.db");
  MakeState(nullptr, path);
  const auto size = std::filesystem::file_size(path);
  ASSERT_GT(size, 4096u);
  ASSERT_FALSE(std::filesystem::exists(path + "-wal") &&
               std::filesystem::file_size(path + "-wal") > 0)
      << "a clean shutdown checkpoints the WAL into the file";
  std::filesystem::resize_file(path, size / 2 + 100);
  const absl::Status s = StartOn(nullptr, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(path));
}

TEST(SqliteTest, AFlippedByteInABlobIsReportedAtStartup) {
  const std::string path = TempPath("state.db");
  MakeState(nullptr, path);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT v FROM directives WHERE run = 'c' AND k2 = 2", -1, &st,
                               nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  std::string v(static_cast<const char*>(sqlite3_column_blob(st, 0)), sqlite3_column_bytes(st, 0));
  sqlite3_finalize(st);
  v[v.size() / 3] ^= 0x01;
  ASSERT_EQ(sqlite3_prepare_v2(db, "UPDATE directives SET v = ?1 WHERE run = 'c' AND k2 = 2", -1,
                               &st, nullptr),
            SQLITE_OK);
  sqlite3_bind_blob(st, 1, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(db);
  const absl::Status s = StartOn(nullptr, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("table directives, run 'c', key (0, 2): checksum mismatch"));
}

TEST(SqliteTest, OtherFilesAreRefused) {
  const std::string garbage = TempPath("garbage.db");
  {
    std::ofstream f(garbage, std::ios::binary);
    for (int i = 0; i < 10000; ++i) f.put(static_cast<char>((i * 131) & 0xff));
  }
  absl::Status s = StartOn(nullptr, garbage);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(garbage));

  const std::string foreign = TempPath("foreign.db");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(foreign.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE users(name TEXT)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  s = StartOn(nullptr, foreign);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("not a spotterd state file"));
}

}  // namespace
}  // namespace spotter
