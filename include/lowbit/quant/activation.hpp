// lowbit/quant/activation.hpp -- activation quantizers: what weight-activation (W8A8, W6A6, W4A4) runs do to
// the input of every linear, and to Q, K and V inside attention.
//
// Activations are quantized per row group of a row-major [tokens, features] matrix, on the same integer grids
// as weights (grid.hpp), with the same per-group kernels (simd/quantize_row.hpp):
//
//   per-token, dynamic   each token's row is one group; (s, z) fitted at run time from the row's min and max.
//                        SmoothQuant `quantize_activation_per_token_absmax` = minmax grid, symmetric
//                        (s = max|x| / (2^(b-1)-1), codes +-(2^(b-1)-1)); LLMC / OmniQuant per_token = the
//                        asymmetric minmax / omniquant grid (ALGORITHMS.md 1.3).
//   per-head, dynamic    groups of head_dim inside each row: OmniQuant's and LLMC's Q/K/V quantizers, which see
//                        [batch, heads, tokens, head_dim] tensors per token (so per (token, head)).
//   per-tensor, dynamic  one (s, z) for the whole tensor, fitted at run time (SmoothQuant's per-tensor absmax).
//   per-tensor, static   one (s, z) for the whole tensor, from a range calibrated once (ActObserver) -- PaddleSlim's
//                        `ptq_step` observers -- and fixed at inference.
//
//   x' = (clamp(rint(x / s) + z, 0, 2^b - 1) - z) * s
//
// Observers of a static range run over calibration "steps" (one window each, PaddleSlim's batches):
//   minmax       the min and max over all steps (PaddleSlim AbsmaxObserver when symmetric)
//   ema          lo_t = b lo_{t-1} + (1-b) min_t, hi likewise, b = 0.9, bias-corrected by 1/(1-b^t) (the
//                EMA of PaddleSlim's EMASampler, applied to the per-step range)
//   percentile   each step's p-th percentile of the values (of |x| when symmetric; p = 99.99 by default, so the
//                outliers past it are clipped), averaged over the steps (memory stays one step's values)
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/matrix.hpp"
#include "../core/parallel.hpp"
#include "../simd/quantize_row.hpp"
#include "grid.hpp"

namespace lowbit {

enum class ActGranularity { per_token, per_tensor };
enum class ActObserver { minmax, ema, percentile };

inline const char* to_string(ActGranularity g) { return g == ActGranularity::per_token ? "per_token" : "per_tensor"; }
inline const char* to_string(ActObserver o) {
  return o == ActObserver::minmax ? "minmax" : o == ActObserver::ema ? "ema" : "percentile";
}
inline ActGranularity parse_act_granularity(std::string_view s) {
  if (s == "per_token" || s == "per-token" || s == "token") return ActGranularity::per_token;
  if (s == "per_tensor" || s == "per-tensor" || s == "tensor") return ActGranularity::per_tensor;
  fail("unknown activation granularity '", std::string(s), "' (per_token or per_tensor)");
}
inline ActObserver parse_act_observer(std::string_view s) {
  if (s == "minmax" || s == "abs_max") return ActObserver::minmax;
  if (s == "ema") return ActObserver::ema;
  if (s == "percentile") return ActObserver::percentile;
  fail("unknown activation observer '", std::string(s), "' (minmax, ema or percentile)");
}

// How one kind of activation is fake-quantized.  bits 16 = not quantized.
struct ActQuant {
  int bits = 16;
  ActGranularity granularity = ActGranularity::per_token;
  bool symmetric = false;
  Grid grid = Grid::minmax;
  bool static_range = false;  // per-tensor only: a calibrated range (ActRange) instead of the tensor's own

  bool on() const { return bits < 16; }
  void validate(std::string_view what) const {
    if (!on()) return;
    if (static_range && granularity != ActGranularity::per_tensor)
      fail(what, ": a static (calibrated) range is per tensor; per-token ranges are dynamic");
    if (bits < 2 || bits > 8) fail(what, ": activation bits ", bits, " are not supported (2..8, or 16 = not quantized)");
    if (grid == Grid::ggml) fail(what, ": the ggml grid is a weight block format, not an activation quantizer");
  }
};

// A static per-tensor range (lo <= 0 <= hi is not required).
struct ActRange {
  float lo = 0.0f, hi = 0.0f;
  bool set = false;
};

inline GroupParams act_params(const ActQuant& a, float lo, float hi) {
  return group_params(a.grid, a.bits, a.symmetric, lo + 0.0f, hi + 0.0f, 0.0f);
}

namespace detail {
[[noreturn]] inline void act_nonfinite(const float* row, std::int64_t n, std::int64_t r, std::int64_t c0,
                                       std::string_view what) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(row[i])) fail(what, ": non-finite activation ", row[i], " at token ", r, ", feature ", c0 + i);
  fail(what, ": non-finite activation at token ", r);
}
}  // namespace detail

// Dynamic fake quantization in place: every row of x is split into groups of `width` columns (width = x.cols():
// per token; head_dim: per head), each with its own min-max parameters.  The same bits for any thread count.
inline void fake_quant_dynamic(const ActQuant& a, MatrixRef x, Eigen::Index width, std::string_view what) {
  if (!a.on()) return;
  if (width <= 0 || x.cols() % width != 0) fail(what, ": group width ", width, " does not divide ", x.cols(), " features");
  const float qmax = float(qmax_of(a.bits));
  const Eigen::Index groups = x.cols() / width;
  parallel_for(x.rows(), [&](std::int64_t r) {
    float* row = x.row(r).data();
    for (Eigen::Index g = 0; g < groups; ++g) {
      float* p = row + g * width;
      float mn, mx;
      if (!simd::minmax_row(p, width, mn, mx)) detail::act_nonfinite(p, width, r, g * width, what);
      const GroupParams q = act_params(a, mn, mx);
      simd::fake_quant_row(p, p, width, q.scale, q.zero, qmax);
    }
  }, x.cols() * 4);
}

// Dynamic per-tensor fake quantization in place: one (s, z) from the whole tensor's min and max.
inline void fake_quant_tensor(const ActQuant& a, MatrixRef x, std::string_view what) {
  if (!a.on() || x.size() == 0) return;
  std::vector<float> lo(std::size_t(x.rows())), hi(std::size_t(x.rows()));
  parallel_for(x.rows(), [&](std::int64_t r) {
    if (!simd::minmax_row(x.row(r).data(), x.cols(), lo[std::size_t(r)], hi[std::size_t(r)]))
      detail::act_nonfinite(x.row(r).data(), x.cols(), r, 0, what);
  }, x.cols());
  ActRange range{*std::min_element(lo.begin(), lo.end()), *std::max_element(hi.begin(), hi.end()), true};
  const GroupParams q = act_params(a, range.lo, range.hi);
  const float qmax = float(qmax_of(a.bits));
  parallel_for(x.rows(), [&](std::int64_t r) {
    simd::fake_quant_row(x.row(r).data(), x.row(r).data(), x.cols(), q.scale, q.zero, qmax);
  }, x.cols() * 2);
}

// Static per-tensor fake quantization in place with a calibrated range.
inline void fake_quant_static(const ActQuant& a, const ActRange& range, MatrixRef x, std::string_view what) {
  if (!a.on()) return;
  if (!range.set) fail(what, ": the static activation range was not calibrated");
  const GroupParams q = act_params(a, range.lo, range.hi);
  const float qmax = float(qmax_of(a.bits));
  parallel_for(x.rows(), [&](std::int64_t r) {
    float* row = x.row(r).data();
    float mn, mx;
    if (!simd::minmax_row(row, x.cols(), mn, mx)) detail::act_nonfinite(row, x.cols(), r, 0, what);
    simd::fake_quant_row(row, row, x.cols(), q.scale, q.zero, qmax);
  }, x.cols() * 3);
}

// Real per-token quantization: int codes (unsigned, 0 .. 2^b-1) and each row's (scale, zero) -- what an int8
// GEMM consumes.  codes [rows, cols]; scale, zero [rows].
inline void quantize_per_token(const ActQuant& a, ConstMatrixRef x, CodesRM& codes, Eigen::VectorXf& scale,
                               Eigen::VectorXf& zero, std::string_view what) {
  a.validate(what);
  if (!a.on()) fail(what, ": quantize_per_token needs activation bits 2..8");
  codes.resize(x.rows(), x.cols());
  scale.resize(x.rows());
  zero.resize(x.rows());
  const float qmax = float(qmax_of(a.bits));
  parallel_for(x.rows(), [&](std::int64_t r) {
    const float* row = x.row(r).data();
    float mn, mx;
    if (!simd::minmax_row(row, x.cols(), mn, mx)) detail::act_nonfinite(row, x.cols(), r, 0, what);
    const GroupParams q = act_params(a, mn, mx);
    scale[r] = q.scale;
    zero[r] = q.zero;
    simd::quantize_row(row, codes.row(r).data(), x.cols(), q.scale, q.zero, qmax);
  }, x.cols() * 4);
}

// Collects a static range over calibration steps (each step: a [tokens, features] matrix).
class ActRangeObserver {
 public:
  ActRangeObserver(ActObserver kind, bool symmetric, double percentile = 99.99)
      : kind_(kind), symmetric_(symmetric), percentile_(percentile) {
    if (!(percentile > 0.0 && percentile <= 100.0)) fail("activation percentile ", percentile, " is not in (0, 100]");
  }
  void observe(ConstMatrixRef x, std::string_view what) {
    if (x.size() == 0) return;
    float lo = 0.0f, hi = 0.0f;
    bool first = true;
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      float mn, mx;
      if (!simd::minmax_row(x.row(r).data(), x.cols(), mn, mx)) detail::act_nonfinite(x.row(r).data(), x.cols(), r, 0, what);
      lo = first ? mn : std::min(lo, mn);
      hi = first ? mx : std::max(hi, mx);
      first = false;
    }
    if (symmetric_) hi = std::max(std::fabs(lo), std::fabs(hi)), lo = -hi;
    ++steps_;
    switch (kind_) {
      case ActObserver::minmax:
        lo_ = steps_ == 1 ? lo : std::min(float(lo_), lo);
        hi_ = steps_ == 1 ? hi : std::max(float(hi_), hi);
        break;
      case ActObserver::ema:
        lo_ = kBeta * lo_ + (1.0 - kBeta) * lo;
        hi_ = kBeta * hi_ + (1.0 - kBeta) * hi;
        break;
      case ActObserver::percentile: {  // this step's percentiles, averaged over the steps (memory: one step)
        std::vector<float> v;
        v.reserve(std::size_t(x.size()));
        for (Eigen::Index r = 0; r < x.rows(); ++r)
          for (Eigen::Index c = 0; c < x.cols(); ++c) v.push_back(symmetric_ ? std::fabs(x(r, c)) : x(r, c));
        const float phi = nearest_rank(v, percentile_);
        const float plo = symmetric_ ? -phi : nearest_rank(v, 100.0 - percentile_);
        lo_ += (plo - lo_) / steps_;
        hi_ += (phi - hi_) / steps_;
        break;
      }
    }
  }
  ActRange range() const {
    if (steps_ == 0) fail("activation observer: no calibration data was observed");
    ActRange r;
    r.set = true;
    if (kind_ == ActObserver::ema) {
      const double corr = 1.0 - std::pow(kBeta, double(steps_));
      r.lo = float(lo_ / corr), r.hi = float(hi_ / corr);
    } else {
      r.lo = float(lo_), r.hi = float(hi_);
    }
    return r;
  }

 private:
  static constexpr double kBeta = 0.9;
  ActObserver kind_;
  bool symmetric_;
  double percentile_;
  int steps_ = 0;
  double lo_ = 0.0, hi_ = 0.0;

  // The nearest-rank p-th percentile of v (reorders v).
  static float nearest_rank(std::vector<float>& v, double p) {
    const double k = std::ceil(p / 100.0 * double(v.size())) - 1.0;
    const std::size_t i = std::size_t(std::clamp(k, 0.0, double(v.size() - 1)));
    std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(i), v.end());
    return v[i];
  }
};

}  // namespace lowbit
