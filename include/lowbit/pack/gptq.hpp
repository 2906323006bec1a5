// lowbit/pack/gptq.hpp -- a quantized linear in the GPTQ checkpoint layout (AutoGPTQ qlinear_cuda_old.py pack,
// GPTQModel's "gptq" format; what Transformers, vLLM, exllama and Marlin read as quant_method "gptq",
// checkpoint_format "gptq").  For W [out, in] at b in {2, 3, 4, 8} bits with G groups per row:
//
//   qweight  int32 [in*b/32, out]  column n: the codes W[n, 0..in) as pack/bitpack.hpp's LSB-first stream along
//                                  the input dimension (2/4/8 bits: word r holds inputs r*32/b + j at bits b*j;
//                                  3 bits: 32 inputs fill 3 words, codes straddling them)
//   qzeros   int32 [G, out*b/32]   row g: the zero points z[0..out, g] as the same stream, then "v1": each word
//                                  minus the packed ones (every field minus 1) as one 32-bit subtraction
//   scales   fp16  [G, out]        scales[g, n] = fp16(s[n, g])
//   g_idx    int32 [in]            the group of each input column (act-order: GPTQ's, else k / group)
//   dequant  W'[n, k] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n], z = (stored + packed ones) per word
//
// The v1 offset is the format's legacy (kernels add 1 back).  A zero of 0 (asymmetric grids) has no v1 field
// value; AutoGPTQ's per-value `zeros -= 1` then ORs -1 into the neighbouring fields.  lowbit does what GPTQModel
// does (convert_gptq_v2_to_v1_format: qzeros -= 0x11111111 at 4 bits): one subtraction per word, so such a field
// borrows from the next, and a reader that adds the packed ones back per word (GPTQModel's v1 -> v2) recovers
// every zero exactly.  At 3 bits the packed ones follow the stream (words 0x49249249, 0x92492492, 0x24924924);
// GPTQModel's constants for words 0 and 2 are swapped, which its own v1 -> v2 undoes the same way.
//
// Codes are the method's own; the only difference from its fake-quantized weights is the fp16 rounding of the
// scales.  Refused with the tensor's name: widths other than 2/3/4/8, in or out not a multiple of 32 (AutoGPTQ's
// packing shapes), the ggml grid's float zero, a zero outside the codes, a scale beyond fp16.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../quant/quantized.hpp"
#include "autoawq.hpp"  // detail::packed_scale
#include "bitpack.hpp"

namespace lowbit {

struct GptqPacked {
  std::int64_t in = 0, out = 0, groups = 0;
  int bits = 0;
  std::vector<std::int32_t> qweight;  // [in*bits/32, out]
  std::vector<std::int32_t> qzeros;   // [groups, out*bits/32], v1 (zero - 1 per word)
  std::vector<std::uint16_t> scales;  // [groups, out], fp16 bits
  std::vector<std::int32_t> g_idx;    // [in]
};

inline bool gptq_bits_supported(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

// Why the layout cannot hold a weight of this shape (empty when it can).
inline std::string gptq_shape_problem(std::int64_t out, std::int64_t in) {
  if (in % 32) return "in_features " + std::to_string(in) + " is not a multiple of 32";
  if (out % 32) return "out_features " + std::to_string(out) + " is not a multiple of 32";
  return {};
}

// The packed ones of one word-aligned run of 32 fields: word w of pack_bits32(ones, 32, bits).  A stream of n
// fields (n a multiple of 32) repeats these `bits` words.
inline std::vector<std::uint32_t> gptq_v1_offsets(int bits) {
  const std::vector<std::uint8_t> ones(32, 1);
  std::vector<std::uint32_t> w(packed_words(32, bits));
  pack_bits32(ones.data(), ones.size(), bits, w.data());
  return w;
}

inline GptqPacked pack_gptq(const QuantizedLinear& q, std::string_view where = "weight") {
  if (!gptq_bits_supported(q.bits)) fail(where, ": the GPTQ layout holds 2, 3, 4 or 8-bit codes (this weight has ", q.bits, ")");
  GptqPacked p;
  p.bits = q.bits, p.out = q.rows(), p.in = q.cols(), p.groups = q.groups();
  if (const std::string why = gptq_shape_problem(p.out, p.in); !why.empty()) fail(where, ": ", why);
  const std::int64_t wrows = p.in * p.bits / 32, zwords = p.out * p.bits / 32;
  p.qweight.assign(std::size_t(wrows * p.out), 0);
  p.qzeros.assign(std::size_t(p.groups * zwords), 0);
  p.scales.assign(std::size_t(p.groups * p.out), 0);
  p.g_idx.resize(std::size_t(p.in));
  for (Eigen::Index k = 0; k < p.in; ++k) {
    p.g_idx[std::size_t(k)] = q.groups() == 1 ? 0 : q.group_of(k);
    if (p.g_idx[std::size_t(k)] < 0 || p.g_idx[std::size_t(k)] >= p.groups)
      fail(where, ": g_idx[", k, "] = ", p.g_idx[std::size_t(k)], " is not a group in [0, ", p.groups, ")");
  }
  // zeros and scales, group by group: one row of qzeros is the stream of the out zero points
  const std::vector<std::uint32_t> ones = gptq_v1_offsets(p.bits);
  std::vector<std::uint8_t> z(static_cast<std::size_t>(p.out));
  std::vector<std::uint32_t> zw(static_cast<std::size_t>(zwords));
  for (Eigen::Index g = 0; g < p.groups; ++g) {
    for (Eigen::Index n = 0; n < p.out; ++n) {
      z[std::size_t(n)] = std::uint8_t(q.zero_code(n, g, where));
      p.scales[std::size_t(g * p.out + n)] = detail::packed_scale(q.params.at(n, g).scale, where, n, g);
    }
    pack_bits32(z.data(), z.size(), p.bits, zw.data());
    for (std::int64_t w = 0; w < zwords; ++w)
      p.qzeros[std::size_t(g * zwords + w)] = std::int32_t(zw[std::size_t(w)] - ones[std::size_t(w % p.bits)]);
  }
  // qweight: column n of the [wrows, out] matrix is the stream of row n's codes; 16 rows at a time, so each
  // qweight row gets a 64-byte run
  constexpr std::int64_t kTile = 16;
  parallel_for((p.out + kTile - 1) / kTile, [&](std::int64_t tile) {
    const std::int64_t n0 = tile * kTile, n1 = std::min(p.out, n0 + kTile);
    std::vector<std::uint32_t> cols(static_cast<std::size_t>(wrows * kTile));
    for (std::int64_t n = n0; n < n1; ++n)
      pack_bits32(q.codes.row(n).data(), std::size_t(p.in), p.bits, cols.data() + (n - n0) * wrows);
    for (std::int64_t r = 0; r < wrows; ++r)
      for (std::int64_t n = n0; n < n1; ++n) p.qweight[std::size_t(r * p.out + n)] = std::int32_t(cols[std::size_t((n - n0) * wrows + r)]);
  }, p.in * kTile);
  return p;
}

}  // namespace lowbit
