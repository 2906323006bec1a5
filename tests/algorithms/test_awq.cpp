#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>
#include <random>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {
const std::map<std::string, std::string> kPrev = {
    {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"}, {"up_proj", "mlp.up_proj"}};
const std::map<Role, std::string> kName = {{Role::q, "self_attn.q_proj"}, {Role::k, "self_attn.k_proj"},
                                           {Role::v, "self_attn.v_proj"}, {Role::o, "self_attn.o_proj"},
                                           {Role::gate, "mlp.gate_proj"}, {Role::up, "mlp.up_proj"},
                                           {Role::down, "mlp.down_proj"}};
using W4g32 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;
}  // namespace

TEST_CASE("AWQ on stories260K block 0 reproduces llm-awq (scales, losses, clips, weights)", "[data][awq][fixtures]") {
  LOWBIT_REQUIRE_SHARED("fixtures/awq_block0_w4g32.safetensors");
  SafetensorsFile f(lowbit_test::shared_path("fixtures/awq_block0_w4g32.safetensors"));
  const Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> toks = f.ints("tokens");
  const MatrixRM X = embed(m, toks);
  const MatrixRM X16 = f.matrix("X_first16");
  REQUIRE(X.topRows(16 * 256) == X16);
  Block b = m.blocks[0];
  for (auto& [r, name] : kName) REQUIRE(b.linear(r).W == f.matrix("w_orig." + name + ".weight"));
  const W4g32 q(32, Grid::minmax, true);
  AwqOptions reference;
  reference.scoring = AwqScoring::module_output;  // the reference's loss on every token, for the loss history
  const AwqBlockResult res = awq_block(m.cfg, b, X, 256, q, reference);
  REQUIRE(res.scales.size() == 3);  // v -> o skipped under GQA
  for (auto& [mine, ref] : kPrev) {
    INFO(ref);
    const std::vector<float> xm = f.floats("scale." + ref + ".x_max"), s = f.floats("scale." + ref + ".s");
    const std::vector<double> loss = f.doubles("scale." + ref + ".loss_history");
    for (std::size_t j = 0; j < xm.size(); ++j) REQUIRE(res.x_mean.at(mine)[Eigen::Index(j)] == Approx(xm[j]).epsilon(1e-6));
    const AwqScaleResult& sr = res.searches.at(mine);
    REQUIRE(sr.best_index == f.ints("scale." + ref + ".best_ratio_index")[0]);
    for (std::size_t i = 0; i < loss.size(); ++i) REQUIRE(sr.losses[i] == Approx(loss[i]).epsilon(1e-4));
    for (std::size_t j = 0; j < s.size(); ++j) REQUIRE(res.scales.at(mine)[Eigen::Index(j)] == Approx(s[j]).epsilon(2e-6));
  }
  // clip search fed the reference's scaled weights and sampled inputs: every shrink step and max_val exact
  for (Role r : {Role::v, Role::o, Role::gate, Role::up, Role::down}) {
    const std::string n = kName.at(r);
    INFO(n);
    const MatrixRM mx = awq_search_clip(q, f.matrix("w_scaled." + n + ".weight"), f.matrix("clip." + n + ".input_sampled"));
    const MatrixRM ref = f.matrix("clip." + n + ".max_val");
    REQUIRE(mx == ref);
    // and our own end-to-end clip agrees on nearly every group
    const MatrixRM& own = res.clip_max.at(r);
    Eigen::Index same = 0;
    for (Eigen::Index i = 0; i < ref.size(); ++i) same += std::fabs(own.data()[i] - ref.data()[i]) <= 1e-5f * std::fabs(ref.data()[i]);
    REQUIRE(double(same) >= 0.99 * double(ref.size()));
  }
  // RTN of the reference's clipped weights is the reference's final weight, bit for bit.  Ours start from our
  // own scales (1e-6 relative from the reference's): >= 99.9 % of all codes agree; a single (row, group)
  // whose clip step is a near-tie may flip, so each linear alone is held to 99.5 %.
  Block fq = b;
  Eigen::Index total = 0, total_same = 0;
  for (auto& [r, name] : kName) {
    INFO(name);
    MatrixRM wc = f.matrix("w_clipped." + name + ".weight"), out(wc.rows(), wc.cols());
    fake_quant(q, wc, out);
    REQUIRE(out == f.matrix("w_q." + name + ".weight"));
    CodesRM mine, ref;  // integer codes, ours vs the reference's
    quantize(q, fq.linear(r).W, compute_params(q, fq.linear(r).W), mine);
    quantize(q, wc, compute_params(q, wc), ref);
    const Eigen::Index same = (mine.array() == ref.array()).count();
    REQUIRE(double(same) >= 0.995 * double(ref.size()));
    total += ref.size(), total_same += same;
  }
  REQUIRE(double(total_same) >= 0.999 * double(total));
}

TEST_CASE("AWQ's folded scales leave the block's function unchanged before quantization", "[data][awq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  std::vector<int> toks;
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32"));
  toks.assign(ids.begin(), ids.begin() + 8 * 128);
  const MatrixRM X = embed(m, toks);
  Block b = m.blocks[1];
  AwqOptions no_clip;
  no_clip.clip = false;
  awq_block(m.cfg, b, X, 128, W4g32(32, Grid::minmax, true), no_clip);
  MatrixRM y0 = X, y1 = X;
  block_forward(m.cfg, m.blocks[1], y0, 128);
  block_forward(m.cfg, b, y1, 128);
  REQUIRE((y1 - y0).cwiseAbs().maxCoeff() <= 1e-4f * y0.cwiseAbs().maxCoeff());
  REQUIRE_FALSE(b.q.W == m.blocks[1].q.W);  // something was scaled
}

TEST_CASE("AWQ's chosen ratio equals a brute-force search written here", "[awq]") {
  std::mt19937 g(4);
  std::normal_distribution<float> nd;
  MatrixRM W(24, 64), X(300, 64);
  for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = nd(g);
  for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = nd(g) * (1.0f + 5.0f * float((i % 64) < 4));  // salient channels
  const W4g32 q(32, Grid::minmax, false);
  auto module = [&](const std::vector<MatrixRM>& Ws) -> MatrixRM { return X * Ws[0].transpose(); };
  const MatrixRM y = X * W.transpose();
  const AwqScaleResult r = awq_search_scale(q, {&W}, awq_act_mean(X), module, y);
  // brute force: every ratio, scales computed independently in double then rounded
  int best = -1;
  double best_loss = 1e300;
  for (int i = 0; i < 20; ++i) {
    Eigen::VectorXd xm = X.cwiseAbs().cast<double>().colwise().mean().transpose();
    Eigen::VectorXf s(64);
    for (int j = 0; j < 64; ++j) s[j] = std::max(float(std::pow(xm[j], i / 20.0)), 1e-4f);
    s /= std::sqrt(s.maxCoeff() * s.minCoeff());
    MatrixRM Ws = W * s.asDiagonal(), Wq(24, 64);
    fake_quant(q, Ws, Wq);
    for (Eigen::Index rr = 0; rr < 24; ++rr) Wq.row(rr).array() /= s.transpose().array();
    const double loss = (X * Wq.transpose() - y).cast<double>().array().square().mean();
    if (loss < best_loss) best_loss = loss, best = i;
  }
  REQUIRE(r.best_index == best);
  REQUIRE(r.best_index > 0);  // salient channels make scaling worth it
}

TEST_CASE("AWQ pipeline: the saved transformed model reloads with the same perplexity, close to FP", "[data][awq][pipeline]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model fp = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> calib_ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32"));
  const std::vector<int> eval_ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const W4g32 q(32, Grid::minmax, true);
  auto chain = make_method_chain("awq", q);
  ModelSink sink(fp, {true, true, false});
  quantize_model(fp, sequential_windows(calib_ids, 16, 128), chain, sink);
  const Model& m = sink.fake;
  const Model& t = sink.transformed;
  REQUIRE(t.blocks.size() == 5);
  const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/awq_trans";
  save_hf(t, dir);
  const Model back = load_hf(dir);
  const double p_fp = perplexity(fp, eval_ids, 256, 25600).ppl, p_t = perplexity(t, eval_ids, 256, 25600).ppl,
               p_back = perplexity(back, eval_ids, 256, 25600).ppl, p_q = perplexity(m, eval_ids, 256, 25600).ppl;
  INFO("fp " << p_fp << " transformed " << p_t << " reloaded " << p_back << " quantized " << p_q);
  REQUIRE(p_back == Approx(p_t).epsilon(1e-5));  // save + load is exact up to float summation order
  REQUIRE(p_t == Approx(p_fp).epsilon(0.02));     // scales are exact, clipping costs a little
  REQUIRE(p_q > p_fp);
  // scales and clips survive a save/load round trip
  save_awq_scales(dir + "/scales.safetensors", sink.awq);
  save_awq_clips(dir + "/clips.safetensors", sink.awq);
  const std::vector<AwqBlockResult> l = load_awq(dir + "/scales.safetensors", dir + "/clips.safetensors", 5);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(l[std::size_t(i)].scales.at("ffn_norm") == sink.awq[std::size_t(i)].scales.at("ffn_norm"));
    REQUIRE(l[std::size_t(i)].clip_max.at(Role::down) == sink.awq[std::size_t(i)].clip_max.at(Role::down));
  }
  // quantizing with the loaded scales and clips reproduces the searched model exactly
  MethodOptions mo;
  mo.awq_loaded = {&l, true, true};
  auto again_chain = make_method_chain("awq", q, mo);
  ModelSink again(fp);
  quantize_model(fp, sequential_windows(calib_ids, 16, 128), again_chain, again);
  for (int i = 0; i < 5; ++i) REQUIRE(again.fake.blocks[std::size_t(i)].down.W == m.blocks[std::size_t(i)].down.W);
}

TEST_CASE("the pipeline gives bitwise-identical models for 1 and 2 threads (RTN, AWQ, GPTQ)", "[data][pipeline][threads]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model fp = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32"));
  const Windows calib = random_windows(ids, 8, 64, 7);
  const W4g32 q(32, Grid::minmax, true);
  for (const char* method : {"rtn", "awq", "gptq", "awq+gptq"}) {
    MethodOptions mo;
    mo.gptq.act_order = true;
    auto chain = make_method_chain(method, q, mo);
    ModelSink a(fp), b(fp);
    set_num_threads(1);
    quantize_model(fp, calib, chain, a);
    set_num_threads(2);
    quantize_model(fp, calib, chain, b);
    INFO(method);
    for (int i = 0; i < 5; ++i)
      for (Role r : all_roles) REQUIRE(a.fake.blocks[std::size_t(i)].linear(r).W == b.fake.blocks[std::size_t(i)].linear(r).W);
    REQUIRE(a.fake.blocks[0].q.W != fp.blocks[0].q.W);
  }
}

TEST_CASE("AWQ's Gram scoring is the reference loss for a single linear (fast mode)", "[awq]") {
  std::mt19937 g(9);
  std::normal_distribution<float> nd;
  MatrixRM W(24, 64), X(300, 64);
  for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = nd(g);
  for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = nd(g) * (1.0f + 5.0f * float((i % 64) < 4));
  const W4g32 q(32, Grid::minmax, false);
  auto module = [&](const std::vector<MatrixRM>& Ws) -> MatrixRM { return X * Ws[0].transpose(); };
  const AwqScaleResult ref = awq_search_scale(q, {&W}, awq_act_mean(X), module, X * W.transpose());
  const AwqScaleResult fast = awq_search_scale_gram(q, {&W}, awq_act_mean(X), awq_gram(X), X.rows());
  REQUIRE(fast.best_index == ref.best_index);
  REQUIRE(fast.scales == ref.scales);
  for (std::size_t i = 0; i < ref.losses.size(); ++i) REQUIRE(fast.losses[i] == Approx(ref.losses[i]).epsilon(1e-4));
}

TEST_CASE("sample_sequences keeps whole, evenly strided sequences", "[awq]") {
  MatrixRM X(10 * 4, 3);
  for (Eigen::Index i = 0; i < X.rows(); ++i) X.row(i).setConstant(float(i));
  const MatrixRM s = sample_sequences(X, 4, 9);  // ceil(9 / 4) = 3 sequences, every 10 / 3 = 3rd: 0, 3, 6
  REQUIRE(s.rows() == 12);
  for (int k = 0; k < 3; ++k)
    for (int t = 0; t < 4; ++t) REQUIRE(s(k * 4 + t, 1) == float(k * 3 * 4 + t));
  REQUIRE(sample_sequences(X, 4, 0) == X);
  REQUIRE(sample_sequences(X, 4, 1000) == X);
  REQUIRE(sample_sequences(X, 4, 1).rows() == 4);
  REQUIRE_THROWS_WITH(sample_sequences(X, 7, 8), Catch::Contains("not whole sequences"));
}

TEST_CASE("AWQ's fast scoring on every token chooses the reference's scales, and its capture forward is the block's output",
          "[data][awq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32"));
  const std::vector<int> toks(ids.begin(), ids.begin() + 16 * 128);
  const MatrixRM X = embed(m, toks);
  const W4g32 q(32, Grid::minmax, true);
  AwqOptions ref, fast_all, fast_sampled;
  ref.scoring = AwqScoring::module_output;
  fast_all.scoring = fast_sampled.scoring = AwqScoring::fast;
  fast_all.scale_tokens = 0;        // module loss on every token for the norm groups, Gram for the single linears
  fast_sampled.scale_tokens = 512;  // 4 of the 16 sequences
  for (int blk : {0, 3}) {
    Block b1 = m.blocks[std::size_t(blk)], b2 = b1, b3 = b1;
    MatrixRM out;
    const AwqBlockResult r1 = awq_block(m.cfg, b1, X, 128, q, ref);
    const AwqBlockResult r2 = awq_block(m.cfg, b2, X, 128, q, fast_all, {}, &out);
    const AwqBlockResult r3 = awq_block(m.cfg, b3, X, 128, q, fast_sampled);
    INFO("block " << blk);
    for (const auto& [key, sr] : r1.searches) {
      INFO(key);
      REQUIRE(r2.searches.at(key).best_index == sr.best_index);
      REQUIRE(r2.scales.at(key) == r1.scales.at(key));
      for (std::size_t i = 0; i < sr.losses.size(); ++i) REQUIRE(r2.searches.at(key).losses[i] == Approx(sr.losses[i]).epsilon(1e-3));
      // sampling changes the norm groups' losses, not the single linears' (scored on every token by the Gram)
      if (key == "up_proj") REQUIRE(r3.searches.at(key).losses == r2.searches.at(key).losses);
      else REQUIRE(r3.searches.at(key).losses != r2.searches.at(key).losses);
    }
    for (Role r : all_roles) REQUIRE(b2.linear(r).W == b1.linear(r).W);
    MatrixRM y = X;
    block_forward(m.cfg, m.blocks[std::size_t(blk)], y, 128);
    REQUIRE(out == y);  // bit for bit: the pipeline moves the full-precision chain on with it
  }
}

TEST_CASE("loaded AWQ scales and clips are validated like weights (shape, finite, positive)", "[data][awq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32"));
  const MatrixRM X = embed(m, std::vector<int>(ids.begin(), ids.begin() + 2 * 64));
  const W4g32 q(32, Grid::minmax, true);
  Block b0 = m.blocks[0];
  const AwqBlockResult good = awq_block(m.cfg, b0, X, 64, q, AwqOptions{});
  auto run = [&](const AwqBlockResult& r, bool scales) {
    Block b = m.blocks[0];
    awq_block(m.cfg, b, X, 64, q, AwqOptions{}, scales ? AwqPreset{&r, nullptr} : AwqPreset{nullptr, &r});
  };
  REQUIRE_NOTHROW(run(good, true));
  REQUIRE_NOTHROW(run(good, false));
  AwqBlockResult bad = good;
  bad.scales["attn_norm"][3] = 0.0f;
  REQUIRE_THROWS_WITH(run(bad, true), Catch::Contains("attn_norm") && Catch::Contains("finite and positive"));
  for (float tiny_or_huge : {1e-38f, 1e-9f, 1e9f, 3e38f}) {  // finite and positive, but they zero or overflow a channel
    bad = good;
    bad.scales["up_proj"][5] = tiny_or_huge;
    REQUIRE_THROWS_WITH(run(bad, true), Catch::Contains("loaded scales for up_proj have entries outside [1e-08, 1e+08]"));
  }
  bad = good;
  bad.scales.erase("ffn_norm");
  REQUIRE_THROWS_WITH(run(bad, true), Catch::Contains("no entry for group ffn_norm"));
  bad = good;  // the heap over-read of issue 8: an asymmetric clip whose min_val has the wrong shape
  bad.clip_min[Role::o] = MatrixRM::Constant(3, 1, -1.0f);
  REQUIRE_THROWS_WITH(run(bad, false), Catch::Contains("loaded clip for o_proj"));
  bad = good;
  bad.clip_max[Role::down](0, 0) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(run(bad, false), Catch::Contains("loaded clip for down_proj is not finite"));
}

TEST_CASE("a negative loaded clip is an error", "[data][awq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32"));
  const MatrixRM X = embed(m, std::vector<int>(ids.begin(), ids.begin() + 64));
  const W4g32 q(32, Grid::minmax, true);
  Block b = m.blocks[1];
  AwqBlockResult r = awq_block(m.cfg, b, X, 64, q, AwqOptions{});
  r.clip_max[Role::v](1, 0) = -0.5f;
  Block b2 = m.blocks[1];
  REQUIRE_THROWS_WITH(awq_block(m.cfg, b2, X, 64, q, AwqOptions{}, AwqPreset{nullptr, &r}),
                      Catch::Contains("v_proj has a negative max_val"));
}
