// Moving a run between replicas (docs/SCALING.md "Moving runs"): ExportRun
// freezes the run on its replica and returns its stored rows once everything
// acknowledged is durable; ImportRun restores them on another replica. The
// moved run has the same history, directives, ranks' seqs and sketches (it
// continues exactly like a run that never moved), the source keeps a
// tombstone that answers UNAVAILABLE (also after a restart) until deleted,
// and bad imports are refused with what was wrong.
#include <memory>
#include <string>
#include <vector>

#include "client/cpp/channel.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "tests/integration/reliability_harness.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' helpers
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// Exact equality, but a NaN (an estimate not computed yet) equals a NaN.
bool Same(const google::protobuf::Message& a, const google::protobuf::Message& b,
          std::string* why = nullptr) {
  google::protobuf::util::DefaultFieldComparator nan_equal;
  nan_equal.set_treat_nan_as_equal(true);
  MessageDifferencer diff;
  diff.set_field_comparator(&nan_equal);
  if (why != nullptr) diff.ReportDifferencesToString(why);
  return diff.Compare(a, b);
}

// One replica: a server on loopback TCP with its own state file.
struct Replica {
  std::unique_ptr<Server> server;
  std::unique_ptr<v1::SpotterService::Stub> stub;
  std::string state_file;
  std::string id;
  int64_t max_message_bytes = 0;  // 0: TestOptions'
  int64_t max_import_bytes = 0;   // 0: TestOptions'

  void Start() {
    ServerOptions o = TestOptions();
    o.state_file = state_file;
    o.replica_id = id;
    o.require_run_header = true;
    if (max_message_bytes > 0) o.limits.max_message_bytes = max_message_bytes;
    if (max_import_bytes > 0) o.limits.max_import_bytes = max_import_bytes;
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(o);
    ASSERT_THAT(s, testing::IsOk());
    server = *std::move(s);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(1 << 30);
    stub = v1::SpotterService::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", server->port()), grpc::InsecureChannelCredentials(), args));
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", server->port()); }
};

class MoveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_.state_file = TempPath("a.db");
    a_.id = "replica-a";
    b_.state_file = TempPath("b.db");
    b_.id = "replica-b";
    ref_.state_file = TempPath("ref.db");
    ref_.id = "reference";
    ASSERT_NO_FATAL_FAILURE(a_.Start());
    ASSERT_NO_FATAL_FAILURE(b_.Start());
    ASSERT_NO_FATAL_FAILURE(ref_.Start());
  }
  void TearDown() override {
    for (Replica* r : {&a_, &b_, &ref_}) {
      r->stub.reset();
      r->server.reset();
    }
  }

  static grpc::Status Open(Replica& r, const std::string& run) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    v1::OpenRunRequest req;
    req.set_name(run);
    *req.mutable_config() = SmallConfig(2);
    v1::OpenRunResponse resp;
    return r.stub->OpenRun(&ctx, req, &resp);
  }
  // The whole export in `resp` (the rows of every message, in order);
  // `messages` (if set) counts the messages they came in.
  static grpc::Status Export(Replica& r, const std::string& run, const std::string& to,
                             v1::ExportRunResponse* resp, int* messages = nullptr) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    v1::ExportRunRequest req;
    req.set_name(run);
    req.set_moved_to(to);
    resp->Clear();
    auto reader = r.stub->ExportRun(&ctx, req);
    v1::ExportRunResponse part;
    int n = 0;
    while (reader->Read(&part)) {
      ++n;
      for (v1::RunRow& row : *part.mutable_rows()) *resp->add_rows() = std::move(row);
    }
    if (messages != nullptr) *messages = n;
    return reader->Finish();
  }
  // Sends `rows` in messages of `per_message` rows (all in one when 0), the
  // first naming `run`, and marks the last one unless `mark_last` is false.
  static grpc::Status Import(Replica& r, const std::string& run,
                             const google::protobuf::RepeatedPtrField<v1::RunRow>& rows,
                             v1::ImportRunResponse* resp = nullptr, int per_message = 0,
                             bool mark_last = true) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    v1::ImportRunResponse local;
    auto writer = r.stub->ImportRun(&ctx, resp ? resp : &local);
    v1::ImportRunRequest req;
    req.set_name(run);
    for (int i = 0; i < rows.size(); ++i) {
      *req.add_rows() = rows[i];
      if (per_message > 0 && req.rows_size() == per_message && i + 1 < rows.size()) {
        if (!writer->Write(req)) break;
        req.Clear();
      }
    }
    req.set_last(mark_last);
    writer->Write(req);
    writer->WritesDone();
    return writer->Finish();
  }
  static v1::RunInfo Info(Replica& r, const std::string& run) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    v1::GetRunRequest req;
    req.set_name(run);
    v1::GetRunResponse resp;
    EXPECT_TRUE(r.stub->GetRun(&ctx, req, &resp).ok());
    return resp.run();
  }
  static v1::GetTrajectoryResponse History(Replica& r, const std::string& run) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    v1::GetTrajectoryRequest req;
    req.set_name(run);
    v1::GetTrajectoryResponse resp;
    EXPECT_TRUE(r.stub->GetTrajectory(&ctx, req, &resp).ok());
    return WithoutTimes(resp);
  }

  // Two ranks streaming to one replica, one step at a time: every upload is
  // acknowledged before the next, and at each evaluation boundary the point
  // is awaited, so two replicas fed the same steps compute the same points.
  struct Job {
    std::unique_ptr<grpc::ClientContext> ctx[2];
    std::unique_ptr<grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>> s[2];
    uint64_t seq[2] = {0, 0};
  };
  static void Join(Replica& r, const std::string& run, Job* job,
                   uint64_t last_directive_version = 0) {
    for (uint32_t rank = 0; rank < 2; ++rank) {
      job->ctx[rank] = std::make_unique<grpc::ClientContext>();
      AddRunHeader(job->ctx[rank].get(), run);
      job->s[rank] = r.stub->Connect(job->ctx[rank].get());
      v1::ConnectRequest hello = RawStream::Hello(run, rank);
      hello.mutable_hello()->set_incarnation(7 + rank);
      hello.mutable_hello()->set_last_directive_version(last_directive_version);
      ASSERT_TRUE(job->s[rank]->Write(hello));
      v1::ConnectResponse resp;
      bool welcomed = false;
      while (!welcomed && job->s[rank]->Read(&resp)) welcomed = resp.has_welcome();
      ASSERT_TRUE(welcomed) << "rank " << rank << " got no Welcome";
      job->seq[rank] = resp.welcome().last_seq();
    }
  }
  static void Steps(Replica& r, const std::string& run, Job* job, uint64_t from, uint64_t to) {
    // Rank 1 reports one step behind rank 0 and uploads first, so the upload
    // that reaches an evaluation step is always rank 0's, with rank 1's of
    // that round already applied: what every evaluation sees is fixed, not a
    // race between the ranks (which made a moved run's points differ from a
    // never-moved one's about one time in five).
    for (uint64_t step = from; step <= to; ++step) {
      for (uint32_t rank : {1u, 0u}) {
        const uint64_t seq = ++job->seq[rank];
        const uint64_t at = rank == 1 ? step - 1 : step;
        ASSERT_TRUE(job->s[rank]->Write(Batch(seq, at, Rows(rank, at), 1.0 / step)));
        v1::ConnectResponse resp;
        bool acked = false;
        while (!acked && job->s[rank]->Read(&resp))
          acked = resp.has_ack() && resp.ack().seq() >= seq;
        ASSERT_TRUE(acked) << "seq " << seq << " of rank " << rank << " not acknowledged";
      }
      if (step % SmallConfig().eval_every() == 0) {
        ASSERT_TRUE(Eventually([&] {
          const v1::RunInfo info = Info(r, run);
          return info.latest().step() == step;
        })) << "no point at step "
            << step;
      }
    }
  }
  static void Leave(Job* job) {
    for (uint32_t rank = 0; rank < 2; ++rank) {
      if (!job->s[rank]) continue;
      job->s[rank]->WritesDone();
      v1::ConnectResponse resp;
      while (job->s[rank]->Read(&resp)) {
      }
      job->s[rank]->Finish();
      job->s[rank].reset();
    }
  }

  Replica a_, b_, ref_;
};

TEST_F(MoveTest, TheMovedRunContinuesExactlyLikeARunThatNeverMoved) {
  const std::string run = "moving";
  ASSERT_TRUE(Open(a_, run).ok());
  ASSERT_TRUE(Open(ref_, run).ok());
  Job on_a, on_ref;
  ASSERT_NO_FATAL_FAILURE(Join(a_, run, &on_a));
  ASSERT_NO_FATAL_FAILURE(Join(ref_, run, &on_ref));
  ASSERT_NO_FATAL_FAILURE(Steps(a_, run, &on_a, 1, 30));
  ASSERT_NO_FATAL_FAILURE(Steps(ref_, run, &on_ref, 1, 30));
  // An operator's directive is part of the history that moves.
  for (Replica* r : {&a_, &ref_}) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    v1::OverridePhaseRequest req;
    req.set_name(run);
    req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
    req.set_phase(v1::PHASE_REFINEMENT);
    // Far enough ahead for any upload cadence (the earliest allowed step
    // depends on it), the same on both replicas.
    req.set_effective_step(500);
    req.set_reason("test");
    v1::OverridePhaseResponse resp;
    const grpc::Status s = r->stub->OverridePhase(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  const v1::GetTrajectoryResponse before = History(a_, run);
  ASSERT_GE(before.points_size(), 6);
  ASSERT_GE(before.directives_size(), 2);

  // The streams open on A at the export end with UNAVAILABLE naming B.
  v1::ExportRunResponse exported;
  ASSERT_TRUE(Export(a_, run, b_.address(), &exported).ok());
  for (uint32_t rank = 0; rank < 2; ++rank) {
    v1::ConnectResponse resp;
    while (on_a.s[rank]->Read(&resp)) {
    }
    const grpc::Status end = on_a.s[rank]->Finish();
    EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(end.error_message(), HasSubstr(b_.address()));
  }
  v1::ImportRunResponse imported;
  ASSERT_TRUE(Import(b_, run, exported.rows(), &imported).ok());
  EXPECT_TRUE(imported.run().moved_to().empty());

  // Same history, directives and seqs on B as on A.
  EXPECT_TRUE(Same(History(b_, run), before));
  const v1::RunInfo info_a = Info(a_, run), info_b = Info(b_, run);
  EXPECT_EQ(info_a.moved_to(), b_.address());
  ASSERT_EQ(info_b.ranks_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(info_b.ranks(i).last_seq(), 30u);
    EXPECT_EQ(info_b.ranks(i).last_seq(), info_a.ranks(i).last_seq());
  }
  // The trainers reconnect to B: their Welcome carries the seqs B holds, and
  // the next steps give the points of a run that never moved: the sketches
  // moved too.
  Job on_b;
  ASSERT_NO_FATAL_FAILURE(
      Join(b_, run, &on_b, before.directives(before.directives_size() - 1).version()));
  EXPECT_EQ(on_b.seq[0], 30u);
  EXPECT_EQ(on_b.seq[1], 30u);
  ASSERT_NO_FATAL_FAILURE(Steps(b_, run, &on_b, 31, 60));
  ASSERT_NO_FATAL_FAILURE(Steps(ref_, run, &on_ref, 31, 60));
  const v1::GetTrajectoryResponse moved = History(b_, run), never = History(ref_, run);
  ASSERT_EQ(moved.points_size(), never.points_size());
  for (int i = 0; i < moved.points_size(); ++i) {
    std::string why;
    EXPECT_TRUE(Same(moved.points(i), never.points(i), &why))
        << "point " << i << " (step " << moved.points(i).step() << ") differs: " << why;
  }
  EXPECT_TRUE(Same(moved, never));
  Leave(&on_b);
  Leave(&on_ref);
}

TEST_F(MoveTest, TheTombstoneAnswersUnavailableAcrossARestartUntilDeleted) {
  const std::string run = "gone";
  ASSERT_TRUE(Open(a_, run).ok());
  Job job;
  ASSERT_NO_FATAL_FAILURE(Join(a_, run, &job));
  ASSERT_NO_FATAL_FAILURE(Steps(a_, run, &job, 1, 5));
  Leave(&job);
  v1::ExportRunResponse exported;
  ASSERT_TRUE(Export(a_, run, "replica-b:50051", &exported).ok());
  // Exporting again returns the same rows (a move retried after a failed
  // import).
  v1::ExportRunResponse again;
  ASSERT_TRUE(Export(a_, run, "replica-b:50051", &again).ok());
  EXPECT_TRUE(Same(exported, again));

  for (int restart = 0; restart < 2; ++restart) {
    const grpc::Status open = Open(a_, run);
    EXPECT_EQ(open.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(open.error_message(), HasSubstr("moved to replica replica-b:50051"));
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, run);
    auto stream = a_.stub->Connect(&ctx);
    ASSERT_TRUE(stream->Write(RawStream::Hello(run, 0)));
    v1::ConnectResponse resp;
    while (stream->Read(&resp)) EXPECT_FALSE(resp.has_welcome());
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(Counter(*a_.server, RejectSeries("run_moving")), 2);
    // Reads still work; the tombstone says where the run went.
    EXPECT_EQ(Info(a_, run).moved_to(), "replica-b:50051");
    // A restart keeps the tombstone (it is stored), so no second owner
    // appears when trainers come back before the gateway changed.
    a_.stub.reset();
    a_.server.reset();
    ASSERT_NO_FATAL_FAILURE(a_.Start());
  }
  // A retried move that goes elsewhere rewrites the tombstone's target,
  // durably; the rows are the same.
  v1::ExportRunResponse elsewhere;
  ASSERT_TRUE(Export(a_, run, "replica-c:50051", &elsewhere).ok());
  ASSERT_EQ(elsewhere.rows_size(), exported.rows_size());
  a_.stub.reset();
  a_.server.reset();
  ASSERT_NO_FATAL_FAILURE(a_.Start());
  EXPECT_EQ(Info(a_, run).moved_to(), "replica-c:50051");
  EXPECT_THAT(Open(a_, run).error_message(), HasSubstr("moved to replica replica-c:50051"));

  grpc::ClientContext ctx;
  AddRunHeader(&ctx, run);
  v1::DeleteRunRequest del;
  del.set_name(run);
  v1::DeleteRunResponse deleted;
  ASSERT_TRUE(a_.stub->DeleteRun(&ctx, del, &deleted).ok());
  EXPECT_TRUE(Open(a_, run).ok()) << "after the deletion the name is free again";
}

TEST_F(MoveTest, BadExportsAndImportsAreRefusedWithWhatWasWrong) {
  ASSERT_TRUE(Open(a_, "src").ok());
  ASSERT_TRUE(Open(a_, "other").ok());
  ASSERT_TRUE(Open(b_, "src").ok());
  v1::ExportRunResponse exported, other;
  grpc::Status s = Export(a_, "src", "", &exported);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("moved_to is empty"));
  s = Export(a_, "nope", "x:1", &exported);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Export(a_, "src", b_.address(), &exported).ok());
  ASSERT_TRUE(Export(a_, "other", b_.address(), &other).ok());
  ASSERT_GE(exported.rows_size(), 3);

  // B holds a run of that name already.
  s = Import(b_, "src", exported.rows());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(s.error_message(), HasSubstr("already exists on this replica"));
  // Rows of another run (their checksums cover the run's name).
  s = Import(b_, "fresh", other.rows());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("do not form a run"));
  // A damaged row.
  google::protobuf::RepeatedPtrField<v1::RunRow> damaged = exported.rows();
  damaged[0].mutable_value()->back() ^= 0x40;
  s = Import(ref_, "src", damaged);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A row of an unknown table.
  google::protobuf::RepeatedPtrField<v1::RunRow> unknown = exported.rows();
  unknown[0].set_table(9);
  s = Import(ref_, "src", unknown);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("expected 1 (runs) to 8 (directives)"));
  // Rows missing: no run record.
  google::protobuf::RepeatedPtrField<v1::RunRow> partial;
  for (const v1::RunRow& r : exported.rows()) {
    if (r.table() != 1) *partial.Add() = r;
  }
  s = Import(ref_, "src", partial);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_GE(Counter(*ref_.server, RejectSeries("import_bad_rows")), 3);
  // None of those left anything behind: the whole run imports.
  EXPECT_TRUE(Import(ref_, "src", exported.rows()).ok());
}

TEST_F(MoveTest, ARunLargerThanOneMessageMovesInParts) {
  // Replicas that accept 64 KiB messages at most: the run's rows take more
  // than that, so one message could not carry them.
  for (Replica* r : {&a_, &b_}) {
    r->stub.reset();
    r->server.reset();
    r->max_message_bytes = 64 << 10;
    ASSERT_NO_FATAL_FAILURE(r->Start());
  }
  const std::string run = "big";
  ASSERT_TRUE(Open(a_, run).ok());
  Job job;
  ASSERT_NO_FATAL_FAILURE(Join(a_, run, &job));
  ASSERT_NO_FATAL_FAILURE(Steps(a_, run, &job, 1, 60));
  Leave(&job);
  const v1::GetTrajectoryResponse before = History(a_, run);
  v1::ExportRunResponse exported;
  int messages = 0;
  ASSERT_TRUE(Export(a_, run, b_.address(), &exported, &messages).ok());
  EXPECT_GT(static_cast<int64_t>(exported.ByteSizeLong()), a_.max_message_bytes);
  EXPECT_GT(messages, 2);
  // Re-sent in parts of 7 rows: how the client parts them is its business.
  v1::ImportRunResponse imported;
  ASSERT_TRUE(Import(b_, run, exported.rows(), &imported, 7).ok());
  EXPECT_TRUE(Same(History(b_, run), before));
  EXPECT_EQ(Info(b_, run).ranks(0).last_seq(), Info(a_, run).ranks(0).last_seq());
}

TEST_F(MoveTest, AnUnfinishedOrOversizedImportImportsNothing) {
  ASSERT_TRUE(Open(a_, "src").ok());
  Job job;
  ASSERT_NO_FATAL_FAILURE(Join(a_, "src", &job));
  ASSERT_NO_FATAL_FAILURE(Steps(a_, "src", &job, 1, 10));
  Leave(&job);
  v1::ExportRunResponse exported;
  ASSERT_TRUE(Export(a_, "src", b_.address(), &exported).ok());
  auto absent = [&](Replica& r) {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, "src");
    v1::GetRunRequest req;
    req.set_name("src");
    v1::GetRunResponse resp;
    return r.stub->GetRun(&ctx, req, &resp).error_code() == grpc::StatusCode::NOT_FOUND;
  };
  // Every row sent, but the stream ends without the message marked last (a
  // client that died half way): nothing is imported.
  grpc::Status s = Import(b_, "src", exported.rows(), nullptr, 3, /*mark_last=*/false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("without one marked last"));
  EXPECT_TRUE(absent(b_));
  // A later message naming another run.
  {
    grpc::ClientContext ctx;
    AddRunHeader(&ctx, "src");
    v1::ImportRunResponse resp;
    auto writer = b_.stub->ImportRun(&ctx, &resp);
    v1::ImportRunRequest req;
    req.set_name("src");
    *req.add_rows() = exported.rows(0);
    writer->Write(req);
    req.set_name("other");
    req.set_last(true);
    writer->Write(req);
    writer->WritesDone();
    s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("one call imports one run"));
  }
  EXPECT_TRUE(absent(b_));
  EXPECT_EQ(Counter(*b_.server, RejectSeries("import_bad_rows")), 2);
  // More rows than --max_import_bytes allows.
  b_.stub.reset();
  b_.server.reset();
  b_.max_import_bytes = 4 << 10;
  ASSERT_NO_FATAL_FAILURE(b_.Start());
  s = Import(b_, "src", exported.rows(), nullptr, 3);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("--max_import_bytes"));
  EXPECT_EQ(Counter(*b_.server, RejectSeries("import_too_large")), 1);
  EXPECT_TRUE(absent(b_));
  // The same rows, whole and marked last, import.
  b_.stub.reset();
  b_.server.reset();
  b_.max_import_bytes = 0;
  ASSERT_NO_FATAL_FAILURE(b_.Start());
  EXPECT_TRUE(Import(b_, "src", exported.rows()).ok());
  EXPECT_FALSE(absent(b_));
}

TEST_F(MoveTest, EveryAnswerNamesTheReplica) {
  // Found or not: a gateway's caller learns which replica answered.
  grpc::ClientContext ctx;
  AddRunHeader(&ctx, "absent");
  v1::GetRunRequest req;
  req.set_name("absent");
  v1::GetRunResponse resp;
  EXPECT_EQ(a_.stub->GetRun(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  auto find = [](const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
    auto it = md.find("x-spotter-replica");
    return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
  };
  const std::string id = find(ctx.GetServerInitialMetadata()).empty()
                             ? find(ctx.GetServerTrailingMetadata())
                             : find(ctx.GetServerInitialMetadata());
  EXPECT_EQ(id, "replica-a");
}

}  // namespace
}  // namespace spotter
