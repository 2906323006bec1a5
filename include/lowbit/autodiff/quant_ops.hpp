// lowbit/autodiff/quant_ops.hpp -- fake quantization on the tape, with OmniQuant's learnable weight clipping.
//
// x [R, C] is quantized per row in groups of G columns (the last group may be shorter; G = C: per row, as
// per-channel weights and per-token activations; G = head_dim: per (token, head)).  For group j of row r:
//
//   xmax = sigmoid(gamma_rj) max(x_group),  xmin = sigmoid(beta_rj) min(x_group)      (LWC, OmniQuant eq. 2;
//                                                                                      no logits: ratios 1)
//   (s, z) = group_params_t(grid, bits, sym, xmin, xmax)                               (quant/grid.hpp)
//   y = (clamp(round(x / s) + z, 0, qmax) - z) s
//
// The gradient path is OmniQuant's (quantize/quantizer.py): round is a straight-through estimator (round_ste), the
// zero point is rounded without one (no gradient), torch.clamp passes the gradient where its input is inside
// [0, qmax] (bounds included), and the scale's clamps / floors pass none when they bind.  So, with
// p_i = [0 <= round(x_i/s) + z <= qmax] and code_i the clamped code,
//
//   dy_i/dx_i (direct) = p_i,      dy_i/ds = (code_i - z) - p_i x_i / s,
//   ds -> d xmin, d xmax by scale_derivative(),  d xmax -> d gamma = d xmax max sigmoid'(gamma) and
//   d max = d xmax sigmoid(gamma) to the arg-max element(s) of x (ties split evenly, torch.amax), likewise min.
//
// For T = float the forward is the quantizer's own arithmetic (quant/quantizer.hpp fake_quant with
// ClipRatios{lwc_ratio(gamma), lwc_ratio(beta)}), so finalising with the learned clips reproduces the trained
// forward.  Under StraightThrough record / replay (autodiff/tape.hpp) the arg-max / arg-min, the zero point, every
// rounding offset and clamp side are logged and replayed.  Outside record / replay the forward, and always the
// backward, run the quantizer's row kernels (simd/quantize_row.hpp: minmax_row, fake_quant_row,
// fake_quant_grad_groups for a row's full groups, fake_quant_grad_row for a shorter last one; SIMD for float, the
// scalar twins for double): the same bits as the logged loop here.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../quant/grid.hpp"
#include "../simd/quantize_row.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace lowbit::ad {

struct FakeQuantSpec {
  int bits = 4;
  bool symmetric = false;
  Grid grid = Grid::minmax;
  Eigen::Index group = 0;  // columns per group (0: the whole row)
};

// sigmoid(logit), the LWC clip ratio (the same expression as the tape's sigmoid).
template <class T>
T lwc_ratio(T logit) { return T(1) / (T(1) + std::exp(-logit)); }

// LWC's logit of a clip ratio r (AWQ's clip search -> LWC, LLMC get_clip_factor: ln(r / (1 - r))), with r
// clamped below 1 so "no clip" (r = 1) stays a finite, trainable logit: at most logit(1 - 1e-4) = 9.21.
inline float lwc_logit(float r) {
  if (!(r > 0.0f) || !std::isfinite(r)) fail("lwc_logit: clip ratio ", r, " is not in (0, 1]");
  const float c = std::min(r, 1.0f - 1e-4f);
  return std::log(c / (1.0f - c));
}

namespace detail {
// The row kernels of simd/quantize_row.hpp: SIMD for float, their scalar twins (templates) for double.
template <class T>
bool row_minmax(const T* x, Eigen::Index n, T& mn, T& mx) {
  if constexpr (std::is_same_v<T, float>) return simd::minmax_row(x, n, mn, mx);
  else return simd::minmax_row_ref(x, n, mn, mx);
}
template <class T>
void row_fake_quant(const T* x, T* y, Eigen::Index n, T s, T z, T qmax) {
  if constexpr (std::is_same_v<T, float>) simd::fake_quant_row(x, y, n, s, z, qmax);
  else simd::fake_quant_row_ref(x, y, n, s, z, qmax);
}
template <class T>
T row_fake_quant_grad(const T* x, const T* dy, T* dx, Eigen::Index n, T s, T z, T qmax) {
  if constexpr (std::is_same_v<T, float>) return simd::fake_quant_grad_row(x, dy, dx, n, s, z, qmax);
  else return simd::fake_quant_grad_row_ref(x, dy, dx, n, s, z, qmax);
}
template <class T>
simd::Extremes row_extremes(const T* x, Eigen::Index n, T mx, T mn) {
  if constexpr (std::is_same_v<T, float>) return simd::extremes_row(x, n, mx, mn);
  else return simd::extremes_row_ref(x, n, mx, mn);
}
template <class T>
void row_fake_quant_grads(const T* x, const T* dy, T* dx, Eigen::Index k, Eigen::Index n, const T* s, const T* z, T qmax,
                          T* ds) {
  if constexpr (std::is_same_v<T, float>) simd::fake_quant_grad_groups(x, dy, dx, k, n, s, z, qmax, ds);
  else simd::fake_quant_grad_groups_ref(x, dy, dx, k, n, s, z, qmax, ds);
}
}  // namespace detail

// LET's scaling of a weight, fused into its fake quantization (OmniQuant's smooth_and_quant_temporary: the
// weight times its input channels' scale, and for q / k / v its output channels' scale or inverse):
//   x'[r, c] = (x[r, c] col[c]) op row[r],   op: none, *, /   (the float operations in this order)
// col [1, C] and row [R, 1]; either may be absent.
enum class RowScale { none, mul, div };
template <class T>
struct WeightScales {
  Var<T> col;  // [1, C]
  Var<T> row;  // [R, 1]
  RowScale op = RowScale::none;
  bool any() const { return col.v || row.v; }
};

// y = fake_quant(x') with x' as above.  x' is formed a row at a time and never stored: the backward forms it
// again.  Its adjoint dx' (a row) gives
//   d row[r] += sum_c dx'[r, c] x''[r, c]  (op *: x'' = x col; op /: -x' / row[r]),   dx'' = dx' (op) row[r],
//   d col[c] += sum_r dx''[r, c] x[r, c]   (summed over rows in row order),           dx += dx'' col,
// the products of mul_channels / mul_rows / div_rows (autodiff/ops.hpp) one after the other, without their
// weight-sized values and adjoints.
template <class T>
Var<T> scaled_fake_quant(Tape<T>& tape, Var<T> x, const WeightScales<T>& sc, const FakeQuantSpec& q, Var<T> up = {},
                         Var<T> low = {}) {
  if (q.bits < 2 || q.bits > 8) fail("fake_quant: ", q.bits, " bits (2..8)");
  const Eigen::Index G = q.group > 0 ? q.group : x.cols, R = x.rows, C = x.cols, ng = (C + G - 1) / G;
  for (const Var<T>* l : {&up, &low})
    if (l->v && (l->rows != R || l->cols != ng))
      fail("fake_quant: clip logits are ", l->rows, "x", l->cols, ", expected ", R, "x", ng, " (rows x groups)");
  if (sc.col.v && (sc.col.rows != 1 || sc.col.cols != C))
    fail("fake_quant: the input-channel scale is ", sc.col.rows, "x", sc.col.cols, ", expected 1x", C);
  if (bool(sc.row.v) != (sc.op != RowScale::none) || (sc.row.v && (sc.row.rows != R || sc.row.cols != 1)))
    fail("fake_quant: the output-channel scale is ", sc.row.rows, "x", sc.row.cols, ", expected ", R, "x1 with an operation");
  const Var<T> col = sc.col, row = sc.row;
  const RowScale op = sc.op;
  const bool scaled = sc.any();
  Var<T> y = tape.make(R, C, any_grad(tape, x, up, low, col, row));
  // per group: scale, zero, the ratios' inputs and the range (for backward)
  T* S = tape.arena().template alloc_array<T>(R * ng * 6);
  using Mode = typename StraightThrough<T>::Mode;
  StraightThrough<T>& st = tape.straight_through();
  const T qmax = T(qmax_of(q.bits));
  using Buf = std::vector<T, Eigen::aligned_allocator<T>>;
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  using MapA = Eigen::Map<Arr, Eigen::AlignedMax>;  // the buffers' alignment: Eigen's reductions peel nothing, whichever thread
  using MapCA = Eigen::Map<const Arr>;
  // x' of row r: x's own row, or (x col) in w1 and then (w1 op row) in w2 (thread-local buffers)
  const auto source = [x, col, row, op, scaled, C](std::int64_t r, Buf& w1, Buf& w2) -> const T* {
    const T* xr = x.v + r * C;
    if (!scaled) return xr;
    w1.resize(std::size_t(C)), w2.resize(std::size_t(C));
    MapA a(w1.data(), C), b(w2.data(), C);
    if (col.v) a = MapCA(xr, C) * MapCA(col.v, C);
    else a = MapCA(xr, C);
    if (op == RowScale::none) return w1.data();
    if (op == RowScale::mul) b = a * row.v[r];
    else b = a / row.v[r];
    return w2.data();
  };
  const auto fwd_row = [&, G, C, ng](std::int64_t r) {
    static thread_local Buf w1, w2;
    const T* xr = source(r, w1, w2);
    for (Eigen::Index g = 0; g < ng; ++g) {
      const Eigen::Index c0 = g * G, w = std::min(G, C - c0);
      const T* p = xr + c0;
      T* o = y.v + r * C + c0;
      // outside record / replay the group's min and max values suffice (the row kernels); the log needs their places
      T mx, mn;
      if (st.mode == Mode::off) {
        if (!detail::row_minmax(p, w, mn, mx)) fail("fake_quant: non-finite value in row ", r, ", group ", g);
      } else {
        Eigen::Index imx = 0, imn = 0;
        bool finite = true;
        for (Eigen::Index i = 0; i < w; ++i) {
          finite &= std::isfinite(p[i]);
          if (p[i] > p[imx]) imx = i;
          if (p[i] < p[imn]) imn = i;
        }
        if (!finite) fail("fake_quant: non-finite value in row ", r, ", group ", g);
        if (st.mode == Mode::record) st.put(T(imx)), st.put(T(imn));
        if (st.mode == Mode::replay) imx = Eigen::Index(st.get()), imn = Eigen::Index(st.get());
        mx = p[imx] + T(0), mn = p[imn] + T(0);  // -0 -> +0, as Quantizer::fit_range
      }
      const T su = up.v ? lwc_ratio(up.v[r * ng + g]) : T(1), sl = low.v ? lwc_ratio(low.v[r * ng + g]) : T(1);
      const T xmax = up.v ? mx * su : mx, xmin = low.v ? mn * sl : mn;
      BasicGroupParams<T> gp = group_params_t<T>(q.grid, q.bits, q.symmetric, xmin, xmax, T(0));
      if (st.mode == Mode::record) st.put(gp.zero);
      if (st.mode == Mode::replay) gp.zero = st.get();
      T* s = S + (r * ng + g) * 6;
      s[0] = gp.scale, s[1] = gp.zero, s[2] = xmin, s[3] = xmax, s[4] = mx, s[5] = mn;
      if (st.mode == Mode::off) {
        detail::row_fake_quant(p, o, w, gp.scale, gp.zero, qmax);
        continue;
      }
      for (Eigen::Index i = 0; i < w; ++i) {
        const T v = p[i] / gp.scale;
        T off = std::nearbyint(v) - v;
        if (st.mode == Mode::record) st.put(off);
        if (st.mode == Mode::replay) off = st.get();
        const T c = v + off + gp.zero;
        int side = c < T(0) ? -1 : c > qmax ? 1 : 0;
        if (st.mode == Mode::record) st.put(T(side));
        if (st.mode == Mode::replay) side = int(st.get());
        const T code = side < 0 ? T(0) : side > 0 ? qmax : c;
        o[i] = (code - gp.zero) * gp.scale;
      }
    }
  };
  if (st.mode == Mode::off) parallel_for(R, fwd_row, C * 8);
  else  // the log is sequential
    for (Eigen::Index r = 0; r < R; ++r) fwd_row(r);
  if (y.requires_grad()) {
    // d col[c] = sum_r dx''[r, c] x[r, c], in row order.  Without a row scale a row's columns need nothing from the
    // row's other groups: the backward runs over chunks of whole groups, every row of a chunk in order, adding each
    // product to d col as it comes (no weight-sized buffer).  With one (q / k / v) a row's d row needs all its
    // columns first: the rows run in parallel, the products kept in U and summed per column afterwards.  Both add
    // the same products in the same order.
    const bool by_columns = col.g && op == RowScale::none && ng > 1;
    T* U = col.g && !by_columns && tape.recording() ? tape.arena().template alloc_array<T>(R * C) : nullptr;
    tape.record([x, y, up, low, q, S, G, C, ng, qmax, col, row, op, scaled, U, source, by_columns] {
      const bool need_dx = x.g || col.g || row.g;
      // Groups [g0, g1) of row r: the adjoint of x' added to dxr (null: not needed) and the clip logits' gradients.
      // xr and dxr are indexed by column (x' of the row at least over the groups' columns).
      const auto groups = [&](std::int64_t r, Eigen::Index g0, Eigen::Index g1, const T* xr, T* dxr, Buf& sz, Buf& dsr) {
        const Eigen::Index n = g1 - g0;
        // d loss / d scale of the groups: the full ones side by side (their in-order sums interleaved), a shorter
        // last one alone
        sz.resize(std::size_t(2 * n)), dsr.resize(std::size_t(n));
        for (Eigen::Index g = g0; g < g1; ++g)
          sz[g - g0] = S[(r * ng + g) * 6], sz[n + g - g0] = S[(r * ng + g) * 6 + 1];
        const Eigen::Index full = std::max<Eigen::Index>(0, std::min(g1, C / G) - g0), c0 = g0 * G, cs = (g0 + full) * G;
        detail::row_fake_quant_grads(xr + c0, y.g + r * C + c0, dxr ? dxr + c0 : nullptr, full, G, sz.data(),
                                     sz.data() + n, qmax, dsr.data());
        if (full < n)
          dsr[full] = detail::row_fake_quant_grad(xr + cs, y.g + r * C + cs, dxr ? dxr + cs : nullptr, C - cs, sz[full],
                                                 sz[n + full], qmax);
        for (Eigen::Index g = g0; g < g1; ++g) {
          const Eigen::Index gc = g * G, w = std::min(G, C - gc);
          const T* p = xr + gc;
          const T* s = S + (r * ng + g) * 6;
          const T ds = dsr[g - g0];
          const auto dsd = scale_derivative<T>(q.grid, q.bits, q.symmetric, s[2], s[3]);
          const T dxmin = ds * dsd[0], dxmax = ds * dsd[1];
          const T mx = s[4], mn = s[5];
          T dmx = dxmax, dmn = dxmin;
          if (up.v) {
            const T su = lwc_ratio(up.v[r * ng + g]);
            if (up.g) up.g[r * ng + g] += dxmax * mx * su * (T(1) - su);
            dmx = dxmax * su;
          }
          if (low.v) {
            const T sl = lwc_ratio(low.v[r * ng + g]);
            if (low.g) low.g[r * ng + g] += dxmin * mn * sl * (T(1) - sl);
            dmn = dxmin * sl;
          }
          if (!dxr) continue;
          // d max shared by the elements equal to the max (usually one), then d min likewise: each element gets its
          // max share before its min share, as a loop over the elements doing both would add them
          const simd::Extremes e = detail::row_extremes(p, w, mx, mn);
          const auto spread = [&](std::int64_t first, int count, T v, T dv) {
            if (count == 1) dxr[gc + first] += dv;  // dv / 1
            else if (count > 1)
              for (Eigen::Index i = first; i < w; ++i)
                if (p[i] == v) dxr[gc + i] += dv / T(count);
          };
          spread(e.first_max, e.n_max, mx, dmx);
          spread(e.first_min, e.n_min, mn, dmn);
        }
      };
      if (by_columns) {
        // chunks of at least 256 columns (whole groups), each over every row in order
        const Eigen::Index per = std::max<Eigen::Index>(1, (256 + G - 1) / G), chunks = (ng + per - 1) / per;
        parallel_for(chunks, [&](std::int64_t k) {
          static thread_local Buf w1, dbuf, sz, dsr;
          const Eigen::Index g0 = k * per, g1 = std::min(ng, g0 + per), c0 = g0 * G, n = std::min(C, g1 * G) - c0;
          w1.resize(std::size_t(C)), dbuf.resize(std::size_t(C));
          Eigen::Map<Arr> a(w1.data() + c0, n), dd(dbuf.data() + c0, n);
          const MapCA cs(col.v + c0, n);
          for (Eigen::Index r = 0; r < x.rows; ++r) {
            const MapCA xs(x.v + r * C + c0, n);
            a = xs * cs;  // x' (as source())
            dd.setZero();
            groups(r, g0, g1, w1.data(), dbuf.data(), sz, dsr);
            Eigen::Map<Arr>(col.g + c0, n) += dd * xs;
            if (x.g) Eigen::Map<Arr>(x.g + r * C + c0, n) += dd * cs;
          }
        }, x.rows * per * G * 8);
        return;
      }
      parallel_for(x.rows, [&](std::int64_t r) {
        static thread_local Buf w1, w2, dbuf, sz, dsr;
        const T* xr = source(r, w1, w2);
        T* dxr = nullptr;  // the adjoint of x' (row r): x's own when unscaled
        if (scaled && need_dx) dbuf.assign(std::size_t(C), T(0)), dxr = dbuf.data();
        else if (x.g) dxr = x.g + r * C;
        groups(r, 0, ng, xr, dxr, sz, dsr);
        if (!scaled || !dxr) return;
        // back through the row scale (in place: dx' becomes dx''), then the column scale
        MapA dd(dxr, C);
        if (op == RowScale::div) {
          if (row.g) row.g[r] += -(dd * MapA(w2.data(), C)).sum() / row.v[r];
          dd = dd / row.v[r];
        } else if (op == RowScale::mul) {
          if (row.g) row.g[r] += (dd * MapA(w1.data(), C)).sum();
          dd = dd * row.v[r];
        }
        if (U) Eigen::Map<Arr>(U + r * C, C) = dd * MapCA(x.v + r * C, C);
        if (x.g) {
          Eigen::Map<Arr> gx(x.g + r * C, C);
          if (col.v) gx += dd * MapCA(col.v, C);
          else gx += dd;
        }
      }, C * 8);
      if (U)  // each column's sum over rows in row order, columns in parallel chunks
        parallel_for((C + 63) / 64, [&](std::int64_t k) {
          const std::int64_t c0 = k * 64, c1 = std::min<std::int64_t>(c0 + 64, C);
          for (Eigen::Index r = 0; r < x.rows; ++r)
            for (std::int64_t c = c0; c < c1; ++c) col.g[c] += U[r * C + c];
        }, 64 * x.rows);
    });
  }
  return y;
}

template <class T>
Var<T> fake_quant(Tape<T>& tape, Var<T> x, const FakeQuantSpec& q, Var<T> up = {}, Var<T> low = {}) {
  return scaled_fake_quant(tape, x, WeightScales<T>{}, q, up, low);
}

}  // namespace lowbit::ad
