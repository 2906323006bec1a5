// lowbit/quant/quantized.hpp -- QuantizedLinear, the quantized form of one weight matrix: integer codes, the
// scale and zero of every group, bits, group size, symmetry, grid, and GPTQ's g_idx / perm.  Fake-quant floats,
// the Hugging Face writer and the packed exports (AutoAWQ, GPTQ, GGUF) all derive from it:
//
//   W'[r, c] = (codes[r, c] - zero[r, g(c)]) * scale[r, g(c)]        (Grid::ggml asymmetric: code * scale + zero)
//   g(c)     = g_idx[c] when present (GPTQ act_order), else c / group
//
// dequantize() reproduces the method's fake-quantized weights bit for bit (tests/quant/test_quantized.cpp).
#pragma once

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
