// Hand-computed cases for each grid convention (values chosen so every scale is exact in binary).
#include <catch2/catch.hpp>
#include <lowbit/quant/quantizer.hpp>

using namespace lowbit;

namespace {
template <class Q>
MatrixRM fq_row(const Q& q, std::vector<float> v, QuantParams* out = nullptr) {
  MatrixRM x = Eigen::Map<MatrixRM>(v.data(), 1, Eigen::Index(v.size()));
  MatrixRM y(1, x.cols());
  QuantParams P = fake_quant(q, x, y);
  if (out) *out = P;
  return y;
}
using A4 = Quantizer<Bits<4>, PerChannel, Asymmetric>;
using S4 = Quantizer<Bits<4>, PerChannel, Symmetric>;
}  // namespace

TEST_CASE("minmax asymmetric: s = (max-min)/15, z = -round(min/s), ties to even", "[grid]") {
  QuantParams P;
  MatrixRM y = fq_row(A4{}, {-1.0f, 0.875f, 0.625f, 2.75f, 0.0f}, &P);
  REQUIRE(P.scale(0, 0) == 0.25f);  // 3.75 / 15
  REQUIRE(P.zero(0, 0) == 4.0f);
  REQUIRE(y(0, 1) == 1.0f);  // 3.5 -> 4 (even)
  REQUIRE(y(0, 2) == 0.5f);  // 2.5 -> 2 (even)
  REQUIRE(y(0, 0) == -1.0f);
  REQUIRE(y(0, 3) == 2.75f);
  REQUIRE(y(0, 4) == 0.0f);
}

TEST_CASE("minmax symmetric: s = absmax/7, codes 1..15 (AutoAWQ / LLMC)", "[grid]") {
  QuantParams P;
  MatrixRM y = fq_row(S4{}, {-7.0f, 3.5f, 2.5f, 7.0f}, &P);
  REQUIRE(P.scale(0, 0) == 1.0f);
  REQUIRE(P.zero(0, 0) == 8.0f);
  REQUIRE(y(0, 0) == -7.0f);
  REQUIRE(y(0, 1) == 4.0f);
  REQUIRE(y(0, 2) == 2.0f);
  REQUIRE(y(0, 3) == 7.0f);
}

TEST_CASE("gptq grid: range includes 0, symmetric uses 2*absmax/15 with z = 8", "[grid]") {
  QuantParams P;
  fq_row(A4{Grid::gptq}, {1.0f, 3.75f}, &P);  // range widened to [0, 3.75]
  REQUIRE(P.scale(0, 0) == 0.25f);
  REQUIRE(P.zero(0, 0) == 0.0f);
  fq_row(A4{Grid::minmax}, {1.0f, 3.75f}, &P);  // the AWQ grid does not include 0
  REQUIRE(P.zero(0, 0) == 0.0f);
  REQUIRE(P.scale(0, 0) == Approx(2.75f / 15));
  MatrixRM y = fq_row(S4{Grid::gptq}, {-7.5f, 7.5f, 1.0f}, &P);
  REQUIRE(P.scale(0, 0) == 1.0f);
  REQUIRE(P.zero(0, 0) == 8.0f);
  REQUIRE(y(0, 0) == -8.0f);  // -7.5 rounds to -8 (even): code 0
  REQUIRE(y(0, 1) == 7.0f);   // +7.5 rounds to 8, clamps to code 15
  fq_row(A4{Grid::gptq}, {0.0f, 0.0f}, &P);  // all zero -> [-1, 1]
  REQUIRE(P.scale(0, 0) == 2.0f / 15);
  REQUIRE(P.zero(0, 0) == std::nearbyint(1.0f / (2.0f / 15)));
}

TEST_CASE("omniquant grid: symmetric z = 7 reaches +8, asymmetric zero is not clamped", "[grid]") {
  QuantParams P;
  MatrixRM y = fq_row(S4{Grid::omniquant}, {-7.0f, 7.0f, 8.0f}, &P);
  REQUIRE(P.scale(0, 0) == Approx(8.0f / 7));  // absmax 8
  REQUIRE(P.zero(0, 0) == 7.0f);
  y = fq_row(A4{Grid::omniquant}, {2.0f, 17.0f, 9.0f}, &P);
  REQUIRE(P.scale(0, 0) == 1.0f);
  REQUIRE(P.zero(0, 0) == -2.0f);
  REQUIRE(y(0, 0) == 2.0f);
  REQUIRE(y(0, 1) == 17.0f);
  REQUIRE(y(0, 2) == 9.0f);
}

TEST_CASE("ggml grid: llama.cpp's Q4_0 / Q4_1 reference formulas (truncating rounding)", "[grid]") {
  QuantParams P;
  MatrixRM y = fq_row(S4{Grid::ggml}, {1.0f, -8.0f, 3.0f, 0.5f}, &P);
  REQUIRE(P.scale(0, 0) == 1.0f);  // d = -8 / -8
  REQUIRE(y(0, 0) == 1.0f);
  REQUIRE(y(0, 1) == -8.0f);
  REQUIRE(y(0, 3) == 1.0f);  // 0.5 + 8.5 = 9 -> code 9: half away from zero, unlike the other grids
  y = fq_row(S4{Grid::ggml}, {8.0f, -2.0f}, &P);
  REQUIRE(P.scale(0, 0) == -1.0f);  // d = 8 / -8: the signed max sets the sign
  REQUIRE(y(0, 0) == 8.0f);
  REQUIRE(y(0, 1) == -2.0f);
  y = fq_row(A4{Grid::ggml}, {0.0f, 3.75f, 0.125f}, &P);
  REQUIRE(P.scale(0, 0) == 0.25f);
  REQUIRE(P.zero(0, 0) == 0.0f);  // the offset m = min
  REQUIRE(y(0, 2) == 0.25f);      // 0.5 + 0.5 = 1 -> code 1
}
