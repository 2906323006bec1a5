// lowbit/autodiff/ops.hpp -- the general ops of the tape (autodiff/tape.hpp): each computes its forward with
// Eigen and records its backward beside it.  Shapes are row-major [rows, cols]; "per channel" means per column
// (a [1, cols] row vector broadcast down the rows: a bias, SmoothQuant / LET scales on a linear's input), "per
// row" a [rows, 1] column vector (a scale on a weight's output channels).
//
//   op                       forward                          backward (d = adjoint of the result)
//   matmul(A, B, ta, tb)     C = op(A) op(B)                  dA += d op(B)^T (or op(B) d^T), dB likewise
//   add / sub / mul / div    elementwise, same shapes         d, -d, d*b and d*a, d/b and -d*a/b^2
//   add_channels(a, v)       a + v (v [1, cols])              da += d, dv += sum_rows d
//   mul_channels / div_channels, mul_rows / div_rows          the product rule, summed over the broadcast axis
//   scale(a, c)              c a (constant c)                 c d
//   sigmoid(a)               1 / (1 + e^-a)                   d s (1 - s)
//   clamp(a, lo, hi)         min(max(a, lo), hi)              d where lo <= a <= hi (torch.clamp), else 0
//   round_ste(a)             round half to even               d (straight-through; OmniQuant eq. 2's round)
//   truncate_ste(a, t)       |a| < t -> sign(a) t             d (straight-through; OmniQuant's truncate_number)
//   group_max / group_min    per row, groups of G columns     d to the arg-max (split evenly over ties, as torch's
//                                                             amax), [rows, ceil(cols/G)]
//   gather(a, idx)           y[0, j] = a[0, idx[j]]           da[idx[j]] += d[j] in j order (expands a
//                                                             parameter shared by several channels)
//   dot(a, b)                sum(a b), a scalar               d b, d a
//   mse(a, b)                mean((a - b)^2), a scalar        2 (a - b) / n d
//
// Reductions over rows (a channel's sum) run over fixed row order; products go through tiled_product (fixed
// tiles): the results are the same bits for any thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "tape.hpp"

namespace lowbit::ad {

enum class Trans { no, yes };

namespace detail {
inline void check_same(const char* op, Eigen::Index r1, Eigen::Index c1, Eigen::Index r2, Eigen::Index c2) {
  if (r1 != r2 || c1 != c2) fail(op, ": operands are ", r1, "x", c1, " and ", r2, "x", c2);
}
// Calls fn with op(m) as an Eigen expression of a fixed type per branch.
template <class M, class Fn>
void with_op(const M& m, Trans t, Fn&& fn) {
  if (t == Trans::yes) fn(m.transpose());
  else fn(m);
}
}  // namespace detail

// C = op(A) op(B).
template <class T>
Var<T> matmul(Tape<T>& tape, Var<T> A, Var<T> B, Trans ta = Trans::no, Trans tb = Trans::no) {
  const Eigen::Index m = ta == Trans::no ? A.rows : A.cols, k = ta == Trans::no ? A.cols : A.rows;
  const Eigen::Index kb = tb == Trans::no ? B.rows : B.cols, n = tb == Trans::no ? B.cols : B.rows;
  if (k != kb) fail("matmul: inner sizes ", k, " and ", kb, " differ");
  Var<T> C = tape.make(m, n, any_grad(tape, A, B));
  {
    MapM<T> c = C.val();
    detail::with_op(A.val(), ta, [&](const auto& a) {
      detail::with_op(B.val(), tb, [&](const auto& b) { tiled_product(c, a, b, Product::assign); });
    });
  }
  if (C.requires_grad())
    tape.record([A, B, C, ta, tb] {
      const MapM<T> d = C.grad();
      if (A.requires_grad()) {  // d op(A) = d op(B)^T
        MapM<T> ga = A.grad();
        detail::with_op(B.val(), tb, [&](const auto& b) {
          if (ta == Trans::no) tiled_product(ga, d, b.transpose(), Product::accumulate);
          else tiled_product(ga, b, d.transpose(), Product::accumulate);  // dA = (d b^T)^T = b d^T
        });
      }
      if (B.requires_grad()) {  // d op(B) = op(A)^T d
        MapM<T> gb = B.grad();
        detail::with_op(A.val(), ta, [&](const auto& a) {
          if (tb == Trans::no) tiled_product(gb, a.transpose(), d, Product::accumulate);
          else tiled_product(gb, d.transpose(), a, Product::accumulate);  // dB = (a^T d)^T = d^T a
        });
      }
    });
  return C;
}

template <class T>
Var<T> add(Tape<T>& tape, Var<T> a, Var<T> b) {
  detail::check_same("add", a.rows, a.cols, b.rows, b.cols);
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a, b));
  c.aval() = a.aval() + b.aval();
  if (c.requires_grad())
    tape.record([a, b, c] {
      if (a.requires_grad()) a.agrad() += c.agrad();
      if (b.requires_grad()) b.agrad() += c.agrad();
    });
  return c;
}

template <class T>
Var<T> sub(Tape<T>& tape, Var<T> a, Var<T> b) {
  detail::check_same("sub", a.rows, a.cols, b.rows, b.cols);
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a, b));
  c.aval() = a.aval() - b.aval();
  if (c.requires_grad())
    tape.record([a, b, c] {
      if (a.requires_grad()) a.agrad() += c.agrad();
      if (b.requires_grad()) b.agrad() -= c.agrad();
    });
  return c;
}

template <class T>
Var<T> mul(Tape<T>& tape, Var<T> a, Var<T> b) {
  detail::check_same("mul", a.rows, a.cols, b.rows, b.cols);
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a, b));
  c.aval() = a.aval() * b.aval();
  if (c.requires_grad())
    tape.record([a, b, c] {
      if (a.requires_grad()) a.agrad() += c.agrad() * b.aval();
      if (b.requires_grad()) b.agrad() += c.agrad() * a.aval();
    });
  return c;
}

template <class T>
Var<T> div(Tape<T>& tape, Var<T> a, Var<T> b) {
  detail::check_same("div", a.rows, a.cols, b.rows, b.cols);
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a, b));
  c.aval() = a.aval() / b.aval();
  if (c.requires_grad())
    tape.record([a, b, c] {
      if (a.requires_grad()) a.agrad() += c.agrad() / b.aval();
      if (b.requires_grad()) b.agrad() -= c.agrad() * c.aval() / b.aval();  // -d a / b^2 = -d c / b
    });
  return c;
}

template <class T>
Var<T> scale(Tape<T>& tape, Var<T> a, T s) {
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a));
  c.aval() = a.aval() * s;
  if (c.requires_grad()) tape.record([a, c, s] { a.agrad() += c.agrad() * s; });
  return c;
}

namespace detail {
enum class Bop { add, mul, div };
// a (op) v, v broadcast down the rows (`per_channel`: v is [1, cols]) or along each row (v is [rows, 1]).  Row
// loops, no temporaries; v's adjoint sums over rows in row order.
template <class T>
Var<T> broadcast(Tape<T>& tape, Var<T> a, Var<T> v, Bop op, bool per_channel, const char* name) {
  const bool ok = per_channel ? (v.rows == 1 && v.cols == a.cols) : (v.cols == 1 && v.rows == a.rows);
  if (!ok) fail(name, ": ", v.rows, "x", v.cols, " does not broadcast over ", a.rows, "x", a.cols);
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a, v));
  const Eigen::Index n = a.cols;
  parallel_for(a.rows, [&](std::int64_t r) {
    auto x = a.val().row(r).array();
    auto y = c.val().row(r).array();
    if (per_channel) {
      const auto w = v.val().row(0).array();
      if (op == Bop::add) y = x + w;
      else if (op == Bop::mul) y = x * w;
      else y = x / w;
    } else {
      const T w = v.v[r];
      if (op == Bop::add) y = x + w;
      else if (op == Bop::mul) y = x * w;
      else y = x / w;
    }
  }, n * 2);
  if (c.requires_grad())
    tape.record([a, v, c, op, per_channel] {
      if (a.requires_grad())
        parallel_for(a.rows, [&](std::int64_t r) {
          auto d = c.grad().row(r).array();
          auto ga = a.grad().row(r).array();
          if (op == Bop::add) ga += d;
          else if (per_channel && op == Bop::mul) ga += d * v.val().row(0).array();
          else if (per_channel) ga += d / v.val().row(0).array();
          else if (op == Bop::mul) ga += d * v.v[r];
          else ga += d / v.v[r];
        }, a.cols * 2);
      if (v.requires_grad())
        for (Eigen::Index r = 0; r < a.rows; ++r) {
          const auto d = c.grad().row(r).array();
          // d/dv of a + v, a v, a / v: 1, a, -a / v^2 = -c / v
          if (per_channel) {
            auto gv = v.grad().row(0).array();
            if (op == Bop::add) gv += d;
            else if (op == Bop::mul) gv += d * a.val().row(r).array();
            else gv -= d * c.val().row(r).array() / v.val().row(0).array();
          } else {
            const T s = op == Bop::add ? d.sum() : op == Bop::mul ? (d * a.val().row(r).array()).sum()
                                                                  : -(d * c.val().row(r).array()).sum() / v.v[r];
            v.g[r] += s;
          }
        }
    });
  return c;
}
}  // namespace detail

template <class T>
Var<T> add_channels(Tape<T>& t, Var<T> a, Var<T> v) { return detail::broadcast(t, a, v, detail::Bop::add, true, "add_channels"); }
template <class T>
Var<T> mul_channels(Tape<T>& t, Var<T> a, Var<T> v) { return detail::broadcast(t, a, v, detail::Bop::mul, true, "mul_channels"); }
template <class T>
Var<T> div_channels(Tape<T>& t, Var<T> a, Var<T> v) { return detail::broadcast(t, a, v, detail::Bop::div, true, "div_channels"); }
template <class T>
Var<T> mul_rows(Tape<T>& t, Var<T> a, Var<T> v) { return detail::broadcast(t, a, v, detail::Bop::mul, false, "mul_rows"); }
template <class T>
Var<T> div_rows(Tape<T>& t, Var<T> a, Var<T> v) { return detail::broadcast(t, a, v, detail::Bop::div, false, "div_rows"); }

// The same values with another shape (row-major order kept; a view with its own adjoint).
template <class T>
Var<T> reshape(Tape<T>& tape, Var<T> a, Eigen::Index rows, Eigen::Index cols) {
  if (rows * cols != a.size()) fail("reshape: ", a.rows, "x", a.cols, " to ", rows, "x", cols);
  Var<T> c = a;
  c.rows = rows, c.cols = cols;
  (void)tape;
  return c;  // shares value and adjoint storage: no backward step needed
}

template <class T>
Var<T> sigmoid(Tape<T>& tape, Var<T> a) {
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a));
  c.aval() = T(1) / (T(1) + (-a.aval()).exp());
  if (c.requires_grad()) tape.record([a, c] { a.agrad() += c.agrad() * c.aval() * (T(1) - c.aval()); });
  return c;
}

template <class T>
Var<T> clamp(Tape<T>& tape, Var<T> a, T lo, T hi) {
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a));
  StraightThrough<T>& st = tape.straight_through();
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    const T x = a.v[i];
    int side = x < lo ? -1 : x > hi ? 1 : 0;
    if (st.mode == StraightThrough<T>::Mode::record) st.put(T(side));
    if (st.mode == StraightThrough<T>::Mode::replay) side = int(st.get());
    c.v[i] = side < 0 ? lo : side > 0 ? hi : x;
  }
  if (c.requires_grad())
    tape.record([a, c, lo, hi] {
      for (Eigen::Index i = 0; i < a.size(); ++i)
        if (a.v[i] >= lo && a.v[i] <= hi) a.g[i] += c.g[i];
    });
  return c;
}

// Round half to even with the straight-through estimator: forward round(a), backward the identity.
template <class T>
Var<T> round_ste(Tape<T>& tape, Var<T> a) {
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a));
  StraightThrough<T>& st = tape.straight_through();
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    T off = std::nearbyint(a.v[i]) - a.v[i];
    if (st.mode == StraightThrough<T>::Mode::record) st.put(off);
    if (st.mode == StraightThrough<T>::Mode::replay) off = st.get();
    c.v[i] = a.v[i] + off;
  }
  if (c.requires_grad()) tape.record([a, c] { a.agrad() += c.agrad(); });
  return c;
}

// OmniQuant's truncate_number (LET scales): |x| < t becomes sign(x) t.
template <class T>
T truncate_number(T x, T t) {
  return std::abs(x) < t ? (x > 0 ? t : x < 0 ? -t : T(0)) : x;
}

// truncate_number on the tape; backward the identity.
template <class T>
Var<T> truncate_ste(Tape<T>& tape, Var<T> a, T t) {
  Var<T> c = tape.make(a.rows, a.cols, any_grad(tape, a));
  for (Eigen::Index i = 0; i < a.size(); ++i) c.v[i] = truncate_number(a.v[i], t);
  if (c.requires_grad()) tape.record([a, c] { a.agrad() += c.agrad(); });
  return c;
}

namespace detail {
// Per row, groups of G columns (the last may be shorter): the max (sign +1) or min (sign -1) of each group; the
// adjoint goes to the elements equal to it, split evenly (torch.amax).
template <class T>
Var<T> group_extreme(Tape<T>& tape, Var<T> a, Eigen::Index G, int sign) {
  if (G <= 0) fail("group_max / group_min: group size ", G);
  const Eigen::Index ng = (a.cols + G - 1) / G;
  Var<T> c = tape.make(a.rows, ng, any_grad(tape, a));
  for (Eigen::Index r = 0; r < a.rows; ++r)
    for (Eigen::Index g = 0; g < ng; ++g) {
      const auto seg = a.val().row(r).segment(g * G, std::min(G, a.cols - g * G));
      c.v[r * ng + g] = sign > 0 ? seg.maxCoeff() : seg.minCoeff();
    }
  if (c.requires_grad())
    tape.record([a, c, G, ng] {
      for (Eigen::Index r = 0; r < a.rows; ++r)
        for (Eigen::Index g = 0; g < ng; ++g) {
          const Eigen::Index c0 = g * G, w = std::min(G, a.cols - c0);
          const T m = c.v[r * ng + g];
          int ties = 0;
          for (Eigen::Index j = 0; j < w; ++j) ties += a.v[r * a.cols + c0 + j] == m;
          const T share = c.g[r * ng + g] / T(ties);
          for (Eigen::Index j = 0; j < w; ++j)
            if (a.v[r * a.cols + c0 + j] == m) a.g[r * a.cols + c0 + j] += share;
        }
    });
  return c;
}
}  // namespace detail

template <class T>
Var<T> group_max(Tape<T>& t, Var<T> a, Eigen::Index G) { return detail::group_extreme(t, a, G, +1); }
template <class T>
Var<T> group_min(Tape<T>& t, Var<T> a, Eigen::Index G) { return detail::group_extreme(t, a, G, -1); }

// y [1, n] with y[j] = a[idx[j]] (a is [1, m]).
template <class T>
Var<T> gather(Tape<T>& tape, Var<T> a, const std::vector<int>& idx) {
  if (a.rows != 1) fail("gather: ", a.rows, " rows (a row vector expected)");
  const Eigen::Index n = Eigen::Index(idx.size());
  int* ix = tape.arena().template alloc_array<int>(n);
  Var<T> y = tape.make(1, n, any_grad(tape, a));
  for (Eigen::Index j = 0; j < n; ++j) {
    if (idx[std::size_t(j)] < 0 || idx[std::size_t(j)] >= a.cols) fail("gather: index ", idx[std::size_t(j)], " outside ", a.cols);
    ix[j] = idx[std::size_t(j)];
    y.v[j] = a.v[ix[j]];
  }
  if (y.requires_grad())
    tape.record([a, y, ix, n] {
      for (Eigen::Index j = 0; j < n; ++j) a.g[ix[j]] += y.g[j];
    });
  return y;
}

// sum(a b) over all elements: a [1, 1] result (per row, then over rows in order).
template <class T>
Var<T> dot(Tape<T>& tape, Var<T> a, Var<T> b) {
  detail::check_same("dot", a.rows, a.cols, b.rows, b.cols);
  Var<T> c = tape.make(1, 1, any_grad(tape, a, b));
  double sum = 0;
  for (Eigen::Index r = 0; r < a.rows; ++r) sum += (a.val().row(r).array() * b.val().row(r).array()).template cast<double>().sum();
  c.v[0] = T(sum);
  if (c.requires_grad())
    tape.record([a, b, c] {
      if (a.requires_grad()) a.agrad() += c.g[0] * b.aval();
      if (b.requires_grad()) b.agrad() += c.g[0] * a.aval();
    });
  return c;
}

// mean((a - b)^2) over all elements: a [1, 1] result.  The sum runs per row, then over rows in order.
template <class T>
Var<T> mse(Tape<T>& tape, Var<T> a, Var<T> b) {
  detail::check_same("mse", a.rows, a.cols, b.rows, b.cols);
  Var<T> c = tape.make(1, 1, any_grad(tape, a, b));
  double* part = tape.arena().template alloc_array<double>(a.rows);
  parallel_for(a.rows, [&](std::int64_t r) {
    part[r] = (a.val().row(r) - b.val().row(r)).template cast<double>().squaredNorm();
  }, a.cols * 3);
  double sum = 0;
  for (Eigen::Index r = 0; r < a.rows; ++r) sum += part[r];
  c.v[0] = T(sum / double(a.size()));
  if (c.requires_grad())
    tape.record([a, b, c] {
      const T k = T(2) * c.g[0] / T(a.size());
      if (a.requires_grad()) a.agrad() += k * (a.aval() - b.aval());
      if (b.requires_grad()) b.agrad() -= k * (a.aval() - b.aval());
    });
  return c;
}

}  // namespace lowbit::ad
