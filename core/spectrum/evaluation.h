// Per-rank diagnostics of a distributed run, and the flagging of ranks whose
// gradient spectrum diverges from the others' (docs/DIAGNOSTICS.md,
// "Divergent ranks").
#ifndef SPOTTER_CORE_SPECTRUM_EVALUATION_H_
#define SPOTTER_CORE_SPECTRUM_EVALUATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"

namespace spotter {

// The rule's parameters. A rank is divergent when, for at least one of the
// statistics below, the distance (in log space) from its certified interval
// to the cross-rank median exceeds BOTH z robust standard deviations of the
// ranks (1.4826 * MAD) AND log(1 + min_relative).
//   trace        per-example gradient variance tr(Sigma_example) (exact)
//   top_share    top eigenvalue / trace (certified interval)
//   pr           bias-corrected participation ratio (certified interval)
//   r90          effective rank (certified interval)
struct DivergenceOptions {
  // Fewest ranks with a valid covariance summary before any rank is flagged:
  // with two, neither can be called the odd one out. >= 3.
  int min_ranks = 3;
  // Robust z-score threshold (in MADs scaled to a normal sigma). A rank whose
  // statistic is z sigmas away from the median of n Gaussian ranks occurs
  // with probability ~ n * 6e-5 at z = 4.
  double z = 4.0;
  // Smallest relative difference ever flagged (0.5: 50%, i.e. a factor 1.5 in
  // either direction). Guards against flagging ranks that agree closely when
  // the MAD is tiny, and against the sampling noise of a rank's own window
  // (relative std ~ sqrt(2 / n_eff) for the trace).
  double min_relative = 0.5;
  // Above this many ranks with data, EvaluateRanks skips the per-rank pass
  // (it costs one covariance summary, an O(l^2 k) Gram matrix, per rank and
  // evaluation) and flags nothing.
  int max_ranks = 512;
};

// One rank's window summary, the input of the rule.
struct RankSummary {
  uint32_t rank = 0;
  SpectrumSummary covariance;
  // tr(Sigma_example): per-row trace times samples per row; NaN if unknown.
  double example_trace = 0.0;
  double effective_samples = 0.0;
  uint64_t rows = 0;
};

// A flagged rank and why: one entry per statistic that fired, e.g.
// "pr 41.2 vs median 12.5 (threshold x1.50)".
struct RankDivergence {
  uint32_t rank = 0;
  std::vector<std::string> reasons;
};

// Applies the rule above. Ranks with an invalid summary are ignored (and
// never flagged). Returns the flagged ranks in increasing rank order.
std::vector<RankDivergence> DivergentRanks(const std::vector<RankSummary>& ranks,
                                           const DivergenceOptions& options);

// A rank's window as RankAccumulator::Snapshot returns it.
struct RankWindow {
  uint32_t rank = 0;
  std::vector<GradientMoments> pieces;
};

// Everything one evaluation of a run produces from its ranks' windows.
struct RunEvaluation {
  std::optional<Diagnostics> merged;  // all ranks merged; nullopt: no data
  std::vector<RankSummary> ranks;     // per rank, when >= min_ranks have data
  std::vector<RankDivergence> divergent;
};

// Merges the ranks' windows into the run's diagnostics (Summarize of the
// merged moments) and, when min_ranks to max_ranks ranks have data,
// summarises each rank's covariance and applies DivergentRanks. Windows with
// no pieces are skipped. Cost: one Summarize plus one covariance summary per
// rank.
RunEvaluation EvaluateRanks(std::vector<RankWindow> windows, const SpectrumOptions& spectrum,
                            const DivergenceOptions& options);

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_EVALUATION_H_
