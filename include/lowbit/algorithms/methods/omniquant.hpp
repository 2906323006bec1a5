// lowbit/algorithms/methods/omniquant.hpp -- OmniQuant over a block (algorithms/omniquant.hpp): the block's
// targets on the full-precision chain (and, with aug_loss, the full-precision block on the quantized chain's
// input), training on the quantized chain's input, then the learned LET folded into the block's float weights and
// every linear quantized with its learned clip ratios into the block's QuantizedLinear slots.
//
// Chains: reads the quantized chain (quant_inps) and the full-precision chain (fp_inps, the target), as the
// reference.  Run first, the step's target is the original block's output on the full-precision chain, handed
// to the loop as that chain's next input.
#pragma once

#include <string>

#include "../../model/llama.hpp"
#include "../method.hpp"
#include "../omniquant.hpp"
#include "smoothquant.hpp"

namespace lowbit {

inline const MethodInfo& omniquant_info() {
  static const MethodInfo i = [] {
    MethodInfo m{"omniquant", /*quantizes=*/true, /*calibrated=*/true, Chain::quantized, Grid::omniquant};
    m.target_full_precision = true;
    return m;
  }();
  return i;
}

template <class Q>
class OmniQuantMethod final : public BlockMethod<Q> {
 public:
  OmniQuantMethod(const Q& q, const OmniQuantOptions& o) : q_(q), o_(o) { o_.validate(); }
  const MethodInfo& info() const override { return omniquant_info(); }

  void run(BlockJob& job, Chain chain) override {
    const std::string where = "block " + std::to_string(job.index);
    job.step("omniquant target");
    const MatrixRM& x_fp = job.input(Chain::full_precision);
    MatrixRM target;
    const std::vector<Eigen::VectorXf> act = group_input_absmax(job.cfg, job.block, x_fp, job.L, &target);
    std::optional<MatrixRM> target2;
    if (o_.aug_loss) {
      target2 = job.input(chain);
      block_forward(job.cfg, job.block, *target2, job.L);
    }
    if (!job.transformed) job.outputs[std::size_t(Chain::full_precision)] = target;  // the original block's
    const auto progress = [&](int e, double loss) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "omniquant epoch %d/%d loss %.3g", e + 1, o_.epochs, loss);
      job.step(buf);
    };
    job.step("omniquant epoch 1/" + std::to_string(o_.epochs));
    OmniQuantBlockResult res = omniquant_block(q_, job.cfg, job.block, job.input(chain), target, target2 ? &*target2 : nullptr,
                                               job.L, job.act, o_, init_, act, where, progress);
    for (std::size_t g = 0; g < 4; ++g)
      if (res.let_scales[g].size()) job.artifacts.smooth[input_groups()[g].key] = res.let_scales[g];
    if (o_.let) job.transformed = true;
    for (Role r : all_roles) {
      const std::size_t i = std::size_t(r);
      ClipRatios clip;
      if (o_.lwc) clip = ClipRatios{&res.clip_up[i], &res.clip_low[i]};
      job.quantized[i] = quantize_linear(q_, job.block.linear(r).W, job.where(r), clip);
    }
    job.artifacts.omniquant_loss = res.epoch_loss;
    job.artifacts.omniquant_stopped = res.stopped;
    job.artifacts.omniquant_seconds = res.seconds;
  }

 private:
  Q q_;
  OmniQuantOptions o_;
  OmniQuantInit init_;
};

}  // namespace lowbit
