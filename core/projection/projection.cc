#include "core/projection/projection.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "absl/strings/str_cat.h"

namespace spotter {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

class CountSketchProjection final : public Projection {
 public:
  CountSketchProjection(uint64_t seed, uint64_t p, uint32_t k)
      : Projection(ProjectionKind::kCountSketch, seed, p, k) {}

  void Apply(absl::Span<const float> x, absl::Span<float> y) const override {
    std::vector<double> acc(output_dim(), 0.0);
    for (uint64_t j = 0; j < input_dim(); ++j) {
      const CountSketchCell c = CountSketchAt(seed(), j, output_dim());
      acc[c.bucket] += static_cast<double>(c.sign) * static_cast<double>(x[j]);
    }
    for (uint32_t b = 0; b < output_dim(); ++b) y[b] = static_cast<float>(acc[b]);
  }

  void ApplyRows(const Eigen::Ref<const RowMatrixXf>& x, Eigen::Ref<RowMatrixXf> y) const override {
    const Eigen::Index m = x.rows();
    const uint32_t k = output_dim();
    RowMatrixXd acc = RowMatrixXd::Zero(m, k);
    std::vector<CountSketchCell> cells;
    // Coordinates in blocks: the cells of a block are hashed once, then each
    // row adds the block's coordinates in increasing order.
    constexpr uint64_t kBlock = 4096;
    for (uint64_t j0 = 0; j0 < input_dim(); j0 += kBlock) {
      const uint64_t n = std::min<uint64_t>(kBlock, input_dim() - j0);
      cells.resize(n);
      for (uint64_t j = 0; j < n; ++j) cells[j] = CountSketchAt(seed(), j0 + j, k);
      for (Eigen::Index i = 0; i < m; ++i) {
        const float* xi = x.row(i).data() + j0;
        double* ai = acc.row(i).data();
        for (uint64_t j = 0; j < n; ++j) {
          ai[cells[j].bucket] += static_cast<double>(cells[j].sign) * static_cast<double>(xi[j]);
        }
      }
    }
    y = acc.cast<float>();
  }
};

class GaussianProjection final : public Projection {
 public:
  GaussianProjection(uint64_t seed, uint64_t p, uint32_t k)
      : Projection(ProjectionKind::kGaussian, seed, p, k) {}

  void Apply(absl::Span<const float> x, absl::Span<float> y) const override {
    const uint32_t k = output_dim();
    std::vector<double> acc(k, 0.0);
    for (uint64_t j = 0; j < input_dim(); ++j) {
      const double xj = x[j];
      for (uint32_t b = 0; b < k; ++b) acc[b] += GaussianEntry(seed(), j, b, k) * xj;
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(k));
    for (uint32_t b = 0; b < k; ++b) y[b] = static_cast<float>(acc[b] * scale);
  }

  void ApplyRows(const Eigen::Ref<const RowMatrixXf>& x, Eigen::Ref<RowMatrixXf> y) const override {
    const Eigen::Index m = x.rows();
    const uint32_t k = output_dim();
    RowMatrixXd acc = RowMatrixXd::Zero(m, k);
    std::vector<double> z(k);
    for (uint64_t j = 0; j < input_dim(); ++j) {
      for (uint32_t b = 0; b < k; ++b) z[b] = GaussianEntry(seed(), j, b, k);
      for (Eigen::Index i = 0; i < m; ++i) {
        const double xij = x(i, static_cast<Eigen::Index>(j));
        double* ai = acc.row(i).data();
        for (uint32_t b = 0; b < k; ++b) ai[b] += z[b] * xij;
      }
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(k));
    y = (acc * scale).cast<float>();
  }
};

}  // namespace

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64At(uint64_t seed, uint64_t j) { return Mix64(seed + (j + 1) * kGolden); }

CountSketchCell CountSketchAt(uint64_t seed, uint64_t j, uint32_t k) {
  const uint64_t h = SplitMix64At(seed, j);
  // Lemire's multiply-shift maps the high 32 bits to [0, k) without a division.
  const auto bucket = static_cast<uint32_t>(((h >> 32) * static_cast<uint64_t>(k)) >> 32);
  return {bucket, (h & 1) ? -1.0f : 1.0f};
}

double GaussianEntry(uint64_t seed, uint64_t j, uint32_t b, uint32_t k) {
  const uint64_t n = j * static_cast<uint64_t>(k) + b;
  constexpr double kInv53 = 1.0 / 9007199254740992.0;  // 2^-53
  const double u1 = static_cast<double>((SplitMix64At(seed, 2 * n) >> 11) + 1) * kInv53;
  const double u2 = static_cast<double>(SplitMix64At(seed, 2 * n + 1) >> 11) * kInv53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

namespace {

// The identity (P == k): the rows are the gradients themselves.
class IdentityProjection final : public Projection {
 public:
  explicit IdentityProjection(uint32_t k) : Projection(ProjectionKind::kIdentity, 0, k, k) {}

  void Apply(absl::Span<const float> x, absl::Span<float> y) const override {
    std::copy(x.begin(), x.end(), y.begin());
  }
  void ApplyRows(const Eigen::Ref<const RowMatrixXf>& x, Eigen::Ref<RowMatrixXf> y) const override {
    y = x;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Projection>> Projection::Create(ProjectionKind kind, uint64_t seed,
                                                               uint64_t input_dim,
                                                               uint32_t output_dim) {
  if (input_dim < 1 || output_dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("projection needs input_dim >= 1 and output_dim >= 1, got ", input_dim,
                     " and ", output_dim));
  }
  switch (kind) {
    case ProjectionKind::kCountSketch:
      return std::unique_ptr<Projection>(new CountSketchProjection(seed, input_dim, output_dim));
    case ProjectionKind::kGaussian:
      return std::unique_ptr<Projection>(new GaussianProjection(seed, input_dim, output_dim));
    case ProjectionKind::kIdentity:
      if (input_dim != output_dim) {
        return absl::InvalidArgumentError(
            absl::StrCat("the identity projection needs input_dim == output_dim, got ", input_dim,
                         " and ", output_dim));
      }
      return std::unique_ptr<Projection>(new IdentityProjection(output_dim));
  }
  return absl::InvalidArgumentError("unknown projection kind");
}

void Projection::ApplyRows(const Eigen::Ref<const RowMatrixXf>& x,
                           Eigen::Ref<RowMatrixXf> y) const {
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    Apply(absl::MakeConstSpan(x.row(i).data(), static_cast<size_t>(x.cols())),
          absl::MakeSpan(y.row(i).data(), static_cast<size_t>(y.cols())));
  }
}

}  // namespace spotter
