// Writes the projection test vectors of docs/PROJECTION.md: for a handful of
// (kind, seed, input_dim, output_dim), input rows and the exact float32
// output of core/projection/projection.cc, as bit patterns. Every client that
// implements the maps (the Python package, a GPU kernel) must reproduce the
// outputs bit for bit; tests/unit/projection_test.cc checks this code against
// them.
//
//   spotter_projection_vectors --out=tests/data/projection
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "core/projection/projection.h"

ABSL_FLAG(std::string, out, "tests/data/projection", "output directory (must exist)");

namespace spotter {
namespace {

struct Case {
  ProjectionKind kind;
  uint64_t seed;
  uint64_t input_dim;
  uint32_t output_dim;
  int rows;
};

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

uint64_t Bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

// Input rows: row 0 standard normal; row 1 normal times 2^e with e uniform
// in [-40, 40] (wide dynamic range: the double sums are inexact, so the
// summation order matters); row 2 signed zeros, powers of two and exact
// cancellations; further rows normal.
RowMatrixXf Inputs(const Case& c) {
  std::mt19937_64 rng(c.seed ^ (c.input_dim * 1315423911ULL) ^ c.output_dim);
  std::normal_distribution<float> n01;
  std::uniform_int_distribution<int> ex(-40, 40);
  RowMatrixXf x(c.rows, static_cast<Eigen::Index>(c.input_dim));
  for (int i = 0; i < c.rows; ++i) {
    for (uint64_t j = 0; j < c.input_dim; ++j) {
      float v = n01(rng);
      if (i == 1) v = std::ldexp(v, ex(rng));
      if (i == 2) {
        switch (j % 4) {
          case 0:
            v = (j % 8 == 0) ? 0.0f : -0.0f;
            break;
          case 1:
            v = std::ldexp(1.0f, static_cast<int>(j % 23) - 11);
            break;
          case 2:
            v = 3.0e7f;
            break;
          default:
            v = -3.0e7f;
            break;
        }
      }
      x(i, static_cast<Eigen::Index>(j)) = v;
    }
  }
  return x;
}

const char* KindName(ProjectionKind k) {
  return k == ProjectionKind::kGaussian ? "gaussian" : "count_sketch";
}

int Write(const std::string& dir, const Case& c) {
  auto proj = Projection::Create(c.kind, c.seed, c.input_dim, c.output_dim);
  if (!proj.ok()) {
    std::fprintf(stderr, "%s\n", proj.status().ToString().c_str());
    return 1;
  }
  const RowMatrixXf x = Inputs(c);
  RowMatrixXf y(c.rows, c.output_dim);
  (*proj)->ApplyRows(x, y);
  const std::string name = absl::StrFormat("%s/%s_seed%u_p%u_k%u.txt", dir, KindName(c.kind),
                                           c.seed, c.input_dim, c.output_dim);
  FILE* f = std::fopen(name.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", name.c_str());
    return 1;
  }
  absl::FPrintF(f,
                "# Spotter projection test vector; format in docs/PROJECTION.md.\n"
                "# Regenerate: spotter_projection_vectors --out=tests/data/projection\n"
                "format spotter-projection-vector 1\n"
                "kind %s\nseed %u\ninput_dim %u\noutput_dim %u\nrows %d\n",
                KindName(c.kind), c.seed, c.input_dim, c.output_dim, c.rows);
  if (c.kind == ProjectionKind::kCountSketch) {
    for (uint64_t j = 0; j < std::min<uint64_t>(16, c.input_dim); ++j) {
      const CountSketchCell cell = CountSketchAt(c.seed, j, c.output_dim);
      absl::FPrintF(f, "cell %u %u %d\n", j, cell.bucket, cell.sign > 0 ? 1 : -1);
    }
  } else {
    for (uint64_t j = 0; j < std::min<uint64_t>(4, c.input_dim); ++j) {
      for (uint32_t b = 0; b < std::min<uint32_t>(4, c.output_dim); ++b) {
        absl::FPrintF(f, "entry %u %u %016x\n", j, b,
                      Bits(GaussianEntry(c.seed, j, b, c.output_dim)));
      }
    }
  }
  for (int i = 0; i < c.rows; ++i) {
    absl::FPrintF(f, "input %d", i);
    for (uint64_t j = 0; j < c.input_dim; ++j) {
      absl::FPrintF(f, " %08x", Bits(x(i, static_cast<Eigen::Index>(j))));
    }
    absl::FPrintF(f, "\n");
  }
  for (int i = 0; i < c.rows; ++i) {
    absl::FPrintF(f, "output %d", i);
    for (uint32_t b = 0; b < c.output_dim; ++b) absl::FPrintF(f, " %08x", Bits(y(i, b)));
    absl::FPrintF(f, "\n");
  }
  std::fclose(f);
  std::printf("wrote %s\n", name.c_str());
  return 0;
}

}  // namespace
}  // namespace spotter

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using spotter::ProjectionKind;
  const spotter::Case cases[] = {
      {ProjectionKind::kCountSketch, 0, 1, 1, 1},
      {ProjectionKind::kCountSketch, 42, 100, 7, 3},
      {ProjectionKind::kCountSketch, 0xFFFFFFFFFFFFFFFFULL, 1000, 64, 3},
      {ProjectionKind::kCountSketch, 0x9E3779B97F4A7C15ULL, 4096, 256, 3},
      {ProjectionKind::kCountSketch, 1ULL << 63, 333, 4096, 3},
      {ProjectionKind::kCountSketch, 1, 20000, 1000, 2},
      {ProjectionKind::kGaussian, 0, 1, 1, 1},
      {ProjectionKind::kGaussian, 42, 50, 7, 3},
      {ProjectionKind::kGaussian, 0xFFFFFFFFFFFFFFFFULL, 300, 64, 3},
      {ProjectionKind::kGaussian, 7, 2000, 16, 2},
  };
  int rc = 0;
  for (const spotter::Case& c : cases) rc |= spotter::Write(absl::GetFlag(FLAGS_out), c);
  return rc;
}
