// lowbit/pack/bitpack.hpp -- packing 2..8-bit codes into bytes and 32-bit words.
//
// Layout (one layout, for every width, documented once):
//   1. The codes form an LSB-first bit stream: code i occupies stream bits [i*b, i*b + b), its least
//      significant bit first.
//   2. Byte k of the packed bytes holds stream bits [8k, 8k + 8) (bit 0 of the byte = stream bit 8k).
//      packed_bytes(n, b) = ceil(n*b / 8).
//   3. Word k of the packed 32-bit words holds stream bits [32k, 32k + 32) (bit 0 = stream bit 32k);
//      packed_words(n, b) = ceil(n*b / 32).  On a little-endian machine the words are the same bytes.
//   4. Unused high bits of the last byte/word are zero.
// So at 4 bits byte k = code[2k] | code[2k+1] << 4 and word k holds codes 8k..8k+7 at bits 4j; at 3 bits
// codes straddle bytes and words (32 codes fill exactly 3 words, as in GPTQ's 3-bit qweight).  Format-specific
// orders (AWQ's [0,2,4,6,1,3,5,7] interleave, ggml's q[j] | q[j+16] << 4) are built on top of these in the
// export headers.
//
// Codes must be < 2^b; pack_* throw lowbit::error naming the index otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../core/error.hpp"

namespace lowbit {

constexpr std::size_t packed_bytes(std::size_t n, int bits) { return (n * std::size_t(bits) + 7) / 8; }
constexpr std::size_t packed_words(std::size_t n, int bits) { return (n * std::size_t(bits) + 31) / 32; }

namespace detail {
inline void check_bits(int bits) {
  if (bits < 1 || bits > 8) fail("bit packing: width ", bits, " is not supported (1..8)");
}
inline void check_codes(const std::uint8_t* codes, std::size_t n, int bits) {
  const unsigned limit = 1u << bits;
  for (std::size_t i = 0; i < n; ++i)
    if (codes[i] >= limit) fail("bit packing: code ", unsigned(codes[i]), " at index ", i, " does not fit in ", bits, " bits");
}
}  // namespace detail

// Packs n codes into packed_bytes(n, bits) bytes.
inline void pack_bits(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out) {
  detail::check_bits(bits);
  detail::check_codes(codes, n, bits);
  if (bits == 8) {
    for (std::size_t i = 0; i < n; ++i) out[i] = codes[i];
    return;
  }
  if (bits == 4) {
    std::size_t i = 0;
    for (; i + 2 <= n; i += 2) out[i / 2] = static_cast<std::uint8_t>(codes[i] | codes[i + 1] << 4);
    if (i < n) out[i / 2] = codes[i];
    return;
  }
  std::uint32_t acc = 0;  // pending stream bits, LSB first
  int have = 0;
  std::size_t o = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc |= std::uint32_t(codes[i]) << have;
    have += bits;
    while (have >= 8) {
      out[o++] = static_cast<std::uint8_t>(acc);
      acc >>= 8;
      have -= 8;
    }
  }
  if (have > 0) out[o] = static_cast<std::uint8_t>(acc);
}

// Unpacks n codes from packed_bytes(n, bits) bytes.
inline void unpack_bits(const std::uint8_t* in, std::size_t n, int bits, std::uint8_t* codes) {
  detail::check_bits(bits);
  if (bits == 8) {
    for (std::size_t i = 0; i < n; ++i) codes[i] = in[i];
    return;
  }
  if (bits == 4) {
    for (std::size_t i = 0; i < n; ++i) codes[i] = static_cast<std::uint8_t>((in[i / 2] >> (4 * (i & 1))) & 0xF);
    return;
  }
  const std::uint32_t mask = (1u << bits) - 1;
  std::uint32_t acc = 0;
  int have = 0;
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i) {
    while (have < bits) {
      acc |= std::uint32_t(in[k++]) << have;
      have += 8;
    }
    codes[i] = static_cast<std::uint8_t>(acc & mask);
    acc >>= bits;
    have -= bits;
  }
}

// Packs n codes into packed_words(n, bits) 32-bit words.
inline void pack_bits32(const std::uint8_t* codes, std::size_t n, int bits, std::uint32_t* out) {
  detail::check_bits(bits);
  detail::check_codes(codes, n, bits);
  std::uint64_t acc = 0;
  int have = 0;
  std::size_t o = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc |= std::uint64_t(codes[i]) << have;
    have += bits;
    if (have >= 32) {
      out[o++] = static_cast<std::uint32_t>(acc);
      acc >>= 32;
      have -= 32;
    }
  }
  if (have > 0) out[o] = static_cast<std::uint32_t>(acc);
}

// Unpacks n codes from packed_words(n, bits) 32-bit words.
inline void unpack_bits32(const std::uint32_t* in, std::size_t n, int bits, std::uint8_t* codes) {
  detail::check_bits(bits);
  const std::uint64_t mask = (1u << bits) - 1;
  std::uint64_t acc = 0;
  int have = 0;
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (have < bits) {
      acc |= std::uint64_t(in[k++]) << have;
      have += 32;
    }
    codes[i] = static_cast<std::uint8_t>(acc & mask);
    acc >>= bits;
    have -= bits;
  }
}

}  // namespace lowbit
