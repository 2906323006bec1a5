// lowbit/transforms/shift.hpp -- per-channel shifts that centre asymmetric activation channels before they are
// quantized (Outlier Suppression+, arXiv 2304.09145; PaddleSlim paddleslim/quant/advanced/shift.py;
// ALGORITHMS.md 4.2-4.3):
//
//   x' = x - z,   y = W x' + (b + W z) = W x + b        the function is unchanged; W z goes into the bias
//
// z per input channel, from calibration steps (one step per calibration window):
//   ShiftSampler::minmax   z_j = (min_t x_tj + max_t x_tj) / 2 over all steps (OS+, LLMC osplus.py)
//   ShiftSampler::ema      z = EMA over steps of the per-channel mean, beta 0.98, divided by 1 - beta^n after n
//                          steps (PaddleSlim's EMASampler, PaddleNLP's default `shift_sampler ema`)
// Interpretation notes: PaddleSlim without a sampler averages each new step's midpoint with the running value
// ((z + m_t) / 2, which weighs the last steps most); lowbit's minmax takes the midpoint of the whole range, as OS+
// defines it.  PaddleSlim's EMASampler divides by 1 - beta^(n-1) after n steps (and returns (1-beta) m_1
// uncorrected after the first); lowbit uses the standard correction 1 - beta^n.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <string_view>

#include "../core/error.hpp"
#include "../core/matrix.hpp"

namespace lowbit {

enum class ShiftSampler { minmax, ema };
inline const char* to_string(ShiftSampler s) { return s == ShiftSampler::minmax ? "minmax" : "ema"; }
inline ShiftSampler parse_shift_sampler(std::string_view s) {
  if (s == "minmax" || s == "none") return ShiftSampler::minmax;
  if (s == "ema") return ShiftSampler::ema;
  fail("unknown shift sampler '", std::string(s), "' (minmax or ema)");
}

class ShiftObserver {
 public:
  explicit ShiftObserver(ShiftSampler s = ShiftSampler::minmax) : s_(s) {}
  // One calibration step: x [tokens, channels].
  void observe(ConstMatrixRef x) {
    if (x.rows() == 0) return;
    if (steps_ == 0) {
      lo_ = x.colwise().minCoeff().transpose().cast<double>();
      hi_ = x.colwise().maxCoeff().transpose().cast<double>();
      ema_ = Eigen::VectorXd::Zero(x.cols());
    } else {
      if (x.cols() != lo_.size()) fail("shift observer: ", x.cols(), " channels, earlier steps had ", lo_.size());
      lo_ = lo_.cwiseMin(x.colwise().minCoeff().transpose().cast<double>());
      hi_ = hi_.cwiseMax(x.colwise().maxCoeff().transpose().cast<double>());
    }
    const Eigen::VectorXd mean = x.cast<double>().colwise().mean().transpose();
    ema_ = kBeta * ema_ + (1.0 - kBeta) * mean;
    ++steps_;
  }
  Eigen::VectorXf shift() const {
    if (steps_ == 0) fail("shift observer: no calibration data was observed");
    if (s_ == ShiftSampler::minmax) return ((lo_ + hi_) * 0.5).cast<float>();
    return (ema_ / (1.0 - std::pow(kBeta, double(steps_)))).cast<float>();
  }

 private:
  static constexpr double kBeta = 0.98;
  ShiftSampler s_;
  int steps_ = 0;
  Eigen::VectorXd lo_, hi_, ema_;
};

}  // namespace lowbit
