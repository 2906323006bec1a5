// lowbit/autodiff/nn.hpp -- the decoder's ops on the tape, each the backward twin of the pure forward op in
// model/ops.hpp (same formulas and evaluation order, so T = float reproduces the model's forward).
//
//   op                       forward                                   backward (d = adjoint of y)
//   linear(x, W, b)          y = x W^T + b                             dx = d W, dW = d^T x, db = sum_rows d
//   rmsnorm(x, w)            y = x r w, r = 1/sqrt(mean(x^2) + eps)    g = d w: dx = r g - x r^3 (g . x) / n,
//                                                                      dw = sum_rows d x r
//   rope(x)                  each head's channel pairs rotated by      the inverse rotation of d
//                            pos * theta^(-2i/hd)
//   causal_attention(q,k,v)  softmax(q k^T / sqrt(hd), causal) v       P kept, or recomputed from the saved row
//                            per (sequence, head), GQA                 max and 1/sum: dV = P^T d, dP = d V^T,
//                                                                      dS = P (dP - rowsum(d o)), dQ = dS K / sqrt(hd),
//                                                                      dK = dS^T Q / sqrt(hd)
//   silu(a), swiglu(g, u)    a s(a);  silu(g) u                        s (1 + a (1 - s));  d u s (1 + g (1 - s)), d silu(g)
//   embedding(E, tokens)     rows of E                                 rows of d added to dE in token order
//   cross_entropy(z, t)      mean_t (logsumexp z_t - z_t[t_t])         (softmax(z_t) - onehot(t_t)) / T
//
// Heads stay in place: q is [T, H*hd] with head h in columns [h*hd, (h+1)*hd), as in model/ops.hpp, so no
// reshape is needed between the projections and the attention.  The attention stores the softmax's row max and
// 1/sum per (token, head); it keeps P itself only while the batch's P is small (kAttentionKeepP values), else the
// backward recomputes it.  The backward runs per (sequence, kv head) so that the query heads sharing a K/V head
// add their gradients in a fixed order.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../model/block.hpp"
#include "../model/ops.hpp"
#include "ops.hpp"

namespace lowbit::ad {

// y = x W^T (+ b): x [T, in], W [out, in], b [1, out] or empty (b.v null).
template <class T>
Var<T> linear(Tape<T>& tape, Var<T> x, Var<T> W, Var<T> b = {}) {
  Var<T> y = matmul(tape, x, W, Trans::no, Trans::yes);
  return b.v ? add_channels(tape, y, b) : y;
}

template <class T>
Var<T> rmsnorm(Tape<T>& tape, Var<T> x, Var<T> w, T eps) {
  if (w.rows != 1 || w.cols != x.cols) fail("rmsnorm: weight ", w.rows, "x", w.cols, " for ", x.cols, " features");
  Var<T> y = tape.make(x.rows, x.cols, any_grad(tape, x, w));
  T* r = tape.arena().template alloc_array<T>(x.rows);
  const Eigen::Index n = x.cols;
  parallel_for(x.rows, [&](std::int64_t t) {
    const T ss = x.val().row(t).squaredNorm() / T(n) + eps;
    r[t] = T(1) / std::sqrt(ss);
    y.val().row(t) = (x.val().row(t).array() * r[t] * w.val().row(0).array()).matrix();
  }, n * 4);
  if (y.requires_grad())
    tape.record([x, w, y, r, n] {
      if (x.requires_grad())
        parallel_for(x.rows, [&](std::int64_t t) {
          const auto g = y.grad().row(t).array() * w.val().row(0).array();
          const T dot = (g * x.val().row(t).array()).sum();
          x.grad().row(t).array() += r[t] * g - x.val().row(t).array() * (r[t] * r[t] * r[t] * dot / T(n));
        }, n * 6);
      if (w.requires_grad())
        for (Eigen::Index t = 0; t < x.rows; ++t)
          w.grad().row(0).array() += y.grad().row(t).array() * x.val().row(t).array() * r[t];
    });
  return y;
}

// RoPE on x [T, n_heads*hd], row t at position t % L.
template <class T>
Var<T> rope(Tape<T>& tape, Var<T> x, int n_heads, int hd, int L, float theta, RopeStyle style) {
  if (x.cols != Eigen::Index(n_heads) * hd || hd % 2) fail("rope: ", x.cols, " columns for ", n_heads, " heads of ", hd);
  Var<T> y = tape.make(x.rows, x.cols, any_grad(tape, x));
  y.aval() = x.aval();
  rotate_pairs(y.v, y.rows, y.cols, n_heads, hd, L, theta, style, 1);
  if (y.requires_grad())
    tape.record([x, y, n_heads, hd, L, theta, style] {
      // the rotation is orthogonal: its adjoint is the inverse rotation
      T* tmp = y.g;  // rotate d in place (nothing reads y's adjoint after this step), then add it to x's
      rotate_pairs(tmp, y.rows, y.cols, n_heads, hd, L, theta, style, -1);
      x.agrad() += y.agrad();
    });
  return y;
}

// The most values of P (n sequences x H heads x L x L) the attention keeps for its backward (64 MB of floats).
constexpr Eigen::Index kAttentionKeepP = Eigen::Index(1) << 24;

// Causal softmax attention, q [T, H*hd], k and v [T, KV*hd] (rotated), T = n sequences of L; y [T, H*hd].  P is
// kept for the backward when it has at most keep_p values (an [L, L] block per sequence and head), else the
// backward recomputes it from the saved row max and 1/sum: the same bits either way (the same serial GEMM on the
// same blocks and the same float operations), without a second Q K^T and exp when kept.
template <class T>
Var<T> causal_attention(Tape<T>& tape, Var<T> q, Var<T> k, Var<T> v, int H, int KV, int hd, int L,
                        Eigen::Index keep_p = kAttentionKeepP) {
  const Eigen::Index Tn = q.rows, n = Tn / L;
  if (L <= 0 || Tn % L || q.cols != Eigen::Index(H) * hd || k.cols != Eigen::Index(KV) * hd || v.cols != k.cols ||
      k.rows != Tn || v.rows != Tn || H % KV)
    fail("causal_attention: q ", q.rows, "x", q.cols, ", k ", k.rows, "x", k.cols, ", v ", v.rows, "x", v.cols,
         " for ", H, " heads, ", KV, " kv heads of ", hd, ", sequences of ", L);
  const int group = H / KV;
  Var<T> y = tape.make(Tn, q.cols, any_grad(tape, q, k, v));
  T* rmax = tape.arena().template alloc_array<T>(Tn * H);  // per (token, head): the row's max and 1/sum
  T* rinv = tape.arena().template alloc_array<T>(Tn * H);
  const T inv_sqrt = T(1) / std::sqrt(T(hd));
  static constexpr Eigen::Index kRows = 64;
  T* keptP = y.requires_grad() && n * H * L * L <= keep_p ? tape.arena().template alloc_array<T>(n * H * L * L) : nullptr;
  parallel_for(n * H, [&](std::int64_t job) {
    const Eigen::Index s = job / H, h = job % H, kvh = h / group;
    Mat<T> S;
    for (Eigen::Index i0 = 0; i0 < L; i0 += kRows) {
      const Eigen::Index rows = std::min<Eigen::Index>(kRows, L - i0), keys = i0 + rows;
      const auto Q = q.val().block(s * L + i0, h * hd, rows, hd);
      const auto K = k.val().block(s * L, kvh * hd, keys, hd);
      const auto Vb = v.val().block(s * L, kvh * hd, keys, hd);
      S.noalias() = Q * K.transpose();
      for (Eigen::Index r = 0; r < rows; ++r) {
        auto a = S.row(r).head(i0 + r + 1).array();
        a *= inv_sqrt;
        const T mx = a.maxCoeff();
        a = (a - mx).exp();
        const T inv = T(1) / a.sum();
        a *= inv;
        S.row(r).tail(keys - i0 - r - 1).setZero();
        rmax[(s * L + i0 + r) * H + h] = mx;
        rinv[(s * L + i0 + r) * H + h] = inv;
      }
      y.val().block(s * L + i0, h * hd, rows, hd).noalias() = S * Vb;
      if (keptP) Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>(keptP + job * L * L + i0 * L, rows, keys, Eigen::OuterStride<>(L)) = S;
    }
  }, std::int64_t(L) * L * hd);
  if (y.requires_grad())
    tape.record([q, k, v, y, H, KV, hd, L, rmax, rinv, inv_sqrt, n, group, keptP] {
      parallel_for(n * KV, [&](std::int64_t job) {
        const Eigen::Index s = job / KV, kvh = job % KV;
        Mat<T> P, dP;
        for (int hh = 0; hh < group; ++hh) {
          const Eigen::Index h = kvh * group + hh;
          for (Eigen::Index i0 = 0; i0 < L; i0 += kRows) {
            const Eigen::Index rows = std::min<Eigen::Index>(kRows, L - i0), keys = i0 + rows;
            const auto Q = q.val().block(s * L + i0, h * hd, rows, hd);
            const auto K = k.val().block(s * L, kvh * hd, keys, hd);
            const auto Vb = v.val().block(s * L, kvh * hd, keys, hd);
            const auto dO = y.grad().block(s * L + i0, h * hd, rows, hd);
            const auto O = y.val().block(s * L + i0, h * hd, rows, hd);
            if (keptP) {
              P = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>(keptP + (s * H + h) * L * L + i0 * L, rows, keys,
                                                                  Eigen::OuterStride<>(L));
            } else {
              P.noalias() = Q * K.transpose();
              for (Eigen::Index r = 0; r < rows; ++r) {
                const Eigen::Index t = s * L + i0 + r;
                auto a = P.row(r).head(i0 + r + 1).array();
                a = ((a * inv_sqrt) - rmax[t * H + h]).exp() * rinv[t * H + h];
                P.row(r).tail(keys - i0 - r - 1).setZero();
              }
            }
            if (v.requires_grad()) v.grad().block(s * L, kvh * hd, keys, hd).noalias() += P.transpose() * dO;
            if (!q.requires_grad() && !k.requires_grad()) continue;
            dP.noalias() = dO * Vb.transpose();  // [rows, keys]
            for (Eigen::Index r = 0; r < rows; ++r) {
              const T Di = dO.row(r).dot(O.row(r));
              dP.row(r).array() = P.row(r).array() * (dP.row(r).array() - Di) * inv_sqrt;  // dS / sqrt(hd)
            }
            if (q.requires_grad()) q.grad().block(s * L + i0, h * hd, rows, hd).noalias() += dP * K;
            if (k.requires_grad()) k.grad().block(s * L, kvh * hd, keys, hd).noalias() += dP.transpose() * Q;
          }
        }
      }, std::int64_t(L) * L * hd * group * 3);
    });
  return y;
}

template <class T>
Var<T> silu(Tape<T>& tape, Var<T> a) {
  Var<T> y = tape.make(a.rows, a.cols, any_grad(tape, a));
  y.aval() = a.aval() / (T(1) + (-a.aval()).exp());
  if (y.requires_grad())
    tape.record([a, y] {
      const auto s = T(1) / (T(1) + (-a.aval()).exp());
      a.agrad() += y.agrad() * s * (T(1) + a.aval() * (T(1) - s));
    });
  return y;
}

// silu(g) * u, one array expression over the storage (model/ops.hpp's swiglu).
template <class T>
Var<T> swiglu(Tape<T>& tape, Var<T> g, Var<T> u) {
  detail::check_same("swiglu", g.rows, g.cols, u.rows, u.cols);
  Var<T> y = tape.make(g.rows, g.cols, any_grad(tape, g, u));
  y.aval() = g.aval() / (T(1) + (-g.aval()).exp()) * u.aval();
  if (y.requires_grad())
    tape.record([g, u, y] {
      const auto s = T(1) / (T(1) + (-g.aval()).exp());
      if (g.requires_grad()) g.agrad() += y.agrad() * u.aval() * s * (T(1) + g.aval() * (T(1) - s));
      if (u.requires_grad()) u.agrad() += y.agrad() * g.aval() * s;
    });
  return y;
}

// Rows of the table E [V, dim] for each token.
template <class T>
Var<T> embedding(Tape<T>& tape, Var<T> E, const std::vector<int>& tokens) {
  const Eigen::Index n = Eigen::Index(tokens.size());
  int* ids = tape.arena().template alloc_array<int>(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    if (tokens[std::size_t(i)] < 0 || tokens[std::size_t(i)] >= E.rows)
      fail("embedding: token ", tokens[std::size_t(i)], " at position ", i, " is outside the table of ", E.rows);
    ids[i] = tokens[std::size_t(i)];
  }
  Var<T> y = tape.make(n, E.cols, any_grad(tape, E));
  for (Eigen::Index i = 0; i < n; ++i) y.val().row(i) = E.val().row(ids[i]);
  if (y.requires_grad())
    tape.record([E, y, ids, n] {
      for (Eigen::Index i = 0; i < n; ++i) E.grad().row(ids[i]) += y.grad().row(i);
    });
  return y;
}

// Mean over rows of -log softmax(z_t)[target_t]: a [1, 1] result.
template <class T>
Var<T> cross_entropy(Tape<T>& tape, Var<T> z, const std::vector<int>& targets) {
  if (Eigen::Index(targets.size()) != z.rows) fail("cross_entropy: ", targets.size(), " targets for ", z.rows, " rows");
  int* tg = tape.arena().template alloc_array<int>(z.rows);
  T* lse = tape.arena().template alloc_array<T>(z.rows);
  for (Eigen::Index i = 0; i < z.rows; ++i) {
    if (targets[std::size_t(i)] < 0 || targets[std::size_t(i)] >= z.cols)
      fail("cross_entropy: target ", targets[std::size_t(i)], " at row ", i, " is outside ", z.cols, " classes");
    tg[i] = targets[std::size_t(i)];
  }
  Var<T> y = tape.make(1, 1, any_grad(tape, z));
  double total = 0;
  for (Eigen::Index i = 0; i < z.rows; ++i) {
    const auto row = z.val().row(i).array();
    const T mx = row.maxCoeff();
    lse[i] = mx + std::log((row - mx).exp().sum());
    total += double(lse[i] - row[tg[i]]);
  }
  y.v[0] = T(total / double(z.rows));
  if (y.requires_grad())
    tape.record([z, y, tg, lse] {
      const T k = y.g[0] / T(z.rows);
      parallel_for(z.rows, [&](std::int64_t i) {
        auto g = z.grad().row(i).array();
        g += k * (z.val().row(i).array() - lse[i]).exp();
        g[tg[i]] -= k;
      }, z.cols * 4);
    });
  return y;
}

}  // namespace lowbit::ad
