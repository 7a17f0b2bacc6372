#include "client/cpp/ctl/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cpp/paging.h"
#include "server/runs/run_config.h"

namespace spotter::ctl {
namespace {

const char* SpectrumName(CalibrationSpectrum s) {
  return s == CalibrationSpectrum::kCovariance ? "covariance" : "second_moment";
}

// JSON has no NaN: null.
std::string Number(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : "null"; }

}  // namespace

Observation ObservationFromPoint(const v1::TrajectoryPoint& p, CalibrationSpectrum spectrum) {
  const v1::SpectrumSummary& s =
      spectrum == CalibrationSpectrum::kCovariance ? p.covariance() : p.second_moment();
  Observation o;
  o.step = p.step();
  o.loss = p.loss();
  o.effective_rank = s.effective_rank().value();
  o.rank_censored = s.effective_rank().censored();
  o.participation_ratio = s.participation_ratio().value();
  o.pr_censored = s.participation_ratio().censored();
  // The server feeds the CI's upper end when the interval is known.
  o.rank_ci_upper = s.effective_rank().confidence_level() > 0.0
                        ? s.effective_rank().confidence_upper()
                        : std::numeric_limits<double>::quiet_NaN();
  o.loss_nonfinite = !std::isfinite(p.loss()) && !std::isnan(p.loss());
  return o;
}

grpc::Status FetchCalibrationRun(v1::SpotterService::StubInterface& stub, const std::string& run,
                                 CalibrationSpectrum spectrum, const PrepareRunCall& prepare,
                                 CalibrationRun* out) {
  v1::GetRunResponse info;
  {
    grpc::ClientContext ctx;
    prepare(&ctx, run);
    v1::GetRunRequest req;
    req.set_name(run);
    if (grpc::Status s = stub.GetRun(&ctx, req, &info); !s.ok()) return s;
  }
  v1::GetTrajectoryRequest req;
  req.set_name(run);
  v1::GetTrajectoryResponse tr;
  if (grpc::Status s =
          GetWholeTrajectory(stub, req, &tr, [&](grpc::ClientContext* ctx) { prepare(ctx, run); });
      !s.ok()) {
    return s;
  }
  out->name = run;
  out->config = ToControllerConfig(info.run().config());
  out->observations.clear();
  for (const v1::TrajectoryPoint& p : tr.points()) {
    if (p.redone()) continue;
    // The server feeds its controller only evaluations with a valid
    // covariance (a positive trace).
    if (!(p.covariance().trace() > 0.0)) continue;
    out->observations.push_back(ObservationFromPoint(p, spectrum));
  }
  out->last_first_order_step = UINT64_MAX;
  std::vector<uint64_t> margins;
  for (const v1::PhaseTransition& t : tr.transitions()) {
    if (t.decision_step() > 0 && t.step() >= t.decision_step()) {
      margins.push_back(t.step() - t.decision_step());
    }
    // A CONTROL run left first-order training at its first step out of
    // ACQUISITION (a switch, an operator's force, a finish).
    if (info.run().config().mode() != v1::MODE_ADVISE && t.from_phase() == v1::PHASE_ACQUISITION &&
        t.to_phase() != v1::PHASE_ACQUISITION && out->last_first_order_step == UINT64_MAX) {
      out->last_first_order_step = t.step() > 0 ? t.step() - 1 : 0;
    }
  }
  out->margin_steps = 0;
  if (!margins.empty()) {
    std::nth_element(margins.begin(), margins.begin() + margins.size() / 2, margins.end());
    out->margin_steps = margins[margins.size() / 2];
  }
  return grpc::Status::OK;
}

std::string CalibrationJson(const Calibration& c, CalibrationSpectrum spectrum,
                            const CalibrationOptions& options, const std::string& command) {
  std::vector<std::string> runs;
  for (const RunSignals& r : c.runs) {
    runs.push_back(absl::StrFormat(
        "{\"run\": \"%s\", \"evaluations\": %d, \"rank_fraction_ci_upper\": %s, "
        "\"rank_spread\": %s, \"pr_drop_per_epoch\": %s, \"loss_decrease_per_epoch\": %s, "
        "\"switch_step\": %s, \"switch_reason\": \"%s\", \"own_switch_step\": %s}",
        absl::CEscape(r.name), r.evaluations, Number(r.rank_fraction_ci_upper),
        Number(r.rank_spread), Number(r.abs_pr_drop_per_epoch), Number(r.loss_decrease_per_epoch),
        r.switch_step ? absl::StrCat(*r.switch_step) : "null", absl::CEscape(r.switch_reason),
        r.own_switch_step ? absl::StrCat(*r.own_switch_step) : "null"));
  }
  std::vector<std::string> skipped;
  for (const std::string& s : c.skipped) skipped.push_back("\"" + absl::CEscape(s) + "\"");
  return absl::StrFormat(
      "{\"spectrum\": \"%s\", \"coverage\": %s, \"run_quantile\": %s, \"proposed\": "
      "{\"rank_fraction_max\": %s, \"plateau_epsilon\": %s, \"id_drop_threshold\": %s}, "
      "\"runs\": [%s], \"skipped\": [%s], \"runs_switched\": %d, \"command\": \"%s\"}\n",
      SpectrumName(spectrum), Number(options.coverage), Number(options.run_quantile),
      Number(c.rank_fraction_max), Number(c.plateau_epsilon), Number(c.id_drop_threshold),
      absl::StrJoin(runs, ", "), absl::StrJoin(skipped, ", "), c.runs_switched,
      absl::CEscape(command));
}

std::string CalibrationText(const Calibration& c, CalibrationSpectrum spectrum,
                            const CalibrationOptions& options) {
  std::string out = absl::StrFormat(
      "spectrum %s; per run the %g-quantile of each measurement over its evaluations past the "
      "warm-up (loss rate: the %g-quantile); switch@: the step whose evaluation decides the "
      "switch in a replay with the proposed thresholds (own: with the run's own)\n"
      "%-32s %6s %14s %12s %14s %14s %10s %10s\n",
      SpectrumName(spectrum), options.run_quantile, 1.0 - options.run_quantile, "run", "evals",
      "rank_frac_ciu", "r90_spread", "|pr_rate|/ep", "loss_rate/ep", "switch@", "own");
  for (const RunSignals& r : c.runs) {
    absl::StrAppendFormat(&out, "%-32s %6d %14.4f %12.4f %14.4f %14.4f %10s %10s\n", r.name,
                          r.evaluations, r.rank_fraction_ci_upper, r.rank_spread,
                          r.abs_pr_drop_per_epoch, r.loss_decrease_per_epoch,
                          r.switch_step ? absl::StrCat(*r.switch_step) : "never",
                          r.own_switch_step ? absl::StrCat(*r.own_switch_step) : "never");
  }
  for (const std::string& s : c.skipped) {
    absl::StrAppendFormat(&out, "%-32s no evaluation past the warm-up: skipped\n", s);
  }
  absl::StrAppendFormat(&out,
                        "proposed (the %g-quantile over %d runs, next two-digit value above it):\n"
                        "  rank_fraction_max %g\n  plateau_epsilon %g\n  id_drop_threshold %g\n"
                        "replayed with them, %d of %d runs would switch to natural gradient\n",
                        options.coverage, static_cast<int>(c.runs.size()), c.rank_fraction_max,
                        c.plateau_epsilon, c.id_drop_threshold, c.runs_switched,
                        static_cast<int>(c.runs.size()));
  return out;
}

absl::StatusOr<CalibrateArgs> MakeCalibrateArgs(std::vector<std::string> runs,
                                                const std::string& spectrum, double coverage,
                                                double run_quantile, bool json) {
  CalibrateArgs a;
  if (spectrum != "covariance" && spectrum != "second_moment") {
    return absl::InvalidArgumentError("--spectrum must be covariance or second_moment, got " +
                                      spectrum);
  }
  if (runs.empty()) return absl::InvalidArgumentError("calibrate needs at least one run");
  a.spectrum = spectrum == "covariance" ? CalibrationSpectrum::kCovariance
                                        : CalibrationSpectrum::kSecondMoment;
  a.options.coverage = coverage;
  a.options.run_quantile = run_quantile;
  a.json = json;
  a.command =
      absl::StrFormat("spotterctl calibrate --spectrum=%s --coverage=%g --run_quantile=%g %s",
                      spectrum, coverage, run_quantile, absl::StrJoin(runs, " "));
  a.runs = std::move(runs);
  return a;
}

int CalibrateCommand(v1::SpotterService::StubInterface& stub, const CalibrateArgs& args,
                     const PrepareRunCall& prepare,
                     const std::function<int(const grpc::Status&)>& fail) {
  std::vector<CalibrationRun> runs(args.runs.size());
  for (size_t i = 0; i < args.runs.size(); ++i) {
    grpc::Status s = FetchCalibrationRun(stub, args.runs[i], args.spectrum, prepare, &runs[i]);
    if (!s.ok()) return fail(s);
  }
  absl::StatusOr<Calibration> c = Calibrate(runs, args.options);
  if (!c.ok()) {
    std::fprintf(stderr, "spotterctl: calibrate: %s\n", std::string(c.status().message()).c_str());
    return c.status().code() == absl::StatusCode::kInvalidArgument ? 64 : 7;
  }
  const std::string out = args.json ? CalibrationJson(*c, args.spectrum, args.options, args.command)
                                    : CalibrationText(*c, args.spectrum, args.options);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace spotter::ctl
