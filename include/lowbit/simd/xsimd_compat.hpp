// lowbit/simd/xsimd_compat.hpp -- the only file that includes xsimd.
//
// Debian ships xsimd 8.1.0: the horizontal sum is `hadd` (renamed `reduce_add` later) and there is no
// `reduce_min` / `reduce_max`.  Kernels use the names below, never xsimd's directly, so moving to a newer
// xsimd touches this file only.  Without xsimd (LOWBIT_HAS_XSIMD == 0) this header is empty and the
// kernels compile their scalar `_ref` twins.
#pragma once

#include "../config.hpp"

#if LOWBIT_HAS_XSIMD
#include <xsimd/xsimd.hpp>

namespace lowbit::simd {

using fbatch = xsimd::batch<float>;
using ibatch = xsimd::batch<std::int32_t>;
constexpr std::size_t fwidth = fbatch::size;

inline float reduce_add(const fbatch& v) { return xsimd::hadd(v); }

inline float reduce_min(const fbatch& v) {
  alignas(64) float t[fwidth];
  v.store_aligned(t);
  float m = t[0];
  for (std::size_t i = 1; i < fwidth; ++i) m = t[i] < m ? t[i] : m;
  return m;
}

inline float reduce_max(const fbatch& v) {
  alignas(64) float t[fwidth];
  v.store_aligned(t);
  float m = t[0];
  for (std::size_t i = 1; i < fwidth; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

}  // namespace lowbit::simd
#endif
