// lowbit/pack/autoawq.hpp -- a quantized linear in AutoAWQ's GEMM layout (AutoAWQ awq/modules/linear/gemm.py
// WQLinear_GEMM.from_linear, awq/utils/packing_utils.py), the layout vLLM, Transformers and exllama read as
// quant_method "awq", version "gemm".  For a weight W [out, in] with groups of g input columns (g = in per channel):
//
//   qweight  int32 [in, out/8]     word (k, j) holds the codes of rows j*8 + kAwqOrder[i] at column k, at bits 4i
//   qzeros   int32 [in/g, out/8]   the same packing of the zero points, stored as they are (no offset)
//   scales   fp16  [in/g, out]     scales[k/g, n] = fp16(s[n, k/g])
//   dequant  W'[n, k] = (q[k, n] - z[k/g, n]) * scales[k/g, n]
//
// kAwqOrder = [0, 2, 4, 6, 1, 3, 5, 7] (AWQ_ORDER; its inverse [0, 4, 1, 5, 2, 6, 3, 7] unpacks).  AutoAWQ
// derives the codes from the fake-quantized weights as round((W + z s) / s); lowbit packs the method's codes
// themselves, which are those integers.  The only difference from the method's fake-quantized weights is the
// fp16 rounding of the scales: W' = (code - z) * fp16(s).
//
// What the layout cannot hold is refused with the tensor's name: widths other than 4 bits (AutoAWQ:
// "Only 4-bit are supported for now"), out not a multiple of 8, a group that does not divide in, GPTQ's
// act-order g_idx, the ggml grid's float zero, a zero outside the codes, a scale beyond fp16.  Symmetric grids
// are written with their constant zero 2^(b-1): the GEMM kernels always subtract qzeros.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/parallel.hpp"
#include "../quant/quantized.hpp"

namespace lowbit {

inline constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};
// The field (of 8) that holds row n % 8 of a word's 8 rows: the inverse order [0, 4, 1, 5, 2, 6, 3, 7].
constexpr int kAwqPosition(int row_in_word) { return row_in_word % 2 ? 4 + row_in_word / 2 : row_in_word / 2; }

struct AwqPacked {
  std::int64_t in = 0, out = 0, groups = 0, group_size = 0;  // group_size: columns per group (in per channel)
  std::vector<std::int32_t> qweight;  // [in, out/8]
  std::vector<std::int32_t> qzeros;   // [groups, out/8]
  std::vector<std::uint16_t> scales;  // [groups, out], fp16 bits
};

// Why the layout cannot hold a weight of this shape and group size (empty when it can).
inline std::string autoawq_shape_problem(std::int64_t out, std::int64_t in, std::int64_t group) {
  if (out % 8) return "out_features " + std::to_string(out) + " is not a multiple of 8";
  if (group <= 0 || group > in) group = in;
  if (in % group) return "in_features " + std::to_string(in) + " is not a multiple of the group size " + std::to_string(group);
  return {};
}

namespace detail {
// fp16 bits of a group's scale; one that does not survive the conversion is an error naming it.
inline std::uint16_t packed_scale(float s, std::string_view where, Eigen::Index r, Eigen::Index g) {
  const std::uint16_t h = float_to_half_bits(s);
  const float back = half_bits_to_float(h);
  if (!std::isfinite(back) || (back == 0.0f && s != 0.0f))
    fail(where, ": scale ", s, " of row ", r, " group ", g, " is not representable in fp16");
  return h;
}
}  // namespace detail

inline AwqPacked pack_autoawq(const QuantizedLinear& q, std::string_view where = "weight") {
  if (q.bits != 4) fail(where, ": the AutoAWQ GEMM layout holds 4-bit codes only (this weight has ", q.bits, ")");
  if (q.act_order()) fail(where, ": act-order (g_idx) cannot be written in the AutoAWQ layout; use the GPTQ layout");
  AwqPacked p;
  p.out = q.rows(), p.in = q.cols();
  p.group_size = q.groups() == 1 ? p.in : q.params.group;
  if (const std::string why = autoawq_shape_problem(p.out, p.in, p.group_size); !why.empty()) fail(where, ": ", why);
  p.groups = p.in / p.group_size;
  if (q.groups() != p.groups) fail(where, ": ", q.groups(), " groups per row, expected ", p.groups);
  const std::int64_t words = p.out / 8;
  p.qweight.assign(std::size_t(p.in * words), 0);
  p.qzeros.assign(std::size_t(p.groups * words), 0);
  p.scales.assign(std::size_t(p.groups * p.out), 0);
  for (Eigen::Index n = 0; n < p.out; ++n)
    for (Eigen::Index g = 0; g < p.groups; ++g) {
      p.scales[std::size_t(g * p.out + n)] = detail::packed_scale(q.params.at(n, g).scale, where, n, g);
      const int z = q.zero_code(n, g, where);
      p.qzeros[std::size_t(g * words + n / 8)] |= std::int32_t(std::uint32_t(z) << (4 * kAwqPosition(n % 8)));
    }
  // qweight in tiles of 16 words (128 rows): for each input column k the tile's words are one 64-byte run of row
  // k, and the tile's 128 rows of codes stream in order
  constexpr std::int64_t kTile = 16;
  parallel_for((words + kTile - 1) / kTile, [&](std::int64_t tile) {
    const std::int64_t j0 = tile * kTile, j1 = std::min(words, j0 + kTile);
    for (std::int64_t k = 0; k < p.in; ++k)
      for (std::int64_t j = j0; j < j1; ++j) {
        std::uint32_t w = 0, over = 0;
        for (int i = 0; i < 8; ++i) {
          const std::uint32_t c = q.codes(j * 8 + kAwqOrder[std::size_t(i)], k);
          over |= c;
          w |= c << (4 * i);
        }
        if (over > 15) fail(where, ": a code in rows ", j * 8, "..", j * 8 + 7, " column ", k, " does not fit in 4 bits");
        p.qweight[std::size_t(k * words + j)] = std::int32_t(w);
      }
  }, p.in * 128);
  return p;
}

}  // namespace lowbit
