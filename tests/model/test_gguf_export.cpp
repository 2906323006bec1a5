// GGUF export (formats/gguf_export.hpp): stories260K quantized and written for llama.cpp, then read back by lowbit's
// GGUF loader -- the method's own codes come back as (code - z) fp16(s) exactly, rows that are not whole blocks
// (the 172-wide down projection) as F16, the tied embeddings as Q8_0; a rotate-half (Hugging Face) model's q / k
// rows are permuted to llama.cpp's order; the file appears only on commit.
#include <catch2/catch.hpp>
#include <cstdio>
#include <lowbit/lowbit.hpp>
#include <sys/stat.h>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {
bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
const GgufTensorReport& find(const GgufModelWriter& w, const std::string& name) {
  for (const GgufTensorReport& r : w.report())
    if (r.name == name) return r;
  FAIL("no tensor " << name << " in the report");
  return w.report().front();
}
}  // namespace

TEST_CASE("a quantized stories260K as GGUF Q4_0 / Q4_1 loads back to the method's codes", "[data][gguf][export]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/tok512.bin");
  const Model fp = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const Tokenizer tok = Tokenizer::load_llama2c(lowbit_test::shared_path("models/stories260K/tok512.bin"), 512);
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const std::string path = std::string(LOWBIT_BUILD_DIR) + "/export_q4.gguf";
  // RTN on llama.cpp's own grids (Q4_0: symmetric, Q4_1: asymmetric) and AWQ's min-max grid (asymmetric: Q4_1)
  struct Case {
    bool sym;
    Grid grid;
    GgmlType type;
  };
  for (const Case& k : {Case{true, Grid::ggml, GgmlType::q4_0}, Case{false, Grid::ggml, GgmlType::q4_1},
                        Case{false, Grid::minmax, GgmlType::q4_1}, Case{false, Grid::minmax, GgmlType::q4_0}}) {
    INFO(to_string(k.grid) << (k.sym ? " sym" : " asym") << " as " << to_string(k.type));
    std::remove(path.c_str());
    ModelSink keep(fp, {true, false, true});
    GgufSink gguf(fp, &tok, path, k.type);
    SinkFan fan;
    fan.add(&keep), fan.add(&gguf);
    const auto run = [&](const auto& q) {
      auto chain = make_method_chain("rtn", q);
      quantize_model(fp, {}, chain, fan);
    };
    if (k.sym) run(Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric>(32, k.grid, true));  // ragged: 172 = 5 x 32 + 12
    else run(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(32, k.grid, true));
    REQUIRE_FALSE(file_exists(path));  // nothing under the name before commit
    gguf.commit();
    const GgufModelWriter& w = gguf.writer();
    const bool codes = !(k.grid == Grid::minmax && k.type == GgmlType::q4_0);  // an asymmetric grid is no Q4_0
    REQUIRE(find(w, "blk.0.attn_q.weight").how == (codes ? GgufStorage::codes : GgufStorage::requantized));
    REQUIRE(find(w, "blk.4.ffn_up.weight").type == k.type);
    REQUIRE(find(w, "blk.0.ffn_down.weight").how == GgufStorage::f16_fallback);  // 172 columns: no blocks of 32
    REQUIRE(find(w, "token_embd.weight").type == GgmlType::q8_0);                 // tied: llama.cpp's output type
    REQUIRE(find(w, "blk.0.attn_norm.weight").type == GgmlType::f32);

    const GgufModel g = load_gguf(path);
    REQUIRE(g.has_tokenizer);
    REQUIRE(g.tokenizer.encode("Once upon a time", true) == tok.encode("Once upon a time", true));
    for (int b : {0, 4}) {
      const Block got = g.model.load_block(b);
      for (Role r : {Role::q, Role::o, Role::gate}) {
        const QuantizedLinear& ql = keep.quantized[std::size_t(b)][std::size_t(r)];
        const MatrixRM& W = got.linear(r).W;
        const MatrixRM& fake = keep.fake.blocks[std::size_t(b)].linear(r).W;
        for (Eigen::Index i = 0; i < W.rows(); ++i)
          for (Eigen::Index c = 0; c < W.cols(); ++c) {
            const GroupParams p = ql.params.at(i, ql.group_of(c));
            const float s = round_to_half(p.scale), code = float(ql.codes(i, c));
            if (!codes) {
              REQUIRE(std::abs(W(i, c) - fake(i, c)) <= 0.6f * std::abs(s) * 2 + 1e-6f);  // re-quantized: within a step
              continue;
            }
            if (k.type == GgmlType::q4_0) REQUIRE(W(i, c) == (code - p.zero) * s);
            else REQUIRE(W(i, c) == code * s + round_to_half(k.grid == Grid::ggml ? p.zero : -p.zero * p.scale));
          }
      }
      // the F16 fallback holds the fake weights in fp16
      const MatrixRM& down = keep.fake.blocks[std::size_t(b)].down.W;
      REQUIRE((got.down.W - down.unaryExpr([](float v) { return round_to_half(v); })).cwiseAbs().maxCoeff() == 0.0f);
    }
    // the file's perplexity is the method's up to fp16 scales and the Q8_0 embeddings
    const double want = perplexity(keep.fake, ids, 256, 8192).ppl, got = perplexity(g.model, ids, 256, 8192).ppl;
    INFO("method " << want << ", GGUF " << got);
    REQUIRE(got == Approx(want).epsilon(codes ? 0.01 : 0.05));
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    REQUIRE(std::uint64_t(st.st_size) > w.bytes());  // tensors + header
    REQUIRE(std::uint64_t(st.st_size) < w.bytes() + 64 * 1024);
  }
  std::remove(path.c_str());
}

TEST_CASE("GGUF export permutes rotate-half q / k rows, is atomic and refuses what it cannot hold", "[data][gguf][export]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model ref = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const std::vector<int> head(ids.begin(), ids.begin() + 128);
  const MatrixRM want = forward(ref, head, 128);
  const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/export_hf", path = std::string(LOWBIT_BUILD_DIR) + "/export_f32.gguf";
  {
    HfWriter hw(ref, dir);
    for (int i = 0; i < ref.cfg.n_layers; ++i) hw.block(i, ref.blocks[std::size_t(i)]);
    hw.commit();
  }
  const Model hf = load_hf(dir);
  REQUIRE(hf.cfg.rope == RopeStyle::rotate_half);
  {
    GgufModelWriter w(hf, nullptr, path, GgmlType::f32);
    for (int i = 0; i < hf.cfg.n_layers; ++i) w.block(i, hf.load_block(i), nullptr);
    w.commit();
    REQUIRE(find(w, "blk.0.attn_q.weight").how == GgufStorage::values);
    REQUIRE(find(w, "blk.0.attn_q.weight").rel_rms == 0.0);
  }
  const GgufModel g = load_gguf(path);
  REQUIRE_FALSE(g.has_tokenizer);
  REQUIRE(g.model.cfg.rope == RopeStyle::interleaved);
  REQUIRE((forward(g.model, head, 128) - want).cwiseAbs().maxCoeff() <= 1e-4f * want.cwiseAbs().maxCoeff());

  // a run that stops before commit leaves nothing (and an earlier file is untouched)
  std::remove(path.c_str());
  {
    GgufModelWriter w(ref, nullptr, path, GgmlType::q8_0);
    w.block(0, ref.blocks[0], nullptr);
    REQUIRE_THROWS_WITH(w.block(2, ref.blocks[2], nullptr), Catch::Contains("block 2 written out of order (expected 1)"));
    REQUIRE_THROWS_WITH(w.commit(), Catch::Contains("4 blocks were never written"));
  }
  REQUIRE_FALSE(file_exists(path));
  // a shifted block (OS+ / PaddleSlim shift) carries biases a llama.cpp LLaMA cannot hold
  Block shifted = ref.blocks[0];
  shifted.shift[0] = Eigen::VectorXf::Ones(ref.cfg.dim);
  GgufModelWriter w(ref, nullptr, path, GgmlType::q4_0);
  REQUIRE_THROWS_WITH(w.block(0, shifted, nullptr), Catch::Contains("shifts the input") && Catch::Contains("export_f32.gguf"));
  REQUIRE_THROWS_WITH(parse_ggml_type("q5_k"), Catch::Contains("unknown GGUF tensor type 'q5_k'"));
}
