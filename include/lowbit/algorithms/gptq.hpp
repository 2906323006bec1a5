// lowbit/algorithms/gptq.hpp -- GPTQ (Frantar et al. 2022), layer level, on plain Eigen matrices.
//
//   HessianAccumulator acc(in);  acc.add_batch(X, n_samples);  ...       H = (2/n) sum x x^T
//   GptqResult r = gptq_quantize(quantizer, W, acc.hessian(), options);   r.Q: dequantized W
//
// Algorithm (reference: IST-DASLab gptq.py `fasterquant`; see shared/ALGORITHMS.md section 3):
//   dead columns (H_dd = 0): H_dd = 1, W[:, d] = 0;  act_order: permute columns by descending diag(H);
//   H += percdamp * mean(diag H) * I;  U = upper Cholesky factor of H^-1               (paper eq. (3)-(5))
//   for each block of `block_size` columns [i1, i2):
//     for each column i: (at a group start: fit the group's min-max parameters)
//        q = Q(w_i);  err = (w_i - q) / U_ii;  W1[:, i:] -= err U_i,i:                  (in-block update)
//     W[:, i2:] -= Err1 U[i1:i2, i2:]                                                    (lazy batch update)
// Group parameters are fitted, as the reference does, on the block-start copy of W (lazy updates from
// earlier blocks applied, in-block updates not) -- `group_params_from = GroupFit::block_start`; the
// alternative `GroupFit::current` fits them on the fully updated columns.  static_groups fits every group
// on the original, unpermuted W before the loop.  A failed Cholesky retries with 10x the damping (reported).
//
// Every grid of grid.hpp works, Grid::ggml included: its groups are fitted from the range and the signed
// absmax of the same copy, and each column is rounded by llama.cpp's reference formula -- so GPTQ at g32 on the
// ggml grid compensates exactly the rounding that a Q4_0 / Q4_1 / Q8_0 block will hold (formats/gguf_export.hpp
// writes those codes as they are).
//
// Layout: W is row-major [out, in]; internally lowbit works on W^T so a column of W is a contiguous row.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../quant/quantizer.hpp"

namespace lowbit {


// H = (2 / n) * sum over samples of X^T X.  n counts samples (calibration windows), not tokens, exactly as the
// reference's add_batch does with one window per call.  The reference accumulates in float; lowbit forms the
// product of each chunk of up to 4096 tokens in float and sums the chunks in double (add_gram), at least as
// accurate as the reference and several times cheaper than a double product (a documented numerical change:
// docs/results.md).
class HessianAccumulator {
 public:
  explicit HessianAccumulator(Eigen::Index in = 0) : sum_(Eigen::MatrixXd::Zero(in, in)) {}
  // X: [tokens, in] activations of `samples` samples.
  void add_batch(ConstMatrixRef X, std::int64_t samples = 1) {
    if (sum_.rows() == 0) sum_ = Eigen::MatrixXd::Zero(X.cols(), X.cols());
    if (X.cols() != sum_.cols()) fail("Hessian: input has ", X.cols(), " columns, expected ", sum_.cols());
    add_gram(X, sum_);
    n_ += samples;
  }
  std::int64_t samples() const { return n_; }
  Eigen::MatrixXd hessian() const& { return HessianAccumulator(*this).take(); }
  // The Hessian without a copy (the accumulator is spent).
  Eigen::MatrixXd hessian() && { return take(); }

 private:
  // Scaled, and exactly symmetric (the lower triangle mirrored: the float products need not be).
  Eigen::MatrixXd take() {
    if (n_ == 0) fail("Hessian: no calibration data was added");
    sum_ *= 2.0 / double(n_);
    for (Eigen::Index j = 1; j < sum_.cols(); ++j)
      for (Eigen::Index i = 0; i < j; ++i) sum_(i, j) = sum_(j, i);
    return std::move(sum_);
  }

  Eigen::MatrixXd sum_;
  std::int64_t n_ = 0;
};

enum class GroupFit { block_start, current };

struct GptqOptions {
  int block_size = 128;
  double percdamp = 0.01;
  bool act_order = false;
  bool static_groups = false;
  GroupFit group_params_from = GroupFit::block_start;
  int max_damp_retries = 4;  // each multiplies percdamp by 10
  bool double_factorization = false;  // the Cholesky / inverse in double (the reference uses float)
};

struct GptqResult {
  MatrixRM Q;                 // [out, in] dequantized weights, original column order
  CodesRM codes;              // [out, in] integer codes, original column order
  QuantParams params;         // scale/zero [out, ngroups]; group k as g_idx refers to it
  std::vector<int> g_idx;     // [in] group of each original column
  std::vector<int> perm;      // [in] processing order (act_order), identity otherwise
  double error = 0.0;         // sum over columns of (w - q)^2 / U_ii^2 / 2, as the reference prints
  double percdamp_used = 0.0;
  int damp_retries = 0;
  std::vector<int> dead_columns;
};

namespace detail {

// Calls set(i, j) for every (i, j) of a rows x cols index space in 64 x 64 tiles, tiles in parallel: the
// cache-friendly way to transpose / reverse large matrices (Eigen's plain transpose copies are strided).
template <class Set>
void for_each_tiled(Eigen::Index rows, Eigen::Index cols, Set&& set) {
  constexpr Eigen::Index T = 64;
  const Eigen::Index tr = (rows + T - 1) / T, tc = (cols + T - 1) / T;
  parallel_for(tr * tc, [&](std::int64_t t) {
    const Eigen::Index i0 = (t / tc) * T, j0 = (t % tc) * T;
    for (Eigen::Index i = i0; i < std::min(i0 + T, rows); ++i)
      for (Eigen::Index j = j0; j < std::min(j0 + T, cols); ++j) set(i, j);
  });
}

// In-place inverse of a lower-triangular matrix by recursive 2x2 blocking:
//   [A 0; B C]^-1 = [A^-1 0; -C^-1 B A^-1  C^-1]
// so the work is (parallel) GEMMs; Eigen's triangular solve against the identity is single-threaded and
// about 4x slower at n = 4096.
template <class Mat>
void invert_lower_triangular(Eigen::Ref<Mat> M) {
  const Eigen::Index n = M.rows();
  if (n <= 256) {
    Mat I = Mat::Identity(n, n);
    M.template triangularView<Eigen::Lower>().solveInPlace(I);
    M = I;
    return;
  }
  const Eigen::Index n1 = n / 2, n2 = n - n1;
  invert_lower_triangular<Mat>(M.topLeftCorner(n1, n1));
  invert_lower_triangular<Mat>(M.bottomRightCorner(n2, n2));
  // Both products skip the zero triangles of A^-1 and C^-1 (panels of 256): half the flops of dense GEMMs.
  constexpr Eigen::Index P = 256;
  Mat BA(n2, n1);  // B A^-1: column panel j of A^-1 is zero above row j
  for (Eigen::Index j = 0; j < n1; j += P) {
    const Eigen::Index w = std::min(P, n1 - j);
    BA.middleCols(j, w).noalias() = M.block(n1, j, n2, n1 - j) * M.block(j, j, n1 - j, w);
  }
  for (Eigen::Index i = 0; i < n2; i += P) {  // -C^-1 (B A^-1): row panel i of C^-1 is zero right of column i+h
    const Eigen::Index h = std::min(P, n2 - i);
    M.block(n1 + i, 0, h, n1).noalias() = -(M.block(n1 + i, n1, h, i + h) * BA.topRows(i + h));
  }
  M.topRightCorner(n1, n2).setZero();
}

// In-place lower Cholesky factor (right-looking, blocks of 256) whose trailing updates are parallel GEMMs;
// Eigen's LLT runs its symmetric rank updates on one thread.  Returns false if A is not positive definite.
template <class Mat>
bool cholesky_lower_inplace(Mat& A) {
  const Eigen::Index n = A.rows(), B = 256;
  for (Eigen::Index k = 0; k < n; k += B) {
    const Eigen::Index b = std::min(B, n - k), rest = n - k - b;
    Eigen::Ref<Mat> diag = A.block(k, k, b, b);
    Eigen::LLT<Eigen::Ref<Mat>> llt(diag);  // factors the diagonal block in place
    if (llt.info() != Eigen::Success) return false;
    if (rest == 0) break;
    // L21 = A21 L11^-T: solve X L11^T = A21 in place
    A.block(k, k, b, b).template triangularView<Eigen::Lower>().transpose().template solveInPlace<Eigen::OnTheRight>(
        A.block(k + b, k, rest, b));
    const Mat L21 = A.block(k + b, k, rest, b);
    // trailing update A22 -= L21 L21^T, lower triangle only: one GEMM per panel of B columns
    for (Eigen::Index j = 0; j < rest; j += B) {
      const Eigen::Index w = std::min(B, rest - j);
      A.block(k + b + j, k + b + j, rest - j, w).noalias() -= L21.bottomRows(rest - j) * L21.middleRows(j, w).transpose();
    }
  }
  A.template triangularView<Eigen::StrictlyUpper>().setZero();
  return true;
}

// Upper Cholesky factor U of (H + damp I)^-1 (U^T U = H^-1), with the automatic damping retry.
// The reference computes chol(H), the inverse, then chol(H^-1) (about 1.7 n^3 flops).  With J the reversal
// permutation and J H J = K K^T, U = J K^-1 J is upper triangular with U^T U = J (K K^T)^-1 J = H^-1: one
// Cholesky and one triangular inverse (2/3 n^3).  Scalar = float (as the reference, default) or double.
template <class Scalar>
MatrixRM gptq_inverse_factor(const Eigen::MatrixXd& H, const GptqOptions& o, GptqResult& r) {
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const double mean_diag = H.diagonal().mean();
  const Eigen::Index n = H.rows();

  double pd = o.percdamp;
  for (int attempt = 0;; ++attempt) {
    Mat Kinv(n, n);  // J H J, rebuilt for every try (no second n x n copy is kept)
    for_each_tiled(n, n, [&](Eigen::Index i, Eigen::Index j) { Kinv(i, j) = Scalar(H(n - 1 - i, n - 1 - j)); });
    Kinv.diagonal().array() += Scalar(pd * mean_diag);
    if (cholesky_lower_inplace(Kinv)) {
      invert_lower_triangular<Mat>(Kinv);  // K^-1, lower triangular
      if (Kinv.allFinite()) {
        r.percdamp_used = pd;
        r.damp_retries = attempt;
        MatrixRM U(n, n);  // J K^-1 J
        for_each_tiled(n, n, [&](Eigen::Index i, Eigen::Index j) { U(i, j) = float(Kinv(n - 1 - i, n - 1 - j)); });
        return U;
      }
    }
    if (attempt >= o.max_damp_retries)
      fail("GPTQ: the Hessian is not positive definite even with damping ", pd, " x mean(diag H) (",
           attempt + 1, " tries); use more calibration samples or a larger percdamp");
    pd *= 10.0;
  }
}

}  // namespace detail

template <class Q>
GptqResult gptq_quantize(const Q& q, ConstMatrixRef W_in, const Eigen::MatrixXd& H_in, const GptqOptions& o = {},
                         std::string_view name = "weight") {
  static_assert(Q::static_group != tensor_group, "GPTQ quantizes per channel or per group");
  const Eigen::Index rows = W_in.rows(), cols = W_in.cols();
  if (H_in.rows() != cols || H_in.cols() != cols)
    fail(name, ": Hessian is ", H_in.rows(), "x", H_in.cols(), ", expected ", cols, "x", cols);
  if (o.block_size <= 0) fail(name, ": GPTQ block size ", o.block_size, " must be positive");
  const GroupLayout L = group_layout(q, rows, cols, name);
  const Eigen::Index gs = L.group;
  const bool grouped = Q::static_group != row_group;
  if (!W_in.allFinite())
    for (Eigen::Index rr = 0; rr < rows; ++rr)
      for (Eigen::Index c = 0; c < cols; ++c)
        if (!std::isfinite(W_in(rr, c))) fail(name, ": non-finite weight at row ", rr, ", column ", c);
  if (!H_in.allFinite()) fail(name, ": the Hessian has non-finite entries");

  GptqResult r;
  MatrixRM Wt(cols, rows);  // [in, out]: column c of W is row c here
  detail::for_each_tiled(cols, rows, [&](Eigen::Index c, Eigen::Index rr) { Wt(c, rr) = W_in(rr, c); });
  for (Eigen::Index d = 0; d < cols; ++d)
    if (H_in(d, d) == 0.0) r.dead_columns.push_back(int(d));
  Eigen::MatrixXd H_edit;  // a copy only when dead columns or act_order change H
  if (!r.dead_columns.empty() || o.act_order) H_edit = H_in;
  for (int d : r.dead_columns) {
    H_edit(d, d) = 1.0;
    Wt.row(d).setZero();
  }
  const Eigen::MatrixXd& H0 = H_edit.size() ? H_edit : H_in;

  // Fits min-max parameters (q.fit_range) on rows [r0, r0+nr) of W's columns [c0, c0+n) -- src holds columns
  // as rows -- into the parameter rows [out0, out0+nr) of group g.
  auto fit_rows = [&](const auto& src, Eigen::Index c0, Eigen::Index n, Eigen::Index r0, Eigen::Index nr, Eigen::Index g,
                      Eigen::Index out0) {
    // range and the value of largest magnitude (the ggml grid's; the first one on a tie, as
    // detail::signed_absmax, in column order)
    Eigen::VectorXf mn = src.row(c0).segment(r0, nr).transpose(), mx = mn, sm = mn;
    for (Eigen::Index c = c0 + 1; c < c0 + n; ++c) {
      const auto col = src.row(c).segment(r0, nr).transpose();
      mn = mn.cwiseMin(col);
      mx = mx.cwiseMax(col);
      sm = (col.array().abs() > sm.array().abs()).select(col, sm);
    }
    for (Eigen::Index i = 0; i < nr; ++i) {
      const GroupParams p = q.fit_range(mn[i], mx[i], sm[i]);
      r.params.scale(out0 + i, g) = p.scale, r.params.zero(out0 + i, g) = p.zero;
    }
  };
  const Eigen::Index ngroups = grouped ? L.ngroups : 1;
  r.params.group = L.group;
  r.params.scale.resize(rows, ngroups);
  r.params.zero.resize(rows, ngroups);
  if (grouped && o.static_groups)  // static groups: fitted on the original (unpermuted, dead columns zeroed) weight
    for (Eigen::Index g = 0; g < ngroups; ++g) fit_rows(Wt, g * gs, std::min(gs, cols - g * gs), 0, rows, g, 0);

  r.perm.resize(std::size_t(cols));
  std::iota(r.perm.begin(), r.perm.end(), 0);
  if (o.act_order) {
    Eigen::MatrixXd& H = H_edit;
    const Eigen::VectorXd diag = H.diagonal();
    std::stable_sort(r.perm.begin(), r.perm.end(), [&](int a, int b) { return diag[a] > diag[b]; });
    MatrixRM Wp(cols, rows);
    Eigen::MatrixXd Hp(cols, cols);
    for (Eigen::Index i = 0; i < cols; ++i) {
      Wp.row(i) = Wt.row(r.perm[std::size_t(i)]);
      for (Eigen::Index j = 0; j < cols; ++j) Hp(i, j) = H(r.perm[std::size_t(i)], r.perm[std::size_t(j)]);
    }
    Wt.swap(Wp);
    H.swap(Hp);
  }
  const MatrixRM U = o.double_factorization ? detail::gptq_inverse_factor<double>(H_edit.size() ? H_edit : H0, o, r)
                                            : detail::gptq_inverse_factor<float>(H_edit.size() ? H_edit : H0, o, r);

  // Per-channel: parameters of the whole row, fitted once on the weight as given (before dead columns are
  // zeroed), as the reference does.
  Eigen::VectorXf scale, zero;
  if (!grouped) {
    fit_rows(MatrixRM(W_in.transpose()), 0, cols, 0, rows, 0, 0);
    scale = r.params.scale.col(0), zero = r.params.zero.col(0);
  }
  r.g_idx.assign(std::size_t(cols), 0);
  if (grouped)  // the group of every processing position does not depend on the data
    for (Eigen::Index col = 0; col < cols; ++col)
      r.g_idx[std::size_t(r.perm[std::size_t(col)])] = int(o.static_groups ? r.perm[std::size_t(col)] / gs : col / gs);
  // Output rows are independent in GPTQ (each row's updates only read its own errors), so each block runs in
  // parallel over fixed chunks of rows: bit-identical for any thread count.
  constexpr Eigen::Index kChunk = 128;
  const Eigen::Index nchunks = (rows + kChunk - 1) / kChunk;
  std::vector<double> chunk_loss(std::size_t(nchunks), 0.0);
  MatrixRM Qt(cols, rows);
  CodesRM Ct(cols, rows);
  for (Eigen::Index i1 = 0; i1 < cols; i1 += o.block_size) {
    const Eigen::Index i2 = std::min<Eigen::Index>(i1 + o.block_size, cols), count = i2 - i1;
    MatrixRM W1 = Wt.middleRows(i1, count);  // in-block working copy
    MatrixRM Err1(count, rows);
    parallel_for(nchunks, [&](std::int64_t chunk) {
      const Eigen::Index r0 = chunk * kChunk, nr = std::min(kChunk, rows - r0);
      const float* sc = nullptr;
      const float* zc = nullptr;
      Eigen::VectorXf s_col(nr), z_col(nr);
      if (!grouped) s_col = scale.segment(r0, nr), z_col = zero.segment(r0, nr);
      double loss_sum = 0.0;
      for (Eigen::Index i = 0; i < count; ++i) {
        const Eigen::Index col = i1 + i;
        if (grouped) {
          const Eigen::Index g = o.static_groups ? r.perm[std::size_t(col)] / gs : col / gs;
          if (!o.static_groups && col % gs == 0) {  // a new group starts at this processing position
            const Eigen::Index n = std::min(gs, cols - col);
            if (o.group_params_from == GroupFit::block_start) {
              fit_rows(Wt, col, n, r0, nr, g, r0);
            } else {  // current: every column of the group with all updates so far applied
              MatrixRM cur = Wt.block(col, r0, n, nr);
              const Eigen::Index in_block = std::min(i2, col + n) - col, beyond = n - in_block;
              cur.topRows(in_block) = W1.block(i, r0, in_block, nr);
              if (beyond > 0 && i > 0)  // the block's pending lazy update, for the columns past its end
                cur.bottomRows(beyond).noalias() -= U.block(i1, i2, i, beyond).transpose() * Err1.block(0, r0, i, nr);
              fit_rows(cur, 0, n, 0, nr, g, r0);
            }
          }
          for (Eigen::Index k = 0; k < nr; ++k) s_col[k] = r.params.scale(r0 + k, g), z_col[k] = r.params.zero(r0 + k, g);
        }
        sc = s_col.data(), zc = z_col.data();
        const float d = U(col, col);
        float* w = W1.row(i).data() + r0;
        float* qd = Qt.row(col).data() + r0;
        std::uint8_t* cd = Ct.row(col).data() + r0;
        float* e = Err1.row(i).data() + r0;
        float loss = 0.0f;
        for (Eigen::Index k = 0; k < nr; ++k) {
          const GroupParams p{sc[k], zc[k]};  // the grid's own rounding (grid.hpp; llama.cpp's on the ggml grid)
          const float code = q.quantize_value(w[k], p);
          qd[k] = q.dequantize_value(code, p);
          cd[k] = static_cast<std::uint8_t>(code);
          const float diff = w[k] - qd[k];
          loss += diff * diff / (d * d);
          e[k] = diff / d;
        }
        loss_sum += double(loss) / 2.0;
        // W1[:, i+1:] -= err * U[col, col+1:i2]   (rows i+1.. of the transposed block, this chunk's columns)
        for (Eigen::Index j = i + 1; j < count; ++j) {
          const float u = U(col, i1 + j);
          float* dst = W1.row(j).data() + r0;
          for (Eigen::Index k = 0; k < nr; ++k) dst[k] -= u * e[k];
        }
      }
      chunk_loss[std::size_t(chunk)] += loss_sum;
    });
    if (i2 < cols)  // W[:, i2:] -= Err1 @ U[i1:i2, i2:]
      Wt.bottomRows(cols - i2).noalias() -= U.block(i1, i2, count, cols - i2).transpose() * Err1;
  }
  double err_total = 0.0;
  for (double l : chunk_loss) err_total += l;
  r.error = err_total;
  if (o.act_order) {
    MatrixRM Qn(cols, rows);  // un-permute rows of Q^T, then transpose once
    CodesRM Cn(cols, rows);
    for (Eigen::Index c = 0; c < cols; ++c) {
      Qn.row(r.perm[std::size_t(c)]) = Qt.row(c);
      Cn.row(r.perm[std::size_t(c)]) = Ct.row(c);
    }
    Qt.swap(Qn);
    Ct.swap(Cn);
  }
  r.Q.resize(rows, cols);
  r.codes.resize(rows, cols);
  detail::for_each_tiled(rows, cols, [&](Eigen::Index rr, Eigen::Index c) {
    r.Q(rr, c) = Qt(c, rr);
    r.codes(rr, c) = Ct(c, rr);
  });
  return r;
}

}  // namespace lowbit
