// spotterctl plot: the PNG encoder (decoded back with zlib, every chunk CRC
// checked) and the trajectory drawing (phase shading, boundaries, series).
#include "client/cpp/ctl/plot.h"

#include <cmath>
#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "zlib.h"

namespace spotter {
namespace {

using testing::IsOk;

uint32_t U32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 3]));
}

// Decodes an 8-bit RGB, non-interlaced PNG with filter 0 rows, checking the
// signature, chunk order and every CRC. Fails the test on any mismatch.
RgbImage DecodePng(const std::string& png) {
  RgbImage img;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  size_t at = 8;
  std::string idat;
  std::vector<std::string> order;
  while (at + 12 <= png.size()) {
    const uint32_t len = U32(png, at);
    const std::string type = png.substr(at + 4, 4);
    const std::string data = png.substr(at + 8, len);
    const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(png.data() + at + 4), len + 4);
    EXPECT_EQ(U32(png, at + 8 + len), crc) << type;
    order.push_back(type);
    if (type == "IHDR") {
      img.width = static_cast<int>(U32(data, 0));
      img.height = static_cast<int>(U32(data, 4));
      EXPECT_EQ(data.substr(8), std::string("\x08\x02\x00\x00\x00", 5));
    } else if (type == "IDAT") {
      idat += data;
    }
    at += 12 + len;
  }
  EXPECT_EQ(at, png.size());
  EXPECT_THAT(order, ::testing::ElementsAre("IHDR", "IDAT", "IEND"));
  const size_t stride = static_cast<size_t>(img.width) * 3;
  std::string raw((stride + 1) * img.height, '\0');
  uLongf raw_len = raw.size();
  EXPECT_EQ(uncompress(reinterpret_cast<Bytef*>(raw.data()), &raw_len,
                       reinterpret_cast<const Bytef*>(idat.data()), idat.size()),
            Z_OK);
  EXPECT_EQ(raw_len, raw.size());
  for (int y = 0; y < img.height; ++y) {
    EXPECT_EQ(raw[y * (stride + 1)], 0) << "row " << y;
    img.pixels.insert(img.pixels.end(), raw.begin() + y * (stride + 1) + 1,
                      raw.begin() + (y + 1) * (stride + 1));
  }
  return img;
}

uint32_t At(const RgbImage& img, int x, int y) {
  const uint8_t* p = &img.pixels[(static_cast<size_t>(y) * img.width + x) * 3];
  return (p[0] << 16) | (p[1] << 8) | p[2];
}

TEST(PngTest, RoundTripsPixelsExactly) {
  RgbImage img{7, 5, {}};
  for (int i = 0; i < 7 * 5 * 3; ++i) img.pixels.push_back(static_cast<uint8_t>(i * 37));
  auto png = EncodePng(img);
  ASSERT_THAT(png, IsOk());
  const RgbImage back = DecodePng(*png);
  EXPECT_EQ(back.width, 7);
  EXPECT_EQ(back.height, 5);
  EXPECT_EQ(back.pixels, img.pixels);
}

TEST(PngTest, RejectsAMismatchedBuffer) {
  EXPECT_FALSE(EncodePng(RgbImage{4, 4, std::vector<uint8_t>(47)}).ok());
  EXPECT_FALSE(EncodePng(RgbImage{0, 4, {}}).ok());
}

// 300 points, acquisition until step 1000, refinement to 2000, polish after.
v1::GetTrajectoryResponse ThreePhases() {
  v1::GetTrajectoryResponse t;
  for (int i = 0; i < 300; ++i) {
    v1::TrajectoryPoint* p = t.add_points();
    const int step = 10 * i;
    p->set_step(step);
    p->set_phase(step < 1000   ? v1::PHASE_ACQUISITION
                 : step < 2000 ? v1::PHASE_REFINEMENT
                               : v1::PHASE_POLISH);
    p->set_loss(2.0 * std::exp(-step / 800.0));
    p->set_lr(step < 1000 ? 0.1 * step / 1000 : 0.05);
    v1::Estimate* r = p->mutable_covariance()->mutable_effective_rank();
    r->set_value(40 - step / 100.0);
    r->set_lower(r->value() - 2);
    r->set_upper(r->value() + 2);
    v1::Estimate* pr = p->mutable_covariance()->mutable_participation_ratio();
    pr->set_value(i < 5 ? NAN : 12 - step / 400.0);  // NaN before the first evaluation
    pr->set_lower(pr->value() - 1);
    pr->set_upper(pr->value() + 1);
  }
  for (auto [step, from, to] : {std::tuple{1000, v1::PHASE_ACQUISITION, v1::PHASE_REFINEMENT},
                                std::tuple{2000, v1::PHASE_REFINEMENT, v1::PHASE_POLISH}}) {
    v1::PhaseTransition* tr = t.add_transitions();
    tr->set_step(step);
    tr->set_from_phase(from);
    tr->set_to_phase(to);
  }
  return t;
}

TEST(PlotTest, DrawsTheExpectedSizeWithPhasesAndBoundaries) {
  auto img = DrawTrajectory(ThreePhases(), "demo", 900, 700);
  ASSERT_THAT(img, IsOk());
  auto png = EncodePng(*img);
  ASSERT_THAT(png, IsOk());
  const RgbImage back = DecodePng(*png);
  ASSERT_EQ(back.width, 900);
  ASSERT_EQ(back.height, 700);
  EXPECT_EQ(back.pixels, img->pixels);
  // Steps 0..2990 span columns 76..884: count, down a column in each phase,
  // the pixels shaded in that phase's colour, and the dashed boundary at
  // step 1000.
  auto col = [](double step) { return 76 + static_cast<int>(std::lround(step / 2990 * 808)); };
  int acquisition = 0, refinement = 0, polish = 0, boundary = 0;
  for (int yy = 40; yy < 660; ++yy) {
    acquisition += At(back, col(300), yy) == PhaseColor(v1::PHASE_ACQUISITION);
    refinement += At(back, col(1500), yy) == PhaseColor(v1::PHASE_REFINEMENT);
    polish += At(back, col(2700), yy) == PhaseColor(v1::PHASE_POLISH);
    boundary += At(back, col(1000), yy) == 0x444444;
  }
  EXPECT_GT(acquisition, 200);
  EXPECT_GT(refinement, 200);
  EXPECT_GT(polish, 200);
  EXPECT_GT(boundary, 200);  // a dashed line through all four panels
  // Each series colour appears (rank, PR, loss, LR).
  for (uint32_t c : {0x1F5FBFu, 0x2E8B57u, 0xC0392Bu, 0x7D3C98u}) {
    int n = 0;
    for (int i = 0; i < 900 * 700; ++i) n += At(back, i % 900, i / 900) == c;
    EXPECT_GT(n, 500) << std::hex << c;
  }
}

TEST(PlotTest, RejectsEmptyTrajectoriesAndBadSizes) {
  EXPECT_EQ(DrawTrajectory(v1::GetTrajectoryResponse(), "x", 900, 700).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DrawTrajectory(ThreePhases(), "x", 100, 700).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DrawTrajectory(ThreePhases(), "x", 900, 100000).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spotter
