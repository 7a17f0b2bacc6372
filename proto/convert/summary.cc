#include "proto/convert/summary.h"

namespace spotter {

void ToProto(const Estimate& e, double level, v1::Estimate* out) {
  out->set_value(e.value);
  out->set_lower(e.lower);
  out->set_upper(e.upper);
  out->set_censored(e.censored);
  out->set_confidence_lower(e.ci_lower);
  out->set_confidence_upper(e.ci_upper);
  out->set_confidence_level(level);
}

void ToProto(const SpectrumSummary& s, v1::SpectrumSummary* out) {
  const double level = s.confidence;
  out->set_trace(s.trace);
  ToProto(s.top_eigenvalue, level, out->mutable_top_eigenvalue());
  ToProto(s.effective_rank, level, out->mutable_effective_rank());
  ToProto(s.rank_fraction, level, out->mutable_rank_fraction());
  ToProto(s.participation_ratio, level, out->mutable_participation_ratio());
  out->set_participation_ratio_raw(s.participation_ratio_raw);
  ToProto(s.stable_rank, level, out->mutable_stable_rank());
  for (double v : s.eigenvalues) out->add_eigenvalues(v);
  out->set_eigenvalue_error(s.eigenvalue_error);
  out->set_effective_samples(s.effective_samples);
  out->set_kurtosis(s.kurtosis);
}

}  // namespace spotter
