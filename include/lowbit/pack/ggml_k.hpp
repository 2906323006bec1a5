// lowbit/pack/ggml_k.hpp -- ggml's K-quants Q4_K and Q6_K (llama.cpp ggml-common.h block_q4_K / block_q6_K,
// ggml-quants.c quantize_row_q4_K_ref / _q6_K_ref, dequantize_row_q4_K / _q6_K), the types most llama.cpp users
// pick.  A row is n / 256 super-blocks (n a multiple of QK_K = 256):
//
// | type | super-block bytes (in order)                         | bits / weight | dequantization                        |
// |------|------------------------------------------------------|---------------|---------------------------------------|
// | Q4_K | fp16 d, fp16 dmin, u8 scales[12], u8 qs[128]         | 4.5           | 8 blocks of 32: y = d sc_j q - dmin m_j|
// |      | sc_j, m_j 6-bit (get_scale_min_k4); qs: 64 weights   |               | q in [0, 15]                          |
// |      | per 32 bytes, first 32 low nibbles, next 32 high     |               |                                       |
// | Q6_K | u8 ql[128], u8 qh[64], i8 scales[16], fp16 d         | 6.5625        | 16 blocks of 16: y = d sc_j (q - 32)  |
// |      | per 128 weights: ql[l] = q[l] | q[l+64] << 4,        |               | q in [0, 63]                          |
// |      | ql[l+32] = q[l+32] | q[l+96] << 4, qh[l] = the high  |               |                                       |
// |      | 2 bits of q[l], q[l+32], q[l+64], q[l+96]            |               |                                       |
//
// The reference quantizers: Q4_K fits each block of 32 with make_qkx2_quants (a weighted search over 21 scales
// of (scale, min), weights sqrt(mean x^2) + |x|), quantizes the 8 scales and mins to 6 bits against the
// super-block's largest, then re-rounds the weights with the stored scales; Q6_K fits each block of 16 with
// make_qx_quants (rmse_type 1: weights x^2, 19 scale candidates), quantizes the 16 scales to int8 against the
// largest, then re-rounds.  Reproduced here in their order of float operations (lowbit builds with
// -ffp-contract=off, as the reference's bit-exact tests assume).  A K-quant block's scales are themselves
// quantized, so a method's own codes are never stored as K-quants: the GGUF export re-quantizes the method's
// weights with these quantizers (formats/gguf_export.hpp reports the added error).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/half.hpp"
#include "../io/gguf.hpp"

namespace lowbit {
namespace detail {

constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS

// ggml-quants.c nearest_int: round half to even through the float's mantissa (|x| <= 2^22).
inline int ggml_nearest_int(float f) {
  const float v = f + 12582912.f;
  int i;
  std::memcpy(&i, &v, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

inline float ggml_half_round(float v) { return half_bits_to_float(float_to_half_bits(v)); }

// make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)
inline float ggml_make_qx_quants(int n, int nmax, const float* x, std::int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax, max = x[i];
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = ggml_nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = std::int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = ggml_nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = ggml_nearest_int(iscale * x[i]);
        L[i] = std::int8_t(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad = false)
inline float ggml_make_qkx2_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* the_min,
                                   std::uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_mad = 0;
  for (int i = 0; i < n; ++i) {
    const int l = ggml_nearest_int(iscale * (x[i] - min));
    L[i] = std::uint8_t(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = diff * diff;
    best_mad += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = ggml_nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = std::uint8_t(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = diff * diff;
        mad += weights[i] * diff;
      }
      if (mad < best_mad) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_mad = mad;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// get_scale_min_k4: the 6-bit scale and min of block j from the 12 packed bytes.
inline void ggml_scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& d, std::uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = std::uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = std::uint8_t((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

inline void ggml_quantize_q4_k(const float* x, std::uint8_t* y) {
  std::uint8_t L[256], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = ggml_make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::uint8_t* sc = y + 4;
  for (int j = 0; j < 8; ++j) {
    std::uint8_t ls = std::uint8_t(ggml_nearest_int(inv_scale * scales[j]));
    std::uint8_t lm = std::uint8_t(ggml_nearest_int(inv_min * mins[j]));
    ls = std::min<std::uint8_t>(63, ls);
    lm = std::min<std::uint8_t>(63, lm);
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = std::uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= std::uint8_t((ls >> 4) << 6);
      sc[j - 0] |= std::uint8_t((lm >> 4) << 6);
    }
  }
  const std::uint16_t d = float_to_half_bits(max_scale / 63.f), dmin = float_to_half_bits(max_min / 63.f);
  std::memcpy(y, &d, 2);
  std::memcpy(y + 2, &dmin, 2);
  for (int j = 0; j < 8; ++j) {
    std::uint8_t s, m;
    ggml_scale_min_k4(j, sc, s, m);
    const float dd = half_bits_to_float(d) * s;
    if (!dd) continue;
    const float dm = half_bits_to_float(dmin) * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = ggml_nearest_int((x[32 * j + ii] + dm) / dd);
      L[32 * j + ii] = std::uint8_t(std::max(0, std::min(15, l)));
    }
  }
  std::uint8_t* q = y + 16;
  for (int j = 0; j < 256; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = std::uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

inline void ggml_quantize_q6_k(const float* x, std::uint8_t* y) {
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float scale = ggml_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) max_abs_scale = abs_scale, max_scale = scale;
  }
  std::uint8_t* ql = y;
  std::uint8_t* qh = y + 128;
  std::int8_t* sc = reinterpret_cast<std::int8_t*>(y + 192);
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, 210);
    return;
  }
  const float iscale = -128.f / max_scale;
  const std::uint16_t d = float_to_half_bits(1 / iscale);
  std::memcpy(y + 208, &d, 2);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = std::int8_t(std::min(127, ggml_nearest_int(iscale * scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float dd = half_bits_to_float(d) * sc[j];
    if (!dd) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = ggml_nearest_int(x[16 * j + ii] / dd);
      l = std::max(-32, std::min(31, l));
      L[16 * j + ii] = std::int8_t(l + 32);
    }
  }
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = std::uint8_t(q1 | (q3 << 4));
      ql[l + 32] = std::uint8_t(q2 | (q4 << 4));
      qh[l] = std::uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
}

inline void ggml_dequantize_q4_k(const std::uint8_t* x, float* y) {
  std::uint16_t hd, hm;
  std::memcpy(&hd, x, 2);
  std::memcpy(&hm, x + 2, 2);
  const float d = half_bits_to_float(hd), min = half_bits_to_float(hm);
  const std::uint8_t* sc = x + 4;
  const std::uint8_t* q = x + 16;
  for (int j = 0, is = 0; j < 256; j += 64, q += 32, is += 2) {
    std::uint8_t s, m;
    ggml_scale_min_k4(is + 0, sc, s, m);
    const float d1 = d * s, m1 = min * m;
    ggml_scale_min_k4(is + 1, sc, s, m);
    const float d2 = d * s, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
  }
}

inline void ggml_dequantize_q6_k(const std::uint8_t* x, float* y) {
  std::uint16_t hd;
  std::memcpy(&hd, x + 208, 2);
  const float d = half_bits_to_float(hd);
  const std::uint8_t* ql = x;
  const std::uint8_t* qh = x + 128;
  const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(x + 192);
  for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * sc[is + 0] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
}

}  // namespace detail

// A row of n (a multiple of 256) as Q4_K or Q6_K super-blocks (llama.cpp's reference quantizers), and back.
inline void ggml_k_quantize_row(GgmlType t, const float* x, std::uint8_t* out, std::int64_t n) {
  const std::size_t ub = ggml_unit_bytes(t);
  for (std::int64_t b = 0; b < n / kGgmlSuper; ++b) {
    if (t == GgmlType::q4_k) detail::ggml_quantize_q4_k(x + b * kGgmlSuper, out + std::size_t(b) * ub);
    else detail::ggml_quantize_q6_k(x + b * kGgmlSuper, out + std::size_t(b) * ub);
  }
}
inline void ggml_k_dequantize_row(GgmlType t, const std::uint8_t* in, float* y, std::int64_t n) {
  const std::size_t ub = ggml_unit_bytes(t);
  for (std::int64_t b = 0; b < n / kGgmlSuper; ++b) {
    if (t == GgmlType::q4_k) detail::ggml_dequantize_q4_k(in + std::size_t(b) * ub, y + b * kGgmlSuper);
    else detail::ggml_dequantize_q6_k(in + std::size_t(b) * ub, y + b * kGgmlSuper);
  }
}

}  // namespace lowbit
