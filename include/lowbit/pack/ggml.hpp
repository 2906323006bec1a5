// lowbit/pack/ggml.hpp -- ggml's block formats Q4_0, Q4_1 and Q8_0 (llama.cpp ggml-common.h, ggml-quants.c);
// the K-quants Q4_K / Q6_K are in ggml_k.hpp, dispatched from ggml_quantize_row / ggml_dequantize_row.
//
// A row of n weights (n a multiple of 32) is n / 32 blocks of 32 consecutive weights along the input dimension:
//
// | type | block bytes                      | bits / weight | dequantization              | reference quantizer             |
// |------|----------------------------------|---------------|-----------------------------|---------------------------------|
// | Q4_0 | fp16 d, u8 qs[16]                | 4.5           | y = (q - 8) d               | m = the value of largest |x|    |
// |      | qs[j] = q[j] | q[j + 16] << 4    |               |                             | (first), d = m / -8,            |
// |      |                                  |               |                             | q = min(15, trunc(x/d' + 8.5))  |
// | Q4_1 | fp16 d, fp16 m, u8 qs[16] (same) | 5.0           | y = q d + m                 | d = (max - min) / 15, m = min,  |
// |      |                                  |               |                             | q = min(15, trunc((x-m)/d'+.5)) |
// | Q8_0 | fp16 d, i8 qs[32]                | 8.5           | y = q d                     | d = max|x| / 127, q = round(x/d')|
//
// where x/d' is x * (1/d) with d in float32 (the stored d is fp16(d)): quantize_row_q4_0_ref, _q4_1_ref and
// _q8_0_ref of ggml-quants.c, reproduced here as ggml_quantize_row.  ggml_pack_codes stores a method's own integer
// codes instead, when a row's grid already is a block format: every block of 32 columns inside one of the
// method's groups and its codes in the type's range --
//
//   Q4_0: q = code - z + 8 in [0, 15], d = s                    (symmetric grids at 2..4 bits: z = 2^(b-1))
//   Q4_1: q = code in [0, 15], d = s, m = -z s (ggml's own asymmetric grid: m = z)     (any grid at 2..4 bits)
//   Q8_0: q = code - z in [-128, 127], d = s                    (symmetric grids up to 8 bits)
//
// so the file holds exactly the method's grid; what differs from the method's fake-quantized weights is the
// fp16 rounding of d and m (and, for Q4_1, q d + m in place of (q - z) s).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/parallel.hpp"
#include "../io/gguf.hpp"
#include "../quant/quantized.hpp"
#include "ggml_k.hpp"

namespace lowbit {

namespace detail {
inline void put_half(std::uint8_t* p, float v) {
  const std::uint16_t h = float_to_half_bits(v);
  std::memcpy(p, &h, 2);
}
inline float get_half(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return half_bits_to_float(h);
}
// Nibbles of a 4-bit block: element j low, element j + 16 high.
inline void put_nibbles(std::uint8_t* qs, const int* q) {
  for (int j = 0; j < 16; ++j) qs[j] = std::uint8_t(q[j] | (q[j + 16] << 4));
}
}  // namespace detail

// llama.cpp's reference quantizer of one row (n a multiple of 32) into `out` (ggml_row_bytes(t, n) bytes); f32 and
// f16 store the values.
inline void ggml_quantize_row(GgmlType t, const float* x, std::uint8_t* out, std::int64_t n) {
  if (t == GgmlType::f32) return (void)std::memcpy(out, x, std::size_t(n) * 4);
  if (t == GgmlType::f16) {
    for (std::int64_t i = 0; i < n; ++i) detail::put_half(out + 2 * i, x[i]);
    return;
  }
  if (is_k_type(t)) return ggml_k_quantize_row(t, x, out, n);
  const std::size_t ub = ggml_unit_bytes(t);
  for (std::int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const float* v = x + b * kGgmlBlock;
    std::uint8_t* o = out + std::size_t(b) * ub;
    int q[kGgmlBlock];
    if (t == GgmlType::q4_0) {
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < kGgmlBlock; ++j)
        if (amax < std::fabs(v[j])) amax = std::fabs(v[j]), max = v[j];
      const float d = max / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
      detail::put_half(o, d);
      for (int j = 0; j < kGgmlBlock; ++j) q[j] = std::min(15, int(std::int8_t(v[j] * id + 8.5f)));
      detail::put_nibbles(o + 2, q);
    } else if (t == GgmlType::q4_1) {
      float min = v[0], max = v[0];
      for (int j = 1; j < kGgmlBlock; ++j) min = std::min(min, v[j]), max = std::max(max, v[j]);
      const float d = (max - min) / 15, id = d != 0.0f ? 1.0f / d : 0.0f;
      detail::put_half(o, d);
      detail::put_half(o + 2, min);
      for (int j = 0; j < kGgmlBlock; ++j) q[j] = std::min(15, int(std::int8_t((v[j] - min) * id + 0.5f)));
      detail::put_nibbles(o + 4, q);
    } else {
      float amax = 0.0f;
      for (int j = 0; j < kGgmlBlock; ++j) amax = std::max(amax, std::fabs(v[j]));
      const float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
      detail::put_half(o, d);
      for (int j = 0; j < kGgmlBlock; ++j) o[2 + j] = std::uint8_t(std::int8_t(std::round(v[j] * id)));
    }
  }
}

// The values of one row (dequantize_row_q4_0 / _q4_1 / _q8_0; f16 / f32 as stored).
inline void ggml_dequantize_row(GgmlType t, const std::uint8_t* in, float* y, std::int64_t n) {
  if (t == GgmlType::f32) return (void)std::memcpy(y, in, std::size_t(n) * 4);
  if (t == GgmlType::f16) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = detail::get_half(in + 2 * i);
    return;
  }
  if (is_k_type(t)) return ggml_k_dequantize_row(t, in, y, n);
  const std::size_t ub = ggml_unit_bytes(t);
  for (std::int64_t b = 0; b < n / kGgmlBlock; ++b) {
    const std::uint8_t* p = in + std::size_t(b) * ub;
    float* o = y + b * kGgmlBlock;
    const float d = detail::get_half(p);
    if (t == GgmlType::q8_0) {
      for (int j = 0; j < kGgmlBlock; ++j) o[j] = float(std::int8_t(p[2 + j])) * d;
      continue;
    }
    const bool q41 = t == GgmlType::q4_1;
    const float m = q41 ? detail::get_half(p + 2) : 0.0f;
    const std::uint8_t* qs = p + (q41 ? 4 : 2);
    for (int j = 0; j < 16; ++j) {
      const int lo = qs[j] & 0x0F, hi = qs[j] >> 4;
      o[j] = q41 ? float(lo) * d + m : float(lo - 8) * d;
      o[j + 16] = q41 ? float(hi) * d + m : float(hi - 8) * d;
    }
  }
}

namespace detail {
// Whether every code of c[0, n) lies in [lo, hi] (a min / max the compiler vectorizes).
inline bool codes_within(const std::uint8_t* c, std::int64_t n, int lo, int hi) {
  std::uint8_t mn = 255, mx = 0;
  for (std::int64_t j = 0; j < n; ++j) mn = c[j] < mn ? c[j] : mn, mx = c[j] > mx ? c[j] : mx;
  return int(mn) >= lo && int(mx) <= hi;
}

// Eight bytes at once (little-endian loads, as ggml's files): x + b in every byte modulo 256, no carry between bytes.
inline std::uint64_t load8(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline std::uint64_t add_bytes(std::uint64_t x, std::uint64_t b) {
  constexpr std::uint64_t H = 0x8080808080808080ull;
  return ((x & ~H) + (b & ~H)) ^ ((x ^ b) & H);
}

// ggml_pack_codes for groups that are runs of whole blocks (no act-order, group % 32 == 0, per-group
// parameters): each group's zero is checked and its scale converted to fp16 once, and a 4-bit block is four
// 8-byte words: v = code + (8 - z) for Q4_0 (code for Q4_1), byte by byte modulo 256 -- a code outside the type
// wraps to a byte above 15, which the check pass catches -- then qs = v[0..16) | v[16..32) << 4 (byte j of the low
// word with byte j of the high one: ggml's order).  Check pass first, so a refused row writes nothing.
inline bool ggml_pack_runs(GgmlType t, const QuantizedLinear& ql, std::int64_t r, std::uint8_t* out, bool float_zero, int lo, int hi) {
  const std::uint8_t* codes = ql.codes.row(r).data();
  const float* S = ql.params.scale.row(r).data();
  const float* Z = ql.params.zero.row(r).data();
  const std::int64_t C = ql.cols(), gs = ql.params.group, G = ql.params.scale.cols();
  constexpr std::uint64_t kOnes = 0x0101010101010101ull, kHigh = 0xF0F0F0F0F0F0F0F0ull;
  // the byte added to every code: 8 - z (Q4_0), 0 (Q4_1), -z (Q8_0)
  const auto offset = [&](std::int64_t g) {
    return std::uint8_t(t == GgmlType::q4_0 ? 8 - int(Z[g]) : t == GgmlType::q8_0 ? -int(Z[g]) : 0);
  };
  for (std::int64_t g = 0; g < G; ++g) {
    const std::int64_t c0 = g * gs, w = std::min(gs, C - c0);
    if (!float_zero && Z[g] != std::floor(Z[g])) return false;
    if (!(std::abs(Z[g]) < 1e6f)) return false;  // beyond any code (and int's range)
    if (t == GgmlType::q8_0) {
      if (!codes_within(codes + c0, w, lo + int(Z[g]), hi + int(Z[g]))) return false;
      continue;
    }
    const std::uint64_t add = offset(g) * kOnes;
    std::uint64_t acc = 0;
    for (std::int64_t k = 0; k < w; k += 8) acc |= add_bytes(load8(codes + c0 + k), add);
    if (acc & kHigh) return false;
  }
  const std::size_t ub = ggml_unit_bytes(t);
  for (std::int64_t g = 0; g < G; ++g) {
    const std::int64_t c0 = g * gs, w = std::min(gs, C - c0);
    const std::uint16_t d = float_to_half_bits(S[g]);
    const std::uint16_t m = t == GgmlType::q4_1 ? float_to_half_bits(float_zero ? Z[g] : -Z[g] * S[g]) : 0;
    const std::uint8_t off = offset(g);
    const std::uint64_t add = off * kOnes;
    for (std::int64_t b = c0 / kGgmlBlock; b < (c0 + w) / kGgmlBlock; ++b) {
      const std::uint8_t* c = codes + b * kGgmlBlock;
      std::uint8_t* o = out + std::size_t(b) * ub;
      std::memcpy(o, &d, 2);
      if (t == GgmlType::q8_0) {
        for (int j = 0; j < kGgmlBlock; ++j) o[2 + j] = std::uint8_t(c[j] + off);
        continue;
      }
      std::uint8_t* qs = o + 2;
      if (t == GgmlType::q4_1) std::memcpy(o + 2, &m, 2), qs = o + 4;
      const std::uint64_t q0 = add_bytes(load8(c), add) | add_bytes(load8(c + 16), add) << 4;
      const std::uint64_t q1 = add_bytes(load8(c + 8), add) | add_bytes(load8(c + 24), add) << 4;
      std::memcpy(qs, &q0, 8);
      std::memcpy(qs + 8, &q1, 8);
    }
  }
  return true;
}

// Whether ql's groups are runs of whole blocks (the fast path's condition; scans g_idx once per tensor).
inline bool ggml_runs(const QuantizedLinear& ql) {
  return !ql.params.per_tensor && ql.params.group % kGgmlBlock == 0 && !ql.act_order();
}

inline bool ggml_pack_row(GgmlType t, const QuantizedLinear& ql, std::int64_t r, std::uint8_t* out, bool runs) {
  if (!is_block_type(t) || is_k_type(t) || ql.cols() % kGgmlBlock) return false;  // K-quants: always re-quantized
  const bool float_zero = ql.grid == Grid::ggml && !ql.symmetric;  // x' = code s + z
  if (float_zero && t != GgmlType::q4_1) return false;
  if (t != GgmlType::q8_0 && ql.bits > 4) return false;
  // the type's range of code - z (Q4_1 stores the codes themselves)
  const int lo = t == GgmlType::q4_0 ? -8 : t == GgmlType::q8_0 ? -128 : 0, hi = t == GgmlType::q4_0 ? 7 : t == GgmlType::q8_0 ? 127 : 15;
  if (runs) return ggml_pack_runs(t, ql, r, out, float_zero, lo, hi);
  const std::uint8_t* codes = ql.codes.row(r).data();
  const std::int64_t nb = ql.cols() / kGgmlBlock;
  const bool by_column = !ql.g_idx.empty();  // GPTQ's g_idx: each column's group of its own
  // check every block before writing any
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::int64_t c0 = b * kGgmlBlock;
    const int g = ql.group_of(c0);
    if (!by_column && ql.group_of(c0 + kGgmlBlock - 1) != g) return false;  // groups are runs of columns
    if (by_column)
      for (std::int64_t j = 1; j < kGgmlBlock; ++j)
        if (ql.g_idx[std::size_t(c0 + j)] != g) return false;
    const GroupParams p = ql.params.at(r, g);
    if (!float_zero && p.zero != std::floor(p.zero)) return false;
    int cmin = codes[c0], cmax = codes[c0];
    for (std::int64_t j = 1; j < kGgmlBlock; ++j) cmin = std::min(cmin, int(codes[c0 + j])), cmax = std::max(cmax, int(codes[c0 + j]));
    const int z = t == GgmlType::q4_1 ? 0 : int(p.zero);
    if (cmin - z < lo || cmax - z > hi) return false;
  }
  const std::size_t ub = ggml_unit_bytes(t);
  for (std::int64_t b = 0; b < nb; ++b) {
    const std::int64_t c0 = b * kGgmlBlock;
    const GroupParams p = ql.params.at(r, ql.group_of(c0));
    const std::uint8_t* c = codes + c0;
    std::uint8_t* o = out + std::size_t(b) * ub;
    detail::put_half(o, p.scale);
    if (t == GgmlType::q8_0) {
      const int z = int(p.zero);
      for (int j = 0; j < kGgmlBlock; ++j) o[2 + j] = std::uint8_t(std::int8_t(int(c[j]) - z));
    } else if (t == GgmlType::q4_0) {
      const int z = int(p.zero) - 8;  // q = code - z + 8
      for (int j = 0; j < 16; ++j) o[2 + j] = std::uint8_t((int(c[j]) - z) | ((int(c[j + 16]) - z) << 4));
    } else {
      detail::put_half(o + 2, float_zero ? p.zero : -p.zero * p.scale);
      for (int j = 0; j < 16; ++j) o[4 + j] = std::uint8_t(c[j] | (c[j + 16] << 4));
    }
  }
  return true;
}
}  // namespace detail

// Row r of `ql` as blocks of type t from the method's own codes (see the header).  False, and nothing written,
// when the row is not exactly a t row: a block of 32 straddles two groups (groups not a multiple of 32, GPTQ's
// act_order g_idx), a code falls outside the type's range, or the grid's zero is not an integer.
inline bool ggml_pack_codes(GgmlType t, const QuantizedLinear& ql, std::int64_t r, std::uint8_t* out) {
  return detail::ggml_pack_row(t, ql, r, out, detail::ggml_runs(ql));
}

// Every row of `ql` (row r of the tensor from ql's row src(r)) into rows of ggml_row_bytes(t, cols) bytes, in
// parallel; false when any row is not a t row (`out` is then partly written: the caller re-quantizes instead).
template <class Src>
bool ggml_pack_linear(GgmlType t, const QuantizedLinear& ql, std::uint8_t* out, Src src) {
  const bool runs = detail::ggml_runs(ql);
  const std::size_t rb = ggml_row_bytes(t, ql.cols());
  std::atomic<bool> ok{true};
  parallel_for(ql.rows(), [&](std::int64_t r) {
    if (ok.load(std::memory_order_relaxed) && !detail::ggml_pack_row(t, ql, src(r), out + std::size_t(r) * rb, runs))
      ok.store(false, std::memory_order_relaxed);
  }, ql.cols());
  return ok.load();
}

}  // namespace lowbit
