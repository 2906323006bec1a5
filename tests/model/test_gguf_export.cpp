// GGUF export (formats/gguf_export.hpp): stories260K quantized (RTN, GPTQ) and written for llama.cpp, then read back
// by lowbit's GGUF loader -- the method's own codes come back as (code - z) fp16(s) exactly, rows that are not whole blocks
// (the 172-wide down projection) as F16, the tied embeddings as Q8_0; a rotate-half (Hugging Face) model's q / k
// rows are permuted to llama.cpp's order; the file appears only on commit.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <random>
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
  const Windows calib =
      sequential_windows(read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tokens.i32")), 8, 64);
  // RTN and GPTQ on llama.cpp's own grids (Q4_0: symmetric, Q4_1: asymmetric), RTN on AWQ's min-max grid
  // (asymmetric: Q4_1, re-quantized as Q4_0)
  struct Case {
    const char* method;
    bool sym;
    Grid grid;
    GgmlType type;
  };
  for (const Case& k : {Case{"rtn", true, Grid::ggml, GgmlType::q4_0}, Case{"rtn", false, Grid::ggml, GgmlType::q4_1},
                        Case{"gptq", true, Grid::ggml, GgmlType::q4_0}, Case{"gptq", false, Grid::ggml, GgmlType::q4_1},
                        Case{"rtn", false, Grid::minmax, GgmlType::q4_1}, Case{"rtn", false, Grid::minmax, GgmlType::q4_0}}) {
    INFO(k.method << " " << to_string(k.grid) << (k.sym ? " sym" : " asym") << " as " << to_string(k.type));
    std::remove(path.c_str());
    ModelSink keep(fp, {true, false, true});
    GgufSink gguf(fp, &tok, path, k.type);
    SinkFan fan;
    fan.add(&keep), fan.add(&gguf);
    const auto run = [&](const auto& q) {
      auto chain = make_method_chain(k.method, q);
      quantize_model(fp, std::string(k.method) == "rtn" ? Windows{} : calib, chain, fan);
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

namespace {
// ggml-common.h's block_q4_K / block_q6_K read element by element (independent of pack/ggml_k.hpp's loops).
float q4_k_value(const std::uint8_t* b, int e) {
  const auto half = [&](int at) {
    std::uint16_t h;
    std::memcpy(&h, b + at, 2);
    return half_bits_to_float(h);
  };
  const std::uint8_t* sc = b + 4;
  const int chunk = e / 64, within = e % 64, j = 2 * chunk + (within >= 32 ? 1 : 0);
  const int s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
  const int m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  const std::uint8_t byte = b[16 + chunk * 32 + within % 32];
  const int q = within < 32 ? byte & 0xF : byte >> 4;
  return half(0) * float(s) * float(q) - half(2) * float(m);
}
float q6_k_value(const std::uint8_t* b, int e) {
  std::uint16_t h;
  std::memcpy(&h, b + 208, 2);
  const int hf = e / 128, r = e % 128, l = r % 32, quarter = r / 32;
  const std::uint8_t lo = b[hf * 64 + l + (quarter % 2) * 32];
  const int low = quarter < 2 ? lo & 0xF : lo >> 4;
  const int high = (b[128 + hf * 32 + l] >> (2 * quarter)) & 3;
  const int q = (low | (high << 4)) - 32;
  const std::int8_t scale = std::int8_t(b[192 + hf * 8 + l / 16 + 2 * quarter]);
  return half_bits_to_float(h) * float(scale) * float(q);
}
}  // namespace

TEST_CASE("GGUF Q4_K / Q6_K: llama.cpp's super-block layout read back by an independent reader", "[gguf][export]") {
  // a synthetic LLaMA whose rows are multiples of 256, but for the 288-wide down projection (llama.cpp's fallback)
  Model m;
  LlamaConfig& c = m.cfg;
  c.dim = 256, c.hidden_dim = 288, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 32, c.max_seq_len = 16;
  c.tied_embeddings = false;
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const auto fill = [&](MatrixRM& w, Eigen::Index r, Eigen::Index k) {
    w.resize(r, k);
    for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = nd(g);
  };
  fill(m.tok_embeddings, c.vocab_size, c.dim);
  fill(m.output, c.vocab_size, c.dim);
  m.final_norm = Eigen::VectorXf::Ones(c.dim);
  m.blocks.resize(1);
  m.blocks[0].attn_norm = Eigen::VectorXf::Ones(c.dim), m.blocks[0].ffn_norm = Eigen::VectorXf::Ones(c.dim);
  for (Role r : all_roles) fill(m.blocks[0].linear(r).W, linear_shape(c, r)[0], linear_shape(c, r)[1]);
  m.blocks[0].linear(Role::v).W.row(3).setZero();  // an all-zero row: the reference's zero super-blocks
  const std::string path = std::string(LOWBIT_BUILD_DIR) + "/export_k.gguf";
  for (GgmlType t : {GgmlType::q4_k, GgmlType::q6_k}) {
    INFO(to_string(t));
    {
      GgufModelWriter w(m, nullptr, path, t);
      w.block(0, m.blocks[0], nullptr);
      w.commit();
      REQUIRE(find(w, "blk.0.attn_q.weight").type == t);
      REQUIRE(find(w, "blk.0.attn_q.weight").how == GgufStorage::requantized);
      REQUIRE(find(w, "blk.0.ffn_down.weight").type == (t == GgmlType::q4_k ? GgmlType::q4_1 : GgmlType::q8_0));
      REQUIRE(find(w, "output.weight").type == GgmlType::q6_k);  // llama.cpp's classifier type for rows of 256
      REQUIRE(find(w, "blk.0.ffn_gate.weight").bytes == std::uint64_t(288) * ggml_unit_bytes(t));
      // the reference quantizers' error: Q4_K about 4 bits with 6-bit sub-scales, Q6_K about 6 bits
      REQUIRE(find(w, "blk.0.attn_q.weight").rel_rms < (t == GgmlType::q4_k ? 0.12 : 0.03));
      REQUIRE(find(w, "blk.0.attn_q.weight").rel_rms > (t == GgmlType::q4_k ? 0.03 : 0.003));
    }
    const GgufFile f(path);
    const GgufModel loaded = load_gguf(path);
    const Block b = loaded.model.load_block(0);
    for (const LinearDesc& l : kLinears) {
      if (l.role == Role::down) continue;
      INFO(l.name);
      const GgufTensor& gt = f.tensor(std::string("blk.0.") + l.gguf + ".weight");
      REQUIRE(gt.ggml_type == std::uint32_t(t));
      const MatrixRM& W = b.linear(l.role).W;
      const std::size_t rb = std::size_t(W.cols() / 256) * (t == GgmlType::q4_k ? 144 : 210);
      REQUIRE(gt.nbytes == rb * std::size_t(W.rows()));
      for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index k = 0; k < W.cols(); ++k) {
          const std::uint8_t* blk = gt.data + std::size_t(r) * rb + std::size_t(k / 256) * (rb / std::size_t(W.cols() / 256));
          const float want = t == GgmlType::q4_k ? q4_k_value(blk, int(k % 256)) : q6_k_value(blk, int(k % 256));
          if (W(r, k) != want) FAIL("row " << r << " column " << k << ": loader " << W(r, k) << ", reader " << want);
        }
    }
    // an all-zero row stays zero (the reference writes zero super-blocks)
    REQUIRE(b.v.W.row(3).cwiseAbs().maxCoeff() == 0.0f);
  }
  std::remove(path.c_str());
}

TEST_CASE("GGUF export's float fallback holds the float weights where rows are not whole blocks", "[data][gguf][export]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/tok512.bin");
  const Model fp = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::string path = std::string(LOWBIT_BUILD_DIR) + "/export_float_fallback.gguf";
  ModelSink keep(fp, {true, false, true});
  GgufSink gguf(fp, nullptr, path, GgmlType::q4_0, GgufFallback::float_weights);
  REQUIRE(gguf.wants_transformed());
  SinkFan fan;
  fan.add(&keep), fan.add(&gguf);
  auto chain = make_method_chain("rtn", Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric>(32, Grid::ggml, true));
  quantize_model(fp, {}, chain, fan);
  gguf.commit();
  REQUIRE(find(gguf.writer(), "blk.1.ffn_down.weight").how == GgufStorage::f16_fallback);
  REQUIRE(find(gguf.writer(), "blk.1.ffn_down.weight").rel_rms > 0.0);  // reported against the method's weights
  REQUIRE(find(gguf.writer(), "blk.1.attn_v.weight").how == GgufStorage::codes);
  const GgufModel g = load_gguf(path);
  for (int b : {0, 3}) {
    const Block got = g.model.load_block(b);
    // RTN has no transform: the float weights are the model's own, in fp16, as llama.cpp's fallback
    REQUIRE((got.down.W - fp.blocks[std::size_t(b)].down.W.unaryExpr([](float v) { return round_to_half(v); })).cwiseAbs().maxCoeff() == 0.0f);
    const QuantizedLinear& v = keep.quantized[std::size_t(b)][std::size_t(Role::v)];
    REQUIRE(got.v.W(1, 2) == (float(v.codes(1, 2)) - v.params.at(1, 0).zero) * round_to_half(v.params.at(1, 0).scale));
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
