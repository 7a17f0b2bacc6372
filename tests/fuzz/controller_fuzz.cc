// Fuzz target: the phase controller fed arbitrary diagnostics, validation
// reports and operator actions (any doubles, NaN and Inf included, steps in
// any order). Invariants: nothing crashes; every decision's plan is in the
// phase it names with finite, non-negative learning rates; a DONE controller
// stays DONE; and the controller's state survives an encode / decode round
// trip at every point, after which it makes the same decisions.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/phase/controller.h"
#include "core/phase/controller_codec.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace spotter {
namespace {

std::string Describe(const std::optional<Decision>& d) {
  if (!d) return "-";
  return absl::StrCat(PhaseName(d->from), ">", PhaseName(d->to), " ", d->reason, " ",
                      d->plan.lr.start_lr, " ", d->plan.lr.end_lr, " ", d->plan.stop);
}

void Check(const std::optional<Decision>& d, const PhaseController& c) {
  if (!d) return;
  FUZZ_CHECK(d->to == c.phase(), "decision to %s, controller in %s", PhaseName(d->to),
             PhaseName(c.phase()));
  for (double lr : {d->plan.lr.start_lr, d->plan.lr.end_lr}) {
    FUZZ_CHECK(std::isfinite(lr) && lr >= 0, "plan learning rate %g (%s)", lr, d->reason.c_str());
  }
  FUZZ_CHECK(d->plan.stop == (d->to == Phase::kDone) || d->cause != Cause::kAutomatic,
             "automatic plan stop %d in %s", d->plan.stop, PhaseName(d->to));
}

void Run1(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  ControllerConfig c;
  c.total_steps = in.InRange(1, 5000);
  c.steps_per_epoch = in.InRange(1, 500);
  c.base_lr = in.Unit() * 0.1;
  c.peak_lr = 1e-4 + in.Unit();
  c.sketch_rows = static_cast<int>(in.InRange(1, 128));
  c.warmup_fraction = 0.01 + 0.98 * in.Unit();
  c.window_evals = static_cast<int>(in.InRange(1, 8));
  c.confirm_evals = static_cast<int>(in.InRange(1, 5));
  c.min_dwell_steps = in.InRange(0, 300);
  c.lr_cut = 0.01 + 0.99 * in.Unit();
  c.lr_min = in.Unit() * 0.01;
  c.val_patience = static_cast<int>(in.InRange(1, 6));
  c.val_maximize = in.U8() & 1;
  if (!c.Validate().ok()) return;
  PhaseController controller(c);
  uint64_t step = 0;
  while (!in.empty()) {
    const uint8_t op = in.U8();
    step += in.InRange(0, 40);
    const uint64_t eff = step + in.InRange(1, 20);
    const bool was_done = controller.phase() == Phase::kDone;
    std::optional<Decision> d;
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {
        Observation o;
        o.step = op & 0x80 ? in.InRange(0, step) : step;  // sometimes stale
        o.loss = in.F64();
        o.effective_rank = in.F64();
        o.rank_censored = in.U8() & 1;
        o.participation_ratio = in.F64();
        if (op & 0x40) {  // what Summarize can produce: finite, in range
          o.loss = std::fabs(std::fmod(o.loss, 10.0));
          o.effective_rank = 1 + std::fmod(std::fabs(o.effective_rank), c.sketch_rows);
          o.participation_ratio = 1 + std::fmod(std::fabs(o.participation_ratio), 100.0);
          if (!std::isfinite(o.loss)) o.loss = 1;
          if (!std::isfinite(o.effective_rank)) o.effective_rank = 1;
          if (!std::isfinite(o.participation_ratio)) o.participation_ratio = 1;
        }
        d = controller.OnEvaluation(o, eff);
        if (was_done) FUZZ_CHECK(!d, "a DONE controller decided %s", Describe(d).c_str());
        break;
      }
      case 3:
        d = controller.OnValidation(step, in.F64(), eff);
        if (was_done) FUZZ_CHECK(!d, "a DONE controller decided %s", Describe(d).c_str());
        break;
      case 4:
        d = controller.ForcePhase(static_cast<Phase>(in.U8() % 4), in.U8() & 1, "force", eff);
        break;
      case 5: {
        DirectivePlan plan = controller.current_plan();
        plan.lr = LrSchedule::Constant(in.Unit());
        plan.stop = in.U8() % 8 == 0;
        d = controller.Pin(plan, "pin", eff);
        break;
      }
      case 6:
        d = controller.Release("release", eff);
        break;
      case 7:
        if (in.U8() % 16 == 0) d = controller.Finish(Cause::kFinish, "finish", eff);
        break;
    }
    Check(d, controller);
    // The state round-trips, and the restored twin decides the same.
    const std::string bytes = EncodeControllerState(controller);
    PhaseController twin(c);
    const absl::Status s = DecodeControllerState(bytes, &twin);
    FUZZ_CHECK(s.ok(), "%s", s.ToString().c_str());
    FUZZ_CHECK(EncodeControllerState(twin) == bytes, "re-encoding differs");
    Observation probe;
    probe.step = step + 1;
    probe.loss = 1.0;
    probe.effective_rank = 2.0;
    probe.participation_ratio = 2.0;
    PhaseController copy = controller;
    const std::string a = Describe(copy.OnEvaluation(probe, eff + 1));
    const std::string b = Describe(twin.OnEvaluation(probe, eff + 1));
    FUZZ_CHECK(a == b, "restored controller decided %s, the original %s", b.c_str(), a.c_str());
  }
}

}  // namespace
}  // namespace spotter

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spotter::Run1(data, size);
  return 0;
}
