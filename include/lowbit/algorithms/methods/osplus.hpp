// lowbit/algorithms/methods/osplus.hpp -- Outlier Suppression+ ("osplus", also written "os+" in chains: "os+",
// "os+gptq", "os++gptq") over a block (LLMC osplus.py; transforms/shift.hpp
// and transforms/osplus.hpp have the math): for each norm -> linears group (OS+ transforms only those),
//   1. the shift z = per-channel midpoint of the group input over the calibration (full-precision chain),
//      folded as in the shift method (LLMC skips the shift on models without norm biases such as LLaMA; lowbit
//      carries it as a norm-output bias, as PaddleSlim does);
//   2. the threshold search on the shifted input: candidates scored by the group's module output -- the
//      attention (o_proj in float) for attn_norm -> q,k,v, the MLP (down_proj in float) for ffn_norm -> gate,up,
//      as LLMC's `inspect` modules -- with the group's linears quantized by the chain's weight quantizer and the
//      module input by the run's activation quantizer, on the first windows up to `tokens` rows;
//   3. the scale folded into the norm (fold_scales, which divides the shift too).
#pragma once

#include <string>
#include <vector>

#include "../../model/llama.hpp"
#include "../../transforms/osplus.hpp"
#include "../../transforms/shift.hpp"
#include "../../transforms/smooth.hpp"
#include "../method.hpp"
#include "pss.hpp"

namespace lowbit {

struct OsPlusOptions {
  bool shift = true;
  int tokens = 512;
};

inline const MethodInfo& osplus_info() {
  static const MethodInfo i{"osplus", /*quantizes=*/false, /*calibrated=*/true, Chain::full_precision, Grid::minmax,
                            /*outputs_original=*/true};
  return i;
}

template <class Q>
class OsPlusMethod final : public BlockMethod<Q> {
 public:
  OsPlusMethod(const Q& q, const OsPlusOptions& o) : q_(q), o_(o) {
    if (o.tokens < 1) fail("OS+: tokens ", o.tokens, " must be positive");
  }
  const MethodInfo& info() const override { return osplus_info(); }
  void run(BlockJob& job, Chain chain) override {
    job.step("os+ stats");
    const bool hand_over = chain == Chain::full_precision && !job.transformed;
    const std::size_t ng = input_groups().size();
    std::vector<ShiftObserver> obs(ng);
    std::vector<MatrixRM> sample(ng);
    {
      MatrixRM x = job.input(chain);
      block_forward_staged(job.cfg, job.block, x, job.L, nullptr, [&](int s, const MatrixRM& in) {
        for (Eigen::Index w = 0; w + job.L <= in.rows(); w += job.L) obs[std::size_t(s)].observe(in.middleRows(w, job.L));
        sample[std::size_t(s)] = sample_windows(in, job.L, o_.tokens);
      });
      if (hand_over) job.outputs[std::size_t(chain)] = std::move(x);
    }
    const ActQuant aq = search_act_quant(job.act.input);
    for (std::size_t gi = 0; gi < ng; ++gi) {
      const InputGroup& g = input_groups()[gi];
      if (!g.prev.is_norm()) continue;
      job.step(std::string("os+ ") + g.key);
      MatrixRM& xs = sample[gi];
      if (o_.shift) {
        const Eigen::VectorXf z = obs[gi].shift();
        fold_shift(job.block, g, z);
        xs.rowwise() -= z.transpose();
        job.artifacts.shift[g.key] = z;
      }
      // the module on the (shifted) float input is the target (attention_forward / mlp_forward take the group's
      // input as given); candidates quantize the group's linears only
      Block ref = job.block;
      ref.act = BlockActQuant{};
      const MatrixRM y = module_out(job.cfg, ref, g, xs, job.L);
      const OsPlusResult r = osplus_search(xs, [&](const Eigen::VectorXf& s) {
        Block cand = ref;
        for (Role role : g.linears) {
          MatrixRM& W = cand.linear(role).W;
          W = W * s.asDiagonal();
          fake_quant(q_, W, W, {}, g.key);
        }
        MatrixRM qx = xs.array().rowwise() / s.transpose().array();
        fake_quant_activation(aq, qx, g.key);
        const MatrixRM out = module_out(job.cfg, cand, g, qx, job.L);
        return (y - out).cast<double>().squaredNorm() / double(y.rows());
      });
      fold_scales(job.block, g, r.scale);
      job.artifacts.smooth[g.key] = r.scale;
    }
    job.transformed = true;
  }

 private:
  static MatrixRM module_out(const LlamaConfig& cfg, const Block& b, const InputGroup& g, const MatrixRM& x, int L) {
    return g.prev.norm == NormRole::attn ? attention_forward(cfg, b, x, L) : mlp_forward(b, x);
  }
  Q q_;
  OsPlusOptions o_;
};

}  // namespace lowbit
