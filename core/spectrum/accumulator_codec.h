// Byte encodings of the streaming sketch state, so that a server can persist
// a rank's windowed statistics and, after a restart, continue the very same
// estimate instead of starting cold.
//
// Restoring is exact: DecodeRankAccumulator(EncodeRankAccumulator(a)) holds
// the same floats, scales and bounds as `a`, so feeding both the same batches
// gives bit-identical sketches (tests/unit/checkpoint_test.cc). The encoding
// is versioned and fully validated on decode: a truncated, oversized or
// inconsistent input is an error naming what is wrong, never a crash or a
// silently different sketch. Integrity against flipped bytes (checksums) is
// the caller's: the server frames every stored record with a CRC-32C.
#ifndef SPOTTER_CORE_SPECTRUM_ACCUMULATOR_CODEC_H_
#define SPOTTER_CORE_SPECTRUM_ACCUMULATOR_CODEC_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/spectrum/moments.h"

namespace spotter {

// Format version written by EncodeRankAccumulator. Version 2 added the
// fourth-moment sums (GradientMoments::norm4_*); version 1 is still read
// (those sums restored as 0: the rows' kurtosis unknown until new batches
// arrive).
inline constexpr uint32_t kRankCheckpointVersion = 2;

// The complete state of `acc`. Size: about 4 * dim * (rows held by its
// sketches) bytes plus a small header. Thread-compatible (reads only).
std::string EncodeRankAccumulator(const RankAccumulator& acc);

// The accumulator encoded in `bytes`. The run's parameters are passed in and
// must match the encoded ones (a checkpoint of another configuration is an
// error, not a reinterpretation). INVALID_ARGUMENT (DATA_LOSS for a truncated
// input) with a message naming the first inconsistent field.
absl::StatusOr<RankAccumulator> DecodeRankAccumulator(std::string_view bytes, int dim,
                                                      int sketch_rows, const WindowOptions& window);

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_ACCUMULATOR_CODEC_H_
