// lowbit/formats/gguf.hpp -- LLaMA-architecture GGUF files (F32 / F16 / BF16, Q4_0 / Q4_1 / Q8_0 tensors).
//
// Metadata read: general.architecture ("llama"), llama.embedding_length, .feed_forward_length, .block_count,
// .attention.head_count, .attention.head_count_kv, .context_length, .rope.freq_base,
// .attention.layer_norm_rms_epsilon; tokenizer.ggml.{model = "llama", tokens, scores, bos_token_id,
// eos_token_id}.  Tensors: token_embd, output_norm, output (absent = tied), blk.<i>.{attn_norm, attn_q,
// attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight.  llama.cpp's converter stores
// q/k rows in Meta's adjacent-pair order, so the model runs with RopeStyle::interleaved.  Blocks stay mapped.
#pragma once

#include <cmath>

#include <memory>
#include <string>

#include "../io/gguf.hpp"
#include "../pack/ggml.hpp"
#include "../model/llama.hpp"
#include "../data/tokenizer.hpp"

namespace lowbit {

struct GgufModel {
  Model model;
  Tokenizer tokenizer;
  bool has_tokenizer = false;
};

namespace detail {
inline void gguf_read(const GgufFile& f, const std::string& name, std::uint64_t rows, std::uint64_t cols, float* out) {
  const GgufTensor& t = f.tensor(name);
  const std::vector<std::uint64_t> want = rows == 1 ? std::vector<std::uint64_t>{cols} : std::vector<std::uint64_t>{cols, rows};
  if (t.ne != want) {
    std::string s;
    for (auto e : t.ne) s += (s.empty() ? "" : ", ") + std::to_string(e);
    fail(f.path(), ": tensor '", name, "' has ne [", s, "], expected [", cols, rows == 1 ? "" : ", " + std::to_string(rows), "]");
  }
  DType d;
  const bool block = is_block_type(GgmlType(t.ggml_type));
  if (!block && !ggml_type_to_dtype(t.ggml_type, d))
    fail(f.path(), ": tensor '", name, "' has ggml type ", ggml_type_name(t.ggml_type),
         " (lowbit reads F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K and Q6_K)");
  if (out) {
    if (block) {
      const std::size_t rb = ggml_row_bytes(GgmlType(t.ggml_type), std::int64_t(cols));
      for (std::uint64_t r = 0; r < rows; ++r)
        ggml_dequantize_row(GgmlType(t.ggml_type), t.data + r * rb, out + r * cols, std::int64_t(cols));
    } else {
      convert_to_float(d, t.data, std::size_t(rows * cols), out);
    }
    for (std::uint64_t i = 0; i < rows * cols; ++i)
      if (!std::isfinite(out[i])) fail(f.path(), ": tensor '", name, "' has a non-finite value at element ", i);
  }
}
inline int gguf_int(const GgufFile& f, const std::string& key) {
  const GgufValue& v = f.at(key);
  // range first (NaN fails it too): casting a double outside int's range is undefined behaviour
  if (v.type == GgufValue::string || v.type == GgufValue::array || !(v.num > 0 && v.num <= 1e9) || v.num != std::floor(v.num))
    fail(f.path(), ": metadata '", key, "' must be a positive integer");
  return int(v.num);
}
inline double gguf_float(const GgufFile& f, const std::string& key) {
  const GgufValue& v = f.at(key);
  if (v.type == GgufValue::string || v.type == GgufValue::array || !std::isfinite(v.num))
    fail(f.path(), ": metadata '", key, "' must be a finite number");
  return v.num;
}
}  // namespace detail

inline GgufModel load_gguf(const std::string& path) {
  auto f = std::make_shared<GgufFile>(path);
  const GgufValue& arch = f->at("general.architecture");
  if (arch.str != "llama") fail(path, ": unsupported architecture '", arch.str, "' (llama)");
  GgufModel out;
  LlamaConfig& c = out.model.cfg;
  c.dim = detail::gguf_int(*f, "llama.embedding_length");
  c.hidden_dim = detail::gguf_int(*f, "llama.feed_forward_length");
  c.n_layers = detail::gguf_int(*f, "llama.block_count");
  c.n_heads = detail::gguf_int(*f, "llama.attention.head_count");
  c.n_kv_heads = f->find("llama.attention.head_count_kv") ? detail::gguf_int(*f, "llama.attention.head_count_kv") : c.n_heads;
  c.max_seq_len = detail::gguf_int(*f, "llama.context_length");
  if (f->find("llama.rope.freq_base")) c.rope_theta = float(detail::gguf_float(*f, "llama.rope.freq_base"));
  if (f->find("llama.attention.layer_norm_rms_epsilon"))
    c.norm_eps = float(detail::gguf_float(*f, "llama.attention.layer_norm_rms_epsilon"));
  if (f->find("llama.rope.dimension_count") && detail::gguf_int(*f, "llama.rope.dimension_count") != c.dim / c.n_heads)
    fail(path, ": partial RoPE (rope.dimension_count ", f->at("llama.rope.dimension_count").num, ") is not supported");
  c.rope = RopeStyle::interleaved;
  const GgufTensor& emb = f->tensor("token_embd.weight");
  if (emb.ne.size() != 2) fail(path, ": token_embd.weight must be 2-D");
  if (emb.ne[1] == 0 || emb.ne[1] > (1u << 24)) fail(path, ": token_embd.weight has ", emb.ne[1], " rows (vocabulary)");
  c.vocab_size = int(emb.ne[1]);
  c.tied_embeddings = !f->has_tensor("output.weight");
  c.validate(path);
  Model& m = out.model;
  // every tensor's presence, shape and type from the header, before anything is allocated
  auto name = [](int i, const char* t) { return "blk." + std::to_string(i) + "." + t + ".weight"; };
  detail::gguf_read(*f, "token_embd.weight", std::uint64_t(c.vocab_size), std::uint64_t(c.dim), nullptr);
  detail::gguf_read(*f, "output_norm.weight", 1, std::uint64_t(c.dim), nullptr);
  if (!c.tied_embeddings) detail::gguf_read(*f, "output.weight", std::uint64_t(c.vocab_size), std::uint64_t(c.dim), nullptr);
  for (int i = 0; i < c.n_layers; ++i) {
    for (const NormDesc& n : kNorms) detail::gguf_read(*f, name(i, n.gguf), 1, std::uint64_t(c.dim), nullptr);
    for (const LinearDesc& l : kLinears) {
      const auto shape = linear_shape(c, l.role);
      detail::gguf_read(*f, name(i, l.gguf), std::uint64_t(shape[0]), std::uint64_t(shape[1]), nullptr);
    }
  }
  m.tok_embeddings.resize(c.vocab_size, c.dim);
  detail::gguf_read(*f, "token_embd.weight", std::uint64_t(c.vocab_size), std::uint64_t(c.dim), m.tok_embeddings.data());
  m.final_norm.resize(c.dim);
  detail::gguf_read(*f, "output_norm.weight", 1, std::uint64_t(c.dim), m.final_norm.data());
  if (!c.tied_embeddings) {
    m.output.resize(c.vocab_size, c.dim);
    detail::gguf_read(*f, "output.weight", std::uint64_t(c.vocab_size), std::uint64_t(c.dim), m.output.data());
  }
  m.block_loader = [f, c, name](int i) {
    Block b;
    for (const NormDesc& n : kNorms) {
      b.norm(n.role).resize(c.dim);
      detail::gguf_read(*f, name(i, n.gguf), 1, std::uint64_t(c.dim), b.norm(n.role).data());
    }
    for (const LinearDesc& l : kLinears) {
      const auto shape = linear_shape(c, l.role);
      MatrixRM& W = b.linear(l.role).W;
      W.resize(shape[0], shape[1]);
      detail::gguf_read(*f, name(i, l.gguf), std::uint64_t(shape[0]), std::uint64_t(shape[1]), W.data());
    }
    return b;
  };
  if (const GgufValue* toks = f->find("tokenizer.ggml.tokens")) {
    const GgufValue* model = f->find("tokenizer.ggml.model");
    if (!model || model->str != "llama")
      fail(path, ": tokenizer.ggml.model '", model ? model->str : std::string(), "' is not supported (llama)");
    if (toks->type != GgufValue::array || toks->elem != GgufValue::string || toks->strs.size() != std::size_t(c.vocab_size))
      fail(path, ": tokenizer.ggml.tokens must be an array of ", c.vocab_size, " strings (the model's vocabulary)");
    Tokenizer& t = out.tokenizer;
    for (std::string s : toks->strs) {
      for (std::size_t k; (k = s.find("\xe2\x96\x81")) != std::string::npos;) s.replace(k, 3, " ");  // U+2581 -> ' '
      t.vocab.push_back(std::move(s));
    }
    if (const GgufValue* sc = f->find("tokenizer.ggml.scores")) {
      if (sc->nums.size() != t.vocab.size()) fail(path, ": tokenizer.ggml.scores has ", sc->nums.size(), " entries for ", t.vocab.size(), " tokens");
      for (double v : sc->nums) t.scores.push_back(float(v));
    } else {
      t.scores.assign(t.vocab.size(), 0.0f);
    }
    // special ids: range-checked before the cast (a double outside int's range is undefined behaviour to cast)
    auto token_id = [&](const char* key, int& id) {
      const GgufValue* v = f->find(key);
      if (!v) return;
      if (v->type == GgufValue::string || v->type == GgufValue::array || !(v->num >= 0 && v->num < double(t.vocab.size())) ||
          v->num != std::floor(v->num))
        fail(path, ": metadata '", key, "' must be a token id in [0, ", t.vocab.size(), ")");
      id = int(v->num);
    };
    token_id("tokenizer.ggml.bos_token_id", t.bos);
    token_id("tokenizer.ggml.eos_token_id", t.eos);
    t.build_index(path);
    out.has_tokenizer = true;
  }
  return out;
}

}  // namespace lowbit
