#include "core/spectrum/frequent_directions.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include <Eigen/Eigenvalues>

#include "core/spectrum/top_eigen.h"

namespace spotter {
namespace {

// Unit roundoff of float32 and float64 (round to nearest).
constexpr double kU = 0x1p-24;
constexpr double kEps = 0x1p-53;

// The lazily kept scale is folded into the buffer when it leaves
// [kMinScale, kMaxScale], so that newly appended rows (stored divided by
// sqrt(scale)) stay far from float underflow and overflow.
constexpr double kMinScale = 1e-12;
constexpr double kMaxScale = 1e12;

// Columns per float32 panel of the Gram matrix; the panels are summed in
// double, so an entry's rounding error is that of a kGramPanel-term float dot
// product (gamma_64 = 3.8e-6). Shorter panels tighten the rounding bound at
// some speed; docs/PERFORMANCE.md has the trade-off (the compile-time
// overrides exist to reproduce it, not for production builds).
#ifndef SPOTTER_FD_GRAM_PANEL
#define SPOTTER_FD_GRAM_PANEL 64
#endif
#ifndef SPOTTER_FD_PRODUCT_DEPTH
#define SPOTTER_FD_PRODUCT_DEPTH 32
#endif
constexpr int kGramPanel = SPOTTER_FD_GRAM_PANEL;
// Columns per block of the in-place product W * B of a shrink, and the depth
// of its float32 partial products (summed in double, rounded once).
constexpr int kProductBlock = 256;
constexpr int kProductDepth = SPOTTER_FD_PRODUCT_DEPTH;

// gamma_n = n u / (1 - n u) (Higham, Accuracy and Stability, 2nd ed., 3.4):
// the relative error bound of an n-term float32 dot product.
constexpr double Gamma(double n) { return n * kU / (1.0 - n * kU); }

// A stored row r~ = fl(fl(s) x) of an input x that carries one rounding itself
// satisfies r~ = r (1 + t) entrywise with |t| <= gamma_3, so
// ||r~ r~^T - r r^T||_2 <= (2 gamma_3 + gamma_3^2) |r|^2. The last factor
// allows |r|^2 to be measured on the rounded input.
constexpr double kAppendRounding =
    (2.0 * Gamma(3) + Gamma(3) * Gamma(3)) * (1.0 + 3.0 * kU);
// Folding the scale into the buffer: one rounded factor, one rounded product.
constexpr double kNormalizeRounding = 2.0 * Gamma(2) + Gamma(2) * Gamma(2);

// Float32 underflow. The bounds above are relative, and a result below the
// normal range (2^-126) loses its relative accuracy: every float operation can
// then also err by up to kTiny absolutely (this covers flush-to-zero too).
// The terms that bound its effect on the eigenvalues are negligible for
// gradients of any realistic magnitude; they keep the certificate true for
// sketches of vanishingly small values (a fuzz finding: rows of ~1e-27 whose
// squares underflow in the float Gram matrix, reported as eigenvalue 0 with a
// bound of 1e-60).
constexpr double kTiny = 0x1p-126;

// A bound on ||(B + E)^T (B + E) - B^T B||_2 for ||B||_2^2 <= norm_sq and
// ||E||_F <= e.
double PerturbationBound(double norm_sq, double e) {
  return 2.0 * std::sqrt(std::max(norm_sq, 0.0)) * e + e * e;
}

// Lower triangle of rows * rows^T in double, from float32 panels of
// kGramPanel columns. Returns a bound on ||G - rows rows^T||_2 (exact
// product): each entry errs by at most gamma_{kGramPanel} (|B||B|^T)_ij plus
// the double-precision summation of the panels, and
// || |B||B|^T ||_2 <= ||B||_F^2 <= trace(G) / (1 - gamma).
double GramLower(const Eigen::Ref<const RowMatrixXf>& rows, Eigen::MatrixXd* g) {
  const Eigen::Index n = rows.rows();
  g->setZero(n, n);
  Eigen::MatrixXf panel(n, n);
  Eigen::Index panels = 0;
  for (Eigen::Index j = 0; j < rows.cols(); j += kGramPanel, ++panels) {
    const Eigen::Index w = std::min<Eigen::Index>(kGramPanel, rows.cols() - j);
    panel.setZero();
    panel.selfadjointView<Eigen::Lower>().rankUpdate(rows.middleCols(j, w));
    for (Eigen::Index c = 0; c < n; ++c) {
      g->col(c).tail(n - c) += panel.col(c).tail(n - c).cast<double>();
    }
  }
  const double gamma = Gamma(kGramPanel) + (static_cast<double>(panels) + 2.0) * kEps;
  // Underflow: a panel entry is a float dot product of at most kGramPanel
  // products and additions, each off by at most kTiny: 2 k kTiny per entry
  // over the panels, n times that in the 2-norm.
  const double underflow =
      2.0 * static_cast<double>(n) * static_cast<double>(rows.cols()) * kTiny;
  return gamma * g->diagonal().sum() / (1.0 - gamma) + underflow;
}

// A bound on the error of the eigenvalues a backward-stable symmetric
// eigensolver returns for an n x n matrix of norm <= norm.
double SolverError(Eigen::Index n, double norm) {
  return 16.0 * static_cast<double>(n) * kEps * norm;
}

}  // namespace

FrequentDirections::FrequentDirections(int dim, int sketch_rows, int capacity)
    : dim_(dim),
      sketch_rows_(sketch_rows),
      capacity_(capacity > sketch_rows ? capacity : 2 * sketch_rows),
      buf_(RowMatrixXf::Zero(capacity_, dim)) {
  assert(dim >= 1 && sketch_rows >= 1);
}

void FrequentDirections::Scale(double factor) {
  assert(factor >= 0.0);
  if (factor == 0.0) {
    used_ = 0;
    scale_ = 1.0;
    trace_ = delta_ = rounding_ = 0.0;
    return;
  }
  scale_ *= factor;
  trace_ *= factor;
  delta_ *= factor;
  rounding_ *= factor;
  if (scale_ < kMinScale || scale_ > kMaxScale) Normalize();
}

void FrequentDirections::Normalize() {
  if (scale_ == 1.0) return;
  const double frob_sq = FrobeniusSq();
  // Underflow: the float factor may be off by kTiny, and each product too.
  double stored_sq = 0.0;
  for (int i = 0; i < used_; ++i) stored_sq += buf_.row(i).cast<double>().squaredNorm();
  const double e = kTiny * (std::sqrt(stored_sq) + std::sqrt(static_cast<double>(used_) * dim_));
  rounding_ += kNormalizeRounding * frob_sq + PerturbationBound(frob_sq * (1.0 + Gamma(4)), e);
  buf_.topRows(used_) *= static_cast<float>(std::sqrt(scale_));
  scale_ = 1.0;
}

void FrequentDirections::AppendRow(const float* row, double weight) {
  Append(Eigen::Map<const RowMatrixXf>(row, 1, dim_), weight);
}

void FrequentDirections::Append(const Eigen::Ref<const RowMatrixXf>& rows,
                                double weight) {
  assert(rows.cols() == dim_ && weight >= 0.0);
  if (rows.rows() == 0 || weight == 0.0) return;
  const double mass = weight * AppendRows(rows, weight);
  trace_ += mass;
  rounding_ += kAppendRounding * mass + AppendUnderflow(mass, rows.rows());
}

double FrequentDirections::AppendUnderflow(double mass, Eigen::Index rows) const {
  // Each stored entry fl(x s) may be off by kTiny, sqrt(scale) kTiny in the
  // sketch's units.
  const double e = kTiny * std::sqrt(scale_ * static_cast<double>(rows) * dim_);
  return PerturbationBound(mass * (1.0 + Gamma(4)), e);
}

double FrequentDirections::AppendRows(const Eigen::Ref<const RowMatrixXf>& rows,
                                      double weight) {
  double sum_sq = 0.0;
  Eigen::Index done = 0;
  while (done < rows.rows()) {
    if (used_ == capacity_) Shrink();
    const Eigen::Index n = std::min<Eigen::Index>(capacity_ - used_, rows.rows() - done);
    // The scale may have changed in Shrink; recompute per chunk.
    const float s = static_cast<float>(std::sqrt(weight / scale_));
    for (Eigen::Index i = 0; i < n; ++i) {
      // One pass: the scaled copy, and the row's squared norm in double
      // (float products are exact in double).
      const float* in = rows.row(done + i).data();
      float* out = buf_.row(used_ + i).data();
      double a0 = 0.0, a1 = 0.0;
      int j = 0;
      for (; j + 1 < dim_; j += 2) {
        const float x0 = in[j], x1 = in[j + 1];
        out[j] = x0 * s;
        out[j + 1] = x1 * s;
        a0 += static_cast<double>(x0) * x0;
        a1 += static_cast<double>(x1) * x1;
      }
      for (; j < dim_; ++j) {
        out[j] = in[j] * s;
        a0 += static_cast<double>(in[j]) * in[j];
      }
      sum_sq += a0 + a1;
    }
    used_ += static_cast<int>(n);
    done += n;
  }
  return sum_sq;
}

void FrequentDirections::Merge(const FrequentDirections& other) {
  assert(other.dim_ == dim_);
  if (other.used_ > 0) {
    const double mass =
        other.scale_ * AppendRows(other.buf_.topRows(other.used_), other.scale_);
    rounding_ += kAppendRounding * mass + AppendUnderflow(mass, other.used_);
  }
  trace_ += other.trace_;
  delta_ += other.delta_;
  rounding_ += other.rounding_;
}

void FrequentDirections::Shrink() {
  const int n = used_;
  const int keep = std::min(sketch_rows_, n);
  Eigen::MatrixXd g;
  const double gram_error = GramLower(buf_.topRows(n), &g);
  const double norm = std::max(g.diagonal().sum(), 0.0);  // >= ||G||_2

  // Top `keep` eigenpairs of the Gram matrix, and the (keep+1)-th eigenvalue:
  // the shrinkage.
  //
  // A-posteriori certificate of the eigenpairs (docs/DIAGNOSTICS.md, "Float32
  // rounding"): with R = G U - U diag(lam) for the Rayleigh quotients lam,
  // (G + E) U = U diag(lam) for some ||E|| <= 3 ||R|| (+ the departure of U
  // from orthonormality). The kept directions then absorb at most `shrink`,
  // and the discarded ones at most shrink + ||E|| + eps_sum, where eps_sum
  // measures how far U is from the top invariant subspace.
  const double solver_error = SolverError(n, norm);
  struct Certified {
    TopEigen top;
    Eigen::VectorXd lam;
    double error;  // 2 ||E|| + eps_sum
  };
  auto certify = [&](TopEigen top) {
    Certified c{std::move(top), Eigen::VectorXd(keep), 0.0};
    const Eigen::MatrixXd& u = c.top.vectors;
    const Eigen::MatrixXd gu = g.selfadjointView<Eigen::Lower>() * u;
    for (int i = 0; i < keep; ++i) c.lam[i] = u.col(i).dot(gu.col(i));
    const double residual = (gu - u * c.lam.asDiagonal()).norm();
    const double orth =
        (u.transpose() * u - Eigen::MatrixXd::Identity(keep, keep)).norm();
    const double e_norm = 3.0 * residual + 4.0 * orth * norm;
    const double eps_sum =
        std::max(0.0, c.top.top_sum + keep * (e_norm + solver_error) - c.lam.sum());
    c.error = 2.0 * e_norm + eps_sum;
    return c;
  };
  // The fast path computes only the top vectors (inverse iteration); should
  // its certificate add more than a tenth of the Gram's own rounding bound,
  // the full decomposition decides.
  Certified cert = certify(TopEigenpairs(g, keep));
  if (cert.error > 0.1 * gram_error) cert = certify(TopEigenpairsFull(g, keep));
  const TopEigen& top = cert.top;
  const Eigen::MatrixXd& u = top.vectors;
  const Eigen::VectorXd& lam = cert.lam;
  const double shrink = keep < n ? std::max(top.next_value, 0.0) : 0.0;
  const double eigen_error = cert.error + solver_error + gram_error;

  // W = diag(s) U^T with s_i = sqrt((lam_i - shrink)_+ / lam_i): the kept rows
  // W B have squared singular values lam_i - shrink.
  Eigen::MatrixXf w(keep, n);
  for (int i = 0; i < keep; ++i) {
    const double s = lam[i] > shrink ? std::sqrt((lam[i] - shrink) / lam[i]) : 0.0;
    w.row(i) = (u.col(i) * s).transpose().cast<float>();
  }
  // Rounding of fl(W B), computed as float partial products of depth
  // kProductDepth summed in double and rounded once: with the rounding of W
  // itself, |fl(W B) - W B| <= gamma_{kProductDepth + 2} |W||B| entrywise, so
  // ||F||_2 <= gamma || |W||B| ||_2 with || |W||B| ||_2 <= || |W| ||_2 ||B||_F
  // and || |W| ||_2 <= sqrt(||W||_1 ||W||_inf); finally
  // ||(WB + F)^T (WB + F) - (WB)^T WB|| <= 2 ||WB|| ||F|| + ||F||^2.
  const Eigen::MatrixXf wa = w.cwiseAbs();
  const double abs_w = std::sqrt(static_cast<double>(wa.colwise().sum().maxCoeff()) *
                                 static_cast<double>(wa.rowwise().sum().maxCoeff())) *
                       (1.0 + 4.0 * kU);
  const double f = Gamma(kProductDepth + 2) * abs_w * std::sqrt(norm + gram_error);
  const double wb_norm = std::sqrt(std::max(top.top_value, 0.0) + gram_error + solver_error);
  // Underflow of fl(W B): a partial product of depth d errs by 2 d kTiny, the
  // final rounding by kTiny, and an entry of W that underflowed by kTiny
  // (||E_W B|| <= ||E_W||_F ||B||_2).
  const double under =
      (2.0 * n + 1.0) * kTiny * std::sqrt(static_cast<double>(keep) * dim_) +
      kTiny * std::sqrt(static_cast<double>(keep) * n) * std::sqrt(norm + gram_error);
  const double product_error = 2.0 * wb_norm * (f + under) + (f + under) * (f + under);

  // B <- W B in place, a block of columns at a time (each block of B is read
  // in full before it is overwritten).
  const int block = std::min(kProductBlock, dim_);
  RowMatrixXf part(keep, block);
  RowMatrixXd acc(keep, block);
  for (int j = 0; j < dim_; j += kProductBlock) {
    const int cols = std::min(kProductBlock, dim_ - j);
    acc.leftCols(cols).setZero();
    for (int d = 0; d < n; d += kProductDepth) {
      const int depth = std::min(kProductDepth, n - d);
      part.leftCols(cols).noalias() =
          w.middleCols(d, depth) * buf_.block(d, j, depth, cols);
      acc.leftCols(cols) += part.leftCols(cols).cast<double>();
    }
    buf_.block(0, j, keep, cols) = acc.leftCols(cols).cast<float>();
  }
  used_ = keep;
  delta_ += shrink * scale_;
  rounding_ += (eigen_error + product_error) * scale_;
  ++shrinks_;
}

SketchSpectrum FrequentDirections::Spectrum() const {
  SketchSpectrum out;
  out.delta = delta_;
  out.rounding = rounding_;
  out.trace = trace_;
  if (used_ == 0) return out;
  Eigen::MatrixXd g;
  const double gram_error = GramLower(buf_.topRows(used_), &g);
  const double norm = std::max(g.diagonal().sum(), 0.0);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(g, Eigen::EigenvaluesOnly);
  out.eigenvalues.reserve(used_);
  for (int i = used_ - 1; i >= 0; --i) {
    const double v = es.eigenvalues()[i] * scale_;
    if (v > 0.0) out.eigenvalues.push_back(v);
  }
  out.rounding += (gram_error + SolverError(used_, norm)) * scale_;
  return out;
}

std::vector<double> FrequentDirections::Eigenvalues() const {
  return Spectrum().eigenvalues;
}

RowMatrixXf FrequentDirections::Rows() const {
  return buf_.topRows(used_) * static_cast<float>(std::sqrt(scale_));
}

double FrequentDirections::FrobeniusSq() const {
  double sum = 0.0;
  for (int i = 0; i < used_; ++i) sum += buf_.row(i).cast<double>().squaredNorm();
  return sum * scale_;
}

}  // namespace spotter
