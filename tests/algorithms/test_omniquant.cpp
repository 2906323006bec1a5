// OmniQuant on the tape: a whole block's gradient (float and quantized) against finite differences, the tape's
// block against the model's forward, training that lowers the block loss and the perplexity below RTN's, LET
// folded into an equivalent float block, determinism for 1 and 2 threads, and a non-finite loss that stops a
// block without corrupting it.
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>

#include <random>

#include "support/shared_data.hpp"
#include "support/util.hpp"

using namespace lowbit;

namespace {
const char* kModel = "models/stories260K/stories260K.bin";
const char* kCalib = "data/tinystories/tinystories_val.calib.tokens.i32";
const char* kEval = "data/tinystories/tinystories_val.eval.tokens.i32";

LlamaConfig small_cfg(RopeStyle rope) {
  LlamaConfig c;
  c.dim = 16, c.hidden_dim = 24, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 8, c.max_seq_len = 16;
  c.rope = rope;
  return c;
}
ad::Mat<double> uniform_md(Eigen::Index r, Eigen::Index c, unsigned seed, double lo = -1, double hi = 1) {
  return lowbit_test::uniform_matrix<ad::Mat<double>>(r, c, seed, lo, hi);
}
// The fake and transformed models, and each block's OmniQuant losses per epoch.
struct TrainedSink final : BlockSink {
  explicit TrainedSink(const Model& base) : model(base, ModelSink::Keep{true, true, false}) {}
  void block(const FinishedBlock& b) override {
    model.block(b);
    loss.push_back(b.artifacts.omniquant_loss);
  }
  bool wants_transformed() const override { return true; }
  ModelSink model;
  std::vector<std::vector<double>> loss;
};
}  // namespace

TEST_CASE("a whole block's gradient on the tape matches finite differences, float and quantized", "[autodiff][omniquant]") {
  using namespace lowbit::ad;
  for (RopeStyle rope : {RopeStyle::interleaved, RopeStyle::rotate_half})
    for (bool quantized : {false, true}) {
      INFO((quantized ? "quantized" : "float") << " block, rope " << int(rope));
      const LlamaConfig cfg = small_cfg(rope);
      const int L = 6;
      BlockActQuant act;
      if (quantized) {
        act.input = ActQuant{4, ActGranularity::per_token, false, Grid::minmax};
        act.q = act.k = act.v = ActQuant{6, ActGranularity::per_token, true, Grid::omniquant};
      }
      // inputs: x, the two norms, the seven weights, and (quantized) LWC logits of every linear (groups of 8)
      std::vector<Mat<double>> in = {uniform_md(2 * L, cfg.dim, 1), uniform_md(1, cfg.dim, 2, 0.5, 1.5), uniform_md(1, cfg.dim, 3, 0.5, 1.5)};
      for (Role r : all_roles) {
        const auto s = linear_shape(cfg, r);
        in.push_back(uniform_md(s[0], s[1], 10 + unsigned(r), -0.5, 0.5));
      }
      if (quantized)
        for (Role r : all_roles) {
          const auto s = linear_shape(cfg, r);
          in.push_back(uniform_md(s[0], s[1] / 8, 20 + unsigned(r), 0.5, 3));
          in.push_back(uniform_md(s[0], s[1] / 8, 30 + unsigned(r), 0.5, 3));
        }
      const Mat<double> probe = uniform_md(2 * L, cfg.dim, 99);
      const GradCheckResult res = grad_check(in, [&](Tape<double>& t, const std::vector<Var<double>>& v) {
        BlockVars<double> w;
        w.attn_norm = v[1], w.ffn_norm = v[2];
        for (Role r : all_roles) {
          const std::size_t i = std::size_t(r);
          w.W[i] = quantized ? fake_quant(t, v[3 + i], FakeQuantSpec{3, false, Grid::omniquant, 8}, v[10 + 2 * i], v[11 + 2 * i])
                             : v[3 + i];
        }
        return dot(t, block_forward(t, cfg, w, act, v[0], L), t.constant(probe));
      }, 1e-6, 60);
      INFO("max |analytic - numeric| " << res.max_abs_error << " of max |grad| " << res.max_abs_grad << " (" << res.checked << " entries)");
      REQUIRE(res.max_abs_grad > 1e-6);
      REQUIRE(res.relative() < 1e-6);
    }
}

TEST_CASE("the tape's block forward is the model's block forward", "[data][omniquant]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows w = sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), 2, 64);
  std::vector<int> toks;
  for (const auto& s : w) toks.insert(toks.end(), s.begin(), s.end());
  Block b = fp.blocks[1];
  b.act.input = ActQuant{8, ActGranularity::per_token, false, Grid::minmax};
  b.act.k = ActQuant{4, ActGranularity::per_token, false, Grid::minmax};
  MatrixRM x = embed(fp, toks), ref = x;
  block_forward(fp.cfg, b, ref, 64);
  ad::Tape<float> t;
  const ad::Var<float> y = ad::block_forward(t, fp.cfg, ad::block_views(t, b), b.act, t.view(x.data(), x.rows(), x.cols()), 64);
  REQUIRE((MatrixRM(y.val()) - ref).cwiseAbs().maxCoeff() <= 1e-6f * ref.cwiseAbs().maxCoeff());
}

TEST_CASE("the trainer's loss() is a step's forward and changes nothing", "[omniquant]") {
  // a random float block at W4A4 with LWC + LET: loss() before a step is the loss the step returns, bit for bit
  // (the same forward), and it changes nothing a step sees (called twice: the same loss, and the step after it
  // still returns it)
  const LlamaConfig cfg = small_cfg(RopeStyle::rotate_half);
  const int L = 6;
  Block b;
  b.attn_norm = Eigen::VectorXf::Ones(cfg.dim), b.ffn_norm = Eigen::VectorXf::Ones(cfg.dim);
  for (Role r : all_roles) {
    const auto sh = linear_shape(cfg, r);
    b.linear(r).W = lowbit_test::uniform_matrix<MatrixRM>(sh[0], sh[1], 30 + unsigned(r), -0.5, 0.5);
  }
  const MatrixRM x = lowbit_test::uniform_matrix<MatrixRM>(2 * L, cfg.dim, 40);
  MatrixRM y = x;
  block_forward(cfg, b, y, L);
  BlockActQuant act;
  act.input = ActQuant{4, ActGranularity::per_token, false, Grid::minmax};
  OmniQuantOptions o;
  o.let = true;
  using Q4 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;
  OmniQuantTrainer<Q4> tr(Q4(8, Grid::omniquant, true), cfg, b, act, o, {},
                          std::vector<Eigen::VectorXf>(4, Eigen::VectorXf::Ones(cfg.dim)), "block 0");
  const float l0 = tr.loss(x.data(), y.data(), nullptr, 2 * L, L);
  REQUIRE(std::isfinite(l0));
  REQUIRE(l0 > 0.0f);
  REQUIRE(tr.loss(x.data(), y.data(), nullptr, 2 * L, L) == l0);
  REQUIRE(tr.step(x.data(), y.data(), nullptr, 2 * L, L) == l0);
  const float l1 = tr.loss(x.data(), y.data(), nullptr, 2 * L, L);
  REQUIRE(l1 != l0);  // the step moved the parameters
  REQUIRE(tr.step(x.data(), y.data(), y.data(), 2 * L, L) == 2 * l1);  // aug_loss's second term: the same MSE again
}

TEST_CASE("OmniQuant's LWC lowers the block loss and beats RTN, and LET folds into an equivalent block", "[data][omniquant]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows calib = sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), 16, 128);
  const std::vector<int> eval = read_token_file(lowbit_test::shared_path(kEval));
  using Q3 = Quantizer<Bits<3>, PerGroup<dynamic_group>, Asymmetric>;
  const Q3 q(32, Grid::omniquant, true);
  MethodOptions mo;
  mo.omniquant.epochs = 3;
  auto run = [&](const std::string& method, MethodOptions o, PipelineOptions po = {}) {
    auto c = make_method_chain(method, q, o);
    auto sink = std::make_unique<TrainedSink>(fp);
    std::vector<std::string> warnings;
    auto old = set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
    quantize_model(fp, calib, c, *sink, po);
    set_warning_handler(old);
    return sink;
  };
  const auto rtn = run("rtn", mo), omni = run("omniquant", mo);
  const double p_fp = perplexity(fp, eval, 256, 25600).ppl, p_rtn = perplexity(rtn->model.fake, eval, 256, 25600).ppl;
  const double p_omni = perplexity(omni->model.fake, eval, 256, 25600).ppl;
  for (const auto& l : omni->loss) {  // every block trained 3 epochs, and its loss went down
    REQUIRE(l.size() == 3);
    REQUIRE(l.back() < l.front());
  }
  INFO("ppl fp " << p_fp << " rtn " << p_rtn << " omniquant " << p_omni);
  REQUIRE(p_omni < p_rtn);
  REQUIRE(p_omni > p_fp);
  // LET at W4A4 (per-token activations): the folded float block computes the original function
  mo.omniquant.let = true;
  mo.omniquant.epochs = 2;
  PipelineOptions po;
  po.act.quant.input = ActQuant{4, ActGranularity::per_token, false, Grid::minmax};
  const auto let = run("omniquant", mo, po);
  std::vector<int> toks(eval.begin(), eval.begin() + 128);
  MatrixRM ref = forward(fp, toks, 64), got = forward(let->model.transformed, toks, 64);
  REQUIRE((got - ref).cwiseAbs().maxCoeff() <= 1e-3f * ref.cwiseAbs().maxCoeff());
  REQUIRE(let->model.transformed.blocks[0].attn_norm != fp.blocks[0].attn_norm);  // LET changed the block
}

TEST_CASE("OmniQuant is the same bits for 1 and 2 threads, and a non-finite loss stops a block without harm", "[data][omniquant]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  const Model fp = load_llama2c(lowbit_test::shared_path(kModel));
  const Windows calib = sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), 4, 64);
  using Q4 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;
  MethodOptions mo;
  mo.omniquant.epochs = 2;
  mo.omniquant.let = true;
  mo.omniquant.aug_loss = true;
  PipelineOptions po;
  po.act.quant.input = ActQuant{6, ActGranularity::per_token, false, Grid::minmax};
  po.act.quant.k = ActQuant{6, ActGranularity::per_token, false, Grid::minmax};
  std::vector<Model> got;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto c = make_method_chain("omniquant", Q4(32, Grid::omniquant, true), mo);
    ModelSink sink(fp);
    quantize_model(fp, calib, c, sink, po);
    got.push_back(sink.fake);
  }
  set_num_threads(2);
  for (std::size_t i = 0; i < fp.blocks.size(); ++i)
    for (Role r : all_roles) REQUIRE(got[0].blocks[i].linear(r).W == got[1].blocks[i].linear(r).W);
  REQUIRE(got[0].blocks[2].attn_norm == got[1].blocks[2].attn_norm);

  // an infinite target: the first step's loss is not finite -> training stops with a warning naming block, epoch
  // and step; the block keeps its initial parameters (a finite quantized block)
  Block b = fp.blocks[0];
  std::vector<int> toks;
  for (const auto& w : calib) toks.insert(toks.end(), w.begin(), w.end());
  const MatrixRM x = embed(fp, toks);
  MatrixRM target = x;
  block_forward(fp.cfg, b, target, 64);
  target(3, 5) = std::numeric_limits<float>::infinity();
  std::vector<std::string> warnings;
  auto old = set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  OmniQuantOptions o;
  o.epochs = 3;
  const OmniQuantBlockResult res = omniquant_block(Q4(32, Grid::omniquant, true), fp.cfg, b, x, target, nullptr, 64,
                                                   BlockActQuant{}, o, {}, {}, "block 0");
  set_warning_handler(old);
  REQUIRE(warnings.size() == 1);
  REQUIRE_THAT(warnings[0], Catch::Contains("block 0 omniquant: epoch 1 step 1") && Catch::Contains("not finite"));
  REQUIRE(res.steps == 0);
  REQUIRE(res.clip_up[0].allFinite());
  REQUIRE(std::abs(res.clip_up[0](0, 0) - 1.0f / (1.0f + std::exp(-4.0f))) < 1e-7f);  // the initial sigmoid(4)
}

TEST_CASE("AWQ's clips become LWC ratios that reproduce them", "[omniquant][awq]") {
  // hand case: one row, two groups of 4; a symmetric clip of 1.5 on [-2, 1, 3, 0.5], 0.25 on [-1, -0.5, -2, -3]
  MatrixRM W(1, 8);
  W << -2, 1, 3, 0.5f, -1, -0.5f, -2, -3;
  GroupLayout L;
  L.rows = 1, L.cols = 8, L.group = 4, L.ngroups = 2;
  MatrixRM mx(1, 2), up, low;
  mx << 1.5f, 0.25f;
  lwc_ratios_from_clip(W, L, mx, nullptr, up, low);
  REQUIRE(up(0, 0) == 0.5f);             // 1.5 / 3
  REQUIRE(low(0, 0) == 0.75f);           // -1.5 / -2
  REQUIRE(up(0, 1) == 1.0f);             // the group's max is negative: nothing for LWC's factor to move
  REQUIRE(low(0, 1) == Approx(0.25f / 3.0f));
  MatrixRM mn(1, 2);                     // an asymmetric clip that does not bind: ratio 1
  mn << -2.5f, -0.1f;
  mx << 4.0f, 0.25f;
  lwc_ratios_from_clip(W, L, mx, &mn, up, low);
  REQUIRE(up(0, 0) == 1.0f);
  REQUIRE(low(0, 0) == 1.0f);
  REQUIRE(low(0, 1) == Approx(0.1f / 3.0f));
  // AWQ's searched clip on random weights: ratio x group max = the clip wherever it binds
  const MatrixRM R = lowbit_test::uniform_matrix<MatrixRM>(16, 64, 5), X = lowbit_test::uniform_matrix<MatrixRM>(256, 64, 6);
  using Q4 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;
  const Q4 q(32, Grid::minmax, false);
  const GroupLayout Lr = group_layout(q, R.rows(), R.cols());
  const MatrixRM clip = awq_search_clip(q, R, X);
  lwc_ratios_from_clip(R, Lr, clip, nullptr, up, low);
  int bound = 0;
  for (Eigen::Index r = 0; r < R.rows(); ++r)
    for (Eigen::Index g = 0; g < Lr.ngroups; ++g) {
      const auto seg = R.row(r).segment(g * 32, 32);
      if (clip(r, g) < seg.maxCoeff()) {
        REQUIRE(up(r, g) * seg.maxCoeff() == Approx(clip(r, g)).epsilon(1e-6));
        ++bound;
      } else {
        REQUIRE(up(r, g) == 1.0f);
      }
      if (-clip(r, g) > seg.minCoeff()) REQUIRE(low(r, g) * seg.minCoeff() == Approx(-clip(r, g)).epsilon(1e-6));
    }
  REQUIRE(bound > 0);
}

TEST_CASE("AWQ -> OmniQuant in one call equals its two steps run as two processes through their files", "[data][omniquant][awq]") {
  LOWBIT_REQUIRE_SHARED(kModel);
  // the model as a Hugging Face folder, so that the saved transformed folder holds it in the same layout (a
  // llama2.c model's q/k rows are permuted to the Hugging Face RoPE convention on the way out)
  const std::string fp_dir = lowbit_test::tmp_path("awq_omni_fp");
  save_hf(load_llama2c(lowbit_test::shared_path(kModel)), fp_dir);
  const Model fp = load_hf(fp_dir);
  const Windows calib = sequential_windows(read_token_file(lowbit_test::shared_path(kCalib)), 8, 64);
  using Q4 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;
  const Q4 q(32, Grid::omniquant, true);
  MethodOptions mo;
  mo.omniquant.epochs = 2;
  auto quiet = set_warning_handler([](const std::string&) {});
  SECTION("weight-only: the transformed folder, then search_clip_init on it") {
    TrainedSink one(fp);
    quantize_awq_omniquant(fp, calib, q, mo, one, {});
    // process 1: AWQ's scales without clips, the transformed model saved in f32
    const std::string dir = lowbit_test::tmp_path("awq_omni_trans");
    {
      MethodOptions m1 = mo;
      m1.awq.clip = false;
      auto chain = make_method_chain("awq", q, m1);
      HfSink trans(fp, dir, Weights::transformed, DType::f32, {});
      quantize_model(fp, calib, chain, trans, {});
      trans.commit();
    }
    // process 2: OmniQuant on the loaded folder, LWC from AWQ's clip search
    const Model t = load_hf(dir);
    MethodOptions m2 = mo;
    m2.omniquant.search_clip_init = true;
    auto chain = make_method_chain("omniquant", q, m2);
    TrainedSink two(t);
    quantize_model(t, calib, chain, two, {});
    lowbit_test::require_same_blocks(one.model.fake, two.model.fake);
    REQUIRE(one.loss == two.loss);
    // the starting point is live: without it (LWC at 4.0 on the same transformed model) the result differs, and
    // AWQ's clips start the training lower
    auto plain = make_method_chain("omniquant", q, mo);
    TrainedSink three(t);
    quantize_model(t, calib, plain, three, {});
    REQUIRE(three.model.fake.blocks[0].linear(Role::v).W != two.model.fake.blocks[0].linear(Role::v).W);
    for (std::size_t b = 0; b < two.loss.size(); ++b) {
      INFO("block " << b);
      REQUIRE(two.loss[b].front() < three.loss[b].front());
    }
  }
  SECTION("with LET at W4A8: the scale and clip files, then LET and LWC from them on the original model") {
    mo.omniquant.let = true;
    PipelineOptions po;
    po.act.quant.input = ActQuant{8, ActGranularity::per_token, true, Grid::minmax};
    TrainedSink one(fp);
    quantize_awq_omniquant(fp, calib, q, mo, one, po);
    const std::string sp = lowbit_test::tmp_path("awq_omni_scales.safetensors"), cp = lowbit_test::tmp_path("awq_omni_clips.safetensors");
    {
      auto chain = make_method_chain("awq", q, mo);
      ModelSink keep(fp, ModelSink::Keep{false, false, false});
      quantize_model(fp, calib, chain, keep, po);
      save_awq_scales(sp, keep.awq);
      save_awq_clips(cp, keep.awq);
    }
    const std::vector<AwqBlockResult> loaded = load_awq(sp, cp, fp.cfg.n_layers);
    MethodOptions m2 = mo;
    m2.awq_loaded = {&loaded, true, true};
    auto chain = make_method_chain("omniquant", q, m2);
    TrainedSink two(fp);
    quantize_model(fp, calib, chain, two, po);
    lowbit_test::require_same_blocks(one.model.fake, two.model.fake);
    REQUIRE(one.model.transformed.blocks[1].attn_norm == two.model.transformed.blocks[1].attn_norm);
    REQUIRE(one.loss == two.loss);
  }
  set_warning_handler(quiet);
}
