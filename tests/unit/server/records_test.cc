// server/storage/records: the frame of every stored value ([version][payload]
// [CRC-32C over table, key and payload]), the Put op of every record kind and
// its round trip, damaged frames reported as DATA_LOSS naming the row, and
// LoadState over a MemoryStore: the order it returns runs, points,
// transitions, directives and uploads in, and every cross-table invariant it
// checks.
#include "server/storage/records.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/util/crc32c.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/storage/spotter_state.pb.h"
#include "server/storage/store.h"
#include "spotter/v1/spotter.pb.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::IsOk;
using testing::StatusIs;

MATCHER_P(EqualsProto, expected, "equals " + expected.ShortDebugString()) {
  return MessageDifferencer::Equals(arg, expected);
}

// The message of `s` as a string (gtest prints a string_view char by char).
std::string MessageOf(const absl::Status& s) { return std::string(s.message()); }

// "table <t>, run '<run>', key (<k1>, <k2>)": how a damaged row is named.
std::string RowName(Table t, const std::string& run, uint64_t k1, uint64_t k2) {
  return absl::StrFormat("table %s, run '%s', key (%d, %d)", TableName(t), run, k1, k2);
}

StoredRow Row(Table t, const std::string& run, uint64_t k1, uint64_t k2, std::string value) {
  return StoredRow{t, run, k1, k2, std::move(value)};
}

// UnframeRecord of the row (table, run, k1, k2) = value, the payload copied
// out of the row.
absl::StatusOr<std::string> Unframe(Table t, const std::string& run, uint64_t k1, uint64_t k2,
                                    std::string value) {
  const StoredRow row = Row(t, run, k1, k2, std::move(value));
  absl::StatusOr<std::string_view> payload = UnframeRecord(row);
  if (!payload.ok()) return payload.status();
  return std::string(*payload);
}

StoredRow RowOf(const StoreOp& op) { return Row(op.table, op.run, op.k1, op.k2, op.value); }

// Parses the payload of the row `op` writes (after checking its frame).
template <typename Message>
Message Payload(const StoreOp& op) {
  Message m;
  const StoredRow row = RowOf(op);  // the payload points into it
  absl::StatusOr<std::string_view> payload = UnframeRecord(row);
  EXPECT_THAT(payload, IsOk());
  if (payload.ok()) {
    EXPECT_TRUE(m.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
  }
  return m;
}

void AppendLittleEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// ---------------------------------------------------------------------------
// Records of every kind, with something in every field that matters.

state::RunRecord RunRecordOf(const std::string& name, uint64_t order, uint32_t world = 2) {
  state::RunRecord r;
  r.set_name(name);
  r.mutable_config()->set_sketch_dim(32);
  r.mutable_config()->set_sketch_rows(8);
  r.mutable_config()->set_world_size(world);
  r.mutable_config()->set_total_steps(1000);
  (*r.mutable_config()->mutable_labels())["team"] = "vision";
  r.set_created_unix_micros(1700000000000000 + static_cast<int64_t>(order));
  r.set_order(order);
  r.set_owner("alice");
  return r;
}

state::ControllerRecord ControllerOf(uint64_t points, uint64_t transitions, uint64_t directives) {
  state::ControllerRecord c;
  c.set_state(v1::RUN_STATE_ACTIVE);
  c.set_controller(std::string("\x00\x01\x02 opaque", 10));
  c.set_next_eval_step(25);
  c.set_val_metric(0.25);
  c.mutable_latest()->set_step(20);
  c.set_declared_input_dim(1 << 20);
  (*c.mutable_loss_baseline())[0].set_sum(3.5);
  (*c.mutable_loss_baseline())[0].set_count(7);
  (*c.mutable_loss_baseline())[1].set_count(2);
  c.set_max_step(21);
  c.set_points(points);
  c.set_transitions(transitions);
  c.set_directives(directives);
  return c;
}

state::RankRecord RankRecordOf(uint32_t rank, uint64_t last_seq) {
  state::RankRecord r;
  r.set_rank(rank);
  r.set_last_seq(last_seq);
  r.set_last_step(10 * last_seq);
  r.set_any_step(true);
  r.set_uploads(last_seq);
  r.set_rows(8 * last_seq);
  r.set_loss_sum(1.5);
  r.set_loss_count(3);
  r.set_last_loss(0.5);
  r.set_last_lr(0.1);
  r.set_gap(10);
  r.set_rate(100);
  r.set_rate_known(true);
  r.set_cadence_samples(4);
  r.set_last_upload_step(10 * last_seq);
  return r;
}

state::CheckpointRecord CheckpointOf(uint64_t seq) {
  state::CheckpointRecord c;
  c.set_seq(seq);
  c.set_accumulator(std::string("acc\0state", 9));
  return c;
}

v1::SketchBatch UploadOf(uint64_t seq) {
  v1::SketchBatch b;
  b.set_seq(seq);
  b.set_step(10 * seq);
  b.set_rows(2);
  b.set_cols(2);
  b.set_data(std::string(16, static_cast<char>(seq)));
  b.set_loss(0.5);
  b.set_lr(0.1);
  return b;
}

v1::TrajectoryPoint PointAt(uint64_t step) {
  v1::TrajectoryPoint p;
  p.set_step(step);
  p.mutable_time()->set_seconds(static_cast<int64_t>(1000 + step));
  p.set_phase(v1::PHASE_ACQUISITION);
  p.set_loss(1.0 / (1.0 + static_cast<double>(step)));
  p.set_lr(0.1);
  p.mutable_covariance()->mutable_participation_ratio()->set_value(3.0);
  p.add_divergent_ranks(1);
  p.set_rows(48);
  return p;
}

v1::PhaseTransition TransitionAt(uint64_t step, uint64_t directive_version) {
  v1::PhaseTransition t;
  t.set_step(step);
  t.set_from_phase(v1::PHASE_ACQUISITION);
  t.set_to_phase(v1::PHASE_REFINEMENT);
  t.set_cause(v1::CAUSE_OVERRIDE);
  t.set_reason(absl::StrFormat("transition at %d", step));
  (*t.mutable_evidence())["participation_ratio"] = 2.5;
  t.set_directive_version(directive_version);
  return t;
}

v1::Directive DirectiveOf(uint64_t version) {
  v1::Directive d;
  d.set_version(version);
  d.set_effective_step(10 * version);
  d.set_phase(version == 1 ? v1::PHASE_ACQUISITION : v1::PHASE_REFINEMENT);
  d.set_reason(absl::StrFormat("directive %d", version));
  return d;
}

// ---------------------------------------------------------------------------
// FrameRecord / UnframeRecord

TEST(FrameTest, IsVersionPayloadAndCrc32cOfTableKeysRunAndVersionedPayload) {
  const std::string value = FrameRecord(Table::kPoints, "run-7", 3, 0x0102030405060708ull, "abc");
  ASSERT_EQ(value.size(), 1 + 3 + 4u);
  EXPECT_EQ(value[0], '\x01');  // frame version 1
  EXPECT_EQ(value.substr(1, 3), "abc");
  // The checksum's input, as the state files on disk have it: the table byte,
  // k1 and k2 (little-endian), the run name, then version and payload.
  std::string covered;
  covered.push_back(static_cast<char>(Table::kPoints));
  AppendLittleEndian(&covered, 3, 8);
  AppendLittleEndian(&covered, 0x0102030405060708ull, 8);
  covered += "run-7";
  covered += std::string("\x01", 1) + "abc";
  std::string crc;
  AppendLittleEndian(&crc, Crc32c(covered), 4);
  EXPECT_EQ(value.substr(4), crc);
}

TEST(FrameTest, UnframesToThePayload) {
  for (const std::string& payload :
       {std::string(), std::string("x"), std::string("\x00\xff\x00", 3), std::string(4096, 'p')}) {
    const std::string value = FrameRecord(Table::kUploads, "r", 1, 2, payload);
    EXPECT_EQ(value.size(), payload.size() + 5);
    absl::StatusOr<std::string> out = Unframe(Table::kUploads, "r", 1, 2, value);
    ASSERT_THAT(out, IsOk());
    EXPECT_EQ(*out, payload);
  }
}

TEST(FrameTest, AValueMovedToAnotherRowFailsItsChecksum) {
  const std::string value = FrameRecord(Table::kRanks, "run", 1, 0, "payload");
  ASSERT_THAT(Unframe(Table::kRanks, "run", 1, 0, value), IsOk());
  const StoredRow moved[] = {
      Row(Table::kCheckpoints, "run", 1, 0, value),  // another table
      Row(Table::kRanks, "other", 1, 0, value),      // another run
      Row(Table::kRanks, "ru", 1, 0, value),         // a prefix of the run
      Row(Table::kRanks, "run", 2, 0, value),        // another k1
      Row(Table::kRanks, "run", 1, 1, value),        // another k2
  };
  for (const StoredRow& row : moved) {
    absl::StatusOr<std::string_view> out = UnframeRecord(row);
    EXPECT_THAT(out, StatusIs(absl::StatusCode::kDataLoss))
        << RowName(row.table, row.run, row.k1, row.k2);
    EXPECT_THAT(MessageOf(out.status()),
                AllOf(HasSubstr(RowName(row.table, row.run, row.k1, row.k2)),
                      HasSubstr("checksum mismatch")));
  }
}

TEST(FrameTest, EveryFlippedBitIsDataLossNamingTheRow) {
  const std::string value = FrameRecord(Table::kDirectives, "job", 0, 3, "some payload");
  for (size_t byte = 0; byte < value.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = value;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      absl::StatusOr<std::string> out = Unframe(Table::kDirectives, "job", 0, 3, damaged);
      ASSERT_THAT(out, StatusIs(absl::StatusCode::kDataLoss)) << "byte " << byte << " bit " << bit;
      EXPECT_THAT(
          MessageOf(out.status()),
          AllOf(HasSubstr("state damaged"), HasSubstr(RowName(Table::kDirectives, "job", 0, 3))));
    }
  }
}

TEST(FrameTest, ATornOrExtendedValueIsDataLoss) {
  const std::string value = FrameRecord(Table::kPoints, "job", 0, 9, "payload bytes");
  for (size_t keep = 5; keep < value.size(); ++keep) {
    absl::StatusOr<std::string> out = Unframe(Table::kPoints, "job", 0, 9, value.substr(0, keep));
    EXPECT_THAT(out, StatusIs(absl::StatusCode::kDataLoss)) << keep;
    EXPECT_THAT(MessageOf(out.status()), HasSubstr("checksum mismatch")) << keep;
  }
  absl::StatusOr<std::string> out = Unframe(Table::kPoints, "job", 0, 9, value + "x");
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(out.status()), HasSubstr("checksum mismatch"));
}

TEST(FrameTest, AValueShorterThanAFrameIsDataLossSayingSo) {
  for (size_t n = 0; n < 5; ++n) {
    absl::StatusOr<std::string> out = Unframe(Table::kRuns, "tiny", 0, 0, std::string(n, '\x01'));
    EXPECT_THAT(out, StatusIs(absl::StatusCode::kDataLoss)) << n;
    EXPECT_THAT(MessageOf(out.status()),
                AllOf(HasSubstr(absl::StrFormat("value of %d bytes is shorter than its frame", n)),
                      HasSubstr(RowName(Table::kRuns, "tiny", 0, 0))));
  }
}

TEST(FrameTest, AnUnknownFrameVersionIsDataLossNamingIt) {
  std::string value = FrameRecord(Table::kRuns, "v", 0, 0, "payload");
  value[0] = '\x02';
  absl::StatusOr<std::string> out = Unframe(Table::kRuns, "v", 0, 0, value);
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(out.status()), AllOf(HasSubstr("record frame version 2, expected 1"),
                                             HasSubstr(RowName(Table::kRuns, "v", 0, 0))));
}

TEST(FrameTest, DamageMessagesSayHowToRecover) {
  absl::StatusOr<std::string> out = Unframe(Table::kRuns, "v", 0, 0, "");
  EXPECT_THAT(MessageOf(out.status()), HasSubstr("restore the state file from a backup"));
}

// ---------------------------------------------------------------------------
// Put ops: keys and round trips of every record kind

TEST(PutRecordTest, RunRecordIsKeyedByItsNameAndRoundTrips) {
  const state::RunRecord r = RunRecordOf("job", 4);
  const StoreOp op = PutRunRecord(r);
  EXPECT_EQ(op.kind, StoreOp::Kind::kPut);
  EXPECT_EQ(op.table, Table::kRuns);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 0u);
  EXPECT_EQ(op.k2, 0u);
  EXPECT_THAT(Payload<state::RunRecord>(op), EqualsProto(r));
}

TEST(PutRecordTest, ControllerRecordIsKeyedByTheRunAndRoundTrips) {
  const state::ControllerRecord c = ControllerOf(3, 1, 2);
  const StoreOp op = PutControllerRecord("job", c);
  EXPECT_EQ(op.kind, StoreOp::Kind::kPut);
  EXPECT_EQ(op.table, Table::kControllers);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 0u);
  EXPECT_EQ(op.k2, 0u);
  EXPECT_THAT(Payload<state::ControllerRecord>(op), EqualsProto(c));
}

TEST(PutRecordTest, RankRecordIsKeyedByItsRankAndRoundTrips) {
  const state::RankRecord r = RankRecordOf(3, 12);
  const StoreOp op = PutRankRecord("job", r);
  EXPECT_EQ(op.table, Table::kRanks);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 3u);
  EXPECT_EQ(op.k2, 0u);
  EXPECT_THAT(Payload<state::RankRecord>(op), EqualsProto(r));
}

TEST(PutRecordTest, CheckpointRecordIsKeyedByRankAndRoundTrips) {
  const state::CheckpointRecord c = CheckpointOf(9);
  const StoreOp op = PutCheckpointRecord("job", 2, c);
  EXPECT_EQ(op.table, Table::kCheckpoints);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 2u);
  EXPECT_EQ(op.k2, 0u);
  EXPECT_THAT(Payload<state::CheckpointRecord>(op), EqualsProto(c));
}

TEST(PutRecordTest, UploadIsKeyedByRankAndSeqAndRoundTrips) {
  const v1::SketchBatch b = UploadOf(17);
  const StoreOp op = PutUploadRecord("job", 1, b);
  EXPECT_EQ(op.table, Table::kUploads);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 1u);
  EXPECT_EQ(op.k2, 17u);
  EXPECT_THAT(Payload<v1::SketchBatch>(op), EqualsProto(b));
}

TEST(PutRecordTest, PointIsKeyedByIndexAndRoundTrips) {
  const v1::TrajectoryPoint p = PointAt(40);
  const StoreOp op = PutPointRecord("job", 6, p);
  EXPECT_EQ(op.table, Table::kPoints);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 0u);
  EXPECT_EQ(op.k2, 6u);
  EXPECT_THAT(Payload<v1::TrajectoryPoint>(op), EqualsProto(p));
}

TEST(PutRecordTest, TransitionIsKeyedByIndexAndRoundTrips) {
  const v1::PhaseTransition t = TransitionAt(55, 2);
  const StoreOp op = PutTransitionRecord("job", 1, t);
  EXPECT_EQ(op.table, Table::kTransitions);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 0u);
  EXPECT_EQ(op.k2, 1u);
  EXPECT_THAT(Payload<v1::PhaseTransition>(op), EqualsProto(t));
}

TEST(PutRecordTest, DirectiveIsKeyedByVersionAndRoundTrips) {
  const v1::Directive d = DirectiveOf(5);
  const StoreOp op = PutDirectiveRecord("job", d);
  EXPECT_EQ(op.table, Table::kDirectives);
  EXPECT_EQ(op.run, "job");
  EXPECT_EQ(op.k1, 0u);
  EXPECT_EQ(op.k2, 5u);
  EXPECT_THAT(Payload<v1::Directive>(op), EqualsProto(d));
}

// ---------------------------------------------------------------------------
// LoadState over a MemoryStore

class LoadStateTest : public ::testing::Test {
 protected:
  void Put(StoreOp op) { ASSERT_THAT(store_.Apply({std::move(op)}), IsOk()); }

  // A consistent run of world size `world`: its record, a controller and the
  // opening directive.
  void AddRun(const std::string& name, uint64_t order, uint32_t world = 2) {
    Put(PutRunRecord(RunRecordOf(name, order, world)));
    Put(PutControllerRecord(name, ControllerOf(0, 0, 1)));
    Put(PutDirectiveRecord(name, DirectiveOf(1)));
  }
  // Rewrites the controller of `run` with these counts.
  void SetCounts(const std::string& run, uint64_t points, uint64_t transitions,
                 uint64_t directives) {
    Put(PutControllerRecord(run, ControllerOf(points, transitions, directives)));
  }

  // A run with a row in every table: 3 points, 2 transitions, 3 directives;
  // rank 0 with a checkpoint after seq 4 and uploads 5 and 6 logged after it,
  // rank 1 with its record only.
  void AddFullRun(const std::string& name) {
    AddRun(name, 0);
    for (uint64_t i = 0; i < 3; ++i) Put(PutPointRecord(name, i, PointAt(10 * (i + 1))));
    for (uint64_t i = 0; i < 2; ++i) Put(PutTransitionRecord(name, i, TransitionAt(15 + i, i + 2)));
    for (uint64_t v = 2; v <= 3; ++v) Put(PutDirectiveRecord(name, DirectiveOf(v)));
    SetCounts(name, 3, 2, 3);
    Put(PutRankRecord(name, RankRecordOf(0, 6)));
    Put(PutCheckpointRecord(name, 0, CheckpointOf(4)));
    Put(PutUploadRecord(name, 0, UploadOf(5)));
    Put(PutUploadRecord(name, 0, UploadOf(6)));
    Put(PutRankRecord(name, RankRecordOf(1, 2)));
  }

  // Flips a bit in the middle of the stored value of a row that must exist.
  void Damage(Table t, const std::string& run, uint64_t k1, uint64_t k2) {
    std::string* v = store_.MutableValueForTest(t, run, k1, k2);
    ASSERT_NE(v, nullptr) << RowName(t, run, k1, k2);
    (*v)[v->size() / 2] ^= 0x10;
  }

  // The status of loading the store, which must fail.
  absl::Status LoadError() {
    absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
    EXPECT_FALSE(runs.ok()) << "loaded " << (runs.ok() ? runs->size() : 0) << " runs";
    return runs.status();
  }

  MemoryStore store_;
};

TEST_F(LoadStateTest, AnEmptyStoreHasNoRuns) {
  absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
  ASSERT_THAT(runs, IsOk());
  EXPECT_THAT(*runs, IsEmpty());
}

TEST_F(LoadStateTest, RestoresEveryRecordOfARun) {
  AddFullRun("full");
  absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
  ASSERT_THAT(runs, IsOk());
  ASSERT_EQ(runs->size(), 1u);
  const LoadedRun& r = (*runs)[0];
  EXPECT_THAT(r.run, EqualsProto(RunRecordOf("full", 0)));
  EXPECT_THAT(r.controller, EqualsProto(ControllerOf(3, 2, 3)));
  EXPECT_THAT(r.points, ElementsAre(EqualsProto(PointAt(10)), EqualsProto(PointAt(20)),
                                    EqualsProto(PointAt(30))));
  EXPECT_THAT(r.transitions,
              ElementsAre(EqualsProto(TransitionAt(15, 2)), EqualsProto(TransitionAt(16, 3))));
  EXPECT_THAT(r.directives, ElementsAre(EqualsProto(DirectiveOf(1)), EqualsProto(DirectiveOf(2)),
                                        EqualsProto(DirectiveOf(3))));
  ASSERT_EQ(r.ranks.size(), 2u);
  const LoadedRank& r0 = r.ranks.at(0);
  EXPECT_TRUE(r0.has_record);
  EXPECT_THAT(r0.record, EqualsProto(RankRecordOf(0, 6)));
  EXPECT_TRUE(r0.has_checkpoint);
  EXPECT_THAT(r0.checkpoint, EqualsProto(CheckpointOf(4)));
  EXPECT_THAT(r0.uploads, ElementsAre(EqualsProto(UploadOf(5)), EqualsProto(UploadOf(6))));
  const LoadedRank& r1 = r.ranks.at(1);
  EXPECT_TRUE(r1.has_record);
  EXPECT_THAT(r1.record, EqualsProto(RankRecordOf(1, 2)));
  EXPECT_FALSE(r1.has_checkpoint);
  EXPECT_THAT(r1.uploads, IsEmpty());
}

TEST_F(LoadStateTest, RunsComeBackInCreationOrderNotNameOrder) {
  AddRun("b", 1);
  AddRun("c", 0);
  AddRun("a", 2);
  absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
  ASSERT_THAT(runs, IsOk());
  std::vector<std::string> names;
  for (const LoadedRun& r : *runs) names.push_back(r.run.name());
  EXPECT_THAT(names, ElementsAre("c", "b", "a"));
}

TEST_F(LoadStateTest, PointsTransitionsDirectivesAndUploadsComeBackInKeyOrder) {
  // Written newest first; the store keeps them by key, LoadState by index,
  // version and seq.
  AddRun("o", 0, /*world=*/1);
  for (uint64_t i = 12; i-- > 0;) Put(PutPointRecord("o", i, PointAt(5 * (i + 1))));
  for (uint64_t i = 11; i-- > 0;) Put(PutTransitionRecord("o", i, TransitionAt(100 + i, i + 2)));
  for (uint64_t v = 12; v >= 2; --v) Put(PutDirectiveRecord("o", DirectiveOf(v)));
  SetCounts("o", 12, 11, 12);
  Put(PutRankRecord("o", RankRecordOf(0, 12)));
  for (uint64_t seq = 12; seq >= 1; --seq) Put(PutUploadRecord("o", 0, UploadOf(seq)));

  absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
  ASSERT_THAT(runs, IsOk());
  ASSERT_EQ(runs->size(), 1u);
  const LoadedRun& r = (*runs)[0];
  ASSERT_EQ(r.points.size(), 12u);
  for (uint64_t i = 0; i < 12; ++i) EXPECT_EQ(r.points[i].step(), 5 * (i + 1)) << i;
  ASSERT_EQ(r.transitions.size(), 11u);
  for (uint64_t i = 0; i < 11; ++i) EXPECT_EQ(r.transitions[i].step(), 100 + i) << i;
  ASSERT_EQ(r.directives.size(), 12u);
  for (uint64_t v = 1; v <= 12; ++v) EXPECT_EQ(r.directives[v - 1].version(), v);
  const std::vector<v1::SketchBatch>& uploads = r.ranks.at(0).uploads;
  ASSERT_EQ(uploads.size(), 12u);
  for (uint64_t seq = 1; seq <= 12; ++seq) EXPECT_EQ(uploads[seq - 1].seq(), seq);
}

TEST_F(LoadStateTest, RunsDoNotMix) {
  AddFullRun("x");
  AddRun("x2", 1, /*world=*/1);  // "x" is a prefix of its name
  Put(PutPointRecord("x2", 0, PointAt(99)));
  SetCounts("x2", 1, 0, 1);
  absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
  ASSERT_THAT(runs, IsOk());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].run.name(), "x");
  EXPECT_EQ((*runs)[0].points.size(), 3u);
  EXPECT_EQ((*runs)[1].run.name(), "x2");
  ASSERT_EQ((*runs)[1].points.size(), 1u);
  EXPECT_EQ((*runs)[1].points[0].step(), 99u);
  EXPECT_THAT((*runs)[1].ranks, IsEmpty());
}

// A row of the full run, in every table.
struct TableRow {
  Table table;
  uint64_t k1;
  uint64_t k2;
};

class LoadStateDamageTest : public LoadStateTest, public ::testing::WithParamInterface<TableRow> {};

TEST_P(LoadStateDamageTest, ADamagedRowIsDataLossNamingTableRunAndKey) {
  const TableRow& row = GetParam();
  AddFullRun("full");
  ASSERT_THAT(LoadState(store_), IsOk());
  Damage(row.table, "full", row.k1, row.k2);
  const absl::Status s = LoadError();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(s), AllOf(HasSubstr("state damaged"),
                                  HasSubstr(RowName(row.table, "full", row.k1, row.k2)),
                                  HasSubstr("checksum mismatch")));
}

INSTANTIATE_TEST_SUITE_P(
    EveryTable, LoadStateDamageTest,
    ::testing::Values(TableRow{Table::kRuns, 0, 0}, TableRow{Table::kControllers, 0, 0},
                      TableRow{Table::kRanks, 1, 0}, TableRow{Table::kCheckpoints, 0, 0},
                      TableRow{Table::kUploads, 0, 6}, TableRow{Table::kPoints, 0, 1},
                      TableRow{Table::kTransitions, 0, 1}, TableRow{Table::kDirectives, 0, 2}),
    [](const ::testing::TestParamInfo<TableRow>& info) {
      std::string name = TableName(info.param.table);
      name[0] = static_cast<char>(name[0] - 'a' + 'A');
      return name;
    });

TEST_F(LoadStateTest, AFrameHoldingNoValidMessageIsDataLossNamingTheType) {
  AddRun("p", 0);
  // A length-delimited field 1 that claims 127 bytes and has none.
  Put(StoreOp::Put(Table::kPoints, "p", 0, 0,
                   FrameRecord(Table::kPoints, "p", 0, 0, std::string("\x0a\x7f", 2))));
  SetCounts("p", 1, 0, 1);
  const absl::Status s = LoadError();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(s), AllOf(HasSubstr(RowName(Table::kPoints, "p", 0, 0)),
                                  HasSubstr("not a valid spotter.v1.TrajectoryPoint")));
}

TEST_F(LoadStateTest, ARunRecordUnderAnotherRunsKeyIsDataLoss) {
  AddRun("real", 0);
  // Framed for its row (the checksum holds), but the record names another run.
  state::RunRecord impostor = RunRecordOf("other", 0);
  std::string payload;
  impostor.SerializeToString(&payload);
  Put(StoreOp::Put(Table::kRuns, "real", 0, 0, FrameRecord(Table::kRuns, "real", 0, 0, payload)));
  const absl::Status s = LoadError();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(s), AllOf(HasSubstr(RowName(Table::kRuns, "real", 0, 0)),
                                  HasSubstr("record names run 'other'")));
}

// A well-framed record at a key its table does not use, and what the error says.
struct MisKeyed {
  const char* what;
  Table table;
  uint64_t k1;
  uint64_t k2;
  const char* says;
};

class LoadStateMisKeyedTest : public LoadStateTest,
                              public ::testing::WithParamInterface<MisKeyed> {};

TEST_P(LoadStateMisKeyedTest, IsDataLossNamingTheRow) {
  const MisKeyed& m = GetParam();
  AddFullRun("k");
  std::string payload;
  switch (m.table) {
    case Table::kRuns:
      RunRecordOf("k", 0).SerializeToString(&payload);
      break;
    case Table::kControllers:
      ControllerOf(3, 2, 3).SerializeToString(&payload);
      break;
    case Table::kRanks:
      RankRecordOf(0, 6).SerializeToString(&payload);
      break;
    case Table::kCheckpoints:
      CheckpointOf(4).SerializeToString(&payload);
      break;
    case Table::kUploads:
      UploadOf(5).SerializeToString(&payload);
      break;
    case Table::kDirectives:
      DirectiveOf(2).SerializeToString(&payload);
      break;
    default:
      FAIL() << "no mis-keyed case for " << TableName(m.table);
  }
  Put(StoreOp::Put(m.table, "k", m.k1, m.k2, FrameRecord(m.table, "k", m.k1, m.k2, payload)));
  const absl::Status s = LoadError();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(s), AllOf(HasSubstr(RowName(m.table, "k", m.k1, m.k2)), HasSubstr(m.says)));
}

INSTANTIATE_TEST_SUITE_P(
    EveryKeyedTable, LoadStateMisKeyedTest,
    ::testing::Values(
        MisKeyed{"RunWithK1", Table::kRuns, 1, 0, "unexpected key"},
        MisKeyed{"RunWithK2", Table::kRuns, 0, 1, "unexpected key"},
        MisKeyed{"ControllerWithK1", Table::kControllers, 1, 0, "unexpected key"},
        MisKeyed{"ControllerWithK2", Table::kControllers, 0, 2, "unexpected key"},
        MisKeyed{"RankUnderAnotherRank", Table::kRanks, 1, 0, "record of rank 0"},
        MisKeyed{"RankWithK2", Table::kRanks, 0, 1, "record of rank 0"},
        MisKeyed{"RankBeyond32Bits", Table::kRanks, 1ull << 32, 0, "record of rank 0"},
        MisKeyed{"CheckpointWithK2", Table::kCheckpoints, 0, 1, "unexpected key"},
        MisKeyed{"CheckpointBeyond32Bits", Table::kCheckpoints, 1ull << 32, 0, "unexpected key"},
        MisKeyed{"UploadBeyond32Bits", Table::kUploads, 1ull << 32, 5, "unexpected key"},
        MisKeyed{"UploadUnderAnotherSeq", Table::kUploads, 0, 7, "upload with seq 5"},
        MisKeyed{"DirectiveUnderAnotherVersion", Table::kDirectives, 0, 9,
                 "directive of version 2"}),
    [](const ::testing::TestParamInfo<MisKeyed>& info) { return info.param.what; });

// ---------------------------------------------------------------------------
// LoadState: invariants across tables

// Expects `s` to be DATA_LOSS for an inconsistent run `run`, saying `what`.
void ExpectInconsistent(const absl::Status& s, const std::string& run, const std::string& what) {
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(s),
              AllOf(HasSubstr(absl::StrFormat("state inconsistent: run '%s'", run)),
                    HasSubstr(what), HasSubstr("restore the state file from a backup")));
}

TEST_F(LoadStateTest, RowsWithoutTheRunRecordAreInconsistent) {
  AddRun("ok", 0);
  Put(PutControllerRecord("orphan", ControllerOf(0, 0, 1)));
  Put(PutDirectiveRecord("orphan", DirectiveOf(1)));
  ExpectInconsistent(LoadError(), "orphan", "rows without the run's record in table runs");
}

TEST_F(LoadStateTest, ARunWithoutAControllerIsInconsistent) {
  Put(PutRunRecord(RunRecordOf("bare", 0)));
  Put(PutDirectiveRecord("bare", DirectiveOf(1)));
  ExpectInconsistent(LoadError(), "bare", "no record in table controllers");
}

TEST_F(LoadStateTest, CountsOtherThanTheControllersAreInconsistent) {
  AddRun("n", 0);
  Put(PutPointRecord("n", 0, PointAt(10)));
  Put(PutPointRecord("n", 1, PointAt(20)));
  SetCounts("n", 3, 0, 1);  // a point was lost
  ExpectInconsistent(LoadError(), "n",
                     "2 points, 0 transitions, 1 directives stored; the run's record counts "
                     "3, 0, 1");
  SetCounts("n", 2, 1, 1);  // a transition was lost
  ExpectInconsistent(LoadError(), "n", "the run's record counts 2, 1, 1");
  SetCounts("n", 2, 0, 2);  // a directive was lost
  ExpectInconsistent(LoadError(), "n", "the run's record counts 2, 0, 2");
  SetCounts("n", 2, 0, 1);
  EXPECT_THAT(LoadState(store_), IsOk());
}

TEST_F(LoadStateTest, AGapInThePointsIsInconsistent) {
  AddRun("g", 0);
  Put(PutPointRecord("g", 0, PointAt(10)));
  Put(PutPointRecord("g", 2, PointAt(30)));
  SetCounts("g", 2, 0, 1);
  ExpectInconsistent(LoadError(), "g", "point 1 is missing");
}

TEST_F(LoadStateTest, PointsWhoseStepsDoNotIncreaseAreInconsistent) {
  AddRun("s", 0);
  Put(PutPointRecord("s", 0, PointAt(10)));
  Put(PutPointRecord("s", 1, PointAt(30)));
  Put(PutPointRecord("s", 2, PointAt(30)));
  SetCounts("s", 3, 0, 1);
  ExpectInconsistent(LoadError(), "s", "point 2 at step 30 after step 30");
  Put(PutPointRecord("s", 2, PointAt(20)));
  ExpectInconsistent(LoadError(), "s", "point 2 at step 20 after step 30");
}

TEST_F(LoadStateTest, AGapInTheTransitionsIsInconsistent) {
  AddRun("t", 0);
  Put(PutTransitionRecord("t", 1, TransitionAt(10, 2)));
  SetCounts("t", 0, 1, 1);
  ExpectInconsistent(LoadError(), "t", "transition 0 is missing");
}

TEST_F(LoadStateTest, AGapInTheDirectiveVersionsIsInconsistent) {
  AddRun("d", 0);
  Put(PutDirectiveRecord("d", DirectiveOf(3)));
  SetCounts("d", 0, 0, 2);
  ExpectInconsistent(LoadError(), "d", "directive version 2 is missing");
}

TEST_F(LoadStateTest, ARunWithoutDirectivesIsInconsistent) {
  Put(PutRunRecord(RunRecordOf("quiet", 0)));
  Put(PutControllerRecord("quiet", ControllerOf(0, 0, 0)));
  ExpectInconsistent(LoadError(), "quiet", "no directives (every run has one)");
}

TEST_F(LoadStateTest, RowsOfARankOutsideTheWorldAreInconsistent) {
  AddRun("w", 0, /*world=*/2);
  Put(PutRankRecord("w", RankRecordOf(2, 1)));
  ExpectInconsistent(LoadError(), "w", "rows of rank 2; world_size is 2");
}

TEST_F(LoadStateTest, ASketchWithoutItsRankRecordIsInconsistent) {
  AddRun("c", 0);
  Put(PutCheckpointRecord("c", 1, CheckpointOf(3)));
  ExpectInconsistent(LoadError(), "c", "rank 1 has a sketch but no record");
}

TEST_F(LoadStateTest, AnUploadWithoutItsRankRecordIsInconsistent) {
  AddRun("u", 0);
  Put(PutUploadRecord("u", 0, UploadOf(1)));
  ExpectInconsistent(LoadError(), "u", "rank 0 has a sketch but no record");
}

TEST_F(LoadStateTest, ACheckpointAheadOfItsRankRecordIsInconsistent) {
  AddRun("a", 0);
  Put(PutRankRecord("a", RankRecordOf(0, 4)));
  Put(PutCheckpointRecord("a", 0, CheckpointOf(5)));
  ExpectInconsistent(LoadError(), "a", "rank 0: checkpoint after seq 5, record at seq 4");
}

TEST_F(LoadStateTest, UploadsOutsideCheckpointToLastSeqAreInconsistent) {
  AddRun("l", 0);
  Put(PutRankRecord("l", RankRecordOf(0, 6)));
  Put(PutCheckpointRecord("l", 0, CheckpointOf(4)));
  Put(PutUploadRecord("l", 0, UploadOf(4)));  // already in the checkpoint
  ExpectInconsistent(LoadError(), "l",
                     "rank 0: logged upload 4 outside (checkpoint 4, last seq 6]");

  ASSERT_THAT(store_.Apply({StoreOp::DeleteUpTo(Table::kUploads, "l", 0, 4)}), IsOk());
  Put(PutUploadRecord("l", 0, UploadOf(7)));  // beyond the rank's record
  ExpectInconsistent(LoadError(), "l",
                     "rank 0: logged upload 7 outside (checkpoint 4, last seq 6]");
}

TEST_F(LoadStateTest, UploadsWithoutACheckpointMayStartAtSeqOne) {
  AddRun("z", 0, /*world=*/1);
  Put(PutRankRecord("z", RankRecordOf(0, 2)));
  Put(PutUploadRecord("z", 0, UploadOf(1)));
  Put(PutUploadRecord("z", 0, UploadOf(2)));
  absl::StatusOr<std::vector<LoadedRun>> runs = LoadState(store_);
  ASSERT_THAT(runs, IsOk());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_FALSE((*runs)[0].ranks.at(0).has_checkpoint);
  EXPECT_EQ((*runs)[0].ranks.at(0).uploads.size(), 2u);
}

TEST_F(LoadStateTest, TheFirstDamagedRowIsReported) {
  // Tables are scanned in kAllTables order, each by (run, k1, k2): the points
  // row of "a" comes before the directives row of "a" and the points row of "b".
  AddFullRun("a");
  AddRun("b", 1, 1);
  Put(PutPointRecord("b", 0, PointAt(1)));
  SetCounts("b", 1, 0, 1);
  Damage(Table::kDirectives, "a", 0, 1);
  Damage(Table::kPoints, "b", 0, 0);
  Damage(Table::kPoints, "a", 0, 2);
  const absl::Status s = LoadError();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(MessageOf(s), HasSubstr(RowName(Table::kPoints, "a", 0, 2)));
}

}  // namespace
}  // namespace spotter
