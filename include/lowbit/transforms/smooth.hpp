// lowbit/transforms/smooth.hpp -- per-input-channel smoothing scales that move quantization difficulty from the
// activations to the weights (pure functions on Eigen data; methods/smoothquant.hpp applies them to a block).
//
//   act_absmax(X)[j]        = max_t |X[t, j]|                                 over the calibration tokens
//   weight_absmax(Ws)[j]    = max(1e-5, max over the group's linears W and rows o of |W[o, j]|)
//   smoothquant_scales      s_j = max(1e-5, act_j^a / w_j^(1-a))              SmoothQuant smooth.py
//                                                                             (ALGORITHMS.md 4.1), a = alpha
//   smoothed_quant_loss     mean over [N, out] of (X W^T - aq(X / s) wq(W diag(s))^T)^2: the quantized output
//                           error of a candidate s (PaddleSlim mse_loss; OS+ sums over the outputs instead of
//                           averaging, the same order of candidates), aq / wq fake-quantize in place
// Folded as X' = X / s (into the previous op) and W' = W diag(s), so X' W'^T = X W^T: the same function.  With
// a = 0.5 the smoothed channel's activation range equals its weight range (sqrt(act_j w_j) on both sides).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/error.hpp"
#include "../core/gemm.hpp"
#include "../core/matrix.hpp"
#include "../quant/activation.hpp"

namespace lowbit {

// Per-column running maximum of |x| (accumulated over calls; starts empty).
inline void accumulate_absmax(ConstMatrixRef x, Eigen::VectorXf& acc) {
  if (acc.size() == 0) acc = Eigen::VectorXf::Zero(x.cols());
  if (acc.size() != x.cols()) fail("accumulate_absmax: ", x.cols(), " columns, the statistics have ", acc.size());
  for (Eigen::Index r = 0; r < x.rows(); ++r) acc = acc.cwiseMax(x.row(r).transpose().cwiseAbs());
}

inline Eigen::VectorXf weight_absmax(const std::vector<const MatrixRM*>& Ws) {
  if (Ws.empty()) fail("weight_absmax: no weights");
  Eigen::VectorXf m = Eigen::VectorXf::Zero(Ws[0]->cols());
  for (const MatrixRM* W : Ws) {
    if (W->cols() != m.size()) fail("weight_absmax: the group's linears have different input widths");
    m = m.cwiseMax(W->cwiseAbs().colwise().maxCoeff().transpose());
  }
  return m.cwiseMax(1e-5f);
}

inline Eigen::VectorXf smoothquant_scales(const Eigen::VectorXf& act, const Eigen::VectorXf& w, float alpha) {
  if (!(alpha >= 0.0f && alpha <= 1.0f)) fail("SmoothQuant: alpha ", alpha, " is not in [0, 1]");
  if (act.size() != w.size()) fail("SmoothQuant: ", act.size(), " activation channels, ", w.size(), " weight channels");
  Eigen::VectorXf s(act.size());
  for (Eigen::Index j = 0; j < s.size(); ++j)
    s[j] = std::max(1e-5f, std::pow(act[j], alpha) / std::pow(w[j], 1.0f - alpha));
  if (!s.allFinite()) fail("SmoothQuant: a scale is not finite (activation maximum overflow)");
  return s;
}

template <class WQ, class AQ>
double smoothed_quant_loss(ConstMatrixRef X, ConstMatrixRef W, const MatrixRM& Y, const Eigen::VectorXf& s, WQ&& wq, AQ&& aq) {
  MatrixRM Xs = X.array().rowwise() / s.transpose().array();
  aq(Xs);
  MatrixRM Ws = W.array().rowwise() * s.transpose().array();
  wq(Ws);
  MatrixRM Yq;
  matmul_nt(Xs, Ws, Yq);
  const double loss = (Y - Yq).cast<double>().squaredNorm() / double(Y.size());
  if (!std::isfinite(loss)) fail("smoothing search: a candidate's quantized output is not finite");
  return loss;
}

// The activation quantizer a smoothing search scores its candidates with: the run's (dynamic; a static
// per-tensor range is the sample's own here), or PaddleSlim's 8-bit per-tensor abs-max when the run quantizes
// weights only.
inline ActQuant search_act_quant(const ActQuant& run) {
  if (!run.on()) return ActQuant{8, ActGranularity::per_tensor, true, Grid::minmax};
  ActQuant a = run;
  a.static_range = false;
  return a;
}
inline void fake_quant_activation(const ActQuant& a, MatrixRM& x, std::string_view what) {
  if (a.granularity == ActGranularity::per_token) fake_quant_dynamic(a, x, x.cols(), what);
  else fake_quant_tensor(a, x, what);
}

}  // namespace lowbit
