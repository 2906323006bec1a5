// Activation quantizers (quant/activation.hpp) against a naive double-precision reference written here.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "lowbit/core/parallel.hpp"
#include "lowbit/quant/activation.hpp"

using namespace lowbit;

namespace {

// Activations with planted outlier channels (a few features 30x larger, as in LLM hidden states).
MatrixRM outlier_activations(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixRM x(rows, cols);
  for (Eigen::Index r = 0; r < rows; ++r)
    for (Eigen::Index c = 0; c < cols; ++c) x(r, c) = n(rng) * (c % 37 == 5 ? 30.0f : 1.0f) + (c % 11 == 3 ? 2.0f : 0.0f);
  return x;
}

// The reference formulas in double: scale and zero of a group, then clamp(round(x/s) + z, 0, qmax).
struct RefParams {
  double s, z;
};
RefParams ref_params(const ActQuant& a, double lo, double hi) {
  const double qmax = std::pow(2.0, a.bits) - 1.0, half = std::pow(2.0, a.bits - 1);
  if (a.grid == Grid::minmax) {
    if (a.symmetric) return {std::max(std::max(std::fabs(lo), std::fabs(hi)), 1e-5) / (half - 1.0), half};
    const double s = std::max(hi - lo, 1e-5) / qmax;
    return {s, std::clamp(-std::nearbyint(lo / s), 0.0, qmax)};
  }
  // omniquant
  if (a.symmetric) return {std::clamp(std::max(std::fabs(lo), std::fabs(hi)) / (half - 1.0), 1e-5, 1e4), half - 1.0};
  const double s = std::clamp((hi - lo) / qmax, 1e-5, 1e4);
  return {s, std::nearbyint(std::clamp(-lo / s, -1e4, 1e4))};
}

// Compares lowbit's fake-quantized group y with the reference on x; elements whose x/s lies within 1e-4 of a
// rounding tie may round either way in float vs double and are only required to stay within one step.
void check_group(const ActQuant& a, const float* x, const float* y, Eigen::Index n, double lo, double hi) {
  const RefParams p = ref_params(a, lo, hi);
  const double qmax = std::pow(2.0, a.bits) - 1.0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double t = double(x[i]) / p.s;
    const double ref = (std::clamp(std::nearbyint(t) + p.z, 0.0, qmax) - p.z) * p.s;
    const double frac = t - std::floor(t);
    if (std::fabs(frac - 0.5) < 1e-4) REQUIRE(std::fabs(double(y[i]) - ref) <= p.s * 1.0001);
    else REQUIRE(double(y[i]) == Approx(ref).margin(1e-6 * p.s * (qmax + 1)));
  }
}

}  // namespace

TEST_CASE("per-token dynamic activation quantization matches a double reference on every grid", "[quant][act]") {
  const MatrixRM x = outlier_activations(33, 173, 1);  // 173: not a multiple of any SIMD width
  for (Grid grid : {Grid::minmax, Grid::omniquant})
    for (bool sym : {false, true})
      for (int bits : {4, 6, 8}) {
        const ActQuant a{bits, ActGranularity::per_token, sym, grid};
        MatrixRM y = x;
        fake_quant_dynamic(a, y, y.cols(), "x");
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
          const double lo = x.row(r).minCoeff(), hi = x.row(r).maxCoeff();
          check_group(a, x.row(r).data(), y.row(r).data(), x.cols(), lo, hi);
          // within range, the error is at most half a step
          const RefParams p = ref_params(a, lo, hi);
          if (!sym) REQUIRE((y.row(r) - x.row(r)).cwiseAbs().maxCoeff() <= 0.5 * p.s * 1.0001 + 1e-6);
        }
      }
}

TEST_CASE("per-head activation quantization is per-token quantization of each head's slice", "[quant][act]") {
  const MatrixRM x = outlier_activations(20, 6 * 16, 2);
  const ActQuant a{4, ActGranularity::per_token, false, Grid::minmax};
  MatrixRM y = x;
  fake_quant_dynamic(a, y, 16, "q");
  for (int h = 0; h < 6; ++h) {
    MatrixRM slice = x.middleCols(h * 16, 16);
    fake_quant_dynamic(a, slice, 16, "slice");
    REQUIRE(MatrixRM(y.middleCols(h * 16, 16)) == slice);
  }
  REQUIRE(y != x);
  REQUIRE_THROWS_WITH(fake_quant_dynamic(a, y, 17, "q"), Catch::Contains("group width 17 does not divide 96"));
}

TEST_CASE("activation quantization gives the same bits for 1 and 2 threads", "[quant][act][parallel]") {
  const MatrixRM x = outlier_activations(512, 256, 3);
  const ActQuant a{8, ActGranularity::per_token, true, Grid::minmax};
  MatrixRM y1 = x, y2 = x;
  set_num_threads(1);
  fake_quant_dynamic(a, y1, y1.cols(), "x");
  set_num_threads(2);
  fake_quant_dynamic(a, y2, y2.cols(), "x");
  REQUIRE(y1 == y2);
  CodesRM c1, c2;
  Eigen::VectorXf s1, z1, s2, z2;
  set_num_threads(1);
  quantize_per_token(a, x, c1, s1, z1, "x");
  set_num_threads(2);
  quantize_per_token(a, x, c2, s2, z2, "x");
  REQUIRE(c1 == c2);
  REQUIRE(s1 == s2);
  // the codes dequantize to the fake-quantized values
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    for (Eigen::Index c = 0; c < x.cols(); ++c) REQUIRE((float(c1(r, c)) - z1[r]) * s1[r] == y1(r, c));
  // SmoothQuant's per-token absmax int8: codes within +-127 around the zero point 128
  REQUIRE(c1.minCoeff() >= 1);
}

TEST_CASE("static per-tensor activation ranges: min-max, EMA and percentile observers", "[quant][act]") {
  const MatrixRM a = outlier_activations(16, 64, 4), b = outlier_activations(16, 64, 5) * 2.0f;
  ActRangeObserver mm(ActObserver::minmax, false);
  mm.observe(a, "x");
  mm.observe(b, "x");
  const ActRange r = mm.range();
  REQUIRE(r.lo == std::min(a.minCoeff(), b.minCoeff()));
  REQUIRE(r.hi == std::max(a.maxCoeff(), b.maxCoeff()));
  // EMA, b = 0.9, bias-corrected: (0.1*0.9*h_a + 0.1*h_b) / (1 - 0.81), by hand
  ActRangeObserver ema(ActObserver::ema, true);
  ema.observe(a, "x");
  ema.observe(b, "x");
  const double ha = a.cwiseAbs().maxCoeff(), hb = b.cwiseAbs().maxCoeff();
  REQUIRE(ema.range().hi == Approx((0.09 * ha + 0.1 * hb) / 0.19).epsilon(1e-6));
  REQUIRE(ema.range().lo == -ema.range().hi);
  // percentile on 1..100 (nearest rank): the 90th percentile is 90, the 10th is 10
  MatrixRM v(10, 10);
  for (int i = 0; i < 100; ++i) v(i / 10, i % 10) = float(100 - i);
  ActRangeObserver pc(ActObserver::percentile, false, 90.0);
  pc.observe(v, "x");
  REQUIRE(pc.range().hi == 90.0f);
  REQUIRE(pc.range().lo == 10.0f);
  // fake quantization with a static range equals the per-tensor reference on that range
  const ActQuant q{8, ActGranularity::per_tensor, false, Grid::minmax};
  MatrixRM y = a;
  fake_quant_static(q, r, y, "x");
  for (Eigen::Index row = 0; row < a.rows(); ++row) check_group(q, a.row(row).data(), y.row(row).data(), a.cols(), r.lo, r.hi);
  REQUIRE_THROWS_WITH(fake_quant_static(q, ActRange{}, y, "attn_norm"), Catch::Contains("attn_norm") && Catch::Contains("not calibrated"));
  // dynamic per tensor: the range of the tensor itself
  MatrixRM d = a;
  fake_quant_tensor(q, d, "x");
  for (Eigen::Index row = 0; row < a.rows(); ++row)
    check_group(q, a.row(row).data(), d.row(row).data(), a.cols(), a.minCoeff(), a.maxCoeff());
  REQUIRE_THROWS_WITH((ActQuant{8, ActGranularity::per_token, false, Grid::minmax, true}.validate("--act-static")),
                      Catch::Contains("per-token ranges are dynamic"));
  REQUIRE_THROWS_WITH(ActRangeObserver(ActObserver::minmax, false).range(), Catch::Contains("no calibration data"));
}

TEST_CASE("non-finite activations and unsupported activation settings are clear errors", "[quant][act]") {
  MatrixRM x = outlier_activations(4, 32, 6);
  x(2, 7) = std::numeric_limits<float>::quiet_NaN();
  const ActQuant a{8, ActGranularity::per_token, false, Grid::minmax};
  REQUIRE_THROWS_WITH(fake_quant_dynamic(a, x, 32, "block 3 down_proj"),
                      Catch::Contains("block 3 down_proj") && Catch::Contains("token 2, feature 7"));
  REQUIRE_THROWS_WITH((ActQuant{9, ActGranularity::per_token, false, Grid::minmax}.validate("--abits")),
                      Catch::Contains("activation bits 9"));
  REQUIRE_THROWS_WITH((ActQuant{8, ActGranularity::per_token, false, Grid::ggml}.validate("--abits")),
                      Catch::Contains("ggml"));
  REQUIRE_THROWS_WITH(parse_act_granularity("per_row"), Catch::Contains("per_token or per_tensor"));
  MatrixRM off = outlier_activations(4, 32, 7), copy = off;
  fake_quant_dynamic(ActQuant{}, off, 32, "x");  // 16 bits: untouched
  REQUIRE(off == copy);
}
