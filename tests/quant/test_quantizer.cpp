#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <lowbit/core/half.hpp>
#include <lowbit/quant/spec.hpp>
#include <random>

using namespace lowbit;

namespace {

MatrixRM random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  MatrixRM m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

bool bit_equal(const MatrixRM& a, const MatrixRM& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

// Naive reference written here, independently of grid.hpp: the per-group formulas of the AWQ (minmax) and
// GPTQ references in float32 exactly as torch evaluates them.
MatrixRM naive_fake_quant(const MatrixRM& x, int bits, bool sym, Grid grid, int group) {
  MatrixRM y(x.rows(), x.cols());
  const float qmax = float((1 << bits) - 1);
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    for (Eigen::Index c0 = 0; c0 < x.cols(); c0 += group) {
      const Eigen::Index n = std::min<Eigen::Index>(group, x.cols() - c0);
      float mn = x(r, c0), mx = x(r, c0);
      for (Eigen::Index c = c0; c < c0 + n; ++c) mn = std::min(mn, x(r, c)), mx = std::max(mx, x(r, c));
      float s, z;
      if (grid == Grid::minmax && !sym) {
        s = std::max(mx - mn, 1e-5f) / qmax;
        z = std::min(std::max(-std::nearbyint(mn / s), 0.0f), qmax);
      } else if (grid == Grid::minmax && sym) {
        s = std::max(std::max(-mn, mx), 1e-5f) / float((1 << (bits - 1)) - 1);
        z = float(1 << (bits - 1));
      } else {  // gptq
        float lo = std::min(mn, 0.0f), hi = std::max(mx, 0.0f);
        if (sym) { hi = std::max(-lo, hi); if (lo < 0) lo = -hi; }
        if (lo == 0 && hi == 0) lo = -1, hi = 1;
        s = (hi - lo) / qmax;
        if (s == 0) lo = -1, s = 2 / qmax;  // lowbit's documented guard for underflowing ranges
        z = sym ? (qmax + 1) / 2 : std::nearbyint(-lo / s);
      }
      for (Eigen::Index c = c0; c < c0 + n; ++c) {
        const float q = std::min(std::max(std::nearbyint(x(r, c) / s) + z, 0.0f), qmax);
        y(r, c) = (q - z) * s;
      }
    }
  return y;
}

// Rows that stress the grids: all equal, all zero, all positive, all negative, denormal, huge range,
// exact half-way points, one outlier.
MatrixRM adversarial(Eigen::Index cols) {
  MatrixRM m = random_matrix(10, cols, 99);
  m.row(0).setConstant(0.37f);
  m.row(1).setZero();
  m.row(2) = m.row(2).cwiseAbs();
  m.row(3) = -m.row(3).cwiseAbs();
  for (Eigen::Index c = 0; c < cols; ++c) m(4, c) = float(c % 7) * std::numeric_limits<float>::denorm_min() * 3;
  for (Eigen::Index c = 0; c < cols; ++c) m(5, c) = (c % 2 ? 1.0f : -1.0f) * std::pow(10.0f, float(c % 60) - 30.0f);
  for (Eigen::Index c = 0; c < cols; ++c) m(6, c) = 0.25f * float(int(c % 31) - 15) + 0.125f;  // ties at s=0.25
  m(7, cols / 2) = 1000.0f;
  for (Eigen::Index c = 0; c < cols; ++c) m(8, c) = -0.0f;
  return m;
}

const int kLengths[] = {1, 7, 31, 32, 33, 127, 128, 129, 4095};

}  // namespace

TEST_CASE("SIMD row kernels are bit-identical to their scalar _ref twins", "[quant][simd]") {
  for (int n : kLengths) {
    MatrixRM x = random_matrix(1, n, std::uint32_t(n));
    MatrixRM adv = adversarial(n);
    for (MatrixRM* m : {&x, &adv})
      for (Eigen::Index r = 0; r < m->rows(); ++r) {
        const float* p = m->row(r).data();
        float a0, a1, b0, b1;
        REQUIRE(simd::minmax_row(p, n, a0, a1) == simd::minmax_row_ref(p, n, b0, b1));
        REQUIRE(float_bits(a0) == float_bits(b0));
        REQUIRE(float_bits(a1) == float_bits(b1));
        {  // the places of the max and min: counted and first-found as the plain loop written here
          const simd::Extremes e = simd::extremes_row(p, n, a1, a0), f = simd::extremes_row_ref(p, n, a1, a0);
          int nmx = 0, nmn = 0;
          std::int64_t fmx = -1, fmn = -1;
          for (int i = 0; i < n; ++i) {
            if (p[i] == a1 && nmx++ == 0) fmx = i;
            if (p[i] == a0 && nmn++ == 0) fmn = i;
          }
          REQUIRE((e.n_max == nmx && e.n_min == nmn && e.first_max == fmx && e.first_min == fmn));
          REQUIRE((f.n_max == nmx && f.n_min == nmn && f.first_max == fmx && f.first_min == fmn));
          REQUIRE((nmx >= 1 && nmn >= 1));
        }
        for (float s : {0.25f, 1e-5f / 15, 0.0371f, 3.0e4f})
          for (float z : {0.0f, 7.0f, 8.0f, -3.0f}) {
            std::vector<float> y1(n), y2(n);
            std::vector<std::uint8_t> c1(n), c2(n);
            simd::fake_quant_row(p, y1.data(), n, s, z, 15.0f);
            simd::fake_quant_row_ref(p, y2.data(), n, s, z, 15.0f);
            REQUIRE(std::memcmp(y1.data(), y2.data(), 4 * std::size_t(n)) == 0);
            simd::quantize_row(p, c1.data(), n, s, z, 255.0f);
            simd::quantize_row_ref(p, c2.data(), n, s, z, 255.0f);
            REQUIRE(c1 == c2);
            // the STE backward: the same bits as its twin and as the plain loop written here, and the sum a
            // double loop gives
            const MatrixRM dy = random_matrix(1, n, std::uint32_t(n + 11));
            std::vector<float> dx1(std::size_t(n), 0.5f), dx2 = dx1;
            const float g1 = simd::fake_quant_grad_row(p, dy.data(), dx1.data(), n, s, z, 15.0f);
            const float g2 = simd::fake_quant_grad_row_ref(p, dy.data(), dx2.data(), n, s, z, 15.0f);
            REQUIRE(float_bits(g1) == float_bits(g2));
            REQUIRE(std::memcmp(dx1.data(), dx2.data(), 4 * std::size_t(n)) == 0);
            REQUIRE(float_bits(simd::fake_quant_grad_row(p, dy.data(), nullptr, n, s, z, 15.0f)) == float_bits(g1));
            double naive = 0, mag = 0;
            float plain = 0;
            for (int i = 0; i < n; ++i) {
              const float v = p[i] / s, c = std::nearbyint(v) + z;
              const bool pass = c >= 0.0f && c <= 15.0f;
              plain += dy(0, i) * ((std::clamp(c, 0.0f, 15.0f) - z) - (pass ? v : 0.0f));
              const double t = double(dy(0, i)) * ((double(std::clamp(c, 0.0f, 15.0f)) - z) - (pass ? double(v) : 0.0));
              naive += t, mag += std::abs(t);
              REQUIRE(dx1[std::size_t(i)] == (pass ? 0.5f + dy(0, i) : 0.5f));
            }
            REQUIRE(float_bits(plain) == float_bits(g1));
            REQUIRE(std::isfinite(mag));
            REQUIRE(std::abs(g1 - naive) <= 1e-4 * mag + 1e-30);
          }
      }
  }
}

TEST_CASE("fake_quant_grad_groups: each group's sum and dx the bits of fake_quant_grad_row on that group alone",
          "[quant][simd]") {
  // groups side by side in chunks of 8, 4 and 1, lengths around the SIMD width and the kernel's 8-vector stretch
  for (int k : {1, 3, 4, 5, 8, 9, 13, 17})
    for (int w : {1, 7, 16, 31, 128, 129, 200}) {
      const Eigen::Index n = Eigen::Index(k) * w;
      MatrixRM x = random_matrix(1, n, std::uint32_t(k * 1000 + w));
      const MatrixRM adv = adversarial(n), dy = random_matrix(1, n, std::uint32_t(k * 1000 + w + 1));
      for (Eigen::Index i = 0; i < n; ++i)
        if (i / w % 2) x(0, i) = adv(Eigen::Index(i / w % 9), i);  // every other group from an adversarial row
      const std::size_t nk = static_cast<std::size_t>(k);
      std::vector<float> s(nk), z(nk);
      for (int j = 0; j < k; ++j) s[std::size_t(j)] = 0.0371f * float(j + 1), z[std::size_t(j)] = float(j % 9) - 1.0f;
      std::vector<float> ds(nk), ds_ref(nk), dx(static_cast<std::size_t>(n), 0.5f), dx_one = dx, dx_ref = dx;
      simd::fake_quant_grad_groups(x.data(), dy.data(), dx.data(), k, w, s.data(), z.data(), 15.0f, ds.data());
      simd::fake_quant_grad_groups_ref(x.data(), dy.data(), dx_ref.data(), k, w, s.data(), z.data(), 15.0f, ds_ref.data());
      std::vector<float> ds_null(nk);
      simd::fake_quant_grad_groups(x.data(), dy.data(), nullptr, k, w, s.data(), z.data(), 15.0f, ds_null.data());
      for (int j = 0; j < k; ++j) {
        const std::size_t o = std::size_t(j) * std::size_t(w);
        const float one = simd::fake_quant_grad_row(x.data() + o, dy.data() + o, dx_one.data() + o, w, s[std::size_t(j)],
                                                    z[std::size_t(j)], 15.0f);
        INFO("k " << k << ", w " << w << ", group " << j);
        REQUIRE(float_bits(ds[std::size_t(j)]) == float_bits(one));
        REQUIRE(float_bits(ds_ref[std::size_t(j)]) == float_bits(one));
        REQUIRE(float_bits(ds_null[std::size_t(j)]) == float_bits(one));
      }
      REQUIRE(std::memcmp(dx.data(), dx_one.data(), 4 * std::size_t(n)) == 0);
      REQUIRE(std::memcmp(dx_ref.data(), dx_one.data(), 4 * std::size_t(n)) == 0);
    }
}

TEST_CASE("quantizer matches a naive reference written in the test, bit for bit", "[quant]") {
  for (int bits = 2; bits <= 8; ++bits)
    for (Grid grid : {Grid::minmax, Grid::gptq})
      for (bool sym : {false, true})
        for (int group : {32, 128, 129}) {
          MatrixRM x = random_matrix(17, 258, std::uint32_t(bits * 100 + group));
          x.bottomRows(10) = adversarial(258);
          QuantSpec spec;
          spec.wbits = bits;
          spec.abits = 16;
          spec.group_size = group;
          spec.symmetric = sym;
          spec.grid = grid;
          spec.allow_ragged = true;
          MatrixRM y(x.rows(), x.cols());
          visit(spec, [&](auto q) { fake_quant(q, x, y); });
          INFO("bits " << bits << " grid " << to_string(grid) << " sym " << sym << " group " << group);
          REQUIRE(bit_equal(y, naive_fake_quant(x, bits, sym, grid, group)));
        }
}

TEST_CASE("quantize / dequantize / fake_quant properties", "[quant]") {
  for (int bits = 2; bits <= 8; ++bits)
    for (Grid grid : {Grid::minmax, Grid::gptq, Grid::omniquant, Grid::ggml})
      for (bool sym : {false, true})
        for (int group : {-1, 32, 64}) {
          QuantSpec spec{bits, 16, group, sym, grid, false};
          MatrixRM x = random_matrix(9, 64 * 3, std::uint32_t(bits + 31 * group));
          x.bottomRows(9) = adversarial(64 * 3).topRows(9);
          INFO(to_string(spec));
          visit(spec, [&](auto q) {
            using Q = decltype(q);
            MatrixRM y(x.rows(), x.cols());
            const QuantParams P = fake_quant(q, x, y);
            CodesRM codes;
            quantize(q, x, P, codes);
            MatrixRM d(x.rows(), x.cols());
            dequantize(q, codes, P, d);
            REQUIRE(bit_equal(d, y));                 // fake_quant == dequantize(quantize(.))
            REQUIRE(codes.maxCoeff() <= Q::qmax);     // codes in range
            MatrixRM y2(x.rows(), x.cols());
            fake_quant(q, y, P, y2);
            REQUIRE(bit_equal(y2, y));                // idempotent under the same parameters
            MatrixRM inplace = x;
            fake_quant(q, inplace, inplace);
            REQUIRE(bit_equal(inplace, y));           // in-place gives the same
            const GroupLayout L = group_layout(q, x.rows(), x.cols());
            for (Eigen::Index r = 0; r < x.rows(); ++r)
              for (Eigen::Index c = 0; c < x.cols(); ++c) {
                const GroupParams p = P.at(r, c / L.group);
                REQUIRE(std::isfinite(y(r, c)));
                const float lo = dequantize_value(grid, sym, 0.0f, p), hi = dequantize_value(grid, sym, float(Q::qmax), p);
                if (x(r, c) >= std::min(lo, hi) && x(r, c) <= std::max(lo, hi))  // inside the clip range
                {
                  // ggml adds 2^(b-1) + 0.5 before truncating, which costs up to one float ulp of 2^b
                  const float slack = grid == Grid::ggml ? float(Q::qmax + 1) * 1.2e-7f : 1e-5f;
                  REQUIRE(std::fabs(x(r, c) - y(r, c)) <= std::fabs(p.scale) * (0.5f + slack) + 1e-30f);
                }
                if (!sym && grid != Grid::ggml && x(r, c) == 0.0f && lo <= 0.0f && hi >= 0.0f)
                  REQUIRE(y(r, c) == 0.0f);           // zero is exact in asymmetric mode
              }
          });
        }
}

TEST_CASE("results are bitwise identical for 1 and 2 threads", "[quant][threads]") {
  MatrixRM x = random_matrix(301, 512, 7);
  for (auto spec : {"w4a16g128", "w3a16g32-sym-gptq", "w8a16", "w2a16g64-omniquant"}) {
    const QuantSpec s = parse_spec(spec);
    MatrixRM y1(x.rows(), x.cols()), y2(x.rows(), x.cols());
    set_num_threads(1);
    visit(s, [&](auto q) { fake_quant(q, x, y1); });
    set_num_threads(2);
    visit(s, [&](auto q) { fake_quant(q, x, y2); });
    REQUIRE(bit_equal(y1, y2));
  }
}

TEST_CASE("per-tensor and per-token granularity", "[quant]") {
  MatrixRM x = random_matrix(13, 40, 3);
  Quantizer<Bits<8>, PerTensor, Symmetric> qt;
  MatrixRM y(13, 40);
  QuantParams P = fake_quant(qt, x, y);
  REQUIRE(P.scale.size() == 1);
  REQUIRE(P.scale(0, 0) == x.cwiseAbs().maxCoeff() / 127.0f);
  Quantizer<Bits<8>, PerToken, Symmetric> qk;
  P = fake_quant(qk, x, y);
  REQUIRE(P.scale.rows() == 13);
  REQUIRE(P.scale.cols() == 1);
  for (int r = 0; r < 13; ++r) REQUIRE(P.scale(r, 0) == x.row(r).cwiseAbs().maxCoeff() / 127.0f);
}

TEST_CASE("ragged last group: an error by default, the references' column-slice convention when allowed", "[quant]") {
  MatrixRM x = random_matrix(8, 172, 11);
  MatrixRM y(8, 172);
  Quantizer<Bits<4>, PerGroup<32>, Asymmetric> strict;
  REQUIRE_THROWS_WITH(fake_quant(strict, x, y, {}, "down_proj"),
                      Catch::Contains("down_proj") && Catch::Contains("does not divide the row length 172"));
  Quantizer<Bits<4>, PerGroup<32>, Asymmetric> ragged(32, Grid::minmax, true);
  QuantParams P = fake_quant(ragged, x, y);
  REQUIRE(P.scale.cols() == 6);
  // equals quantizing columns [0,160) with g32 and [160,172) as one group of 12
  MatrixRM a = x.leftCols(160), b = x.rightCols(12), ya(8, 160), yb(8, 12);
  fake_quant(strict, a, ya);
  fake_quant(Quantizer<Bits<4>, PerChannel, Asymmetric>{}, b, yb);
  REQUIRE(bit_equal(MatrixRM(y.leftCols(160)), ya));
  REQUIRE(bit_equal(MatrixRM(y.rightCols(12)), yb));
}

TEST_CASE("clip ratios scale the range before the parameters (OmniQuant LWC)", "[quant]") {
  MatrixRM x = random_matrix(4, 64, 5);
  Quantizer<Bits<4>, PerGroup<32>, Asymmetric> q(32, Grid::omniquant);
  MatrixRM up = MatrixRM::Constant(4, 2, 0.5f), low = MatrixRM::Constant(4, 2, 0.75f);
  QuantParams P = compute_params(q, x, ClipRatios{&up, &low});
  for (int r = 0; r < 4; ++r)
    for (int g = 0; g < 2; ++g) {
      const float mx = x.row(r).segment(32 * g, 32).maxCoeff() * 0.5f, mn = x.row(r).segment(32 * g, 32).minCoeff() * 0.75f;
      const GroupParams e = group_params(Grid::omniquant, 4, false, mn, mx, 0.0f);
      REQUIRE(P.scale(r, g) == e.scale);
      REQUIRE(P.zero(r, g) == e.zero);
    }
  MatrixRM wrong = MatrixRM::Constant(3, 2, 1.0f);
  REQUIRE_THROWS_WITH(compute_params(q, x, ClipRatios{&wrong, nullptr}), Catch::Contains("clip ratios are 3x2"));
}

TEST_CASE("non-finite input is an error naming row and column", "[quant]") {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()})
    for (int cols : {20, 200}) {
      MatrixRM x = random_matrix(6, cols, 1);
      x(3, 17) = bad;
      MatrixRM y(6, cols);
      Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric> q(cols == 20 ? 20 : 40);
      REQUIRE_THROWS_WITH(fake_quant(q, x, y, {}, "wq"), Catch::Contains("wq: non-finite value") &&
                                                             Catch::Contains("row 3, column 17"));
      REQUIRE_THROWS_WITH(fake_quant(Quantizer<Bits<8>, PerTensor, Symmetric>{}, x, y), Catch::Contains("row 3, column 17"));
    }
  MatrixRM huge(1, 2);
  huge << -3e38f, 3e38f;
  MatrixRM y(1, 2);
  REQUIRE_THROWS_WITH(fake_quant(Quantizer<Bits<4>, PerChannel, Asymmetric>{}, huge, y),
                      Catch::Contains("not representable in float32"));
}

TEST_CASE("bad shapes and codes are errors", "[quant]") {
  MatrixRM x = random_matrix(4, 64, 2), y(4, 63);
  Quantizer<Bits<4>, PerGroup<32>, Asymmetric> q;
  REQUIRE_THROWS_WITH(fake_quant(q, x, y), Catch::Contains("output is 4x63"));
  QuantParams P = compute_params(q, x);
  MatrixRM x2 = random_matrix(5, 64, 2);
  CodesRM codes;
  REQUIRE_THROWS_WITH(quantize(q, x2, P, codes), Catch::Contains("do not match"));
  quantize(q, x, P, codes);
  codes(1, 2) = 16;
  MatrixRM d(4, 64);
  REQUIRE_THROWS_WITH(dequantize(q, codes, P, d), Catch::Contains("code 16 at row 1, column 2"));
  Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric> q0(0);
  REQUIRE_THROWS_WITH(compute_params(q0, x), Catch::Contains("group size 0 must be positive"));
  MatrixRM empty(0, 5);
  REQUIRE_THROWS_WITH(compute_params(q, empty), Catch::Contains("empty"));
}

TEST_CASE("bits per weight counts codes plus fp16 scale (and zero)", "[quant]") {
  REQUIRE(bits_per_weight(Quantizer<Bits<4>, PerGroup<128>, Asymmetric>{}, 4096, 4096) == Approx(4.25));
  REQUIRE(bits_per_weight(Quantizer<Bits<4>, PerGroup<128>, Symmetric>{}, 4096, 4096) == Approx(4.125));
  REQUIRE(bits_per_weight(Quantizer<Bits<8>, PerChannel, Symmetric>{}, 4096, 4096) == Approx(8 + 16.0 / 4096));
}

TEST_CASE("degenerate_groups counts the groups whose fake-quantized error exceeds half a step", "[quantizer][degenerate]") {
  // Independent invariant: a group the grid holds is reproduced within half a step (s/2) everywhere; a group
  // of one sign on the minmax grid loses its offset, so its error is about |min| (measured on the naive reference).
  using Q4 = Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>;
  using Q2 = Quantizer<Bits<2>, PerGroup<dynamic_group>, Asymmetric>;
  MatrixRM W = random_matrix(16, 95, 11);
  for (Eigen::Index r = 0; r < W.rows(); r += 3)
    for (Eigen::Index c = 32; c < 64; ++c) W(r, c) = std::fabs(W(r, c)) + 0.5f;  // positive groups in every 3rd row
  for (Eigen::Index r = 0; r < W.rows(); ++r) W(r, 94) = r == 7 ? 0.0f : 0.25f * float(r + 1);
  for (int g : {32, 47}) {  // 95 = 2 x 32 + 31, or 2 x 47 + a 1-wide ragged tail (a constant: degenerate unless 0)
    for (int bits : {2, 4}) {
      const MatrixRM ref = naive_fake_quant(W, bits, false, Grid::minmax, g);
      std::int64_t expected = 0;
      for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index c0 = 0; c0 < W.cols(); c0 += g) {
          const Eigen::Index n = std::min<Eigen::Index>(g, W.cols() - c0);
          const float mn = W.row(r).segment(c0, n).minCoeff(), mx = W.row(r).segment(c0, n).maxCoeff();
          const float s = std::max(mx - mn, 1e-5f) / float((1 << bits) - 1);
          const float err = (W.row(r).segment(c0, n) - ref.row(r).segment(c0, n)).cwiseAbs().maxCoeff();
          expected += err > 0.5f * s * 1.01f;
        }
      const std::int64_t got = bits == 4 ? degenerate_groups(Q4(g, Grid::minmax, true), W) : degenerate_groups(Q2(g, Grid::minmax, true), W);
      CAPTURE(bits, g);
      REQUIRE(expected >= 5);
      REQUIRE(got == expected);
    }
  }
  // grids that include zero in every range never have one, nor does the symmetric minmax grid
  REQUIRE(degenerate_groups(Q4(47, Grid::gptq, true), W) == 0);
  REQUIRE(degenerate_groups(Q4(47, Grid::omniquant, true), W) == 0);
  REQUIRE(degenerate_groups(Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric>(47, Grid::minmax, true), W) == 0);
}
