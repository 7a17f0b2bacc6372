// The top eigenpairs of a small symmetric matrix: the eigen-decomposition a
// Frequent Directions shrink needs (core/spectrum/frequent_directions.cc).
#ifndef SPOTTER_CORE_SPECTRUM_TOP_EIGEN_H_
#define SPOTTER_CORE_SPECTRUM_TOP_EIGEN_H_

#include <Eigen/Core>

namespace spotter {

// The `keep` largest eigenpairs of an n x n symmetric matrix and the
// (keep+1)-th eigenvalue.
struct TopEigen {
  Eigen::MatrixXd vectors;  // n x keep, orthonormal columns, largest first
  double top_value = 0.0;   // largest eigenvalue
  double top_sum = 0.0;     // sum of the `keep` largest eigenvalues
  double next_value = 0.0;  // (keep+1)-th largest eigenvalue; 0 if keep == n
};

// Computes TopEigen for the symmetric matrix whose lower triangle is `lower`
// (the strict upper triangle is not read), 1 <= keep <= n. Only the top
// `keep` eigenvectors are computed: Householder tridiagonalisation, the
// eigenvalues of the tridiagonal matrix by implicit QR, eigenvectors by
// inverse iteration (reorthogonalised within clusters, as LAPACK's dstein),
// and the back-transformation. Callers certify the result a posteriori (its
// residual), so an inaccurate vector costs tightness, never correctness.
TopEigen TopEigenpairs(const Eigen::MatrixXd& lower, int keep);

// The same from a full eigen-decomposition (Eigen's SelfAdjointEigenSolver):
// the reference for tests and the fallback.
TopEigen TopEigenpairsFull(const Eigen::MatrixXd& lower, int keep);

}  // namespace spotter

#endif  // SPOTTER_CORE_SPECTRUM_TOP_EIGEN_H_
