// Streams a scenario (tests/scenarios/scenario.h) to an in-process spotterd
// through the public gRPC API, one step at a time, and returns what the
// server decided.
//
// Deterministic: the server runs on a FakeClock that moves step_seconds per
// step, and every step is sent, acknowledged and its evaluation drained
// (Server::DrainEvaluations) before the next one, so every evaluation of
// every eval_every steps runs on exactly the steps before it, and the
// delivery margin (docs/PHASES.md) is a constant number of steps.
#ifndef SPOTTER_TESTS_SCENARIOS_RUNNER_H_
#define SPOTTER_TESTS_SCENARIOS_RUNNER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "spotter/v1/spotter.pb.h"
#include "tests/scenarios/scenario.h"

namespace spotter::scenarios {

// The FakeClock's time per step: a trainer at 50 steps/s.
inline constexpr double kStepSeconds = 0.02;
// The run's delivery budget: the margin is ceil(50 x 0.1 + 1) + 1 = 7 steps.
inline constexpr double kDeliveryBudgetSeconds = 0.1;

// One phase change, as GetTrajectory reports it.
struct Observed {
  v1::Phase from = v1::PHASE_UNSPECIFIED;
  v1::Phase to = v1::PHASE_UNSPECIFIED;
  v1::Cause cause = v1::CAUSE_UNSPECIFIED;
  uint64_t decision_step = 0;   // the evaluation (or report) that fired: evidence "step"
  uint64_t effective_step = 0;  // PhaseTransition.step: the directive's effective step
  std::string reason;
  std::map<std::string, double> evidence;
};

// One evaluation point, reduced to what the controller reads.
struct Point {
  uint64_t step = 0;
  double r90 = 0.0;
  bool censored = false;
  double pr = 0.0;
  double loss = 0.0;
};

struct ScenarioRun {
  v1::RunConfig config;  // the effective config (defaults filled in)
  std::vector<Observed> transitions;
  std::vector<Point> points;
  uint64_t last_step = 0;  // the last step streamed
  double wobble_phase = 0.0;
  double seconds = 0.0;  // wall time
};

// The RunConfig a scenario opens its run with.
v1::RunConfig ScenarioConfig(const ScenarioSpec& spec);

// Streams `spec` for `seed` to a fresh in-process server; an error when the
// server refuses anything.
absl::StatusOr<ScenarioRun> RunScenario(const ScenarioSpec& spec, uint64_t seed);

}  // namespace spotter::scenarios

#endif  // SPOTTER_TESTS_SCENARIOS_RUNNER_H_
