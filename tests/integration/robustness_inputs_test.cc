// Every class of bad input (docs/RELIABILITY.md, "Bad input"), each answered
// with a clear status or a per-message Reject and counted under its
// spotter_rejects_total{reason}. None crashes the server, changes the run's
// sketch, or blocks another run: after the whole barrage the attacked run's
// trajectory equals that of a run fed only the good batches.
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "server/storage/store.h"
#include "tests/integration/reliability_harness.h"
#include "tests/integration/server_fixture.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using namespace ::spotter::reliability;  // NOLINT: the suites' fixture and helpers
using ::testing::HasSubstr;
using testing::IsOk;

constexpr char kService[] = "/spotter.v1.SpotterService/";

// Bytes that are no protobuf message: an invalid wire type in the first tag.
std::string Garbage() { return std::string("\xff\xff\xff\xff\x0f garbage \x07\x07", 16); }

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// A Connect stream that writes raw bytes (generic, asynchronous API driven
// synchronously).
class BytesStream {
 public:
  BytesStream(std::shared_ptr<grpc::Channel> channel) : stub_(channel) {
    call_ = stub_.PrepareCall(&ctx_, absl::StrCat(kService, "Connect"), &cq_);
    call_->StartCall(Tag(1));
    Wait(1);
  }
  ~BytesStream() {
    ctx_.TryCancel();
    grpc::Status s;
    call_->Finish(&s, Tag(9));
    Wait(9, /*want_ok=*/false);
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  bool Write(const std::string& bytes) {
    call_->Write(ToBuffer(bytes), Tag(2));
    return Wait(2);
  }
  // The next response, parsed; false at the end of the stream.
  bool Read(v1::ConnectResponse* out) {
    grpc::ByteBuffer buf;
    call_->Read(&buf, Tag(3));
    if (!Wait(3)) return false;
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(buf.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return out->ParseFromString(bytes);
  }

 private:
  static void* Tag(intptr_t i) { return reinterpret_cast<void*>(i); }
  bool Wait(intptr_t want, bool want_ok = true) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq_.Next(&tag, &ok));
    EXPECT_EQ(tag, Tag(want));
    return ok;
  }
  grpc::GenericStub stub_;
  grpc::CompletionQueue cq_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
};

// A unary call with raw request bytes.
grpc::Status RawUnary(std::shared_ptr<grpc::Channel> channel, const std::string& method,
                      const std::string& bytes) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  auto call = stub.PrepareUnaryCall(&ctx, absl::StrCat(kService, method), ToBuffer(bytes), &cq);
  call->StartCall();
  grpc::ByteBuffer resp;
  grpc::Status status;
  call->Finish(&resp, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// A server with small message limits and a fake clock, in-process.
class BadInputTest : public ServerFixture {
 protected:
  void SetUp() override {
    ServerOptions o = TestOptions();
    o.clock = &clock_;  // upload cadence (and so effective steps) independent of timing
    o.limits.max_batch_rows = 64;
    o.limits.max_message_bytes = 64 << 10;
    StartServer(o);
  }

  FakeClock clock_;
};

// One bad message and what the server must answer.
struct BadMessage {
  const char* what;
  v1::ConnectRequest req;
  v1::RejectReason reason;
  const char* label;
};

std::vector<BadMessage> BadMessages() {
  const RowMatrixXf good = Rows(5, 0, 4);
  std::vector<BadMessage> v;
  auto batch = [&](const RowMatrixXf& rows) { return Batch(0, 0, rows); };
  {
    RowMatrixXf m = good;
    m(1, 3) = std::nanf("");
    v.push_back({"NaN", batch(m), v1::REJECT_REASON_NON_FINITE, "non_finite"});
  }
  for (float inf : {INFINITY, -INFINITY}) {
    RowMatrixXf m = good;
    m(0, 0) = inf;
    v.push_back({"+-Inf", batch(m), v1::REJECT_REASON_NON_FINITE, "non_finite"});
  }
  v.push_back({"denormal flood", batch(RowMatrixXf::Constant(4, kDim, 1e-41f)),
               v1::REJECT_REASON_DENORMAL, "denormal"});
  {
    v1::ConnectRequest r = batch(good);
    r.mutable_sketch()->set_rows(5);
    v.push_back({"rows not matching the bytes", r, v1::REJECT_REASON_MALFORMED, "malformed"});
    r = batch(good);
    r.mutable_sketch()->mutable_data()->pop_back();
    v.push_back({"bytes not matching rows x cols", r, v1::REJECT_REASON_MALFORMED, "malformed"});
  }
  v.push_back({"cols not the run's k", batch(Rows(5, 0, 4, kDim + 1)),
               v1::REJECT_REASON_DIM_MISMATCH, "dim_mismatch"});
  v.push_back(
      {"rows above the limit", batch(Rows(5, 0, 65)), v1::REJECT_REASON_TOO_LARGE, "too_large"});
  {
    RowMatrixXf m = good;
    m(2, 2) = 3e12f;
    v.push_back({"a value that would overflow the sketch", batch(m), v1::REJECT_REASON_TOO_LARGE,
                 "value_too_large"});
  }
  {
    v1::ConnectRequest r = batch(good);
    r.mutable_sketch()->set_rows(0);
    r.mutable_sketch()->clear_data();
    v.push_back({"empty batch", r, v1::REJECT_REASON_EMPTY, "empty"});
  }
  {
    v1::ConnectRequest r = batch(good);
    r.mutable_sketch()->set_encoding(static_cast<v1::Encoding>(77));
    v.push_back(
        {"unknown encoding", r, v1::REJECT_REASON_UNSUPPORTED_ENCODING, "unsupported_encoding"});
  }
  {
    v1::ConnectRequest r = batch(good);
    r.mutable_sketch()->set_lr(INFINITY);
    v.push_back({"infinite learning rate", r, v1::REJECT_REASON_NON_FINITE, "non_finite"});
    r = batch(good);
    r.mutable_sketch()->set_loss(-INFINITY);
    v.push_back({"infinite loss", r, v1::REJECT_REASON_NON_FINITE, "non_finite"});
  }
  {
    v1::ConnectRequest r;
    (*r.mutable_eval()->mutable_metrics())["val_loss"] = std::nan("");
    v.push_back({"non-finite metric", r, v1::REJECT_REASON_BAD_METRIC, "bad_metric"});
  }
  {
    v1::ConnectRequest r;
    r.mutable_hello()->set_run("other");
    v.push_back({"a second Hello", r, v1::REJECT_REASON_NO_HELLO, "no_hello"});
  }
  v.push_back({"an empty message", v1::ConnectRequest(), v1::REJECT_REASON_MALFORMED, "malformed"});
  return v;
}

TEST_F(BadInputTest, EveryBadMessageIsRejectedCountedAndChangesNothing) {
  const v1::RunConfig config = SmallConfig(1);
  ASSERT_TRUE(Open("attacked", config).ok());
  ASSERT_TRUE(Open("control", config).ok());
  ASSERT_TRUE(Open("bystander", config).ok());

  // A bystander run streams throughout: bad input elsewhere never blocks it.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bystander_acked{0};
  std::thread bystander([&] {
    RawStream s(stub_.get(), "bystander", 0);
    ASSERT_TRUE(s.AwaitWelcome());
    for (uint64_t seq = 1; !stop; ++seq) {
      ASSERT_TRUE(s.Send(Batch(seq, seq, Rows(9, seq))));
      ASSERT_TRUE(s.AwaitAck(seq));
      bystander_acked = seq;
    }
    EXPECT_TRUE(s.Close().ok());
  });

  const std::vector<BadMessage> bad = BadMessages();
  RawStream attacked(stub_.get(), "attacked", 0);
  RawStream control(stub_.get(), "control", 0);
  ASSERT_TRUE(attacked.AwaitWelcome());
  ASSERT_TRUE(control.AwaitWelcome());
  uint64_t seq = 0, control_seq = 0;
  std::map<std::string, double> expected;
  for (uint64_t step = 0; step < 30; ++step) {
    // Every bad message, numbered like an upload; then one good batch.
    for (const BadMessage& b : bad) {
      v1::ConnectRequest r = b.req;
      uint64_t want_seq = 0;
      if (r.has_sketch()) {
        r.mutable_sketch()->set_seq(want_seq = ++seq);
        r.mutable_sketch()->set_step(step);
      }
      if (r.has_eval()) r.mutable_eval()->set_seq(want_seq = ++seq);
      ASSERT_TRUE(attacked.Send(r)) << b.what;
      std::vector<v1::Reject> rejects;
      if (want_seq != 0) {
        ASSERT_TRUE(attacked.AwaitAck(want_seq, &rejects)) << b.what;
      } else {
        v1::ConnectResponse resp;
        while (rejects.empty() && attacked.Read(&resp)) {
          if (resp.has_reject()) rejects.push_back(resp.reject());
        }
      }
      ASSERT_EQ(rejects.size(), 1u) << b.what;
      EXPECT_EQ(rejects[0].reason(), b.reason) << b.what << ": " << rejects[0].message();
      EXPECT_EQ(rejects[0].seq(), want_seq) << b.what;
      EXPECT_FALSE(rejects[0].message().empty()) << b.what;
      expected[b.label] += 1;
    }
    const RowMatrixXf rows = Rows(11, step);
    ASSERT_TRUE(attacked.Send(Batch(++seq, step, rows, 1.0)));
    ASSERT_TRUE(control.Send(Batch(++control_seq, step, rows, 1.0)));
    ASSERT_TRUE(attacked.AwaitAck(seq));
    ASSERT_TRUE(control.AwaitAck(control_seq));
    // A replay of the good batch is dropped (acks are cumulative: the next
    // one covers it).
    ASSERT_TRUE(attacked.Send(Batch(seq, step, rows, 1.0)));
    // Steps never go backwards.
    if (step > 0) {
      std::vector<v1::Reject> rejects;
      ASSERT_TRUE(attacked.Send(Batch(++seq, step - 1, rows)));
      ASSERT_TRUE(attacked.AwaitAck(seq, &rejects));
      ASSERT_EQ(rejects.size(), 1u);
      EXPECT_EQ(rejects[0].reason(), v1::REJECT_REASON_STEP_BACKWARDS);
      expected["step_backwards"] += 1;
    }
    // seq 0 is never valid.
    {
      std::vector<v1::Reject> rejects;
      ASSERT_TRUE(attacked.Send(Batch(0, step, rows)));
      ASSERT_TRUE(attacked.Send(Batch(++seq, step, Rows(1, 0, 4, kDim + 1))));
      ASSERT_TRUE(attacked.AwaitAck(seq, &rejects));
      ASSERT_EQ(rejects.size(), 2u);
      EXPECT_EQ(rejects[0].reason(), v1::REJECT_REASON_SEQ_NOT_INCREASING);
      expected["seq_not_increasing"] += 1;
      expected["dim_mismatch"] += 1;
    }
    server_->DrainEvaluations();
  }
  EXPECT_TRUE(attacked.Close().ok());
  EXPECT_TRUE(control.Close().ok());
  stop = true;
  bystander.join();
  EXPECT_GT(bystander_acked.load(), 0u);

  for (const auto& [label, n] : expected) EXPECT_EQ(Rejects(label), n) << label;
  EXPECT_EQ(Counter(*server_, "spotter_duplicate_uploads_total"), 30);
  // The sketch, trajectory and directives of the attacked run are exactly
  // those of the control run.
  const v1::GetTrajectoryResponse a = WithoutTimes(Trajectory("attacked")),
                                  c = WithoutTimes(Trajectory("control"));
  ASSERT_GT(c.points_size(), 3);
  EXPECT_EQ(a.DebugString(), c.DebugString());
}

TEST_F(BadInputTest, GarbageBytesAreAnsweredNotSilentlyAccepted) {
  ASSERT_TRUE(Open("g", SmallConfig(1)).ok());
  {
    BytesStream s(channel_);
    v1::ConnectRequest hello = RawStream::Hello("g", 0);
    ASSERT_TRUE(s.Write(hello.SerializeAsString()));
    v1::ConnectResponse r;
    ASSERT_TRUE(s.Read(&r));
    EXPECT_TRUE(r.has_welcome());
    ASSERT_TRUE(s.Write(Garbage()));
    while (s.Read(&r) && !r.has_reject()) {
    }
    ASSERT_TRUE(r.has_reject());
    EXPECT_EQ(r.reject().reason(), v1::REJECT_REASON_MALFORMED);
    EXPECT_THAT(r.reject().message(), HasSubstr("not a valid spotter.v1.ConnectRequest"));
    // The stream goes on.
    ASSERT_TRUE(s.Write(Batch(1, 1, Rows(1, 1)).SerializeAsString()));
    while (s.Read(&r) && !r.has_ack()) {
    }
    EXPECT_EQ(r.ack().seq(), 1u);
  }
  EXPECT_EQ(Rejects("unparseable"), 1);
  for (const char* method : {"OpenRun", "GetRun", "ListRuns", "GetTrajectory", "OverridePhase",
                             "FinishRun", "DeleteRun"}) {
    const grpc::Status s = RawUnary(channel_, method, Garbage());
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_THAT(s.error_message(), HasSubstr("not a valid spotter.v1.")) << method;
  }
  EXPECT_EQ(Rejects("unparseable"), 8);
}

TEST_F(BadInputTest, BadHellosEndTheStreamWithAClearStatus) {
  v1::RunConfig config = SmallConfig(2);
  config.mutable_projection()->set_input_dim(1000);
  ASSERT_TRUE(Open("h", config).ok());
  struct Case {
    const char* what;
    v1::ConnectRequest first;
    grpc::StatusCode code;
    const char* says;
    const char* label;
  };
  std::vector<Case> cases;
  cases.push_back({"unknown run", RawStream::Hello("nope", 0), grpc::StatusCode::NOT_FOUND,
                   "no run named nope", "unknown_run"});
  cases.push_back({"rank outside world_size", RawStream::Hello("h", 2),
                   grpc::StatusCode::INVALID_ARGUMENT, "world_size", "rank_out_of_range"});
  cases.push_back({"another projection seed", RawStream::Hello("h", 0, 43),
                   grpc::StatusCode::FAILED_PRECONDITION, "projection", "projection_mismatch"});
  {
    v1::ConnectRequest r = RawStream::Hello("h", 0);
    r.mutable_hello()->mutable_projection()->set_kind(v1::PROJECTION_KIND_GAUSSIAN);
    cases.push_back({"another projection kind", r, grpc::StatusCode::FAILED_PRECONDITION,
                     "projection", "projection_mismatch"});
    r = RawStream::Hello("h", 0);
    r.mutable_hello()->mutable_projection()->set_kind(static_cast<v1::ProjectionKind>(99));
    cases.push_back({"an unknown projection kind", r, grpc::StatusCode::FAILED_PRECONDITION,
                     "projection", "projection_mismatch"});
    r = RawStream::Hello("h", 0);
    r.mutable_hello()->mutable_projection()->set_input_dim(999);
    cases.push_back({"another input dim", r, grpc::StatusCode::FAILED_PRECONDITION, "input_dim",
                     "projection_mismatch"});
  }
  cases.push_back({"data before the Hello", Batch(1, 1, Rows(1, 1)),
                   grpc::StatusCode::INVALID_ARGUMENT, "must be a Hello", "no_hello"});
  std::map<std::string, double> expected;
  for (const Case& c : cases) {
    RawStream s(stub_.get());
    ASSERT_TRUE(s.Send(c.first));
    const grpc::Status st = s.Close();
    EXPECT_EQ(st.error_code(), c.code) << c.what;
    EXPECT_THAT(st.error_message(), HasSubstr(c.says)) << c.what;
    expected[c.label] += 1;
  }
  for (const auto& [label, n] : expected) EXPECT_EQ(Rejects(label), n) << label;
}

TEST_F(BadInputTest, AbsurdConfigsAndRequestsAreRefused) {
  struct Case {
    const char* what;
    v1::RunConfig config;
    const char* says;
  };
  std::vector<Case> cases;
  auto with = [](auto f) {
    v1::RunConfig c = SmallConfig();
    f(c);
    return c;
  };
  cases.push_back(
      {"l > k", with([](v1::RunConfig& c) { c.set_sketch_rows(kDim + 1); }), "sketch_rows"});
  cases.push_back({"decay > 1", with([](v1::RunConfig& c) { c.set_decay(1.5); }), "decay"});
  cases.push_back({"decay < 0", with([](v1::RunConfig& c) { c.set_decay(-0.5); }), "decay"});
  cases.push_back(
      {"NaN decay", with([](v1::RunConfig& c) { c.set_decay(std::nan("")); }), "decay"});
  cases.push_back(
      {"zero steps", with([](v1::RunConfig& c) { c.set_total_steps(0); }), "total_steps"});
  cases.push_back({"k above the limit", with([](v1::RunConfig& c) { c.set_sketch_dim(1 << 20); }),
                   "sketch_dim"});
  cases.push_back(
      {"infinite peak lr", with([](v1::RunConfig& c) { c.set_peak_lr(INFINITY); }), "peak_lr"});
  cases.push_back({"world too large", with([](v1::RunConfig& c) { c.set_world_size(1u << 30); }),
                   "world_size"});
  cases.push_back({"unknown window",
                   with([](v1::RunConfig& c) { c.set_window(static_cast<v1::WindowKind>(9)); }),
                   "window"});
  cases.push_back({"unknown mode",
                   with([](v1::RunConfig& c) { c.set_mode(static_cast<v1::Mode>(9)); }), "mode"});
  cases.push_back({"unknown projection", with([](v1::RunConfig& c) {
                     c.mutable_projection()->set_kind(static_cast<v1::ProjectionKind>(9));
                   }),
                   "projection.kind"});
  cases.push_back({"lr cut above 1",
                   with([](v1::RunConfig& c) { c.mutable_phase()->set_lr_cut(3); }), "lr_cut"});
  cases.push_back({"hysteresis below 1",
                   with([](v1::RunConfig& c) { c.mutable_phase()->set_hysteresis(0.5); }),
                   "hysteresis"});
  for (const Case& c : cases) {
    const grpc::Status s = Open("absurd", c.config);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
    EXPECT_THAT(s.error_message(), HasSubstr(c.says)) << c.what;
  }
  EXPECT_EQ(Open("bad name!", SmallConfig()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Rejects("invalid_argument"), cases.size() + 1);
  // Reopening with another config.
  ASSERT_TRUE(Open("r", SmallConfig()).ok());
  v1::RunConfig other = SmallConfig();
  other.set_eval_every(7);
  const grpc::Status s = Open("r", other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("eval_every"));
  EXPECT_EQ(Rejects("failed_precondition"), 1);
  // Unknown enum values in requests; unknown runs.
  {
    grpc::ClientContext ctx;
    v1::ListRunsRequest req;
    req.set_state(static_cast<v1::RunState>(42));
    v1::ListRunsResponse resp;
    EXPECT_EQ(stub_->ListRuns(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  for (int action : {0, 17}) {
    grpc::ClientContext ctx;
    v1::OverridePhaseRequest req;
    req.set_name("r");
    req.set_action(static_cast<v1::OverridePhaseRequest::Action>(action));
    v1::OverridePhaseResponse resp;
    EXPECT_EQ(stub_->OverridePhase(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::OverridePhaseRequest req;
    req.set_name("r");
    req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
    req.set_phase(static_cast<v1::Phase>(12));
    v1::OverridePhaseResponse resp;
    EXPECT_EQ(stub_->OverridePhase(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::GetRunRequest req;
    req.set_name("missing");
    v1::GetRunResponse resp;
    EXPECT_EQ(stub_->GetRun(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ(Rejects("unknown_run"), 1);
}

// A server on a store that can stall, in-process.
class FinishedRunTest : public ServerFixture {};

TEST_F(FinishedRunTest, AnUploadRacingTheFinishIsRejected) {
  ServerOptions o = TestOptions();
  auto faulty = std::make_shared<FaultInjectingStore>(std::make_shared<MemoryStore>());
  o.store = faulty;
  ASSERT_NO_FATAL_FAILURE(StartServer(o));
  ASSERT_TRUE(Open("f", SmallConfig(1)).ok());
  RawStream s(stub_.get(), "f", 0);
  ASSERT_TRUE(s.AwaitWelcome());
  ASSERT_TRUE(s.Send(Batch(1, 1, Rows(1, 1))));
  ASSERT_TRUE(s.AwaitAck(1));
  // The finish is decided but not yet durable (the store is stalled), so the
  // stream is still open when the straggler arrives.
  faulty->Stall(true);
  std::thread finish([&] {
    grpc::ClientContext ctx;
    v1::FinishRunRequest req;
    req.set_name("f");
    v1::FinishRunResponse resp;
    EXPECT_TRUE(stub_->FinishRun(&ctx, req, &resp).ok());
  });
  ASSERT_TRUE(Eventually([&] { return faulty->blocked(); }));
  ASSERT_TRUE(s.Send(Batch(2, 2, Rows(1, 2))));
  // Refused at once (the Reject does not wait for the commit)...
  v1::ConnectResponse r;
  while (s.Read(&r) && !r.has_reject()) {
  }
  faulty->Stall(false);
  finish.join();
  ASSERT_TRUE(r.has_reject());
  EXPECT_EQ(r.reject().reason(), v1::REJECT_REASON_RUN_FINISHED);
  EXPECT_EQ(r.reject().seq(), 2u);
  // ...and acknowledged once the finish is durable, before the stream ends.
  std::vector<v1::Directive> directives;
  ASSERT_TRUE(s.AwaitAck(2, nullptr, &directives));
  // Then the stop directive, and the end of the stream.
  EXPECT_FALSE(s.AwaitAck(3, nullptr, &directives));
  ASSERT_FALSE(directives.empty());
  EXPECT_TRUE(directives.back().stop());
  EXPECT_TRUE(s.Drain().ok());
  EXPECT_EQ(Rejects("run_finished"), 1);
}

}  // namespace
}  // namespace spotter
