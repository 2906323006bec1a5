// lowbit/algorithms/methods/omniquant.hpp -- OmniQuant over a block (algorithms/omniquant.hpp): the block's
// targets on the full-precision chain (and, with aug_loss, the full-precision block on the quantized chain's
// input), training on the quantized chain's input, then the learned LET folded into the block's float weights and
// every linear quantized with its learned clip ratios into the block's QuantizedLinear slots.
//
// Starting values (LLMC's AWQ -> OmniQuant combination, ALGORITHMS.md 6): with search_clip_init, AWQ's clip
// search (algorithms/awq.hpp, the run's AwqOptions) on the block's training input gives LWC's initial ratios;
// loaded AWQ clips (AwqLoaded, load_clip) give them instead, as ratios of the weights AWQ clipped (the block's
// weights with the loaded AWQ scales folded, when scales are loaded too); loaded AWQ scales
// (search_scale_init) are LET's initial scales and need let.
//
// Chains: reads the quantized chain (quant_inps) and the full-precision chain (fp_inps, the target), as the
// reference.  Run first, the step's target is the original block's output on the full-precision chain, handed
// to the loop as that chain's next input.
#pragma once

#include <string>

#include "../../model/llama.hpp"
#include "../method.hpp"
#include "../omniquant.hpp"
#include "awq.hpp"
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
  OmniQuantMethod(const Q& q, const OmniQuantOptions& o, const AwqOptions& awq = {}, const AwqLoaded& loaded = {})
      : q_(q), o_(o), awq_(awq), loaded_(loaded) {
    o_.validate();
    if (loaded_.scales && !o_.let) fail("OmniQuant: loaded AWQ scales initialise LET: they need let");
    if (loaded_.clips && !o_.lwc) fail("OmniQuant: loaded AWQ clips initialise LWC: they need lwc");
  }
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
    const OmniQuantInit init = initial_values(job, chain);
    job.step("omniquant epoch 1/" + std::to_string(o_.epochs));
    OmniQuantBlockResult res = omniquant_block(q_, job.cfg, job.block, job.input(chain), target, target2 ? &*target2 : nullptr,
                                               job.L, job.act, o_, init, act, where, progress);
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
  // LWC from AWQ's clips (searched or loaded), LET from loaded AWQ scales; the defaults otherwise.
  OmniQuantInit initial_values(BlockJob& job, Chain chain) const {
    OmniQuantInit init;
    const AwqPreset pre = loaded_.at(job.index);
    const std::vector<InputGroup>& groups = input_groups();
    std::array<const Eigen::VectorXf*, 4> scale{};  // loaded AWQ scale of each input group
    if (pre.scales)
      for (std::size_t g = 0; g < groups.size(); ++g) {
        if (!group_applies(job.cfg, groups[g])) continue;
        scale[g] = &loaded_awq_scale(*pre.scales, groups[g].key, job.block.linear(groups[g].linears[0]).W.cols());
        if (let_group(job.cfg, g)) init.let_scales[g] = *scale[g];
      }
    if (!pre.clips && !o_.search_clip_init) return init;
    std::vector<MatrixRM> in(groups.size());  // each linear's input on the training chain (search only)
    if (!pre.clips) {
      job.step("omniquant clip search");
      MatrixRM x = job.input(chain);
      block_forward_staged(job.cfg, job.block, x, job.L, nullptr, [&](int st, const MatrixRM& xs) { in[std::size_t(st)] = xs; });
    }
    // the weights AWQ clipped: its loaded scales folded as AWQ folds them (columns and the previous op's rows)
    std::optional<Block> clipped;
    if (pre.clips && pre.scales) {
      clipped = job.block;
      for (std::size_t g = 0; g < groups.size(); ++g)
        if (scale[g]) fold_scales(*clipped, groups[g], *scale[g]);
    }
    for (Role r : awq_clip_roles()) {
      const std::size_t i = std::size_t(r), g = std::size_t(describe(r).subset);
      const MatrixRM& W = (clipped ? *clipped : job.block).linear(r).W;
      const GroupLayout Lg = group_layout(q_, W.rows(), W.cols(), job.where(r));
      MatrixRM mx, mn;
      if (pre.clips) {
        loaded_awq_clip(*pre.clips, r, W.rows(), Lg.ngroups, mx, mn);
      } else {
        mx = awq_search_clip(q_, W, sample_tokens(in[g], awq_.clip_tokens), awq_, awq_.symmetric_clip ? nullptr : &mn);
      }
      MatrixRM up, low;
      lwc_ratios_from_clip(W, Lg, mx, mn.size() ? &mn : nullptr, up, low);
      init.clip_up[i] = std::move(up);
      init.clip_low[i] = std::move(low);
    }
    return init;
  }

  Q q_;
  OmniQuantOptions o_;
  AwqOptions awq_;
  AwqLoaded loaded_;
};

}  // namespace lowbit
