// `spotterctl plot`: a run's trajectory drawn as one PNG. Four stacked panels
// against the step (effective rank r90 with its certified interval as a band,
// participation ratio with its interval, training loss, learning rate), each
// phase shaded in its own colour and every phase boundary a vertical line.
// The PNG is written here (8-bit RGB, zlib-compressed, no other library).
#ifndef SPOTTER_CLIENT_CPP_CTL_PLOT_H_
#define SPOTTER_CLIENT_CPP_CTL_PLOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// An 8-bit RGB raster, row-major, 3 bytes per pixel.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // width * height * 3
};

// Encodes `image` as a PNG file (colour type 2, bit depth 8, filter 0 on every
// row). INVALID_ARGUMENT when the pixel buffer does not match the size;
// INTERNAL if zlib fails.
absl::StatusOr<std::string> EncodePng(const RgbImage& image);

// Draws `trajectory` of run `run` at width x height pixels. INVALID_ARGUMENT
// for a size under 320 x 240 or above 8192 x 8192, or a trajectory with no
// points.
absl::StatusOr<RgbImage> DrawTrajectory(const v1::GetTrajectoryResponse& trajectory,
                                        const std::string& run, int width, int height);

// The phase colour of the panels' background for `phase` (v1::Phase value),
// as 0xRRGGBB; public so that tests can find the shading.
uint32_t PhaseColor(int phase);

}  // namespace spotter

#endif  // SPOTTER_CLIENT_CPP_CTL_PLOT_H_
