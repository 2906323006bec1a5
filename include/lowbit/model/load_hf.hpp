// lowbit/model/load_hf.hpp -- Hugging Face checkpoint folders (LLaMA 1/2/3, Mistral, Qwen2).
//
// A folder holds config.json and either model.safetensors or model.safetensors.index.json
// ({"weight_map": {tensor name: shard file}}).  Tensors may be F32, F16 or BF16 and use HF names:
//   model.embed_tokens.weight [V, D]         model.norm.weight [D]        lm_head.weight [V, D] (untied)
//   model.layers.<i>.input_layernorm.weight, .post_attention_layernorm.weight [D]
//   model.layers.<i>.self_attn.{q,k,v,o}_proj.weight (+ q/k/v .bias for Qwen2), .mlp.{gate,up,down}_proj.weight
// config.json keys read: architectures, hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, vocab_size, max_position_embeddings, rms_norm_eps, rope_theta,
// tie_word_embeddings, head_dim (must equal hidden/heads), rope_scaling (must be null).
// HF stores q/k rows in the rotate-half order, so the model runs with RopeStyle::rotate_half.
//
// The shards stay memory-mapped; embeddings, final norm and classifier are converted at load, blocks one at a
// time by Model::block_loader (see with_block()).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "llama.hpp"
#include "perplexity.hpp"

namespace lowbit {

namespace detail {

struct HfShards {
  std::string dir;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::size_t> where;  // tensor -> shard

  const SafetensorsFile& file_of(const std::string& name) const {
    auto it = where.find(name);
    if (it == where.end()) fail(dir, ": missing tensor '", name, "'");
    return *files[it->second];
  }

  // Checks shape ([rows, cols], or [rows] when cols == 1) and dtype from the header alone.
  const TensorInfo& check(const std::string& name, std::int64_t rows, std::int64_t cols) const {
    const SafetensorsFile& f = file_of(name);
    const TensorInfo& t = f.at(name);
    const bool ok = (cols == 1 && t.shape.size() == 1 && t.shape[0] == rows) ||
                    (t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols);
    if (!ok) {
      std::string s;
      for (auto d : t.shape) s += (s.empty() ? "" : "x") + std::to_string(d);
      fail(f.path(), ": tensor '", name, "' has shape [", s, "], expected [", rows, cols == 1 ? "" : "x",
           cols == 1 ? std::string() : std::to_string(cols), "]");
    }
    if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16)
      fail(f.path(), ": tensor '", name, "' is ", to_string(t.dtype), " (F32, F16 or BF16 expected)");
    return t;
  }

  void read(const std::string& name, std::int64_t rows, std::int64_t cols, float* out) const {
    const TensorInfo& t = check(name, rows, cols);
    convert_to_float(t.dtype, t.data, std::size_t(rows * cols), out);
    for (std::int64_t i = 0; i < rows * cols; ++i)
      if (!std::isfinite(out[i])) fail(file_of(name).path(), ": tensor '", name, "' has a non-finite value at element ", i);
  }
  bool has(const std::string& name) const { return where.count(name) != 0; }
};

inline const json::Value& require_key(const json::Value& cfg, const std::string& key, const std::string& path) {
  const json::Value* v = cfg.find(key);
  if (!v) fail(path, ": missing key \"", key, "\"");
  return *v;
}

inline int int_key(const json::Value& cfg, const std::string& key, const std::string& path, int def = -1) {
  const json::Value* v = cfg.find(key);
  if (!v || v->kind == json::Value::Kind::null) {
    if (def >= 0) return def;
    fail(path, ": missing key \"", key, "\"");
  }
  if (!v->is_number() || v->num != double(int(v->num)) || v->num <= 0) fail(path, ": \"", key, "\" must be a positive integer");
  return int(v->num);
}

}  // namespace detail

inline Model load_hf(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  const json::Value cfg = json::parse(read_text_file(cfg_path), cfg_path);
  if (!cfg.is_object()) fail(cfg_path, ": not a JSON object");
  std::string arch;
  if (const json::Value* a = cfg.find("architectures"); a && a->is_array() && !a->arr.empty() && a->arr[0].is_string())
    arch = a->arr[0].str;
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM" && arch != "Qwen2ForCausalLM")
    fail(cfg_path, ": unsupported architecture '", arch, "' (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  Model m;
  LlamaConfig& c = m.cfg;
  c.dim = detail::int_key(cfg, "hidden_size", cfg_path);
  c.hidden_dim = detail::int_key(cfg, "intermediate_size", cfg_path);
  c.n_layers = detail::int_key(cfg, "num_hidden_layers", cfg_path);
  c.n_heads = detail::int_key(cfg, "num_attention_heads", cfg_path);
  c.n_kv_heads = detail::int_key(cfg, "num_key_value_heads", cfg_path, c.n_heads);
  c.vocab_size = detail::int_key(cfg, "vocab_size", cfg_path);
  c.max_seq_len = detail::int_key(cfg, "max_position_embeddings", cfg_path, 2048);
  if (const json::Value* v = cfg.find("rms_norm_eps"); v && v->is_number()) c.norm_eps = float(v->num);
  if (const json::Value* v = cfg.find("rope_theta"); v && v->is_number()) c.rope_theta = float(v->num);
  const json::Value* tie = cfg.find("tie_word_embeddings");
  c.tied_embeddings = tie && tie->kind == json::Value::Kind::boolean ? tie->b : false;
  if (const json::Value* v = cfg.find("rope_scaling"); v && v->kind != json::Value::Kind::null)
    fail(cfg_path, ": \"rope_scaling\" is not supported yet (only null)");
  c.rope = RopeStyle::rotate_half;
  c.qkv_bias = arch == "Qwen2ForCausalLM";
  c.validate(cfg_path);
  if (const json::Value* v = cfg.find("head_dim"); v && v->is_number() && int(v->num) != c.head_dim())
    fail(cfg_path, ": head_dim ", v->num, " differs from hidden_size / num_attention_heads = ", c.head_dim());

  auto shards = std::make_shared<detail::HfShards>();
  shards->dir = dir;
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  if (std::ifstream(index).good()) {
    const json::Value idx = json::parse(read_text_file(index), index);
    const json::Value* wm = idx.find("weight_map");
    if (!wm || !wm->is_object()) fail(index, ": missing \"weight_map\" object");
    std::map<std::string, std::size_t> file_ids;
    for (const auto& [name, file] : wm->obj) {
      if (!file.is_string() || file.str.find('/') != std::string::npos)
        fail(index, ": weight_map entry for '", name, "' must be a file name in the folder");
      auto [it, added] = file_ids.emplace(file.str, shards->files.size());
      if (added) shards->files.push_back(std::make_unique<SafetensorsFile>(dir + "/" + file.str));
      if (!shards->files[it->second]->contains(name)) fail(dir + "/" + file.str, ": missing tensor '", name, "' listed in ", index);
      shards->where[name] = it->second;
    }
  } else if (std::ifstream(single).good()) {
    shards->files.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& [name, t] : shards->files[0]->tensors()) shards->where[name] = 0;
  } else {
    fail(dir, ": neither model.safetensors nor model.safetensors.index.json found");
  }

  m.tok_embeddings.resize(c.vocab_size, c.dim);
  shards->read("model.embed_tokens.weight", c.vocab_size, c.dim, m.tok_embeddings.data());
  m.final_norm.resize(c.dim);
  shards->read("model.norm.weight", c.dim, 1, m.final_norm.data());
  if (!c.tied_embeddings) {
    if (!shards->has("lm_head.weight")) fail(dir, ": missing tensor 'lm_head.weight' (tie_word_embeddings is false)");
    m.output.resize(c.vocab_size, c.dim);
    shards->read("lm_head.weight", c.vocab_size, c.dim, m.output.data());
  }
  // Every block tensor's presence, shape and dtype are checked now (headers only), not halfway through a run.
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const struct { const char* name; int rows, cols; bool bias; } specs[] = {
        {"input_layernorm", c.dim, 1, false},          {"post_attention_layernorm", c.dim, 1, false},
        {"self_attn.q_proj", c.dim, c.dim, c.qkv_bias}, {"self_attn.k_proj", c.kv_dim(), c.dim, c.qkv_bias},
        {"self_attn.v_proj", c.kv_dim(), c.dim, c.qkv_bias}, {"self_attn.o_proj", c.dim, c.dim, false},
        {"mlp.gate_proj", c.hidden_dim, c.dim, false},  {"mlp.up_proj", c.hidden_dim, c.dim, false},
        {"mlp.down_proj", c.dim, c.hidden_dim, false}};
    for (const auto& t : specs) {
      shards->check(p + t.name + ".weight", t.rows, t.cols);
      if (t.bias) shards->check(p + t.name + ".bias", t.rows, 1);
    }
  }
  m.block_loader = [shards, c](int i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Block b;
    auto lin = [&](Linear& l, const std::string& name, int rows, int cols, bool bias) {
      l.W.resize(rows, cols);
      shards->read(p + name + ".weight", rows, cols, l.W.data());
      if (bias) {
        l.b.resize(rows);
        shards->read(p + name + ".bias", rows, 1, l.b.data());
      }
    };
    b.attn_norm.resize(c.dim), b.ffn_norm.resize(c.dim);
    shards->read(p + "input_layernorm.weight", c.dim, 1, b.attn_norm.data());
    shards->read(p + "post_attention_layernorm.weight", c.dim, 1, b.ffn_norm.data());
    lin(b.q, "self_attn.q_proj", c.dim, c.dim, c.qkv_bias);
    lin(b.k, "self_attn.k_proj", c.kv_dim(), c.dim, c.qkv_bias);
    lin(b.v, "self_attn.v_proj", c.kv_dim(), c.dim, c.qkv_bias);
    lin(b.o, "self_attn.o_proj", c.dim, c.dim, false);
    lin(b.gate, "mlp.gate_proj", c.hidden_dim, c.dim, false);
    lin(b.up, "mlp.up_proj", c.hidden_dim, c.dim, false);
    lin(b.down, "mlp.down_proj", c.dim, c.hidden_dim, false);
    return b;
  };
  return m;
}

}  // namespace lowbit
