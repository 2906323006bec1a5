// lowbit/algorithms/methods/shift.hpp -- the activation shift of Outlier Suppression+ / PaddleSlim `shift`
// over a block (transforms/shift.hpp has the math and the interpretation notes):
//   1. run the block on its calibration input (the full-precision chain, as the references observe the float
//      model) and observe each input group's per-channel range, one step per calibration window;
//   2. for each norm -> linears group, and with `all_linears` also o (after v) and down (after up) -- PaddleSlim's
//      shift_all_linears, which it implements with a ShiftSmoothHelpLayer in front of those linears -- fold the
//      shift z into the group (fold_shift: the linears read x - z, their biases gain W z).
// LLaMA's RMSNorm has no bias, so the shift of a norm group is carried as a bias -z on the norm's output (what
// PaddleSlim's WOBiasHelpLayer adds; LLMC's osplus.py skips the shift on models without norm biases).  A shifted
// block therefore has biases a Hugging Face LLaMA cannot hold: the HF writer refuses it; evaluation in memory and
// later steps (smoothquant, pss, gptq) see it.  Smoothing after shifting divides the shift too (fold_scales).
#pragma once

#include <string>
#include <vector>

#include "../../model/llama.hpp"
#include "../../transforms/shift.hpp"
#include "../method.hpp"

namespace lowbit {

struct ShiftOptions {
  ShiftSampler sampler = ShiftSampler::minmax;
  bool all_linears = false;  // PaddleSlim shift_all_linears
};

inline const MethodInfo& shift_info() {
  static const MethodInfo i{"shift", /*quantizes=*/false, /*calibrated=*/true, Chain::full_precision, Grid::minmax,
                            /*outputs_original=*/true};
  return i;
}

// Per-group shifts of a block on X (one observer step per window of L rows), and the block's output on X.
inline std::vector<Eigen::VectorXf> group_shifts(const LlamaConfig& cfg, const Block& b, const MatrixRM& X, int L,
                                                 ShiftSampler sampler, MatrixRM* output) {
  std::vector<ShiftObserver> obs(input_groups().size(), ShiftObserver(sampler));
  MatrixRM x = X;
  block_forward_staged(cfg, b, x, L, nullptr, [&](int s, const MatrixRM& in) {
    for (Eigen::Index w = 0; w + L <= in.rows(); w += L) obs[std::size_t(s)].observe(in.middleRows(w, L));
  });
  if (output) *output = std::move(x);
  std::vector<Eigen::VectorXf> z;
  for (const ShiftObserver& o : obs) z.push_back(o.shift());
  return z;
}

template <class Q>
class ShiftMethod final : public BlockMethod<Q> {
 public:
  ShiftMethod(const Q&, const ShiftOptions& o) : o_(o) {}
  const MethodInfo& info() const override { return shift_info(); }
  void run(BlockJob& job, Chain chain) override {
    job.step("shift stats");
    const bool hand_over = chain == Chain::full_precision && !job.transformed;
    MatrixRM out;
    const std::vector<Eigen::VectorXf> z = group_shifts(job.cfg, job.block, job.input(chain), job.L, o_.sampler, hand_over ? &out : nullptr);
    if (hand_over) job.outputs[std::size_t(chain)] = std::move(out);
    for (std::size_t gi = 0; gi < input_groups().size(); ++gi) {
      const InputGroup& g = input_groups()[gi];
      if (!g.prev.is_norm() && !o_.all_linears) continue;
      if (!z[gi].allFinite()) fail("shift of ", g.key, " is not finite");
      fold_shift(job.block, g, z[gi]);
      job.artifacts.shift[g.key] = z[gi];
    }
    job.transformed = true;
  }

 private:
  ShiftOptions o_;
};

}  // namespace lowbit
