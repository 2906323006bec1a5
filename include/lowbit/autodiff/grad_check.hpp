// lowbit/autodiff/grad_check.hpp -- the independent check of every backward step: central finite differences
// in double precision,
//
//   d f / d x_i  ~  (f(x + h e_i) - f(x - h e_i)) / 2h,        h = 1e-6 by default (relative to max(1, |x_i|)),
//
// compared with what the tape's backward computes.  Straight-through ops (rounding, clamps, arg-max) are checked
// on the forward linearised at x: the analytic pass records their discrete choices (StraightThrough record) and
// every perturbed forward replays them (autodiff/tape.hpp), so the differences see exactly the function whose
// gradient the estimator defines.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "tape.hpp"

namespace lowbit::ad {

struct GradCheckResult {
  double max_abs_error = 0;   // max_i |analytic_i - numeric_i|
  double max_abs_grad = 0;    // max_i |numeric_i|
  double relative() const { return max_abs_error / std::max(max_abs_grad, 1e-12); }
  int checked = 0;
};

using GradFn = std::function<Var<double>(Tape<double>&, const std::vector<Var<double>>&)>;

// f builds a scalar from Vars holding `inputs` (all treated as parameters).  At most `max_per_input` entries of
// each input are perturbed (spread evenly), to bound the cost on large inputs.
inline GradCheckResult grad_check(std::vector<Mat<double>> inputs, const GradFn& f, double h = 1e-6,
                                  Eigen::Index max_per_input = 400) {
  Tape<double> tape;
  std::vector<Mat<double>> grads;
  for (const Mat<double>& x : inputs) grads.push_back(Mat<double>::Zero(x.rows(), x.cols()));
  const auto vars = [&](bool grad) {
    std::vector<Var<double>> v;
    for (std::size_t i = 0; i < inputs.size(); ++i)
      v.push_back(grad ? tape.parameter(inputs[i].data(), grads[i].data(), inputs[i].rows(), inputs[i].cols())
                       : tape.view(inputs[i].data(), inputs[i].rows(), inputs[i].cols()));
    return v;
  };
  const auto m0 = tape.mark();
  tape.straight_through().start(StraightThrough<double>::Mode::record);
  tape.backward(f(tape, vars(true)));
  tape.rewind(m0);
  const auto eval = [&] {
    NoGrad<double> ng(tape);
    tape.straight_through().start(StraightThrough<double>::Mode::replay);
    const double y = f(tape, vars(false)).scalar();
    tape.rewind(m0);
    return y;
  };
  GradCheckResult res;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Eigen::Index n = inputs[i].size(), stride = std::max<Eigen::Index>(1, n / max_per_input);
    for (Eigen::Index j = 0; j < n; j += stride) {
      double& x = inputs[i].data()[j];
      const double x0 = x, step = h * std::max(1.0, std::abs(x0));
      x = x0 + step;
      const double fp = eval();
      x = x0 - step;
      const double fm = eval();
      x = x0;
      const double num = (fp - fm) / (2 * step), ana = grads[i].data()[j];
      res.max_abs_error = std::max(res.max_abs_error, std::abs(num - ana));
      res.max_abs_grad = std::max(res.max_abs_grad, std::abs(num));
      ++res.checked;
    }
  }
  tape.straight_through().start(StraightThrough<double>::Mode::off);
  return res;
}

}  // namespace lowbit::ad
