// `spotterctl calibrate RUN...`: proposes the ACQUISITION thresholds
// (rank_fraction_max, plateau_epsilon, id_drop_threshold) from a population
// of runs on the server, with the statistics behind them (core/calibrate/,
// docs/PHASES.md "Calibrating the thresholds"). Each run's effective config
// and whole trajectory are read from the server; the calibration itself runs
// here, through the same PhaseController the server runs.
#ifndef SPOTTER_CLIENT_CPP_CTL_CALIBRATE_H_
#define SPOTTER_CLIENT_CPP_CTL_CALIBRATE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/calibrate/calibrate.h"
#include "grpcpp/grpcpp.h"
#include "spotter/v1/spotter.grpc.pb.h"

namespace spotter::ctl {

// Which spectrum the observations are read from: the gradient covariance
// (what the server's triggers read) or the uncentred second moment (the
// empirical Fisher), to compare the two on the same runs.
enum class CalibrationSpectrum { kCovariance, kSecondMoment };

// Sets up one call about `run` (deadline, token, x-spotter-run).
using PrepareRunCall = std::function<void(grpc::ClientContext*, const std::string& run)>;

// The observation the server's controller would have been fed for `p`, from
// the chosen spectrum.
Observation ObservationFromPoint(const v1::TrajectoryPoint& p, CalibrationSpectrum spectrum);

// `run`'s calibration input: its controller config, its points (redone
// points skipped), how far it trained first-order (a CONTROL run: up to its
// first automatic switch; ADVISE: all of it) and its median delivery margin.
grpc::Status FetchCalibrationRun(v1::SpotterService::StubInterface& stub, const std::string& run,
                                 CalibrationSpectrum spectrum, const PrepareRunCall& prepare,
                                 CalibrationRun* out);

// The proposal and its statistics as one JSON object (docs/OPERATIONS.md).
std::string CalibrationJson(const Calibration& c, CalibrationSpectrum spectrum,
                            const CalibrationOptions& options, const std::string& command);

// The same for a terminal: a table of the runs and the proposed fields.
std::string CalibrationText(const Calibration& c, CalibrationSpectrum spectrum,
                            const CalibrationOptions& options);

struct CalibrateArgs {
  std::vector<std::string> runs;
  CalibrationSpectrum spectrum = CalibrationSpectrum::kCovariance;
  CalibrationOptions options;
  bool json = false;
  std::string command;  // recorded in the JSON output
};

// The command's arguments from its flags; INVALID_ARGUMENT names a bad one.
absl::StatusOr<CalibrateArgs> MakeCalibrateArgs(std::vector<std::string> runs,
                                                const std::string& spectrum, double coverage,
                                                double run_quantile, bool json);

// The command: fetches the runs, calibrates, prints. Returns the exit code:
// 0; fail(status) for a failed call; 64 for options out of range; 7 when no
// run has an evaluation past its warm-up.
int CalibrateCommand(v1::SpotterService::StubInterface& stub, const CalibrateArgs& args,
                     const PrepareRunCall& prepare,
                     const std::function<int(const grpc::Status&)>& fail);

}  // namespace spotter::ctl

#endif  // SPOTTER_CLIENT_CPP_CTL_CALIBRATE_H_
