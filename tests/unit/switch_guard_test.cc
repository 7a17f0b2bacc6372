// The trainer's side of the guarded switch without a model: snapshot at the
// guarded switch, restore once at the rollback, release when a later phase
// takes effect; two ranks fed the same directives act at the same steps.
#include "core/phase/switch_guard.h"

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace spotter {
namespace {

using ::testing::ElementsAre;

Directive Make(uint64_t version, uint64_t eff, Phase phase, bool ng, uint64_t guard,
               bool rollback = false, uint64_t snapshot_step = 0) {
  Directive d;
  d.version = version;
  d.effective_step = eff;
  d.plan.phase = phase;
  d.plan.optimizer.kind =
      ng ? OptimizerInstruction::Kind::kNaturalGradient : OptimizerInstruction::Kind::kKeep;
  d.plan.guard_steps = guard;
  d.plan.rollback = rollback;
  d.plan.snapshot_step = snapshot_step;
  return d;
}

// A rank: its log of what the guard asked for, by step.
struct Rank {
  std::vector<std::string> log;
  SwitchGuard guard{{
      [this](uint64_t s) { log.push_back("snapshot@" + std::to_string(s)); },
      [this](uint64_t s, uint64_t taken, const Directive& d) {
        log.push_back("restore@" + std::to_string(s) + " of " + std::to_string(taken) + " v" +
                      std::to_string(d.version));
      },
      [this](uint64_t s) { log.push_back("release@" + std::to_string(s)); },
  }};
};

std::optional<Directive> InForce(const std::vector<Directive>& all, uint64_t step) {
  const Directive* d = DirectiveInForce(all, step);
  return d ? std::optional<Directive>(*d) : std::nullopt;
}

TEST(SwitchGuardTest, SnapshotRestoreRetryRelease) {
  const std::vector<Directive> all = {
      Make(1, 0, Phase::kAcquisition, false, 0),
      Make(2, 100, Phase::kRefinement, true, 50),                    // guarded switch
      Make(3, 130, Phase::kAcquisition, false, 0, true, 100),        // rolled back
      Make(4, 300, Phase::kRefinement, true, 50),                    // the retry
      Make(5, 400, Phase::kPolish, true, 0),                         // it held
  };
  Rank a, b;
  std::vector<uint64_t> skipped;
  for (uint64_t step = 0; step < 500; ++step) {
    const bool skip_a = a.guard.OnStep(step, InForce(all, step));
    const bool skip_b = b.guard.OnStep(step, InForce(all, step));
    EXPECT_EQ(skip_a, skip_b);
    if (skip_a) skipped.push_back(step);
  }
  EXPECT_THAT(a.log, ElementsAre("snapshot@100", "restore@130 of 100 v3", "snapshot@300",
                                 "release@400"));
  EXPECT_EQ(a.log, b.log);  // every rank at the same steps
  EXPECT_THAT(skipped, ElementsAre(130u));
  EXPECT_EQ(a.guard.restores(), 1);
  EXPECT_FALSE(a.guard.holds_snapshot());
}

TEST(SwitchGuardTest, ARollbackWithoutASnapshotRestoresNothing) {
  // A rank that started after the switch (or an unguarded switch): the
  // rollback directive still applies (first-order, lower LR), nothing to put
  // back; counted.
  Rank r;
  const std::vector<Directive> all = {Make(1, 0, Phase::kRefinement, true, 0),
                                      Make(2, 20, Phase::kAcquisition, false, 0, true, 0)};
  for (uint64_t step = 0; step < 40; ++step) EXPECT_FALSE(r.guard.OnStep(step, InForce(all, step)));
  EXPECT_TRUE(r.log.empty());
  EXPECT_EQ(r.guard.missed_restores(), 1);
}

TEST(SwitchGuardTest, ALateDirectiveActsAtTheStepItIsFirstSeen) {
  // The rollback arrives after its effective step (a late directive): the
  // rank restores at the first boundary that sees it, once.
  Rank r;
  std::vector<Directive> all = {Make(1, 10, Phase::kRefinement, true, 50)};
  for (uint64_t step = 0; step < 30; ++step) r.guard.OnStep(step, InForce(all, step));
  all.push_back(Make(2, 25, Phase::kAcquisition, false, 0, true, 10));
  for (uint64_t step = 30; step < 40; ++step) r.guard.OnStep(step, InForce(all, step));
  EXPECT_THAT(r.log, ElementsAre("snapshot@10", "restore@30 of 10 v2"));
}

}  // namespace
}  // namespace spotter
