// lowbit/autodiff/adamw.hpp -- parameters owned by their optimiser, and AdamW exactly as torch.optim.AdamW
// (the OmniQuant reference's optimiser; torch/optim/adamw.py, single-tensor path, amsgrad off):
//
//   p   <- p (1 - lr wd)                                 decoupled weight decay
//   m   <- m + (1 - b1) (g - m)                          exp_avg.lerp_(grad, 1 - beta1)
//   v   <- b2 v + (1 - b2) g^2
//   p   <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// defaults b1 = 0.9, b2 = 0.999, eps = 1e-8.  Each parameter has its own learning rate and weight decay
// (torch's parameter groups: OmniQuant's LET at 5e-3 and LWC at 1e-2).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "tape.hpp"

namespace lowbit::ad {

template <class T>
struct Parameter {
  std::string name;
  Mat<T> value, grad, m, v;
  double lr = 1e-3, weight_decay = 0;
};

template <class T>
class AdamW {
 public:
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;

  // Adds a parameter with its initial value; returns its index.
  int add(std::string name, const Mat<T>& init, double lr, double weight_decay = 0) {
    Parameter<T> p;
    p.name = std::move(name);
    p.value = init;
    p.grad = Mat<T>::Zero(init.rows(), init.cols());
    p.m = p.grad, p.v = p.grad;
    p.lr = lr, p.weight_decay = weight_decay;
    params_.push_back(std::move(p));
    return int(params_.size()) - 1;
  }
  Parameter<T>& operator[](int i) { return params_[std::size_t(i)]; }
  const Parameter<T>& operator[](int i) const { return params_[std::size_t(i)]; }
  std::size_t size() const { return params_.size(); }
  // The parameter on the tape (its gradient accumulates into the optimiser's storage).
  Var<T> var(Tape<T>& tape, int i) {
    Parameter<T>& p = params_[std::size_t(i)];
    return tape.parameter(p.value.data(), p.grad.data(), p.value.rows(), p.value.cols());
  }
  void zero_grad() {
    for (Parameter<T>& p : params_) p.grad.setZero();
  }
  // Whether every gradient is finite (a step on a non-finite gradient would corrupt the parameters).
  bool grads_finite() const {
    for (const Parameter<T>& p : params_)
      if (!p.grad.allFinite()) return false;
    return true;
  }
  void step() {
    ++t_;
    const double bc1 = 1.0 - std::pow(beta1, double(t_)), bc2 = std::sqrt(1.0 - std::pow(beta2, double(t_)));
    for (Parameter<T>& p : params_) {
      const T lr = T(p.lr), step_size = T(p.lr / bc1);
      if (p.weight_decay != 0) p.value *= T(1) - lr * T(p.weight_decay);
      auto g = p.grad.array();
      p.m.array() += (T(1) - T(beta1)) * (g - p.m.array());
      p.v.array() = p.v.array() * T(beta2) + (T(1) - T(beta2)) * g * g;
      p.value.array() -= step_size * p.m.array() / (p.v.array().sqrt() / T(bc2) + T(eps));
    }
  }
  long steps() const { return t_; }

 private:
  std::vector<Parameter<T>> params_;
  long t_ = 0;
};

}  // namespace lowbit::ad
