// make_seeds: the fuzz targets' seed corpora, written by lowbit's own writers (and, for llama2.c, by the
// format's layout written out here), plus the headers of the real models in shared/ when it is there.
//
//   fuzz_make_seeds OUT_DIR [SHARED_DIR]
//
// OUT_DIR/<target>/ gets the seeds of each target; OUT_DIR/hf_shards/ the shards the hf target's folder holds
// (the target reads them through $LOWBIT_FUZZ_SHARDS).  Small files on purpose: the fuzzer mutates them quickly.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

std::string out_dir;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string d = out_dir + "/" + target;
  ::mkdir(d.c_str(), 0755);
  std::ofstream(d + "/" + name, std::ios::binary) << bytes;
}

std::string slurp(const std::string& path, std::size_t max = std::string::npos) {
  std::ifstream f(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.substr(0, std::min(max, s.size()));
}

template <class T>
void append(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// A tiny model: dim 16, hidden 32, 2 layers, 2 heads, 1 kv head (GQA), vocab 8, context 8.
Model tiny_model(bool tied) {
  Model m;
  LlamaConfig& c = m.cfg;
  c.dim = 16, c.hidden_dim = 32, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 1, c.vocab_size = 8, c.max_seq_len = 8;
  c.tied_embeddings = tied;
  std::mt19937 g(7);
  std::normal_distribution<float> nd(0.0f, 0.2f);
  auto fill = [&](MatrixRM& w, int r, int cols) {
    w.resize(r, cols);
    for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = nd(g);
  };
  fill(m.tok_embeddings, c.vocab_size, c.dim);
  if (!tied) fill(m.output, c.vocab_size, c.dim);
  m.final_norm = Eigen::VectorXf::Ones(c.dim);
  m.blocks.resize(2);
  for (Block& b : m.blocks) {
    b.attn_norm = Eigen::VectorXf::Ones(c.dim), b.ffn_norm = Eigen::VectorXf::Ones(c.dim);
    for (Role r : all_roles) {
      const auto s = linear_shape(c, r);
      fill(b.linear(r).W, s[0], s[1]);
    }
  }
  return m;
}

void floats(std::string& s, const float* p, std::size_t n) { s.append(reinterpret_cast<const char*>(p), n * 4); }

// llama2.c legacy layout (formats/llama2c.hpp): header, then the weights in run.c's order.
std::string llama2c_legacy(const Model& m) {
  const LlamaConfig& c = m.cfg;
  std::string s;
  for (int v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.tied_embeddings ? c.vocab_size : -c.vocab_size,
                c.max_seq_len})
    append<std::int32_t>(s, v);
  floats(s, m.tok_embeddings.data(), std::size_t(m.tok_embeddings.size()));
  for (const Block& b : m.blocks) floats(s, b.attn_norm.data(), std::size_t(c.dim));
  for (Role r : {Role::q, Role::k, Role::v, Role::o})
    for (const Block& b : m.blocks) floats(s, b.linear(r).W.data(), std::size_t(b.linear(r).W.size()));
  for (const Block& b : m.blocks) floats(s, b.ffn_norm.data(), std::size_t(c.dim));
  for (Role r : {Role::gate, Role::down, Role::up})
    for (const Block& b : m.blocks) floats(s, b.linear(r).W.data(), std::size_t(b.linear(r).W.size()));
  floats(s, m.final_norm.data(), std::size_t(c.dim));
  s.append(std::size_t(c.max_seq_len) * std::size_t(c.head_dim()) * 4, '\0');  // freq_cis
  if (!c.tied_embeddings) floats(s, m.output.data(), std::size_t(m.output.size()));
  return s;
}

// ak42 versions 1 (float32) and 2 (Q8_0, group 8).
std::string llama2c_ak42(const Model& m, int version) {
  const LlamaConfig& c = m.cfg;
  std::string s;
  append<std::uint32_t>(s, 0x616b3432u);
  append<std::int32_t>(s, version);
  for (int v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len}) append<std::int32_t>(s, v);
  s.push_back(c.tied_embeddings ? 1 : 0);
  if (version == 2) append<std::int32_t>(s, 8);
  s.resize(256, '\0');
  for (const Block& b : m.blocks) floats(s, b.attn_norm.data(), std::size_t(c.dim));
  for (const Block& b : m.blocks) floats(s, b.ffn_norm.data(), std::size_t(c.dim));
  floats(s, m.final_norm.data(), std::size_t(c.dim));
  auto mat = [&](const MatrixRM& w) {
    if (version == 1) return floats(s, w.data(), std::size_t(w.size()));
    std::vector<float> scales;
    for (Eigen::Index g0 = 0; g0 < w.size(); g0 += 8) {
      float amax = 0;
      for (int k = 0; k < 8; ++k) amax = std::max(amax, std::fabs(w.data()[g0 + k]));
      const float sc = amax / 127.0f;
      scales.push_back(sc);
      for (int k = 0; k < 8; ++k) s.push_back(char(std::int8_t(sc > 0 ? std::nearbyint(w.data()[g0 + k] / sc) : 0)));
    }
    floats(s, scales.data(), scales.size());
  };
  mat(m.tok_embeddings);
  for (Role r : {Role::q, Role::k, Role::v, Role::o, Role::gate, Role::down, Role::up})
    for (const Block& b : m.blocks) mat(b.linear(r).W);
  if (!c.tied_embeddings) mat(m.output);
  return s;
}

std::vector<std::string> tiny_vocab() { return {"<unk>", "<s>", "</s>", " ", "a", "b", " a", "ab"}; }

std::string llama2c_tokenizer(std::vector<std::string> vocab, std::vector<float> scores) {
  std::string s;
  append<std::int32_t>(s, 4);
  for (std::size_t i = 0; i < vocab.size(); ++i) {
    append<float>(s, scores[i]);
    append<std::int32_t>(s, std::int32_t(vocab[i].size()));
    s += vocab[i];
  }
  return s;
}

void gguf_seed(const Model& m, bool tokenizer, const std::string& path) {
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
  if (tokenizer) {
    w.add_string("tokenizer.ggml.model", "llama");
    std::vector<std::string> v = tiny_vocab();
    for (std::string& p : v)
      for (std::size_t k; (k = p.find(' ')) != std::string::npos;) p.replace(k, 1, "\xe2\x96\x81");
    w.add_strings("tokenizer.ggml.tokens", v);
    w.add_f32s("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -3, -4, -5});
    w.add_i32s("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1});
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", 2);
  }
  w.add_tensor("token_embd.weight", m.tok_embeddings.data(), std::uint64_t(c.vocab_size), std::uint64_t(c.dim), true);
  w.add_tensor("output_norm.weight", m.final_norm.data(), 1, std::uint64_t(c.dim), false);
  if (!c.tied_embeddings) w.add_tensor("output.weight", m.output.data(), std::uint64_t(c.vocab_size), std::uint64_t(c.dim), false);
  for (int i = 0; i < c.n_layers; ++i) {
    const Block& b = m.blocks[std::size_t(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    w.add_tensor(p + "attn_norm.weight", b.attn_norm.data(), 1, std::uint64_t(c.dim), false);
    w.add_tensor(p + "ffn_norm.weight", b.ffn_norm.data(), 1, std::uint64_t(c.dim), false);
    for (const LinearDesc& l : kLinears) {
      const MatrixRM& W = b.linear(l.role).W;
      w.add_tensor(p + l.gguf + ".weight", W.data(), std::uint64_t(W.rows()), std::uint64_t(W.cols()), i == 1);
    }
  }
  w.write(path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds OUT_DIR [SHARED_DIR]\n");
    return 2;
  }
  out_dir = argv[1];
  const std::string shared = argc > 2 ? argv[2] : "";
  ::mkdir(out_dir.c_str(), 0755);
  try {
    const Model tied = tiny_model(true), untied = tiny_model(false);
    // llama2.c
    put("llama2c", "legacy_tied.bin", llama2c_legacy(tied));
    put("llama2c", "legacy_untied.bin", llama2c_legacy(untied));
    put("llama2c", "ak42_v1.bin", llama2c_ak42(tied, 1));
    put("llama2c", "ak42_v2_q80.bin", llama2c_ak42(untied, 2));
    for (const char* real : {"models/stories260K/stories260K.bin", "models/babyllama-tok105/model5000.bin",
                             "models/prometheus-shakespeare-q80/shakespeare_q80.bin"})
      if (!shared.empty()) {
        const std::string head = slurp(shared + "/" + real, 512);  // the real header (and a truncated body)
        if (!head.empty()) put("llama2c", std::string("real_head_") + (std::strrchr(real, '/') + 1), head);
      }
    // safetensors (lowbit's writer: F32, F16, I32, metadata)
    const std::string st = out_dir + "/st.tmp";
    {
      const float v[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
      const std::int32_t ids[3] = {1, 2, 3};
      TensorToWrite i32{"ids", DType::i32, {3}, std::vector<std::uint8_t>(12)};
      std::memcpy(i32.bytes.data(), ids, 12);
      write_safetensors(st, {tensor_f32("a", {2, 3}, v), tensor_f16("b", {6}, v), i32}, {{"format", "pt"}});
      put("safetensors", "three_tensors.safetensors", slurp(st));
      write_safetensors(st, {tensor_f32("scalar", {}, v)});
      put("safetensors", "scalar.safetensors", slurp(st));
    }
    // GGUF (lowbit's writer), with and without a tokenizer
    const std::string gg = out_dir + "/g.tmp";
    gguf_seed(tied, true, gg);
    put("gguf", "tiny_tok.gguf", slurp(gg));
    gguf_seed(untied, false, gg);
    put("gguf", "tiny_untied.gguf", slurp(gg));
    std::remove(gg.c_str());
    // Hugging Face: the shards (two, and one whole file) beside the corpus; the inputs are config.json [NUL index]
    const std::string shards = out_dir + "/hf_shards";
    ::mkdir(shards.c_str(), 0755);
    {
      const std::string whole = out_dir + "/hf_whole";
      save_hf(tied, whole);  // lowbit's writer: config.json + model.safetensors
      const std::string cfg = slurp(whole + "/config.json");
      std::ofstream(shards + "/model.safetensors", std::ios::binary) << slurp(whole + "/model.safetensors");
      for (const char* f : {"/config.json", "/model.safetensors"}) std::remove((whole + f).c_str());
      ::rmdir(whole.c_str());
      const SafetensorsFile all(shards + "/model.safetensors");
      std::vector<TensorToWrite> a, b;
      std::string index = "{\"metadata\": {}, \"weight_map\": {";
      bool first = true;
      for (const auto& [name, t] : all.tensors()) {
        const std::vector<float> v = all.floats(name);
        const bool second = name.find("layers.1.") != std::string::npos;
        (second ? b : a).push_back(tensor_f32(name, t.shape, v.data()));
        index += std::string(first ? "" : ", ") + "\"" + name + "\": \"model-0000" + (second ? "2" : "1") + "-of-00002.safetensors\"";
        first = false;
      }
      index += "}}";
      write_safetensors(shards + "/model-00001-of-00002.safetensors", a);
      write_safetensors(shards + "/model-00002-of-00002.safetensors", b);
      put("hf", "config_only", cfg);
      put("hf", "config_and_index", cfg + std::string(1, '\0') + index);
      std::string qwen = cfg;
      qwen.replace(qwen.find("LlamaForCausalLM"), 16, "Qwen2ForCausalLM");
      put("hf", "qwen2_missing_bias", qwen);
      put("json", "config.json", cfg);
      put("json", "index.json", index);
      put("json", "safetensors_header.json", slurp(shards + "/model-00002-of-00002.safetensors").substr(8, 400));
    }
    put("json", "calib.jsonl", "{\"src\": \"Once upon a time\", \"tgt\": [\"there was\", \" a dog\"]}\n\n{\"src\": [], \"tgt\": \"\\u00e9\\ud83d\\ude42\"}\n");
    put("json", "nested.json", "[[[[{\"a\": [1, -2.5e-3, true, false, null, \"x\\n\"]}]]]]");
    // tokenizers: 2 bytes of vocabulary size, then the file
    {
      const std::vector<std::string> v = tiny_vocab();
      const std::string bin = llama2c_tokenizer(v, {0, 0, 0, -1, -2, -3, -4, -5});
      put("tokenizer", "tiny_llama2c.bin", std::string("\x07\x00", 2) + bin);
      put("tokenizer", "tiny_vocab.vocab", std::string("\x07\x00", 2) + "<unk>\t0\n<s>\t0\n</s>\t0\n\xe2\x96\x81\t-1\na\t-2\nb\t-3\n\xe2\x96\x81" "a\t-4\nab\t-5\n");
      if (!shared.empty()) {
        const std::string tok = slurp(shared + "/models/stories260K/tok512.bin");
        if (!tok.empty()) put("tokenizer", "real_tok512.bin", std::string("\xff\x01", 2) + tok);  // 511 % 1024 + 1 = 512
        const std::string voc = slurp(shared + "/models/babyllama-tok105/tok105.vocab");
        if (!voc.empty()) put("tokenizer", "real_tok105.vocab", std::string("\x68\x00", 2) + voc);
      }
    }
    // AWQ scale and clip files of the awq_files target's block (dim 16, hidden 32, group 8, 2 blocks)
    {
      std::vector<AwqBlockResult> r(2);
      for (AwqBlockResult& b : r) {
        b.scales["attn_norm"] = Eigen::VectorXf::Constant(16, 1.5f);
        b.scales["v_proj"] = Eigen::VectorXf::Constant(16, 0.5f);
        b.scales["ffn_norm"] = Eigen::VectorXf::Constant(16, 2.0f);
        b.scales["up_proj"] = Eigen::VectorXf::Constant(32, 1.0f);
        for (Role role : awq_clip_roles()) {
          const int rows = role == Role::gate || role == Role::up ? 32 : 16, groups = role == Role::down ? 4 : 2;
          b.clip_max[role] = MatrixRM::Constant(rows, groups, 0.2f);
        }
        b.clip_min[Role::o] = MatrixRM::Constant(16, 2, -0.2f);
      }
      save_awq_scales(st, r);
      put("awq_files", "scales.safetensors", slurp(st));
      save_awq_clips(st, r);
      put("awq_files", "clips.safetensors", slurp(st));
    }
    std::remove(st.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
    return 1;
  }
  std::printf("fuzz_make_seeds: seed corpora in %s\n", out_dir.c_str());
  return 0;
}
