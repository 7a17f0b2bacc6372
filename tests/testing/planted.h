// Test data with a planted covariance spectrum, and exact references computed
// the slow way (full eigen-decompositions).
#ifndef SPOTTER_TESTS_TESTING_PLANTED_H_
#define SPOTTER_TESTS_TESTING_PLANTED_H_

#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>

#include "core/types.h"

namespace spotter::testing {

// A covariance Sigma = U diag(top) U^T + floor * I in `dim` dimensions, with U
// `top.size()` random orthonormal columns. Eigenvalues: top_i + floor, then
// floor (dim - top.size() times).
struct PlantedSpectrum {
  std::vector<double> top;  // largest first
  double floor = 0.0;

  // lambda_i = scale * (i + 1)^-alpha, i < rank.
  static PlantedSpectrum PowerLaw(int rank, double alpha, double scale = 1.0,
                                  double floor = 0.0);
  // `rank` eigenvalues of `high` over an isotropic floor.
  static PlantedSpectrum LowRankPlusNoise(int rank, double high, double floor);
  // Two plateaus: `n1` eigenvalues v1, then `n2` eigenvalues v2.
  static PlantedSpectrum Step(int n1, double v1, int n2, double v2);
};

// Draws Gaussian rows with covariance Sigma (and an optional mean) in `dim`
// dimensions without forming the dim x dim matrix.
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

// Eigenvalues (largest first) of the symmetric matrix `m`.
std::vector<double> SymmetricEigenvalues(const Eigen::MatrixXd& m);

// Exact eigenvalues of sum_rows x x^T for `rows` (n x k): computed from the
// smaller of the n x n Gram and the k x k scatter matrix.
std::vector<double> ScatterEigenvalues(const Eigen::Ref<const RowMatrixXf>& rows);

// Smallest r whose top-r eigenvalues hold `mass` of the trace.
double EffectiveRank(const std::vector<double>& eig, double mass = 0.9);
// (sum lambda)^2 / sum lambda^2.
double ParticipationRatio(const std::vector<double>& eig);

}  // namespace spotter::testing

#endif  // SPOTTER_TESTS_TESTING_PLANTED_H_
