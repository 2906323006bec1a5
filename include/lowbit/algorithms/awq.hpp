// lowbit/algorithms/awq.hpp -- AWQ (Lin et al. 2023): activation-aware scale search and clip search, layer
// level, on plain Eigen matrices.  The block pipeline (algorithms/pipeline.hpp) builds on these.
//
// Scale search (reference: llm-awq auto_scale.py / AutoAWQ _search_best_scale; ALGORITHMS.md 2.3):
//   x_mean[j] = mean_t |x[t, j]|
//   for r in {0, 1/n_grid, ..., (n_grid-1)/n_grid}:
//     s = max(x_mean^r, 1e-4)                         (duo_scaling: max(x_mean^r / (w_mean^(1-r) + 1e-4), 1e-4))
//     s = s / sqrt(max(s) * min(s))
//     W' = Q(W diag(s)) diag(s)^-1 for every linear of the group       -- emulates Q(W s)(x / s)
//     loss(r) = mean((module(x; W) - module(x; W'))^2)
//   the first strict minimum wins; folding s into the previous op keeps the model's function.
// Clip search (auto_clip.py; ALGORITHMS.md 2.4): per (row, group) try max_val = absmax * (1 - i/n_grid) for
//   i < max_shrink * n_grid, clamp W to [-max_val, max_val] (or, asymmetric option, min and max shrunk
//   separately), quantize, and keep the one minimising mean_t (sum_k x_k q_k - sum_k x_k w_k)^2.
//   The candidate thresholds are float32 products with the factor rounded to float32, as in the reference
//   (bit-exact parity depends on it); errors are summed in double.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../model/block.hpp"
#include "../quant/quantizer.hpp"

namespace lowbit {

// How a scale candidate is scored.
//   module_output (the reference): mean((module(x; W) - module(x; W'))^2) over every token -- 20 module
//     forwards per group;
//   fast: a single-linear group (v -> o, up -> down) by the Gram matrix below -- the reference's loss exactly, up
//     to rounding -- and the attention and MLP groups by the reference's module loss on a strided sample of whole
//     sequences (AwqOptions::scale_tokens tokens) instead of every token;
//   gram: sum over the group's linears of tr(dW G dW^T) / (tokens * outputs), G = X^T X computed once -- the
//     mean squared error of the linears' own outputs (PaddleSlim's AWQSearch scores a single layer this way).
//     For a single-linear group it is the reference's loss exactly (up to rounding); for the attention and MLP
//     groups it is a proxy that ignores what follows the linears.  Cost per candidate out * in^2 instead of
//     tokens * in * out.
enum class AwqScoring { module_output, fast, gram };

struct AwqOptions {
  int n_grid = 20;
  bool duo_scaling = false;  // llm-awq: x^r only (false); AutoAWQ's default is true
  int clip_grid = 20;
  double max_shrink = 0.5;
  int clip_tokens = 512;      // tokens sampled (strided) for the clip search
  bool symmetric_clip = true; // the reference clips symmetrically even for asymmetric quantization
  bool clip = true;           // run the clip search (block level)
  AwqScoring scoring = AwqScoring::fast;  // module_output: the reference (docs/benchmarks.md compares them)
  int scale_tokens = 4096;    // AwqScoring::fast: tokens (whole sequences, strided) the module loss is scored on
};

struct AwqScaleResult {
  Eigen::VectorXf scales;
  int best_index = -1;
  std::vector<double> losses;  // one per ratio
};

// What AWQ found for one block: the scales of each input group (by the group's key, model/block.hpp) and the
// clip of each linear.
struct AwqBlockResult {
  std::map<std::string, Eigen::VectorXf> scales;       // "attn_norm", "v_proj", "ffn_norm", "up_proj"
  std::map<std::string, Eigen::VectorXf> x_mean;       // the activation statistics the scales came from
  std::map<std::string, AwqScaleResult> searches;
  std::map<Role, MatrixRM> clip_max, clip_min;         // [rows, ngroups]
};

// mean over tokens of |x| per input channel (summed in double).
inline Eigen::VectorXf awq_act_mean(const MatrixRM& X) {
  if (X.rows() == 0) fail("AWQ: no activations");
  Eigen::VectorXd s = Eigen::VectorXd::Zero(X.cols());
  for (Eigen::Index t = 0; t < X.rows(); ++t) s += X.row(t).cwiseAbs().cast<double>().transpose();
  return (s / double(X.rows())).cast<float>();
}

// AutoAWQ's w_mean: the group's weights stacked on the output dimension, |W| normalised by each row-group's
// absmax, averaged over rows.
inline Eigen::VectorXf awq_weight_mean(const std::vector<const MatrixRM*>& Ws, Eigen::Index group) {
  const Eigen::Index in = Ws.at(0)->cols();
  if (group <= 0) group = in;
  Eigen::VectorXd s = Eigen::VectorXd::Zero(in);
  Eigen::Index rows = 0;
  for (const MatrixRM* W : Ws) {
    for (Eigen::Index r = 0; r < W->rows(); ++r)
      for (Eigen::Index c0 = 0; c0 < in; c0 += group) {
        const Eigen::Index n = std::min(group, in - c0);
        const float mx = W->row(r).segment(c0, n).cwiseAbs().maxCoeff();
        for (Eigen::Index c = c0; c < c0 + n; ++c) s[c] += double(std::fabs((*W)(r, c)) / (mx + 1e-6f));
      }
    rows += W->rows();
  }
  return (s / double(rows)).cast<float>();
}

// The normalised scales for ratio r.
inline Eigen::VectorXf awq_scales_for_ratio(const Eigen::VectorXf& x_mean, const Eigen::VectorXf& w_mean, float r,
                                            bool duo) {
  Eigen::VectorXf s(x_mean.size());
  for (Eigen::Index j = 0; j < s.size(); ++j) {
    float v = duo ? std::pow(x_mean[j], r) / (std::pow(w_mean[j], 1.0f - r) + 1e-4f) : std::pow(x_mean[j], r);
    v = std::max(v, 1e-4f);
    s[j] = std::isfinite(v) ? v : 1.0f;
  }
  return s / std::sqrt(s.maxCoeff() * s.minCoeff());
}

// Q(W diag(s)) diag(s)^-1: the weight the scaled, quantized layer effectively applies to x.
template <class Q>
MatrixRM awq_scaled_fake_quant(const Q& q, const MatrixRM& W, const Eigen::VectorXf& s) {
  MatrixRM Ws = W * s.asDiagonal();
  fake_quant(q, Ws, Ws);
  for (Eigen::Index r = 0; r < Ws.rows(); ++r) Ws.row(r).array() /= s.transpose().array();
  return Ws;
}

// The grid search over ratios: score(candidate weights, s) is the loss of one candidate (weights Q(W s) / s
// for scales s); the first strict minimum wins.
template <class Q, class Score>
AwqScaleResult awq_grid_search(const Q& q, const std::vector<const MatrixRM*>& layers, const Eigen::VectorXf& x_mean,
                               Score&& score, const AwqOptions& o) {
  AwqScaleResult res;
  const Eigen::VectorXf w_mean = o.duo_scaling ? awq_weight_mean(layers, q.group_size > 0 ? q.group_size : 0)
                                               : Eigen::VectorXf::Ones(x_mean.size());
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < o.n_grid; ++i) {
    const float r = float(i) / float(o.n_grid);
    const Eigen::VectorXf s = awq_scales_for_ratio(x_mean, w_mean, r, o.duo_scaling);
    std::vector<MatrixRM> cand;
    for (const MatrixRM* W : layers) cand.push_back(awq_scaled_fake_quant(q, *W, s));
    const double loss = score(cand, s);
    if (!std::isfinite(loss)) fail("AWQ: the scale search produced a non-finite loss at ratio ", r);
    res.losses.push_back(loss);
    if (loss < best) best = loss, res.best_index = i, res.scales = s;
  }
  return res;
}

// Grid search of the scales of one group of linears sharing an input (the reference's scoring).
// `module(weights)` -- or `module(weights, s)`, s the candidate's scales, for a module that quantizes its scaled
// input (LLMC's scaling_input) -- evaluates the inspected module with the given weights (same order as `layers`)
// on the calibration input and returns its output; y_fp is its output with the original weights.
template <class Q, class Module>
AwqScaleResult awq_search_scale(const Q& q, const std::vector<const MatrixRM*>& layers, const Eigen::VectorXf& x_mean,
                                Module&& module, const MatrixRM& y_fp, const AwqOptions& o = {}) {
  return awq_grid_search(q, layers, x_mean, [&](const std::vector<MatrixRM>& cand, const Eigen::VectorXf& s) {
    MatrixRM y;
    if constexpr (std::is_invocable_v<Module&, const std::vector<MatrixRM>&, const Eigen::VectorXf&>) y = module(cand, s);
    else y = module(cand);
    return (y - y_fp).cast<double>().array().square().mean();
  }, o);
}

// X^T X of the group's input (float products per chunk of tokens, summed in double), for AwqScoring::gram.
inline Eigen::MatrixXf awq_gram(const MatrixRM& X) {
  Eigen::MatrixXd G = Eigen::MatrixXd::Zero(X.cols(), X.cols());
  add_gram(X, G);
  return G.cast<float>();
}

// The same search scored with the Gram matrix G = X^T X of `tokens` tokens (AwqScoring::gram).
template <class Q>
AwqScaleResult awq_search_scale_gram(const Q& q, const std::vector<const MatrixRM*>& layers, const Eigen::VectorXf& x_mean,
                                     const Eigen::MatrixXf& G, std::int64_t tokens, const AwqOptions& o = {}) {
  Eigen::Index outs = 0;
  for (const MatrixRM* W : layers) outs += W->rows();
  return awq_grid_search(q, layers, x_mean, [&](const std::vector<MatrixRM>& cand, const Eigen::VectorXf&) {
    double loss = 0.0;
    for (std::size_t k = 0; k < layers.size(); ++k) {
      const MatrixRM dW = cand[k] - *layers[k];
      const MatrixRM dWG = dW * G;  // [out, in]
      loss += (dWG.array() * dW.array()).cast<double>().sum();
    }
    return loss / (double(tokens) * double(outs));
  }, o);
}

// Clip search for one linear: returns max_val [rows, ngroups] (symmetric clip) -- or, with
// symmetric_clip = false, min_val in `min_out` too.  X: sampled input tokens [n, in] (already divided by the
// AWQ scales when scales were applied).
template <class Q>
MatrixRM awq_search_clip(const Q& q, const MatrixRM& W, const MatrixRM& X, const AwqOptions& o = {},
                         MatrixRM* min_out = nullptr) {
  const GroupLayout L = group_layout(q, W.rows(), W.cols(), "AWQ clip");
  MatrixRM best_max(W.rows(), L.ngroups), best_min(W.rows(), L.ngroups);
  const int steps = int(o.max_shrink * o.clip_grid);
  parallel_for(L.ngroups * ((W.rows() + 63) / 64), [&](std::int64_t job) {
    const Eigen::Index g = job % L.ngroups, r0 = (job / L.ngroups) * 64, nr = std::min<Eigen::Index>(64, W.rows() - r0);
    const Eigen::Index c0 = g * L.group, n = L.width(g);
    const MatrixRM Xg = X.middleCols(c0, n);                     // [tokens, n]
    const MatrixRM Wg = W.block(r0, c0, nr, n);                  // [nr, n]
    const MatrixRM org = Xg * Wg.transpose();                    // [tokens, nr]
    Eigen::VectorXd best_err = Eigen::VectorXd::Constant(nr, std::numeric_limits<double>::infinity());
    MatrixRM Qc(nr, n);
    for (int i = 0; i < steps; ++i) {
      const float factor = float(1.0 - double(i) / double(o.clip_grid));
      Eigen::VectorXf mxv(nr), mnv(nr);
      for (Eigen::Index r = 0; r < nr; ++r) {
        const float amax = Wg.row(r).cwiseAbs().maxCoeff();
        float hi, lo;
        if (o.symmetric_clip) {
          hi = amax * factor, lo = -hi;
        } else {
          hi = Wg.row(r).maxCoeff() * factor, lo = Wg.row(r).minCoeff() * factor;
        }
        mxv[r] = hi, mnv[r] = lo;
        for (Eigen::Index k = 0; k < n; ++k) Qc(r, k) = std::min(std::max(Wg(r, k), lo), hi);
        const GroupParams p = q.fit(&Qc(r, 0), n);
        for (Eigen::Index k = 0; k < n; ++k) Qc(r, k) = q.fake_quant_value(Qc(r, k), p);
      }
      const MatrixRM cur = Xg * Qc.transpose();
      for (Eigen::Index r = 0; r < nr; ++r) {
        const double err = (cur.col(r) - org.col(r)).cast<double>().squaredNorm() / double(X.rows());
        if (err < best_err[r]) best_err[r] = err, best_max(r0 + r, g) = mxv[r], best_min(r0 + r, g) = mnv[r];
      }
    }
  });
  if (min_out) *min_out = best_min;
  return best_max;
}

// Clamps every (row, group) of W to [min, max] (min = -max when min_val is null).
inline void apply_clip(MatrixRM& W, const MatrixRM& max_val, Eigen::Index group, const MatrixRM* min_val = nullptr) {
  for (Eigen::Index r = 0; r < W.rows(); ++r)
    for (Eigen::Index g = 0; g < max_val.cols(); ++g) {
      const Eigen::Index c0 = g * group, n = std::min(group, W.cols() - c0);
      const float hi = max_val(r, g), lo = min_val ? (*min_val)(r, g) : -hi;
      for (Eigen::Index c = c0; c < c0 + n; ++c) W(r, c) = std::min(std::max(W(r, c), lo), hi);
    }
}

// Every `step`-th whole sequence of length L, at least one and at most ceil(max_tokens / L) of them (all when
// max_tokens <= 0 or the input is no longer).
inline MatrixRM sample_sequences(const MatrixRM& X, int L, int max_tokens) {
  if (L <= 0 || X.rows() % L != 0) fail("AWQ: ", X.rows(), " tokens are not whole sequences of ", L);
  const Eigen::Index n_seq = X.rows() / L;
  const Eigen::Index want = max_tokens <= 0 ? n_seq : std::max<Eigen::Index>(1, (max_tokens + L - 1) / L);
  if (want >= n_seq) return X;
  const Eigen::Index step = n_seq / want;
  MatrixRM out(want * L, X.cols());
  for (Eigen::Index i = 0; i < want; ++i) out.middleRows(i * L, L) = X.middleRows(i * step * L, L);
  return out;
}

// Every `stride`-th token, at most `max_tokens` of them (the reference keeps rows 0, s, 2s, ... with
// s = max(1, n / max_tokens)).
inline MatrixRM sample_tokens(const MatrixRM& X, int max_tokens) {
  const Eigen::Index step = std::max<Eigen::Index>(1, X.rows() / max_tokens);
  const Eigen::Index n = (X.rows() + step - 1) / step;
  MatrixRM out(n, X.cols());
  for (Eigen::Index i = 0; i < n; ++i) out.row(i) = X.row(i * step);
  return out;
}

}  // namespace lowbit
