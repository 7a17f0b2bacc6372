// Spotter against the alternatives a user would pick (docs/PERFORMANCE.md).
//
// Feeds one stream of rows (k floats each), `--batch` rows per message, to one
// of
//   spotter  the server's per-rank path: RankAccumulator::Add per message
//            (batch centring, exact traces, covariance and batch-means FD
//            sketches), and at every evaluation Snapshot + MergeAll +
//            Summarize, as Run::Ingest / Run::Evaluate do for one rank;
//   fd       the like-for-like core of it: one FrequentDirections::Append per
//            message and Spectrum + SummarizeSpectrum at every evaluation (the
//            algorithm bench/numpy_fd.py implements, without centring or the
//            second sketch);
//   exact    the exact approach: a k x k double covariance accumulated per
//            message (rank-m update) and SelfAdjointEigenSolver (eigenvalues
//            only) at every evaluation, with r90 and the PR from the exact
//            eigenvalues. Stops once --max_seconds have passed (after at least
//            one evaluation) and reports the partial rate.
// One thread. The rows come from --rows_file (raw little-endian float32,
// rows x k, as bench/numpy_fd.py reads it) or are generated with a planted
// power-law spectrum (--write_rows saves them for the NumPy peer). Loading or
// generating the rows is not timed.
//
// r90 / pr in the JSON line are of the uncentred second moment (what the
// NumPy peer and the exact mode compute): for spotter the second_moment
// summary's point r90 and its observed (uncorrected) PR; the centred
// covariance's and the bias-corrected values are reported beside them.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "core/util/allocator.h"
#include "core/spectrum/frequent_directions.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"
#include "core/types.h"

ABSL_FLAG(int, k, 256, "row length (projected dimension k)");
ABSL_FLAG(int, l, 64, "FD sketch rows l (spotter, fd)");
ABSL_FLAG(int64_t, rows, 20000, "total rows to feed (with --rows_file: at most the "
                                "rows the file holds; 0 = all of them)");
ABSL_FLAG(int, batch, 64, "rows per message");
ABSL_FLAG(int, eval_every, 10, "messages between evaluations (and one after the last "
                               "message)");
ABSL_FLAG(std::string, rows_file, "", "raw little-endian float32 rows, rows x k; empty: "
                                      "generate rows with a planted power-law spectrum");
ABSL_FLAG(std::string, write_rows, "", "write the generated rows to this file (raw "
                                       "little-endian float32) for bench/numpy_fd.py");
ABSL_FLAG(uint64_t, seed, 1, "seed of the generated rows");
ABSL_FLAG(double, alpha, 2.0, "planted population eigenvalues lambda_i = (i+1)^-alpha, "
                              "i < k (in a random dense basis)");
ABSL_FLAG(std::string, mode, "spotter", "spotter | fd | exact");
ABSL_FLAG(double, decay, 1.0, "spotter: per-message decay of the exponential window "
                              "(1 = the whole stream, like the peers)");
ABSL_FLAG(double, max_seconds, 60.0, "exact: stop after this many seconds (once one "
                                     "evaluation has run) and report the partial rate");
ABSL_FLAG(bool, json, false, "print one JSON line instead of text");
ABSL_FLAG(int, malloc_trim_threshold_mb, 256,
          "the allocator settings spotterd uses (its flag of the same name); 0: the C "
          "library's defaults");

namespace spotter {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double ThreadCpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

int64_t PeakRssBytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

// Gaussian rows with population covariance Q diag(lambda) Q^T, lambda_i =
// (i+1)^-alpha and Q the product of two random Householder reflections (a
// dense basis at O(k) per row; FD and the eigen-solvers are rotation
// equivariant, the basis only keeps the covariance from being diagonal).
RowMatrixXf GenerateRows(int64_t n, int k, double alpha, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Eigen::VectorXf scale(k);
  for (int i = 0; i < k; ++i) scale[i] = static_cast<float>(std::pow(i + 1.0, -alpha / 2));
  Eigen::VectorXf v1(k), v2(k);
  for (int i = 0; i < k; ++i) v1[i] = normal(rng);
  for (int i = 0; i < k; ++i) v2[i] = normal(rng);
  v1.normalize();
  v2.normalize();
  RowMatrixXf out(n, k);
  for (int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < k; ++i) out(r, i) = normal(rng) * scale[i];
  }
  constexpr int64_t kChunk = 4096;
  for (int64_t r = 0; r < n; r += kChunk) {
    const int64_t m = std::min(kChunk, n - r);
    auto block = out.middleRows(r, m);
    for (const Eigen::VectorXf* v : {&v1, &v2}) {
      const Eigen::VectorXf proj = block * *v;
      block.noalias() -= 2.0f * proj * v->transpose();
    }
  }
  return out;
}

bool ReadRows(const std::string& path, int k, int64_t want, RowMatrixXf* out) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return false;
  const int64_t bytes = static_cast<int64_t>(in.tellg());
  const int64_t have = bytes / (static_cast<int64_t>(k) * 4);
  if (have * k * 4 != bytes) {
    absl::FPrintF(stderr, "%s: %d bytes is not a whole number of %d-float rows\n", path,
                  bytes, k);
    return false;
  }
  const int64_t n = want > 0 ? std::min(want, have) : have;
  out->resize(n, k);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(out->data()), n * k * 4);  // little-endian host
  return static_cast<bool>(in);
}

bool WriteRows(const std::string& path, const RowMatrixXf& rows) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(rows.data()),
            static_cast<std::streamsize>(rows.size() * 4));
  return static_cast<bool>(out);
}

struct Result {
  int64_t rows = 0;  // rows fed before the end (or the time budget)
  int evaluations = 0;
  double seconds = 0.0;  // wall, ingest + evaluations
  double cpu_seconds = 0.0;
  double eval_seconds_total = 0.0;  // wall
  int64_t state_bytes = 0;
  int64_t workspace_bytes = 0;  // exact: the eigen-solver's k x k working copy
  bool stopped_early = false;
  double r90 = 0.0;
  bool r90_censored = false;
  double pr = 0.0;
  // spotter only
  double r90_lower = 0.0, r90_upper = 0.0;
  double cov_r90 = 0.0, cov_pr = 0.0, pr_corrected = 0.0;
};

// r90 and the PR from a full eigenvalue list (any order) and its trace.
void ExactSummary(std::vector<double> ev, double mass, double* r90, double* pr) {
  std::sort(ev.begin(), ev.end(), std::greater<double>());
  double t = 0.0, sq = 0.0;
  for (double& v : ev) {
    v = std::max(v, 0.0);
    t += v;
    sq += v * v;
  }
  double s = 0.0;
  *r90 = static_cast<double>(ev.size());
  for (size_t i = 0; i < ev.size(); ++i) {
    s += ev[i];
    if (s >= mass * t) {
      *r90 = static_cast<double>(i + 1);
      break;
    }
  }
  *pr = sq > 0.0 ? t * t / sq : 0.0;
}

template <typename Ingest, typename Evaluate>
Result Drive(const RowMatrixXf& rows, int batch, int eval_every, double max_seconds,
             Ingest ingest, Evaluate evaluate) {
  Result res;
  const int64_t n = rows.rows();
  const int64_t messages = (n + batch - 1) / batch;
  const double t0 = Now(), c0 = ThreadCpu();
  for (int64_t msg = 0; msg < messages; ++msg) {
    const int64_t first = msg * batch;
    const int64_t m = std::min<int64_t>(batch, n - first);
    ingest(static_cast<uint64_t>(msg), rows.middleRows(first, m));
    res.rows = first + m;
    const bool last = msg + 1 == messages;
    const bool over = Now() - t0 > max_seconds;
    if ((msg + 1) % eval_every == 0 || last || (over && res.evaluations == 0)) {
      const double e0 = Now();
      evaluate(static_cast<uint64_t>(msg), &res);
      res.eval_seconds_total += Now() - e0;
      ++res.evaluations;
    }
    if (!last && res.evaluations > 0 && Now() - t0 > max_seconds) {
      res.stopped_early = true;
      break;
    }
  }
  res.seconds = Now() - t0;
  res.cpu_seconds = ThreadCpu() - c0;
  return res;
}

Result RunSpotter(const RowMatrixXf& rows, int k, int l, int batch, int eval_every,
                  double decay) {
  WindowOptions w;
  w.kind = WindowKind::kExponential;
  w.decay = decay;
  RankAccumulator acc(k, l, w);
  SpectrumOptions opts;
  opts.sketch_rows = l;
  opts.dim = k;
  Result res = Drive(
      rows, batch, eval_every, 1e300,
      [&](uint64_t step, const Eigen::Ref<const RowMatrixXf>& m) { acc.Add(step, m, 1.0); },
      [&](uint64_t step, Result* r) {
        const GradientMoments merged = MergeAll(acc.Snapshot(step));
        const Diagnostics d = Summarize(merged, opts);
        const SpectrumSummary& s = d.second_moment;
        r->r90 = s.effective_rank.value;
        r->r90_censored = s.effective_rank.censored;
        r->r90_lower = s.effective_rank.lower;
        r->r90_upper = s.effective_rank.upper;
        r->pr = s.participation_ratio_raw;
        r->pr_corrected = s.participation_ratio.value;
        r->cov_r90 = d.covariance.effective_rank.value;
        r->cov_pr = d.covariance.participation_ratio_raw;
        r->state_bytes = (static_cast<int64_t>(merged.centred.capacity()) +
                          merged.means.capacity()) *
                         k * 4;
      });
  return res;
}

Result RunFd(const RowMatrixXf& rows, int k, int l, int batch, int eval_every) {
  FrequentDirections fd(k, l);
  SpectrumOptions opts;
  opts.sketch_rows = l;
  opts.dim = k;
  opts.correct_projection = false;
  return Drive(
      rows, batch, eval_every, 1e300,
      [&](uint64_t, const Eigen::Ref<const RowMatrixXf>& m) { fd.Append(m); },
      [&](uint64_t, Result* r) {
        const SketchSpectrum sk = fd.Spectrum();
        const SpectrumSummary s = SummarizeSpectrum(sk, sk.trace, 1.0, opts);
        r->r90 = s.effective_rank.value;
        r->r90_censored = s.effective_rank.censored;
        r->r90_lower = s.effective_rank.lower;
        r->r90_upper = s.effective_rank.upper;
        r->pr = s.participation_ratio_raw;
        r->state_bytes = static_cast<int64_t>(fd.capacity()) * k * 4;
      });
}

Result RunExact(const RowMatrixXf& rows, int k, int batch, int eval_every,
                double max_seconds) {
  Eigen::MatrixXd cov = Eigen::MatrixXd::Zero(k, k);  // lower triangle used
  Eigen::MatrixXd xd;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(k);
  Result res = Drive(
      rows, batch, eval_every, max_seconds,
      [&](uint64_t, const Eigen::Ref<const RowMatrixXf>& m) {
        xd = m.cast<double>();
        cov.selfadjointView<Eigen::Lower>().rankUpdate(xd.transpose());
      },
      [&](uint64_t, Result* r) {
        solver.compute(cov, Eigen::EigenvaluesOnly);  // reads the lower triangle
        const Eigen::VectorXd& ev = solver.eigenvalues();
        ExactSummary(std::vector<double>(ev.data(), ev.data() + ev.size()), 0.9, &r->r90,
                     &r->pr);
      });
  // The covariance; the solver holds a second k x k copy while it works.
  res.state_bytes = static_cast<int64_t>(k) * k * 8;
  res.workspace_bytes = res.state_bytes;
  return res;
}

int Main(int argc, char** argv) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view f) {
    return absl::EndsWith(f, "alternatives.cc");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(
      "Spotter vs the exact k x k approach (and the like-for-like FD core) on one "
      "stream of rows.\n  spotter_alternatives --mode=spotter|fd|exact --k=256 --l=64 "
      "--rows=20000 [--rows_file=F | --write_rows=F] [--json]\nThe NumPy peer is "
      "bench/numpy_fd.py; bench/alternatives.sh runs the comparison.");
  absl::ParseCommandLine(argc, argv);
  if (const int trim = absl::GetFlag(FLAGS_malloc_trim_threshold_mb); trim > 0) {
    TuneAllocator(trim);
  }

  const int k = absl::GetFlag(FLAGS_k), l = absl::GetFlag(FLAGS_l);
  const int batch = absl::GetFlag(FLAGS_batch), eval_every = absl::GetFlag(FLAGS_eval_every);
  const int64_t want = absl::GetFlag(FLAGS_rows);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (k < 1 || l < 1 || batch < 1 || eval_every < 1 ||
      (mode != "spotter" && mode != "fd" && mode != "exact")) {
    std::fprintf(stderr, "bad flags (see --help)\n");
    return 2;
  }
  RowMatrixXf rows;
  const std::string file = absl::GetFlag(FLAGS_rows_file);
  if (!file.empty()) {
    if (!ReadRows(file, k, want, &rows)) {
      std::fprintf(stderr, "cannot read %s\n", file.c_str());
      return 1;
    }
  } else {
    if (want < 1) {
      std::fprintf(stderr, "--rows must be >= 1 when generating\n");
      return 2;
    }
    rows = GenerateRows(want, k, absl::GetFlag(FLAGS_alpha), absl::GetFlag(FLAGS_seed));
    const std::string out = absl::GetFlag(FLAGS_write_rows);
    if (!out.empty() && !WriteRows(out, rows)) {
      std::fprintf(stderr, "cannot write %s\n", out.c_str());
      return 1;
    }
  }
  if (rows.rows() == 0) {
    std::fprintf(stderr, "no rows\n");
    return 1;
  }

  Result r;
  if (mode == "spotter") {
    r = RunSpotter(rows, k, l, batch, eval_every, absl::GetFlag(FLAGS_decay));
  } else if (mode == "fd") {
    r = RunFd(rows, k, l, batch, eval_every);
  } else {
    r = RunExact(rows, k, batch, eval_every, absl::GetFlag(FLAGS_max_seconds));
  }
  const double rate = r.rows / r.seconds, cpu_rate = r.rows / r.cpu_seconds;
  const double eval_mean = r.evaluations ? r.eval_seconds_total / r.evaluations : 0.0;
  const int64_t rows_bytes = static_cast<int64_t>(rows.size()) * 4;
  if (absl::GetFlag(FLAGS_json)) {
    std::string extra;
    if (mode != "exact") {
      extra = absl::StrFormat(",\"r90_lower\":%g,\"r90_upper\":%g", r.r90_lower, r.r90_upper);
    }
    if (mode == "spotter") {
      extra += absl::StrFormat(",\"pr_corrected\":%.6g,\"cov_r90\":%g,\"cov_pr\":%.6g",
                               r.pr_corrected, r.cov_r90, r.cov_pr);
    }
    absl::PrintF(
        "{\"impl\":\"spotter_alternatives\",\"mode\":\"%s\",\"k\":%d,\"l\":%d,\"rows\":%d,"
        "\"batch\":%d,\"eval_every\":%d,\"evaluations\":%d,\"seconds\":%.6f,"
        "\"cpu_seconds\":%.6f,\"rows_per_s\":%.1f,\"rows_per_cpu_s\":%.1f,"
        "\"eval_seconds_total\":%.6f,\"eval_seconds_mean\":%.6f,"
        "\"peak_rss_or_state_bytes\":%d,\"workspace_bytes\":%d,\"peak_rss_bytes\":%d,"
        "\"rows_bytes\":%d,"
        "\"stopped_early\":%s,\"r90\":%g,\"r90_censored\":%s,\"pr\":%.6g%s}\n",
        mode, k, mode == "exact" ? 0 : l, r.rows, batch, eval_every,
        r.evaluations, r.seconds, r.cpu_seconds, rate, cpu_rate, r.eval_seconds_total,
        eval_mean, r.state_bytes,
        r.workspace_bytes, PeakRssBytes(), rows_bytes,
        r.stopped_early ? "true" : "false", r.r90, r.r90_censored ? "true" : "false", r.pr,
        extra);
  } else {
    absl::PrintF("mode %s  k %d  l %d  rows %d (batch %d, %d evaluations%s)\n", mode, k, l,
                r.rows, batch, r.evaluations,
                r.stopped_early ? ", stopped at --max_seconds" : "");
    absl::PrintF("  %.3f s wall (%.3f s CPU): %.0f rows/s (%.0f per CPU-s)\n", r.seconds,
                r.cpu_seconds, rate, cpu_rate);
    absl::PrintF("  evaluations: %.4f s total, %.4f s each\n", r.eval_seconds_total, eval_mean);
    absl::PrintF("  state %d bytes; peak RSS %d bytes (rows held: %d)\n",
                r.state_bytes, PeakRssBytes(),
                rows_bytes);
    absl::PrintF("  r90 %g%s  PR %.4g\n", r.r90, r.r90_censored ? " (censored)" : "", r.pr);
  }
  return 0;
}

}  // namespace
}  // namespace spotter

int main(int argc, char** argv) { return spotter::Main(argc, argv); }
