// GGUF: stories260K written as GGUF v3 here (with tok512 as tokenizer.ggml.* in llama.cpp's spelling);
// the loaded model and tokenizer must reproduce the llama2.c model's logits and the reference token ids.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <lowbit/lowbit.hpp>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {
// `bos`: the BOS id written (1 in llama.cpp's files); `drop_tokens`: tokens left out of tokenizer.ggml.tokens.
void write_gguf_model(const Model& m, const Tokenizer& tok, const std::string& path, bool f16, double bos = 1,
                      std::size_t drop_tokens = 0) {
  GgufWriter w;
  const LlamaConfig& c = m.cfg;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.embedding_length", std::uint32_t(c.dim));
  w.add_u32("llama.feed_forward_length", std::uint32_t(c.hidden_dim));
  w.add_u32("llama.block_count", std::uint32_t(c.n_layers));
  w.add_u32("llama.attention.head_count", std::uint32_t(c.n_heads));
  w.add_u32("llama.attention.head_count_kv", std::uint32_t(c.n_kv_heads));
  w.add_u32("llama.context_length", std::uint32_t(c.max_seq_len));
  w.add_f32("llama.rope.freq_base", 10000.0f);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_string("tokenizer.ggml.model", "llama");
  std::vector<std::string> pieces;
  for (std::string s : tok.vocab) {  // llama.cpp writes spaces as U+2581
    for (std::size_t k; (k = s.find(' ')) != std::string::npos;) s.replace(k, 1, "\xe2\x96\x81");
    pieces.push_back(s);
  }
  pieces.resize(pieces.size() - drop_tokens);
  w.add_strings("tokenizer.ggml.tokens", pieces);
  w.add_f32s("tokenizer.ggml.scores", std::vector<float>(tok.scores.begin(), tok.scores.end() - std::ptrdiff_t(drop_tokens)));
  if (bos >= 0 && bos < 4294967296.0 && bos == std::floor(bos)) w.add_u32("tokenizer.ggml.bos_token_id", std::uint32_t(bos));
  else w.add_f32("tokenizer.ggml.bos_token_id", float(bos));
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_tensor("token_embd.weight", m.tok_embeddings.data(), std::uint64_t(c.vocab_size), std::uint64_t(c.dim), f16);
  w.add_tensor("output_norm.weight", m.final_norm.data(), 1, std::uint64_t(c.dim), false);
  for (int i = 0; i < c.n_layers; ++i) {
    const Block& b = m.blocks[std::size_t(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    w.add_tensor(p + "attn_norm.weight", b.attn_norm.data(), 1, std::uint64_t(c.dim), false);
    w.add_tensor(p + "ffn_norm.weight", b.ffn_norm.data(), 1, std::uint64_t(c.dim), false);
    for (auto [name, W] : {std::pair{"attn_q", &b.q.W}, {"attn_k", &b.k.W}, {"attn_v", &b.v.W}, {"attn_output", &b.o.W},
                           {"ffn_gate", &b.gate.W}, {"ffn_up", &b.up.W}, {"ffn_down", &b.down.W}})
      w.add_tensor(p + name + ".weight", W->data(), std::uint64_t(W->rows()), std::uint64_t(W->cols()), f16);
  }
  w.write(path);
}
}  // namespace

TEST_CASE("GGUF (F32, F16) loads to the same model and tokenizer", "[data][gguf]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/tok512.bin");
  const Model ref = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const Tokenizer tok = Tokenizer::load_llama2c(lowbit_test::shared_path("models/stories260K/tok512.bin"), 512);
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const std::vector<int> head(ids.begin(), ids.begin() + 200);
  const MatrixRM want = forward(ref, head, 200);
  const std::string path = std::string(LOWBIT_BUILD_DIR) + "/stories260K.gguf";
  for (bool f16 : {false, true}) {
    write_gguf_model(ref, tok, path, f16);
    const GgufModel g = load_gguf(path);
    REQUIRE(g.has_tokenizer);
    REQUIRE(g.model.cfg.tied_embeddings);
    const MatrixRM got = forward(g.model, head, 200);
    REQUIRE((got - want).cwiseAbs().maxCoeff() <= (f16 ? 2e-2f : 1e-6f) * want.cwiseAbs().maxCoeff());
    const std::string text = read_text_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.txt"));
    const std::vector<int> enc = g.tokenizer.encode(text, true);
    REQUIRE(enc == ids);
    REQUIRE(load_model(path).cfg.dim == 64);  // format detected from the magic
  }
  // corrupt files
  const std::string good = read_text_file(path), bad = std::string(LOWBIT_BUILD_DIR) + "/bad.gguf";
  std::ofstream(bad, std::ios::binary) << good.substr(0, good.size() - 1000);
  REQUIRE_THROWS_WITH(load_gguf(bad), Catch::Contains("bad.gguf") && Catch::Contains("outside the file"));
  std::ofstream(bad, std::ios::binary) << good.substr(0, 300);
  REQUIRE_THROWS_WITH(load_gguf(bad), Catch::Contains("truncated"));
  std::string v9 = good;
  v9[4] = 9;
  std::ofstream(bad, std::ios::binary) << v9;
  REQUIRE_THROWS_WITH(load_gguf(bad), Catch::Contains("GGUF version 9"));
  std::remove(bad.c_str());
}

TEST_CASE("GGUF special token ids and the vocabulary are checked against the model", "[data][gguf]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/tok512.bin");
  const Model ref = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const Tokenizer tok = Tokenizer::load_llama2c(lowbit_test::shared_path("models/stories260K/tok512.bin"), 512);
  const std::string path = std::string(LOWBIT_BUILD_DIR) + "/bad_ids.gguf";
  for (double bos : {512.0, 4e9, 3e38, -1.0}) {  // out of the vocabulary, beyond int (undefined to cast), negative
    write_gguf_model(ref, tok, path, false, bos);
    CAPTURE(bos);
    REQUIRE_THROWS_WITH(load_gguf(path), Catch::Contains("tokenizer.ggml.bos_token_id") && Catch::Contains("[0, 512)"));
  }
  write_gguf_model(ref, tok, path, false, 1, 12);
  REQUIRE_THROWS_WITH(load_gguf(path), Catch::Contains("tokenizer.ggml.tokens must be an array of 512 strings"));
  std::remove(path.c_str());
}
