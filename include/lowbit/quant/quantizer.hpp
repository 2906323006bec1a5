// lowbit/quant/quantizer.hpp -- Quantizer<Bits, Granularity, Symmetry> and the operations on row-major
// [rows, cols] float data: compute_params, quantize, dequantize, fake_quant.
//
// Conventions (see grid.hpp for the formulas):
//   * data are row-major; for a weight, rows are output channels and groups run along the input dimension;
//   * QuantParams holds scale and zero as [rows, ngroups] matrices ([1, 1] for PerTensor);
//   * codes are unsigned, 0 .. 2^b - 1, one byte each (pack/bitpack.hpp packs them);
//   * real value = (code - zero) * scale   (Grid::ggml asymmetric: code * scale + zero).
//
// A group size that does not divide the row length is an error unless the quantizer opts in with
// `allow_ragged = true`: then the last group of each row is shorter (e.g. the 172-wide FFN input of
// stories260K at g32 = five groups of 32 and one of 12), exactly as the references do when called on
// the column slices [0, 160) and [160, 172) separately.
//
// Clip ratios (OmniQuant LWC, AWQ-initialised LWC) scale the group's range before the parameters are
// computed -- xmax' = up * xmax, xmin' = low * xmin -- and the codes are then clamped to the grid;
// AWQ's clip search instead clamps the weights themselves (a weight transform, not a quantizer option).
//
// Non-finite input (NaN, +-Inf) throws lowbit::error naming the tensor, row and column.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/matrix.hpp"
#include "../core/parallel.hpp"
#include "../simd/quantize_row.hpp"
#include "grid.hpp"
#include "policy.hpp"

namespace lowbit {

template <class B, class Gran, class Sym>
struct Quantizer {
  static_assert(is_bits<B>::value, "Quantizer<B, Gran, Sym>: B must be Bits<N>");
  static_assert(is_granularity<Gran>::value, "Quantizer<B, Gran, Sym>: Gran must be PerTensor, PerChannel, PerToken or PerGroup<G>");
  static_assert(is_symmetry<Sym>::value, "Quantizer<B, Gran, Sym>: Sym must be Symmetric or Asymmetric");

  using bits_type = B;
  using granularity = Gran;
  using symmetry = Sym;
  static constexpr int bits = B::value;
  static constexpr int qmax = (1 << B::value) - 1;
  static constexpr bool symmetric = std::is_same_v<Sym, Symmetric>;
  static constexpr int static_group = Gran::group;

  int group_size = static_group > 0 ? static_group : 0;  // elements per group (PerGroup only)
  Grid grid = Grid::minmax;
  bool allow_ragged = false;  // allow a shorter last group when group_size does not divide the row

  // The per-group work every algorithm shares (grid.hpp has the formulas).
  // Parameters of a group from its range; signed_max (the value of largest magnitude) matters to Grid::ggml
  // symmetric only.  -0 is normalised to +0 so every caller fits the same parameters.
  GroupParams fit_range(float xmin, float xmax, float signed_max) const {
    return group_params(grid, bits, symmetric, xmin + 0.0f, xmax + 0.0f, signed_max + 0.0f);
  }
  // Parameters of the n values at x (their min, max and signed max).
  GroupParams fit(const float* x, std::int64_t n) const {
    float mn = x[0], mx = x[0], amax = std::fabs(x[0]), smax = x[0];
    for (std::int64_t i = 1; i < n; ++i) {
      mn = std::min(mn, x[i]), mx = std::max(mx, x[i]);
      if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), smax = x[i];
    }
    return fit_range(mn, mx, smax);
  }
  float quantize_value(float x, GroupParams p) const { return lowbit::quantize_value(grid, bits, symmetric, x, p); }
  float dequantize_value(float code, GroupParams p) const { return lowbit::dequantize_value(grid, symmetric, code, p); }
  float fake_quant_value(float x, GroupParams p) const { return dequantize_value(quantize_value(x, p), p); }

  Quantizer() = default;
  explicit Quantizer(Grid g) : grid(g) {}
  explicit Quantizer(int group, Grid g = Grid::minmax, bool ragged = false)
      : group_size(group), grid(g), allow_ragged(ragged) {
    if (static_group > 0 && group != static_group)
      fail("Quantizer: group size ", group, " given to a PerGroup<", static_group, "> quantizer");
  }
};

// Compile-time facts of a quantizer type (Eigen's traits<> pattern).
template <class Q>
struct quant_traits {
  static constexpr int bits = Q::bits;
  static constexpr int qmax = Q::qmax;
  static constexpr bool symmetric = Q::symmetric;
  static constexpr bool has_zero_point = !Q::symmetric;
  static constexpr int group = Q::static_group;
};

struct QuantParams {
  MatrixRM scale;  // [rows, ngroups], [1, 1] per tensor
  MatrixRM zero;   // same shape
  std::int64_t group = 0;  // columns per group (the last one may be shorter); cols for per-row/per-tensor
  bool per_tensor = false;

  GroupParams at(std::int64_t row, std::int64_t g) const {
    return per_tensor ? GroupParams{scale(0, 0), zero(0, 0)} : GroupParams{scale(row, g), zero(row, g)};
  }
};

// Optional range ratios per (row, group): OmniQuant's sigmoid(gamma), sigmoid(beta).
struct ClipRatios {
  const MatrixRM* up = nullptr;   // multiplies the group max
  const MatrixRM* low = nullptr;  // multiplies the group min
};

struct GroupLayout {
  std::int64_t rows = 0, cols = 0;
  std::int64_t group = 0;    // columns per group
  std::int64_t ngroups = 0;  // per row
  bool per_tensor = false;
  std::int64_t width(std::int64_t g) const { return std::min(group, cols - g * group); }
};

template <class Q>
GroupLayout group_layout(const Q& q, std::int64_t rows, std::int64_t cols, std::string_view name = "input") {
  GroupLayout L;
  L.rows = rows;
  L.cols = cols;
  if (rows <= 0 || cols <= 0) fail(name, ": cannot quantize an empty ", rows, "x", cols, " tensor");
  if constexpr (Q::static_group == tensor_group) {
    L.per_tensor = true;
    L.group = cols;
  } else if constexpr (Q::static_group == row_group) {
    L.group = cols;
  } else {
    if (q.group_size <= 0) fail(name, ": group size ", q.group_size, " must be positive");
    if (cols % q.group_size != 0 && !q.allow_ragged)
      fail(name, ": group size ", q.group_size, " does not divide the row length ", cols,
           " (opt in to a shorter last group: the spec suffix '-ragged' as in w4a16g", q.group_size,
           "-ragged, --ragged on the command line, allow_ragged in code)");
    L.group = q.group_size;
  }
  L.ngroups = (cols + L.group - 1) / L.group;
  return L;
}

namespace detail {

[[noreturn]] inline void report_nonfinite(const float* row, std::int64_t n, std::int64_t r, std::int64_t col0,
                                          std::string_view name) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(row[i])) fail(name, ": non-finite value ", row[i], " at row ", r, ", column ", col0 + i);
  fail(name, ": non-finite value at row ", r);
}

// The value of largest magnitude (the first one on a tie), as llama.cpp's Q4_0 reference takes it.
inline float signed_absmax(const float* x, std::int64_t n) {
  float amax = 0.0f, m = 0.0f;
  for (std::int64_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), m = x[i];
  return m;
}

template <class Q>
GroupParams checked_params(const Q& q, float mn, float mx, float smax, std::int64_t r, std::int64_t g,
                           std::string_view name) {
  const GroupParams p = q.fit_range(mn, mx, smax);
  if (!std::isfinite(p.scale) || !std::isfinite(p.zero) || (p.scale == 0.0f && q.grid != Grid::ggml))
    fail(name, ": row ", r, " group ", g, ": range [", mn, ", ", mx, "] gives scale ", p.scale, " and zero ",
         p.zero, " on the ", to_string(q.grid), " grid (not representable in float32)");
  return p;
}

// Range of one group, with the clip ratios applied.
template <class Q>
GroupParams group_params_of(const Q& q, const float* x, std::int64_t n, const ClipRatios& clip, std::int64_t r,
                            std::int64_t g, std::int64_t col0, std::string_view name) {
  float mn, mx;
  if (!simd::minmax_row(x, n, mn, mx)) report_nonfinite(x, n, r, col0, name);
  float smax = q.grid == Grid::ggml ? signed_absmax(x, n) : 0.0f;
  if (clip.up) mx *= (*clip.up)(r, g), smax *= smax > 0 ? (*clip.up)(r, g) : 1.0f;
  if (clip.low) mn *= (*clip.low)(r, g), smax *= smax < 0 ? (*clip.low)(r, g) : 1.0f;
  return checked_params(q, mn, mx, smax, r, g, name);
}

template <class Q>
void check_clip(const ClipRatios& clip, const GroupLayout& L, std::string_view name) {
  const std::int64_t rows = L.per_tensor ? 1 : L.rows, cols = L.per_tensor ? 1 : L.ngroups;
  for (const MatrixRM* m : {clip.up, clip.low})
    if (m && (m->rows() != rows || m->cols() != cols))
      fail(name, ": clip ratios are ", m->rows(), "x", m->cols(), ", expected ", rows, "x", cols);
}

template <class Q>
void fake_quant_group(const Q& q, const float* x, float* y, std::int64_t n, GroupParams p) {
  if (q.grid == Grid::ggml) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = q.fake_quant_value(x[i], p);
  } else {
    simd::fake_quant_row(x, y, n, p.scale, p.zero, static_cast<float>(Q::qmax));
  }
}

}  // namespace detail

// Scale and zero point of every group (min-max, optionally with clip ratios).
template <class Q>
QuantParams compute_params(const Q& q, ConstMatrixRef x, const ClipRatios& clip = {}, std::string_view name = "input") {
  const GroupLayout L = group_layout(q, x.rows(), x.cols(), name);
  detail::check_clip<Q>(clip, L, name);
  QuantParams P;
  P.group = L.group;
  P.per_tensor = L.per_tensor;
  if (L.per_tensor) {
    Eigen::VectorXf mn(L.rows), mx(L.rows), sm(L.rows);
    parallel_for(L.rows, [&](std::int64_t r) {
      if (!simd::minmax_row(x.row(r).data(), L.cols, mn[r], mx[r]))
        detail::report_nonfinite(x.row(r).data(), L.cols, r, 0, name);
      sm[r] = q.grid == Grid::ggml ? detail::signed_absmax(x.row(r).data(), L.cols) : 0.0f;
    }, L.cols);
    float lo = mn[0], hi = mx[0], smax = sm[0];
    for (std::int64_t r = 1; r < L.rows; ++r) {
      lo = std::min(lo, mn[r]);
      hi = std::max(hi, mx[r]);
      if (std::fabs(sm[r]) > std::fabs(smax)) smax = sm[r];
    }
    if (clip.up) hi *= (*clip.up)(0, 0), smax *= smax > 0 ? (*clip.up)(0, 0) : 1.0f;
    if (clip.low) lo *= (*clip.low)(0, 0), smax *= smax < 0 ? (*clip.low)(0, 0) : 1.0f;
    const GroupParams p = detail::checked_params(q, lo, hi, smax, 0, 0, name);
    P.scale = MatrixRM::Constant(1, 1, p.scale);
    P.zero = MatrixRM::Constant(1, 1, p.zero);
    return P;
  }
  P.scale.resize(L.rows, L.ngroups);
  P.zero.resize(L.rows, L.ngroups);
  parallel_for(L.rows, [&](std::int64_t r) {
    const float* row = x.row(r).data();
    for (std::int64_t g = 0; g < L.ngroups; ++g) {
      const GroupParams p = detail::group_params_of(q, row + g * L.group, L.width(g), clip, r, g, g * L.group, name);
      P.scale(r, g) = p.scale;
      P.zero(r, g) = p.zero;
    }
  }, L.cols);
  return P;
}

namespace detail {
template <class Q>
void check_params(const QuantParams& P, const GroupLayout& L, std::string_view name) {
  const std::int64_t rows = L.per_tensor ? 1 : L.rows, cols = L.per_tensor ? 1 : L.ngroups;
  if (P.per_tensor != L.per_tensor || P.group != L.group || P.scale.rows() != rows || P.scale.cols() != cols ||
      P.zero.rows() != rows || P.zero.cols() != cols)
    fail(name, ": quantization parameters (", P.scale.rows(), "x", P.scale.cols(), ", group ", P.group,
         ") do not match the tensor (", rows, "x", cols, " groups of ", L.group, ")");
}
}  // namespace detail

// Integer codes of x under the given parameters.
template <class Q>
void quantize(const Q& q, ConstMatrixRef x, const QuantParams& P, CodesRM& codes, std::string_view name = "input") {
  const GroupLayout L = group_layout(q, x.rows(), x.cols(), name);
  detail::check_params<Q>(P, L, name);
  codes.resize(L.rows, L.cols);
  parallel_for(L.rows, [&](std::int64_t r) {
    const float* row = x.row(r).data();
    std::uint8_t* out = codes.row(r).data();
    for (std::int64_t g = 0; g < L.ngroups; ++g) {
      const std::int64_t c0 = g * L.group, n = L.width(g);
      float mn, mx;
      if (!simd::minmax_row(row + c0, n, mn, mx)) detail::report_nonfinite(row + c0, n, r, c0, name);
      const GroupParams p = P.at(r, g);
      if (q.grid == Grid::ggml) {
        for (std::int64_t i = 0; i < n; ++i)
          out[c0 + i] = static_cast<std::uint8_t>(q.quantize_value(row[c0 + i], p));
      } else {
        simd::quantize_row(row + c0, out + c0, n, p.scale, p.zero, static_cast<float>(Q::qmax));
      }
    }
  }, L.cols);
}

// Real values of codes under the given parameters.
template <class Q>
void dequantize(const Q& q, const CodesRM& codes, const QuantParams& P, MatrixRef out, std::string_view name = "codes") {
  const GroupLayout L = group_layout(q, codes.rows(), codes.cols(), name);
  detail::check_params<Q>(P, L, name);
  if (out.rows() != L.rows || out.cols() != L.cols)
    fail(name, ": output is ", out.rows(), "x", out.cols(), ", expected ", L.rows, "x", L.cols);
  parallel_for(L.rows, [&](std::int64_t r) {
    const std::uint8_t* row = codes.row(r).data();
    float* y = out.row(r).data();
    for (std::int64_t c = 0; c < L.cols; ++c)
      if (row[c] > Q::qmax) fail(name, ": code ", int(row[c]), " at row ", r, ", column ", c, " exceeds ", Q::qmax);
    for (std::int64_t g = 0; g < L.ngroups; ++g) {
      const std::int64_t c0 = g * L.group, n = L.width(g);
      const GroupParams p = P.at(r, g);
      if (q.grid == Grid::ggml && !Q::symmetric) {
        for (std::int64_t i = 0; i < n; ++i) y[c0 + i] = q.dequantize_value(row[c0 + i], p);
      } else {
        simd::dequantize_row(row + c0, y + c0, n, p.scale, p.zero);
      }
    }
  }, L.cols);
}

// Quantize-dequantize under given parameters (out may alias x).
template <class Q>
void fake_quant(const Q& q, ConstMatrixRef x, const QuantParams& P, MatrixRef out, std::string_view name = "input") {
  const GroupLayout L = group_layout(q, x.rows(), x.cols(), name);
  detail::check_params<Q>(P, L, name);
  if (out.rows() != L.rows || out.cols() != L.cols)
    fail(name, ": output is ", out.rows(), "x", out.cols(), ", expected ", L.rows, "x", L.cols);
  parallel_for(L.rows, [&](std::int64_t r) {
    const float* row = x.row(r).data();
    for (std::int64_t g = 0; g < L.ngroups; ++g) {
      const std::int64_t c0 = g * L.group, n = L.width(g);
      float mn, mx;
      if (!simd::minmax_row(row + c0, n, mn, mx)) detail::report_nonfinite(row + c0, n, r, c0, name);
      detail::fake_quant_group(q, row + c0, out.row(r).data() + c0, n, P.at(r, g));
    }
  }, L.cols);
}

// Min-max parameters and fake quantization in one pass over each group while it is in cache; returns the
// parameters.  out may alias x (in-place).
template <class Q>
QuantParams fake_quant(const Q& q, ConstMatrixRef x, MatrixRef out, const ClipRatios& clip = {},
                       std::string_view name = "input") {
  const GroupLayout L = group_layout(q, x.rows(), x.cols(), name);
  if (out.rows() != L.rows || out.cols() != L.cols)
    fail(name, ": output is ", out.rows(), "x", out.cols(), ", expected ", L.rows, "x", L.cols);
  if (L.per_tensor) {  // needs the global range first
    QuantParams P = compute_params(q, x, clip, name);
    fake_quant(q, x, P, out, name);
    return P;
  }
  detail::check_clip<Q>(clip, L, name);
  QuantParams P;
  P.group = L.group;
  P.scale.resize(L.rows, L.ngroups);
  P.zero.resize(L.rows, L.ngroups);
  parallel_for(L.rows, [&](std::int64_t r) {
    const float* row = x.row(r).data();
    float* y = out.row(r).data();
    for (std::int64_t g = 0; g < L.ngroups; ++g) {
      const std::int64_t c0 = g * L.group, n = L.width(g);
      const GroupParams p = detail::group_params_of(q, row + c0, n, clip, r, g, c0, name);
      P.scale(r, g) = p.scale;
      P.zero(r, g) = p.zero;
      detail::fake_quant_group(q, row + c0, y + c0, n, p);
    }
  }, L.cols);
  return P;
}

// Groups whose values the grid cannot hold: the group's [min, max] reaches more than half a step beyond the
// grid's [dequantize(0), dequantize(qmax)].  This happens on the minmax grid (AWQ's reference) to a group whose
// values all have one sign -- z = clamp(-round(min/s), 0, qmax) clamps, so the group loses its offset: a
// constant positive group (always so for a 1-wide ragged tail) becomes 1e-5, a group of {0.5, 0.6} becomes
// {0, 0.1}.  lowbit keeps the reference's behaviour by default (parity) and reports these groups; the gptq and
// omniquant grids include zero in every range and never produce one.  Counted on the weights as given.
template <class Q>
std::int64_t degenerate_groups(const Q& q, ConstMatrixRef x) {
  if (q.grid != Grid::minmax || Q::symmetric) return 0;  // the only grid whose range can miss the group's
  const GroupLayout L = group_layout(q, x.rows(), x.cols());
  if (L.per_tensor) return 0;  // one range over the whole tensor: it holds every value
  std::vector<std::int64_t> per_row(static_cast<std::size_t>(L.rows), 0);
  parallel_for(L.rows, [&](std::int64_t r) {
    const float* row = x.row(r).data();
    for (std::int64_t g = 0; g < L.ngroups; ++g) {
      float mn, mx;
      if (!simd::minmax_row(row + g * L.group, L.width(g), mn, mx)) continue;  // non-finite: reported elsewhere
      const GroupParams p = q.fit_range(mn, mx, 0.0f);
      const float lo = q.dequantize_value(0.0f, p), hi = q.dequantize_value(float(Q::qmax), p);
      const float tol = 0.5f * p.scale * (1.0f + 1e-3f);
      if (mn < std::min(lo, hi) - tol || mx > std::max(lo, hi) + tol) ++per_row[std::size_t(r)];
    }
  }, L.cols);
  std::int64_t n = 0;
  for (std::int64_t c : per_row) n += c;
  return n;
}

// Bits per weight of the stored form: codes plus one fp16 scale (and an fp16/int zero point when
// asymmetric) per group, the way the packed formats store them.
template <class Q>
double bits_per_weight(const Q& q, std::int64_t rows, std::int64_t cols) {
  const GroupLayout L = group_layout(q, rows, cols);
  const double groups = L.per_tensor ? 1.0 : double(L.rows) * double(L.ngroups);
  const double meta = groups * (16.0 + (Q::symmetric ? 0.0 : 16.0));
  return Q::bits + meta / (double(rows) * double(cols));
}

}  // namespace lowbit
