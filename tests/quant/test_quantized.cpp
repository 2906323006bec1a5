// QuantizedLinear: codes + parameters dequantize to exactly the fake-quantized weights, for RTN on every grid
// and granularity and for GPTQ (groups, act_order g_idx, static groups, per channel).
#include <catch2/catch.hpp>
#include <lowbit/algorithms/gptq.hpp>
#include <lowbit/quant/quantized.hpp>
#include <lowbit/quant/spec.hpp>
#include <random>

using namespace lowbit;

namespace {
MatrixRM randn(Eigen::Index r, Eigen::Index c, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  MatrixRM m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g) * (1.0f + 4.0f * float(i % 17 == 0));
  return m;
}
}  // namespace

TEST_CASE("RTN: codes + params dequantize to the fake-quantized weight bit for bit", "[quantized]") {
  const MatrixRM W = randn(40, 172, 3);
  for (const char* s : {"w4a16g32-ragged", "w3a16g32-sym-ragged", "w2a16g64-gptq-ragged", "w4a16g32-omniquant-ragged",
                        "w8a16", "w4a16-sym", "w5a16g16-gptq-sym-ragged"}) {
    INFO(s);
    visit(parse_spec(s), [&](auto q) {
      MatrixRM fq(W.rows(), W.cols());
      fake_quant(q, W, fq);
      const QuantizedLinear ql = quantize_linear(q, W, s);
      REQUIRE(ql.bits == decltype(q)::bits);
      REQUIRE(ql.codes.maxCoeff() <= (1 << ql.bits) - 1);
      REQUIRE(ql.dequantize() == fq);
    });
  }
  // the ggml grid (llama.cpp's Q4_0 / Q4_1 formulas), blocks of 32
  for (const char* s : {"w4a16g32-ggml", "w4a16g32-sym-ggml", "w8a16g32-sym-ggml"}) {
    INFO(s);
    const MatrixRM W32 = randn(8, 128, 5);
    visit(parse_spec(s), [&](auto q) {
      MatrixRM fq(W32.rows(), W32.cols());
      fake_quant(q, W32, fq);
      REQUIRE(quantize_linear(q, W32, s).dequantize() == fq);
    });
  }
}

TEST_CASE("GPTQ: codes + params + g_idx dequantize to GPTQ's own weights bit for bit", "[quantized][gptq]") {
  const MatrixRM W = randn(48, 256, 7), Z = randn(1024, 256, 8);
  HessianAccumulator acc(256);
  acc.add_batch(Z, 4);
  const Eigen::MatrixXd H = acc.hessian();
  struct Case { const char* spec; bool act_order, static_groups; };
  for (const Case c : {Case{"w4a16g64-gptq", false, false}, Case{"w4a16g64-gptq", true, false}, Case{"w3a16g32-gptq-sym", true, true},
                       Case{"w4a16-gptq", true, false}, Case{"w2a16g128-gptq", false, false}}) {
    INFO(c.spec << " act_order " << c.act_order << " static " << c.static_groups);
    visit(parse_spec(c.spec), [&](auto q) {
      GptqOptions o;
      o.act_order = c.act_order;
      o.static_groups = c.static_groups;
      const GptqResult r = gptq_quantize(q, W, H, o);
      QuantizedLinear ql;
      ql.bits = decltype(q)::bits;
      ql.symmetric = decltype(q)::symmetric;
      ql.grid = q.grid;
      ql.codes = r.codes;
      ql.params = r.params;
      ql.g_idx = r.g_idx;
      REQUIRE(ql.dequantize() == r.Q);
      // act_order without static groups: g_idx is not column / group, so it must be what makes this work
      if (c.act_order && !c.static_groups && q.group_size > 0) {
        QuantizedLinear plain = ql;
        plain.g_idx.clear();
        REQUIRE_FALSE(plain.dequantize() == r.Q);
      }
    });
  }
}

TEST_CASE("the symmetric ggml grid fits a non-zero scale when a caller fits a group (regression)", "[quantized][ggml]") {
  // group_params' signed_max used to default to 0, which gave the symmetric ggml grid the scale -0: every
  // weight of AWQ's clip search candidates quantized to zero.
  const Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric> q(32, Grid::ggml);
  const float x[4] = {0.5f, -2.0f, 1.0f, 0.25f};
  const GroupParams p = q.fit(x, 4);
  REQUIRE(p.scale == 2.0f / 8.0f);  // llama.cpp Q4_0: d = max / -8 with max the signed value of largest |x|
  REQUIRE(q.fake_quant_value(-2.0f, p) == -2.0f);
  REQUIRE(q.fake_quant_value(1.0f, p) == 1.0f);
}
