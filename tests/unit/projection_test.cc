// The projection maps against their specification (docs/PROJECTION.md): the
// shipped test vectors bit for bit, an independent SplitMix64 known answer,
// batch == single-row application, and the norm-preservation in expectation
// that the summaries rely on.
#include "core/projection/projection.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using testing::IsOk;
using testing::StatusIs;

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint32_t ToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

uint64_t ToBits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

// One parsed test-vector file (format in docs/PROJECTION.md).
struct Vector {
  std::string file;
  std::map<std::string, std::string> header;
  std::vector<std::vector<uint64_t>> cells;    // j, bucket, sign (+1 / -1 as 1 / 0)
  std::vector<std::vector<uint64_t>> entries;  // j, b, float64 bits
  std::vector<std::vector<uint32_t>> inputs, outputs;
};

Vector Parse(const std::filesystem::path& path) {
  Vector v;
  v.file = path.filename().string();
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (key == "cell") {
      uint64_t j, b;
      int sign;
      ls >> j >> b >> sign;
      v.cells.push_back({j, b, sign > 0 ? 1u : 0u});
    } else if (key == "entry") {
      uint64_t j, b, bits;
      ls >> j >> b >> std::hex >> bits;
      v.entries.push_back({j, b, bits});
    } else if (key == "input" || key == "output") {
      int row;
      ls >> row;
      std::vector<uint32_t> values;
      uint32_t bits;
      while (ls >> std::hex >> bits) values.push_back(bits);
      (key == "input" ? v.inputs : v.outputs).push_back(std::move(values));
    } else {
      std::string rest;
      std::getline(ls >> std::ws, rest);
      v.header[key] = rest;
    }
  }
  return v;
}

std::vector<Vector> LoadVectors() {
  // The source tree from CMake, not __FILE__: a compiler launcher (ccache
  // with base_dir) may make __FILE__ relative to the build directory.
  const std::filesystem::path dir =
      std::filesystem::path(SPOTTER_SOURCE_DIR) / "tests" / "data" / "projection";
  std::vector<Vector> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".txt") out.push_back(Parse(e.path()));
  }
  return out;
}

TEST(ProjectionTest, MatchesTheShippedTestVectorsBitForBit) {
  const std::vector<Vector> vectors = LoadVectors();
  ASSERT_GE(vectors.size(), 10u) << "tests/data/projection/*.txt";
  int kinds_seen[2] = {0, 0};
  for (const Vector& v : vectors) {
    SCOPED_TRACE(v.file);
    ASSERT_EQ(v.header.at("format"), "spotter-projection-vector 1");
    const bool gaussian = v.header.at("kind") == "gaussian";
    ++kinds_seen[gaussian];
    const uint64_t seed = std::stoull(v.header.at("seed"));
    const uint64_t p = std::stoull(v.header.at("input_dim"));
    const uint32_t k = static_cast<uint32_t>(std::stoul(v.header.at("output_dim")));
    const int rows = std::stoi(v.header.at("rows"));
    ASSERT_EQ(static_cast<int>(v.inputs.size()), rows);
    ASSERT_EQ(static_cast<int>(v.outputs.size()), rows);
    for (const auto& c : v.cells) {
      const CountSketchCell cell = CountSketchAt(seed, c[0], k);
      EXPECT_EQ(cell.bucket, c[1]) << "coordinate " << c[0];
      EXPECT_EQ(cell.sign > 0, c[2] == 1) << "coordinate " << c[0];
    }
    for (const auto& e : v.entries) {
      EXPECT_EQ(ToBits(GaussianEntry(seed, e[0], static_cast<uint32_t>(e[1]), k)), e[2])
          << "entry (" << e[1] << ", " << e[0] << ")";
    }
    auto proj = Projection::Create(
        gaussian ? ProjectionKind::kGaussian : ProjectionKind::kCountSketch, seed, p, k);
    ASSERT_THAT(proj, IsOk());
    RowMatrixXf x(rows, static_cast<Eigen::Index>(p));
    for (int i = 0; i < rows; ++i) {
      ASSERT_EQ(v.inputs[i].size(), p);
      for (uint64_t j = 0; j < p; ++j)
        x(i, static_cast<Eigen::Index>(j)) = FromBits(v.inputs[i][j]);
    }
    RowMatrixXf batch(rows, k), single(1, k);
    (*proj)->ApplyRows(x, batch);
    for (int i = 0; i < rows; ++i) {
      ASSERT_EQ(v.outputs[i].size(), k);
      (*proj)->Apply(absl::MakeConstSpan(x.row(i).data(), p),
                     absl::MakeSpan(single.row(0).data(), k));
      int mismatches = 0;
      for (uint32_t b = 0; b < k; ++b) {
        mismatches += ToBits(batch(i, b)) != v.outputs[i][b];
        mismatches += ToBits(single(0, b)) != v.outputs[i][b];
      }
      EXPECT_EQ(mismatches, 0) << "row " << i;
    }
  }
  EXPECT_GT(kinds_seen[0], 0);
  EXPECT_GT(kinds_seen[1], 0);
}

TEST(ProjectionTest, SplitMix64KnownAnswers) {
  // Vigna's splitmix64.c seeded with 0: the first output is
  // 0xe220a8397b1dcdaf.
  EXPECT_EQ(SplitMix64At(0, 0), 0xE220A8397B1DCDAFULL);
  // Output j is the finaliser of seed + (j + 1) * golden, wrapping.
  EXPECT_EQ(SplitMix64At(0xFFFFFFFFFFFFFFFFULL, 0), Mix64(0x9E3779B97F4A7C14ULL));
  EXPECT_EQ(SplitMix64At(5, 2), Mix64(5 + 3 * 0x9E3779B97F4A7C15ULL));
  // Lemire's reduction uses the high 32 bits; the sign the lowest bit.
  const uint64_t h = SplitMix64At(11, 7);
  const CountSketchCell c = CountSketchAt(11, 7, 1000);
  EXPECT_EQ(c.bucket, ((h >> 32) * 1000) >> 32);
  EXPECT_EQ(c.sign, (h & 1) ? -1.0f : 1.0f);
}

TEST(ProjectionTest, BatchEqualsRowByRowForEveryKind) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n01;
  for (ProjectionKind kind : {ProjectionKind::kCountSketch, ProjectionKind::kGaussian}) {
    const uint64_t p = kind == ProjectionKind::kGaussian ? 300 : 9000;
    auto proj = *Projection::Create(kind, 99, p, 37);
    RowMatrixXf x(5, static_cast<Eigen::Index>(p));
    for (int i = 0; i < x.rows(); ++i)
      for (int j = 0; j < x.cols(); ++j) x(i, j) = n01(rng) * std::ldexp(1.0f, j % 30 - 15);
    RowMatrixXf batch(5, 37), single(1, 37);
    proj->ApplyRows(x, batch);
    for (int i = 0; i < x.rows(); ++i) {
      proj->Apply(absl::MakeConstSpan(x.row(i).data(), p), absl::MakeSpan(single.data(), 37));
      for (int b = 0; b < 37; ++b) EXPECT_EQ(ToBits(batch(i, b)), ToBits(single(0, b)));
    }
  }
}

TEST(ProjectionTest, PreservesSquaredNormsInExpectation) {
  // E |S x|^2 = |x|^2 for both maps; over 400 seeds the mean ratio is within
  // 5 standard errors (Var(|Sx|^2 / |x|^2) <= 2 / k for both maps).
  const uint64_t p = 200;
  const uint32_t k = 16;
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n01;
  std::vector<float> x(p);
  double norm = 0;
  for (float& v : x) {
    v = n01(rng);
    norm += static_cast<double>(v) * v;
  }
  for (ProjectionKind kind : {ProjectionKind::kCountSketch, ProjectionKind::kGaussian}) {
    const int seeds = 400;
    double sum = 0;
    std::vector<float> y(k);
    for (int s = 0; s < seeds; ++s) {
      auto proj = *Projection::Create(kind, 1000 + s, p, k);
      proj->Apply(x, absl::MakeSpan(y));
      double sq = 0;
      for (float v : y) sq += static_cast<double>(v) * v;
      sum += sq / norm;
    }
    EXPECT_NEAR(sum / seeds, 1.0, 5 * std::sqrt(2.0 / k / seeds));
  }
}

TEST(ProjectionTest, RejectsEmptyDimensions) {
  EXPECT_THAT(Projection::Create(ProjectionKind::kCountSketch, 1, 0, 8),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Projection::Create(ProjectionKind::kGaussian, 1, 8, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ProjectionTest, TheIdentityCopiesAndNeedsPEqualK) {
  auto id = *Projection::Create(ProjectionKind::kIdentity, 0, 4, 4);
  RowMatrixXf x(2, 4), y(2, 4);
  x << 1.5f, -2.0f, 0.0f, 3.25f, 7.0f, 8.0f, -9.0f, 1e-30f;
  id->ApplyRows(x, y);
  EXPECT_EQ(y, x);
  std::vector<float> one(4);
  id->Apply(absl::MakeConstSpan(x.row(1).data(), 4), absl::MakeSpan(one));
  for (int j = 0; j < 4; ++j) EXPECT_EQ(one[j], x(1, j));
  EXPECT_THAT(Projection::Create(ProjectionKind::kIdentity, 0, 5, 4),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace spotter
