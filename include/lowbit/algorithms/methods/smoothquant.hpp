// lowbit/algorithms/methods/smoothquant.hpp -- SmoothQuant over a block (mit-han-lab/smoothquant smooth.py;
// ALGORITHMS.md 4.1), built on transforms/smooth.hpp:
//   1. run the block on its calibration input (the full-precision chain, as the reference computes its
//      act_scales on the float model) and keep each input group's per-channel max |x|;
//   2. for each norm -> linears group (attn_norm -> q,k,v; ffn_norm -> gate,up), and with `all_linears` also the
//      linear -> linear groups (v -> o where kv_dim == dim, up -> down: PaddleSlim's smooth_all_linears),
//      s = max(1e-5, max|x|^alpha / max|W|^(1-alpha)) over the group's linears, folded into the previous op
//      (fold_scales: the block computes the same function).
// A transform: the chain's quantizing step (RTN by default, GPTQ in smoothquant+gptq) quantizes the smoothed
// weights; activation quantization is the pipeline's (PipelineOptions::act).  The scales are kept in the block's
// artifacts by group key.
#pragma once

#include <string>
#include <vector>

#include "../../model/llama.hpp"
#include "../../transforms/smooth.hpp"
#include "../method.hpp"

namespace lowbit {

struct SmoothOptions {
  float alpha = 0.5f;        // SmoothQuant's migration strength (README: 0.8-0.85 for LLaMA-2 / Llama-3)
  bool all_linears = false;  // also o after v and down after up (PaddleSlim smooth_all_linears)
};

inline const MethodInfo& smoothquant_info() {
  static const MethodInfo i{"smoothquant", /*quantizes=*/false, /*calibrated=*/true, Chain::full_precision,
                            Grid::minmax, /*outputs_original=*/true};
  return i;
}

// Whether a group is smoothed.
inline bool smooth_group(const LlamaConfig& cfg, const InputGroup& g, bool all_linears) {
  return g.prev.is_norm() || (all_linears && group_applies(cfg, g));
}

// The per-channel max |x| of every input group of the block on X, and the block's output on X.
inline std::vector<Eigen::VectorXf> group_input_absmax(const LlamaConfig& cfg, const Block& b, const MatrixRM& X, int L,
                                                       MatrixRM* output) {
  std::vector<Eigen::VectorXf> act(input_groups().size());
  MatrixRM x = X;
  block_forward_staged(cfg, b, x, L, nullptr, [&](int s, const MatrixRM& in) { accumulate_absmax(in, act[std::size_t(s)]); });
  if (output) *output = std::move(x);
  return act;
}

template <class Q>
class SmoothQuantMethod final : public BlockMethod<Q> {
 public:
  SmoothQuantMethod(const Q&, const SmoothOptions& o) : o_(o) {
    if (!(o.alpha >= 0.0f && o.alpha <= 1.0f)) fail("SmoothQuant: alpha ", o.alpha, " is not in [0, 1]");
  }
  const MethodInfo& info() const override { return smoothquant_info(); }
  void run(BlockJob& job, Chain chain) override {
    job.step("smooth stats");
    const bool hand_over = chain == Chain::full_precision && !job.transformed;
    MatrixRM out;
    const std::vector<Eigen::VectorXf> act = group_input_absmax(job.cfg, job.block, job.input(chain), job.L, hand_over ? &out : nullptr);
    if (hand_over) job.outputs[std::size_t(chain)] = std::move(out);
    job.step("smooth");
    for (std::size_t gi = 0; gi < input_groups().size(); ++gi) {
      const InputGroup& g = input_groups()[gi];
      if (!smooth_group(job.cfg, g, o_.all_linears)) continue;
      std::vector<const MatrixRM*> Ws;
      for (Role r : g.linears) Ws.push_back(&job.block.linear(r).W);
      const Eigen::VectorXf s = smoothquant_scales(act[gi], weight_absmax(Ws), o_.alpha);
      fold_scales(job.block, g, s);
      job.artifacts.smooth[g.key] = s;
    }
    job.transformed = true;
  }

 private:
  SmoothOptions o_;
};

}  // namespace lowbit
