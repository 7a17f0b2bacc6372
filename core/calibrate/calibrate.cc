#include "core/calibrate/calibrate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace spotter {
namespace {

// The measurements of one run at every evaluation that reached the
// ACQUISITION exit's tests, replayed with the exit unable to fire.
std::vector<AcquisitionSignals> CollectSignals(const CalibrationRun& run) {
  ControllerConfig c = run.config;
  // No rank fraction is below this (r90 >= 1 of at most 2^31 rows): the
  // exit's conjunction never holds, so the run stays in ACQUISITION and
  // every evaluation past the warm-up is measured.
  c.rank_fraction_max = std::numeric_limits<double>::min();
  PhaseController controller(c);
  std::vector<AcquisitionSignals> out;
  for (const Observation& obs : run.observations) {
    if (obs.step > run.last_first_order_step) break;
    controller.OnEvaluation(obs, obs.step + run.margin_steps);
    const std::optional<AcquisitionSignals>& s = controller.acquisition_signals();
    if (s && s->step == obs.step && (out.empty() || out.back().step != obs.step)) {
      out.push_back(*s);
    }
  }
  return out;
}

// Replays `run` with `config` until its ACQUISITION exit decides: the step
// of the evaluation that decided the switch to REFINEMENT, and its reason
// (nullopt: no switch within the first-order part).
std::optional<uint64_t> ReplaySwitch(const CalibrationRun& run, const ControllerConfig& config,
                                     std::string* reason) {
  PhaseController controller(config);
  for (const Observation& obs : run.observations) {
    if (obs.step > run.last_first_order_step) break;
    std::optional<Decision> d = controller.OnEvaluation(obs, obs.step + run.margin_steps);
    if (!d) continue;
    if (d->from != Phase::kAcquisition || d->to != Phase::kRefinement) return std::nullopt;
    if (reason != nullptr) *reason = d->reason;
    return d->decision_step;
  }
  return std::nullopt;
}

}  // namespace

double EmpiricalQuantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  // The smallest index i (1-based) with i >= q n; the tiny slack keeps
  // q n = 3.0000000000000004 from skipping to the 4th value.
  size_t i = static_cast<size_t>(std::ceil(q * n - 1e-9));
  i = std::clamp<size_t>(i, 1, values.size());
  return values[i - 1];
}

double RoundUpTwoDigits(double x) {
  const int e = static_cast<int>(std::floor(std::log10(x))) - 1;  // unit of the 2nd digit
  // k x 10^e, computed as a division by a power of ten when e < 0 so that
  // 0.32 is the double nearest 0.32.
  auto value = [e](double k) { return e < 0 ? k / std::pow(10.0, -e) : k * std::pow(10.0, e); };
  double k = std::floor(x / std::pow(10.0, e)) + 1.0;
  while (value(k - 1.0) > x) k -= 1.0;
  while (value(k) <= x) k += 1.0;
  return value(k);
}

absl::StatusOr<Calibration> Calibrate(const std::vector<CalibrationRun>& runs,
                                      const CalibrationOptions& options) {
  if (!(options.run_quantile > 0.0 && options.run_quantile <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "run_quantile = %g is out of range: expected (0, 1]", options.run_quantile));
  }
  if (!(options.coverage > 0.0 && options.coverage <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("coverage = %g is out of range: expected (0, 1]", options.coverage));
  }
  Calibration cal;
  std::vector<const CalibrationRun*> used;
  std::vector<double> fraction, spread, pr_rate;
  for (const CalibrationRun& run : runs) {
    if (absl::Status s = run.config.Validate(); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("run %s: its config is invalid: %s", run.name, s.message()));
    }
    const std::vector<AcquisitionSignals> signals = CollectSignals(run);
    if (signals.empty()) {
      cal.skipped.push_back(run.name);
      continue;
    }
    std::vector<double> f, sp, pr, loss;
    for (const AcquisitionSignals& s : signals) {
      f.push_back(s.rank_fraction_ci_upper);
      sp.push_back(s.rank_spread);
      pr.push_back(std::abs(s.pr_drop_per_epoch));
      if (std::isfinite(s.loss_decrease_per_epoch)) loss.push_back(s.loss_decrease_per_epoch);
    }
    RunSignals r;
    r.name = run.name;
    r.evaluations = static_cast<int>(signals.size());
    r.rank_fraction_ci_upper = EmpiricalQuantile(f, options.run_quantile);
    r.rank_spread = EmpiricalQuantile(sp, options.run_quantile);
    r.abs_pr_drop_per_epoch = EmpiricalQuantile(pr, options.run_quantile);
    // "Still falling" holds when the rate is ABOVE loss_decrease_min: the
    // rate a run_quantile share of evaluations reach is the lower quantile.
    r.loss_decrease_per_epoch = loss.empty()
                                    ? std::numeric_limits<double>::quiet_NaN()
                                    : EmpiricalQuantile(loss, 1.0 - options.run_quantile + 1e-12);
    fraction.push_back(r.rank_fraction_ci_upper);
    spread.push_back(r.rank_spread);
    pr_rate.push_back(r.abs_pr_drop_per_epoch);
    cal.runs.push_back(std::move(r));
    used.push_back(&run);
  }
  if (cal.runs.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "none of the %d runs has an evaluation past its warm-up with a full plateau span "
        "(window_evals x plateau_windows evaluations after min_dwell_steps): calibrate needs "
        "runs that trained first-order beyond warmup_fraction x total_steps",
        runs.size()));
  }
  // Each test is strict ("<"): the proposal is the next two-digit number
  // strictly above the coverage quantile, within the field's range.
  constexpr double kFloor = 1e-4;
  cal.rank_fraction_max = std::min(
      1.0, RoundUpTwoDigits(std::max(kFloor, EmpiricalQuantile(fraction, options.coverage))));
  cal.plateau_epsilon = std::min(
      9.9, RoundUpTwoDigits(std::max(kFloor, EmpiricalQuantile(spread, options.coverage))));
  cal.id_drop_threshold = std::min(
      9.9, RoundUpTwoDigits(std::max(kFloor, EmpiricalQuantile(pr_rate, options.coverage))));
  for (size_t i = 0; i < used.size(); ++i) {
    RunSignals& r = cal.runs[i];
    r.own_switch_step = ReplaySwitch(*used[i], used[i]->config, nullptr);
    ControllerConfig c = used[i]->config;
    c.rank_fraction_max = cal.rank_fraction_max;
    c.plateau_epsilon = cal.plateau_epsilon;
    c.id_drop_threshold = cal.id_drop_threshold;
    r.switch_step = ReplaySwitch(*used[i], c, &r.switch_reason);
    if (r.switch_step) ++cal.runs_switched;
  }
  return cal;
}

}  // namespace spotter
