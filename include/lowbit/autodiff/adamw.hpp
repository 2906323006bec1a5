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
//
// For training a model: clip_grad_norm (torch.nn.utils.clip_grad_norm_: the global 2-norm over every gradient,
// summed in double in parameter order; when it exceeds max every gradient is scaled by max / (norm + 1e-6)) and
// cosine_lr (linear warm-up to lr_max, then half a cosine down to lr_min at the last step, as llama2.c's
// train.py get_lr).
#pragma once

#include <algorithm>
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

// Returns the norm before clipping.
template <class T>
double clip_grad_norm(AdamW<T>& opt, double max_norm) {
  double ss = 0;
  for (std::size_t i = 0; i < opt.size(); ++i) ss += opt[int(i)].grad.template cast<double>().squaredNorm();
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const T k = T(max_norm / (norm + 1e-6));
    for (std::size_t i = 0; i < opt.size(); ++i) opt[int(i)].grad *= k;
  }
  return norm;
}

// The learning rate of step `step` (0-based) of `total`.
inline double cosine_lr(long step, long total, long warmup, double lr_max, double lr_min) {
  if (step < warmup) return lr_max * double(step + 1) / double(warmup);
  if (step >= total) return lr_min;
  const double r = double(step - warmup) / double(std::max(1L, total - warmup));
  return lr_min + 0.5 * (1.0 + std::cos(3.14159265358979323846 * r)) * (lr_max - lr_min);
}

}  // namespace lowbit::ad
