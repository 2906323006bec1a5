// Weight-activation quantization in the block loop: the activation-quantized forward, static ranges, Q/K/V
// quantization, and the SmoothQuant transform (which must leave the float function unchanged).
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {
const char* kModel = "models/stories260K/stories260K.bin";
const char* kCalib = "data/tinystories/tinystories_val.calib.tokens.i32";
using W8 = Quantizer<Bits<8>, PerChannel, Symmetric>;

Windows calib(int n, int L) { return sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), n, L); }
std::vector<int> concat(const Windows& w) {
  std::vector<int> t;
  for (const auto& x : w) t.insert(t.end(), x.begin(), x.end());
  return t;
}
float max_rel_diff(const MatrixRM& a, const MatrixRM& b) { return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff(); }
}  // namespace

TEST_CASE("per-token W8A8: the quantized model fake-quantizes every linear's input, as a per-linear hook does", "[data][pipeline][act]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  PipelineOptions opt;
  opt.act.quant.input = ActQuant{8, ActGranularity::per_token, true, Grid::minmax};
  auto chain = make_method_chain("rtn", W8());
  ModelSink wa(fp);
  quantize_model(fp, {}, chain, wa, opt);
  auto chain_w = make_method_chain("rtn", W8());
  ModelSink wonly(fp);
  quantize_model(fp, {}, chain_w, wonly);
  for (const Block& b : wa.fake.blocks) REQUIRE(b.act.input.bits == 8);
  // independent: the weight-only model with a hook that quantizes each linear's own input with the compiled
  // per-token quantizer (SmoothQuant's quantize_activation_per_token_absmax)
  BlockHooks hook;
  hook.transform_input = [](Role, MatrixRM& in) { fake_quant(Quantizer<Bits<8>, PerToken, Symmetric>{}, in, in); };
  const std::vector<int> toks = concat(calib(2, 32));
  const MatrixRM a = forward(wa.fake, toks, 32), b = forward(wonly.fake, toks, 32, &hook);
  REQUIRE(a == b);
  REQUIRE(a != forward(wonly.fake, toks, 32));
}

TEST_CASE("Q/K/V quantization per (token, head) after RoPE changes the attention a little at 8 bits, a lot at 2", "[data][model][act]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  Model m = load_llama2c(lowbit_test::shared_path(kModel));
  const std::vector<int> toks = concat(calib(2, 32));
  const MatrixRM ref = forward(m, toks, 32);
  auto with_bits = [&](int bits) {
    Model q = m;
    for (Block& b : q.blocks) b.act.q = b.act.k = b.act.v = ActQuant{bits, ActGranularity::per_token, false, Grid::minmax};
    return max_rel_diff(forward(q, toks, 32), ref);
  };
  const float d8 = with_bits(8), d2 = with_bits(2);
  REQUIRE(d8 > 0.0f);
  REQUIRE(d8 < 0.05f);  // the largest change over 64 x 512 logits (8-bit per-token input quantization: 0.022)
  REQUIRE(d2 > 10 * d8);
}

TEST_CASE("static per-tensor activation ranges are calibrated on the quantized chain", "[data][pipeline][act]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(4, 64);
  PipelineOptions opt;
  opt.act.quant.input = ActQuant{8, ActGranularity::per_tensor, false, Grid::minmax};
  auto chain = make_method_chain("rtn", W8());
  ModelSink out(fp);
  const PipelineReport rep = quantize_model(fp, w, chain, out, opt);
  REQUIRE(rep.carried[std::size_t(Chain::quantized)]);
  for (const Block& b : out.fake.blocks)
    for (const ActRange& r : b.act.range) {
      REQUIRE(r.set);
      REQUIRE(r.lo < 0.0f);
      REQUIRE(r.hi > 0.0f);
    }
  // block 0's attn_norm input does not depend on any quantization: its range is that of rmsnorm(embeddings),
  // computed here by hand
  const MatrixRM x = embed(fp, concat(w));
  double lo = 1e30, hi = -1e30;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double inv = 1.0 / std::sqrt(double(x.row(t).squaredNorm()) / fp.cfg.dim + fp.cfg.norm_eps);
    for (int j = 0; j < fp.cfg.dim; ++j) {
      const double v = x(t, j) * inv * fp.blocks[0].attn_norm[j];
      lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  REQUIRE(out.fake.blocks[0].act.range[0].lo == Approx(lo).epsilon(1e-5));
  REQUIRE(out.fake.blocks[0].act.range[0].hi == Approx(hi).epsilon(1e-5));
  // the static model evaluates (every range is used) and stays close to the float model at 8 bits
  const std::vector<int> toks = concat(calib(2, 32));
  REQUIRE(max_rel_diff(forward(out.fake, toks, 32), forward(fp, toks, 32)) < 0.1f);
  // without calibration windows a static run is refused before any work
  auto chain2 = make_method_chain("rtn", W8());
  ModelSink none(fp);
  REQUIRE_THROWS_WITH(quantize_model(fp, {}, chain2, none, opt), Catch::Contains("calibration windows"));
}

TEST_CASE("SmoothQuant leaves the float function unchanged and balances activation and weight ranges", "[data][pipeline][smoothquant]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(8, 64);
  const std::vector<int> toks = concat(calib(2, 32));
  const MatrixRM ref = forward(fp, toks, 32);
  for (bool all : {false, true})
    for (float alpha : {0.5f, 0.8f}) {
      INFO("alpha " << alpha << " all_linears " << all);
      MethodOptions mo;
      mo.smooth = {alpha, all};
      auto chain = make_method_chain("smoothquant", W8(), mo);
      ModelSink out(fp, {false, true, false});
      quantize_model(fp, w, chain, out);
      // the transformed (smoothed, not quantized) model computes the same logits to float tolerance
      REQUIRE(max_rel_diff(forward(out.transformed, toks, 32), ref) < 1e-4f);
      // and its weights really changed: every smoothed group has scales
      REQUIRE(out.transformed.blocks[0].attn_norm != fp.blocks[0].attn_norm);
      REQUIRE(out.transformed.blocks[0].up.W != fp.blocks[0].up.W);
      REQUIRE((out.transformed.blocks[0].down.W != fp.blocks[0].down.W) == all);  // up -> down only with all_linears
      if (alpha != 0.5f || all) continue;
      // alpha 0.5: each smoothed channel's activation max equals its weight max, sqrt(act * w) on both sides
      // (statistics on the same calibration input: block 0's, the embeddings)
      MatrixRM x = embed(fp, concat(w));
      const auto act = group_input_absmax(fp.cfg, out.transformed.blocks[0], x, 64, nullptr);
      const Block& t = out.transformed.blocks[0];
      const Eigen::VectorXf wq = weight_absmax({&t.q.W, &t.k.W, &t.v.W}), wg = weight_absmax({&t.gate.W, &t.up.W});
      for (int j = 0; j < fp.cfg.dim; ++j) {
        REQUIRE(act[0][j] == Approx(wq[j]).epsilon(1e-4));
        REQUIRE(act[2][j] == Approx(wg[j]).epsilon(1e-4));
      }
    }
  MethodOptions bad;
  bad.smooth.alpha = 1.5f;
  REQUIRE_THROWS_WITH(make_method_chain("smoothquant", W8(), bad), Catch::Contains("alpha 1.5"));
}

TEST_CASE("smoothquant+gptq runs GPTQ on the smoothed weights", "[data][pipeline][smoothquant][gptq]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(8, 64);
  using W4 = Quantizer<Bits<4>, PerChannel, Asymmetric>;
  auto sq = make_method_chain("smoothquant", W4(Grid::gptq));
  ModelSink trans(fp, {false, true, false});
  quantize_model(fp, w, sq, trans);
  // GPTQ on the saved smoothed model, as a second run
  auto g = make_method_chain("gptq", W4(Grid::gptq));
  ModelSink two(trans.transformed);
  quantize_model(trans.transformed, w, g, two);
  auto both = make_method_chain("smoothquant+gptq", W4(Grid::gptq));
  ModelSink one(fp);
  quantize_model(fp, w, both, one);
  for (std::size_t i = 0; i < one.fake.blocks.size(); ++i)
    for (Role r : all_roles) REQUIRE(one.fake.blocks[i].linear(r).W == two.fake.blocks[i].linear(r).W);
}
