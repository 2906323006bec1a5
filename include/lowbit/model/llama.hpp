// lowbit/model/llama.hpp -- a LLaMA-family decoder as a sequence of blocks, and its forward pass.
//
// A Block exposes its linears by role (q, k, v, o, gate, up, down) and its two RMSNorm weights, so the
// algorithms can name "the linears that read the same input" and "the op before them":
//     attn_norm -> q, k, v;   v -> o;   ffn_norm -> gate, up;   up -> down      (see scale_groups())
// A block runs forward by itself on a batch of sequences stored as one [n*L, dim] row-major matrix
// (sequence s occupies rows [s*L, (s+1)*L)); this is what block-wise calibration calls again and again.
//
// Math (per token, llama2.c / Hugging Face LLaMA):
//   h   = x + o( attention( rope(q(rms(x))), rope(k(rms(x))), v(rms(x)) ) )       causal, GQA
//   out = h + down( silu(gate(rms(h))) * up(rms(h)) )
//   rms(x) = w * x / sqrt(mean(x^2) + eps)
// RoPE rotates pairs of a head's channels by pos * theta^(-2i/head_dim): adjacent pairs (2i, 2i+1) in the
// llama2.c/Meta convention, (i, i + head_dim/2) in Hugging Face's rotate-half convention.
#pragma once

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../quant/quantizer.hpp"

namespace lowbit {

enum class RopeStyle { interleaved, rotate_half };

struct LlamaConfig {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, max_seq_len = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope = RopeStyle::interleaved;
  bool tied_embeddings = true;
  bool qkv_bias = false;  // Qwen2

  int head_dim() const { return dim / n_heads; }
  int kv_dim() const { return head_dim() * n_kv_heads; }

  void validate(const std::string& where) const {
    if (dim <= 0 || hidden_dim <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 || vocab_size <= 0)
      fail(where, ": invalid config (dim ", dim, ", hidden ", hidden_dim, ", layers ", n_layers, ", heads ", n_heads,
           ", kv heads ", n_kv_heads, ", vocab ", vocab_size, ")");
    if (dim % n_heads != 0) fail(where, ": dim ", dim, " is not a multiple of n_heads ", n_heads);
    if (n_heads % n_kv_heads != 0) fail(where, ": n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
    if (head_dim() % 2 != 0) fail(where, ": head size ", head_dim(), " is odd (RoPE rotates pairs)");
    if (dim > (1 << 20) || hidden_dim > (1 << 22) || n_layers > 4096 || vocab_size > (1 << 24))
      fail(where, ": implausible config sizes (corrupt header?)");
  }
};

enum class Role { q, k, v, o, gate, up, down };
constexpr std::array<Role, 7> all_roles = {Role::q, Role::k, Role::v, Role::o, Role::gate, Role::up, Role::down};

inline const char* to_string(Role r) {
  switch (r) {
    case Role::q: return "q_proj";
    case Role::k: return "k_proj";
    case Role::v: return "v_proj";
    case Role::o: return "o_proj";
    case Role::gate: return "gate_proj";
    case Role::up: return "up_proj";
    case Role::down: return "down_proj";
  }
  return "?";
}

struct Linear {
  MatrixRM W;           // [out, in]
  Eigen::VectorXf b;    // [out] or empty
};

struct Block {
  Eigen::VectorXf attn_norm, ffn_norm;  // [dim]
  Linear q, k, v, o, gate, up, down;

  Linear& linear(Role r) {
    switch (r) {
      case Role::q: return q;
      case Role::k: return k;
      case Role::v: return v;
      case Role::o: return o;
      case Role::gate: return gate;
      case Role::up: return up;
      case Role::down: return down;
    }
    return q;
  }
  const Linear& linear(Role r) const { return const_cast<Block*>(this)->linear(r); }
};

// The linear groups that share one input, with the op in front of them (AWQ / SmoothQuant / LET pairs).
struct ScaleGroup {
  const char* prev_op;  // "attn_norm", "v_proj", "ffn_norm", "up_proj"
  std::vector<Role> linears;
};
inline std::vector<ScaleGroup> scale_groups() {
  return {{"attn_norm", {Role::q, Role::k, Role::v}}, {"v_proj", {Role::o}},
          {"ffn_norm", {Role::gate, Role::up}}, {"up_proj", {Role::down}}};
}

// A model keeps its blocks either resident (`blocks`, filled by the small-model loaders) or mapped: then
// `blocks` is empty and `block_loader(i)` converts block i from the memory-mapped file to float on demand,
// so working on a model costs the file's pages plus one block in fp32 (see with_block()).
struct Model {
  LlamaConfig cfg;
  MatrixRM tok_embeddings;  // [vocab, dim]
  std::vector<Block> blocks;
  std::function<Block(int)> block_loader;
  Eigen::VectorXf final_norm;  // [dim]
  MatrixRM output;             // [vocab, dim]; empty when tied to tok_embeddings

  const MatrixRM& classifier() const { return cfg.tied_embeddings ? tok_embeddings : output; }
  bool resident() const { return !blocks.empty(); }
  // Loads every mapped block into `blocks` (for algorithms that edit weights in place).
  void make_resident() {
    if (resident()) return;
    for (int i = 0; i < cfg.n_layers; ++i) blocks.push_back(block_loader(i));
  }
};

// Calls fn(const Block&) with block i, converting it from the mapped file when the model is not resident.
template <class Fn>
void with_block(const Model& m, int i, Fn&& fn) {
  if (m.resident()) return fn(m.blocks[std::size_t(i)]);
  if (!m.block_loader) fail("model has neither resident blocks nor a block loader");
  const Block b = m.block_loader(i);
  fn(b);
}

// Hooks a forward pass calls; all optional.
struct BlockHooks {
  // Sees the input of every linear ([n*L, in]) before it is applied (activation statistics, Hessians).
  std::function<void(Role, const MatrixRM&)> linear_input;
  // May rewrite the input of every linear in place (activation fake-quantization for W-A quantization).
  std::function<void(Role, MatrixRM&)> transform_input;
};

namespace detail {

inline void rmsnorm(const MatrixRM& x, const Eigen::VectorXf& w, float eps, MatrixRM& out) {
  out.resize(x.rows(), x.cols());
  const Eigen::Index n = x.cols();
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const float ss = x.row(r).squaredNorm() / float(n) + eps;
    const float inv = 1.0f / std::sqrt(ss);
    out.row(r) = (x.row(r).array() * inv * w.transpose().array()).matrix();
  }
}

inline void apply_linear(Role role, const Linear& lin, MatrixRM& in, MatrixRM& out, const BlockHooks* hooks) {
  if (hooks && hooks->transform_input) hooks->transform_input(role, in);
  if (hooks && hooks->linear_input) hooks->linear_input(role, in);
  out.noalias() = in * lin.W.transpose();  // [T, in] x [in, out]
  if (lin.b.size()) out.rowwise() += lin.b.transpose();
}

// Rotates the heads of x ([T, n_heads*hd]) in place; token t of each sequence sits at position t % L.
inline void rope(MatrixRM& x, int n_heads, int hd, int L, const LlamaConfig& cfg) {
  const int half = hd / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) inv_freq[i] = 1.0f / std::pow(cfg.rope_theta, float(2 * i) / float(hd));
  parallel_for(x.rows(), [&](std::int64_t t) {
    const float pos = float(t % L);
    float* row = x.row(t).data();
    for (int i = 0; i < half; ++i) {
      const float a = pos * inv_freq[i], c = std::cos(a), s = std::sin(a);
      for (int h = 0; h < n_heads; ++h) {
        float* p = row + h * hd;
        const int i0 = cfg.rope == RopeStyle::interleaved ? 2 * i : i;
        const int i1 = cfg.rope == RopeStyle::interleaved ? 2 * i + 1 : i + half;
        const float v0 = p[i0], v1 = p[i1];
        p[i0] = v0 * c - v1 * s;
        p[i1] = v0 * s + v1 * c;
      }
    }
  });
}

}  // namespace detail

// Self-attention of one block on its normalised input xn ([n*L, dim]): returns o_proj's output.  This is
// AWQ's "module to inspect" for the q/k/v scale group.
inline MatrixRM attention_forward(const LlamaConfig& cfg, const Block& blk, const MatrixRM& xn, int L,
                                  const BlockHooks* hooks = nullptr) {
  const int hd = cfg.head_dim(), H = cfg.n_heads, KV = cfg.n_kv_heads, group = H / KV;
  const Eigen::Index T = xn.rows(), n = T / L;
  MatrixRM q, k, v, att(T, cfg.dim);
  {
    // q, k and v read the same normalised input; hooks see it once per role.
    MatrixRM in_q = xn, in_k = xn, in_v = xn;
    detail::apply_linear(Role::q, blk.q, in_q, q, hooks);
    detail::apply_linear(Role::k, blk.k, in_k, k, hooks);
    detail::apply_linear(Role::v, blk.v, in_v, v, hooks);
  }
  detail::rope(q, H, hd, L, cfg);
  detail::rope(k, KV, hd, L, cfg);
  // Causal attention per (sequence, head), in blocks of query rows so only keys 0..i1 are touched.
  const float inv_sqrt = 1.0f / std::sqrt(float(hd));
  constexpr Eigen::Index kRows = 64;
  parallel_for(n * H, [&](std::int64_t job) {
    const Eigen::Index s = job / H, h = job % H, kvh = h / group;
    MatrixRM S;
    for (Eigen::Index i0 = 0; i0 < L; i0 += kRows) {
      const Eigen::Index rows = std::min<Eigen::Index>(kRows, L - i0), keys = i0 + rows;
      const auto Q = q.block(s * L + i0, h * hd, rows, hd);
      const auto K = k.block(s * L, kvh * hd, keys, hd);
      const auto V = v.block(s * L, kvh * hd, keys, hd);
      S.noalias() = Q * K.transpose();  // [rows, keys]
      for (Eigen::Index r = 0; r < rows; ++r) {  // softmax over keys 0..i0+r (Eigen's vectorised exp)
        auto a = S.row(r).head(i0 + r + 1).array();
        a *= inv_sqrt;
        a = (a - a.maxCoeff()).exp();
        a *= 1.0f / a.sum();
        S.row(r).tail(keys - i0 - r - 1).setZero();
      }
      att.block(s * L + i0, h * hd, rows, hd).noalias() = S * V;
    }
  });
  MatrixRM o;
  detail::apply_linear(Role::o, blk.o, att, o, hooks);
  return o;
}

// SwiGLU MLP on its normalised input xn: down(silu(gate(xn)) * up(xn)).  AWQ's module for gate/up.
inline MatrixRM mlp_forward(const Block& blk, const MatrixRM& xn, const BlockHooks* hooks = nullptr) {
  MatrixRM g, u;
  {
    MatrixRM in_gate = xn, in_up = xn;
    detail::apply_linear(Role::gate, blk.gate, in_gate, g, hooks);
    detail::apply_linear(Role::up, blk.up, in_up, u, hooks);
  }
  g = (g.array() / (1.0f + (-g.array()).exp()) * u.array()).matrix();  // silu(gate) * up
  MatrixRM d;
  detail::apply_linear(Role::down, blk.down, g, d, hooks);
  return d;
}

// x: [n*L, dim] hidden states of n sequences of length L; overwritten with the block's output.
inline void block_forward(const LlamaConfig& cfg, const Block& blk, MatrixRM& x, int L, const BlockHooks* hooks = nullptr) {
  if (L <= 0 || x.rows() % L != 0 || x.cols() != cfg.dim)
    fail("block_forward: input is ", x.rows(), "x", x.cols(), ", expected n*", L, " x ", cfg.dim);
  MatrixRM xn;
  detail::rmsnorm(x, blk.attn_norm, cfg.norm_eps, xn);
  x += attention_forward(cfg, blk, xn, L, hooks);
  detail::rmsnorm(x, blk.ffn_norm, cfg.norm_eps, xn);
  x += mlp_forward(blk, xn, hooks);
}

// Token embeddings of n sequences of length L: [n*L, dim].
inline MatrixRM embed(const Model& m, const std::vector<int>& tokens) {
  MatrixRM x(static_cast<Eigen::Index>(tokens.size()), m.cfg.dim);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= m.cfg.vocab_size)
      fail("token id ", tokens[i], " at position ", i, " is outside the vocabulary (", m.cfg.vocab_size, ")");
    x.row(Eigen::Index(i)) = m.tok_embeddings.row(tokens[i]);
  }
  return x;
}

// Final norm and classifier: logits [n*L, vocab].
inline MatrixRM logits_from_hidden(const Model& m, const MatrixRM& x) {
  MatrixRM xn;
  detail::rmsnorm(x, m.final_norm, m.cfg.norm_eps, xn);
  MatrixRM out(xn.rows(), m.cfg.vocab_size);
  out.noalias() = xn * m.classifier().transpose();
  return out;
}

// Called with each block's index, input and output during forward() (block-wise calibration captures).
using BlockIoHook = std::function<void(int block, const MatrixRM& in, const MatrixRM& out)>;

// Logits of n sequences of length L given as n*L token ids; `hooks` reach every block's linears.
inline MatrixRM forward(const Model& m, const std::vector<int>& tokens, int L, const BlockHooks* hooks = nullptr,
                        const BlockIoHook& block_io = {}) {
  MatrixRM x = embed(m, tokens);
  for (int i = 0; i < m.cfg.n_layers; ++i)
    with_block(m, i, [&](const Block& b) {
      if (block_io) {
        const MatrixRM in = x;
        block_forward(m.cfg, b, x, L, hooks);
        block_io(i, in, x);
      } else {
        block_forward(m.cfg, b, x, L, hooks);
      }
    });
  return logits_from_hidden(m, x);
}

// Greedy decoding from a prompt (no KV cache: each step reruns the prefix; meant for checks and demos).
inline std::vector<int> generate_greedy(const Model& m, std::vector<int> tokens, int steps) {
  for (int s = 0; s < steps && int(tokens.size()) < m.cfg.max_seq_len; ++s) {
    const MatrixRM lg = forward(m, tokens, int(tokens.size()));
    Eigen::Index best;
    lg.row(lg.rows() - 1).maxCoeff(&best);
    tokens.push_back(int(best));
  }
  return tokens;
}

}  // namespace lowbit
