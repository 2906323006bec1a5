// lowbit/model/llama.hpp -- a LLaMA-family decoder as a sequence of blocks (model/block.hpp), and its forward
// pass composed from the pure ops of model/ops.hpp.
//
// Math (per token, llama2.c / Hugging Face LLaMA):
//   h   = x + o( attention( rope(q(rms(x))), rope(k(rms(x))), v(rms(x)) ) )       causal, GQA
//   out = h + down( silu(gate(rms(h))) * up(rms(h)) )
// The forward runs in the four stages of the block's input groups (attn_norm -> q,k,v; v -> o;
// ffn_norm -> gate,up; up -> down): block_forward_staged() calls back before each stage's linears run, which is
// where GPTQ collects a subset's Hessian and quantizes it, so a block is computed once per calibration pass.
#pragma once

#include <Eigen/Core>
#include <functional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/gemm.hpp"
#include "../core/matrix.hpp"
#include "block.hpp"
#include "ops.hpp"

namespace lowbit {

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

  // A mapped model may defer its tables (quantization reads only the calibration tokens' embedding rows and
  // never runs the classifier): then tok_embeddings / output are empty and these read from the file.
  std::function<void(int token, float* out)> embedding_row;
  std::function<MatrixRM()> load_output;

  const MatrixRM& classifier() const {
    const MatrixRM& c = cfg.tied_embeddings ? tok_embeddings : output;
    if (c.size() == 0) fail("the model's classifier was not loaded (tables deferred): load it resident to evaluate");
    return c;
  }
  // The embedding table and the untied classifier as matrices, converted from the file when deferred.
  MatrixRM embeddings_matrix() const {
    if (tok_embeddings.size() || !embedding_row) return tok_embeddings;
    MatrixRM e(cfg.vocab_size, cfg.dim);
    for (int t = 0; t < cfg.vocab_size; ++t) embedding_row(t, e.row(t).data());
    return e;
  }
  MatrixRM output_matrix() const {
    if (cfg.tied_embeddings) return MatrixRM();
    return output.size() || !load_output ? output : load_output();
  }
  bool resident() const { return !blocks.empty(); }
  // Loads every mapped block into `blocks` (tests and small models; the quantization pipeline streams instead).
  void make_resident() {
    if (resident()) return;
    for (int i = 0; i < cfg.n_layers; ++i) blocks.push_back(block_loader(i));
  }
  // Block i as a copy in fp32 (from memory or converted from the mapped file).
  Block load_block(int i) const {
    if (resident()) return blocks[std::size_t(i)];
    if (!block_loader) fail("model has neither resident blocks nor a block loader");
    return block_loader(i);
  }
};

// Calls fn(const Block&) with block i, converting it from the mapped file when the model is not resident.
template <class Fn>
void with_block(const Model& m, int i, Fn&& fn) {
  if (m.resident()) return fn(m.blocks[std::size_t(i)]);
  const Block b = m.load_block(i);
  fn(b);
}

// Hooks a forward pass calls; all optional.
struct BlockHooks {
  // Sees the input of every linear ([n*L, in]) before it is applied (activation statistics, Hessians).
  std::function<void(Role, const MatrixRM&)> linear_input;
  // May rewrite the input of every linear (activation fake-quantization for W-A quantization); each linear
  // gets its own copy.
  std::function<void(Role, MatrixRM&)> transform_input;
};

namespace detail {
inline void apply_linear(Role role, const Linear& lin, const MatrixRM& in, MatrixRM& out, const BlockHooks* hooks) {
  if (hooks && hooks->transform_input) {
    MatrixRM t = in;
    hooks->transform_input(role, t);
    if (hooks->linear_input) hooks->linear_input(role, t);
    linear(t, lin, out);
    return;
  }
  if (hooks && hooks->linear_input) hooks->linear_input(role, in);
  linear(in, lin, out);
}

// Subtracts the block's shift of input group s (block.hpp Block::shift) from the group's input, in place.
inline void shift_group_input(const Block& blk, int s, MatrixRM& x) {
  const Eigen::VectorXf& z = blk.shift[std::size_t(s)];
  if (!z.size()) return;
  if (z.size() != x.cols()) fail(input_groups()[std::size_t(s)].key, ": shift of ", z.size(), " channels on an input of ", x.cols());
  x.rowwise() -= z.transpose();
}

// The block's activation quantization of input group s's shared input (block.hpp BlockActQuant), in place.
inline void quantize_group_input(const Block& blk, int s, MatrixRef x) {
  const ActQuant& a = blk.act.input;
  if (!a.on()) return;
  const char* what = input_groups()[std::size_t(s)].key;
  if (a.granularity == ActGranularity::per_token) fake_quant_dynamic(a, x, x.cols(), what);
  else if (a.static_range) fake_quant_static(a, blk.act.range[std::size_t(s)], x, what);
  else fake_quant_tensor(a, x, what);
}

// q, k, v projections, RoPE and causal attention on the normalised input: o_proj's input [n*L, dim].
inline MatrixRM attention_core(const LlamaConfig& cfg, const Block& blk, const MatrixRM& xn, int L, const BlockHooks* hooks) {
  MatrixRM q, k, v, att;
  apply_linear(Role::q, blk.q, xn, q, hooks);
  apply_linear(Role::k, blk.k, xn, k, hooks);
  apply_linear(Role::v, blk.v, xn, v, hooks);
  rope(q, cfg.n_heads, cfg.head_dim(), L, cfg.rope_theta, cfg.rope);
  rope(k, cfg.n_kv_heads, cfg.head_dim(), L, cfg.rope_theta, cfg.rope);
  // Q/K/V quantization (OmniQuant's qkt_matmul / pv_matmul inputs): per (token, head), after RoPE
  fake_quant_dynamic(blk.act.q, q, cfg.head_dim(), "the attention's Q");
  fake_quant_dynamic(blk.act.k, k, cfg.head_dim(), "the attention's K");
  fake_quant_dynamic(blk.act.v, v, cfg.head_dim(), "the attention's V");
  causal_attention(q, k, v, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim(), L, att);
  return att;
}
}  // namespace detail

// Self-attention of one block on its normalised input xn ([n*L, dim], already shifted and quantized as the
// block does): returns o_proj's output.  This is AWQ's "module to inspect" for the q/k/v scale group.
inline MatrixRM attention_forward(const LlamaConfig& cfg, const Block& blk, const MatrixRM& xn, int L,
                                  const BlockHooks* hooks = nullptr) {
  MatrixRM att = detail::attention_core(cfg, blk, xn, L, hooks);
  detail::shift_group_input(blk, 1, att);
  detail::quantize_group_input(blk, 1, att);
  MatrixRM o;
  detail::apply_linear(Role::o, blk.o, att, o, hooks);
  return o;
}

// SwiGLU MLP on its normalised input xn: down(silu(gate(xn)) * up(xn)).  AWQ's module for gate/up.
inline MatrixRM mlp_forward(const Block& blk, const MatrixRM& xn, const BlockHooks* hooks = nullptr) {
  MatrixRM g, u, d;
  detail::apply_linear(Role::gate, blk.gate, xn, g, hooks);
  detail::apply_linear(Role::up, blk.up, xn, u, hooks);
  swiglu(g, u, g);
  detail::shift_group_input(blk, 3, g);
  detail::quantize_group_input(blk, 3, g);
  detail::apply_linear(Role::down, blk.down, g, d, hooks);
  return d;
}

// x: [n*L, dim] hidden states of n sequences of length L; overwritten with the block's output.  Before the
// linears of subset s (block.hpp's input groups, in order) run, before(s, input) is called with their shared
// input (after the block's shift of that group, if any); it may change those linears, and the group's activation
// range, in `blk` (read only after it returns).  Then the input is fake-quantized when the block quantizes
// activations (blk.act), and the linears run.
template <class Before>
void block_forward_staged(const LlamaConfig& cfg, const Block& blk, MatrixRM& x, int L, const BlockHooks* hooks,
                          Before&& before) {
  if (L <= 0 || x.rows() % L != 0 || x.cols() != cfg.dim)
    fail("block_forward: input is ", x.rows(), "x", x.cols(), ", expected n*", L, " x ", cfg.dim);
  MatrixRM xn, t, u;
  rmsnorm(x, blk.attn_norm, cfg.norm_eps, xn);
  detail::shift_group_input(blk, 0, xn);
  before(0, xn);
  detail::quantize_group_input(blk, 0, xn);
  MatrixRM att = detail::attention_core(cfg, blk, xn, L, hooks);
  detail::shift_group_input(blk, 1, att);
  before(1, att);
  detail::quantize_group_input(blk, 1, att);
  detail::apply_linear(Role::o, blk.o, att, t, hooks);
  x += t;
  rmsnorm(x, blk.ffn_norm, cfg.norm_eps, xn);
  detail::shift_group_input(blk, 2, xn);
  before(2, xn);
  detail::quantize_group_input(blk, 2, xn);
  detail::apply_linear(Role::gate, blk.gate, xn, t, hooks);
  detail::apply_linear(Role::up, blk.up, xn, u, hooks);
  swiglu(t, u, t);
  detail::shift_group_input(blk, 3, t);
  before(3, t);
  detail::quantize_group_input(blk, 3, t);
  detail::apply_linear(Role::down, blk.down, t, u, hooks);
  x += u;
}

inline void block_forward(const LlamaConfig& cfg, const Block& blk, MatrixRM& x, int L, const BlockHooks* hooks = nullptr) {
  block_forward_staged(cfg, blk, x, L, hooks, [](int, const MatrixRM&) {});
}

// Token embeddings of n sequences of length L: [n*L, dim].
inline MatrixRM embed(const Model& m, const std::vector<int>& tokens) {
  MatrixRM x(static_cast<Eigen::Index>(tokens.size()), m.cfg.dim);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= m.cfg.vocab_size)
      fail("token id ", tokens[i], " at position ", i, " is outside the vocabulary (", m.cfg.vocab_size, ")");
    if (m.tok_embeddings.size()) x.row(Eigen::Index(i)) = m.tok_embeddings.row(tokens[i]);
    else if (m.embedding_row) m.embedding_row(tokens[i], x.row(Eigen::Index(i)).data());
    else fail("the model has no embedding table");
  }
  return x;
}

// Final norm and classifier: logits [n*L, vocab].
inline MatrixRM logits_from_hidden(const Model& m, const MatrixRM& x) {
  MatrixRM xn;
  rmsnorm(x, m.final_norm, m.cfg.norm_eps, xn);
  MatrixRM out;
  matmul_nt(xn, m.classifier(), out);
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
