#include "core/spectrum/top_eigen.h"

#include <algorithm>
#include <cassert>

#include <Eigen/Eigenvalues>

namespace spotter {

TopEigen TopEigenpairsFull(const Eigen::MatrixXd& lower, int keep) {
  const Eigen::Index n = lower.rows();
  assert(keep >= 1 && keep <= n);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(lower);
  const Eigen::VectorXd& ev = es.eigenvalues();  // ascending
  TopEigen out;
  out.vectors.resize(n, keep);
  for (int i = 0; i < keep; ++i) {
    out.vectors.col(i) = es.eigenvectors().col(n - 1 - i);
    out.top_sum += ev[n - 1 - i];
  }
  out.top_value = ev[n - 1];
  out.next_value = keep < n ? ev[n - 1 - keep] : 0.0;
  return out;
}

TopEigen TopEigenpairs(const Eigen::MatrixXd& lower, int keep) {
  return TopEigenpairsFull(lower, keep);
}

}  // namespace spotter
