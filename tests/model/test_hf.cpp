// Hugging Face folders: stories260K converted to HF layout here (q/k rows permuted to rotate-half order,
// as HF's conversion script does), written as F32 / F16 / BF16, single-file and sharded; the loaded model
// must compute what the llama2.c model computes.
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <sys/stat.h>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {

MatrixRM to_hf_rows(const MatrixRM& W, int hd) {  // (2i, 2i+1) -> (i, i + hd/2) inside each head
  MatrixRM out(W.rows(), W.cols());
  const int half = hd / 2;
  for (Eigen::Index h = 0; h < W.rows() / hd; ++h)
    for (int i = 0; i < half; ++i)
      for (int j = 0; j < 2; ++j) out.row(h * hd + j * half + i) = W.row(h * hd + 2 * i + j);
  return out;
}

// Writes model `m` as an HF folder; `shards` > 1 splits the layers over files with an index.
void write_hf(const Model& m, const std::string& dir, DType dtype, int shards, const std::string& extra_cfg = "") {
  ::mkdir(dir.c_str(), 0755);
  const LlamaConfig& c = m.cfg;
  std::ofstream(dir + "/config.json") << "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": " << c.dim
                                      << ", \"intermediate_size\": " << c.hidden_dim << ", \"num_hidden_layers\": " << c.n_layers
                                      << ", \"num_attention_heads\": " << c.n_heads << ", \"num_key_value_heads\": " << c.n_kv_heads
                                      << ", \"vocab_size\": " << c.vocab_size << ", \"max_position_embeddings\": " << c.max_seq_len
                                      << ", \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true"
                                      << extra_cfg << "}";
  auto t = [&](const std::string& name, const MatrixRM& v) {
    std::vector<std::int64_t> shape = {v.rows(), v.cols()};
    if (dtype == DType::f32) return tensor_f32(name, shape, v.data());
    if (dtype == DType::f16) return tensor_f16(name, shape, v.data());
    TensorToWrite w{name, DType::bf16, shape, std::vector<std::uint8_t>(std::size_t(v.size()) * 2)};
    for (Eigen::Index i = 0; i < v.size(); ++i) {
      const std::uint16_t b = float_to_bf16_bits(v.data()[i]);
      std::memcpy(w.bytes.data() + 2 * i, &b, 2);
    }
    return w;
  };
  auto vec = [&](const std::string& name, const Eigen::VectorXf& v) {
    TensorToWrite w = t(name, MatrixRM(v.transpose()));
    w.shape = {v.size()};
    return w;
  };
  std::vector<std::vector<TensorToWrite>> files(static_cast<std::size_t>(shards));
  files[0].push_back(t("model.embed_tokens.weight", m.tok_embeddings));
  files[0].push_back(vec("model.norm.weight", m.final_norm));
  for (int i = 0; i < c.n_layers; ++i) {
    auto& f = files[std::size_t(i * shards / c.n_layers)];
    const Block& b = m.blocks[std::size_t(i)];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    f.push_back(vec(p + "input_layernorm.weight", b.attn_norm));
    f.push_back(vec(p + "post_attention_layernorm.weight", b.ffn_norm));
    f.push_back(t(p + "self_attn.q_proj.weight", to_hf_rows(b.q.W, c.head_dim())));
    f.push_back(t(p + "self_attn.k_proj.weight", to_hf_rows(b.k.W, c.head_dim())));
    f.push_back(t(p + "self_attn.v_proj.weight", b.v.W));
    f.push_back(t(p + "self_attn.o_proj.weight", b.o.W));
    f.push_back(t(p + "mlp.gate_proj.weight", b.gate.W));
    f.push_back(t(p + "mlp.up_proj.weight", b.up.W));
    f.push_back(t(p + "mlp.down_proj.weight", b.down.W));
  }
  if (shards == 1) {
    std::remove((dir + "/model.safetensors.index.json").c_str());
    write_safetensors(dir + "/model.safetensors", files[0]);
    return;
  }
  std::remove((dir + "/model.safetensors").c_str());
  std::string idx = "{\"metadata\": {}, \"weight_map\": {";
  bool first = true;
  for (int s = 0; s < shards; ++s) {
    const std::string fname = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    write_safetensors(dir + "/" + fname, files[std::size_t(s)]);
    for (const auto& w : files[std::size_t(s)]) idx += (first ? "\"" : ", \"") + w.name + "\": \"" + fname + "\"", first = false;
  }
  std::ofstream(dir + "/model.safetensors.index.json") << idx << "}}";
}

}  // namespace

TEST_CASE("HF folders (F32 / F16 / BF16, single and sharded) compute what the llama2.c model computes", "[data][hf]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model ref = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> toks = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const std::vector<int> head(toks.begin(), toks.begin() + 256);
  const MatrixRM want = forward(ref, head, 256);
  const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/hf_stories260K";
  for (auto [dtype, shards, tol] : {std::tuple{DType::f32, 1, 1e-4f}, std::tuple{DType::f32, 3, 1e-4f},
                                    std::tuple{DType::f16, 1, 2e-2f}, std::tuple{DType::bf16, 2, 1.5e-1f}}) {
    INFO(to_string(dtype) << " in " << shards << " file(s)");
    write_hf(ref, dir, dtype, shards);
    const Model hf = load_hf(dir);
    REQUIRE_FALSE(hf.resident());  // blocks stay mapped
    REQUIRE(hf.cfg.rope == RopeStyle::rotate_half);
    const MatrixRM got = forward(hf, head, 256);
    REQUIRE((got - want).cwiseAbs().maxCoeff() <= tol * want.cwiseAbs().maxCoeff());
    if (dtype == DType::f32) {  // same perplexity, lazily or resident
      const double a = perplexity(ref, toks, 256, 5120).ppl, b = perplexity(hf, toks, 256, 5120, 2048).ppl;
      REQUIRE(b == Approx(a).epsilon(1e-5));
      Model res = load_hf(dir);
      res.make_resident();
      REQUIRE(perplexity(res, toks, 256, 5120).ppl == Approx(a).epsilon(1e-5));
    }
  }
}

TEST_CASE("HF folder errors name the file, key or tensor", "[data][hf]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model ref = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::string dir = std::string(LOWBIT_BUILD_DIR) + "/hf_bad";
  write_hf(ref, dir, DType::f32, 1, ", \"rope_scaling\": {\"type\": \"linear\"}");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("config.json") && Catch::Contains("rope_scaling"));
  write_hf(ref, dir, DType::f32, 1);
  std::string cfg = read_text_file(dir + "/config.json");
  std::ofstream(dir + "/config.json") << std::string(cfg).replace(cfg.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("unsupported architecture 'GPT2LMHeadModel'"));
  std::ofstream(dir + "/config.json") << std::string(cfg).replace(cfg.find("\"intermediate_size\": 172"), 24, "\"intermediate_size\": 171");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("'model.layers.0.mlp.gate_proj.weight' has shape [172x64], expected [171x64]") ||
                                        Catch::Contains("expected [171x64]"));
  std::ofstream(dir + "/config.json") << std::string(cfg).replace(cfg.find("\"num_hidden_layers\": 5"), 22, "\"num_hidden_layers\": 6");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("missing tensor 'model.layers.5.input_layernorm.weight'"));
  // issue 8: a key of the wrong type is an error, never the default; out-of-range numbers before any cast
  auto with = [&](const std::string& key, const std::string& value) {  // the key's value replaced
    std::string c = cfg;
    const std::size_t at = c.find("\"" + key + "\": ") + key.size() + 4;
    std::ofstream(dir + "/config.json") << c.replace(at, c.find_first_of(",}", at) - at, value);
  };
  with("rms_norm_eps", "\"1e-5\"");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("\"rms_norm_eps\" must be a finite number"));
  with("tie_word_embeddings", "1");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("\"tie_word_embeddings\" must be true or false"));
  with("rms_norm_eps", "0");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("rms_norm_eps 0 is not in (0, 1]"));
  std::ofstream(dir + "/config.json") << std::string(cfg).replace(cfg.find("\"num_hidden_layers\": 5"), 22, "\"num_hidden_layers\": 1e300");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("\"num_hidden_layers\" must be a positive integer"));
  const std::size_t rt = cfg.find("\"rope_theta\": ");
  std::ofstream(dir + "/config.json") << std::string(cfg).replace(rt, cfg.find(',', rt) - rt, "\"rope_theta\": -1");
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("rope_theta -1 is not a finite value > 1"));
  std::ofstream(dir + "/config.json") << cfg;
  std::remove((dir + "/model.safetensors").c_str());
  REQUIRE_THROWS_WITH(load_hf(dir), Catch::Contains("neither model.safetensors"));
}
