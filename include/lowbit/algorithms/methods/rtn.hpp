// lowbit/algorithms/methods/rtn.hpp -- round-to-nearest: every linear's min-max parameters (per group or per
// channel, on the quantizer's grid) and codes.  No calibration.  Also the quantizing step that finishes a chain
// of transforms ("awq" = AWQ's scales and clips, then RTN).
#pragma once

#include "../method.hpp"

namespace lowbit {

inline const MethodInfo& rtn_info() {
  static const MethodInfo i{"rtn", /*quantizes=*/true, /*calibrated=*/false, Chain::full_precision, Grid::minmax};
  return i;
}

template <class Q>
class RtnMethod final : public BlockMethod<Q> {
 public:
  explicit RtnMethod(const Q& q) : q_(q) {}
  const MethodInfo& info() const override { return rtn_info(); }
  void run(BlockJob& job, Chain) override {
    job.step("rtn");
    for (Role r : all_roles) job.quantized[std::size_t(r)] = quantize_linear(q_, job.block.linear(r).W, job.where(r));
  }

 private:
  Q q_;
};

}  // namespace lowbit
