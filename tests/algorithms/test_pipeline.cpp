// The block loop and the method objects: GPTQ's single staged pass equals the per-subset re-forward written
// here; awq+gptq in one run equals AWQ's transformed model quantized by GPTQ afterwards; a mapped model streams
// to the same result; the streamed Hugging Face folder equals the one written from memory; chains are checked.
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>
#include <random>
#include <set>

#include "support/shared_data.hpp"
#include "support/util.hpp"

using namespace lowbit;

namespace {
using W4g32 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;

struct Stories {
  Model fp;
  Windows calib;
};
Stories stories(int n, int L) {
  Stories s{load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin")), {}};
  s.calib = sequential_windows(read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32")), n, L);
  return s;
}
using lowbit_test::concat;
using lowbit_test::require_same_blocks;
}  // namespace

TEST_CASE("GPTQ's staged single pass equals re-running the block for every true-sequential subset", "[data][pipeline][gptq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Stories s = stories(8, 64);
  const W4g32 q(32, Grid::gptq, true);
  auto chain = make_method_chain("gptq", q);
  ModelSink out(s.fp);
  quantize_model(s.fp, s.calib, chain, out);
  // the reference loop (gptq llama.py): for each subset, a whole forward of the partly quantized block with
  // hooks collecting the subset's Hessians; the next block's input is the fully quantized block's output
  MatrixRM x = embed(s.fp, concat(s.calib));
  Model ref = s.fp;
  const std::vector<std::vector<Role>> subsets = {{Role::q, Role::k, Role::v}, {Role::o}, {Role::gate, Role::up}, {Role::down}};
  for (Block& b : ref.blocks) {
    for (const auto& sub : subsets) {
      std::map<Role, HessianAccumulator> acc;
      BlockHooks hooks;
      hooks.linear_input = [&](Role r, const MatrixRM& in) {
        for (Role t : sub)
          if (t == r) acc[r].add_batch(in, std::int64_t(s.calib.size()));
      };
      MatrixRM tmp = x;
      block_forward(ref.cfg, b, tmp, 64, &hooks);
      for (Role r : sub) b.linear(r).W = gptq_quantize(q, b.linear(r).W, acc[r].hessian()).Q;
    }
    block_forward(ref.cfg, b, x, 64);
  }
  require_same_blocks(out.fake, ref);
}

TEST_CASE("awq+gptq in one run equals GPTQ run on AWQ's transformed model", "[data][pipeline][awq][gptq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Stories s = stories(8, 64);
  const W4g32 q(32, Grid::gptq, true);
  auto both = make_method_chain("awq+gptq", q);
  ModelSink one(s.fp);
  const PipelineReport rep = quantize_model(s.fp, s.calib, both, one);
  REQUIRE(rep.steps == std::vector<std::string>{"awq", "gptq"});
  REQUIRE(rep.carried[0]);  // AWQ reads the full-precision chain, GPTQ the quantized one
  REQUIRE(rep.carried[1]);
  // two steps: AWQ keeps the transformed float model (save_trans), GPTQ quantizes it
  auto awq = make_method_chain("awq", q);
  ModelSink step1(s.fp, {false, true, false});
  quantize_model(s.fp, s.calib, awq, step1);
  auto gptq = make_method_chain("gptq", q);
  ModelSink step2(step1.transformed);
  quantize_model(step1.transformed, s.calib, gptq, step2);
  require_same_blocks(one.fake, step2.fake);
  // and the combination is not plain GPTQ
  ModelSink plain(s.fp);
  auto g2 = make_method_chain("gptq", q);
  quantize_model(s.fp, s.calib, g2, plain);
  REQUIRE_FALSE(plain.fake.blocks[0].down.W == one.fake.blocks[0].down.W);
}

TEST_CASE("a mapped model streams block by block to the same result, and the streamed folder equals the saved one", "[data][pipeline]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Stories s = stories(4, 64);
  Model mapped = s.fp;
  mapped.blocks.clear();
  int loads = 0;
  mapped.block_loader = [&](int i) {
    ++loads;
    return s.fp.blocks[std::size_t(i)];
  };
  const W4g32 q(32, Grid::minmax, true);
  for (const char* method : {"rtn", "awq", "gptq"}) {
    INFO(method);
    auto c1 = make_method_chain(method, q);
    auto c2 = make_method_chain(method, q);
    ModelSink a(s.fp), b(mapped);
    quantize_model(s.fp, s.calib, c1, a);
    loads = 0;
    const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/stream_" + method;
    HfSink file(mapped, dir, Weights::fake_quantized);
    SinkFan fan;
    fan.add(&b);
    fan.add(&file);
    quantize_model(mapped, s.calib, c2, fan);
    file.commit();
    REQUIRE(loads == s.fp.cfg.n_layers);  // each block loaded once
    require_same_blocks(a.fake, b.fake);
    const std::string ref_dir = dir + "_ref";
    save_hf(a.fake, ref_dir);
    const Model streamed = load_hf(dir), saved = load_hf(ref_dir);
    for (int i = 0; i < s.fp.cfg.n_layers; ++i) {
      const Block x = streamed.load_block(i), y = saved.load_block(i);
      for (Role r : all_roles) REQUIRE(x.linear(r).W == y.linear(r).W);
      REQUIRE(x.attn_norm == y.attn_norm);
    }
  }
}

TEST_CASE("method chains: transforms first, one quantizing step last, reference grids", "[pipeline]") {
  REQUIRE(parse_method_chain("awq").size() == 2);  // awq, then rtn
  REQUIRE(std::string(parse_method_chain("awq").back()->name) == "rtn");
  REQUIRE(parse_method_chain("awq+gptq").size() == 2);
  REQUIRE(reference_grid("gptq") == Grid::gptq);
  REQUIRE(reference_grid("awq+gptq") == Grid::gptq);
  REQUIRE(reference_grid("awq") == Grid::minmax);
  REQUIRE_THROWS_WITH(parse_method_chain("gptq+awq"), Catch::Contains("must be the last step"));
  REQUIRE_THROWS_WITH(parse_method_chain("awq+foo"), Catch::Contains("unknown method 'foo'"));
}

TEST_CASE("every listed method has a maker, and the method it makes is the one listed", "[pipeline]") {
  std::set<std::string> names;
  for (const MethodInfo* m : method_infos()) {
    INFO(m->name);
    REQUIRE(names.insert(m->name).second);  // names are unique
    const auto made = make_method(*m, W4g32(32, m->grid, false), MethodOptions{});
    REQUIRE(&made->info() == m);
    REQUIRE(&make_method(std::string(m->name), W4g32(32, m->grid, false), MethodOptions{})->info() == m);
  }
  REQUIRE(names.size() == 8);
  REQUIRE_THROWS_WITH(make_method(std::string("foo"), W4g32(32, Grid::minmax, false), MethodOptions{}),
                      Catch::Contains("unknown method 'foo'"));
}

TEST_CASE("AWQ's clip search on the symmetric ggml grid equals a brute force with llama.cpp's Q4_0 formulas", "[awq][ggml]") {
  std::mt19937 g(11);
  std::normal_distribution<float> nd;
  MatrixRM W(16, 64), X(200, 64);
  for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = nd(g) * (i % 29 == 0 ? 6.0f : 1.0f);
  for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = nd(g);
  const Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric> q(32, Grid::ggml);
  const MatrixRM mx = awq_search_clip(q, W, X);
  for (Eigen::Index r = 0; r < W.rows(); ++r)
    for (Eigen::Index gi = 0; gi < 2; ++gi) {
      double best = 1e300;
      float best_mx = 0;
      const auto w = W.row(r).segment(gi * 32, 32);
      const float amax = w.cwiseAbs().maxCoeff();
      for (int i = 0; i < 10; ++i) {
        const float hi = amax * float(1.0 - i / 20.0);
        float c[32], m = 0, am = 0;
        for (int k = 0; k < 32; ++k) {
          c[k] = std::min(std::max(w[k], -hi), hi);
          if (std::fabs(c[k]) > am) am = std::fabs(c[k]), m = c[k];
        }
        const float d = m / -8.0f, id = 1.0f / d;  // ggml quantize_row_q4_0_ref
        double err = 0;
        for (Eigen::Index t = 0; t < X.rows(); ++t) {
          double a = 0, b = 0;
          for (int k = 0; k < 32; ++k) {
            const float code = std::min(15.0f, float(int(c[k] * id + 8.5f)));
            a += double(X(t, gi * 32 + k)) * double((code - 8.0f) * d);
            b += double(X(t, gi * 32 + k)) * double(w[k]);
          }
          err += (a - b) * (a - b);
        }
        if (err < best) best = err, best_mx = hi;
      }
      INFO("row " << r << " group " << gi);
      REQUIRE(mx(r, gi) == best_mx);
    }
}

TEST_CASE("a Hugging Face model with deferred tables quantizes and saves like the resident one", "[data][pipeline][hf]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Stories s = stories(4, 64);
  const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/deferred_src";
  save_hf(s.fp, dir);
  const Model resident = load_hf(dir), deferred = load_hf(dir, Tables::deferred);
  REQUIRE(deferred.tok_embeddings.size() == 0);
  REQUIRE(deferred.embeddings_matrix() == resident.tok_embeddings);
  REQUIRE_THROWS_WITH(deferred.classifier(), Catch::Contains("not loaded"));
  const W4g32 q(32, Grid::gptq, true);
  auto c1 = make_method_chain("gptq", q);
  auto c2 = make_method_chain("gptq", q);
  ModelSink a(resident);
  const std::string out = std::string(LOWBIT_BUILD_DIR) + "/deferred_out";
  HfSink file(deferred, out, Weights::fake_quantized);
  quantize_model(resident, s.calib, c1, a);
  quantize_model(deferred, s.calib, c2, file);
  file.commit();
  const Model back = load_hf(out);
  REQUIRE(back.tok_embeddings == resident.tok_embeddings);
  for (int i = 0; i < s.fp.cfg.n_layers; ++i) {
    const Block x = back.load_block(i);
    for (Role r : all_roles) REQUIRE(x.linear(r).W == a.fake.blocks[std::size_t(i)].linear(r).W);
  }
}

TEST_CASE("the loop names the block and step of an error, and counts the groups the grid cannot hold", "[data][pipeline]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  Stories s = stories(4, 64);
  // a loaded scale of 0 in block 1: AWQ's own message, with where it happened in front
  const W4g32 q(32, Grid::minmax, true);
  std::vector<AwqBlockResult> scales(5);
  {
    ModelSink keep(s.fp);
    auto chain = make_method_chain("awq", q);
    quantize_model(s.fp, s.calib, chain, keep);
    for (std::size_t i = 0; i < 5; ++i) scales[i].scales = keep.awq[i].scales;
  }
  scales[1].scales["ffn_norm"][0] = 0.0f;
  MethodOptions o;
  o.awq_loaded = {&scales, true, false};
  auto chain = make_method_chain("awq", q, o);
  ModelSink sink(s.fp);
  REQUIRE_THROWS_WITH(quantize_model(s.fp, s.calib, chain, sink),
                      Catch::StartsWith("lowbit: block 1 awq: AWQ: loaded scales for ffn_norm are not all finite and positive"));
  // a weight that overflows the chain's activations: named by block and chain, not reported as a result
  Model bad = s.fp;
  bad.blocks[3].up.W.row(2).setConstant(3e38f);
  auto gptq = make_method_chain("gptq", W4g32(32, Grid::gptq, true));
  REQUIRE_THROWS_WITH(quantize_model(bad, s.calib, gptq, sink), Catch::StartsWith("lowbit: block 3"));
  // degenerate groups: the report's count is degenerate_groups() of every linear as the quantizing step got it
  bad = s.fp;
  for (Eigen::Index c = 0; c < 32; ++c) bad.blocks[0].q.W(4, c) = 0.1f + 0.001f * float(c);  // one positive group
  auto rtn = make_method_chain("rtn", q);
  const PipelineReport rep = quantize_model(bad, {}, rtn, sink);
  std::int64_t want = 0, groups = 0;
  for (const Block& b : bad.blocks)
    for (Role r : all_roles) {
      want += degenerate_groups(q, b.linear(r).W);
      groups += b.linear(r).W.rows() * ((b.linear(r).W.cols() + 31) / 32);
    }
  REQUIRE(want >= 1);
  REQUIRE(rep.degenerate_groups == want);
  REQUIRE(rep.groups == groups);
  REQUIRE(std::find(rep.degenerate_linears.begin(), rep.degenerate_linears.end(), "block 0 q_proj") != rep.degenerate_linears.end());
}

TEST_CASE("scale and clip files with names that are not AWQ's are errors naming the tensor", "[awq][io]") {
  const std::string p = std::string(LOWBIT_BUILD_DIR) + "/awq_bad.safetensors";
  const float v[4] = {1, 1, 1, 1};
  auto file_with = [&](const std::string& name, std::vector<std::int64_t> shape) {
    write_safetensors(p, {tensor_f32(name, shape, v)});
    return p;
  };
  REQUIRE_NOTHROW(load_awq(file_with("blocks.0.attn_norm.scale", {4}), "", 2));
  REQUIRE_THROWS_WITH(load_awq(file_with("blocks.0.atn_norm.scale", {4}), "", 2),
                      Catch::Contains("'blocks.0.atn_norm.scale' is not a scale of an input group") && Catch::Contains("attn_norm"));
  REQUIRE_THROWS_WITH(load_awq(file_with("blocks.x.attn_norm.scale", {4}), "", 2), Catch::Contains("is not named blocks.<block index>"));
  REQUIRE_THROWS_WITH(load_awq(file_with("blocks.99999999999.attn_norm.scale", {4}), "", 2), Catch::Contains("is not named blocks.<block index>"));
  REQUIRE_THROWS_WITH(load_awq(file_with("blocks.2.attn_norm.scale", {4}), "", 2), Catch::Contains("names block 2 but the model has 2"));
  REQUIRE_THROWS_WITH(load_awq(file_with("blocks.0.attn_norm.scale", {2, 2}), "", 2), Catch::Contains("must be 1-D"));
  REQUIRE_NOTHROW(load_awq("", file_with("blocks.1.down_proj.max_val", {2, 2}), 2));
  REQUIRE_THROWS_WITH(load_awq("", file_with("blocks.1.q_proj.max_val", {2, 2}), 2), Catch::Contains("not a clip of a linear AWQ clips"));
  REQUIRE_THROWS_WITH(load_awq("", file_with("blocks.1.down_proj.maxval", {2, 2}), 2), Catch::Contains("not a clip"));
  std::remove(p.c_str());
}
