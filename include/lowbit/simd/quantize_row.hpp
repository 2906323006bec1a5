// lowbit/simd/quantize_row.hpp -- the per-row (per-group) kernels every quantizer runs.
//
// Each kernel has a scalar `_ref` twin.  The fast version must give bit-identical results (tests check
// this on random and adversarial data and awkward lengths): both divide by the scale, round half to
// even (nearbyint in the default rounding mode), add the zero point after rounding and clamp, exactly
// as the reference formula in quant/grid.hpp does.
//
//   minmax_row        min and max of n floats; false if any is NaN or +-Inf
//   fake_quant_row    y = (clamp(rint(x/s) + z, 0, qmax) - z) * s
//   quantize_row      codes = clamp(rint(x/s) + z, 0, qmax)  as uint8
//   dequantize_row    y = (code - z) * s
//   fake_quant_grad_row  the backward of fake_quant_row as OmniQuant's STE takes it (autodiff/quant_ops.hpp):
//                     dx_i += dy_i where 0 <= rint(x_i/s) + z <= qmax (pass_i), and returns d loss / d s =
//                     sum_i dy_i ((code_i - z) - [pass_i] x_i / s), the terms computed by SIMD and added one by
//                     one in element order (a float sum in any other order would give other bits)
//   fake_quant_grad_groups  fake_quant_grad_row of k consecutive groups of w elements (group j at x + j w with
//                     its own s[j], z[j]): each group's sum the same bits as fake_quant_grad_row of that group alone.
//                     One in-order sum is a chain of dependent float adds, so it runs at an add's latency; the
//                     groups' chains are independent and run interleaved, at the adds' throughput.
//   extremes_row      how many of x equal mx and mn (a group's max and min) and the first place of each: where the
//                     clip gradient goes (autodiff/quant_ops.hpp); compared a batch at a time, places found in the
//                     rare batch that holds one
// (Grid::ggml's truncating formula is not handled here; quant/quantizer.hpp runs it through grid.hpp.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "xsimd_compat.hpp"

namespace lowbit::simd {

// The scalar twins are templates: float is the twin of the SIMD kernel, double the autodiff's checks
// (autodiff/quant_ops.hpp).
template <class T>
bool minmax_row_ref(const T* x, std::int64_t n, T& mn, T& mx) {
  T lo = std::numeric_limits<T>::infinity(), hi = -lo;
  bool finite = true;
  for (std::int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    finite &= std::fabs(v) <= std::numeric_limits<T>::max();
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  mn = lo + T(0);  // + 0 turns -0 into +0, so the SIMD and scalar paths agree on signed zeros
  mx = hi + T(0);
  return finite;
}

template <class T>
void fake_quant_row_ref(const T* x, T* y, std::int64_t n, T s, T z, T qmax) {
  for (std::int64_t i = 0; i < n; ++i) {
    const T q = std::min(std::max(std::nearbyint(x[i] / s) + z, T(0)), qmax);
    y[i] = (q - z) * s;
  }
}

inline void quantize_row_ref(const float* x, std::uint8_t* codes, std::int64_t n, float s, float z, float qmax) {
  for (std::int64_t i = 0; i < n; ++i)
    codes[i] = static_cast<std::uint8_t>(std::min(std::max(std::nearbyint(x[i] / s) + z, 0.0f), qmax));
}

inline void dequantize_row_ref(const std::uint8_t* codes, float* y, std::int64_t n, float s, float z) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = (static_cast<float>(codes[i]) - z) * s;
}

// One element of fake_quant_grad_row: its term of d loss / d s; dx (when not null) gets dy where the code is
// not clamped.
template <class T>
T fake_quant_grad_term(T x, T dy, T* dx, T s, T z, T qmax) {
  const T v = x / s, c = std::nearbyint(v) + z;
  const bool pass = c >= T(0) && c <= qmax;
  const T code = std::min(std::max(c, T(0)), qmax);
  if (dx && pass) *dx += dy;
  return dy * ((code - z) - (pass ? v : T(0)));
}

// Elements from `from` on, their terms added to ds in order.
template <class T>
T fake_quant_grad_row_ref(const T* x, const T* dy, T* dx, std::int64_t n, T s, T z, T qmax, std::int64_t from = 0,
                          T ds = T(0)) {
  for (std::int64_t i = from; i < n; ++i) ds += fake_quant_grad_term(x[i], dy[i], dx ? dx + i : nullptr, s, z, qmax);
  return ds;
}

struct Extremes {
  std::int64_t first_max = -1, first_min = -1;
  int n_max = 0, n_min = 0;
};

// Elements from `from` to n, counted on top of e.
template <class T>
Extremes extremes_row_ref(const T* x, std::int64_t n, T mx, T mn, std::int64_t from = 0, Extremes e = {}) {
  for (std::int64_t i = from; i < n; ++i) {
    if (x[i] == mx && e.n_max++ == 0) e.first_max = i;
    if (x[i] == mn && e.n_min++ == 0) e.first_min = i;
  }
  return e;
}

template <class T>
void fake_quant_grad_groups_ref(const T* x, const T* dy, T* dx, std::int64_t k, std::int64_t w, const T* s, const T* z,
                                T qmax, T* ds) {
  for (std::int64_t j = 0; j < k; ++j)
    ds[j] = fake_quant_grad_row_ref(x + j * w, dy + j * w, dx ? dx + j * w : nullptr, w, s[j], z[j], qmax);
}

#if LOWBIT_HAS_XSIMD

inline bool minmax_row(const float* x, std::int64_t n, float& mn, float& mx) {
  const std::int64_t w = static_cast<std::int64_t>(fwidth);
  if (n < 2 * w) return minmax_row_ref(x, n, mn, mx);
  fbatch lo0 = fbatch::load_unaligned(x), hi0 = lo0, lo1 = lo0, hi1 = lo0;
  const fbatch fmax(std::numeric_limits<float>::max());
  auto bad = !(xsimd::abs(lo0) <= fmax);
  std::int64_t i = w;
  for (; i + 2 * w <= n; i += 2 * w) {  // two accumulators hide the min/max latency
    const fbatch a = fbatch::load_unaligned(x + i), b = fbatch::load_unaligned(x + i + w);
    lo0 = xsimd::min(lo0, a);
    hi0 = xsimd::max(hi0, a);
    lo1 = xsimd::min(lo1, b);
    hi1 = xsimd::max(hi1, b);
    bad = bad | !(xsimd::abs(a) <= fmax) | !(xsimd::abs(b) <= fmax);
  }
  for (; i + w <= n; i += w) {
    const fbatch a = fbatch::load_unaligned(x + i);
    lo0 = xsimd::min(lo0, a);
    hi0 = xsimd::max(hi0, a);
    bad = bad | !(xsimd::abs(a) <= fmax);
  }
  float lo = reduce_min(xsimd::min(lo0, lo1)), hi = reduce_max(xsimd::max(hi0, hi1));
  bool finite = !xsimd::any(bad);
  if (i < n) {
    float tlo, thi;
    finite &= minmax_row_ref(x + i, n - i, tlo, thi);
    lo = std::min(lo, tlo);
    hi = std::max(hi, thi);
  }
  mn = lo + 0.0f;
  mx = hi + 0.0f;
  return finite;
}

inline void fake_quant_row(const float* x, float* y, std::int64_t n, float s, float z, float qmax) {
  const std::int64_t w = static_cast<std::int64_t>(fwidth);
  const fbatch vs(s), vz(z), vq(qmax), v0(0.0f);
  std::int64_t i = 0;
  for (; i + w <= n; i += w) {
    const fbatch q = xsimd::min(xsimd::max(xsimd::nearbyint(fbatch::load_unaligned(x + i) / vs) + vz, v0), vq);
    ((q - vz) * vs).store_unaligned(y + i);
  }
  fake_quant_row_ref(x + i, y + i, n - i, s, z, qmax);
}

namespace detail {
// One batch of fake_quant_grad_term: the terms of d loss / d s, and dx += dy where the code is not clamped.
inline fbatch fake_quant_grad_batch(const float* x, const float* dy, float* dx, fbatch vs, fbatch vz, fbatch vq) {
  const fbatch v0(0.0f);
  const fbatch v = fbatch::load_unaligned(x) / vs, c = xsimd::nearbyint(v) + vz, d = fbatch::load_unaligned(dy);
  const auto pass = (c >= v0) & (c <= vq);
  const fbatch code = xsimd::min(xsimd::max(c, v0), vq);
  if (dx) {
    const fbatch g = fbatch::load_unaligned(dx);
    xsimd::select(pass, g + d, g).store_unaligned(dx);
  }
  return d * ((code - vz) - xsimd::select(pass, v, v0));
}
}  // namespace detail

inline float fake_quant_grad_row(const float* x, const float* dy, float* dx, std::int64_t n, float s, float z,
                                 float qmax) {
  const std::int64_t w = static_cast<std::int64_t>(fwidth);
  const fbatch vs(s), vz(z), vq(qmax);
  alignas(64) float t[fwidth];
  float ds = 0.0f;
  std::int64_t i = 0;
  for (; i + w <= n; i += w) {
    detail::fake_quant_grad_batch(x + i, dy + i, dx ? dx + i : nullptr, vs, vz, vq).store_aligned(t);
    for (std::size_t k = 0; k < fwidth; ++k) ds += t[k];  // in element order, as the scalar twin
  }
  return fake_quant_grad_row_ref(x, dy, dx, n, s, z, qmax, i, ds);
}

namespace detail {
// K groups' chains at once (fake_quant_grad_groups).  The terms of a stretch of S elements of each group are
// computed group after group (memory read in order, as the prefetchers like it) into t, then added to the K
// chains element by element.
template <int K>
void fake_quant_grad_chunk(const float* x, const float* dy, float* dx, std::int64_t n, const float* s, const float* z,
                           float qmax, float* ds) {
  constexpr std::int64_t w = static_cast<std::int64_t>(fwidth), S = 8 * w;
  const fbatch vq(qmax);
  alignas(64) float t[K][S];
  float acc[K];
  for (int j = 0; j < K; ++j) acc[j] = 0.0f;
  const std::int64_t body = n / w * w;
  for (std::int64_t i0 = 0; i0 < body; i0 += S) {
    const std::int64_t len = std::min(S, body - i0);
    for (int j = 0; j < K; ++j) {
      const fbatch vs(s[j]), vz(z[j]);
      for (std::int64_t i = 0; i < len; i += w) {
        const std::int64_t o = j * n + i0 + i;
        fake_quant_grad_batch(x + o, dy + o, dx ? dx + o : nullptr, vs, vz, vq).store_aligned(&t[j][i]);
      }
    }
    for (std::int64_t l = 0; l < len; ++l)  // each group's terms in element order, the K chains side by side
      for (int j = 0; j < K; ++j) acc[j] += t[j][l];
  }
  for (int j = 0; j < K; ++j)
    ds[j] = fake_quant_grad_row_ref(x + j * n, dy + j * n, dx ? dx + j * n : nullptr, n, s[j], z[j], qmax, body, acc[j]);
}
}  // namespace detail

inline void fake_quant_grad_groups(const float* x, const float* dy, float* dx, std::int64_t k, std::int64_t w,
                                   const float* s, const float* z, float qmax, float* ds) {
  std::int64_t j = 0;  // group j starts at element j w
  const auto gx = [&] { return dx ? dx + j * w : nullptr; };
  for (; j + 8 <= k; j += 8)
    detail::fake_quant_grad_chunk<8>(x + j * w, dy + j * w, gx(), w, s + j, z + j, qmax, ds + j);
  for (; j + 4 <= k; j += 4)
    detail::fake_quant_grad_chunk<4>(x + j * w, dy + j * w, gx(), w, s + j, z + j, qmax, ds + j);
  for (; j < k; ++j) ds[j] = fake_quant_grad_row(x + j * w, dy + j * w, gx(), w, s[j], z[j], qmax);
}

inline Extremes extremes_row(const float* x, std::int64_t n, float mx, float mn) {
  const std::int64_t w = static_cast<std::int64_t>(fwidth);
  const fbatch vx(mx), vn(mn);
  Extremes e;
  std::int64_t i = 0;
  for (; i + w <= n; i += w) {
    const fbatch a = fbatch::load_unaligned(x + i);
    if (xsimd::any((a == vx) | (a == vn))) e = extremes_row_ref(x, i + w, mx, mn, i, e);
  }
  return extremes_row_ref(x, n, mx, mn, i, e);
}

inline void quantize_row(const float* x, std::uint8_t* codes, std::int64_t n, float s, float z, float qmax) {
  const std::int64_t w = static_cast<std::int64_t>(fwidth);
  const fbatch vs(s), vz(z), vq(qmax), v0(0.0f);
  alignas(64) std::int32_t t[fwidth];
  std::int64_t i = 0;
  for (; i + w <= n; i += w) {
    const fbatch q = xsimd::min(xsimd::max(xsimd::nearbyint(fbatch::load_unaligned(x + i) / vs) + vz, v0), vq);
    xsimd::batch_cast<std::int32_t>(q).store_aligned(t);
    for (std::int64_t k = 0; k < w; ++k) codes[i + k] = static_cast<std::uint8_t>(t[k]);
  }
  quantize_row_ref(x + i, codes + i, n - i, s, z, qmax);
}

#else

inline bool minmax_row(const float* x, std::int64_t n, float& mn, float& mx) { return minmax_row_ref(x, n, mn, mx); }
inline void fake_quant_row(const float* x, float* y, std::int64_t n, float s, float z, float qmax) {
  fake_quant_row_ref(x, y, n, s, z, qmax);
}
inline void quantize_row(const float* x, std::uint8_t* codes, std::int64_t n, float s, float z, float qmax) {
  quantize_row_ref(x, codes, n, s, z, qmax);
}
inline float fake_quant_grad_row(const float* x, const float* dy, float* dx, std::int64_t n, float s, float z, float qmax) {
  return fake_quant_grad_row_ref(x, dy, dx, n, s, z, qmax);
}
inline void fake_quant_grad_groups(const float* x, const float* dy, float* dx, std::int64_t k, std::int64_t w,
                                   const float* s, const float* z, float qmax, float* ds) {
  fake_quant_grad_groups_ref(x, dy, dx, k, w, s, z, qmax, ds);
}
inline Extremes extremes_row(const float* x, std::int64_t n, float mx, float mn) { return extremes_row_ref(x, n, mx, mn); }

#endif

// Dequantization is a convert-subtract-multiply the compiler vectorises well from the plain loop, so the
// fast version is the reference itself.
inline void dequantize_row(const std::uint8_t* codes, float* y, std::int64_t n, float s, float z) {
  dequantize_row_ref(codes, y, n, s, z);
}

}  // namespace lowbit::simd
