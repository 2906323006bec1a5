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

struct GroupParams {
  float scale;
  float zero;  // an integer-valued zero point (Grid::ggml asymmetric: the float offset m)
};

constexpr int qmax_of(int bits) { return (1 << bits) - 1; }

// Parameters of one group from its range [xmin, xmax].  `signed_max` (the value of largest magnitude,
// first one on a tie) is read only by Grid::ggml symmetric -- and must be given: with 0 its scale would be -0
// and every value would quantize to zero.  Algorithms call Quantizer::fit / fit_range, which supply it.
inline GroupParams group_params(Grid grid, int bits, bool symmetric, float xmin, float xmax, float signed_max) {
  const float qmax = static_cast<float>(qmax_of(bits));
  const float half = static_cast<float>(1 << (bits - 1));  // 2^(b-1)
  switch (grid) {
    case Grid::minmax:
      if (symmetric) {
        const float amax = std::max(std::fabs(xmin), std::fabs(xmax));
        return {std::max(amax, 1e-5f) / (half - 1.0f), half};
      } else {
        const float s = std::max(xmax - xmin, 1e-5f) / qmax;
        return {s, std::clamp(-std::nearbyint(xmin / s), 0.0f, qmax)};
      }
    case Grid::gptq: {
      float lo = std::min(xmin, 0.0f), hi = std::max(xmax, 0.0f);
      if (symmetric) {
        hi = std::max(std::fabs(lo), hi);
        if (lo < 0.0f) lo = -hi;
      }
      if (lo == 0.0f && hi == 0.0f) lo = -1.0f, hi = 1.0f;
      float s = (hi - lo) / qmax;
      if (s == 0.0f) {  // a range below float resolution (denormals): treated as all zero, where the
        lo = -1.0f;     // reference would divide by zero
        s = 2.0f / qmax;
      }
      return {s, symmetric ? (qmax + 1.0f) / 2.0f : std::nearbyint(-lo / s)};
    }
    case Grid::omniquant:
      if (symmetric) {
        const float amax = std::max(std::fabs(xmin), std::fabs(xmax));
        return {std::clamp(amax / (half - 1.0f), 1e-5f, 1e4f), half - 1.0f};
      } else {
        const float s = std::clamp((xmax - xmin) / qmax, 1e-5f, 1e4f);
        return {s, std::nearbyint(std::clamp(-xmin / s, -1e4f, 1e4f))};
      }
    case Grid::ggml:
      if (symmetric) return {signed_max / -half, half};
      return {(xmax - xmin) / qmax, xmin};
  }
  return {1.0f, 0.0f};
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
