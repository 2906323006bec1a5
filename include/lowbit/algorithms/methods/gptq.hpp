// lowbit/algorithms/methods/gptq.hpp -- GPTQ over a block, true-sequential (gptq llama.py): the subsets
// {q,k,v}, {o}, {gate,up}, {down} (model/block.hpp) are quantized in the block's order of computation, each
// from the Hessian of its input with the earlier subsets already quantized.  The block runs forward once:
// block_forward_staged() stops before each subset, where its Hessian is collected (once for the linears that
// share it) and its linears are quantized; the forward then continues with them, so the block's output on the
// quantized chain -- the next block's input, the reference's default -- comes out of the same pass.
#pragma once

#include "../../model/llama.hpp"
#include "../method.hpp"

namespace lowbit {

inline const MethodInfo& gptq_info() {
  static const MethodInfo i{"gptq", /*quantizes=*/true, /*calibrated=*/true, Chain::quantized, Grid::gptq};
  return i;
}

template <class Q>
class GptqMethod final : public BlockMethod<Q> {
 public:
  GptqMethod(const Q& q, const GptqOptions& o) : q_(q), o_(o) {}
  const MethodInfo& info() const override { return gptq_info(); }

  void run(BlockJob& job, Chain chain) override {
    // The block whose linears are replaced by their quantized values as the forward goes: the job's own when
    // its float weights are not needed afterwards, else a copy.
    Block copy;
    if (job.keep_float_weights) copy = job.block;
    Block& cur = job.keep_float_weights ? copy : job.block;
    MatrixRM x = job.input(chain);
    const std::int64_t samples = x.rows() / job.L;
    block_forward_staged(job.cfg, cur, x, job.L, nullptr, [&](int subset, const MatrixRM& in) {
      const InputGroup& g = input_groups()[std::size_t(subset)];
      job.step(std::string("gptq ") + to_string(g.linears[0]));
      HessianAccumulator acc(in.cols());
      acc.add_batch(in, samples);
      const Eigen::MatrixXd H = std::move(acc).hessian();
      for (Role r : g.linears) {
        GptqResult res = gptq_quantize(q_, cur.linear(r).W, H, o_, job.where(r));
        QuantizedLinear ql;
        ql.bits = Q::bits;
        ql.symmetric = Q::symmetric;
        ql.grid = q_.grid;
        ql.codes = std::move(res.codes);
        ql.params = res.params;
        ql.g_idx = res.g_idx;
        ql.perm = res.perm;
        job.quantized[std::size_t(r)] = std::move(ql);
        cur.linear(r).W = std::move(res.Q);
        job.artifacts.damp_retries += res.damp_retries;
        job.artifacts.gptq.push_back(std::move(res));
      }
    });
    if (chain == Chain::quantized) job.outputs[std::size_t(Chain::quantized)] = std::move(x);
  }

 private:
  Q q_;
  GptqOptions o_;
};

}  // namespace lowbit
