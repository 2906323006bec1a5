// lowbit/model/ops.hpp -- the pure math of a decoder block, as functions on Eigen views that block_forward
// (model/llama.hpp) composes; the autodiff puts a backward twin beside each.
//
//   rmsnorm(x, w)       = w * x / sqrt(mean(x^2) + eps)                               per row
//   linear(x, W, b)     = x W^T + b                                                   x [T, in], W [out, in]
//   rope(x)             rotates each head's channel pairs by pos * theta^(-2i/hd), pos = row % L
//   causal_attention    softmax(q k^T / sqrt(hd), causal) v per (sequence, head), GQA: head h reads kv head
//                       h / (H / KV)
//   swiglu(g, u)        = silu(g) * u = g / (1 + exp(-g)) * u
//
// A batch of n sequences of length L is one [n*L, features] row-major matrix.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/gemm.hpp"
#include "../core/matrix.hpp"
#include "../core/parallel.hpp"
#include "block.hpp"

namespace lowbit {

inline void rmsnorm(ConstMatrixRef x, const Eigen::VectorXf& w, float eps, MatrixRM& out) {
  out.resize(x.rows(), x.cols());
  const Eigen::Index n = x.cols();
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const float ss = x.row(r).squaredNorm() / float(n) + eps;
    const float inv = 1.0f / std::sqrt(ss);
    out.row(r) = (x.row(r).array() * inv * w.transpose().array()).matrix();
  }
}

inline void linear(ConstMatrixRef in, const Linear& lin, MatrixRM& out) {
  matmul_nt(in, lin.W, out);  // [T, in] x [in, out], the same bits for any thread count
  if (lin.b.size()) out.rowwise() += lin.b.transpose();
}

// Rotates each head's channel pairs of x (rows of `stride` values) by sign * pos * theta^(-2i/hd), pos = row % L:
// sign 1 is RoPE, sign -1 its inverse (the adjoint the tape's rope uses).  T = float is the model's arithmetic;
// double serves the autodiff's checks.
template <class T>
void rotate_pairs(T* x, Eigen::Index rows, Eigen::Index stride, int n_heads, int hd, int L, float theta, RopeStyle style,
                  int sign) {
  const int half = hd / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) inv_freq[std::size_t(i)] = 1.0f / std::pow(theta, float(2 * i) / float(hd));
  parallel_for(rows, [&](std::int64_t t) {
    const float pos = float(t % L);
    T* row = x + t * stride;
    for (int i = 0; i < half; ++i) {
      const float a = pos * inv_freq[std::size_t(i)];
      const T c = T(std::cos(a)), s = T(sign) * T(std::sin(a));
      const int i0 = style == RopeStyle::interleaved ? 2 * i : i;
      const int i1 = rope_partner(style, hd, i0);
      for (int h = 0; h < n_heads; ++h) {
        T* p = row + h * hd;
        const T v0 = p[i0], v1 = p[i1];
        p[i0] = v0 * c - v1 * s;
        p[i1] = v0 * s + v1 * c;
      }
    }
  }, std::int64_t(half) * n_heads * 6);
}

// Rotates the heads of x ([T, n_heads*hd]) in place; row t sits at position t % L of its sequence.
inline void rope(MatrixRef x, int n_heads, int hd, int L, float theta, RopeStyle style) {
  rotate_pairs(x.data(), x.rows(), x.outerStride(), n_heads, hd, L, theta, style, 1);
}

// Causal softmax attention of q [T, H*hd] over k, v [T, KV*hd] (already rotated); att [T, H*hd].
inline void causal_attention(ConstMatrixRef q, ConstMatrixRef k, ConstMatrixRef v, int H, int KV, int hd, int L,
                             MatrixRM& att) {
  const Eigen::Index T = q.rows(), n = T / L;
  const int group = H / KV;
  att.resize(T, Eigen::Index(H) * hd);
  const float inv_sqrt = 1.0f / std::sqrt(float(hd));
  // per (sequence, head), in blocks of query rows so only keys 0..i1 are touched
  constexpr Eigen::Index kRows = 64;
  parallel_for(n * H, [&](std::int64_t job) {
    const Eigen::Index s = job / H, h = job % H, kvh = h / group;
    MatrixRM S;
    for (Eigen::Index i0 = 0; i0 < L; i0 += kRows) {
      const Eigen::Index rows = std::min<Eigen::Index>(kRows, L - i0), keys = i0 + rows;
      const auto Q = q.block(s * L + i0, h * hd, rows, hd);
      const auto K = k.block(s * L, kvh * hd, keys, hd);
      const auto V = v.block(s * L, kvh * hd, keys, hd);
      S.noalias() = Q * K.transpose();  // [rows, keys]
      for (Eigen::Index r = 0; r < rows; ++r) {  // softmax over keys 0..i0+r (Eigen's vectorised exp)
        auto a = S.row(r).head(i0 + r + 1).array();
        a *= inv_sqrt;
        a = (a - a.maxCoeff()).exp();
        a *= 1.0f / a.sum();
        S.row(r).tail(keys - i0 - r - 1).setZero();
      }
      att.block(s * L + i0, h * hd, rows, hd).noalias() = S * V;
    }
  }, std::int64_t(L) * L * hd);
}

// out = silu(g) * u (out may alias g).  Evaluated over the contiguous storage as one array, so Eigen's
// vectorised exp covers every element (a per-row evaluation would leave each row's tail to the scalar exp, whose
// last bits differ).
inline void swiglu(ConstMatrixRef g, ConstMatrixRef u, MatrixRM& out) {
  if (g.outerStride() != g.cols() || u.outerStride() != u.cols()) {
    swiglu(MatrixRM(g), MatrixRM(u), out);
    return;
  }
  out.resize(g.rows(), g.cols());
  const Eigen::Map<const Eigen::ArrayXf> ga(g.data(), g.size()), ua(u.data(), u.size());
  Eigen::Map<Eigen::ArrayXf>(out.data(), out.size()) = ga / (1.0f + (-ga).exp()) * ua;
}

}  // namespace lowbit
