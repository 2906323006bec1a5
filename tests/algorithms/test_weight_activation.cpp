// Weight-activation quantization in the block loop: the activation-quantized forward, static ranges, Q/K/V
// quantization, and the SmoothQuant transform (which must leave the float function unchanged).
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>

#include <numeric>
#include <random>

#include "support/shared_data.hpp"
#include "support/util.hpp"

using namespace lowbit;

namespace {
const char* kModel = "models/stories260K/stories260K.bin";
const char* kCalib = "data/tinystories/tinystories_val.calib.tokens.i32";
using W8 = Quantizer<Bits<8>, PerChannel, Symmetric>;

Windows calib(int n, int L) { return sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), n, L); }
using lowbit_test::concat;
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
  opt.act.quant.input = ActQuant{8, ActGranularity::per_tensor, false, Grid::minmax, /*static_range=*/true};
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

TEST_CASE("the shift (OS+ / PaddleSlim) leaves the float function unchanged and centres the shifted channels", "[data][pipeline][shift]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(8, 64);
  const std::vector<int> toks = concat(calib(2, 32));
  const MatrixRM ref = forward(fp, toks, 32);
  for (const char* chain : {"shift", "shift+smoothquant", "shift+pss", "os+"})
    for (bool all : {false, true})
      for (ShiftSampler sampler : {ShiftSampler::minmax, ShiftSampler::ema}) {
        INFO(chain << " all_linears " << all << " sampler " << to_string(sampler));
        MethodOptions mo;
        mo.shift = {sampler, all};
        mo.smooth.all_linears = all;
        mo.pss.all_linears = all;
        mo.pss.tokens = 64;
        mo.osplus.tokens = 64;
        auto c = make_method_chain(chain, W8(), mo);
        ModelSink out(fp, {false, true, false});
        quantize_model(fp, w, c, out);
        const Block& b = out.transformed.blocks[0];
        REQUIRE(b.shift[0].size() == fp.cfg.dim);  // every chain here shifts attn_norm's group
        REQUIRE(b.q.b.size() == b.q.W.rows());     // and the bias that carries W z was added
        REQUIRE(bool(b.shift[3].size()) == (all && std::string(chain) != "os+"));
        REQUIRE(max_rel_diff(forward(out.transformed, toks, 32), ref) < 1e-4f);
        if (std::string(chain) != "shift" || sampler != ShiftSampler::minmax) continue;
        // minmax shift: each channel of the shifted input is centred, min = -max (statistics on the same input)
        std::vector<MatrixRM> in(4);
        MatrixRM x = embed(fp, concat(w));
        block_forward_staged(fp.cfg, b, x, 64, nullptr, [&](int s, const MatrixRM& v) { in[std::size_t(s)] = v; });
        const Eigen::VectorXf mx = in[0].colwise().maxCoeff().transpose(), mn = in[0].colwise().minCoeff().transpose();
        REQUIRE((mx + mn).cwiseAbs().maxCoeff() < 1e-4f * mx.cwiseAbs().maxCoeff());
      }
  // the fake-quantized model is the same whether or not a sink also keeps the transformed one (the fake block is
  // then a separate copy that must carry the shifts and biases too), with static ranges calibrated on it
  {
    PipelineOptions opt;
    opt.act.quant.input = ActQuant{8, ActGranularity::per_tensor, true, Grid::minmax, true};
    MethodOptions mo;
    mo.shift.all_linears = true;
    auto c1 = make_method_chain("shift", W8(), mo), c2 = make_method_chain("shift", W8(), mo);
    ModelSink fake_only(fp), both(fp, {true, true, false});
    quantize_model(fp, w, c1, fake_only, opt);
    quantize_model(fp, w, c2, both, opt);
    const MatrixRM a = forward(fake_only.fake, toks, 32), b = forward(both.fake, toks, 32);
    REQUIRE(a == b);
    REQUIRE(max_rel_diff(a, ref) < 0.1f);
    for (std::size_t i = 0; i < fp.blocks.size(); ++i)
      for (std::size_t g = 0; g < 4; ++g) REQUIRE(both.fake.blocks[i].act.range[g].hi == fake_only.fake.blocks[i].act.range[g].hi);
  }
  // a shifted block has biases a Hugging Face LLaMA cannot hold: the writer refuses it instead of dropping them
  auto c = make_method_chain("shift", W8());
  ModelSink out(fp, {false, true, false});
  quantize_model(fp, w, c, out);
  const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/shifted_hf";
  REQUIRE_THROWS_WITH(save_hf(out.transformed, dir), Catch::Contains("block 0 shifts the input of attn_norm"));
}

TEST_CASE("W8A8 with smoothing and W4A4: smoothing helps where per-token activations lose the most", "[data][pipeline][act][smoothquant]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(16, 128);
  const std::vector<int> eval = concat(sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), 24, 128));
  auto ppl = [&](const Model& m) { return perplexity(m, eval, 128).ppl; };
  auto run = [&](const char* chain, int bits, float alpha) {
    using WQ = Quantizer<Bits<8>, PerChannel, Symmetric>;
    PipelineOptions opt;
    opt.act.quant.input = ActQuant{bits, ActGranularity::per_token, true, Grid::minmax};
    MethodOptions mo;
    mo.smooth.alpha = alpha;
    auto c = make_method_chain(chain, WQ(), mo);
    ModelSink out(fp);
    quantize_model(fp, w, c, out, opt);
    return ppl(out.fake);
  };
  const double p_fp = ppl(fp), p8 = run("rtn", 8, 0.5f), p8s = run("smoothquant", 8, 0.5f);
  const double p4 = run("rtn", 4, 0.5f), p4s = run("smoothquant", 4, 0.5f);
  INFO("fp " << p_fp << " w8a8 rtn " << p8 << " sq " << p8s << " w8a4 rtn " << p4 << " sq " << p4s);
  REQUIRE(p8 < p_fp * 1.02);
  REQUIRE(p8s < p_fp * 1.02);
  REQUIRE(p4 > p8 * 1.1);  // 4-bit activations cost a lot
  REQUIRE(p4s < p4);       // and smoothing recovers part of it
}

TEST_CASE("optimal 1-D k-means equals an exhaustive search over contiguous partitions", "[pss]") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 3 + trial % 8, k = 1 + trial % 4;
    Eigen::VectorXf v(n);
    for (int i = 0; i < n; ++i) v[i] = u(rng) * (i % 3 == 0 ? 10.0f : 1.0f);
    const std::vector<int> lab = kmeans_1d(v, k);
    auto sse = [&](const std::vector<int>& l) {
      double t = 0;
      for (int c = 0; c < 8; ++c) {
        double s = 0, m = 0;
        for (int i = 0; i < n; ++i)
          if (l[std::size_t(i)] == c) s += v[i], m += 1;
        for (int i = 0; i < n; ++i)
          if (l[std::size_t(i)] == c) t += (v[i] - s / m) * (v[i] - s / m);
      }
      return t;
    };
    // exhaustive: every way of cutting the sorted values into k runs
    std::vector<int> idx(static_cast<std::size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] < v[b]; });
    double best = 1e30;
    const int kk = std::min(k, n);
    for (unsigned mask = 0; mask < (1u << (n - 1)); ++mask) {
      if (__builtin_popcount(mask) != kk - 1) continue;
      std::vector<int> l(static_cast<std::size_t>(n));
      int c = 0;
      for (int i = 0; i < n; ++i) {
        l[std::size_t(idx[std::size_t(i)])] = c;
        if (i < n - 1 && (mask >> i & 1u)) ++c;
      }
      best = std::min(best, sse(l));
    }
    REQUIRE(sse(lab) == Approx(best).margin(1e-9));
    // labels rise with the values (ascending centroids)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        if (v[i] < v[j]) REQUIRE(lab[std::size_t(i)] <= lab[std::size_t(j)]);
  }
}

TEST_CASE("PSS finds the brute-force scales on a synthetic layer with planted outlier channels", "[pss]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int N = 64, in = 24, out = 16;
  MatrixRM X(N, in), W(out, in);
  for (int t = 0; t < N; ++t)
    for (int j = 0; j < in; ++j) X(t, j) = nd(rng) * (j % 8 == 3 ? 40.0f : j % 8 == 5 ? 6.0f : 1.0f);
  for (int o = 0; o < out; ++o)
    for (int j = 0; j < in; ++j) W(o, j) = nd(rng) * 0.1f;
  const Eigen::VectorXf act = X.cwiseAbs().colwise().maxCoeff().transpose();
  // 4-bit per-tensor activations and 4-bit per-channel weights, written here (symmetric abs-max, +-7)
  auto q4 = [](MatrixRM& m, bool per_row) {
    auto quant_range = [](auto&& v, float amax) {
      const double s = std::max(double(amax), 1e-5) / 7.0;
      for (Eigen::Index i = 0; i < v.size(); ++i) v[i] = float(std::clamp(std::nearbyint(v[i] / s), -7.0, 7.0) * s);
    };
    if (per_row)
      for (Eigen::Index r = 0; r < m.rows(); ++r) {
        Eigen::VectorXf row = m.row(r).transpose();
        quant_range(row, row.cwiseAbs().maxCoeff());
        m.row(r) = row.transpose();
      }
    else {
      Eigen::Map<Eigen::VectorXf> all(m.data(), m.size());
      quant_range(all, all.cwiseAbs().maxCoeff());
    }
  };
  const ActQuant a4{4, ActGranularity::per_tensor, true, Grid::minmax};
  const Quantizer<Bits<4>, PerChannel, Symmetric> wq4;
  PssOptions o;
  o.k_piece = 3;
  const PssResult r = pss_search(X, act, W, [&](MatrixRM& w) { fake_quant(wq4, w, w); },
                                 [&](MatrixRM& x) { fake_quant_tensor(a4, x, "x"); }, o);
  REQUIRE(r.k == 3);
  // the planted channels form their own pieces: the 40x ones the top piece, the 6x ones the middle
  const std::vector<int> lab = kmeans_1d(act, 3);
  for (int j = 0; j < in; ++j) REQUIRE(lab[std::size_t(j)] == (j % 8 == 3 ? 2 : j % 8 == 5 ? 1 : 0));
  // brute force in double with the quantizers written above: piece by piece, every candidate
  MatrixRM Y = X * W.transpose();
  const Eigen::VectorXf wmax = W.cwiseAbs().colwise().maxCoeff().transpose();
  Eigen::VectorXf s = Eigen::VectorXf::Ones(in);
  std::vector<float> cands;
  for (int i = 21; i <= 79; ++i) cands.push_back(float(i) / 100.0f);
  for (float c = 1.0f; c <= 5.5f; c += 0.5f) cands.push_back(c);
  REQUIRE(cands == pss_candidates(o));
  for (int p = 0; p < 3; ++p) {
    double best = 1e300;
    Eigen::VectorXf bs = s;
    for (float c : cands) {
      Eigen::VectorXf t = s;
      for (int j = 0; j < in; ++j)
        if (lab[std::size_t(j)] == p) t[j] = c < 1.0f ? std::max(1e-5f, std::pow(act[j], c) / std::pow(wmax[j], 1.0f - c)) : c;
      MatrixRM xs = X, ws = W;
      for (int j = 0; j < in; ++j) xs.col(j) /= t[j], ws.col(j) *= t[j];
      q4(xs, false);
      q4(ws, true);
      const double l = (Y.cast<double>() - xs.cast<double>() * ws.cast<double>().transpose()).squaredNorm() / double(Y.size());
      if (l <= best * (1 + 1e-9)) best = l, bs = t;
    }
    s = bs;
  }
  REQUIRE(r.scale.isApprox(s, 1e-6f));
  // and the search helped: the quantized output error is below that of no smoothing
  MatrixRM x1 = X, w1 = W;
  q4(x1, false);
  q4(w1, true);
  REQUIRE(r.loss < (Y - x1 * w1.transpose()).squaredNorm() / double(Y.size()));
}

TEST_CASE("AWQ with activation quantization scores each candidate on quantized scaled inputs", "[data][awq][act]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(8, 64);
  const MatrixRM X = embed(fp, concat(w));
  using Q = Quantizer<Bits<4>, PerChannel, Symmetric>;
  const Q q;
  const ActQuant a4{4, ActGranularity::per_token, true, Grid::minmax};
  Block b = fp.blocks[0];
  AwqOptions o;
  o.clip = false;
  const AwqBlockResult r = awq_block(fp.cfg, b, X, 64, q, o, {}, nullptr, a4);
  // independent: the up -> down group's loss for every ratio, written here from the definition
  std::vector<MatrixRM> in(4);
  MatrixRM x = X;
  block_forward_staged(fp.cfg, fp.blocks[0], x, 64, nullptr, [&](int s, const MatrixRM& v) { in[std::size_t(s)] = v; });
  const MatrixRM& xd = in[3];
  const MatrixRM& W = fp.blocks[0].down.W;
  const MatrixRM y = xd * W.transpose();
  const Eigen::VectorXf xm = awq_act_mean(xd);
  const AwqScaleResult& sr = r.searches.at("up_proj");
  REQUIRE(sr.losses.size() == 20);
  for (int i = 0; i < 20; ++i) {
    const Eigen::VectorXf s = awq_scales_for_ratio(xm, Eigen::VectorXf::Ones(xm.size()), float(i) / 20.0f, false);
    MatrixRM Ws = W * s.asDiagonal();
    fake_quant(q, Ws, Ws);
    MatrixRM xs = xd * s.cwiseInverse().asDiagonal();
    fake_quant(Quantizer<Bits<4>, PerToken, Symmetric>{}, xs, xs);
    const double loss = (y - xs * Ws.transpose()).cast<double>().array().square().mean();
    REQUIRE(sr.losses[std::size_t(i)] == Approx(loss).epsilon(1e-3));
  }
  // and without activation quantization the search is the weight-only one (a different loss)
  Block b2 = fp.blocks[0];
  const AwqBlockResult r2 = awq_block(fp.cfg, b2, X, 64, q, o);
  REQUIRE(r2.searches.at("up_proj").losses != sr.losses);
}

TEST_CASE("PSS leaves the float function unchanged, with and without smooth_all_linears and search_piece", "[data][pipeline][pss]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = calib(8, 64);
  const std::vector<int> toks = concat(calib(2, 32));
  const MatrixRM ref = forward(fp, toks, 32);
  for (bool all : {false, true}) {
    MethodOptions mo;
    mo.pss.all_linears = all;
    mo.pss.search.search_piece = all;
    mo.pss.tokens = 128;
    PipelineOptions opt;
    opt.act.quant.input = ActQuant{4, ActGranularity::per_token, true, Grid::minmax};
    auto c = make_method_chain("pss", Quantizer<Bits<4>, PerChannel, Symmetric>(), mo);
    ModelSink out(fp, {true, true, false});
    quantize_model(fp, w, c, out, opt);
    REQUIRE(max_rel_diff(forward(out.transformed, toks, 32), ref) < 1e-4f);
    bool changed = false, down_changed = false;  // the search chose scales other than 1 somewhere
    for (std::size_t i = 0; i < fp.blocks.size(); ++i) {
      changed |= out.transformed.blocks[i].attn_norm != fp.blocks[i].attn_norm;
      changed |= out.transformed.blocks[i].ffn_norm != fp.blocks[i].ffn_norm;
      down_changed |= out.transformed.blocks[i].down.W != fp.blocks[i].down.W;
    }
    REQUIRE(changed);
    if (!all) REQUIRE_FALSE(down_changed);  // up -> down is smoothed only with all_linears
  }
}
