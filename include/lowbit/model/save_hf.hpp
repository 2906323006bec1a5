// lowbit/model/save_hf.hpp -- writes a Model as a Hugging Face folder (config.json + model.safetensors) that
// load_hf() reads back: fake-quantized models (--save-fake) and AWQ-transformed models (--save-trans).
//
// A model that uses interleaved RoPE (llama2.c, GGUF) has its q/k rows permuted to HF's rotate-half order,
// (2i, 2i+1) -> (i, i + hd/2) inside each head, so the saved folder computes the same function.  The folder's
// files are written atomically (temporary name, then rename); a failure leaves no partial model.
#pragma once

#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include "../io/safetensors.hpp"
#include "llama.hpp"

namespace lowbit {

namespace detail {
inline MatrixRM interleaved_to_rotate_half(const MatrixRM& W, int hd) {
  MatrixRM out(W.rows(), W.cols());
  const int half = hd / 2;
  for (Eigen::Index h = 0; h < W.rows() / hd; ++h)
    for (int i = 0; i < half; ++i)
      for (int j = 0; j < 2; ++j) out.row(h * hd + j * half + i) = W.row(h * hd + 2 * i + j);
  return out;
}
inline Eigen::VectorXf interleaved_to_rotate_half(const Eigen::VectorXf& b, int hd) {
  return interleaved_to_rotate_half(MatrixRM(b), hd).col(0);
}
}  // namespace detail

inline void save_hf(const Model& m, const std::string& dir, DType dtype = DType::f32,
                    const std::map<std::string, std::string>& metadata = {}) {
  if (dtype != DType::f32 && dtype != DType::f16) fail(dir, ": save_hf writes F32 or F16");
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 && ::mkdir(dir.c_str(), 0755) != 0) fail(dir, ": cannot create the directory");
  const LlamaConfig& c = m.cfg;
  const bool permute = c.rope == RopeStyle::interleaved;
  auto t = [&](const std::string& name, const MatrixRM& v, bool vec = false) {
    std::vector<std::int64_t> shape = vec ? std::vector<std::int64_t>{v.size()} : std::vector<std::int64_t>{v.rows(), v.cols()};
    return dtype == DType::f16 ? tensor_f16(name, shape, v.data()) : tensor_f32(name, shape, v.data());
  };
  std::vector<TensorToWrite> ts;
  ts.push_back(t("model.embed_tokens.weight", m.tok_embeddings));
  ts.push_back(t("model.norm.weight", MatrixRM(m.final_norm.transpose()), true));
  if (!c.tied_embeddings) ts.push_back(t("lm_head.weight", m.output));
  for (int i = 0; i < c.n_layers; ++i)
    with_block(m, i, [&](const Block& b) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      ts.push_back(t(p + "input_layernorm.weight", MatrixRM(b.attn_norm.transpose()), true));
      ts.push_back(t(p + "post_attention_layernorm.weight", MatrixRM(b.ffn_norm.transpose()), true));
      const struct { Role r; const char* name; bool rope; } lin[] = {
          {Role::q, "self_attn.q_proj", true}, {Role::k, "self_attn.k_proj", true}, {Role::v, "self_attn.v_proj", false},
          {Role::o, "self_attn.o_proj", false}, {Role::gate, "mlp.gate_proj", false}, {Role::up, "mlp.up_proj", false},
          {Role::down, "mlp.down_proj", false}};
      for (const auto& l : lin) {
        const Linear& L = b.linear(l.r);
        const bool perm = permute && l.rope;
        ts.push_back(t(p + l.name + ".weight", perm ? detail::interleaved_to_rotate_half(L.W, c.head_dim()) : L.W));
        if (L.b.size()) {
          const Eigen::VectorXf bias = perm ? detail::interleaved_to_rotate_half(L.b, c.head_dim()) : L.b;
          ts.push_back(t(p + l.name + ".bias", MatrixRM(bias.transpose()), true));
        }
      }
    });
  const char* arch = c.qkv_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  std::string cfg = std::string("{\n  \"architectures\": [\"") + arch + "\"],\n  \"model_type\": \"" +
                    (c.qkv_bias ? "qwen2" : "llama") + "\",\n  \"hidden_size\": " + std::to_string(c.dim) +
                    ",\n  \"intermediate_size\": " + std::to_string(c.hidden_dim) + ",\n  \"num_hidden_layers\": " +
                    std::to_string(c.n_layers) + ",\n  \"num_attention_heads\": " + std::to_string(c.n_heads) +
                    ",\n  \"num_key_value_heads\": " + std::to_string(c.n_kv_heads) + ",\n  \"vocab_size\": " +
                    std::to_string(c.vocab_size) + ",\n  \"max_position_embeddings\": " + std::to_string(c.max_seq_len) +
                    ",\n  \"rms_norm_eps\": " + std::to_string(c.norm_eps) + ",\n  \"rope_theta\": " +
                    std::to_string(c.rope_theta) + ",\n  \"tie_word_embeddings\": " + (c.tied_embeddings ? "true" : "false") +
                    ",\n  \"torch_dtype\": \"" + (dtype == DType::f16 ? "float16" : "float32") + "\"\n}\n";
  write_safetensors(dir + "/model.safetensors", ts, metadata);
  AtomicFile f(dir + "/config.json");
  f.write(cfg.data(), cfg.size());
  f.commit();
}

}  // namespace lowbit
