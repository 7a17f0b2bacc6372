#include "core/spectrum/top_eigen.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Eigenvalues>

namespace spotter {
namespace {

constexpr double kEps = 0x1p-52;
// Eigenvalues closer than kClusterTol * ||T|| are a cluster: their vectors
// are orthogonalised against each other during inverse iteration (LAPACK
// dstein's ORTOL, there 1e-3). A vector whose eigenvalue is separated by a
// gap g is accurate to ~ eps ||T|| / g, so outside clusters the loss of
// orthogonality stays below ~ 2e-9, far under the float32 rounding the FD
// shrink certifies anyway (and the certificate measures it).
constexpr double kClusterTol = 1e-7;
constexpr int kIterations = 3;

// All eigenvalues of the symmetric tridiagonal matrix (d, e), ascending, by
// the implicit QL method with Wilkinson shifts (no vectors; O(n^2)).
// Backward stable: each computed eigenvalue is exact for a matrix within
// ~ n eps ||T|| of T.
// Entries are sums of squares of float32 data, far below the double overflow
// threshold, so hypot's scaling is not needed.
double Hypot(double a, double b) { return std::sqrt(a * a + b * b); }

Eigen::VectorXd TridiagonalEigenvalues(Eigen::VectorXd d, const Eigen::VectorXd& sub) {
  const int n = static_cast<int>(d.size());
  Eigen::VectorXd e = Eigen::VectorXd::Zero(n);
  e.head(n - 1) = sub;
  for (int l = 0; l < n; ++l) {
    for (int iter = 0; iter < 60; ++iter) {
      int m = l;
      for (; m < n - 1; ++m) {
        const double dd = std::abs(d[m]) + std::abs(d[m + 1]);
        if (std::abs(e[m]) <= kEps * dd) break;
      }
      if (m == l) break;
      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = Hypot(g, 1.0);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      double s = 1.0, c = 1.0, p = 0.0;
      int i = m - 1;
      bool underflow = false;
      for (; i >= l; --i) {
        double f = s * e[i];
        const double b = c * e[i];
        r = Hypot(f, g);
        e[i + 1] = r;
        if (r == 0.0) {
          d[i + 1] -= p;
          e[m] = 0.0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0.0;
    }
  }
  std::sort(d.data(), d.data() + n);
  return d;
}

// LU factorisation with partial pivoting of T - shift I for a symmetric
// tridiagonal T (LAPACK dlagtf): U has two superdiagonals; row swaps and
// multipliers are kept for the forward solve. Tiny pivots are replaced by
// +-tiny, as dlagts does, so that a shift at an eigenvalue still yields a
// (huge) solution in the direction of the eigenvector.
class ShiftedTridiagonalLu {
 public:
  ShiftedTridiagonalLu(const Eigen::VectorXd& d, const Eigen::VectorXd& e, double shift,
                       double tiny)
      : n_(static_cast<int>(d.size())), u0_(n_), u1_(n_), u2_(n_), mult_(n_), swap_(n_) {
    double p0 = d[0] - shift, p1 = n_ > 1 ? e[0] : 0.0, p2 = 0.0;
    for (int i = 0; i + 1 < n_; ++i) {
      const double q0 = e[i], q1 = d[i + 1] - shift, q2 = i + 2 < n_ ? e[i + 1] : 0.0;
      if (std::abs(p0) >= std::abs(q0)) {
        swap_[i] = false;
        if (std::abs(p0) < tiny) p0 = p0 < 0 ? -tiny : tiny;
        const double m = q0 / p0;
        u0_[i] = p0, u1_[i] = p1, u2_[i] = p2;
        mult_[i] = m;
        p0 = q1 - m * p1, p1 = q2 - m * p2, p2 = 0.0;
      } else {
        swap_[i] = true;
        const double m = p0 / q0;
        u0_[i] = q0, u1_[i] = q1, u2_[i] = q2;
        mult_[i] = m;
        const double np0 = p1 - m * q1, np1 = p2 - m * q2;
        p0 = np0, p1 = np1, p2 = 0.0;
      }
    }
    if (std::abs(p0) < tiny) p0 = p0 < 0 ? -tiny : tiny;
    u0_[n_ - 1] = p0;
    inv_u0_ = u0_.cwiseInverse();
  }

  // x <- (T - shift I)^-1 x.
  void Solve(Eigen::VectorXd& x) const {
    for (int i = 0; i + 1 < n_; ++i) {
      if (swap_[i]) std::swap(x[i], x[i + 1]);
      x[i + 1] -= mult_[i] * x[i];
    }
    for (int i = n_ - 1; i >= 0; --i) {
      double v = x[i];
      if (i + 1 < n_) v -= u1_[i] * x[i + 1];
      if (i + 2 < n_) v -= u2_[i] * x[i + 2];
      x[i] = v * inv_u0_[i];
    }
  }

 private:
  int n_;
  Eigen::VectorXd u0_, u1_, u2_, mult_, inv_u0_;
  std::vector<bool> swap_;
};

// A fixed pseudo-random start vector (SplitMix64), so results are
// reproducible.
void StartVector(int index, Eigen::VectorXd& x) {
  uint64_t z = 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(index + 1);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    z += 0x9E3779B97F4A7C15ULL;
    uint64_t h = z;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    h ^= h >> 31;
    x[i] = static_cast<double>(h >> 11) * 0x1p-53 * 2.0 - 1.0;
  }
}

}  // namespace

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
  const int n = static_cast<int>(lower.rows());
  assert(keep >= 1 && keep <= n);
  if (n <= 2 || 2 * keep > n + n / 2) return TopEigenpairsFull(lower, keep);
  // Householder tridiagonalisation G = Q T Q^T (reads the lower triangle).
  Eigen::Tridiagonalization<Eigen::MatrixXd> tri(lower);
  const Eigen::VectorXd d = tri.diagonal();
  const Eigen::VectorXd e = tri.subDiagonal();
  // All eigenvalues of T, ascending.
  const Eigen::VectorXd ev = TridiagonalEigenvalues(d, e);
  double tnorm = 0.0;
  for (int i = 0; i < n; ++i) {
    tnorm = std::max(tnorm, std::abs(d[i]) + (i > 0 ? std::abs(e[i - 1]) : 0.0) +
                                (i + 1 < n ? std::abs(e[i]) : 0.0));
  }
  if (!(tnorm > 0.0)) return TopEigenpairsFull(lower, keep);
  const double tiny = kEps * tnorm;
  const double cluster = kClusterTol * tnorm;

  // Inverse iteration for the top `keep` eigenvectors of T, largest first,
  // each orthogonalised against the earlier members of its cluster.
  Eigen::MatrixXd z(n, keep);
  Eigen::VectorXd x(n);
  int cluster_start = 0;
  for (int i = 0; i < keep; ++i) {
    const double lambda = ev[n - 1 - i];
    if (i > 0 && ev[n - i] - lambda > cluster) cluster_start = i;
    // Members of a cluster get slightly separated shifts (dstein).
    const double shift =
        i > cluster_start ? std::min(lambda, ev[n - i] - 10.0 * kEps * tnorm) : lambda;
    const ShiftedTridiagonalLu lu(d, e, shift, tiny);
    StartVector(i, x);
    for (int it = 0; it < kIterations; ++it) {
      lu.Solve(x);
      for (int j = cluster_start; j < i; ++j) x -= z.col(j).dot(x) * z.col(j);
      const double norm = x.norm();
      if (!(norm > 0.0) || !std::isfinite(norm)) return TopEigenpairsFull(lower, keep);
      x /= norm;
    }
    z.col(i) = x;
  }
  TopEigen out;
  out.vectors.noalias() = tri.matrixQ() * z;
  for (int i = 0; i < keep; ++i) out.top_sum += ev[n - 1 - i];
  out.top_value = ev[n - 1];
  out.next_value = keep < n ? ev[n - 1 - keep] : 0.0;
  return out;
}

}  // namespace spotter
