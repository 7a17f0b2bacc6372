#include "core/spectrum/evaluation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"

namespace spotter {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// MAD -> standard deviation of a normal distribution.
constexpr double kMadToSigma = 1.4826;

// A statistic of one rank: its point value and certified interval, in logs.
struct Stat {
  double value, lower, upper;
};

double Log(double x) { return x > 0.0 ? std::log(x) : -kInf; }

double Median(std::vector<double> v) {
  const size_t n = v.size();
  std::nth_element(v.begin(), v.begin() + n / 2, v.end());
  const double hi = v[n / 2];
  if (n % 2 == 1) return hi;
  return 0.5 * (hi + *std::max_element(v.begin(), v.begin() + n / 2));
}

// Extracts statistic `which` of a rank, or nullopt when it is not finite.
std::optional<Stat> Extract(const RankSummary& r, int which) {
  const SpectrumSummary& c = r.covariance;
  Stat s{};
  switch (which) {
    case 0:  // trace: exact
      s.value = s.lower = s.upper = Log(r.example_trace);
      break;
    case 1:  // top share: top eigenvalue / trace
      s = {Log(c.top_eigenvalue.value / c.trace), Log(c.top_eigenvalue.lower / c.trace),
           Log(c.top_eigenvalue.upper / c.trace)};
      break;
    case 2:
      s = {Log(c.participation_ratio.value), Log(c.participation_ratio.lower),
           Log(c.participation_ratio.upper)};
      break;
    default:
      s = {Log(c.effective_rank.value), Log(c.effective_rank.lower), Log(c.effective_rank.upper)};
      break;
  }
  if (!std::isfinite(s.value)) return std::nullopt;
  if (std::isnan(s.lower)) s.lower = s.value;
  if (std::isnan(s.upper)) s.upper = s.value;
  return s;
}

constexpr const char* kStatNames[] = {"trace", "top_share", "pr", "r90"};

}  // namespace

std::vector<RankDivergence> DivergentRanks(const std::vector<RankSummary>& ranks,
                                           const DivergenceOptions& o) {
  std::vector<const RankSummary*> valid;
  for (const RankSummary& r : ranks) {
    if (r.covariance.valid) valid.push_back(&r);
  }
  std::vector<RankDivergence> out;
  if (static_cast<int>(valid.size()) < std::max(o.min_ranks, 3)) return out;
  std::sort(valid.begin(), valid.end(),
            [](const RankSummary* a, const RankSummary* b) { return a->rank < b->rank; });
  std::vector<std::vector<std::string>> reasons(valid.size());
  const double floor = std::log1p(o.min_relative);
  for (int which = 0; which < 4; ++which) {
    std::vector<std::optional<Stat>> stats(valid.size());
    std::vector<double> values;
    for (size_t i = 0; i < valid.size(); ++i) {
      stats[i] = Extract(*valid[i], which);
      if (stats[i]) values.push_back(stats[i]->value);
    }
    if (static_cast<int>(values.size()) < std::max(o.min_ranks, 3)) continue;
    const double median = Median(values);
    std::vector<double> dev;
    for (double v : values) dev.push_back(std::abs(v - median));
    const double sigma = kMadToSigma * Median(dev);
    const double threshold = std::max(o.z * sigma, floor);
    for (size_t i = 0; i < valid.size(); ++i) {
      if (!stats[i]) continue;
      // Distance from the rank's certified interval to the median: a rank
      // whose sketch cannot exclude the median is never flagged for it.
      const Stat& s = *stats[i];
      const double dist = s.lower > median   ? s.lower - median
                          : s.upper < median ? median - s.upper
                                             : 0.0;
      if (dist > threshold) {
        reasons[i].push_back(absl::StrFormat("%s %.4g vs median %.4g (threshold x%.3g)",
                                             kStatNames[which], std::exp(s.value), std::exp(median),
                                             std::exp(threshold)));
      }
    }
  }
  for (size_t i = 0; i < valid.size(); ++i) {
    if (!reasons[i].empty()) out.push_back({valid[i]->rank, std::move(reasons[i])});
  }
  return out;
}

RunEvaluation EvaluateRanks(std::vector<RankWindow> windows, const SpectrumOptions& spectrum,
                            const DivergenceOptions& options) {
  RunEvaluation out;
  std::vector<std::pair<uint32_t, GradientMoments>> per_rank;
  for (RankWindow& w : windows) {
    if (w.pieces.empty()) continue;
    per_rank.emplace_back(w.rank, MergeAll(std::move(w.pieces)));
  }
  if (per_rank.empty()) return out;
  const int n = static_cast<int>(per_rank.size());
  if (n >= std::max(options.min_ranks, 3) && n <= options.max_ranks) {
    for (const auto& [rank, m] : per_rank) {
      RankSummary s;
      s.rank = rank;
      s.effective_samples = m.dof_sq > 0.0 ? m.dof * m.dof / m.dof_sq : 0.0;
      s.rows = m.rows;
      SpectrumOptions o = spectrum;
      o.effective_samples = s.effective_samples;
      const SketchSpectrum spectrum_of_rank = m.centred.Spectrum();
      o.kurtosis = RowKurtosis(m, spectrum_of_rank);
      s.covariance = SummarizeSpectrum(spectrum_of_rank, m.trace_centred, m.dof, o);
      s.example_trace =
          m.dof > 0.0 ? m.example_trace / m.dof : std::numeric_limits<double>::quiet_NaN();
      out.ranks.push_back(std::move(s));
    }
    out.divergent = DivergentRanks(out.ranks, options);
  }
  std::vector<GradientMoments> all;
  all.reserve(per_rank.size());
  for (auto& [rank, m] : per_rank) all.push_back(std::move(m));
  out.merged = Summarize(MergeAll(std::move(all)), spectrum);
  return out;
}

}  // namespace spotter
