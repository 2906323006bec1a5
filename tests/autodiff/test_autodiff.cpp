// The autodiff's ops (autodiff/ops.hpp, nn.hpp, quant_ops.hpp): every backward against central finite
// differences in double (autodiff/grad_check.hpp; straight-through ops on the replayed linearisation), the float
// forwards against the model's and the quantizer's own, the tape's memory reuse, and AdamW against torch's
// formula written out here.
#include <catch2/catch.hpp>
#include <lowbit/autodiff/adamw.hpp>
#include <lowbit/autodiff/grad_check.hpp>
#include <lowbit/autodiff/nn.hpp>
#include <lowbit/autodiff/quant_ops.hpp>
#include <lowbit/lowbit.hpp>

#include <random>
#include "support/util.hpp"

using namespace lowbit;
using namespace lowbit::ad;
using MD = Mat<double>;
using V = Var<double>;

namespace {
MD rnd(Eigen::Index r, Eigen::Index c, unsigned seed, double lo = -1, double hi = 1) {
  return lowbit_test::uniform_matrix<MD>(r, c, seed, lo, hi);
}
// A scalar that weighs every output element differently: sum(y R).
V probe(Tape<double>& t, V y, unsigned seed = 99) { return dot(t, y, t.constant(rnd(y.rows, y.cols, seed))); }

void check(std::vector<MD> in, const GradFn& f, double tol = 1e-6) {
  const GradCheckResult r = grad_check(std::move(in), f);
  INFO("max |analytic - numeric| " << r.max_abs_error << ", max |grad| " << r.max_abs_grad << ", " << r.checked << " entries");
  REQUIRE(r.checked > 0);
  REQUIRE(r.max_abs_grad > 1e-8);  // the check is not vacuous
  REQUIRE(r.relative() < tol);
}
}  // namespace

TEST_CASE("matmul's gradients with every transpose match finite differences", "[autodiff]") {
  for (Trans ta : {Trans::no, Trans::yes})
    for (Trans tb : {Trans::no, Trans::yes}) {
      INFO("ta " << int(ta) << " tb " << int(tb));
      const MD A = ta == Trans::no ? rnd(5, 7, 1) : rnd(7, 5, 1), B = tb == Trans::no ? rnd(7, 3, 2) : rnd(3, 7, 2);
      check({A, B}, [&](Tape<double>& t, const std::vector<V>& v) { return probe(t, matmul(t, v[0], v[1], ta, tb)); });
    }
  // a product big enough for several tiles of tiled_product
  check({rnd(600, 9, 3), rnd(9, 4, 4)}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, matmul(t, v[0], v[1])); });
}

TEST_CASE("elementwise and broadcast ops' gradients match finite differences", "[autodiff]") {
  const MD a = rnd(4, 6, 1), b = rnd(4, 6, 2, 0.5, 2), ch = rnd(1, 6, 3, 0.5, 2), rw = rnd(4, 1, 4, 0.5, 2);
  using Op = std::function<V(Tape<double>&, const std::vector<V>&)>;
  const std::vector<std::pair<const char*, Op>> two = {
      {"add", [](Tape<double>& t, const std::vector<V>& v) { return add(t, v[0], v[1]); }},
      {"sub", [](Tape<double>& t, const std::vector<V>& v) { return sub(t, v[0], v[1]); }},
      {"mul", [](Tape<double>& t, const std::vector<V>& v) { return mul(t, v[0], v[1]); }},
      {"div", [](Tape<double>& t, const std::vector<V>& v) { return div(t, v[0], v[1]); }},
  };
  for (const auto& [name, op] : two) {
    INFO(name);
    check({a, b}, [&](Tape<double>& t, const std::vector<V>& v) { return probe(t, op(t, v)); });
  }
  const std::vector<std::pair<const char*, Op>> chan = {
      {"add_channels", [](Tape<double>& t, const std::vector<V>& v) { return add_channels(t, v[0], v[1]); }},
      {"mul_channels", [](Tape<double>& t, const std::vector<V>& v) { return mul_channels(t, v[0], v[1]); }},
      {"div_channels", [](Tape<double>& t, const std::vector<V>& v) { return div_channels(t, v[0], v[1]); }},
  };
  for (const auto& [name, op] : chan) {
    INFO(name);
    check({a, ch}, [&](Tape<double>& t, const std::vector<V>& v) { return probe(t, op(t, v)); });
  }
  check({a, rw}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, mul_rows(t, v[0], v[1])); });
  check({a, rw}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, div_rows(t, v[0], v[1])); });
  check({a}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, scale(t, v[0], -2.5)); });
  check({a}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, reshape(t, sigmoid(t, v[0]), 3, 8)); });
  check({a}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, clamp(t, v[0], -0.3, 0.4)); });
  check({a, b}, [](Tape<double>& t, const std::vector<V>& v) { return mse(t, v[0], v[1]); });
  check({ch}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, gather(t, v[0], {0, 0, 5, 2, 2, 2, 1})); });
  // group max / min over ragged groups of 4 (6 = 4 + 2)
  check({a}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, group_max(t, v[0], 4)); });
  check({a}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, group_min(t, v[0], 4)); });
}

TEST_CASE("straight-through ops: the forward rounds, the backward is the identity", "[autodiff]") {
  Tape<double> t;
  MD x(1, 4), g = MD::Zero(1, 4);
  x << 0.4, 0.5, 1.5, -0.005;
  const V p = t.parameter(x.data(), g.data(), 1, 4);
  const V r = round_ste(t, p), c = truncate_ste(t, p, 0.01);
  REQUIRE(r.val()(0, 0) == 0.0);
  REQUIRE(r.val()(0, 1) == 0.0);  // half to even
  REQUIRE(r.val()(0, 2) == 2.0);
  REQUIRE(c.val()(0, 3) == -0.01);  // |x| < 0.01 -> sign(x) 0.01
  REQUIRE(c.val()(0, 2) == 1.5);
  t.backward(add(t, probe(t, r, 1), probe(t, c, 2)));
  REQUIRE((g - rnd(1, 4, 1) - rnd(1, 4, 2)).cwiseAbs().maxCoeff() < 1e-15);
  // and their finite differences on the replayed linearisation agree
  check({rnd(3, 5, 7, -3, 3)}, [](Tape<double>& tp, const std::vector<V>& v) { return probe(tp, round_ste(tp, scale(tp, v[0], 1.7))); });
}

TEST_CASE("the decoder ops' gradients match finite differences", "[autodiff]") {
  check({rnd(6, 8, 1), rnd(1, 8, 2, 0.5, 1.5)},
        [](Tape<double>& t, const std::vector<V>& v) { return probe(t, rmsnorm(t, v[0], v[1], 1e-5)); });
  for (RopeStyle s : {RopeStyle::interleaved, RopeStyle::rotate_half}) {
    INFO("rope style " << int(s));
    check({rnd(6, 8, 3)}, [s](Tape<double>& t, const std::vector<V>& v) { return probe(t, rope(t, v[0], 2, 4, 3, 10000.0f, s)); });
  }
  // GQA: 4 query heads on 2 kv heads of 4 channels, 2 sequences of 5 (more than one 64-row block: 70); P kept
  // for the backward, and recomputed (keep_p 0)
  for (int L : {5, 70})
    for (Eigen::Index keep : {kAttentionKeepP, Eigen::Index(0)}) {
      INFO("L " << L << ", keep_p " << keep);
      check({rnd(2 * L, 16, 4), rnd(2 * L, 8, 5), rnd(2 * L, 8, 6)}, [L, keep](Tape<double>& t, const std::vector<V>& v) {
        return probe(t, causal_attention(t, v[0], v[1], v[2], 4, 2, 4, L, keep));
      }, 1e-6);
    }
  {  // float: the kept P and the recomputed one give the same bits, for 1 and 2 threads
    using MF = Mat<float>;
    const int L = 130, H = 4, KV = 2, hd = 16;
    const MF q0 = rnd(2 * L, H * hd, 20).cast<float>(), k0 = rnd(2 * L, KV * hd, 21).cast<float>();
    const MF v0 = rnd(2 * L, KV * hd, 22).cast<float>(), pw = rnd(2 * L, H * hd, 23).cast<float>();
    const auto run = [&](Eigen::Index keep) {
      Tape<float> t;
      MF q = q0, k = k0, v = v0, gq = MF::Zero(q.rows(), q.cols()), gk = MF::Zero(k.rows(), k.cols()), gv = gk;
      const Var<float> y = causal_attention(t, t.parameter(q.data(), gq.data(), q.rows(), q.cols()),
                                            t.parameter(k.data(), gk.data(), k.rows(), k.cols()),
                                            t.parameter(v.data(), gv.data(), v.rows(), v.cols()), H, KV, hd, L, keep);
      t.backward(dot(t, y, t.view(pw.data(), pw.rows(), pw.cols())));
      return std::array<MF, 4>{MF(y.val()), gq, gk, gv};
    };
    const auto kept = run(kAttentionKeepP), again = run(0);
    set_num_threads(1);
    const auto serial = run(0);
    set_num_threads(2);
    for (int i = 0; i < 4; ++i) {
      INFO("output " << i);
      REQUIRE(kept[std::size_t(i)].allFinite());
      REQUIRE(kept[std::size_t(i)] == again[std::size_t(i)]);
      REQUIRE(serial[std::size_t(i)] == again[std::size_t(i)]);
    }
  }
  check({rnd(4, 6, 7, -3, 3)}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, silu(t, v[0])); });
  check({rnd(4, 6, 8, -3, 3), rnd(4, 6, 9)}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, swiglu(t, v[0], v[1])); });
  check({rnd(5, 6, 10), rnd(3, 6, 11), rnd(1, 3, 12)},
        [](Tape<double>& t, const std::vector<V>& v) { return probe(t, linear(t, v[0], v[1], v[2])); });
  check({rnd(7, 4, 13)}, [](Tape<double>& t, const std::vector<V>& v) { return probe(t, embedding(t, v[0], {3, 0, 3, 6, 1})); });
  check({rnd(5, 7, 14, -2, 2)}, [](Tape<double>& t, const std::vector<V>& v) { return cross_entropy(t, v[0], {6, 0, 2, 2, 5}); });
}

TEST_CASE("fake quantization with learnable clipping: OmniQuant's gradient path, by finite differences", "[autodiff][lwc]") {
  for (Grid grid : {Grid::omniquant, Grid::minmax})
    for (bool sym : {false, true})
      for (int bits : {2, 4, 8}) {
        INFO(to_string(grid) << (sym ? " sym" : " asym") << " " << bits << " bits");
        const FakeQuantSpec q{bits, sym, grid, 4};
        const MD x = rnd(3, 10, 20 + bits), up = rnd(3, 3, 30, 0.5, 3), low = rnd(3, 3, 31, 0.5, 3);
        // d/dx (weights under LET) and d/d logits (LWC)
        check({x, up, low}, [q](Tape<double>& t, const std::vector<V>& v) { return probe(t, fake_quant(t, v[0], q, v[1], v[2])); });
        // without clipping (activations: per token, per head)
        check({x}, [q](Tape<double>& t, const std::vector<V>& v) { return probe(t, fake_quant(t, v[0], FakeQuantSpec{q.bits, q.symmetric, q.grid, 0})); });
      }
  // the logits get no gradient through the rounded zero point: with x fixed, an asymmetric group's gradient is
  // d scale's alone.  Hand-computed case: one group {0, 1, 2, 3}, 2 bits omniquant, no clip (logits +inf-like 30)
  Tape<double> t;
  MD x(1, 4), up(1, 1), gup = MD::Zero(1, 1);
  x << 0.0, 1.0, 2.0, 3.0;
  up << 30.0;  // sigmoid = 1 - 9e-14
  const V y = fake_quant(t, t.view(x.data(), 1, 4), FakeQuantSpec{2, false, Grid::omniquant, 0},
                         t.parameter(up.data(), gup.data(), 1, 1));
  REQUIRE((y.val() - x).cwiseAbs().maxCoeff() < 1e-12);  // s = 1, z = 0: exact
  t.backward(dot(t, y, t.constant(MD::Ones(1, 4))));
  // ds = sum (code - z) - x / s = 0; so d gamma = 0 here, and the test of a clipped case is the FD check above
  REQUIRE(std::abs(gup(0, 0)) < 1e-12);
}

TEST_CASE("LET's scales fused into the fake quantization: gradients by finite differences", "[autodiff][let]") {
  // x' = (x col) op row, then fake_quant with LWC; ragged groups of 4 over 10 columns, and 70 columns (more than
  // one 64-column chunk of the input-channel scale's sum)
  for (Eigen::Index C : {10, 70})
    for (RowScale op : {RowScale::none, RowScale::mul, RowScale::div}) {
      INFO(C << " columns, row op " << int(op));
      const FakeQuantSpec q{3, false, Grid::omniquant, C == 10 ? 4 : 32};
      const Eigen::Index ng = (C + q.group - 1) / q.group;
      const MD x = rnd(3, C, 40), col = rnd(1, C, 41, 0.5, 2), row = rnd(3, 1, 42, 0.5, 2);
      const MD up = rnd(3, ng, 43, 0.5, 3), low = rnd(3, ng, 44, 0.5, 3);
      check({x, col, row, up, low}, [q, op](Tape<double>& t, const std::vector<V>& v) {
        WeightScales<double> sc{v[1], op == RowScale::none ? V{} : v[2], op};
        // row unused without an op: add it to the probe so every input has a gradient
        const V y = probe(t, scaled_fake_quant(t, v[0], sc, q, v[3], v[4]));
        return op == RowScale::none ? add(t, y, dot(t, v[2], v[2])) : y;
      });
      // the row scale alone, on a constant weight (LET's case: the weight itself is not trained)
      if (op != RowScale::none)
        check({row, up}, [q, op, &x](Tape<double>& t, const std::vector<V>& v) {
          return probe(t, scaled_fake_quant(t, t.view(x.data(), x.rows(), x.cols()), WeightScales<double>{V{}, v[0], op}, q, v[1]));
        });
    }
  Tape<double> t;
  const MD x = rnd(2, 4, 45), bad = rnd(1, 3, 46);
  REQUIRE_THROWS_WITH(scaled_fake_quant(t, t.view(x.data(), 2, 4), WeightScales<double>{t.view(bad.data(), 1, 3), V{}, RowScale::none},
                                        FakeQuantSpec{4, false, Grid::minmax, 0}),
                      Catch::Contains("input-channel scale is 1x3, expected 1x4"));
}

TEST_CASE("LET's fused scales equal the unfused ops, and their gradients do not depend on the threads", "[autodiff][let]") {
  using MF = Mat<float>;
  // 18 groups of 32 and one of 24: without a row scale the backward runs over chunks of 8 groups (three here)
  const Eigen::Index R = 96, C = 600, ng = 600 / 32 + 1;
  const MF W = rnd(R, C, 50).cast<float>(), c0 = rnd(1, C, 51, 0.5, 2).cast<float>(), r0 = rnd(R, 1, 52, 0.5, 2).cast<float>();
  const MF up0 = rnd(R, ng, 53, 1, 4).cast<float>(), probe_w = rnd(R, C, 54).cast<float>();
  const FakeQuantSpec q{4, false, Grid::omniquant, 32};
  struct Out {
    MF y, gc, gr, gu;
  };
  const auto run = [&](bool fused, RowScale op) {
    Tape<float> t;
    MF c = c0, r = r0, u = up0, gc = MF::Zero(1, C), gr = MF::Zero(R, 1), gu = MF::Zero(R, ng);
    const Var<float> vc = t.parameter(c.data(), gc.data(), 1, C), vr = t.parameter(r.data(), gr.data(), R, 1);
    const Var<float> vu = t.parameter(u.data(), gu.data(), R, ng), w = t.view(W.data(), R, C);
    Var<float> y;
    if (fused) {
      y = scaled_fake_quant(t, w, WeightScales<float>{vc, op == RowScale::none ? Var<float>{} : vr, op}, q, vu);
    } else {
      const Var<float> a = mul_channels(t, w, vc);
      y = fake_quant(t, op == RowScale::none ? a : op == RowScale::mul ? mul_rows(t, a, vr) : div_rows(t, a, vr), q, vu);
    }
    t.backward(dot(t, y, t.view(probe_w.data(), R, C)));
    return Out{MF(y.val()), gc, gr, gu};
  };
  for (RowScale op : {RowScale::none, RowScale::mul, RowScale::div}) {
    INFO("row op " << int(op));
    const Out a = run(false, op), b = run(true, op);
    REQUIRE(a.y == b.y);  // the same float operations in the same order
    REQUIRE(a.gc == b.gc);  // each column's sum over rows in row order, as mul_channels
    REQUIRE((a.gr - b.gr).cwiseAbs().maxCoeff() <= 1e-5f * a.gr.cwiseAbs().maxCoeff());  // a row's sum: Eigen's order
    REQUIRE(a.gu == b.gu);
    set_num_threads(1);
    const Out s = run(true, op);
    set_num_threads(2);
    const Out p = run(true, op);
    REQUIRE(s.y == p.y);
    REQUIRE(s.gc == p.gc);
    REQUIRE(s.gr == p.gr);
    REQUIRE(s.gu == p.gu);
  }
}

TEST_CASE("the float forwards equal the model's ops and the quantizer's fake quantization", "[autodiff]") {
  using MF = Mat<float>;
  Tape<float> t;
  const MF x = rnd(8, 16, 1).cast<float>(), w = rnd(1, 16, 2, 0.5, 1.5).cast<float>(), W = rnd(12, 16, 3).cast<float>();
  // fake quantization with LWC == Quantizer::fake_quant with ClipRatios(sigmoid(logits)), bit for bit
  const MF up = rnd(12, 4, 4, 0.5, 4).cast<float>(), low = rnd(12, 4, 5, 0.5, 4).cast<float>();
  MatrixRM ru(12, 4), rl(12, 4);
  for (Eigen::Index i = 0; i < up.size(); ++i) ru.data()[i] = lwc_ratio(up.data()[i]), rl.data()[i] = lwc_ratio(low.data()[i]);
  for (Grid grid : {Grid::omniquant, Grid::minmax}) {
    Quantizer<Bits<3>, PerGroup<dynamic_group>, Asymmetric> q(4, grid);
    MatrixRM ref(12, 16);
    fake_quant(q, W, ref, ClipRatios{&ru, &rl});
    const Var<float> y = fake_quant(t, t.view(W.data(), 12, 16), FakeQuantSpec{3, false, grid, 4},
                                    t.view(up.data(), 12, 4), t.view(low.data(), 12, 4));
    REQUIRE(MatrixRM(y.val()) == ref);
  }
  // rmsnorm, linear, rope, attention, swiglu
  MatrixRM xn;
  rmsnorm(x, w.row(0).transpose(), 1e-5f, xn);
  REQUIRE(MatrixRM(rmsnorm(t, t.view(x.data(), 8, 16), t.view(w.data(), 1, 16), 1e-5f).val()) == xn);
  MatrixRM lin;
  linear(x, Linear{W, {}}, lin);
  REQUIRE(MatrixRM(ad::linear(t, t.view(x.data(), 8, 16), t.view(W.data(), 12, 16)).val()) == lin);
  MatrixRM r = x;
  lowbit::rope(r, 4, 4, 4, 10000.0f, RopeStyle::rotate_half);
  REQUIRE(MatrixRM(ad::rope(t, t.view(x.data(), 8, 16), 4, 4, 4, 10000.0f, RopeStyle::rotate_half).val()) == r);
  MatrixRM att;
  const MF kv = rnd(8, 8, 6).cast<float>();
  causal_attention(x, kv, kv, 4, 2, 4, 4, att);
  REQUIRE(MatrixRM(ad::causal_attention(t, t.view(x.data(), 8, 16), t.view(kv.data(), 8, 8), t.view(kv.data(), 8, 8), 4, 2, 4, 4).val()) == att);
  MatrixRM sg;
  lowbit::swiglu(x, xn, sg);
  REQUIRE(MatrixRM(ad::swiglu(t, t.view(x.data(), 8, 16), t.view(xn.data(), 8, 16)).val()) == sg);
}

TEST_CASE("the tape reuses its memory across steps and records nothing under NoGrad", "[autodiff]") {
  Tape<float> t(1024);
  AdamW<float> opt;
  const int p = opt.add("w", Mat<float>::Constant(1, 64, 0.5f), 1e-2);
  const Mat<float> x = rnd(256, 64, 1).cast<float>();
  std::size_t reserved = 0;
  for (int step = 0; step < 4; ++step) {
    const auto m = t.mark();
    const Var<float> y = mul_channels(t, t.view(x.data(), 256, 64), opt.var(t, p));
    const Var<float> loss = mse(t, y, t.view(x.data(), 256, 64));
    opt.zero_grad();
    t.backward(loss);
    opt.step();
    t.rewind(m);
    if (step == 1) reserved = t.arena().reserved_bytes();
    if (step > 1) REQUIRE(t.arena().reserved_bytes() == reserved);  // steady state: no new arena blocks
  }
  REQUIRE(t.steps() == 0);
  {
    NoGrad<float> ng(t);
    const Var<float> y = sigmoid(t, opt.var(t, p));
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE(t.steps() == 0);
  }
  REQUIRE_THROWS_WITH(t.backward(t.constant(Mat<float>::Ones(1, 1))), Catch::Contains("does not depend on any parameter"));
}

TEST_CASE("AdamW follows torch.optim.AdamW's update, weight decay and bias corrections", "[autodiff]") {
  AdamW<double> opt;
  const int p = opt.add("p", rnd(2, 3, 1), 0.05, 0.1);
  MD ref = opt[p].value, m = MD::Zero(2, 3), v = MD::Zero(2, 3);
  for (int step = 1; step <= 3; ++step) {
    const MD g = rnd(2, 3, 10 + step);
    opt[p].grad = g;
    opt.step();
    // torch/optim/adamw.py, written out in double
    ref *= 1 - 0.05 * 0.1;
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g.cwiseProduct(g);
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
    ref.array() -= (0.05 / bc1) * m.array() / (v.array().sqrt() / std::sqrt(bc2) + 1e-8);
    REQUIRE((opt[p].value - ref).cwiseAbs().maxCoeff() < 1e-14);
  }
}
