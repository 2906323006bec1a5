// lowbit/autodiff/block.hpp -- a LLaMA decoder block on the tape: the twin of model/llama.hpp's
// block_forward_staged, composed from autodiff/nn.hpp's ops in the same order, with the block's activation
// quantization (BlockActQuant) as fake-quantization ops:
//
//   xn = rmsnorm(x, attn_norm);  xn = Qa(xn)                      every linear's input, per token
//   q, k, v = xn Wq^T (+b), xn Wk^T, xn Wv^T;  rope(q), rope(k);  Qq(q), Qk(k), Qv(v)   per (token, head)
//   a = attention(q, k, v);  a = Qa(a);  h = x + a Wo^T
//   hn = rmsnorm(h, ffn_norm);  hn = Qa(hn);  s = swiglu(hn Wg^T, hn Wu^T);  s = Qa(s);  y = h + s Wd^T
//
// The weights are Vars, so a caller can hand in functions of parameters (OmniQuant's LET-scaled, LWC-quantized
// weights).  Activation quantization on the tape is dynamic per token (and per head for Q/K/V), the setting the
// OmniQuant and LLMC references train with; per-tensor activations and input shifts are refused.
#pragma once

#include <array>

#include "../core/error.hpp"
#include "../model/block.hpp"
#include "nn.hpp"
#include "quant_ops.hpp"

namespace lowbit::ad {

template <class T>
struct BlockVars {
  Var<T> attn_norm, ffn_norm;  // [1, dim]
  std::array<Var<T>, 7> W;     // by Role, [out, in]
  std::array<Var<T>, 7> b;     // by Role, [1, out]; v == null: no bias
};

// The tape's fake quantization for an activation quantizer (groups of `width` columns per row).
inline FakeQuantSpec act_spec(const ActQuant& a, Eigen::Index width, const char* what) {
  if (a.granularity != ActGranularity::per_token || a.static_range)
    fail(what, ": the tape quantizes activations dynamically per token (per-tensor and static ranges are not trained)");
  return FakeQuantSpec{a.bits, a.symmetric, a.grid, width};
}

// A block's float weights as constant views (T = float; no copies).
inline BlockVars<float> block_views(Tape<float>& t, const Block& b) {
  BlockVars<float> v;
  v.attn_norm = t.view(b.attn_norm.data(), 1, b.attn_norm.size());
  v.ffn_norm = t.view(b.ffn_norm.data(), 1, b.ffn_norm.size());
  for (Role r : all_roles) {
    const Linear& l = b.linear(r);
    v.W[std::size_t(r)] = t.view(l.W.data(), l.W.rows(), l.W.cols());
    if (l.b.size()) v.b[std::size_t(r)] = t.view(l.b.data(), 1, l.b.size());
  }
  return v;
}

template <class T>
Var<T> block_forward(Tape<T>& t, const LlamaConfig& cfg, const BlockVars<T>& w, const BlockActQuant& act, Var<T> x, int L) {
  if (L <= 0 || x.rows % L != 0 || x.cols != cfg.dim)
    fail("block_forward (tape): input is ", x.rows, "x", x.cols, ", expected n*", L, " x ", cfg.dim);
  const int hd = cfg.head_dim();
  const auto qa = [&](Var<T> in, const char* what) {
    return act.input.on() ? fake_quant(t, in, act_spec(act.input, in.cols, what)) : in;
  };
  const auto qh = [&](Var<T> in, const ActQuant& a, const char* what) {
    return a.on() ? fake_quant(t, in, act_spec(a, hd, what)) : in;
  };
  const auto lin = [&](Role r, Var<T> in) { return linear(t, in, w.W[std::size_t(r)], w.b[std::size_t(r)]); };
  Var<T> xn = qa(rmsnorm(t, x, w.attn_norm, T(cfg.norm_eps)), "attn_norm");
  Var<T> q = rope(t, lin(Role::q, xn), cfg.n_heads, hd, L, cfg.rope_theta, cfg.rope);
  Var<T> k = rope(t, lin(Role::k, xn), cfg.n_kv_heads, hd, L, cfg.rope_theta, cfg.rope);
  Var<T> v = lin(Role::v, xn);
  q = qh(q, act.q, "the attention's Q"), k = qh(k, act.k, "the attention's K"), v = qh(v, act.v, "the attention's V");
  Var<T> a = qa(causal_attention(t, q, k, v, cfg.n_heads, cfg.n_kv_heads, hd, L), "v_proj");
  Var<T> h = add(t, x, lin(Role::o, a));
  Var<T> hn = qa(rmsnorm(t, h, w.ffn_norm, T(cfg.norm_eps)), "ffn_norm");
  Var<T> s = qa(swiglu(t, lin(Role::gate, hn), lin(Role::up, hn)), "up_proj");
  return add(t, h, lin(Role::down, s));
}

// Refuses a block the tape cannot run exactly (input shifts: Block::shift).
inline void check_tape_block(const Block& b, const std::string& where) {
  for (std::size_t g = 0; g < b.shift.size(); ++g)
    if (b.shift[g].size()) fail(where, ": the block shifts the input of ", input_groups()[g].key, " (a shift before OmniQuant is not supported)");
}

}  // namespace lowbit::ad
