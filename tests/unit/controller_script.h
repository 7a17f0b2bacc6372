// The scripted-trajectory helpers the controller's unit tests share
// (controller_test.cc, controller_guard_test.cc): evaluations as functions of
// the step, fed to a PhaseController until it decides.
#ifndef SPOTTER_TESTS_UNIT_CONTROLLER_SCRIPT_H_
#define SPOTTER_TESTS_UNIT_CONTROLLER_SCRIPT_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "core/phase/controller.h"
#include "gtest/gtest.h"

namespace spotter::controller_testing {

inline constexpr uint64_t kEvalEvery = 10;

// Small numbers so the scripts stay short: warm-up ends at step 200, an
// epoch is 100 steps, the windows hold 3 evaluations (30 steps) each, and a
// plateau span is 3 windows: 9 evaluations, 80 steps from first to last;
// dwell 50. No window memory (the server derives it from the run's sketch
// window). Each suite adds the fields it is about.
inline ControllerConfig BaseTestConfig() {
  ControllerConfig c;
  c.total_steps = 2000;
  c.steps_per_epoch = 100;
  c.base_lr = 0.01;
  c.peak_lr = 0.1;
  c.sketch_rows = 64;
  c.warmup_fraction = 0.1;
  c.window_evals = 3;
  c.confirm_evals = 2;
  c.min_dwell_steps = 50;
  c.lr_min = 0.001;
  return c;
}

// A trajectory as functions of the step.
struct Script {
  std::function<double(uint64_t)> rank = [](uint64_t) { return 6.0; };
  std::function<double(uint64_t)> pr = [](uint64_t) { return 4.0; };
  std::function<double(uint64_t)> loss = [](uint64_t s) { return std::exp(-0.003 * s); };
  std::function<bool(uint64_t)> censored = [](uint64_t) { return false; };
};

inline Observation At(const Script& s, uint64_t step) {
  Observation o;
  o.step = step;
  o.rank_censored = s.censored(step);
  o.effective_rank = s.rank(step);
  o.participation_ratio = s.pr(step);
  o.loss = s.loss(step);
  return o;
}

struct Fired {
  uint64_t step;  // step of the evaluation that fired
  Decision decision;
};

// Feeds evaluations at steps first, first + 10, ... < end. Each decision is
// issued `margin` steps ahead of the evaluation. Returns the first decision.
inline std::optional<Fired> Feed(PhaseController& c, const Script& s, uint64_t first,
                                 uint64_t end, uint64_t margin = 5) {
  for (uint64_t step = first; step < end; step += kEvalEvery) {
    if (auto d = c.OnEvaluation(At(s, step), step + margin)) return Fired{step, *d};
  }
  return std::nullopt;
}

inline std::map<std::string, double> EvidenceMap(const Decision& d) {
  return {d.evidence.begin(), d.evidence.end()};
}

// Drives a fresh controller through ACQUISITION on a clean plateau: the
// switch is decided at step 210 and takes effect at 215, on a loss of
// exp(-0.003 t).
inline PhaseController InRefinement(const ControllerConfig& config) {
  PhaseController c(config);
  auto f = Feed(c, Script{}, kEvalEvery, 1000);
  EXPECT_TRUE(f && f->decision.to == Phase::kRefinement);
  EXPECT_EQ(c.phase_start_step(), 215u);
  return c;
}

}  // namespace spotter::controller_testing

#endif  // SPOTTER_TESTS_UNIT_CONTROLLER_SCRIPT_H_
