// The demo trainer: `ranks` threads, each a rank of one run, train a synthetic
// model whose gradient spectrum collapses and plateaus (DriftingGradients),
// project each step's gradient samples with the run's CountSketch, stream them
// to spotterd, and follow its directives (learning rate, stop). Rank 0 prints
// the trajectory as the server computes it. The ranks step in lockstep, as
// data-parallel ranks do (their gradient all-reduce is a barrier per step).
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cpp/ctl/format.h"
#include "client/cpp/run_session.h"
#include "core/projection/projection.h"
#include "examples/synthetic/drifting_gradients.h"
#include "proto/convert/directive.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "spotterd address host:port");
ABSL_FLAG(std::string, run, "demo", "run name");
ABSL_FLAG(uint32_t, ranks, 2, "ranks (threads) of the job");
ABSL_FLAG(uint64_t, steps, 3000, "planned optimizer steps");
ABSL_FLAG(uint32_t, params, 4096, "parameters P of the synthetic model");
ABSL_FLAG(uint32_t, sketch_dim, 256, "sketch dimension k");
ABSL_FLAG(uint32_t, sketch_rows, 64, "Frequent Directions size l");
ABSL_FLAG(uint32_t, microbatches, 16, "gradient samples (rows) per rank per step");
ABSL_FLAG(uint32_t, sketch_every, 1, "upload a sketch every this many steps");
ABSL_FLAG(uint32_t, eval_every, 10, "server evaluation interval, steps");
ABSL_FLAG(uint32_t, val_every, 50, "report a validation loss every this many steps");
ABSL_FLAG(double, peak_lr, 0.1, "peak learning rate");
ABSL_FLAG(double, step_ms, 3.0, "wall time per step, milliseconds (pacing)");
ABSL_FLAG(uint64_t, seed, 1, "seed");
ABSL_FLAG(bool, advise, false, "run in ADVISE mode (directives shown, not applied)");
ABSL_FLAG(bool, quiet, false, "print only the summary");
ABSL_FLAG(uint32_t, print_every, 50, "print a trajectory point every this many steps");
ABSL_FLAG(double, delivery_budget, 0.25, "seconds a directive may take to reach every rank");

namespace v1 = spotter::v1;

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "demo trainer: streams gradient sketches of a synthetic model to spotterd and follows "
      "its directives.\nUsage: synthetic_trainer [--server=127.0.0.1:50051] [--run=demo]");
  absl::ParseCommandLine(argc, argv);
  const uint32_t ranks = absl::GetFlag(FLAGS_ranks);
  const uint64_t steps = absl::GetFlag(FLAGS_steps);
  const uint32_t k = absl::GetFlag(FLAGS_sketch_dim);
  const uint32_t p = absl::GetFlag(FLAGS_params);
  const bool quiet = absl::GetFlag(FLAGS_quiet);

  v1::RunConfig config;
  config.set_sketch_dim(k);
  config.set_sketch_rows(absl::GetFlag(FLAGS_sketch_rows));
  config.mutable_projection()->set_kind(v1::PROJECTION_KIND_COUNT_SKETCH);
  config.mutable_projection()->set_seed(absl::GetFlag(FLAGS_seed));
  config.mutable_projection()->set_input_dim(p);
  config.set_eval_every(absl::GetFlag(FLAGS_eval_every));
  config.set_world_size(ranks);
  config.set_total_steps(steps);
  config.set_steps_per_epoch(std::max<uint64_t>(1, steps / 10));
  config.set_peak_lr(absl::GetFlag(FLAGS_peak_lr));
  config.set_base_lr(absl::GetFlag(FLAGS_peak_lr) / 10);
  config.set_mode(absl::GetFlag(FLAGS_advise) ? v1::MODE_ADVISE : v1::MODE_CONTROL);
  // Directives must reach every rank within this budget; at a few ms per step
  // a short budget keeps the switch close to the decision.
  config.mutable_phase()->set_delivery_budget_seconds(absl::GetFlag(FLAGS_delivery_budget));
  (*config.mutable_labels())["source"] = "synthetic_trainer";

  auto projection = spotter::Projection::Create(spotter::ProjectionKind::kCountSketch,
                                                absl::GetFlag(FLAGS_seed), p, k);
  if (!projection.ok()) {
    std::cerr << projection.status() << "\n";
    return 1;
  }
  std::atomic<int> failures{0};
  std::atomic<uint64_t> stopped_at{0};
  // The all-reduce of a data-parallel step: no rank starts step s + 1 before
  // every rank has finished step s. A rank that leaves (stopped, or failed to
  // start) drops out of it.
  std::barrier<> allreduce(static_cast<std::ptrdiff_t>(ranks));
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (uint32_t r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      spotter::SessionOptions o;
      o.target = absl::GetFlag(FLAGS_server);
      o.run = absl::GetFlag(FLAGS_run);
      o.config = config;
      o.rank = r;
      auto session = spotter::RunSession::Start(o);
      if (!session.ok()) {
        std::cerr << "rank " << r << ": " << session.status().message() << "\n";
        ++failures;
        allreduce.arrive_and_drop();
        return;
      }
      spotter::examples::DriftOptions drift;
      drift.param_dim = static_cast<int>(p);
      drift.collapse_end = steps * 2 / 5;
      spotter::examples::DriftingGradients model(drift, absl::GetFlag(FLAGS_seed) * 1000 + r);
      const uint32_t m = absl::GetFlag(FLAGS_microbatches);
      spotter::RowMatrixXf sketch(m, k);
      uint64_t printed_step = 0, printed_version = 0;
      int printed_phase = 0;
      const absl::Duration pace = absl::Microseconds(absl::GetFlag(FLAGS_step_ms) * 1000);
      absl::Time next = absl::Now();
      uint64_t step = 0;
      for (; step < steps; ++step) {
        if ((*session)->ShouldStop(step)) {
          stopped_at = step;
          allreduce.arrive_and_drop();
          break;
        }
        const double lr = (*session)->LrAt(step, absl::GetFlag(FLAGS_peak_lr));
        if (step % absl::GetFlag(FLAGS_sketch_every) == 0) {
          spotter::RowMatrixXf grads = model.Sample(step, static_cast<int>(m));
          (*projection)->ApplyRows(grads, sketch);
          (*session)->UploadSketch(step, sketch, model.loss(), lr);
        }
        model.Step(lr);
        if (step > 0 && step % absl::GetFlag(FLAGS_val_every) == 0 && r == 0) {
          (*session)->ReportEval(step, {{"val_loss", model.ValidationLoss()}});
        }
        if (r == 0 && !quiet) {
          if (auto d = (*session)->LatestDirective(); d && d->version > printed_version) {
            printed_version = d->version;
            std::printf("  -> directive %s\n     %s\n",
                        spotter::FormatDirective(spotter::ToProto(*d)).c_str(), d->reason.c_str());
          }
          if (auto pt = (*session)->LatestDiagnostics();
              pt &&
              (printed_step == 0 || pt->step() >= printed_step + absl::GetFlag(FLAGS_print_every) ||
               pt->phase() != printed_phase)) {
            printed_phase = pt->phase();
            printed_step = pt->step();
            std::printf("%s\n", spotter::FormatPoint(*pt).c_str());
          }
          std::fflush(stdout);
        }
        next += pace;
        absl::SleepFor(next - absl::Now());
        allreduce.arrive_and_wait();
      }
      (*session)->Close(absl::Seconds(5));
      const spotter::SessionStats st = (*session)->stats();
      // Every rank's line: the highest seq the server acknowledged is what
      // it must never lose (tests/e2e/gateway.sh compares it with the run).
      std::printf(
          "rank %u: %lu steps, final loss %.5f, %lu uploads (%lu dropped, %lu rejected), "
          "acked seq %lu, %lu directives, %lu connects%s\n",
          r, static_cast<unsigned long>(step), model.loss(), static_cast<unsigned long>(st.enqueued),
          static_cast<unsigned long>(st.dropped), static_cast<unsigned long>(st.rejects),
          static_cast<unsigned long>(st.acked_seq), static_cast<unsigned long>(st.directives),
          static_cast<unsigned long>(st.connects),
          st.last_reject.empty() ? "" : (", last reject: " + st.last_reject).c_str());
    });
  }
  for (auto& t : threads) t.join();
  std::printf("trainer done in %.1f s%s\n", absl::ToDoubleSeconds(absl::Now() - start),
              stopped_at
                  ? absl::StrFormat(" (stopped by directive at step %d)", stopped_at.load()).c_str()
                  : "");
  return failures > 0 ? 1 : 0;
}
