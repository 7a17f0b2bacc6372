#include "tests/scenarios/scenario.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace spotter::scenarios {

double Curve::At(double step) const {
  if (knots.empty()) return 0.0;
  if (step <= knots.front().first) return knots.front().second;
  for (size_t i = 1; i < knots.size(); ++i) {
    const auto& [x1, y1] = knots[i];
    if (step <= x1) {
      const auto& [x0, y0] = knots[i - 1];
      return x1 > x0 ? y0 + (y1 - y0) * (step - x0) / (x1 - x0) : y1;
    }
  }
  return knots.back().second;
}

ScenarioGenerator::ScenarioGenerator(ScenarioSpec spec, uint64_t seed)
    : spec_(std::move(spec)), rng_(seed * 0x9E3779B97F4A7C15ull + 17) {
  // The wobble's phase is the seed's; the rows and the loss noise follow.
  phase_ = std::uniform_real_distribution<double>(0.0, 2 * std::numbers::pi)(rng_);
}

double ScenarioGenerator::RankAt(uint64_t step) const {
  const double t = static_cast<double>(step);
  const Wobble& w = spec_.wobble;
  double r = spec_.rank.At(t);
  if (w.amplitude > 0.0 && t >= w.start) {
    r *= 1.0 + w.amplitude * std::sin(2 * std::numbers::pi * (t - w.start) / w.period + phase_);
  }
  return r;
}

Planted ScenarioGenerator::Truth(uint64_t step) const {
  Planted p;
  p.rank = RankAt(step);
  p.share = spec_.signal_share.At(static_cast<double>(step));
  const std::vector<double> e = Eigenvalues(step);
  p.r90 = R90(e);
  p.pr = ParticipationRatio(e);
  return p;
}

std::vector<double> ScenarioGenerator::Eigenvalues(uint64_t step) const {
  const int k = static_cast<int>(spec_.sketch_dim);
  const double r = std::clamp(RankAt(step), 1.0, static_cast<double>(k));
  const double s = std::clamp(spec_.signal_share.At(static_cast<double>(step)), 0.0, 1.0);
  const double a = s / r;
  const double floor = (1.0 - s) / k;
  std::vector<double> e(k, floor);
  const int whole = static_cast<int>(std::floor(r));
  for (int i = 0; i < whole; ++i) e[i] += a;
  if (whole < k) e[whole] += (r - whole) * a;
  return e;
}

RowMatrixXf ScenarioGenerator::Rows(uint64_t step) {
  const std::vector<double> e = Eigenvalues(step);
  const int k = static_cast<int>(e.size());
  RowMatrixXf m(spec_.rows_per_step, k);
  for (int i = 0; i < spec_.rows_per_step; ++i) {
    for (int j = 0; j < k; ++j) m(i, j) = static_cast<float>(std::sqrt(e[j]) * normal_(rng_));
  }
  return m;
}

double ScenarioGenerator::Loss(uint64_t step) {
  const double noise = spec_.loss_noise > 0.0 ? spec_.loss_noise * normal_(rng_) : 0.0;
  return std::exp(spec_.log_loss.At(static_cast<double>(step)) + noise);
}

std::optional<double> ScenarioGenerator::Validation(uint64_t step) const {
  if (spec_.val_every == 0 || step == 0 || step % spec_.val_every != 0) return std::nullopt;
  return std::exp(spec_.log_val.At(static_cast<double>(step)));
}

double R90(const std::vector<double>& e, double mass) {
  double total = 0.0;
  for (double v : e) total += v;
  double sum = 0.0;
  for (size_t i = 0; i < e.size(); ++i) {
    sum += e[i];
    if (sum >= mass * total) return static_cast<double>(i + 1);
  }
  return static_cast<double>(e.size());
}

double ParticipationRatio(const std::vector<double>& e) {
  double s1 = 0.0, s2 = 0.0;
  for (double v : e) {
    s1 += v;
    s2 += v * v;
  }
  return s2 > 0.0 ? s1 * s1 / s2 : 0.0;
}

}  // namespace spotter::scenarios
