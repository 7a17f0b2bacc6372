// Conversions of the spectral summaries (core/spectrum/summary.h) to their
// proto messages, shared by the server and the tools. Stateless; thread-safe.
#ifndef SPOTTER_PROTO_CONVERT_SUMMARY_H_
#define SPOTTER_PROTO_CONVERT_SUMMARY_H_

#include "core/spectrum/summary.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// `level`: the confidence level of the estimate's sampling interval.
void ToProto(const Estimate& e, double level, v1::Estimate* out);
// With the eigenvalues the summary holds.
void ToProto(const SpectrumSummary& s, v1::SpectrumSummary* out);

}  // namespace spotter

#endif  // SPOTTER_PROTO_CONVERT_SUMMARY_H_
