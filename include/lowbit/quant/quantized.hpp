// lowbit/quant/quantized.hpp -- QuantizedLinear, the quantized form of one weight matrix: integer codes, the
// scale and zero of every group, bits, group size, symmetry, grid, and GPTQ's g_idx / perm.  Fake-quant floats,
// the Hugging Face writer and the packed exports (AutoAWQ, GPTQ, GGUF) all derive from it:
//
//   W'[r, c] = (codes[r, c] - zero[r, g(c)]) * scale[r, g(c)]        (Grid::ggml asymmetric: code * scale + zero)
//   g(c)     = g_idx[c] when present (GPTQ act_order), else c / group
//
// dequantize() reproduces the method's fake-quantized weights bit for bit (tests/quant/test_quantized.cpp).
#pragma once

#include <cmath>
#include <string_view>
#include <vector>

#include "quantizer.hpp"

namespace lowbit {

struct QuantizedLinear {
  int bits = 0;
  bool symmetric = false;
  Grid grid = Grid::minmax;
  CodesRM codes;           // [out, in], original column order
  QuantParams params;      // scale / zero [out, ngroups]; params.group = columns per group (in when per channel)
  std::vector<int> g_idx;  // [in] group of each column (GPTQ); empty = column / group
  std::vector<int> perm;   // [in] GPTQ's processing order (act_order); empty = identity

  Eigen::Index rows() const { return codes.rows(); }
  Eigen::Index cols() const { return codes.cols(); }
  int group_of(Eigen::Index c) const {
    return g_idx.empty() ? int(c / params.group) : g_idx[static_cast<std::size_t>(c)];
  }
  // Whether columns are grouped other than in runs of params.group (GPTQ's act_order g_idx; GPTQ fills g_idx
  // always, and without act_order -- or with static groups -- it is column / group).
  bool act_order() const {
    for (std::size_t c = 0; c < g_idx.size(); ++c)
      if (g_idx[c] != int(Eigen::Index(c) / params.group)) return true;
    return false;
  }
  // Scale / zero groups per row (1 per channel or per tensor; a per-tensor pair stands for every row).
  Eigen::Index groups() const { return params.per_tensor ? 1 : params.scale.cols(); }
  // Whether every zero point is an integer code (the packed formats store zeros as codes; Grid::ggml's
  // asymmetric zero is a float offset).
  bool integer_zeros() const { return !(grid == Grid::ggml && !symmetric); }

  // The zero point of (r, g) as a code in [0, 2^bits - 1]; `where` names the tensor in the error.  GPTQ's and
  // OmniQuant's asymmetric zeros are not clamped (quant/grid.hpp), so a group whose range excludes 0 can have
  // a zero outside the codes, which no packed format holds.
  int zero_code(Eigen::Index r, Eigen::Index g, std::string_view where) const {
    if (!integer_zeros()) fail(where, ": the ggml grid's asymmetric zero is a float offset, not an integer code");
    const float z = params.at(r, g).zero;
    if (!(z >= 0.0f && z <= float(qmax_of(bits)) && z == std::floor(z)))
      fail(where, ": zero point ", z, " of row ", r, " group ", g, " is not a code in [0, ", qmax_of(bits), "]");
    return int(z);
  }

  MatrixRM dequantize() const {
    MatrixRM out(rows(), cols());
    const bool plain = g_idx.empty() && !params.per_tensor && !(grid == Grid::ggml && !symmetric);
    parallel_for(rows(), [&](std::int64_t r) {
      const std::uint8_t* c = codes.row(r).data();
      float* y = out.row(r).data();
      if (plain) {
        for (std::int64_t c0 = 0, g = 0; c0 < cols(); c0 += params.group, ++g)
          simd::dequantize_row(c + c0, y + c0, std::min<std::int64_t>(params.group, cols() - c0), params.scale(r, g),
                               params.zero(r, g));
      } else {
        for (std::int64_t k = 0; k < cols(); ++k)
          y[k] = dequantize_value(grid, symmetric, float(c[k]), params.at(r, group_of(k)));
      }
    }, cols());
    return out;
  }
};

// The same quantized weight with its rows reordered: row r of the result is row src[r] of q (the codes and their
// groups' scales and zeros move together; a per-tensor pair is shared).
inline QuantizedLinear select_rows(const QuantizedLinear& q, const std::vector<Eigen::Index>& src) {
  if (Eigen::Index(src.size()) != q.rows()) fail("select_rows: ", src.size(), " rows given for a ", q.rows(), "-row weight");
  QuantizedLinear out = q;
  for (Eigen::Index r = 0; r < q.rows(); ++r) {
    out.codes.row(r) = q.codes.row(src[std::size_t(r)]);
    if (q.params.per_tensor) continue;
    out.params.scale.row(r) = q.params.scale.row(src[std::size_t(r)]);
    out.params.zero.row(r) = q.params.zero.row(src[std::size_t(r)]);
  }
  return out;
}

// Round-to-nearest of one weight under q: min-max parameters of every group (optionally with clip ratios) and
// the codes.  dequantize() equals fake_quant(q, W) bit for bit.
template <class Q>
QuantizedLinear quantize_linear(const Q& q, ConstMatrixRef W, std::string_view name = "weight", const ClipRatios& clip = {}) {
  QuantizedLinear ql;
  ql.bits = Q::bits;
  ql.symmetric = Q::symmetric;
  ql.grid = q.grid;
  ql.params = compute_params(q, W, clip, name);
  quantize(q, W, ql.params, ql.codes, name);
  return ql;
}

}  // namespace lowbit
