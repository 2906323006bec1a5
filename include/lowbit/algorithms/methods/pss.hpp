// lowbit/algorithms/methods/pss.hpp -- PaddleSlim's PieceWiseSearch smooth over a block (transforms/piecewise.hpp
// has the search and the interpretation notes; paddleslim/quant/advanced/smooth.py drives it):
//   1. run the block on its calibration input (the full-precision chain, after any earlier transform such as the
//      shift) and keep each input group's per-channel max |x| over all windows (Smooth._sample_scale) and a
//      sample of its input: the first windows up to `tokens` rows (PaddleSlim samples the last batch);
//   2. for each norm -> linears group, and with `all_linears` also the linear -> linear groups that can absorb a
//      scale (v -> o without GQA, up -> down), search the scales against the group's stacked linears, quantized
//      with the chain's weight quantizer and the run's activation quantizer, and fold them into the previous op.
#pragma once

#include <string>
#include <vector>

#include "../../model/llama.hpp"
#include "../../transforms/piecewise.hpp"
#include "../method.hpp"

namespace lowbit {

struct PssMethodOptions {
  PssOptions search;
  bool all_linears = false;  // PaddleSlim smooth_all_linears
  int tokens = 512;          // rows of each group's input the candidates are scored on (whole windows, >= 1)
};

inline const MethodInfo& pss_info() {
  static const MethodInfo i{"pss", /*quantizes=*/false, /*calibrated=*/true, Chain::full_precision, Grid::minmax,
                            /*outputs_original=*/true};
  return i;
}

// Rows [0, n) of x with n = whole windows of L up to `tokens` (at least one window).
inline MatrixRM sample_windows(const MatrixRM& x, int L, int tokens) {
  const Eigen::Index w = std::max<Eigen::Index>(1, std::min<Eigen::Index>(x.rows() / L, tokens / std::max(1, L)));
  return x.topRows(std::min<Eigen::Index>(x.rows(), w * L));
}

// The rows of a group's linears stacked into one [sum out, in] matrix.
inline MatrixRM stacked_weights(const Block& b, const InputGroup& g) {
  Eigen::Index rows = 0;
  for (Role r : g.linears) rows += b.linear(r).W.rows();
  MatrixRM W(rows, b.linear(g.linears[0]).W.cols());
  Eigen::Index at = 0;
  for (Role r : g.linears) {
    const MatrixRM& w = b.linear(r).W;
    W.middleRows(at, w.rows()) = w;
    at += w.rows();
  }
  return W;
}

template <class Q>
class PssMethod final : public BlockMethod<Q> {
 public:
  PssMethod(const Q& q, const PssMethodOptions& o) : q_(q), o_(o) {
    o.search.validate();
    if (o.tokens < 1) fail("PSS: tokens ", o.tokens, " must be positive");
  }
  const MethodInfo& info() const override { return pss_info(); }
  void run(BlockJob& job, Chain chain) override {
    job.step("pss stats");
    const bool hand_over = chain == Chain::full_precision && !job.transformed;
    const std::size_t ng = input_groups().size();
    std::vector<Eigen::VectorXf> act(ng);
    std::vector<MatrixRM> sample(ng);
    {
      MatrixRM x = job.input(chain);
      block_forward_staged(job.cfg, job.block, x, job.L, nullptr, [&](int s, const MatrixRM& in) {
        accumulate_absmax(in, act[std::size_t(s)]);
        sample[std::size_t(s)] = sample_windows(in, job.L, o_.tokens);
      });
      if (hand_over) job.outputs[std::size_t(chain)] = std::move(x);
    }
    const ActQuant aq = search_act_quant(job.act.input);
    for (std::size_t gi = 0; gi < ng; ++gi) {
      const InputGroup& g = input_groups()[gi];
      if (!(g.prev.is_norm() || (o_.all_linears && group_applies(job.cfg, g)))) continue;
      job.step(std::string("pss ") + g.key);
      const MatrixRM W = stacked_weights(job.block, g);
      const PssResult r = pss_search(
          sample[gi], act[gi], W, [&](MatrixRM& w) { fake_quant(q_, w, w, {}, g.key); },
          [&](MatrixRM& x) { fake_quant_activation(aq, x, g.key); }, o_.search);
      fold_scales(job.block, g, r.scale);
      job.artifacts.smooth[g.key] = r.scale;
    }
    job.transformed = true;
  }

 private:
  Q q_;
  PssMethodOptions o_;
};

}  // namespace lowbit
