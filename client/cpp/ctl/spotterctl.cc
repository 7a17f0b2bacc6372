// spotterctl: inspect and steer the runs of a spotterd.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/cpp/channel.h"
#include "client/cpp/ctl/backup.h"
#include "client/cpp/ctl/calibrate.h"
#include "client/cpp/ctl/format.h"
#include "client/cpp/ctl/plot.h"
#include "client/cpp/ctl/scale.h"
#include "client/cpp/paging.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spotter/v1/spotter.grpc.pb.h"

ABSL_FLAG(std::string, server, "",
          "spotterd address host:port [$SPOTTER_SERVER, else 127.0.0.1:50051]");
ABSL_FLAG(double, timeout, 10.0, "deadline of each unary call, seconds");
ABSL_FLAG(std::string, ca, "",
          "TLS: PEM file of the CA that signed the server's certificate (empty: plaintext) "
          "[$SPOTTER_CA]");
ABSL_FLAG(std::string, cert, "", "mutual TLS: this client's certificate (PEM) [$SPOTTER_CERT]");
ABSL_FLAG(std::string, key, "", "mutual TLS: this client's private key (PEM) [$SPOTTER_KEY]");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: the name the server's certificate carries, when it differs from --server's host "
          "[$SPOTTER_TLS_SERVER_NAME]");
ABSL_FLAG(std::string, token, "",
          "bearer token sent with every call [$SPOTTER_TOKEN]; --token= with an empty value "
          "and no $SPOTTER_TOKEN sends none");
ABSL_FLAG(std::string, output, "text",
          "text, or json: every command prints the server's response as JSON (watch: one "
          "event per line)");
ABSL_FLAG(std::string, format, "csv", "trajectory: output format, csv or json");
ABSL_FLAG(uint64_t, since, 0, "trajectory, plot: only points at or after this step");
ABSL_FLAG(uint64_t, until, 0, "trajectory, plot: only points at or before this step (0: no bound)");
ABSL_FLAG(uint32_t, max_points, 0,
          "trajectory: downsample to at most this many points (>= 4; per bucket of steps the "
          "lowest and highest effective rank); 0: every point");
ABSL_FLAG(bool, history, false, "watch: print the run's history first");
ABSL_FLAG(std::string, state, "", "runs: only runs in this state (active, finished)");
ABSL_FLAG(std::string, phase, "",
          "override: force this phase (acquisition, refinement, polish, done)");
ABSL_FLAG(bool, hold, false, "override --phase: keep automatic triggers off until --release");
ABSL_FLAG(double, pin_lr, -1.0, "override: pin a constant learning rate (held until --release)");
ABSL_FLAG(bool, natural_gradient, false, "override --pin_lr: with the natural-gradient optimizer");
ABSL_FLAG(bool, release, false, "override: return the run to automatic control");
ABSL_FLAG(uint64_t, at_step, 0,
          "override --phase/--pin_lr: the step it takes effect at (0 = the earliest every rank "
          "can get it; an earlier step is refused, naming the earliest)");
ABSL_FLAG(std::string, reason, "", "override, finish: why (recorded in the run's history)");
ABSL_FLAG(std::string, o, "", "plot: the PNG file to write");
ABSL_FLAG(int32_t, width, 1200, "plot: image width, pixels");
ABSL_FLAG(int32_t, height, 900, "plot: image height, pixels");
ABSL_FLAG(std::string, out, "", "backup: the file to write (must not exist)");
ABSL_FLAG(std::string, spectrum, "covariance", "calibrate: covariance or second_moment");
ABSL_FLAG(double, coverage, 0.8, "calibrate: share of runs whose typical evaluation passes");
ABSL_FLAG(double, run_quantile, 0.5, "calibrate: share of a run's evaluations a test holds at");

namespace v1 = spotter::v1;

namespace {

constexpr char kUsage[] =
    "inspect and steer the runs of a spotterd.\n"
    "Usage: spotterctl [--server=host:port] [--ca=CA.pem [--cert=C.pem --key=K.pem]]\n"
    "                  [--token=T] [--output=text|json] <command> [args]\n"
    "Commands:\n"
    "  runs [--state=active|finished]        list runs\n"
    "  show RUN                              config, phase, directive, ranks, phase history\n"
    "  watch RUN [--history]                 stream points, transitions and directives live\n"
    "  trajectory RUN [--format=csv|json] [--since=STEP] [--until=STEP] [--max_points=N]\n"
    "  plot RUN -o FILE.png [--width=1200] [--height=900] [--since=STEP] [--until=STEP]\n"
    "                                        rank, PR, loss and LR against steps, one PNG\n"
    "  override RUN --phase=P [--hold] | --pin_lr=LR [--natural_gradient] | --release\n"
    "             [--at_step=S] [--reason=TEXT]\n"
    "  finish RUN [--reason=TEXT]            issue the final stop and close the run\n"
    "  delete RUN                            forget the run and its history\n"
    "  health                                gRPC health of the server\n"
    "  calibrate RUN... [--spectrum=S] [--coverage=0.8] [--run_quantile=0.5]\n"
    "                                        propose ACQUISITION thresholds from these runs\n"
    "Several replicas behind a gateway (docs/SCALING.md):\n"
    "  runs --replicas=A,B,...               every replica's runs, merged, with their replica\n"
    "  health --replicas=A,B,...             health of each replica\n"
    "  where RUN                             which replica answers for RUN at --server\n"
    "  move RUN --from=A --to=B              freeze RUN on A, copy it with its history to B;\n"
    "                                        A keeps a tombstone answering UNAVAILABLE\n"
    "  rebalance --gateway=GW --replicas=A,B,... [--dry_run] [--finish]\n"
    "                                        move every run GW routes to another replica;\n"
    "                                        --finish: then delete the tombstones\n"
    "  backup --out=FILE                     admin: a consistent copy of the server's state\n"
    "                                        file, taken while it serves; restore: stop\n"
    "                                        spotterd, copy FILE over --state_file, start it\n"
    "Environment: SPOTTER_SERVER, SPOTTER_TOKEN, SPOTTER_CA, SPOTTER_CERT, SPOTTER_KEY and\n"
    "SPOTTER_TLS_SERVER_NAME stand in for the flags they name when those are not given.\n"
    "Exit codes: 0 done; 1 health: not serving; 2 the server refused the call; 3 no such run;\n"
    "4 the server cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED); 5 not authenticated or\n"
    "not allowed (UNAUTHENTICATED, PERMISSION_DENIED); 6 a local file cannot be read or\n"
    "written, or a backup did not arrive intact; 7 calibrate: no run has an evaluation past\n"
    "its warm-up; 64 bad usage.\n";

// Exit codes (kUsage, docs/OPERATIONS.md "spotterctl").
constexpr int kExitRefused = 2, kExitNotFound = 3, kExitUnreachable = 4, kExitAuth = 5,
              kExitLocal = 6, kExitUsage = 64;

std::string g_token;  // the bearer token every call sends
std::string g_run;    // the run the command is about, sent as the run header
bool g_json = false;  // --output json

int Fail(const grpc::Status& s) {
  std::cerr << "spotterctl: " << s.error_message() << " (gRPC code " << s.error_code() << ")\n";
  switch (s.error_code()) {
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitUnreachable;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitAuth;
    default:
      return kExitRefused;
  }
}

int Usage(const std::string& why) {
  std::cerr << "spotterctl: " << why << "\n\n" << kUsage;
  return kExitUsage;
}

// Every unary call: the deadline, the token and the run header.
void Prepare(grpc::ClientContext* ctx) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout))));
  spotter::AddBearerToken(ctx, g_token);
  if (!g_run.empty()) spotter::AddRunHeader(ctx, g_run);
}

// Prints `m` as JSON (field names as in the proto); `one_line` for streams.
int PrintJson(const google::protobuf::Message& m, bool one_line = false) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = !one_line;
  opts.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(m, &json, opts).ok()) {
    std::cerr << "spotterctl: cannot render JSON\n";
    return kExitLocal;
  }
  std::cout << json << (one_line || json.empty() || json.back() != '\n' ? "\n" : "");
  std::cout.flush();
  return 0;
}

// The flag's value, else the environment variable's, else `fallback`.
std::string FlagOrEnv(const std::string& flag, const char* env, const std::string& fallback = "") {
  if (!flag.empty()) return flag;
  const char* v = std::getenv(env);
  return v != nullptr && *v != '\0' ? v : fallback;
}

int Runs(v1::SpotterService::Stub& stub) {
  v1::ListRunsRequest req;
  const std::string state = absl::GetFlag(FLAGS_state);
  if (state == "active")
    req.set_state(v1::RUN_STATE_ACTIVE);
  else if (state == "finished")
    req.set_state(v1::RUN_STATE_FINISHED);
  else if (!state.empty())
    return Usage("--state must be active or finished");
  v1::ListRunsResponse resp;
  if (grpc::Status s = spotter::ListAllRuns(stub, req, &resp, Prepare); !s.ok()) return Fail(s);
  if (g_json) return PrintJson(resp);
  std::printf("%-28s %-9s %-8s %-12s %-13s %-7s %-24s %s\n", "RUN", "STATE", "MODE", "PHASE",
              "STEP", "RANKS", "R90", "PR");
  for (const v1::RunSummary& r : resp.runs()) {
    std::printf(
        "%-28s %-9s %-8s %-12s %-13s %-7s %-24s %s\n", r.name().c_str(),
        r.state() == v1::RUN_STATE_ACTIVE ? "active" : "finished",
        r.mode() == v1::MODE_ADVISE ? "advise" : "control", spotter::PhaseLabel(r.phase()).c_str(),
        absl::StrFormat("%d/%d", r.max_step(), r.total_steps()).c_str(),
        absl::StrFormat("%d/%d", r.connected_ranks(), r.world_size()).c_str(),
        r.has_latest()
            ? spotter::FormatEstimate(r.latest().covariance().effective_rank(), 0).c_str()
            : "-",
        r.has_latest()
            ? spotter::FormatEstimate(r.latest().covariance().participation_ratio(), 1).c_str()
            : "-");
  }
  return 0;
}

int Show(v1::SpotterService::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::GetRunRequest req;
  req.set_name(name);
  v1::GetRunResponse resp;
  if (grpc::Status s = stub.GetRun(&ctx, req, &resp); !s.ok()) return Fail(s);
  if (g_json) return PrintJson(resp);
  const v1::RunInfo& r = resp.run();
  const v1::RunConfig& c = r.config();
  int connected = 0;
  for (const auto& rk : r.ranks()) connected += rk.connected();
  std::printf("run %s  (%s, %s%s)  phase %s  step %lu/%lu  ranks %d/%u connected  created %s\n",
              r.name().c_str(), r.state() == v1::RUN_STATE_ACTIVE ? "active" : "finished",
              c.mode() == v1::MODE_ADVISE ? "advise" : "control",
              r.overridden() ? ", operator hold" : "", spotter::PhaseLabel(r.phase()).c_str(),
              static_cast<unsigned long>(r.max_step()), static_cast<unsigned long>(c.total_steps()),
              connected, c.world_size(), spotter::FormatTimestamp(r.created_at()).c_str());
  std::printf(
      "config: k=%u l=%u projection %s seed %lu, %s window (decay %g, %lu steps), "
      "eval every %u steps, peak lr %g, base lr %g, steps/epoch %lu\n",
      c.sketch_dim(), c.sketch_rows(),
      absl::AsciiStrToLower(v1::ProjectionKind_Name(c.projection().kind()).substr(16)).c_str(),
      static_cast<unsigned long>(c.projection().seed()),
      c.window() == v1::WINDOW_KIND_FIXED ? "fixed" : "exponential", c.decay(),
      static_cast<unsigned long>(c.window_steps()), c.eval_every(), c.peak_lr(), c.base_lr(),
      static_cast<unsigned long>(c.steps_per_epoch()));
  if (r.has_directive()) {
    std::printf("directive %s\n  reason: %s\n", spotter::FormatDirective(r.directive()).c_str(),
                r.directive().reason().c_str());
  }
  if (r.has_latest()) {
    const v1::TrajectoryPoint& p = r.latest();
    std::printf("latest: %s\n", spotter::FormatPoint(p).c_str());
    std::printf(
        "        trace %.4g  top eigenvalue %s  stable rank %s  PR raw %.2f  "
        "effective samples %.0f  kurtosis %.2f  rows %lu\n",
        p.covariance().trace(), spotter::FormatEstimate(p.covariance().top_eigenvalue(), 4).c_str(),
        spotter::FormatEstimate(p.covariance().stable_rank(), 1).c_str(),
        p.covariance().participation_ratio_raw(), p.effective_samples(), p.covariance().kurtosis(),
        static_cast<unsigned long>(p.rows()));
    std::printf(
        "        sketch bounds (what the sketch certifies for this window, not error bars): "
        "r90 %s  PR %s\n",
        spotter::FormatSketchBound(p.covariance().effective_rank(), 0).c_str(),
        spotter::FormatSketchBound(p.covariance().participation_ratio(), 1).c_str());
  }
  std::printf("ranks:\n  %-5s %-9s %-9s %-9s %-11s %-8s %s\n", "RANK", "STEP", "SEQ", "UPLOADS",
              "ROWS", "REJECTS", "CONNECTED");
  for (const v1::RankStatus& k : r.ranks()) {
    std::printf("  %-5u %-9lu %-9lu %-9lu %-11lu %-8lu %s\n", k.rank(),
                static_cast<unsigned long>(k.last_step()), static_cast<unsigned long>(k.last_seq()),
                static_cast<unsigned long>(k.uploads()), static_cast<unsigned long>(k.rows()),
                static_cast<unsigned long>(k.rejects()), k.connected() ? "yes" : "no");
  }
  if (r.restarts_size() > 0) {
    std::printf("restarts (%d):\n", r.restarts_size());
    for (const v1::RestartEvent& e : r.restarts()) {
      std::printf(
          "  #%u rank %u resumed at step %lu at %s (run was at step %lu: %s; %lu uploads "
          "before)\n",
          e.generation(), e.rank(), static_cast<unsigned long>(e.resume_step()),
          spotter::FormatTimestamp(e.time()).c_str(),
          static_cast<unsigned long>(e.redone_through()),
          e.resume_step() <= e.redone_through() ? "steps redone, their points are the "
                                                  "first pass's"
                                                : "nothing redone",
          static_cast<unsigned long>(e.uploads_before()));
    }
  }
  if (const std::string rb = spotter::FormatRollbacks(r.transitions()); !rb.empty()) {
    std::printf("%s\n", rb.c_str());
  }
  std::printf("phase history (%d transitions):\n", r.transitions_size());
  for (const v1::PhaseTransition& t : r.transitions()) {
    std::printf("  %s\n    %s\n", spotter::FormatTransition(t).c_str(), t.reason().c_str());
    if (t.evidence_size() > 0)
      std::printf("    evidence: %s\n", spotter::FormatEvidence(t).c_str());
  }
  return 0;
}

int Watch(v1::SpotterService::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  v1::WatchRunRequest req;
  req.set_name(name);
  req.set_include_history(absl::GetFlag(FLAGS_history));
  spotter::AddBearerToken(&ctx, g_token);
  spotter::AddRunHeader(&ctx, name);
  auto reader = stub.WatchRun(&ctx, req);
  v1::WatchRunResponse ev;
  while (reader->Read(&ev)) {
    if (g_json) {
      if (int rc = PrintJson(ev, /*one_line=*/true); rc != 0) return rc;
      continue;
    }
    switch (ev.event_case()) {
      case v1::WatchRunResponse::kPoint:
        std::printf("%s\n", spotter::FormatPoint(ev.point()).c_str());
        break;
      case v1::WatchRunResponse::kTransition:
        std::printf("== transition %s\n   %s\n", spotter::FormatTransition(ev.transition()).c_str(),
                    ev.transition().reason().c_str());
        break;
      case v1::WatchRunResponse::kDirective:
        std::printf("-> directive %s\n", spotter::FormatDirective(ev.directive()).c_str());
        break;
      case v1::WatchRunResponse::kState:
        std::printf("run %s\n", ev.state() == v1::RUN_STATE_FINISHED ? "finished" : "ended");
        break;
      default:
        break;
    }
    std::fflush(stdout);
  }
  grpc::Status s = reader->Finish();
  return s.ok() ? 0 : Fail(s);
}

int Trajectory(v1::SpotterService::Stub& stub, const std::string& name) {
  v1::GetTrajectoryRequest req;
  req.set_name(name);
  req.set_since_step(absl::GetFlag(FLAGS_since));
  req.set_until_step(absl::GetFlag(FLAGS_until));
  req.set_max_points(absl::GetFlag(FLAGS_max_points));
  v1::GetTrajectoryResponse resp;
  if (grpc::Status s = spotter::GetWholeTrajectory(stub, req, &resp, Prepare); !s.ok()) {
    return Fail(s);
  }
  const std::string format = g_json ? "json" : absl::GetFlag(FLAGS_format);
  if (format == "json") return PrintJson(resp);
  if (format != "csv") return Usage("--format must be csv or json");
  std::printf(
      "step,time_unix,phase,loss,lr,effective_rank,effective_rank_lower,"
      "effective_rank_upper,effective_rank_censored,rank_fraction,participation_ratio,"
      "participation_ratio_lower,participation_ratio_upper,participation_ratio_raw,"
      "trace,top_eigenvalue,stable_rank,noise_scale,val_metric,effective_samples,rows,redone,"
      "confidence_level,effective_rank_ci_lower,effective_rank_ci_upper,"
      "participation_ratio_ci_lower,participation_ratio_ci_upper,participation_ratio_censored,"
      "kurtosis\n");
  for (const v1::TrajectoryPoint& p : resp.points()) {
    const v1::SpectrumSummary& c = p.covariance();
    std::printf(
        "%lu,%.3f,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%d,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,"
        "%.9g,%.9g,%.9g,%lu,%d,%.9g,%.9g,%.9g,%.9g,%.9g,%d,%.9g\n",
        static_cast<unsigned long>(p.step()), p.time().seconds() + p.time().nanos() * 1e-9,
        spotter::PhaseLabel(p.phase()).c_str(), p.loss(), p.lr(), c.effective_rank().value(),
        c.effective_rank().lower(), c.effective_rank().upper(),
        c.effective_rank().censored() ? 1 : 0, c.rank_fraction().value(),
        c.participation_ratio().value(), c.participation_ratio().lower(),
        c.participation_ratio().upper(), c.participation_ratio_raw(), c.trace(),
        c.top_eigenvalue().value(), c.stable_rank().value(), p.noise_scale(), p.val_metric(),
        p.effective_samples(), static_cast<unsigned long>(p.rows()), p.redone() ? 1 : 0,
        c.participation_ratio().confidence_level(), c.effective_rank().confidence_lower(),
        c.effective_rank().confidence_upper(), c.participation_ratio().confidence_lower(),
        c.participation_ratio().confidence_upper(), c.participation_ratio().censored() ? 1 : 0,
        c.kurtosis());
  }
  return 0;
}

int Plot(v1::SpotterService::Stub& stub, const std::string& name) {
  const std::string path = absl::GetFlag(FLAGS_o);
  if (path.empty()) return Usage("plot needs -o FILE.png");
  v1::GetTrajectoryRequest req;
  req.set_name(name);
  req.set_since_step(absl::GetFlag(FLAGS_since));
  req.set_until_step(absl::GetFlag(FLAGS_until));
  // Two points per pixel column keep every excursion (min/max per bucket)
  // whatever the run's length; the server reads them from its store.
  req.set_max_points(std::max(4, 2 * absl::GetFlag(FLAGS_width)));
  v1::GetTrajectoryResponse resp;
  if (grpc::Status s = spotter::GetWholeTrajectory(stub, req, &resp, Prepare); !s.ok()) {
    return Fail(s);
  }
  auto image =
      spotter::DrawTrajectory(resp, name, absl::GetFlag(FLAGS_width), absl::GetFlag(FLAGS_height));
  if (!image.ok()) {
    std::cerr << "spotterctl: " << image.status().message() << "\n";
    return kExitRefused;
  }
  auto png = spotter::EncodePng(*image);
  if (!png.ok()) {
    std::cerr << "spotterctl: " << png.status().message() << "\n";
    return kExitLocal;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(png->data(), static_cast<std::streamsize>(png->size()));
  out.close();
  if (!out) {
    std::cerr << "spotterctl: cannot write " << path << "\n";
    return kExitLocal;
  }
  if (g_json) {
    std::printf(
        "{\"file\": \"%s\", \"width\": %d, \"height\": %d, \"points\": %d, "
        "\"transitions\": %d}\n",
        absl::CEscape(path).c_str(), image->width, image->height, resp.points_size(),
        resp.transitions_size());
    return 0;
  }
  std::printf("wrote %s (%dx%d, %d points, %d transitions)\n", path.c_str(), image->width,
              image->height, resp.points_size(), resp.transitions_size());
  return 0;
}

int Override(v1::SpotterService::Stub& stub, const std::string& name) {
  v1::OverridePhaseRequest req;
  req.set_name(name);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  req.set_effective_step(absl::GetFlag(FLAGS_at_step));
  const std::string phase = absl::AsciiStrToUpper(absl::GetFlag(FLAGS_phase));
  const double pin_lr = absl::GetFlag(FLAGS_pin_lr);
  const int actions = !phase.empty() + (pin_lr >= 0) + absl::GetFlag(FLAGS_release);
  if (actions != 1) return Usage("override needs exactly one of --phase, --pin_lr, --release");
  if (!phase.empty()) {
    v1::Phase p;
    if (!v1::Phase_Parse("PHASE_" + phase, &p) || p == v1::PHASE_UNSPECIFIED) {
      return Usage("--phase must be acquisition, refinement, polish or done");
    }
    req.set_action(v1::OverridePhaseRequest::ACTION_FORCE_PHASE);
    req.set_phase(p);
    req.set_hold(absl::GetFlag(FLAGS_hold));
  } else if (pin_lr >= 0) {
    req.set_action(v1::OverridePhaseRequest::ACTION_PIN_DIRECTIVE);
    v1::Directive* d = req.mutable_directive();
    d->mutable_lr()->set_kind(v1::LrSchedule::KIND_CONSTANT);
    d->mutable_lr()->set_start_lr(pin_lr);
    d->mutable_lr()->set_end_lr(pin_lr);
    if (absl::GetFlag(FLAGS_natural_gradient)) {
      d->mutable_optimizer()->set_kind(v1::OptimizerInstruction::KIND_NATURAL_GRADIENT);
      d->mutable_optimizer()->set_damping(1e-3);
      d->mutable_optimizer()->set_factor_update_interval(10);
      d->mutable_optimizer()->set_inverse_update_interval(100);
    } else {
      d->mutable_optimizer()->set_kind(v1::OptimizerInstruction::KIND_KEEP);
    }
  } else {
    req.set_action(v1::OverridePhaseRequest::ACTION_RELEASE);
  }
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::OverridePhaseResponse resp;
  if (grpc::Status s = stub.OverridePhase(&ctx, req, &resp); !s.ok()) return Fail(s);
  if (g_json) return PrintJson(resp);
  if (resp.has_directive()) {
    std::printf("issued directive %s\n", spotter::FormatDirective(resp.directive()).c_str());
  } else {
    std::printf("released run %s to automatic control (no new directive)\n", name.c_str());
  }
  return 0;
}

int Finish(v1::SpotterService::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::FinishRunRequest req;
  req.set_name(name);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  v1::FinishRunResponse resp;
  if (grpc::Status s = stub.FinishRun(&ctx, req, &resp); !s.ok()) return Fail(s);
  if (g_json) return PrintJson(resp);
  std::printf("run %s finished at step %lu\n", name.c_str(),
              static_cast<unsigned long>(resp.run().max_step()));
  return 0;
}

int Delete(v1::SpotterService::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::DeleteRunRequest req;
  req.set_name(name);
  v1::DeleteRunResponse resp;
  if (grpc::Status s = stub.DeleteRun(&ctx, req, &resp); !s.ok()) return Fail(s);
  if (g_json) {
    std::printf("{\"deleted\": \"%s\"}\n", absl::CEscape(name).c_str());
    return 0;
  }
  std::printf("run %s deleted\n", name.c_str());
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  if (grpc::Status s = stub->Check(&ctx, req, &resp); !s.ok()) return Fail(s);
  if (g_json) {
    if (int rc = PrintJson(resp); rc != 0) return rc;
  } else {
    std::printf("%s\n",
                grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
  }
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

// The backup stream has no deadline (a large state file takes a while); the
// server ends it, or Ctrl-C does.
int Backup(v1::SpotterService::Stub& stub) {
  const std::string path = absl::GetFlag(FLAGS_out);
  if (path.empty()) return Usage("backup needs --out FILE");
  grpc::ClientContext ctx;
  spotter::AddBearerToken(&ctx, g_token);
  spotter::BackupOutcome got = spotter::ReceiveBackup(stub, &ctx, path);
  if (!got.rpc.ok()) return Fail(got.rpc);
  if (!got.local.ok()) {
    std::cerr << "spotterctl: backup: " << got.local.message() << "\n";
    return kExitLocal;
  }
  if (g_json) {
    std::printf("{\"file\": \"%s\", \"summary\": ", absl::CEscape(path).c_str());
    std::string json;
    google::protobuf::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(got.summary, &json, opts).ok()) {
      return kExitLocal;
    }
    std::printf("%s}\n", json.c_str());
    return 0;
  }
  std::printf("wrote %s: %lu bytes, sha256 %s, copied in %.3f s, completed at %s\n", path.c_str(),
              static_cast<unsigned long>(got.summary.bytes()), got.summary.sha256().c_str(),
              got.summary.copy_seconds(),
              spotter::FormatTimestamp(got.summary.completed_at()).c_str());
  return 0;
}

int Calibrate(v1::SpotterService::Stub& stub, const std::vector<char*>& argv) {
  absl::StatusOr<spotter::ctl::CalibrateArgs> a = spotter::ctl::MakeCalibrateArgs(
      {argv.begin() + 2, argv.end()}, absl::GetFlag(FLAGS_spectrum), absl::GetFlag(FLAGS_coverage),
      absl::GetFlag(FLAGS_run_quantile), g_json);
  if (!a.ok()) return Usage(std::string(a.status().message()));
  auto prepare = [](grpc::ClientContext* ctx, const std::string& run) {
    g_run = run;
    Prepare(ctx);
  };
  return spotter::ctl::CalibrateCommand(stub, *a, prepare, Fail);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) return Usage("no command");
  const std::string cmd = args[1];
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json") return Usage("--output must be text or json");
  g_json = output == "json";
  spotter::ChannelSecurity security;
  security.ca_file = FlagOrEnv(absl::GetFlag(FLAGS_ca), "SPOTTER_CA");
  security.cert_file = FlagOrEnv(absl::GetFlag(FLAGS_cert), "SPOTTER_CERT");
  security.key_file = FlagOrEnv(absl::GetFlag(FLAGS_key), "SPOTTER_KEY");
  security.server_name = FlagOrEnv(absl::GetFlag(FLAGS_tls_server_name), "SPOTTER_TLS_SERVER_NAME");
  g_token = FlagOrEnv(absl::GetFlag(FLAGS_token), "SPOTTER_TOKEN");
  const std::string server =
      FlagOrEnv(absl::GetFlag(FLAGS_server), "SPOTTER_SERVER", "127.0.0.1:50051");
  auto made = spotter::MakeChannel(server, security);
  if (!made.ok()) {
    std::cerr << "spotterctl: " << made.status().message() << "\n";
    return made.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitLocal;
  }
  std::shared_ptr<grpc::Channel> channel = *made;
  spotter::ctl::CtlEnv env;
  env.security = security;
  env.security.token = g_token;
  env.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout));
  env.json = g_json;
  env.fail = Fail;
  // Commands over several replicas (--replicas, where, move, rebalance).
  if (std::optional<int> rc = spotter::ctl::ScaleCommand(
          env, cmd, args.size() > 2 ? args[2] : "", server, absl::GetFlag(FLAGS_state), Usage)) {
    return *rc;
  }
  if (cmd == "health") return Health(channel);
  auto stub = v1::SpotterService::NewStub(channel);
  if (cmd == "runs") return Runs(*stub);
  if (cmd == "backup") return Backup(*stub);
  if (args.size() < 3) return Usage(cmd + " needs a run name");
  if (cmd == "calibrate") return Calibrate(*stub, args);
  const std::string run = args[2];
  g_run = run;
  if (cmd == "show") return Show(*stub, run);
  if (cmd == "watch") return Watch(*stub, run);
  if (cmd == "trajectory") return Trajectory(*stub, run);
  if (cmd == "plot") return Plot(*stub, run);
  if (cmd == "override") return Override(*stub, run);
  if (cmd == "finish") return Finish(*stub, run);
  if (cmd == "delete") return Delete(*stub, run);
  return Usage("unknown command " + cmd);
}
