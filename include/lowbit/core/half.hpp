// lowbit/core/half.hpp -- bit-exact IEEE fp16 and bfloat16 <-> float32.
//
// float -> fp16 and float -> bf16 round to nearest, ties to even (what hardware converters and
// PyTorch do); values beyond the fp16 range become +-inf; NaN stays NaN (quiet bit set, payload
// kept where it fits).  fp16 / bf16 -> float is exact.  Plain integer code, usable on the host and
// in CUDA device code.
#pragma once

#include <cstdint>
#include <cstring>

#include "../config.hpp"

namespace lowbit {

LOWBIT_HOST_DEVICE std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

LOWBIT_HOST_DEVICE float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

LOWBIT_HOST_DEVICE std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf or NaN
    return static_cast<std::uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
  if (ax >= 0x477ff000u)  // >= 65520 rounds to inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (ax < 0x38800000u) {  // below 2^-14: an fp16 subnormal (or zero)
    // Adding 0.5f puts the value in a float whose ulp (2^-24) is the fp16 subnormal unit, so the
    // float addition performs the round-to-nearest-even for us.
    const float t = bits_float(ax) + 0.5f;
    return static_cast<std::uint16_t>(sign | (float_bits(t) - 0x3f000000u));
  }
  const std::uint32_t odd = (ax >> 13) & 1u;
  ax += 0xc8000fffu + odd;  // rebias the exponent (127 -> 15) and round the 13 dropped bits to even
  return static_cast<std::uint16_t>(sign | (ax >> 13));
}

LOWBIT_HOST_DEVICE float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu;
  const std::uint32_t m = h & 0x3ffu;
  if (e == 0x1fu) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24, exact
    return bits_float(float_bits(v) | sign);
  }
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

LOWBIT_HOST_DEVICE std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

LOWBIT_HOST_DEVICE float bf16_bits_to_float(std::uint16_t b) {
  return bits_float(static_cast<std::uint32_t>(b) << 16);
}

// Rounds a float to the nearest fp16 value (kept as float): what storing an fp16 scale does.
LOWBIT_HOST_DEVICE float round_to_half(float f) { return half_bits_to_float(float_to_half_bits(f)); }

}  // namespace lowbit
