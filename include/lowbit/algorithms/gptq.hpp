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
// Layout: W is row-major [out, in]; internally lowbit works on W^T so a column of W is a contiguous row.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../quant/quantizer.hpp"

namespace lowbit {

// H = (2 / n) * sum over samples of X^T X, accumulated in double.  n counts samples (calibration windows),
// not tokens, exactly as the reference's add_batch does with one window per call.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(Eigen::Index in = 0) : sum_(Eigen::MatrixXd::Zero(in, in)) {}
  // X: [tokens, in] activations of `samples` samples.
  void add_batch(const MatrixRM& X, std::int64_t samples = 1) {
    if (sum_.rows() == 0) sum_ = Eigen::MatrixXd::Zero(X.cols(), X.cols());
    if (X.cols() != sum_.cols()) fail("Hessian: input has ", X.cols(), " columns, expected ", sum_.cols());
    const Eigen::MatrixXd Xd = X.cast<double>();
    sum_.selfadjointView<Eigen::Lower>().rankUpdate(Xd.transpose());
    n_ += samples;
  }
  std::int64_t samples() const { return n_; }
  Eigen::MatrixXd hessian() const {
    if (n_ == 0) fail("Hessian: no calibration data was added");
    Eigen::MatrixXd H = sum_.selfadjointView<Eigen::Lower>();
    return H * (2.0 / double(n_));
  }

 private:
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
};

struct GptqResult {
  MatrixRM Q;                 // [out, in] dequantized weights, original column order
  QuantParams params;         // scale/zero [out, ngroups]; group k as g_idx refers to it
  std::vector<int> g_idx;     // [in] group of each original column
  std::vector<int> perm;      // [in] processing order (act_order), identity otherwise
  double error = 0.0;         // sum over columns of (w - q)^2 / U_ii^2 / 2, as the reference prints
  double percdamp_used = 0.0;
  int damp_retries = 0;
  std::vector<int> dead_columns;
};

namespace detail {

// Upper Cholesky factor U of (H + damp I)^-1 (U^T U = H^-1), with the automatic damping retry.
inline Eigen::MatrixXd gptq_inverse_factor(Eigen::MatrixXd H, const GptqOptions& o, GptqResult& r) {
  const double mean_diag = H.diagonal().mean();
  double pd = o.percdamp;
  for (int attempt = 0;; ++attempt) {
    Eigen::MatrixXd Hd = H;
    Hd.diagonal().array() += pd * mean_diag;
    Eigen::LLT<Eigen::MatrixXd> llt(Hd);
    if (llt.info() == Eigen::Success) {
      const Eigen::MatrixXd Hinv = llt.solve(Eigen::MatrixXd::Identity(H.rows(), H.cols()));
      Eigen::LLT<Eigen::MatrixXd> llt2(Hinv);
      if (llt2.info() == Eigen::Success) {
        r.percdamp_used = pd;
        r.damp_retries = attempt;
        return llt2.matrixU();
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
  if (q.grid == Grid::ggml) fail(name, ": GPTQ does not support the ggml grid");
  if (o.block_size <= 0) fail(name, ": GPTQ block size ", o.block_size, " must be positive");
  const GroupLayout L = group_layout(q, rows, cols, name);
  const Eigen::Index gs = L.group;
  const bool grouped = Q::static_group != row_group;
  for (Eigen::Index i = 0; i < W_in.size(); ++i) {
    const float v = W_in(i / cols, i % cols);
    if (!std::isfinite(v)) fail(name, ": non-finite weight at row ", i / cols, ", column ", i % cols);
  }
  if (!H_in.allFinite()) fail(name, ": the Hessian has non-finite entries");

  GptqResult r;
  Eigen::MatrixXd H = H_in;
  MatrixRM Wt = W_in.transpose();  // [in, out]: column c of W is row c here
  for (Eigen::Index d = 0; d < cols; ++d)
    if (H(d, d) == 0.0) {
      H(d, d) = 1.0;
      Wt.row(d).setZero();
      r.dead_columns.push_back(int(d));
    }

  // static groups: fitted on the original (unpermuted, dead columns zeroed) weight before anything else
  const float qmaxf = float(Q::qmax);
  auto fit = [&](const MatrixRM& src, Eigen::Index c0, Eigen::Index n, Eigen::VectorXf& s, Eigen::VectorXf& z) {
    Eigen::VectorXf mn = src.row(c0).transpose(), mx = mn;
    for (Eigen::Index c = c0 + 1; c < c0 + n; ++c) {
      mn = mn.cwiseMin(src.row(c).transpose());
      mx = mx.cwiseMax(src.row(c).transpose());
    }
    s.resize(rows), z.resize(rows);
    for (Eigen::Index i = 0; i < rows; ++i) {
      const GroupParams p = group_params(q.grid, Q::bits, Q::symmetric, mn[i] + 0.0f, mx[i] + 0.0f);
      s[i] = p.scale, z[i] = p.zero;
    }
  };
  const Eigen::Index ngroups = grouped ? L.ngroups : 1;
  r.params.group = L.group;
  r.params.scale.resize(rows, ngroups);
  r.params.zero.resize(rows, ngroups);
  if (grouped && o.static_groups)
    for (Eigen::Index g = 0; g < ngroups; ++g) {
      Eigen::VectorXf s, z;
      fit(Wt, g * gs, std::min(gs, cols - g * gs), s, z);
      r.params.scale.col(g) = s, r.params.zero.col(g) = z;
    }

  r.perm.resize(std::size_t(cols));
  std::iota(r.perm.begin(), r.perm.end(), 0);
  if (o.act_order) {
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
  const MatrixRM U = detail::gptq_inverse_factor(std::move(H), o, r).cast<float>();

  // Per-channel: parameters of the whole row, fitted once on the weight as given (before dead columns are
  // zeroed), as the reference does.
  Eigen::VectorXf scale, zero;
  if (!grouped) {
    fit(MatrixRM(W_in.transpose()), 0, cols, scale, zero);
    r.params.scale.col(0) = scale, r.params.zero.col(0) = zero;
  }
  r.g_idx.assign(std::size_t(cols), 0);
  MatrixRM Qt(cols, rows);
  double err_total = 0.0;
  for (Eigen::Index i1 = 0; i1 < cols; i1 += o.block_size) {
    const Eigen::Index i2 = std::min<Eigen::Index>(i1 + o.block_size, cols), count = i2 - i1;
    MatrixRM W1 = Wt.middleRows(i1, count);  // in-block working copy
    MatrixRM Err1(count, rows);
    for (Eigen::Index i = 0; i < count; ++i) {
      const Eigen::Index col = i1 + i;
      if (grouped) {
        Eigen::Index g;
        if (o.static_groups) {
          g = r.perm[std::size_t(col)] / gs;
        } else {
          g = col / gs;
          if (col % gs == 0) {  // a new group starts at this processing position
            Eigen::VectorXf s, z;
            if (o.group_params_from == GroupFit::block_start) {
              fit(Wt, col, std::min(gs, cols - col), s, z);
            } else {  // current: every column of the group with all updates so far applied
              MatrixRM cur = Wt.middleRows(col, std::min(gs, cols - col));
              const Eigen::Index in_block = std::min(i2, col + cur.rows()) - col, beyond = cur.rows() - in_block;
              cur.topRows(in_block) = W1.middleRows(i, in_block);
              if (beyond > 0 && i > 0)  // the block's pending lazy update, for the columns past its end
                cur.bottomRows(beyond).noalias() -= U.block(i1, i2, i, beyond).transpose() * Err1.topRows(i);
              fit(cur, 0, cur.rows(), s, z);
            }
            r.params.scale.col(g) = s, r.params.zero.col(g) = z;
          }
        }
        scale = r.params.scale.col(g);
        zero = r.params.zero.col(g);
        r.g_idx[std::size_t(r.perm[std::size_t(col)])] = int(g);
      }
      const float d = U(col, col);
      float* w = W1.row(i).data();
      float* qd = Qt.row(col).data();
      float* e = Err1.row(i).data();
      float loss = 0.0f;
      for (Eigen::Index k = 0; k < rows; ++k) {
        const float code = std::min(std::max(std::nearbyint(w[k] / scale[k]) + zero[k], 0.0f), qmaxf);
        qd[k] = scale[k] * (code - zero[k]);
        const float diff = w[k] - qd[k];
        loss += diff * diff / (d * d);
        e[k] = diff / d;
      }
      err_total += double(loss) / 2.0;
      // W1[:, i+1:] -= err * U[col, col+1:i2]   (rows i+1.. of the transposed block)
      for (Eigen::Index j = i + 1; j < count; ++j) W1.row(j) -= U(col, i1 + j) * Err1.row(i);
    }
    if (i2 < cols)  // W[:, i2:] -= Err1 @ U[i1:i2, i2:]
      Wt.bottomRows(cols - i2).noalias() -= U.block(i1, i2, count, cols - i2).transpose() * Err1;
  }
  r.error = err_total;
  r.Q.resize(rows, cols);
  for (Eigen::Index c = 0; c < cols; ++c) r.Q.col(r.perm[std::size_t(c)]) = Qt.row(c).transpose();
  return r;
}

}  // namespace lowbit
