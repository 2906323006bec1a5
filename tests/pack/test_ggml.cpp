// ggml's block formats (pack/ggml.hpp): the reference quantizers against llama.cpp's structs and loops written
// out here (ggml-common.h block_q4_0 / block_q4_1 / block_q8_0, ggml-quants.c quantize_row_*_ref), lowbit's RTN on
// the ggml grid equal to them byte for byte, and a method's own codes stored losslessly: the file dequantizes to
// (code - z) s with s (and -z s) rounded to fp16, nothing else.
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>
#include <lowbit/pack/ggml.hpp>

#include <cfloat>
#include <cstring>
#include <random>

using namespace lowbit;

namespace {
// ggml-common.h
struct block_q4_0 {
  std::uint16_t d;
  std::uint8_t qs[16];
};
struct block_q4_1 {
  std::uint16_t d, m;
  std::uint8_t qs[16];
};
struct block_q8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
static_assert(sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20 && sizeof(block_q8_0) == 34, "ggml's packed sizes");

// ggml-quants.c, the loops as written there
void ref_q4_0(const float* x, block_q4_0* y, int k) {
  for (int i = 0; i < k / 32; i++) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++) {
      const float v = x[i * 32 + j];
      if (amax < fabsf(v)) {
        amax = fabsf(v);
        max = v;
      }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = float_to_half_bits(d);
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[i * 32 + 0 + j] * id;
      const float x1 = x[i * 32 + 16 + j] * id;
      const std::uint8_t xi0 = std::uint8_t(std::min(15, int(std::int8_t(x0 + 8.5f))));
      const std::uint8_t xi1 = std::uint8_t(std::min(15, int(std::int8_t(x1 + 8.5f))));
      y[i].qs[j] = std::uint8_t(xi0 | (xi1 << 4));
    }
  }
}
void ref_q4_1(const float* x, block_q4_1* y, int k) {
  for (int i = 0; i < k / 32; i++) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
      const float v = x[i * 32 + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = float_to_half_bits(d);
    y[i].m = float_to_half_bits(min);
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[i * 32 + 0 + j] - min) * id;
      const float x1 = (x[i * 32 + 16 + j] - min) * id;
      const std::uint8_t xi0 = std::uint8_t(std::min(15, int(std::int8_t(x0 + 0.5f))));
      const std::uint8_t xi1 = std::uint8_t(std::min(15, int(std::int8_t(x1 + 0.5f))));
      y[i].qs[j] = std::uint8_t(xi0 | (xi1 << 4));
    }
  }
}
void ref_q8_0(const float* x, block_q8_0* y, int k) {
  for (int i = 0; i < k / 32; i++) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = std::max(amax, fabsf(x[i * 32 + j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = float_to_half_bits(d);
    for (int j = 0; j < 32; ++j) y[i].qs[j] = std::int8_t(roundf(x[i * 32 + j] * id));
  }
}

MatrixRM weights(Eigen::Index r, Eigen::Index c, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 0.05f);
  MatrixRM W(r, c);
  for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = n(g);
  W(0, 3) = 0.4f, W(1, 40) = -0.5f;  // outliers
  W.row(2).head(32).setZero();        // an all-zero block (d = 0)
  return W;
}
std::vector<std::uint8_t> row_bytes(GgmlType t, const float* x, std::int64_t n) {
  std::vector<std::uint8_t> b(ggml_row_bytes(t, n));
  ggml_quantize_row(t, x, b.data(), n);
  return b;
}
}  // namespace

TEST_CASE("ggml's reference quantizers, byte for byte, and their dequantization", "[pack][ggml]") {
  const MatrixRM W = weights(6, 128, 1);
  for (Eigen::Index r = 0; r < W.rows(); ++r) {
    const float* x = W.row(r).data();
    block_q4_0 a[4];
    block_q4_1 b[4];
    block_q8_0 c[4];
    ref_q4_0(x, a, 128), ref_q4_1(x, b, 128), ref_q8_0(x, c, 128);
    REQUIRE(std::memcmp(row_bytes(GgmlType::q4_0, x, 128).data(), a, sizeof a) == 0);
    REQUIRE(std::memcmp(row_bytes(GgmlType::q4_1, x, 128).data(), b, sizeof b) == 0);
    REQUIRE(std::memcmp(row_bytes(GgmlType::q8_0, x, 128).data(), c, sizeof c) == 0);
    // dequantize_row_q4_0 / q4_1 / q8_0: nibble j is element j, the high nibble element j + 16
    float y[128];
    ggml_dequantize_row(GgmlType::q4_0, reinterpret_cast<const std::uint8_t*>(a), y, 128);
    for (int i = 0; i < 128; ++i) {
      const int blk = i / 32, j = i % 32, q = j < 16 ? a[blk].qs[j] & 15 : a[blk].qs[j - 16] >> 4;
      REQUIRE(y[i] == float(q - 8) * half_bits_to_float(a[blk].d));
      // half a step inside [-8d, 7d]; the one value at +8d (the opposite of the signed max) clamps to 7d: one step
      REQUIRE(std::abs(y[i] - x[i]) <= std::abs(half_bits_to_float(a[blk].d)) * 1.01f + 1e-7f);
    }
    ggml_dequantize_row(GgmlType::q4_1, reinterpret_cast<const std::uint8_t*>(b), y, 128);
    for (int i = 0; i < 128; ++i) {
      const int blk = i / 32, j = i % 32, q = j < 16 ? b[blk].qs[j] & 15 : b[blk].qs[j - 16] >> 4;
      REQUIRE(y[i] == float(q) * half_bits_to_float(b[blk].d) + half_bits_to_float(b[blk].m));
    }
    ggml_dequantize_row(GgmlType::q8_0, reinterpret_cast<const std::uint8_t*>(c), y, 128);
    for (int i = 0; i < 128; ++i) REQUIRE(y[i] == float(c[i / 32].qs[i % 32]) * half_bits_to_float(c[i / 32].d));
  }
  // a hand-computed Q4_0 block: 0, 1, ..., 15 then -16 .. -1 over 2: max |x| is -8 -> d = 1, q = x + 8
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = j < 16 ? float(j) / 2 : float(j - 32) / 2;
  const std::vector<std::uint8_t> q = row_bytes(GgmlType::q4_0, x, 32);
  REQUIRE(half_bits_to_float(std::uint16_t(q[0] | q[1] << 8)) == 1.0f);
  // element 0 (0 -> code 8) low, element 16 (-8 -> code 0) high; element 15 (7.5 -> trunc(16) = 16 -> min 15)
  REQUIRE(q[2] == 0x08);
  REQUIRE((q[2 + 15] & 15) == 15);
  REQUIRE_THROWS_WITH(ggml_row_bytes(GgmlType::q4_0, 172), Catch::Contains("172 elements"));
}

TEST_CASE("RTN on the ggml grid is llama.cpp's Q4_0 / Q4_1, and its codes store losslessly", "[pack][ggml]") {
  const MatrixRM W = weights(8, 128, 2);
  // symmetric ggml grid, 4 bits, groups of 32 = Q4_0; asymmetric = Q4_1
  for (bool sym : {true, false}) {
    INFO((sym ? "Q4_0" : "Q4_1"));
    const GgmlType t = sym ? GgmlType::q4_0 : GgmlType::q4_1;
    QuantizedLinear ql;
    if (sym) ql = quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric>(32, Grid::ggml), W);
    else ql = quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(32, Grid::ggml), W);
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
      std::vector<std::uint8_t> codes(ggml_row_bytes(t, 128));
      REQUIRE(ggml_pack_codes(t, ql, r, codes.data()));
      REQUIRE(codes == row_bytes(t, W.row(r).data(), 128));
    }
  }
  // other grids and groups: the stored row is (code - z) s with s and -z s in fp16
  const auto check_lossless = [&](const QuantizedLinear& ql, GgmlType t) {
    const MatrixRM fake = ql.dequantize();
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
      std::vector<std::uint8_t> b(ggml_row_bytes(t, 128));
      REQUIRE(ggml_pack_codes(t, ql, r, b.data()));
      std::vector<float> y(128);
      ggml_dequantize_row(t, b.data(), y.data(), 128);
      for (Eigen::Index c = 0; c < 128; ++c) {
        const GroupParams p = ql.params.at(r, ql.group_of(c));
        const float code = float(ql.codes(r, c)), s = round_to_half(p.scale);
        const float want = t == GgmlType::q4_1 ? code * s + round_to_half(-p.zero * p.scale) : (code - p.zero) * s;
        REQUIRE(y[std::size_t(c)] == want);
        REQUIRE(std::abs(y[std::size_t(c)] - fake(r, c)) <= 2e-3f * (std::abs(fake(r, c)) + p.scale * 16));
      }
    }
  };
  check_lossless(quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(128, Grid::minmax), W), GgmlType::q4_1);
  check_lossless(quantize_linear(Quantizer<Bits<3>, PerGroup<dynamic_group>, Asymmetric>(32, Grid::gptq), W), GgmlType::q4_1);
  check_lossless(quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric>(64, Grid::gptq), W), GgmlType::q4_0);
  check_lossless(quantize_linear(Quantizer<Bits<2>, PerGroup<dynamic_group>, Symmetric>(32, Grid::minmax), W), GgmlType::q4_0);
  check_lossless(quantize_linear(Quantizer<Bits<8>, PerGroup<dynamic_group>, Symmetric>(32, Grid::minmax), W), GgmlType::q8_0);
  // not the block format: a block of 32 spans two groups of 16; an asymmetric grid as Q4_0 (code - z reaches past
  // 7); 8 bits as Q4_1; GPTQ's act-order groups (a block's columns in different groups)
  std::vector<std::uint8_t> b(ggml_row_bytes(GgmlType::q8_0, 128), 0xAB);
  const std::vector<std::uint8_t> untouched = b;
  REQUIRE_FALSE(ggml_pack_codes(GgmlType::q4_1, quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(16, Grid::minmax), W), 0, b.data()));
  REQUIRE_FALSE(ggml_pack_codes(GgmlType::q4_0, quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(32, Grid::minmax), W), 0, b.data()));
  REQUIRE_FALSE(ggml_pack_codes(GgmlType::q4_1, quantize_linear(Quantizer<Bits<8>, PerGroup<dynamic_group>, Symmetric>(32, Grid::minmax), W), 0, b.data()));
  QuantizedLinear act = quantize_linear(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(32, Grid::gptq), W);
  act.g_idx.resize(128);
  for (int c = 0; c < 128; ++c) act.g_idx[std::size_t(c)] = (c * 7) % 3;  // columns of a block in different groups
  REQUIRE_FALSE(ggml_pack_codes(GgmlType::q4_1, act, 0, b.data()));
  REQUIRE(b == untouched);  // nothing written when refused
}
