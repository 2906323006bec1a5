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
// fake_quant_grad_row; SIMD for float, the scalar twins for double): the same bits as the logged loop here.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <type_traits>

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
}  // namespace detail

template <class T>
Var<T> fake_quant(Tape<T>& tape, Var<T> x, const FakeQuantSpec& q, Var<T> up = {}, Var<T> low = {}) {
  if (q.bits < 2 || q.bits > 8) fail("fake_quant: ", q.bits, " bits (2..8)");
  const Eigen::Index G = q.group > 0 ? q.group : x.cols, R = x.rows, C = x.cols, ng = (C + G - 1) / G;
  for (const Var<T>* l : {&up, &low})
    if (l->v && (l->rows != R || l->cols != ng))
      fail("fake_quant: clip logits are ", l->rows, "x", l->cols, ", expected ", R, "x", ng, " (rows x groups)");
  Var<T> y = tape.make(R, C, any_grad(tape, x, up, low));
  // per group: scale, zero, the ratios' inputs and the range (for backward)
  T* S = tape.arena().template alloc_array<T>(R * ng * 6);
  using Mode = typename StraightThrough<T>::Mode;
  StraightThrough<T>& st = tape.straight_through();
  const T qmax = T(qmax_of(q.bits));
  const auto group = [&, G, C, ng](std::int64_t r, Eigen::Index g) {
    const Eigen::Index c0 = g * G, w = std::min(G, C - c0);
    const T* p = x.v + r * C + c0;
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
    if (st.mode == Mode::off) return detail::row_fake_quant(p, o, w, gp.scale, gp.zero, qmax);
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
  };
  if (st.mode == Mode::off) {
    parallel_for(R, [&](std::int64_t r) {
      for (Eigen::Index g = 0; g < ng; ++g) group(r, g);
    }, C * 8);
  } else {  // the log is sequential
    for (Eigen::Index r = 0; r < R; ++r)
      for (Eigen::Index g = 0; g < ng; ++g) group(r, g);
  }
  if (y.requires_grad())
    tape.record([x, y, up, low, q, S, G, C, ng, qmax] {
      parallel_for(x.rows, [&](std::int64_t r) {
        for (Eigen::Index g = 0; g < ng; ++g) {
          const Eigen::Index c0 = g * G, w = std::min(G, C - c0);
          const T* p = x.v + r * C + c0;
          const T* d = y.g + r * C + c0;
          const T* s = S + (r * ng + g) * 6;
          const T scale = s[0], zero = s[1];
          const T ds = detail::row_fake_quant_grad(p, d, x.g ? x.g + r * C + c0 : nullptr, w, scale, zero, qmax);
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
          if (!x.g) continue;
          int nmx = 0, nmn = 0;
          for (Eigen::Index i = 0; i < w; ++i) nmx += p[i] + T(0) == mx, nmn += p[i] + T(0) == mn;
          for (Eigen::Index i = 0; i < w; ++i) {
            if (p[i] + T(0) == mx) x.g[r * C + c0 + i] += dmx / T(nmx);
            if (p[i] + T(0) == mn) x.g[r * C + c0 + i] += dmn / T(nmn);
          }
        }
      }, C * 8);
    });
  return y;
}

}  // namespace lowbit::ad
