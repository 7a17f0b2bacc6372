#include "tests/testing/planted.h"

#include <algorithm>
#include <cassert>
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

std::vector<double> PlantedSpectrum::Eigenvalues(int dim) const {
  std::vector<double> e;
  for (double v : top) e.push_back(v + floor);
  e.resize(dim, floor);
  std::sort(e.rbegin(), e.rend());
  return e;
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
  return spectrum_.Eigenvalues(dim_);
}

void Fwht(double* x, int n) {
  for (int h = 1; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const double a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

RotatedGaussian::RotatedGaussian(int log2_dim, uint64_t seed)
    : dim_(1 << log2_dim), d1_(dim_), d2_(dim_) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < dim_; ++i) d1_[i] = (rng() & 1) ? -1.0 : 1.0;
  for (int i = 0; i < dim_; ++i) d2_[i] = (rng() & 1) ? -1.0 : 1.0;
}

Eigen::VectorXd RotatedGaussian::Rotate(const Eigen::VectorXd& x) const {
  Eigen::VectorXd v = x.cwiseProduct(d2_);
  Fwht(v.data(), dim_);
  return v.cwiseProduct(d1_) / std::sqrt(static_cast<double>(dim_));
}

RowMatrixXf RotatedGaussian::Sample(const std::vector<double>& eigenvalues, int n,
                                    std::mt19937_64& rng, const Eigen::VectorXd& mean) const {
  assert(static_cast<int>(eigenvalues.size()) == dim_);
  std::normal_distribution<double> n01;
  Eigen::VectorXd sd(dim_);
  for (int i = 0; i < dim_; ++i) sd[i] = std::sqrt(eigenvalues[i]);
  RowMatrixXf out(n, dim_);
  Eigen::VectorXd v(dim_);
  for (int r = 0; r < n; ++r) {
    for (int i = 0; i < dim_; ++i) v[i] = sd[i] * n01(rng);
    v = Rotate(v);
    if (mean.size() == dim_) v += mean;
    out.row(r) = v.cast<float>().transpose();
  }
  return out;
}

Eigen::MatrixXd RotatedGaussian::ProjectedBasis(const Projection& s) const {
  assert(s.input_dim() == static_cast<uint64_t>(dim_));
  const int k = static_cast<int>(s.output_dim());
  // Row b of S Q is (Q^T s_b)^T, Q^T = D2 H D1 / sqrt(P).
  Eigen::MatrixXd a(k, dim_);
  if (s.kind() == ProjectionKind::kCountSketch) {
    a.setZero();
    for (int j = 0; j < dim_; ++j) {
      const CountSketchCell c = CountSketchAt(s.seed(), j, s.output_dim());
      a(c.bucket, j) = c.sign;
    }
  } else {
    const double scale = 1.0 / std::sqrt(static_cast<double>(k));
    for (int b = 0; b < k; ++b)
      for (int j = 0; j < dim_; ++j)
        a(b, j) = GaussianEntry(s.seed(), j, b, s.output_dim()) * scale;
  }
  Eigen::VectorXd row(dim_);
  for (int b = 0; b < k; ++b) {
    row = a.row(b).transpose().cwiseProduct(d1_);
    Fwht(row.data(), dim_);
    a.row(b) = (row.cwiseProduct(d2_) / std::sqrt(static_cast<double>(dim_))).transpose();
  }
  return a;
}

Eigen::MatrixXd RotatedGaussian::ProjectedCovariance(const Eigen::MatrixXd& basis,
                                                     const std::vector<double>& eigenvalues) {
  Eigen::VectorXd sd(basis.cols());
  for (Eigen::Index i = 0; i < basis.cols(); ++i) sd[i] = std::sqrt(eigenvalues[i]);
  const Eigen::MatrixXd a = basis * sd.asDiagonal();
  Eigen::MatrixXd m = Eigen::MatrixXd::Zero(basis.rows(), basis.rows());
  m.selfadjointView<Eigen::Lower>().rankUpdate(a);
  return m.selfadjointView<Eigen::Lower>();
}

Eigen::MatrixXd RotatedGaussian::ProjectedCovariance(
    const Projection& s, const std::vector<double>& eigenvalues) const {
  return ProjectedCovariance(ProjectedBasis(s), eigenvalues);
}

std::vector<double> PowerLawSpectrum(int n, double alpha) {
  std::vector<double> e(n);
  for (int i = 0; i < n; ++i) e[i] = std::pow(i + 1.0, -alpha);
  return e;
}

std::vector<double> LowRankSpectrum(int n, int rank, double high, double floor) {
  std::vector<double> e(n, floor);
  for (int i = 0; i < rank && i < n; ++i) e[i] += high;
  return e;
}

std::vector<double> StepSpectrum(int n, int n1, double v1, int n2, double v2) {
  std::vector<double> e(n, 0.0);
  for (int i = 0; i < n1 && i < n; ++i) e[i] = v1;
  for (int i = n1; i < n1 + n2 && i < n; ++i) e[i] = v2;
  return e;
}

std::vector<double> Interpolate(const std::vector<double>& x, const std::vector<double>& y,
                                double a) {
  std::vector<double> e(x.size());
  for (size_t i = 0; i < x.size(); ++i) e[i] = (1.0 - a) * x[i] + a * y[i];
  return e;
}

ExactMoments::ExactMoments(int dim)
    : centred_(Eigen::MatrixXd::Zero(dim, dim)), second_(Eigen::MatrixXd::Zero(dim, dim)) {}

void ExactMoments::AddBatch(const Eigen::Ref<const RowMatrixXf>& rows) {
  const Eigen::MatrixXd x = rows.cast<double>();
  const Eigen::RowVectorXd mu = x.colwise().mean();
  const Eigen::MatrixXd c = x.rowwise() - mu;
  centred_.noalias() += c.transpose() * c;
  second_.noalias() += x.transpose() * x;
  const double m = static_cast<double>(rows.rows());
  dof_ += m - 1.0;
  dof_sq_ += m - 1.0;
  samples_ += m;
  samples_sq_ += m;
}

void ExactMoments::Scale(double f) {
  centred_ *= f;
  second_ *= f;
  dof_ *= f;
  dof_sq_ *= f * f;
  samples_ *= f;
  samples_sq_ *= f * f;
}

void ExactMoments::Merge(const ExactMoments& o) {
  centred_ += o.centred_;
  second_ += o.second_;
  dof_ += o.dof_;
  dof_sq_ += o.dof_sq_;
  samples_ += o.samples_;
  samples_sq_ += o.samples_sq_;
}

std::vector<double> ExactMoments::CovarianceEigenvalues() const {
  return SymmetricEigenvalues(centred_ / dof_);
}

std::vector<double> ExactMoments::SecondMomentEigenvalues() const {
  return SymmetricEigenvalues(second_ / samples_);
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
  const double total = Sum(eig);
  double sum = 0;
  for (size_t i = 0; i < eig.size(); ++i) {
    sum += eig[i];
    if (sum >= mass * total) return static_cast<double>(i + 1);
  }
  return static_cast<double>(eig.size());
}

double ParticipationRatio(const std::vector<double>& eig) {
  const double s = Sum(eig), s2 = SumSq(eig);
  return s2 > 0 ? s * s / s2 : 0.0;
}

double Sum(const std::vector<double>& eig) {
  double s = 0;
  for (double v : eig) s += v;
  return s;
}

double SumSq(const std::vector<double>& eig) {
  double s = 0;
  for (double v : eig) s += v * v;
  return s;
}

}  // namespace spotter::testing
