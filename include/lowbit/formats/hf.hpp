// lowbit/formats/hf.hpp -- Hugging Face checkpoint folders (LLaMA 1/2/3, Mistral, Qwen2).
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

#include <cmath>
#include <cstdio>

#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "../model/llama.hpp"
#include "../quant/quantized.hpp"
#include "../io/text_file.hpp"

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
    // converted and checked in parallel chunks (the first bad element is reported, whatever the thread count)
    constexpr std::int64_t kChunk = 1 << 16;
    parallel_for_chunks(rows * cols, kChunk, [&](std::int64_t c0, std::int64_t c1) {
      convert_to_float(t.dtype, t.data + std::size_t(c0) * dtype_size(t.dtype), std::size_t(c1 - c0), out + c0);
      for (std::int64_t i = c0; i < c1; ++i)
        if (!std::isfinite(out[i])) fail(file_of(name).path(), ": tensor '", name, "' has a non-finite value at element ", i);
    });
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
  // range first: casting a double outside int's range is undefined behaviour
  if (!v->is_number() || !(v->num >= 1.0 && v->num <= 2147483647.0) || v->num != std::floor(v->num))
    fail(path, ": \"", key, "\" must be a positive integer");
  return int(v->num);
}

// An optional number: absent or null keeps `def`; any other type is an error (never silently the default).
inline double num_key(const json::Value& cfg, const char* key, const std::string& path, double def) {
  const json::Value* v = cfg.find(key);
  if (!v || v->kind == json::Value::Kind::null) return def;
  if (!v->is_number() || !std::isfinite(v->num)) fail(path, ": \"", key, "\" must be a finite number");
  return v->num;
}

inline bool bool_key(const json::Value& cfg, const char* key, const std::string& path, bool def) {
  const json::Value* v = cfg.find(key);
  if (!v || v->kind == json::Value::Kind::null) return def;
  if (v->kind != json::Value::Kind::boolean) fail(path, ": \"", key, "\" must be true or false");
  return v->b;
}

}  // namespace detail

// Whether the embedding table and the classifier are converted to fp32 at load (resident; needed to evaluate)
// or read from the mapped file when used (deferred: quantization, which reads a few embedding rows).
enum class Tables { resident, deferred };

inline Model load_hf(const std::string& dir, Tables tables = Tables::resident) {
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
  c.norm_eps = float(detail::num_key(cfg, "rms_norm_eps", cfg_path, 1e-6));
  c.rope_theta = float(detail::num_key(cfg, "rope_theta", cfg_path, 10000.0));
  c.tied_embeddings = detail::bool_key(cfg, "tie_word_embeddings", cfg_path, false);
  if (const json::Value* v = cfg.find("rope_scaling"); v && v->kind != json::Value::Kind::null)
    fail(cfg_path, ": \"rope_scaling\" is not supported yet (only null)");
  c.rope = RopeStyle::rotate_half;
  c.qkv_bias = arch == "Qwen2ForCausalLM";
  c.validate(cfg_path);
  if (const double hd = detail::num_key(cfg, "head_dim", cfg_path, double(c.head_dim())); hd != double(c.head_dim()))
    fail(cfg_path, ": head_dim ", hd, " differs from hidden_size / num_attention_heads = ", c.head_dim());

  auto shards = std::make_shared<detail::HfShards>();
  shards->dir = dir;
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  struct stat st;
  auto exists = [&](const std::string& p) { return ::stat(p.c_str(), &st) == 0; };  // read_text_file / MappedFile refuse non-files
  if (exists(index)) {
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
  } else if (exists(single)) {
    shards->files.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& [name, t] : shards->files[0]->tensors()) shards->where[name] = 0;
  } else {
    fail(dir, ": neither model.safetensors nor model.safetensors.index.json found");
  }

  // Every tensor's presence, shape and dtype are checked from the headers before anything is allocated or
  // converted (a corrupt config.json must not ask for gigabytes, nor fail halfway through a run).
  auto name = [](int i, const char* t, const char* kind) { return "model.layers." + std::to_string(i) + "." + t + kind; };
  shards->check("model.embed_tokens.weight", c.vocab_size, c.dim);
  shards->check("model.norm.weight", c.dim, 1);
  if (!c.tied_embeddings) {
    if (!shards->has("lm_head.weight")) fail(dir, ": missing tensor 'lm_head.weight' (tie_word_embeddings is false)");
    shards->check("lm_head.weight", c.vocab_size, c.dim);
  }
  for (int i = 0; i < c.n_layers; ++i) {
    for (const NormDesc& n : kNorms) shards->check(name(i, n.hf, ".weight"), c.dim, 1);
    for (const LinearDesc& l : kLinears) {
      const auto shape = linear_shape(c, l.role);
      shards->check(name(i, l.hf, ".weight"), shape[0], shape[1]);
      if (has_bias(c, l.role)) shards->check(name(i, l.hf, ".bias"), shape[0], 1);
    }
  }
  if (tables == Tables::resident) {
    m.tok_embeddings.resize(c.vocab_size, c.dim);
    shards->read("model.embed_tokens.weight", c.vocab_size, c.dim, m.tok_embeddings.data());
  } else {
    const TensorInfo& t = shards->check("model.embed_tokens.weight", c.vocab_size, c.dim);
    const std::string path = shards->file_of("model.embed_tokens.weight").path();
    m.embedding_row = [shards, t, path, c](int token, float* out) {
      convert_to_float(t.dtype, t.data + std::size_t(token) * std::size_t(c.dim) * dtype_size(t.dtype), std::size_t(c.dim), out);
      for (int k = 0; k < c.dim; ++k)
        if (!std::isfinite(out[k])) fail(path, ": tensor 'model.embed_tokens.weight' has a non-finite value in row ", token);
    };
  }
  m.final_norm.resize(c.dim);
  shards->read("model.norm.weight", c.dim, 1, m.final_norm.data());
  if (!c.tied_embeddings) {
    if (tables == Tables::resident) {
      m.output.resize(c.vocab_size, c.dim);
      shards->read("lm_head.weight", c.vocab_size, c.dim, m.output.data());
    } else {
      m.load_output = [shards, c] {
        MatrixRM o(c.vocab_size, c.dim);
        shards->read("lm_head.weight", c.vocab_size, c.dim, o.data());
        return o;
      };
    }
  }
  m.block_loader = [shards, c, name](int i) {
    Block b;
    for (const NormDesc& n : kNorms) {
      b.norm(n.role).resize(c.dim);
      shards->read(name(i, n.hf, ".weight"), c.dim, 1, b.norm(n.role).data());
    }
    for (const LinearDesc& l : kLinears) {
      const auto shape = linear_shape(c, l.role);
      Linear& lin = b.linear(l.role);
      lin.W.resize(shape[0], shape[1]);
      shards->read(name(i, l.hf, ".weight"), shape[0], shape[1], lin.W.data());
      if (has_bias(c, l.role)) {
        lin.b.resize(shape[0]);
        shards->read(name(i, l.hf, ".bias"), shape[0], 1, lin.b.data());
      }
    }
    return b;
  };
  return m;
}

namespace detail {
// llama2.c / GGUF rows of q and k in RoPE's interleaved order -> Hugging Face's rotate-half order: inside each
// head, row 2i+j goes to j*hd/2 + i.
// rotate_half_source(R, hd)[r] is the interleaved row that becomes row r.
inline std::vector<Eigen::Index> rotate_half_source(Eigen::Index rows, int hd) {
  std::vector<Eigen::Index> src(static_cast<std::size_t>(rows));
  const int half = hd / 2;
  for (Eigen::Index h = 0; h < rows / hd; ++h)
    for (int i = 0; i < half; ++i)
      for (int j = 0; j < 2; ++j) src[std::size_t(h * hd + j * half + i)] = h * hd + 2 * i + j;
  return src;
}
inline MatrixRM interleaved_to_rotate_half(const MatrixRM& W, int hd) {
  MatrixRM out(W.rows(), W.cols());
  const std::vector<Eigen::Index> src = rotate_half_source(W.rows(), hd);
  for (Eigen::Index r = 0; r < W.rows(); ++r) out.row(r) = W.row(src[std::size_t(r)]);
  return out;
}

// A float with 9 significant digits, which reads back to the same float (std::to_string keeps 6 decimals: 1e-7 -> 0).
inline std::string exact_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(v));
  return buf;
}

// `extra`: further members, each line "  \"key\": value" joined by ",\n" (a packed checkpoint's quantization_config).
inline std::string hf_config_json(const LlamaConfig& c, DType dtype, const std::string& extra = {}) {
  const char* arch = c.qkv_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  return std::string("{\n  \"architectures\": [\"") + arch + "\"],\n  \"model_type\": \"" +
         (c.qkv_bias ? "qwen2" : "llama") + "\",\n  \"hidden_size\": " + std::to_string(c.dim) +
         ",\n  \"intermediate_size\": " + std::to_string(c.hidden_dim) + ",\n  \"num_hidden_layers\": " +
         std::to_string(c.n_layers) + ",\n  \"num_attention_heads\": " + std::to_string(c.n_heads) +
         ",\n  \"num_key_value_heads\": " + std::to_string(c.n_kv_heads) + ",\n  \"vocab_size\": " +
         std::to_string(c.vocab_size) + ",\n  \"max_position_embeddings\": " + std::to_string(c.max_seq_len) +
         ",\n  \"rms_norm_eps\": " + exact_float(c.norm_eps) + ",\n  \"rope_theta\": " +
         exact_float(c.rope_theta) + ",\n  \"tie_word_embeddings\": " + (c.tied_embeddings ? "true" : "false") +
         ",\n  \"torch_dtype\": \"" + (dtype == DType::f16 ? "float16" : "float32") + "\"" +
         (extra.empty() ? std::string() : ",\n" + extra) + "\n}\n";
}
}  // namespace detail

// How a Hugging Face folder stores each linear.  Without one, HfWriter writes the float weight; the packed
// checkpoints (formats/hf_packed.hpp: AutoAWQ, GPTQ) store codes, zeros and scales in their layouts.
class HfLinearStore {
 public:
  virtual ~HfLinearStore() = default;
  // The tensors of linear `prefix` ("model.layers.<i>.self_attn.q_proj"), of shape [out, in], in file order.
  virtual void declare(const std::string& prefix, const LinearDesc& l, std::int64_t out, std::int64_t in,
                       std::vector<SafetensorsWriter::Entry>& entries) = 0;
  // Writes them: `W` the method's (fake-quantized) weights and `q` their quantized form (null: none), both with
  // the folder's row order.
  virtual void write(SafetensorsWriter& w, const std::string& prefix, const LinearDesc& l, const MatrixRM& W,
                     const QuantizedLinear* q) = 0;
  // Further config.json members (detail::hf_config_json's `extra`) and files, once every block is written.
  virtual std::string config_members() const { return {}; }
  virtual void finish(const std::string& /*staging_dir*/) {}
};

// Writes a model as a Hugging Face folder (config.json + model.safetensors) that load_hf() reads back, one
// block at a time: the constructor writes the header and the embeddings, block(i, b) appends block i (in
// order), commit() finishes.  A model with interleaved RoPE (llama2.c, GGUF) has its q/k rows permuted to HF's
// rotate-half order so the folder computes the same function.  Files are written atomically (temporary name,
// then rename; the folder as a whole through AtomicDir): a failure leaves no partial model, and an existing folder
// is replaced in one step, never left with the new weights beside the old config.
class HfWriter {
 public:
  HfWriter(const Model& m, const std::string& dir, DType dtype = DType::f32,
           const std::map<std::string, std::string>& metadata = {}, std::unique_ptr<HfLinearStore> store = nullptr)
      : cfg_(m.cfg), dir_(dir), dtype_(dtype), store_(std::move(store)) {
    if (dtype != DType::f32 && dtype != DType::f16) fail(dir, ": the Hugging Face writer writes F32 or F16");
    const LlamaConfig& c = cfg_;
    std::vector<SafetensorsWriter::Entry> e;
    e.push_back({"model.embed_tokens.weight", dtype, {c.vocab_size, c.dim}});
    e.push_back({"model.norm.weight", dtype, {c.dim}});
    if (!c.tied_embeddings) e.push_back({"lm_head.weight", dtype, {c.vocab_size, c.dim}});
    for (int i = 0; i < c.n_layers; ++i) {
      for (const NormDesc& n : kNorms) e.push_back({name(i, n.hf, ".weight"), dtype, {c.dim}});
      for (const LinearDesc& l : kLinears) {
        const auto shape = linear_shape(c, l.role);
        if (store_) store_->declare(name(i, l.hf, ""), l, shape[0], shape[1], e);
        else e.push_back({name(i, l.hf, ".weight"), dtype, {shape[0], shape[1]}});
        if (has_bias(c, l.role)) e.push_back({name(i, l.hf, ".bias"), dtype, {shape[0]}});
      }
    }
    w_ = std::make_unique<SafetensorsWriter>(dir_.staging() + "/model.safetensors", std::move(e), metadata);
    put("model.embed_tokens.weight", m.embeddings_matrix());  // converted one at a time when deferred
    put("model.norm.weight", m.final_norm);
    if (!c.tied_embeddings) put("lm_head.weight", m.output_matrix());
  }

  // Block i (in order); `quantized` its linears' codes by role, for a store that packs them.
  void block(int i, const Block& b, const std::array<QuantizedLinear, 7>* quantized = nullptr) {
    if (i != next_) fail(dir_.path(), ": block ", i, " written out of order (expected ", next_, ")");
    const bool permute = cfg_.rope == RopeStyle::interleaved;
    // what a Hugging Face LLaMA / Qwen2 cannot hold must not be dropped silently (a shifted block's biases)
    for (std::size_t s = 0; s < b.shift.size(); ++s)
      if (b.shift[s].size())
        fail(dir_.path(), ": block ", i, " shifts the input of ", input_groups()[s].key,
             " (the shift transform), which a Hugging Face ", cfg_.qkv_bias ? "Qwen2" : "LLaMA", " model cannot hold");
    for (const LinearDesc& l : kLinears)
      if (b.linear(l.role).b.size() && !has_bias(cfg_, l.role))
        fail(dir_.path(), ": block ", i, " ", l.name, " has a bias, which a Hugging Face ", cfg_.qkv_bias ? "Qwen2" : "LLaMA",
             " model cannot hold");
    for (const NormDesc& n : kNorms) put(name(i, n.hf, ".weight"), b.norm(n.role));
    for (const LinearDesc& l : kLinears) {
      const Linear& L = b.linear(l.role);
      const bool perm = permute && l.rope;
      if (store_) {
        const QuantizedLinear* q = quantized && (*quantized)[std::size_t(l.role)].codes.size() ? &(*quantized)[std::size_t(l.role)] : nullptr;
        if (perm) {
          const std::vector<Eigen::Index> src = detail::rotate_half_source(L.W.rows(), cfg_.head_dim());
          const QuantizedLinear qp = q ? select_rows(*q, src) : QuantizedLinear{};
          store_->write(*w_, name(i, l.hf, ""), l, detail::interleaved_to_rotate_half(L.W, cfg_.head_dim()), q ? &qp : nullptr);
        } else {
          store_->write(*w_, name(i, l.hf, ""), l, L.W, q);
        }
      } else if (perm) {
        put(name(i, l.hf, ".weight"), detail::interleaved_to_rotate_half(L.W, cfg_.head_dim()));
      } else {
        put(name(i, l.hf, ".weight"), L.W);
      }
      if (!has_bias(cfg_, l.role)) continue;
      if (perm) put(name(i, l.hf, ".bias"), detail::interleaved_to_rotate_half(MatrixRM(L.b), cfg_.head_dim()));
      else put(name(i, l.hf, ".bias"), L.b);
    }
    ++next_;
  }

  // A further file of the folder (a tokenizer beside the weights), written with it and put in place with it.
  void add_file(const std::string& name, const std::string& bytes) {
    if (name.empty() || name.find('/') != std::string::npos || name == "config.json" || name == "model.safetensors")
      fail(dir_.path(), ": '", name, "' cannot be added to the model folder");
    write_file_atomically(dir_.staging() + "/" + name, bytes);
  }

  // Finishes both files in the staging folder, then puts the folder in place in one step (AtomicDir).
  void commit() {
    if (next_ != cfg_.n_layers) fail(dir_.path(), ": ", cfg_.n_layers - next_, " blocks were never written");
    w_->commit();
    const std::string cfg = detail::hf_config_json(cfg_, dtype_, store_ ? store_->config_members() : std::string());
    write_file_atomically(dir_.staging() + "/config.json", cfg);
    if (store_) store_->finish(dir_.staging());
    dir_.commit();
  }

 private:
  static std::string name(int i, const char* t, const char* kind) {
    return "model.layers." + std::to_string(i) + "." + t + kind;
  }
  void put(const std::string& n, const MatrixRM& m) { w_->write_floats(n, m.data(), std::size_t(m.size())); }
  void put(const std::string& n, const Eigen::VectorXf& v) { w_->write_floats(n, v.data(), std::size_t(v.size())); }

  LlamaConfig cfg_;
  AtomicDir dir_;  // the folder is staged beside its place and renamed into it by commit()
  DType dtype_;
  std::unique_ptr<HfLinearStore> store_;
  std::unique_ptr<SafetensorsWriter> w_;
  int next_ = 0;
};

inline void save_hf(const Model& m, const std::string& dir, DType dtype = DType::f32,
                    const std::map<std::string, std::string>& metadata = {}) {
  HfWriter w(m, dir, dtype, metadata);
  for (int i = 0; i < m.cfg.n_layers; ++i) with_block(m, i, [&](const Block& b) { w.block(i, b); });
  w.commit();
}

}  // namespace lowbit
