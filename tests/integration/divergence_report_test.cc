// A trainer whose loss went non-finite says so (RunSession::ReportNonFiniteLoss,
// SketchBatch.loss_non_finite): the server accepts the upload, counts it for
// the divergence signal and never sketches its placeholder row; spotterctl's
// formatting shows guarded and rollback directives.
#include <memory>

#include "client/cpp/ctl/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/server_fixture.h"

namespace spotter::reliability {
namespace {

using ::testing::HasSubstr;

class DivergenceReportTest : public ServerFixture {};

TEST_F(DivergenceReportTest, ANonFiniteLossIsCountedNotSketched) {
  StartServer(TestOptions());
  const v1::RunConfig config = SmallConfig(/*world_size=*/1);
  std::unique_ptr<RunSession> s = Session("nan", config, 0);
  ASSERT_NE(s, nullptr);
  for (uint64_t step = 1; step <= 3; ++step) {
    ASSERT_TRUE(s->UploadSketch(step, Rows(1, step), 0.5, 0.1));
  }
  ASSERT_TRUE(s->ReportNonFiniteLoss(4, 0.1));
  ASSERT_TRUE(s->Flush(absl::Seconds(10)));
  const std::map<std::string, double> m = Scrape();
  EXPECT_EQ(m.at("spotter_nonfinite_losses_total"), 1);
  EXPECT_EQ(m.at("spotter_uploads_total"), 4);
  const v1::RunInfo info = Get("nan");
  ASSERT_EQ(info.ranks_size(), 1);
  EXPECT_EQ(info.ranks(0).uploads(), 4u);
  EXPECT_EQ(info.ranks(0).rows(), 3u * 6u);  // the placeholder row is not sketched
  EXPECT_EQ(info.ranks(0).rejects(), 0u);
  EXPECT_EQ(info.ranks(0).last_step(), 4u);
  EXPECT_EQ(s->stats().rejects, 0u);
}

TEST(DivergenceFormatTest, ShowNamesTheGuardAndTheRollback) {
  v1::Directive guarded;
  guarded.set_version(2);
  guarded.set_phase(v1::PHASE_REFINEMENT);
  guarded.mutable_optimizer()->set_kind(v1::OptimizerInstruction::KIND_NATURAL_GRADIENT);
  guarded.set_guard_steps(50);
  EXPECT_THAT(FormatDirective(guarded), HasSubstr("guarded 50 steps (snapshot at the switch)"));
  v1::Directive back;
  back.set_version(3);
  back.set_phase(v1::PHASE_ACQUISITION);
  back.set_rollback(true);
  back.set_snapshot_step(1090);
  EXPECT_THAT(FormatDirective(back), HasSubstr("ROLLBACK to the snapshot of step 1090"));

  google::protobuf::RepeatedPtrField<v1::PhaseTransition> ts;
  EXPECT_EQ(FormatRollbacks(ts), "");
  v1::PhaseTransition* t = ts.Add();
  t->set_step(1200);
  t->set_cause(v1::CAUSE_ROLLBACK);
  (*t->mutable_evidence())["switch_step"] = 1090;
  ts.Add()->set_cause(v1::CAUSE_AUTOMATIC);
  EXPECT_EQ(FormatRollbacks(ts), "rollbacks: 1 natural-gradient switch failed its guard, rolled "
                                 "back at step 1200 (switch of step 1090)");
  EXPECT_THAT(FormatTransition(*t), HasSubstr("(rollback, decided at step"));
}

}  // namespace
}  // namespace spotter::reliability
