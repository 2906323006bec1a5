// lowbit/model/block.hpp -- one typed description of a LLaMA-family decoder block: its hyper-parameters, its
// linears by Role, its two norms, and the table every other part reads instead of repeating it:
//
//   | role | lowbit name | Hugging Face       | GGUF        | llama2.c | out x in        | RoPE rows | GPTQ subset |
//   |------|-------------|--------------------|-------------|----------|-----------------|-----------|-------------|
//   | q    | q_proj      | self_attn.q_proj   | attn_q      | wq       | dim x dim       | yes       | 0           |
//   | k    | k_proj      | self_attn.k_proj   | attn_k      | wk       | kv_dim x dim    | yes       | 0           |
//   | v    | v_proj      | self_attn.v_proj   | attn_v      | wv       | kv_dim x dim    |           | 0           |
//   | o    | o_proj      | self_attn.o_proj   | attn_output | wo       | dim x dim       |           | 1           |
//   | gate | gate_proj   | mlp.gate_proj      | ffn_gate    | w1       | hidden x dim    |           | 2           |
//   | up   | up_proj     | mlp.up_proj        | ffn_up      | w3       | hidden x dim    |           | 2           |
//   | down | down_proj   | mlp.down_proj      | ffn_down    | w2       | dim x hidden    |           | 3           |
//
//   norms: attn_norm (HF input_layernorm, GGUF attn_norm, llama2.c rms_att),
//          ffn_norm  (HF post_attention_layernorm, GGUF ffn_norm, llama2.c rms_ffn)
//
// Input groups -- the linears that read one input, with the op in front of them (AWQ / SmoothQuant / LET fold
// their per-channel scales into that op):
//     attn_norm -> q, k, v;    v -> o;    ffn_norm -> gate, up;    up -> down
// A linear-to-linear group is exact only when the previous linear's outputs are the group's inputs one to one
// (v -> o needs kv_dim == dim: not under GQA, where the reference skips it too; group_applies()).
// GPTQ's true-sequential subsets (gptq llama.py) are the same four sets in the block's order of computation.
// RoPE rotates channel pairs of each q/k head: (2i, 2i+1) in the llama2.c / Meta convention, (i, i + hd/2) in
// Hugging Face's rotate-half convention (rope_partner()); a per-channel transform of q/k must give both
// channels of a pair the same factor.
#pragma once

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/matrix.hpp"
#include "../quant/activation.hpp"

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
    // the hyper-parameters every forward reads: a non-finite or non-positive value gives NaN everywhere
    if (!(norm_eps > 0.0f) || !(norm_eps <= 1.0f))
      fail(where, ": rms_norm_eps ", norm_eps, " is not in (0, 1]");
    if (!(rope_theta > 1.0f) || !std::isfinite(rope_theta)) fail(where, ": rope_theta ", rope_theta, " is not a finite value > 1");
  }
};

enum class Role { q, k, v, o, gate, up, down };
constexpr std::array<Role, 7> all_roles = {Role::q, Role::k, Role::v, Role::o, Role::gate, Role::up, Role::down};
enum class NormRole { attn, ffn };
constexpr std::array<NormRole, 2> all_norms = {NormRole::attn, NormRole::ffn};

// Which of the config's widths a linear dimension is.
enum class Width { model, kv, hidden };

struct LinearDesc {
  Role role;
  const char* name;     // lowbit's own name, also the key in artifact files
  const char* hf;       // model.layers.<i>.<hf>.weight
  const char* gguf;     // blk.<i>.<gguf>.weight
  const char* llama2c;  // the llama2.c export's tensor name
  Width out, in;
  bool rope;            // rows are rotated by RoPE after the projection (q, k)
  int subset;           // GPTQ true-sequential subset
};

struct NormDesc {
  NormRole role;
  const char* name;
  const char* hf;
  const char* gguf;
  const char* llama2c;
};

inline constexpr std::array<LinearDesc, 7> kLinears = {{
    {Role::q, "q_proj", "self_attn.q_proj", "attn_q", "wq", Width::model, Width::model, true, 0},
    {Role::k, "k_proj", "self_attn.k_proj", "attn_k", "wk", Width::kv, Width::model, true, 0},
    {Role::v, "v_proj", "self_attn.v_proj", "attn_v", "wv", Width::kv, Width::model, false, 0},
    {Role::o, "o_proj", "self_attn.o_proj", "attn_output", "wo", Width::model, Width::model, false, 1},
    {Role::gate, "gate_proj", "mlp.gate_proj", "ffn_gate", "w1", Width::hidden, Width::model, false, 2},
    {Role::up, "up_proj", "mlp.up_proj", "ffn_up", "w3", Width::hidden, Width::model, false, 2},
    {Role::down, "down_proj", "mlp.down_proj", "ffn_down", "w2", Width::model, Width::hidden, false, 3},
}};
inline constexpr std::array<NormDesc, 2> kNorms = {{
    {NormRole::attn, "attn_norm", "input_layernorm", "attn_norm", "rms_att"},
    {NormRole::ffn, "ffn_norm", "post_attention_layernorm", "ffn_norm", "rms_ffn"},
}};

inline const LinearDesc& describe(Role r) { return kLinears[static_cast<std::size_t>(r)]; }
inline const NormDesc& describe(NormRole n) { return kNorms[static_cast<std::size_t>(n)]; }
inline const char* to_string(Role r) { return describe(r).name; }
inline const char* to_string(NormRole n) { return describe(n).name; }

inline int width_of(const LlamaConfig& c, Width w) {
  return w == Width::model ? c.dim : w == Width::kv ? c.kv_dim() : c.hidden_dim;
}
// [rows, cols] of a linear's weight.
inline std::array<int, 2> linear_shape(const LlamaConfig& c, Role r) {
  return {width_of(c, describe(r).out), width_of(c, describe(r).in)};
}

// Qwen2 gives q, k and v a bias.
inline bool has_bias(const LlamaConfig& c, Role r) { return c.qkv_bias && describe(r).subset == 0; }

// The op in front of a group of linears: a norm (its weight is scaled) or a linear (its output rows are).
struct PrevOp {
  enum class Kind { norm, linear };
  Kind kind;
  NormRole norm;
  Role linear;
  static constexpr PrevOp of(NormRole n) { return {Kind::norm, n, Role::q}; }
  static constexpr PrevOp of(Role r) { return {Kind::linear, NormRole::attn, r}; }
  bool is_norm() const { return kind == Kind::norm; }
};

struct InputGroup {
  const char* key;  // the previous op's name: the key of the group's scales in artifact files
  PrevOp prev;
  std::vector<Role> linears;
  int subset;       // GPTQ subset = position in the block's order of computation
};

inline const std::vector<InputGroup>& input_groups() {
  static const std::vector<InputGroup> g = {
      {"attn_norm", PrevOp::of(NormRole::attn), {Role::q, Role::k, Role::v}, 0},
      {"v_proj", PrevOp::of(Role::v), {Role::o}, 1},
      {"ffn_norm", PrevOp::of(NormRole::ffn), {Role::gate, Role::up}, 2},
      {"up_proj", PrevOp::of(Role::up), {Role::down}, 3},
  };
  return g;
}

// The group whose input a linear reads.
inline const InputGroup& group_of(Role r) { return input_groups()[static_cast<std::size_t>(describe(r).subset)]; }

// A per-channel scale can be folded into the previous op only when that op's outputs are the group's inputs
// (norm: always; linear: its output count equals the group's input width, e.g. v -> o without GQA).
inline bool group_applies(const LlamaConfig& c, const InputGroup& g) {
  if (g.prev.is_norm()) return true;
  return linear_shape(c, g.prev.linear)[0] == linear_shape(c, g.linears[0])[1];
}

// The channel (within a head of size hd) that RoPE rotates together with channel c.
inline int rope_partner(RopeStyle s, int hd, int c) {
  if (s == RopeStyle::interleaved) return c ^ 1;
  return c < hd / 2 ? c + hd / 2 : c - hd / 2;
}

struct Linear {
  MatrixRM W;           // [out, in]
  Eigen::VectorXf b;    // [out] or empty
};

// How a block's activations are fake-quantized when it runs (weight-activation quantization; all off in a
// model as loaded).  `input` applies to the input of every linear, once per input group (q, k and v read the
// same quantized input); `range` holds each group's calibrated range when `input` is per-tensor static.
// q, k and v quantize the attention's Q and K after RoPE and V, per (token, head), before the products.
struct BlockActQuant {
  ActQuant input;
  std::array<ActRange, 4> range;  // by input group (block.hpp's input_groups(), in order)
  ActQuant q, k, v;
  bool on() const { return input.on() || q.on() || k.on() || v.on(); }
};

struct Block {
  Eigen::VectorXf attn_norm, ffn_norm;  // [dim]
  Linear q, k, v, o, gate, up, down;
  BlockActQuant act;
  // Per input group (input_groups() order): a per-channel shift z subtracted from the group's input before its
  // linears (and before activation quantization) -- Outlier Suppression+ / PaddleSlim Shift; the linears' biases
  // hold + W z, so the function is unchanged.  Empty: none.  For a norm group it is a bias -z on the norm's output
  // (PaddleSlim's WOBiasHelpLayer); for a linear group an explicit subtraction (ShiftSmoothHelpLayer).
  std::array<Eigen::VectorXf, 4> shift;

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
  Eigen::VectorXf& norm(NormRole n) { return n == NormRole::attn ? attn_norm : ffn_norm; }
  const Eigen::VectorXf& norm(NormRole n) const { return n == NormRole::attn ? attn_norm : ffn_norm; }
};

// A copy of b without the linears' weights (W empty; everything else -- norms, biases, shifts, activation
// quantization -- as in b).  A member added to Block must be copied here.
inline Block without_weights(const Block& b) {
  Block c;
  c.attn_norm = b.attn_norm, c.ffn_norm = b.ffn_norm;
  for (Role r : all_roles) c.linear(r).b = b.linear(r).b;
  c.act = b.act;
  c.shift = b.shift;
  return c;
}

// Folds a per-input-channel scale s into a group: the previous op's outputs are divided by s (a norm's weight,
// or a linear's rows and bias; and the group's shift, when it has one) and every linear of the group gets
// W[:, j] *= s_j -- the block computes the same function (AWQ scale.py scale_ln_fcs / scale_fc_fc; SmoothQuant;
// OmniQuant LET).
inline void fold_scales(Block& b, const InputGroup& g, const Eigen::VectorXf& s) {
  Eigen::VectorXf& z = b.shift[std::size_t(g.subset)];
  if (z.size()) z.array() /= s.array();
  if (g.prev.is_norm()) {
    b.norm(g.prev.norm).array() /= s.array();
  } else {
    Linear& p = b.linear(g.prev.linear);
    if (p.W.rows() != s.size()) fail("fold_scales: ", to_string(g.prev.linear), " has ", p.W.rows(), " outputs, the scale ", s.size());
    for (Eigen::Index r = 0; r < p.W.rows(); ++r) p.W.row(r) /= s[r];
    if (p.b.size()) p.b.array() /= s.array();
  }
  for (Role r : g.linears) b.linear(r).W = b.linear(r).W * s.asDiagonal();
}

// Folds a per-input-channel shift z into a group: its linears read x - z (Block::shift, added to any earlier
// shift) and their biases gain W z (created where a linear had none), so y = W (x - z) + b + W z = W x + b
// (OS+; PaddleSlim Shift.update_weight: linear bias += z W, norm bias -= z).
inline void fold_shift(Block& b, const InputGroup& g, const Eigen::VectorXf& z) {
  Eigen::VectorXf& cur = b.shift[std::size_t(g.subset)];
  for (Role r : g.linears) {
    Linear& l = b.linear(r);
    if (l.W.cols() != z.size()) fail("fold_shift: ", to_string(r), " has ", l.W.cols(), " inputs, the shift ", z.size());
    if (!l.b.size()) l.b = Eigen::VectorXf::Zero(l.W.rows());
    l.b += l.W * z;
  }
  if (cur.size()) cur += z;
  else cur = z;
}

}  // namespace lowbit
