// Test data with a planted covariance spectrum, and exact references computed
// the slow way (full eigen-decompositions, k x k matrices in double).
#ifndef SPOTTER_TESTS_TESTING_PLANTED_H_
#define SPOTTER_TESTS_TESTING_PLANTED_H_

#include <Eigen/Core>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/projection/projection.h"
#include "core/types.h"

namespace spotter::testing {

// A covariance Sigma = U diag(top) U^T + floor * I in `dim` dimensions, with U
// `top.size()` random orthonormal columns. Eigenvalues: top_i + floor, then
// floor (dim - top.size() times).
struct PlantedSpectrum {
  std::vector<double> top;  // largest first
  double floor = 0.0;

  // lambda_i = scale * (i + 1)^-alpha, i < rank.
  static PlantedSpectrum PowerLaw(int rank, double alpha, double scale = 1.0, double floor = 0.0);
  // `rank` eigenvalues of `high` over an isotropic floor.
  static PlantedSpectrum LowRankPlusNoise(int rank, double high, double floor);
  // Two plateaus: `n1` eigenvalues v1, then `n2` eigenvalues v2.
  static PlantedSpectrum Step(int n1, double v1, int n2, double v2);

  // All `dim` eigenvalues, largest first.
  std::vector<double> Eigenvalues(int dim) const;
};

// Draws Gaussian rows with covariance Sigma (and an optional mean) in `dim`
// dimensions without forming the dim x dim matrix. Thread-compatible.
class PlantedGaussian {
 public:
  PlantedGaussian(int dim, PlantedSpectrum spectrum, uint64_t seed);

  // n rows, each mean + Sigma^(1/2) z.
  RowMatrixXf Sample(int n, std::mt19937_64& rng) const;

  void set_mean(const Eigen::VectorXd& mean) { mean_ = mean; }

  // All `dim` population eigenvalues, largest first.
  std::vector<double> Eigenvalues() const;

  int dim() const { return dim_; }

 private:
  int dim_;
  PlantedSpectrum spectrum_;
  Eigen::MatrixXd basis_;  // dim x top.size(), orthonormal columns
  Eigen::VectorXd mean_;
};

// In-place unnormalised fast Walsh-Hadamard transform of x[0..n), n a power
// of two: x <- H_n x with H_n = [[H, H], [H, -H]].
void Fwht(double* x, int n);

// Gaussian rows in P = 2^log2_dim dimensions whose covariance has any
// prescribed spectrum: Sigma = Q diag(lambda) Q^T with the orthogonal
// Q = D1 H D2 / sqrt(P) (H Walsh-Hadamard, D1 and D2 random signs). Every
// entry of every eigenvector is +-1/sqrt(P) (dense, "delocalised"
// eigenvectors), so diag(Sigma) = tr(Sigma) / P exactly. O(P log P) per row,
// nothing P x P is formed. The spectrum is passed per call, so a drifting
// spectrum is a sequence of calls. Thread-compatible.
class RotatedGaussian {
 public:
  RotatedGaussian(int log2_dim, uint64_t seed);

  // n rows mean + Q diag(sqrt(eigenvalues)) z, z ~ N(0, I). Precondition:
  // eigenvalues.size() == dim(), all >= 0; mean empty or of size dim().
  RowMatrixXf Sample(const std::vector<double>& eigenvalues, int n, std::mt19937_64& rng,
                     const Eigen::VectorXd& mean = Eigen::VectorXd()) const;

  // Q x for x of size dim().
  Eigen::VectorXd Rotate(const Eigen::VectorXd& x) const;

  // The exact projected population covariance S Sigma S^T (k x k) of the
  // map `s` (CountSketch or Gaussian, input_dim() == dim()).
  Eigen::MatrixXd ProjectedCovariance(const Projection& s,
                                      const std::vector<double>& eigenvalues) const;
  // S Q (k x dim()), from which ProjectedCovariance(basis, lambda) =
  // (S Q) diag(lambda) (S Q)^T for any spectrum.
  Eigen::MatrixXd ProjectedBasis(const Projection& s) const;
  static Eigen::MatrixXd ProjectedCovariance(const Eigen::MatrixXd& basis,
                                             const std::vector<double>& eigenvalues);

  int dim() const { return dim_; }

 private:
  int dim_;
  Eigen::VectorXd d1_, d2_;  // +-1
};

// Power law lambda_i = (i + 1)^-alpha over all n dimensions, largest first.
std::vector<double> PowerLawSpectrum(int n, double alpha);
// `rank` eigenvalues high + floor, the other n - rank equal to floor.
std::vector<double> LowRankSpectrum(int n, int rank, double high, double floor);
// n1 eigenvalues v1, n2 eigenvalues v2, the rest 0.
std::vector<double> StepSpectrum(int n, int n1, double v1, int n2, double v2);
// (1 - a) * x + a * y, entrywise.
std::vector<double> Interpolate(const std::vector<double>& x, const std::vector<double>& y,
                                double a);

// The statistics core's GradientMoments sketches, kept exactly: k x k
// matrices in double, the same batch centring, weights and decay. The slow
// reference for every sketch-based estimate.
class ExactMoments {
 public:
  explicit ExactMoments(int dim);

  // One batch (m >= 1 rows) with weight 1.
  void AddBatch(const Eigen::Ref<const RowMatrixXf>& rows);
  // Multiplies every statistic by the decay factor f.
  void Scale(double f);
  // Adds `other` (same dim).
  void Merge(const ExactMoments& other);

  // Eigenvalues (largest first) of the centred covariance sum_b w_b sum_i
  // (x_i - mu_b)(x_i - mu_b)^T / dof, and of the second moment
  // sum_b w_b sum_i x_i x_i^T / samples.
  std::vector<double> CovarianceEigenvalues() const;
  std::vector<double> SecondMomentEigenvalues() const;
  // (sum w (m - 1))^2 / sum w^2 (m - 1).
  double EffectiveSamples() const { return dof_ * dof_ / dof_sq_; }

  const Eigen::MatrixXd& centred_sum() const { return centred_; }
  const Eigen::MatrixXd& second_sum() const { return second_; }
  double dof() const { return dof_; }
  double samples() const { return samples_; }

 private:
  Eigen::MatrixXd centred_, second_;
  double dof_ = 0.0, dof_sq_ = 0.0, samples_ = 0.0, samples_sq_ = 0.0;
};

// Eigenvalues (largest first) of the symmetric matrix `m`, clamped at 0.
std::vector<double> SymmetricEigenvalues(const Eigen::MatrixXd& m);

// Exact eigenvalues of sum_rows x x^T for `rows` (n x k): computed from the
// smaller of the n x n Gram and the k x k scatter matrix.
std::vector<double> ScatterEigenvalues(const Eigen::Ref<const RowMatrixXf>& rows);

// Smallest r whose top-r eigenvalues hold `mass` of the trace.
double EffectiveRank(const std::vector<double>& eig, double mass = 0.9);
// (sum lambda)^2 / sum lambda^2.
double ParticipationRatio(const std::vector<double>& eig);
// sum lambda.
double Sum(const std::vector<double>& eig);
// sum lambda^2.
double SumSq(const std::vector<double>& eig);

}  // namespace spotter::testing

#endif  // SPOTTER_TESTS_TESTING_PLANTED_H_
