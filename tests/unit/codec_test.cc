// Checkpoint encodings of core state: a restored accumulator or controller
// continues bit for bit like the original, and every malformed input is an
// error, never a crash or a silently different state.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/phase/controller_codec.h"
#include "core/spectrum/accumulator_codec.h"
#include "core/util/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/planted.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using ::testing::HasSubstr;
using testing::IsOk;
using testing::PlantedGaussian;
using testing::PlantedSpectrum;

constexpr int kDim = 24;
constexpr int kRows = 6;

// Everything observable of an accumulator: its encoding after a snapshot at
// `step` (bit for bit).
std::string Observe(const RankAccumulator& acc, uint64_t step) {
  std::string out;
  for (const GradientMoments& m : acc.Snapshot(step)) {
    out += std::to_string(m.rows) + ":" + std::to_string(m.trace_centred) + ":" +
           std::to_string(m.centred.delta()) + ":";
    for (double e : m.centred.Eigenvalues()) out += std::to_string(e) + ",";
  }
  return out + EncodeRankAccumulator(acc);
}

class AccumulatorCheckpointTest : public ::testing::TestWithParam<WindowKind> {
 protected:
  WindowOptions Window() const {
    WindowOptions w;
    w.kind = GetParam();
    w.decay = 0.97;
    w.window_steps = 12;
    return w;
  }
};

TEST_P(AccumulatorCheckpointTest, ARestoredAccumulatorContinuesBitForBit) {
  PlantedGaussian gen(kDim, PlantedSpectrum::PowerLaw(8, 1.0), 3);
  std::mt19937_64 rng(3);
  RankAccumulator original(kDim, kRows, Window());
  uint64_t step = 0;
  for (; step < 40; step += 1 + step % 3) original.Add(step, gen.Sample(5, rng), 2.0);
  const std::string bytes = EncodeRankAccumulator(original);
  absl::StatusOr<RankAccumulator> restored = DecodeRankAccumulator(bytes, kDim, kRows, Window());
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ(EncodeRankAccumulator(*restored), bytes);
  EXPECT_EQ(Observe(*restored, step), Observe(original, step));
  // Both go on with the same batches (and shrinks) and stay identical.
  for (; step < 120; step += 1 + step % 2) {
    const RowMatrixXf batch = gen.Sample(7, rng);
    original.Add(step, batch, 1.0);
    restored->Add(step, batch, 1.0);
  }
  EXPECT_EQ(Observe(*restored, step + 3), Observe(original, step + 3));
}

TEST_P(AccumulatorCheckpointTest, EveryTruncationAndAWrongShapeAreErrors) {
  PlantedGaussian gen(kDim, PlantedSpectrum::PowerLaw(8, 1.0), 4);
  std::mt19937_64 rng(4);
  RankAccumulator acc(kDim, kRows, Window());
  for (uint64_t step = 0; step < 30; ++step) acc.Add(step, gen.Sample(3, rng), 1.0);
  const std::string bytes = EncodeRankAccumulator(acc);
  for (size_t n = 0; n < bytes.size(); n += 1 + n / 64) {
    EXPECT_FALSE(DecodeRankAccumulator(bytes.substr(0, n), kDim, kRows, Window()).ok()) << n;
  }
  EXPECT_FALSE(DecodeRankAccumulator(bytes + "x", kDim, kRows, Window()).ok());
  absl::Status s = DecodeRankAccumulator(bytes, kDim + 1, kRows, Window()).status();
  EXPECT_THAT(s.message(), HasSubstr("the run has"));
  WindowOptions other = Window();
  other.decay = 0.5;
  other.window_steps = 13;
  EXPECT_FALSE(DecodeRankAccumulator(bytes, kDim, kRows, other).ok());
  std::string nan = bytes;
  const float bad = std::nanf("");
  std::memcpy(&nan[nan.size() - 200], &bad, 4);  // inside the last sketch's rows
  EXPECT_FALSE(DecodeRankAccumulator(nan, kDim, kRows, Window()).ok());
  std::string magic = bytes;
  magic[0] ^= 1;
  EXPECT_THAT(DecodeRankAccumulator(magic, kDim, kRows, Window()).status().message(),
              HasSubstr("not a rank checkpoint"));
}

INSTANTIATE_TEST_SUITE_P(Window, AccumulatorCheckpointTest,
                         ::testing::Values(WindowKind::kExponential, WindowKind::kFixed),
                         [](const auto& info) {
                           return info.param == WindowKind::kFixed ? "Fixed" : "Exponential";
                         });

ControllerConfig SmallControllerConfig() {
  ControllerConfig c;
  c.total_steps = 400;
  c.steps_per_epoch = 20;
  c.sketch_rows = 32;
  c.window_evals = 3;
  c.confirm_evals = 2;
  c.min_dwell_steps = 10;
  c.val_patience = 3;
  return c;
}

// Observations that move the controller through its phases.
Observation Obs(uint64_t step) {
  Observation o;
  o.step = step;
  o.loss = 5.0 * std::exp(-0.01 * static_cast<double>(step));
  o.effective_rank = step < 60 ? 20.0 - 0.2 * static_cast<double>(step) : 3.0;
  o.participation_ratio = step < 60 ? 10.0 - 0.1 * static_cast<double>(step) : 4.0;
  return o;
}

std::string Describe(const std::optional<Decision>& d) {
  if (!d) return "none";
  return absl::StrCat(PhaseName(d->from), "->", PhaseName(d->to), " ", d->reason, " lr ",
                      d->plan.lr.start_lr, "..", d->plan.lr.end_lr, " stop ", d->plan.stop);
}

TEST(ControllerStateTest, ARestoredControllerMakesTheSameDecisions) {
  const ControllerConfig config = SmallControllerConfig();
  PhaseController original(config);
  uint64_t step = 0;
  for (; step < 70; step += 5) original.OnEvaluation(Obs(step), step + 3);
  original.Pin(original.current_plan(), "hold it", step + 3);
  const std::string bytes = EncodeControllerState(original);
  PhaseController restored(config);
  ASSERT_THAT(DecodeControllerState(bytes, &restored), IsOk());
  EXPECT_EQ(EncodeControllerState(restored), bytes);
  EXPECT_EQ(Describe(restored.Release("go", step + 3)), Describe(original.Release("go", step + 3)));
  std::vector<std::string> a, b;
  for (; step < 400; step += 5) {
    a.push_back(Describe(original.OnEvaluation(Obs(step), step + 3)));
    b.push_back(Describe(restored.OnEvaluation(Obs(step), step + 3)));
    a.push_back(Describe(original.OnValidation(step, 1.0, step + 3)));
    b.push_back(Describe(restored.OnValidation(step, 1.0, step + 3)));
  }
  EXPECT_EQ(a, b);
  EXPECT_EQ(original.phase(), restored.phase());
  EXPECT_NE(original.phase(), Phase::kAcquisition) << "the inputs should move the phases";
}

TEST(ControllerStateTest, MalformedStateIsAnErrorAndLeavesTheControllerAlone) {
  const ControllerConfig config = SmallControllerConfig();
  PhaseController c(config);
  for (uint64_t step = 0; step < 40; step += 5) c.OnEvaluation(Obs(step), step + 3);
  const std::string bytes = EncodeControllerState(c);
  PhaseController fresh(config);
  const std::string before = EncodeControllerState(fresh);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(DecodeControllerState(bytes.substr(0, n), &fresh).ok()) << n;
  }
  std::string phase = bytes;
  phase[8] = 9;  // the phase byte, after magic and version
  EXPECT_FALSE(DecodeControllerState(phase, &fresh).ok());
  // The window's count sits before its n observations (43 bytes each) and
  // the 38-byte trailer (17 bytes of latch and validation, 21 of the
  // guarded switch): a count above the span cap (100000) is refused.
  std::string huge = bytes;
  bool patched = false;
  for (uint32_t n = 0; n < 1000 && !patched; ++n) {
    const size_t at = bytes.size() - 38 - 43 * static_cast<size_t>(n) - 4;
    uint32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    if (v != n) continue;
    const uint32_t big = 200000;
    std::memcpy(huge.data() + at, &big, 4);
    patched = true;
  }
  ASSERT_TRUE(patched);
  EXPECT_THAT(DecodeControllerState(huge, &fresh).message(), HasSubstr("detector window"));
  EXPECT_EQ(EncodeControllerState(fresh), before);
  // A span longer than a narrower config needs is kept (the next evaluation
  // trims it): the span may exceed plateau_windows x window_evals anyway
  // when the sketch window's memory asks for it.
  ControllerConfig narrow = config;
  narrow.window_evals = 1;
  PhaseController small(narrow);
  EXPECT_TRUE(DecodeControllerState(bytes, &small).ok());
}

TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("6789", Crc32c("12345")), Crc32c("123456789"));
}

}  // namespace
}  // namespace spotter
