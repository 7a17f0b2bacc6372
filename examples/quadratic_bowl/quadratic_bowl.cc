// The closed-loop reproduction of the seed paper's table 5.1 (appendix B.1):
// the overparameterized quadratic bowl (bowl.h) trained by SGD with momentum
// under the paper's four arms and two with an estimated Fisher, steps to an
// excess loss below 1e-6:
//
//   constant               constant LR
//   two_step               LR x 0.1 at 50% and again at 75% of the planned steps
//   natural_gradient       the exact damped natural gradient from step 0, constant LR
//   ng_estimated           natural gradient from step 0 with K-FAC's estimate of
//                          the Fisher (kfac.h, the Python client's), constant LR,
//                          at the settings of spotterd's default directive
//   three_phase            whatever a real spotterd directs, over gRPC: this
//                          trainer sketches its per-example gradients with the
//                          run's CountSketch, uploads them with its loss and a
//                          validation loss, and applies the directive in force
//                          at every step (LR schedule, optimizer, stop); its
//                          natural gradient is the exact one
//   three_phase_estimated  the same, its natural gradient K-FAC's estimate with
//                          the directive's damping and intervals
//
// Each arm's (peak) LR is tuned on a grid with separate tuning seeds, by the
// median steps to target; the chosen LR then runs on the evaluation seeds.
// Writes CSV files, a summary table (summary.md) and its numbers with the
// commit and command (summary.json) into --out; --check turns it into a
// test of the closed loop (CI).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/cpp/paging.h"
#include "client/cpp/run_session.h"
#include "core/phase/controller.h"
#include "core/phase/switch_guard.h"
#include "core/projection/projection.h"
#include "examples/quadratic_bowl/bowl.h"
#include "examples/quadratic_bowl/report.h"
#include "grpcpp/grpcpp.h"
#include "spotter/v1/spotter.grpc.pb.h"

ABSL_FLAG(std::string, server, "", "spotterd address host:port (needed by the three-phase arms)");
ABSL_FLAG(std::string, arms,
          "constant,two_step,natural_gradient,ng_estimated,three_phase,three_phase_estimated",
          "arms to run");
ABSL_FLAG(uint32_t, seeds, 10, "evaluation seeds per arm (seeds 1..N)");
ABSL_FLAG(uint32_t, tune_seeds, 3, "tuning seeds per grid point (seeds 1001..)");
ABSL_FLAG(std::string, lr_grid, "0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.3",
          "(peak) learning rates every arm is tuned over");
ABSL_FLAG(std::string, lr, "", "fixed LRs that skip tuning, e.g. three_phase=0.01,constant=0.1");
ABSL_FLAG(uint64_t, steps, 5000, "planned optimizer steps (the budget of every run)");
ABSL_FLAG(double, target, 1e-6, "excess-loss target");
ABSL_FLAG(double, momentum, 0.9, "heavy-ball momentum of every arm");
ABSL_FLAG(double, damping, 1e-3,
          "natural-gradient damping (every natural-gradient arm; the three-phase runs' "
          "kfac_damping)");
ABSL_FLAG(double, condition, 1000.0, "condition number of the 20-D quadratic");
ABSL_FLAG(double, label_noise, 0.01, "label-noise std s (the gradient-noise floor)");
ABSL_FLAG(uint32_t, batch, 16, "examples per step (= sketch rows per upload)");
ABSL_FLAG(uint32_t, sketch_dim, 128, "three-phase arms: sketch dimension k");
ABSL_FLAG(uint32_t, sketch_rows, 64, "three-phase arms: Frequent Directions rows l");
ABSL_FLAG(uint32_t, eval_every, 10, "three-phase arms: spotterd evaluation interval, steps");
ABSL_FLAG(uint32_t, val_every, 50, "three-phase arms: steps between validation reports");
ABSL_FLAG(double, val_min_delta, 1e-7,
          "three-phase arms: POLISH stop, least validation improvement");
ABSL_FLAG(double, delivery_budget, 0.5, "three-phase arms: seconds a directive may take to arrive");
ABSL_FLAG(double, three_phase_warmup, 0.0,
          "three-phase arms: the run's phase.warmup_fraction (0: the server default, 0.15)");
ABSL_FLAG(uint32_t, step_us, 4000, "three-phase arms: wall time per step, microseconds (pacing)");
ABSL_FLAG(uint32_t, parallel, 2, "runs in flight at once");
ABSL_FLAG(uint32_t, curve_every, 10, "steps between recorded curve points");
ABSL_FLAG(std::string, out, "quadratic_bowl_out", "output directory");
ABSL_FLAG(std::string, run_prefix, "", "prefix of spotterd run names (default: a timestamp)");
ABSL_FLAG(std::string, commit, "",
          "the commit the results record (default: git rev-parse --short HEAD here, "
          "with -dirty if tracked files changed; unknown outside a checkout)");
ABSL_FLAG(bool, check, false,
          "exit 1 unless every run of a three-phase arm passed through acquisition, refinement "
          "and polish on the controller's triggers (rollbacks included), got every directive "
          "before its effective step, switched exactly at it, restored its snapshot at every "
          "rollback, and (three_phase only) reached the target");

namespace v1 = spotter::v1;
using spotter::examples::BowlOptions;
using spotter::examples::Csv;
using spotter::examples::DirectiveLog;
using spotter::examples::Minibatch;
using spotter::examples::MomentumSgd;
using spotter::examples::QuadraticBowl;
using spotter::examples::Quantile;
using spotter::examples::RunResult;
using spotter::examples::SortedSteps;
using spotter::examples::StepPlan;
using spotter::examples::Steps;
using spotter::examples::StepsText;

namespace {

constexpr const char* kArms[] = {"constant",     "two_step",    "natural_gradient",
                                 "ng_estimated", "three_phase", "three_phase_estimated"};

struct Options {
  BowlOptions bowl;
  uint64_t steps = 5000;
  double target = 1e-6;
  double momentum = 0.9;
  double damping = 1e-3;
  uint32_t curve_every = 10;
};

// What the trainer applies at each step, and what it reports.
class Policy {
 public:
  virtual ~Policy() = default;
  // The plan for `step`; nullopt stops training before it.
  virtual std::optional<StepPlan> Before(uint64_t step) = 0;
  // After Before(step): the trainer's side of the guarded switch, which may
  // snapshot *theta and *sgd or put a snapshot back. True when it restored
  // one: no update at this step (its gradient would be the diverged weights').
  virtual bool Guard(uint64_t step, Eigen::VectorXd* theta, MomentumSgd* sgd) { return false; }
  // The batch drawn at `step` under `lr`, and the parameters it was drawn at.
  virtual void After(uint64_t step, const Minibatch& batch, double lr,
                     const Eigen::VectorXd& theta) {}
};

class SchedulePolicy : public Policy {
 public:
  explicit SchedulePolicy(std::function<StepPlan(uint64_t)> f) : f_(std::move(f)) {}
  std::optional<StepPlan> Before(uint64_t step) override { return f_(step); }

 private:
  std::function<StepPlan(uint64_t)> f_;
};

// Follows spotterd: the directive in force at every step, uploads of the
// sketched per-example gradients, validation reports, pacing, and the
// guarded switch as the Python Monitor runs it (spotter::SwitchGuard): the
// parameters and the optimizer (momentum buffer, K-FAC state) are kept at a
// guarded switch to natural gradient and put back at a rollback.
class SpotterPolicy : public Policy {
 public:
  // kfac: estimate the natural gradient by K-FAC instead of the exact one.
  SpotterPolicy(spotter::RunSession* session, const spotter::Projection* projection,
                const QuadraticBowl* bowl, uint32_t val_every, absl::Duration pace, bool kfac,
                RunResult* result)
      : session_(session),
        projection_(projection),
        bowl_(bowl),
        val_every_(val_every),
        pace_(pace),
        kfac_(kfac),
        result_(result),
        next_(absl::Now()),
        guard_({.snapshot = [this](uint64_t) { snapshot_.emplace(*theta_, *sgd_); },
                .restore =
                    [this](uint64_t, uint64_t, const spotter::Directive&) {
                      *theta_ = snapshot_->first;
                      *sgd_ = snapshot_->second;
                      snapshot_.reset();
                    },
                .release = [this](uint64_t) { snapshot_.reset(); }}) {}

  std::optional<StepPlan> Before(uint64_t step) override {
    if (auto latest = session_->LatestDirective(); latest && latest->version > seen_) {
      for (uint64_t v = seen_ + 1; v <= latest->version; ++v) {
        result_->directives[v].version = v;
        result_->directives[v].seen_at = static_cast<int64_t>(step);
      }
      result_->directives[latest->version].effective_step = latest->effective_step;
      seen_ = latest->version;
    }
    if (session_->ShouldStop(step)) {
      result_->stopped = true;
      return std::nullopt;
    }
    in_force_ = session_->DirectiveAt(step);
    const std::optional<spotter::Directive>& d = in_force_;
    if (!d) {
      result_->error = absl::StrFormat("no directive in force at step %d", step);
      return std::nullopt;
    }
    DirectiveLog& log = result_->directives[d->version];
    log.version = d->version;
    log.effective_step = d->effective_step;
    if (log.first_applied < 0) log.first_applied = static_cast<int64_t>(step);
    StepPlan plan;
    plan.lr = d->plan.lr.At(step);
    plan.natural_gradient =
        d->plan.optimizer.kind == spotter::OptimizerInstruction::Kind::kNaturalGradient;
    if (plan.natural_gradient) {
      plan.damping = d->plan.optimizer.damping;
      plan.kfac = kfac_;
      plan.factor_update_interval = d->plan.optimizer.factor_update_interval;
      plan.inverse_update_interval = d->plan.optimizer.inverse_update_interval;
    }
    plan.noise_std = d->plan.noise_std;
    return plan;
  }

  bool Guard(uint64_t step, Eigen::VectorXd* theta, MomentumSgd* sgd) override {
    theta_ = theta;
    sgd_ = sgd;
    const bool restored = guard_.OnStep(step, in_force_);
    result_->restores = guard_.restores();
    result_->missed_restores = guard_.missed_restores();
    return restored;
  }

  void After(uint64_t step, const Minibatch& batch, double lr,
             const Eigen::VectorXd& theta) override {
    sketch_.resize(batch.per_example.rows(), projection_->output_dim());
    projection_->ApplyRows(batch.per_example, sketch_);
    session_->UploadSketch(step, sketch_, batch.loss, lr);
    if (step > 0 && step % val_every_ == 0) {
      session_->ReportEval(step, {{"val_loss", bowl_->ValidationLoss(theta)}});
    }
    // A steady pace; a step that ran late is not caught up in a burst.
    next_ += pace_;
    const absl::Time now = absl::Now();
    if (next_ > now) {
      absl::SleepFor(next_ - now);
    } else {
      next_ = now;
    }
  }

 private:
  spotter::RunSession* session_;
  const spotter::Projection* projection_;
  const QuadraticBowl* bowl_;
  uint32_t val_every_;
  absl::Duration pace_;
  bool kfac_;
  RunResult* result_;
  absl::Time next_;
  uint64_t seen_ = 0;
  spotter::RowMatrixXf sketch_;
  std::optional<spotter::Directive> in_force_;  // at the step Before() last saw
  Eigen::VectorXd* theta_ = nullptr;            // the trainer's, during Guard()
  MomentumSgd* sgd_ = nullptr;
  std::optional<std::pair<Eigen::VectorXd, MomentumSgd>> snapshot_;
  spotter::SwitchGuard guard_;
};

// Trains one run. With stop_at_target the run ends at the first step whose
// excess loss is below the target (tuning); otherwise it runs the budget
// (or until the policy stops it) and records the curves.
void Train(const QuadraticBowl& bowl, const Options& o, uint64_t seed, bool stop_at_target,
           Policy& policy, RunResult* r) {
  Eigen::VectorXd theta = bowl.theta0();
  MomentumSgd sgd(static_cast<int>(theta.size()), o.momentum);
  std::mt19937_64 rng(seed * 7919 + 17);
  Minibatch batch;
  const double initial = bowl.ExcessLoss(theta);
  uint64_t step = 0;
  for (; step < o.steps; ++step) {
    const double loss = bowl.ExcessLoss(theta);
    if (!std::isfinite(loss) || loss > 1e6 * initial) break;  // diverged
    if (r->hit < 0 && loss < o.target) {
      r->hit = static_cast<int64_t>(step);
      if (stop_at_target) break;
    }
    if (!stop_at_target && step % o.curve_every == 0) {
      const auto shape = bowl.GradientCovarianceShape(theta);
      r->curve.push_back({step, loss, shape.r90, shape.pr});
    }
    const std::optional<StepPlan> plan = policy.Before(step);
    if (!plan) break;
    // A restored snapshot: no update, no upload at this step (the Monitor's
    // rollback step).
    if (policy.Guard(step, &theta, &sgd)) continue;
    bowl.Sample(theta, rng, &batch);
    policy.After(step, batch, plan->lr, theta);
    sgd.Step(bowl, *plan, batch, rng, &theta);
  }
  r->steps_run = step;
  r->final_loss = bowl.ExcessLoss(theta);
  if (r->hit < 0 && step == o.steps && r->final_loss < o.target)
    r->hit = static_cast<int64_t>(step);
}

StepPlan LocalPlan(const std::string& arm, double lr, const Options& o, uint64_t step) {
  StepPlan p;
  p.lr = lr;
  p.damping = o.damping;
  if (arm == "two_step") {
    if (step >= o.steps / 2) p.lr *= 0.1;
    if (step >= o.steps * 3 / 4) p.lr *= 0.1;
  } else if (arm == "natural_gradient") {
    p.natural_gradient = true;
  } else if (arm == "ng_estimated") {
    // What spotterd's REFINEMENT directive would send by default.
    const spotter::ControllerConfig defaults;
    p.natural_gradient = true;
    p.kfac = true;
    p.factor_update_interval = defaults.kfac_factor_interval;
    p.inverse_update_interval = defaults.kfac_inverse_interval;
  }
  return p;
}

// Everything a three-phase run needs from the command line.
struct SpotterSetup {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::SpotterService::Stub> stub;
  std::string prefix;
};

v1::RunConfig ThreePhaseConfig(const Options& o, const std::string& arm, double peak_lr,
                               uint64_t seed) {
  v1::RunConfig c;
  c.set_sketch_dim(absl::GetFlag(FLAGS_sketch_dim));
  c.set_sketch_rows(absl::GetFlag(FLAGS_sketch_rows));
  c.mutable_projection()->set_kind(v1::PROJECTION_KIND_COUNT_SKETCH);
  c.mutable_projection()->set_seed(seed);
  c.mutable_projection()->set_input_dim(o.bowl.param_dim);
  c.set_eval_every(absl::GetFlag(FLAGS_eval_every));
  c.set_world_size(1);
  c.set_total_steps(o.steps);
  c.set_peak_lr(peak_lr);
  c.set_mode(v1::MODE_CONTROL);
  v1::PhaseConfig* p = c.mutable_phase();
  p->set_delivery_budget_seconds(absl::GetFlag(FLAGS_delivery_budget));
  p->set_val_min_delta(absl::GetFlag(FLAGS_val_min_delta));
  p->set_kfac_damping(o.damping);
  if (absl::GetFlag(FLAGS_three_phase_warmup) > 0) {
    p->set_warmup_fraction(absl::GetFlag(FLAGS_three_phase_warmup));
  }
  (*c.mutable_labels())["experiment"] = "quadratic_bowl";
  (*c.mutable_labels())["arm"] = arm;
  return c;
}

void RunThreePhase(const QuadraticBowl& bowl, const Options& o, const SpotterSetup& s,
                   const std::string& arm, uint64_t seed, double lr, bool stop_at_target,
                   RunResult* r) {
  const bool kfac = arm == "three_phase_estimated";
  // 3ph / 3phk: scripts/quadratic_bowl.sh picks seed 1's run of the exact arm by name.
  const std::string name = absl::StrFormat("%s-%s-lr%g-s%d%s", s.prefix, kfac ? "3phk" : "3ph", lr,
                                           seed, stop_at_target ? "-tune" : "");
  spotter::SessionOptions so;
  so.channel = s.channel;
  so.run = name;
  so.config = ThreePhaseConfig(o, arm, lr, seed);
  so.queue_size = 8192;
  auto session = spotter::RunSession::Start(so);
  if (!session.ok()) {
    r->error = std::string(session.status().message());
    return;
  }
  auto projection = spotter::Projection::Create(spotter::ProjectionKind::kCountSketch, seed,
                                                o.bowl.param_dim, absl::GetFlag(FLAGS_sketch_dim));
  if (!projection.ok() || !(*session)->WaitForDirective(1, absl::Seconds(30))) {
    r->error = "no opening directive from spotterd within 30 s";
    return;
  }
  SpotterPolicy policy(session->get(), projection->get(), &bowl, absl::GetFlag(FLAGS_val_every),
                       absl::Microseconds(absl::GetFlag(FLAGS_step_us)), kfac, r);
  Train(bowl, o, seed, stop_at_target, policy, r);
  (*session)->Flush(absl::Seconds(30));
  {
    grpc::ClientContext ctx;
    v1::FinishRunRequest req;
    req.set_name(name);
    req.set_reason("trainer finished");
    v1::FinishRunResponse resp;
    s.stub->FinishRun(&ctx, req, &resp);
  }
  if (!stop_at_target) {
    v1::GetTrajectoryRequest req;
    req.set_name(name);
    grpc::Status st = spotter::GetWholeTrajectory(*s.stub, req, &r->trajectory);
    if (!st.ok()) r->error = "GetTrajectory: " + st.error_message();
  }
  (*session)->Close(absl::Seconds(5));
}

RunResult RunOne(const std::string& arm, const Options& o, const SpotterSetup* s, uint64_t seed,
                 double lr, bool tuning) {
  RunResult r;
  r.arm = arm;
  r.seed = seed;
  r.lr = lr;
  const QuadraticBowl bowl(o.bowl, seed);
  if (spotter::examples::IsThreePhase(arm)) {
    RunThreePhase(bowl, o, *s, arm, seed, lr, tuning, &r);
  } else {
    SchedulePolicy policy([&](uint64_t step) { return LocalPlan(arm, lr, o, step); });
    Train(bowl, o, seed, tuning, policy, &r);
  }
  return r;
}

// Runs `jobs` on `threads` threads.
void RunAll(std::vector<std::function<void()>>& jobs, uint32_t threads) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (uint32_t t = 0; t < std::max<uint32_t>(1, threads); ++t) {
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < jobs.size();) jobs[i]();
    });
  }
  for (auto& t : pool) t.join();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the seed paper's quadratic bowl (section 5.1), four arms, the three-phase one driven "
      "by spotterd.\nUsage: quadratic_bowl --server=127.0.0.1:50051 --out=DIR");
  std::vector<std::string> command(argv, argv + argc);
  absl::ParseCommandLine(argc, argv);
  Options o;
  o.steps = absl::GetFlag(FLAGS_steps);
  o.target = absl::GetFlag(FLAGS_target);
  o.momentum = absl::GetFlag(FLAGS_momentum);
  o.damping = absl::GetFlag(FLAGS_damping);
  o.curve_every = std::max<uint32_t>(1, absl::GetFlag(FLAGS_curve_every));
  o.bowl.condition = absl::GetFlag(FLAGS_condition);
  o.bowl.label_noise = absl::GetFlag(FLAGS_label_noise);
  o.bowl.batch = static_cast<int>(absl::GetFlag(FLAGS_batch));

  std::vector<std::string> arms = absl::StrSplit(absl::GetFlag(FLAGS_arms), ',', absl::SkipEmpty());
  for (const std::string& a : arms) {
    if (std::find(std::begin(kArms), std::end(kArms), a) == std::end(kArms)) {
      std::cerr << "unknown arm " << a << "\n";
      return 64;
    }
  }
  std::vector<double> grid;
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_lr_grid), ',', absl::SkipEmpty())) {
    grid.push_back(std::stod(std::string(v)));
  }
  std::map<std::string, double> fixed;
  for (absl::string_view kv : absl::StrSplit(absl::GetFlag(FLAGS_lr), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, '=');
    fixed[p.first] = std::stod(p.second);
  }
  SpotterSetup setup;
  if (std::any_of(arms.begin(), arms.end(), spotter::examples::IsThreePhase)) {
    if (absl::GetFlag(FLAGS_server).empty()) {
      std::cerr << "the three-phase arms need --server (a running spotterd)\n";
      return 64;
    }
    setup.channel =
        grpc::CreateChannel(absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials());
    setup.stub = v1::SpotterService::NewStub(setup.channel);
    setup.prefix = absl::GetFlag(FLAGS_run_prefix).empty()
                       ? absl::StrFormat("bowl%d", absl::ToUnixSeconds(absl::Now()))
                       : absl::GetFlag(FLAGS_run_prefix);
  }
  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out);
  const uint32_t parallel = absl::GetFlag(FLAGS_parallel);
  const absl::Time start = absl::Now();
  std::mutex mu;

  // 1. Tuning: every arm's (peak) LR on the grid, tuning seeds 1001...
  std::map<std::string, double> chosen;
  std::vector<RunResult> tuning;
  {
    std::vector<std::function<void()>> jobs;
    for (const std::string& arm : arms) {
      if (fixed.count(arm)) continue;
      for (double lr : grid) {
        for (uint32_t i = 0; i < absl::GetFlag(FLAGS_tune_seeds); ++i) {
          jobs.push_back([&, arm, lr, i] {
            RunResult r = RunOne(arm, o, &setup, 1001 + i, lr, /*tuning=*/true);
            std::lock_guard<std::mutex> l(mu);
            tuning.push_back(std::move(r));
          });
        }
      }
    }
    RunAll(jobs, parallel);
    std::ofstream f(out / "tuning.csv");
    f << "arm,lr,seed,steps_to_target,final_loss,error\n";
    std::sort(tuning.begin(), tuning.end(), [](const RunResult& a, const RunResult& b) {
      return std::tie(a.arm, a.lr, a.seed) < std::tie(b.arm, b.lr, b.seed);
    });
    for (const RunResult& r : tuning) {
      f << r.arm << "," << r.lr << "," << r.seed << "," << r.hit << "," << r.final_loss << ","
        << Csv(r.error) << "\n";
    }
    for (const std::string& arm : arms) {
      if (fixed.count(arm)) {
        chosen[arm] = fixed[arm];
        continue;
      }
      double best = std::numeric_limits<double>::infinity(), best_lr = grid.front(),
             best_loss = std::numeric_limits<double>::infinity();
      for (double lr : grid) {
        std::vector<RunResult> at;
        std::vector<double> losses;
        for (const RunResult& r : tuning) {
          if (r.arm == arm && r.lr == lr) {
            at.push_back(r);
            losses.push_back(std::isfinite(r.final_loss) ? std::log(r.final_loss) : 1e300);
          }
        }
        std::sort(losses.begin(), losses.end());
        const double med = Quantile(SortedSteps(at), 0.5), med_loss = Quantile(losses, 0.5);
        if (med < best || (med == best && med_loss < best_loss)) {
          best = med;
          best_lr = lr;
          best_loss = med_loss;
        }
      }
      chosen[arm] = best_lr;
      std::fprintf(stderr, "tuned %-17s lr %g (median %s steps on %u tuning seeds)\n", arm.c_str(),
                   best_lr, StepsText(best, o.steps).c_str(), absl::GetFlag(FLAGS_tune_seeds));
    }
  }

  // 2. Evaluation: the chosen LR on seeds 1..N, full budget.
  std::map<std::string, std::vector<RunResult>> runs;
  {
    std::vector<std::function<void()>> jobs;
    for (const std::string& arm : arms) {
      for (uint32_t seed = 1; seed <= absl::GetFlag(FLAGS_seeds); ++seed) {
        jobs.push_back([&, arm, seed] {
          RunResult r = RunOne(arm, o, &setup, seed, chosen[arm], /*tuning=*/false);
          std::lock_guard<std::mutex> l(mu);
          std::fprintf(stderr, "%-17s seed %2d lr %-6g steps to target %s%s\n", arm.c_str(),
                       static_cast<int>(seed), r.lr, StepsText(Steps(r), o.steps).c_str(),
                       r.error.empty() ? "" : (" error: " + r.error).c_str());
          runs[arm].push_back(std::move(r));
        });
      }
    }
    RunAll(jobs, parallel);
  }
  for (auto& [arm, v] : runs) {
    std::sort(v.begin(), v.end(),
              [](const RunResult& a, const RunResult& b) { return a.seed < b.seed; });
  }

  // 3. Outputs.
  spotter::examples::ReportOptions ro;
  ro.steps = o.steps;
  ro.target = o.target;
  ro.seeds = absl::GetFlag(FLAGS_seeds);
  ro.tune_seeds = absl::GetFlag(FLAGS_tune_seeds);
  ro.lr_grid = absl::GetFlag(FLAGS_lr_grid);
  ro.three_phase_warmup = absl::GetFlag(FLAGS_three_phase_warmup);
  ro.delivery_budget = absl::GetFlag(FLAGS_delivery_budget);
  ro.step_us = absl::GetFlag(FLAGS_step_us);
  ro.check = absl::GetFlag(FLAGS_check);
  ro.commit = absl::GetFlag(FLAGS_commit).empty() ? spotter::examples::GitCommit()
                                                  : absl::GetFlag(FLAGS_commit);
  ro.command = absl::StrJoin(command, " ");
  std::set<std::string> given;
  for (const auto& [arm, lr] : fixed) given.insert(arm);
  const int failures = WriteReport(out, arms, runs, chosen, given, ro, absl::Now() - start);
  if (ro.check && failures > 0) {
    std::fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  return 0;
}
