// lowbit/autodiff/model.hpp -- a whole LLaMA decoder on the tape, for training a model from scratch: the twin of
// model/llama.hpp's forward + logits (same ops in the same order, autodiff/block.hpp for each block), and the
// parameters a training run owns.
//
//   x = E[tokens];  x = block_i(x) for each block;  z = rms(x, final_norm) C^T   (C = E when tied)
//   loss = cross_entropy(z, targets)  (mean over tokens of -log softmax(z_t)[target_t])
//
// ModelParams keeps every weight in an AdamW (autodiff/adamw.hpp) under the Hugging Face tensor names, so the
// model is at any time a plain `Model` (to_model) that every loader, method and writer of lowbit takes.
// Initialisation as GPT-2 / llama2.c's train.py: N(0, 0.02) for every matrix, N(0, 0.02 / sqrt(2 n_layers)) for
// the projections that write into the residual stream (o, down), norms at 1.
#pragma once

#include <array>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../model/llama.hpp"
#include "adamw.hpp"
#include "block.hpp"
#include "nn.hpp"

namespace lowbit::ad {

// T: float for training, double for the gradient checks.
template <class T>
struct ModelParamsT {
  LlamaConfig cfg;
  AdamW<T> opt;
  int embed = -1, final_norm = -1, output = -1;  // output: -1 when tied
  struct BlockIds {
    int attn_norm = -1, ffn_norm = -1;
    std::array<int, 7> W{};
  };
  std::vector<BlockIds> blocks;

  // Fresh parameters (see the file comment); `decay`: AdamW's weight decay of the matrices (norms get none).
  static ModelParamsT init(const LlamaConfig& cfg, std::uint64_t seed, double lr, double decay) {
    cfg.validate("ModelParams::init");
    if (cfg.qkv_bias) fail("ModelParams::init: training a model with q/k/v biases is not supported");
    ModelParamsT p;
    p.cfg = cfg;
    std::mt19937_64 g(seed);
    const auto normal = [&](int rows, int cols, float sd) {
      std::normal_distribution<float> nd(0.0f, sd);
      Mat<T> m(rows, cols);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = T(nd(g));
      return m;
    };
    p.embed = p.opt.add("model.embed_tokens.weight", normal(cfg.vocab_size, cfg.dim, 0.02f), lr, decay);
    const float resid_sd = 0.02f / std::sqrt(2.0f * float(cfg.n_layers));
    for (int i = 0; i < cfg.n_layers; ++i) {
      BlockIds b;
      const std::string pre = "model.layers." + std::to_string(i) + ".";
      b.attn_norm = p.opt.add(pre + kNorms[0].hf + ".weight", Mat<T>::Ones(1, cfg.dim), lr, 0.0);
      b.ffn_norm = p.opt.add(pre + kNorms[1].hf + ".weight", Mat<T>::Ones(1, cfg.dim), lr, 0.0);
      for (const LinearDesc& l : kLinears) {
        const auto s = linear_shape(cfg, l.role);
        const bool resid = l.role == Role::o || l.role == Role::down;
        b.W[std::size_t(l.role)] = p.opt.add(pre + l.hf + ".weight", normal(s[0], s[1], resid ? resid_sd : 0.02f), lr, decay);
      }
      p.blocks.push_back(b);
    }
    p.final_norm = p.opt.add("model.norm.weight", Mat<T>::Ones(1, cfg.dim), lr, 0.0);
    if (!cfg.tied_embeddings) p.output = p.opt.add("lm_head.weight", normal(cfg.vocab_size, cfg.dim, 0.02f), lr, decay);
    return p;
  }

  // The parameters as a plain (float) model: copies.
  Model to_model() const {
    Model m;
    m.cfg = cfg;
    const auto mat = [&](int i) { return MatrixRM(opt[i].value.template cast<float>()); };
    const auto vec = [&](int i) { return Eigen::VectorXf(opt[i].value.row(0).transpose().template cast<float>()); };
    m.tok_embeddings = mat(embed);
    m.final_norm = vec(final_norm);
    if (output >= 0) m.output = mat(output);
    for (const BlockIds& b : blocks) {
      Block blk;
      blk.attn_norm = vec(b.attn_norm);
      blk.ffn_norm = vec(b.ffn_norm);
      for (Role r : all_roles) blk.linear(r).W = mat(b.W[std::size_t(r)]);
      m.blocks.push_back(std::move(blk));
    }
    return m;
  }
};
using ModelParams = ModelParamsT<float>;

// Mean next-token cross-entropy of `tokens` (n sequences of L, row-major) against `targets` on the tape.
template <class T>
Var<T> model_loss(Tape<T>& t, ModelParamsT<T>& p, const std::vector<int>& tokens, const std::vector<int>& targets, int L) {
  const LlamaConfig& c = p.cfg;
  if (L <= 0 || tokens.size() % std::size_t(L) || targets.size() != tokens.size())
    fail("model_loss: ", tokens.size(), " tokens and ", targets.size(), " targets for sequences of ", L);
  const Var<T> E = p.opt.var(t, p.embed);
  Var<T> x = embedding(t, E, tokens);
  for (const typename ModelParamsT<T>::BlockIds& b : p.blocks) {
    BlockVars<T> w;
    w.attn_norm = p.opt.var(t, b.attn_norm);
    w.ffn_norm = p.opt.var(t, b.ffn_norm);
    for (Role r : all_roles) w.W[std::size_t(r)] = p.opt.var(t, b.W[std::size_t(r)]);
    x = block_forward(t, c, w, BlockActQuant{}, x, L);
  }
  const Var<T> xn = rmsnorm(t, x, p.opt.var(t, p.final_norm), T(c.norm_eps));
  const Var<T> z = linear(t, xn, p.output >= 0 ? p.opt.var(t, p.output) : E);
  return cross_entropy(t, z, targets);
}

}  // namespace lowbit::ad
