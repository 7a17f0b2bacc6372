#include "proto/convert/summary.h"

namespace spotter {

void ToProto(const Estimate& e, v1::Estimate* out) {
  out->set_value(e.value);
  out->set_lower(e.lower);
  out->set_upper(e.upper);
  out->set_censored(e.censored);
}

void ToProto(const SpectrumSummary& s, v1::SpectrumSummary* out) {
  out->set_trace(s.trace);
  ToProto(s.top_eigenvalue, out->mutable_top_eigenvalue());
  ToProto(s.effective_rank, out->mutable_effective_rank());
  ToProto(s.rank_fraction, out->mutable_rank_fraction());
  ToProto(s.participation_ratio, out->mutable_participation_ratio());
  out->set_participation_ratio_raw(s.participation_ratio_raw);
  ToProto(s.stable_rank, out->mutable_stable_rank());
  for (double v : s.eigenvalues) out->add_eigenvalues(v);
  out->set_eigenvalue_error(s.eigenvalue_error);
}

}  // namespace spotter
