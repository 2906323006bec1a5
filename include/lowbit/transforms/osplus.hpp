// lowbit/transforms/osplus.hpp -- Outlier Suppression+'s scale search (arXiv 2304.09145; LLMC
// llmc/compression/quantization/osplus.py search_scale_shift_subset; ALGORITHMS.md 4.2).
//
// On the shifted group input x' with per-channel max cmx and min cmn, a symmetric threshold t runs from
// bound = max(-min(min x', 0), max(max x', 0)) down to 1.0 in steps of (bound - 1) / num, num = max(100,
// int(max(max x', 0) / 0.5)); each t gives
//     s_j = max( cmx_j > t ? cmx_j / t : 1,  cmn_j < -t ? cmn_j / -t : 1 )
// (channels whose range passes t are squeezed into [-t, t]).  The candidate's loss is the module's output error
// with the group's linears as quantize(W diag(s)) and the module input quantize(x' / s):  mean over tokens of
// sum over outputs of (y_fp - y)^2; the first t with the lowest loss wins (strict <, from the largest t).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../core/matrix.hpp"

namespace lowbit {

// The thresholds in the reference's order.
inline std::vector<float> osplus_thresholds(ConstMatrixRef x) {
  const float amx = std::max(x.maxCoeff(), 0.0f), amn = std::min(x.minCoeff(), 0.0f);
  const int num = std::max(100, int(amx / 0.5f));
  const float lo = 1.0f, hi = std::max(-amn, amx);
  const float step = (hi - lo) / float(num);
  std::vector<float> t;
  for (float st = hi; st >= lo && t.size() <= std::size_t(num) + 1; st -= step) {
    t.push_back(st);
    if (step <= 0.0f) break;
  }
  return t;
}

inline Eigen::VectorXf osplus_scale(const Eigen::VectorXf& cmx, const Eigen::VectorXf& cmn, float t) {
  Eigen::VectorXf s(cmx.size());
  for (Eigen::Index j = 0; j < s.size(); ++j)
    s[j] = std::max(cmx[j] > t ? cmx[j] / t : 1.0f, cmn[j] < -t ? cmn[j] / -t : 1.0f);
  return s;
}

struct OsPlusResult {
  Eigen::VectorXf scale;
  float threshold = 0.0f;
  double loss = 0.0;
  int candidates = 0;
};

// x: the shifted group input sample; loss(s) scores a candidate scale (the module output error).
template <class Loss>
OsPlusResult osplus_search(ConstMatrixRef x, Loss&& loss) {
  const Eigen::VectorXf cmx = x.colwise().maxCoeff().transpose(), cmn = x.colwise().minCoeff().transpose();
  const std::vector<float> ts = osplus_thresholds(x);
  OsPlusResult best;
  best.loss = std::numeric_limits<double>::infinity();
  best.threshold = std::max(-std::min(x.minCoeff(), 0.0f), std::max(x.maxCoeff(), 0.0f));
  best.scale = osplus_scale(cmx, cmn, best.threshold);
  for (float t : ts) {
    const Eigen::VectorXf s = osplus_scale(cmx, cmn, t);
    const double l = loss(s);
    if (!std::isfinite(l)) fail("OS+: the loss of threshold ", t, " is not finite");
    if (l < best.loss) best.loss = l, best.threshold = t, best.scale = s;
  }
  best.candidates = int(ts.size());
  return best;
}

}  // namespace lowbit
