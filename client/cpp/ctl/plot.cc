#include "client/cpp/ctl/plot.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "client/cpp/ctl/format.h"
#include "zlib.h"

namespace spotter {
namespace {

// ---- PNG -------------------------------------------------------------------

void PutU32(std::string* out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(b, 4);
}

void PutChunk(std::string* out, const char type[4], const std::string& data) {
  PutU32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out->size();
  out->append(type, 4);
  out->append(data);
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(out->data() + start),
                          static_cast<uInt>(4 + data.size()));
  PutU32(out, static_cast<uint32_t>(crc));
}

// ---- A 5x7 bitmap font (upper case, digits, a few symbols) -------------------

struct Glyph {
  char c;
  std::array<uint8_t, 7> rows;  // 5 bits each, most significant bit left
};

constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
};

const Glyph* FindGlyph(char c) {
  c = absl::ascii_toupper(static_cast<unsigned char>(c));
  for (const Glyph& g : kFont) {
    if (g.c == c) return &g;
  }
  return nullptr;  // drawn as a space
}

// ---- Drawing -----------------------------------------------------------------

constexpr uint32_t kWhite = 0xFFFFFF;
constexpr uint32_t kInk = 0x222222;
constexpr uint32_t kGrid = 0xD0D0D0;
constexpr uint32_t kBoundary = 0x444444;
constexpr uint32_t kSeries[] = {0x1F5FBF, 0x2E8B57, 0xC0392B, 0x7D3C98};
constexpr uint32_t kBand[] = {0xA9C4EB, 0xA8D8BD, 0xEBB0AA, 0xCDB4DB};

class Canvas {
 public:
  Canvas(int w, int h) : img_{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3, 0xFF)} {}

  void Pixel(int x, int y, uint32_t c) {
    if (x < 0 || y < 0 || x >= img_.width || y >= img_.height) return;
    uint8_t* p = &img_.pixels[(static_cast<size_t>(y) * img_.width + x) * 3];
    p[0] = static_cast<uint8_t>(c >> 16);
    p[1] = static_cast<uint8_t>(c >> 8);
    p[2] = static_cast<uint8_t>(c);
  }
  void Fill(int x0, int y0, int x1, int y1, uint32_t c) {  // inclusive corners
    for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y) {
      for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) Pixel(x, y, c);
    }
  }
  // Bresenham, `thick` pixels wide (vertically).
  void Line(int x0, int y0, int x1, int y1, uint32_t c, int thick = 1) {
    const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    while (true) {
      for (int t = 0; t < thick; ++t) Pixel(x0, y0 + t, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  // Text with its top-left corner at (x, y); each font pixel is scale^2.
  void Text(int x, int y, const std::string& s, uint32_t c, int scale = 1) {
    for (char ch : s) {
      if (const Glyph* g = FindGlyph(ch)) {
        for (int r = 0; r < 7; ++r) {
          for (int b = 0; b < 5; ++b) {
            if (g->rows[r] & (0x10 >> b)) {
              Fill(x + b * scale, y + r * scale, x + b * scale + scale - 1,
                   y + r * scale + scale - 1, c);
            }
          }
        }
      }
      x += 6 * scale;
    }
  }
  static int TextWidth(const std::string& s, int scale = 1) {
    return static_cast<int>(s.size()) * 6 * scale;
  }
  RgbImage Take() { return std::move(img_); }

 private:
  RgbImage img_;
};

// A "nice" tick step (1, 2 or 5 times a power of ten) for about n ticks.
double NiceStep(double span, int n) {
  if (!(span > 0)) return 1.0;
  const double raw = span / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

std::string TickLabel(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) return absl::StrFormat("%.1e", v);
  return absl::StrFormat("%.4g", v);
}

// One panel's series: the value and, optionally, its interval.
struct Series {
  std::string label;
  std::function<double(const v1::TrajectoryPoint&)> value;
  std::function<double(const v1::TrajectoryPoint&)> lower;  // may be empty
  std::function<double(const v1::TrajectoryPoint&)> upper;
};

}  // namespace

uint32_t PhaseColor(int phase) {
  switch (phase) {
    case v1::PHASE_ACQUISITION:
      return 0xE8F0FB;  // blue tint
    case v1::PHASE_REFINEMENT:
      return 0xFCEFDC;  // orange tint
    case v1::PHASE_POLISH:
      return 0xE5F5EA;  // green tint
    case v1::PHASE_DONE:
      return 0xEFE7F5;  // purple tint
    default:
      return kWhite;
  }
}

absl::StatusOr<std::string> EncodePng(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image %dx%d has %d bytes of pixels", image.width, image.height, image.pixels.size()));
  }
  // Scanlines, each prefixed with filter type 0 (none).
  const size_t stride = static_cast<size_t>(image.width) * 3;
  std::string raw;
  raw.reserve((stride + 1) * image.height);
  for (int y = 0; y < image.height; ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(&image.pixels[y * stride]), stride);
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string deflated(size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(deflated.data()), &size,
                reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()),
                Z_BEST_COMPRESSION) != Z_OK) {
    return absl::InternalError("zlib compress2 failed");
  }
  deflated.resize(size);

  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  PutU32(&ihdr, static_cast<uint32_t>(image.width));
  PutU32(&ihdr, static_cast<uint32_t>(image.height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // depth 8, RGB, deflate, filter 0, no interlace
  PutChunk(&png, "IHDR", ihdr);
  PutChunk(&png, "IDAT", deflated);
  PutChunk(&png, "IEND", "");
  return png;
}

absl::StatusOr<RgbImage> DrawTrajectory(const v1::GetTrajectoryResponse& t, const std::string& run,
                                        int width, int height) {
  if (width < 320 || height < 240 || width > 8192 || height > 8192) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "plot size %dx%d: width and height must be within [320, 8192] x [240, 8192]", width,
        height));
  }
  if (t.points().empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("run %s has no trajectory points yet: nothing to plot", run));
  }
  const auto& pts = t.points();
  const double s0 = static_cast<double>(pts[0].step());
  const double s1 = std::max(static_cast<double>(pts[pts.size() - 1].step()), s0 + 1);

  const std::vector<Series> panels = {
      // The band is the sampling confidence interval (the error bar), not
      // the sketch bound.
      {"EFFECTIVE RANK R90, 90% CI",
       [](const v1::TrajectoryPoint& p) { return p.covariance().effective_rank().value(); },
       [](const v1::TrajectoryPoint& p) {
         return p.covariance().effective_rank().confidence_lower();
       },
       [](const v1::TrajectoryPoint& p) {
         return p.covariance().effective_rank().confidence_upper();
       }},
      {"PARTICIPATION RATIO, 90% CI",
       [](const v1::TrajectoryPoint& p) { return p.covariance().participation_ratio().value(); },
       [](const v1::TrajectoryPoint& p) {
         return p.covariance().participation_ratio().confidence_lower();
       },
       [](const v1::TrajectoryPoint& p) {
         return p.covariance().participation_ratio().confidence_upper();
       }},
      {"TRAINING LOSS", [](const v1::TrajectoryPoint& p) { return p.loss(); }, nullptr, nullptr},
      {"LEARNING RATE", [](const v1::TrajectoryPoint& p) { return p.lr(); }, nullptr, nullptr},
  };

  Canvas c(width, height);
  const int left = 76, right = width - 16, top = 34, bottom = height - 34;
  const int gap = 12;
  const int n = static_cast<int>(panels.size());
  const int panel_h = (bottom - top - gap * (n - 1)) / n;
  auto xpix = [&](double step) {
    return left + static_cast<int>(std::lround((step - s0) / (s1 - s0) * (right - left)));
  };

  c.Text(left, 10,
         absl::StrFormat("RUN %s  (%d POINTS, STEPS %d-%d)", run, pts.size(), pts[0].step(),
                         pts[pts.size() - 1].step()),
         kInk, 2);

  // Phase of each column: the phase of the last point at or before its step.
  std::vector<int> column_phase(right - left + 1, v1::PHASE_UNSPECIFIED);
  {
    size_t i = 0;
    for (int x = left; x <= right; ++x) {
      const double step = s0 + (x - left) * (s1 - s0) / (right - left);
      while (i + 1 < static_cast<size_t>(pts.size()) && pts[i + 1].step() <= step) ++i;
      column_phase[x - left] = pts[i].phase();
    }
  }
  // Phase boundaries: the transitions inside the plotted steps, else the
  // points where the phase changes.
  std::vector<std::pair<double, int>> boundaries;  // step, phase entered
  for (const v1::PhaseTransition& tr : t.transitions()) {
    if (tr.from_phase() != tr.to_phase() && tr.step() >= s0 && tr.step() <= s1) {
      boundaries.emplace_back(static_cast<double>(tr.step()), tr.to_phase());
    }
  }
  if (boundaries.empty()) {
    for (int i = 1; i < pts.size(); ++i) {
      if (pts[i].phase() != pts[i - 1].phase()) {
        boundaries.emplace_back(static_cast<double>(pts[i].step()), pts[i].phase());
      }
    }
  }

  for (int k = 0; k < n; ++k) {
    const Series& s = panels[k];
    const int py0 = top + k * (panel_h + gap), py1 = py0 + panel_h;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto& p : pts) {
      for (const auto* f : {&s.value, &s.lower, &s.upper}) {
        if (!*f) continue;
        const double v = (*f)(p);
        if (std::isfinite(v)) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
    }
    if (!std::isfinite(lo)) {
      lo = 0;
      hi = 1;
    }
    if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
      lo -= 0.5;
      hi += 0.5;
    }
    const double pad = 0.06 * (hi - lo);
    lo -= pad;
    hi += pad;
    auto ypix = [&](double v) {
      return py1 - static_cast<int>(std::lround((v - lo) / (hi - lo) * (py1 - py0)));
    };

    for (int x = left; x <= right; ++x) {
      c.Line(x, py0, x, py1, PhaseColor(column_phase[x - left]));
    }
    const double ystep = NiceStep(hi - lo, 4);
    for (double v = std::ceil(lo / ystep) * ystep; v <= hi; v += ystep) {
      const int y = ypix(v);
      for (int x = left; x <= right; x += 4) c.Pixel(x, y, kGrid);
      const std::string label = TickLabel(std::fabs(v) < ystep * 1e-9 ? 0.0 : v);
      c.Text(left - 6 - Canvas::TextWidth(label), y - 3, label, kInk);
    }
    // The interval as a band, then the value as a line, skipping NaN gaps.
    if (s.lower && s.upper) {
      for (int i = 1; i < pts.size(); ++i) {
        const double l0 = s.lower(pts[i - 1]), l1 = s.lower(pts[i]);
        const double u0 = s.upper(pts[i - 1]), u1 = s.upper(pts[i]);
        if (!std::isfinite(l0 + l1 + u0 + u1)) continue;
        const int xa = xpix(pts[i - 1].step()), xb = xpix(pts[i].step());
        for (int x = xa; x <= xb; ++x) {
          const double f = xb == xa ? 1.0 : static_cast<double>(x - xa) / (xb - xa);
          c.Line(x, ypix(u0 + f * (u1 - u0)), x, ypix(l0 + f * (l1 - l0)), kBand[k]);
        }
      }
    }
    for (int i = 1; i < pts.size(); ++i) {
      const double v0 = s.value(pts[i - 1]), v1 = s.value(pts[i]);
      if (!std::isfinite(v0) || !std::isfinite(v1)) continue;
      c.Line(xpix(pts[i - 1].step()), ypix(v0), xpix(pts[i].step()), ypix(v1), kSeries[k], 2);
    }
    for (const auto& [step, phase] : boundaries) {
      const int x = xpix(step);
      for (int y = py0; y <= py1; ++y) {
        if ((y - py0) % 6 < 4) c.Pixel(x, y, kBoundary);
      }
      if (k == 0) c.Text(x + 3, py0 + 3, PhaseLabel(phase), kBoundary);
    }
    // Frame and title.
    c.Line(left, py0, right, py0, kInk);
    c.Line(left, py1, right, py1, kInk);
    c.Line(left, py0, left, py1, kInk);
    c.Line(right, py0, right, py1, kInk);
    c.Text(right - Canvas::TextWidth(s.label) - 4, py0 + 4, s.label, kSeries[k]);
  }
  // Step axis under the last panel.
  const double xstep = NiceStep(s1 - s0, 6);
  for (double v = std::ceil(s0 / xstep) * xstep; v <= s1; v += xstep) {
    const int x = xpix(v);
    c.Line(x, bottom, x, bottom + 4, kInk);
    const std::string label = TickLabel(v);
    c.Text(x - Canvas::TextWidth(label) / 2, bottom + 7, label, kInk);
  }
  c.Text(right - Canvas::TextWidth("STEP"), bottom + 20, "STEP", kInk);
  return c.Take();
}

}  // namespace spotter
