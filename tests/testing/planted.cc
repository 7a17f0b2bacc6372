#include "tests/testing/planted.h"

#include <algorithm>
#include <cmath>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

namespace spotter::testing {

PlantedSpectrum PlantedSpectrum::PowerLaw(int rank, double alpha, double scale, double floor) {
  PlantedSpectrum s;
  for (int i = 0; i < rank; ++i) s.top.push_back(scale * std::pow(i + 1.0, -alpha));
  s.floor = floor;
  return s;
}

PlantedSpectrum PlantedSpectrum::LowRankPlusNoise(int rank, double high, double floor) {
  PlantedSpectrum s;
  s.top.assign(rank, high);
  s.floor = floor;
  return s;
}

PlantedSpectrum PlantedSpectrum::Step(int n1, double v1, int n2, double v2) {
  PlantedSpectrum s;
  s.top.assign(n1, v1);
  s.top.insert(s.top.end(), n2, v2);
  return s;
}

PlantedGaussian::PlantedGaussian(int dim, PlantedSpectrum spectrum, uint64_t seed)
    : dim_(dim), spectrum_(std::move(spectrum)), mean_(Eigen::VectorXd::Zero(dim)) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01;
  const int r = static_cast<int>(spectrum_.top.size());
  Eigen::MatrixXd g(dim, r);
  for (int j = 0; j < r; ++j)
    for (int i = 0; i < dim; ++i) g(i, j) = n01(rng);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  basis_ = qr.householderQ() * Eigen::MatrixXd::Identity(dim, r);
}

RowMatrixXf PlantedGaussian::Sample(int n, std::mt19937_64& rng) const {
  std::normal_distribution<double> n01;
  const int r = static_cast<int>(spectrum_.top.size());
  Eigen::MatrixXd z(r, n);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < r; ++i) z(i, j) = n01(rng) * std::sqrt(spectrum_.top[i]);
  Eigen::MatrixXd x = basis_ * z;  // dim x n
  const double f = std::sqrt(spectrum_.floor);
  RowMatrixXf out(n, dim_);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < dim_; ++i)
      out(j, i) = static_cast<float>(x(i, j) + mean_[i] + (f > 0 ? f * n01(rng) : 0.0));
  return out;
}

std::vector<double> PlantedGaussian::Eigenvalues() const {
  std::vector<double> e;
  for (double v : spectrum_.top) e.push_back(v + spectrum_.floor);
  e.resize(dim_, spectrum_.floor);
  std::sort(e.rbegin(), e.rend());
  return e;
}

std::vector<double> SymmetricEigenvalues(const Eigen::MatrixXd& m) {
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(m, Eigen::EigenvaluesOnly);
  std::vector<double> e(es.eigenvalues().data(), es.eigenvalues().data() + m.rows());
  std::sort(e.rbegin(), e.rend());
  for (double& v : e) v = std::max(v, 0.0);
  return e;
}

std::vector<double> ScatterEigenvalues(const Eigen::Ref<const RowMatrixXf>& rows) {
  const Eigen::MatrixXd a = rows.cast<double>();
  if (a.rows() <= a.cols()) return SymmetricEigenvalues(a * a.transpose());
  return SymmetricEigenvalues(a.transpose() * a);
}

double EffectiveRank(const std::vector<double>& eig, double mass) {
  double total = 0;
  for (double v : eig) total += v;
  double sum = 0;
  for (size_t i = 0; i < eig.size(); ++i) {
    sum += eig[i];
    if (sum >= mass * total) return static_cast<double>(i + 1);
  }
  return static_cast<double>(eig.size());
}

double ParticipationRatio(const std::vector<double>& eig) {
  double s = 0, s2 = 0;
  for (double v : eig) {
    s += v;
    s2 += v * v;
  }
  return s2 > 0 ? s * s / s2 : 0.0;
}

}  // namespace spotter::testing
