// lowbit/transforms/piecewise.hpp -- PaddleSlim's PieceWiseSearch smooth ("PSS"; paddleslim/quant/advanced/
// piecewise_search.py, ALGORITHMS.md 4.4): smoothing scales searched piece by piece.
//
//   1. the input channels are split into k pieces by their activation max |x| (1-D k-means);
//   2. pieces in ascending order of centroid: for each candidate c, the piece's channels get
//        s_j = max(1e-5, act_j^c / w_j^(1-c))      for c in 0.21, 0.22, ..., 0.79   (alpha_min + 0.01 steps
//                                                   below alpha_max)
//        s_j = c                                   for c in 1.0, 1.5, ..., 5.5      (scale_min, + 0.5 while the
//                                                   previous value was <= scale_max)
//      earlier pieces keep their chosen scales, later ones 1; the candidate's loss is smoothed_quant_loss (the
//      output error with quantized activations and weights); the lowest loss wins (ties: the later candidate);
//   3. with search_piece, steps 1-2 run for k = 1..k_piece and the k with the lowest final loss is kept.
// The candidate list is exactly the reference's loop (alpha += 0.01, rounded to 2 decimals, jumping to
// scale_min once it reaches alpha_max, then += 0.5 until it passes scale_max).
//
// Interpretation notes (where lowbit differs from PaddleSlim on purpose):
//   * k-means: the reference calls sklearn KMeans (k-means++ with 10 random restarts, a local optimum); lowbit
//     computes the optimal 1-D partition exactly (sorted values, dynamic programming with the divide-and-conquer
//     speed-up: the clusters of an optimal 1-D k-means are contiguous runs), deterministic and never worse.
//   * w_j is the max |W[:, j]| over all the group's linears (their weights stacked), floored at 1e-5; PaddleSlim
//     searches each linear of a group and keeps the last one's scales (update_weight overwrites
//     smooth_scale_dict[ln] per linear), and a zero column would give an infinite scale.
//   * search_piece restarts each k from unsmoothed channels (the reference keeps adding to smooth_scale_out
//     across k, which mixes the scales of different k).
//   * the loss quantizes with the run's own quantizers (weights: the chain's quantizer; activations: the run's
//     activation quantizer, or 8-bit per-tensor abs-max when activations are not quantized); PaddleNLP hard-codes
//     8 bits.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "smooth.hpp"

namespace lowbit {

struct PssOptions {
  int k_piece = 3;
  bool search_piece = false;
  float alpha_min = 0.2f, alpha_max = 0.8f, scale_min = 1.0f, scale_max = 5.0f;
  void validate() const {
    if (k_piece < 1 || k_piece > 64) fail("PSS: k_piece ", k_piece, " is not in 1..64");
    if (!(alpha_min >= 0.0f && alpha_min < alpha_max && alpha_max <= 1.0f))
      fail("PSS: alpha range [", alpha_min, ", ", alpha_max, "] is not inside [0, 1]");
    if (!(scale_min > 0.0f && scale_min <= scale_max && scale_max < 1e4f))
      fail("PSS: scale range [", scale_min, ", ", scale_max, "] is not a positive range");
  }
};

// The reference's candidate sequence (see the file header).
inline std::vector<float> pss_candidates(const PssOptions& o) {
  // the options as the two-decimal values the reference is configured with (0.8f is not 0.8)
  auto r2 = [](float v) { return std::round(double(v) * 100.0) / 100.0; };
  const double amax = r2(o.alpha_max), smin = r2(o.scale_min), smax = r2(o.scale_max);
  std::vector<float> c;
  double a = r2(o.alpha_min);
  while (a <= smax) {
    if (a < 1.0) {
      a = std::round((a + 0.01) * 100.0) / 100.0;
      if (a >= amax) a = smin;
    } else {
      a = std::round((a + 0.5) * 100.0) / 100.0;
    }
    c.push_back(float(a));
  }
  return c;
}

// Optimal 1-D k-means of v: labels (0..k'-1, in ascending order of centroid) with k' = min(k, distinct values).
inline std::vector<int> kmeans_1d(const Eigen::VectorXf& v, int k) {
  const Eigen::Index n = v.size();
  if (n == 0) return {};
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n), 0);
  std::iota(order.begin(), order.end(), Eigen::Index(0));
  std::stable_sort(order.begin(), order.end(), [&](Eigen::Index a, Eigen::Index b) { return v[a] < v[b]; });
  std::vector<double> x(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) x[std::size_t(i)] = v[order[std::size_t(i)]];
  int distinct = 1;
  for (std::size_t i = 1; i < x.size(); ++i) distinct += x[i] != x[i - 1];
  k = std::max(1, std::min(k, distinct));
  std::vector<double> p1(std::size_t(n) + 1, 0.0), p2(std::size_t(n) + 1, 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) p1[i + 1] = p1[i] + x[i], p2[i + 1] = p2[i] + x[i] * x[i];
  auto cost = [&](std::size_t i, std::size_t j) {  // SSE of x[i, j)
    const double s = p1[j] - p1[i], m = double(j - i);
    return std::max(0.0, p2[j] - p2[i] - s * s / m);
  };
  const double inf = std::numeric_limits<double>::infinity();
  // D[m][j]: best cost of x[0, j) in m+1 clusters; A[m][j]: start of the last cluster
  std::vector<std::vector<double>> D(std::size_t(k), std::vector<double>(std::size_t(n) + 1, inf));
  std::vector<std::vector<std::size_t>> A(std::size_t(k), std::vector<std::size_t>(std::size_t(n) + 1, 0));
  for (std::size_t j = 1; j <= std::size_t(n); ++j) D[0][j] = cost(0, j);
  for (std::size_t m = 1; m < std::size_t(k); ++m) {
    // divide and conquer: the optimal split point is monotone in j
    struct Frame { std::size_t lo, hi, olo, ohi; };
    std::vector<Frame> st = {{m + 1, std::size_t(n), m, std::size_t(n) - 1}};
    while (!st.empty()) {
      const Frame f = st.back();
      st.pop_back();
      if (f.lo > f.hi) continue;
      const std::size_t j = (f.lo + f.hi) / 2;
      double best = inf;
      std::size_t arg = f.olo;
      for (std::size_t i = f.olo; i <= std::min(f.ohi, j - 1); ++i) {
        const double c = D[m - 1][i] + cost(i, j);
        if (c < best) best = c, arg = i;
      }
      D[m][j] = best;
      A[m][j] = arg;
      if (j > f.lo) st.push_back({f.lo, j - 1, f.olo, arg});
      st.push_back({j + 1, f.hi, arg, f.ohi});
    }
  }
  std::vector<int> labels(static_cast<std::size_t>(n));
  std::size_t j = std::size_t(n);
  for (int m = k - 1; m >= 0; --m) {
    const std::size_t i = m > 0 ? A[std::size_t(m)][j] : 0;
    for (std::size_t t = i; t < j; ++t) labels[std::size_t(order[t])] = m;
    j = i;
  }
  return labels;
}

struct PssResult {
  Eigen::VectorXf scale;
  std::vector<float> chosen;  // the candidate chosen for each piece, ascending centroid
  int k = 0;
  double loss = 0.0;
};

// X [N, in] sampled group input, act [in] its max |x| over the calibration, W [out, in] the group's stacked
// linears; wq / aq fake-quantize a weight / an activation matrix in place.
template <class WQ, class AQ>
PssResult pss_search(ConstMatrixRef X, const Eigen::VectorXf& act, ConstMatrixRef W, WQ&& wq, AQ&& aq, const PssOptions& o) {
  o.validate();
  if (X.cols() != W.cols() || act.size() != W.cols()) fail("PSS: input ", X.cols(), ", statistics ", act.size(), ", weight ", W.cols(), " channels");
  MatrixRM Y;
  matmul_nt(X, W, Y);
  const Eigen::VectorXf wmax = W.cwiseAbs().colwise().maxCoeff().transpose().cwiseMax(1e-5f);
  const std::vector<float> cand = pss_candidates(o);
  PssResult best;
  best.loss = std::numeric_limits<double>::infinity();
  for (int k = o.search_piece ? 1 : o.k_piece; k <= o.k_piece; ++k) {
    const std::vector<int> labels = kmeans_1d(act, k);
    const int pieces = labels.empty() ? 0 : *std::max_element(labels.begin(), labels.end()) + 1;
    Eigen::VectorXf s = Eigen::VectorXf::Ones(act.size());
    std::vector<float> chosen;
    double loss = std::numeric_limits<double>::infinity();
    for (int p = 0; p < pieces; ++p) {
      double piece_best = std::numeric_limits<double>::infinity();
      Eigen::VectorXf piece_s = s;
      float piece_c = 0.0f;
      for (float c : cand) {
        Eigen::VectorXf t = s;
        for (Eigen::Index j = 0; j < t.size(); ++j)
          if (labels[std::size_t(j)] == p)
            t[j] = c < 1.0f ? std::max(1e-5f, std::pow(act[j], c) / std::pow(wmax[j], 1.0f - c)) : c;
        const double l = smoothed_quant_loss(X, W, Y, t, wq, aq);
        if (l <= piece_best) piece_best = l, piece_s = t, piece_c = c;
      }
      s = piece_s;
      chosen.push_back(piece_c);
      loss = piece_best;
    }
    if (loss < best.loss) best = {s, chosen, pieces, loss};
  }
  return best;
}

}  // namespace lowbit
