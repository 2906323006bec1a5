// lowbit/quant/grid.hpp -- the integer-grid conventions of the reference implementations.
//
// Every grid maps a group's range to a scale s and a zero point z, then
//     code = clamp(round_half_even(x / s) + z, 0, 2^b - 1)          codes are always unsigned
//     x'   = (code - z) * s                                         (Grid::ggml asymmetric: code * s + z)
// Division (not multiplication by 1/s) and round-half-to-even are what torch does, so the minmax,
// gptq and omniquant grids reproduce their references bit for bit.  Symmetric grids that the
// references write with signed integers in [-2^(b-1), 2^(b-1)-1] are the same grid with z = 2^(b-1).
//
// | Grid      | asymmetric                                         | symmetric                                   |
// |-----------|----------------------------------------------------|---------------------------------------------|
// | minmax    | AWQ / AutoAWQ / LLMC: s = max(max-min, 1e-5)/qmax, | AutoAWQ / LLMC: s = max(|x|max, 1e-5) /     |
// | (default) | z = clamp(-round(min/s), 0, qmax); range not       | (2^(b-1)-1), z = 2^(b-1): codes use         |
// |           | forced to include 0                                | +-(2^(b-1)-1), the lowest code is unused    |
// | gptq      | GPTQ / AutoGPTQ: range widened to include 0,       | s = 2*|x|max/qmax, z = 2^(b-1): all 2^b     |
// |           | s = (max-min)/qmax, z = round(-min/s) (unclamped); | codes, +|x|max lands on 2^(b-1)-0.5 and     |
// |           | an all-zero group uses [-1, 1] (lowbit: so does a  | clamps (GPTQ quant.py)                      |
// |           | range so small that s underflows to 0)             |                                             |
// | omniquant | OmniQuant: s = clamp((max-min)/qmax, 1e-5, 1e4),   | s = clamp(|x|max/(2^(b-1)-1), 1e-5, 1e4),   |
// |           | z = round(clamp(-min/s, -1e4, 1e4)) (unclamped)    | z = 2^(b-1)-1: codes reach +2^(b-1)         |
// | ggml      | llama.cpp Q4_1 family: d = (max-min)/qmax, m = min,| Q4_0 family: d = m/-2^(b-1) with m the      |
// |           | code = min(qmax, trunc((x-m)*(1/d) + 0.5)),        | signed value of largest |x| (first one),    |
// |           | x' = code*d + m                                    | code = min(qmax, trunc(x/d + 2^(b-1)+0.5))  |
//
// Why minmax is the default: it is the grid of AWQ, AutoAWQ and LLMC (the most used W4 pipelines), its
// asymmetric form spends all 2^b codes on the actual [min, max] of the group, and its 1e-5 floor makes
// constant and all-zero groups well defined without special cases.
//
// Grid::ggml is the one place that does not round half to even: it reproduces llama.cpp's reference
// quantizers, which truncate x*(1/d) + 0.5.  Its scales are kept in float32 here; GGUF export rounds
// them to fp16.  It has no SIMD fast path (the per-element formula differs); the GGUF export adds one.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "../core/error.hpp"

namespace lowbit {

enum class Grid { minmax, gptq, omniquant, ggml };

inline const char* to_string(Grid g) {
  switch (g) {
    case Grid::minmax: return "minmax";
    case Grid::gptq: return "gptq";
    case Grid::omniquant: return "omniquant";
    case Grid::ggml: return "ggml";
  }
  return "?";
}

inline Grid parse_grid(std::string_view s) {
  if (s == "minmax" || s == "awq" || s == "llmc") return Grid::minmax;
  if (s == "gptq") return Grid::gptq;
  if (s == "omniquant" || s == "omni") return Grid::omniquant;
  if (s == "ggml") return Grid::ggml;
  fail("unknown grid '", std::string(s), "' (expected minmax, gptq, omniquant or ggml)");
}

template <class T>
struct BasicGroupParams {
  T scale;
  T zero;  // an integer-valued zero point (Grid::ggml asymmetric: the float offset m)
};
using GroupParams = BasicGroupParams<float>;

constexpr int qmax_of(int bits) { return (1 << bits) - 1; }

// Parameters of one group from its range [xmin, xmax].  `signed_max` (the value of largest magnitude,
// first one on a tie) is read only by Grid::ggml symmetric -- and must be given: with 0 its scale would be -0
// and every value would quantize to zero.  Algorithms call Quantizer::fit / fit_range, which supply it.
// The formulas for any floating type T: float everywhere in lowbit, double in the autodiff's gradient checks
// (autodiff/quant_ops.hpp); the constants are the float ones, so T = float is the references' arithmetic.
template <class T>
BasicGroupParams<T> group_params_t(Grid grid, int bits, bool symmetric, T xmin, T xmax, T signed_max) {
  using std::fabs, std::max, std::min, std::nearbyint;
  const T qmax = static_cast<T>(qmax_of(bits));
  const T half = static_cast<T>(1 << (bits - 1));  // 2^(b-1)
  const T floor = static_cast<T>(1e-5f), ceil = static_cast<T>(1e4f), one = 1, zero = 0;
  switch (grid) {
    case Grid::minmax:
      if (symmetric) {
        const T amax = max(fabs(xmin), fabs(xmax));
        return {max(amax, floor) / (half - one), half};
      } else {
        const T s = max(xmax - xmin, floor) / qmax;
        return {s, std::clamp(-nearbyint(xmin / s), zero, qmax)};
      }
    case Grid::gptq: {
      T lo = min(xmin, zero), hi = max(xmax, zero);
      if (symmetric) {
        hi = max(fabs(lo), hi);
        if (lo < zero) lo = -hi;
      }
      if (lo == zero && hi == zero) lo = -one, hi = one;
      T s = (hi - lo) / qmax;
      if (s == zero) {  // a range below float resolution (denormals): treated as all zero, where the
        lo = -one;      // reference would divide by zero
        s = T(2) / qmax;
      }
      return {s, symmetric ? (qmax + one) / T(2) : nearbyint(-lo / s)};
    }
    case Grid::omniquant:
      if (symmetric) {
        const T amax = max(fabs(xmin), fabs(xmax));
        return {std::clamp(amax / (half - one), floor, ceil), half - one};
      } else {
        const T s = std::clamp((xmax - xmin) / qmax, floor, ceil);
        return {s, nearbyint(std::clamp(-xmin / s, -ceil, ceil))};
      }
    case Grid::ggml:
      if (symmetric) return {signed_max / -half, half};
      return {(xmax - xmin) / qmax, xmin};
  }
  return {one, zero};
}

inline GroupParams group_params(Grid grid, int bits, bool symmetric, float xmin, float xmax, float signed_max) {
  return group_params_t<float>(grid, bits, symmetric, xmin, xmax, signed_max);
}

// d scale / d xmin and d scale / d xmax of group_params_t (where the scale is not at a floor or ceiling; ties of
// |xmin| and |xmax| split the derivative, as torch's maximum does).  The zero point gets no derivative: it is
// rounded without a straight-through estimator in OmniQuant's quantizer (quantize/quantizer.py,
// round_zero_point), so gradients reach the range through the scale only.  Defined for the minmax and
// omniquant grids (the grids learnable clipping trains on).
template <class T>
std::array<T, 2> scale_derivative(Grid grid, int bits, bool symmetric, T xmin, T xmax) {
  using std::fabs;
  const T qmax = static_cast<T>(qmax_of(bits)), half = static_cast<T>(1 << (bits - 1));
  const T floor = static_cast<T>(1e-5f), ceil = static_cast<T>(1e4f), zero = 0;
  if (grid != Grid::minmax && grid != Grid::omniquant)
    fail("scale_derivative: the ", to_string(grid), " grid has no learnable range (minmax or omniquant)");
  if (symmetric) {
    const T a = fabs(xmin), b = fabs(xmax), amax = std::max(a, b), d = T(1) / (half - T(1));
    const bool live = grid == Grid::minmax ? amax > floor : amax / (half - T(1)) > floor && amax / (half - T(1)) < ceil;
    if (!live) return {zero, zero};
    const T wa = a > b ? T(1) : a < b ? zero : T(0.5), wb = T(1) - wa;
    return {wa * d * (xmin < zero ? T(-1) : T(1)), wb * d * (xmax < zero ? T(-1) : T(1))};
  }
  const T r = xmax - xmin;
  const bool live = grid == Grid::minmax ? r > floor : r / qmax > floor && r / qmax < ceil;
  if (!live) return {zero, zero};
  return {-T(1) / qmax, T(1) / qmax};
}

// One element, reference formula (the SIMD kernels in simd/quantize_row.hpp must agree bit for bit).
inline float quantize_value(Grid grid, int bits, bool symmetric, float x, GroupParams p) {
  const float qmax = static_cast<float>(qmax_of(bits));
  if (grid == Grid::ggml) {
    float id = p.scale != 0.0f ? 1.0f / p.scale : 0.0f;
    if (!std::isfinite(id)) id = 0.0f;  // a denormal d: llama.cpp stores d as fp16, where it is 0
    float t = symmetric ? x * id + (p.zero + 0.5f) : (x - p.zero) * id + 0.5f;
    if (!(t >= 0.0f)) t = 0.0f;  // only reachable through rounding at the grid's low end
    return std::min(qmax, static_cast<float>(static_cast<std::int32_t>(std::min(t, qmax + 1.0f))));
  }
  return std::clamp(std::nearbyint(x / p.scale) + p.zero, 0.0f, qmax);
}

inline float dequantize_value(Grid grid, bool symmetric, float code, GroupParams p) {
  if (grid == Grid::ggml && !symmetric) return code * p.scale + p.zero;
  return (code - p.zero) * p.scale;
}

}  // namespace lowbit
