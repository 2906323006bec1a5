#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <lowbit/core/half.hpp>

using namespace lowbit;

namespace {
// Independent reference: the nearest fp16 value by exhaustive comparison in double, ties to the even
// mantissa; overflow to inf at >= 65520 (half-way between 65504 and the next step 65536).
std::uint16_t nearest_half_double(float f) {
  const double x = std::fabs(double(f));
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (x >= 65520.0) return sign | 0x7c00;
  std::uint16_t best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  // candidates: the two fp16 values around x (found by scanning exponents)
  for (std::uint32_t h = 0; h < 0x7c00; ++h) {
    const double v = double(half_bits_to_float(static_cast<std::uint16_t>(h)));
    const double err = std::fabs(v - x);
    if (err < best_err || (err == best_err && (h & 1) == 0)) best = static_cast<std::uint16_t>(h), best_err = err;
    if (v > x) break;
  }
  return sign | best;
}
}  // namespace

TEST_CASE("fp16 -> float -> fp16 is the identity on every non-NaN half", "[half]") {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_bits_to_float(static_cast<std::uint16_t>(h));
    const bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
    if (nan) {
      REQUIRE(std::isnan(f));
      REQUIRE(((float_to_half_bits(f) >> 10) & 0x1f) == 0x1f);
      continue;
    }
    REQUIRE(float_to_half_bits(f) == h);
    // and agrees with Eigen's conversion
    REQUIRE(float(Eigen::half(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(h)))) == f);
  }
}

TEST_CASE("float -> fp16 rounds to nearest even like Eigen (F16C) and a double-precision search", "[half]") {
  // a spread of bit patterns over every exponent, plus the ties and boundaries
  for (std::uint64_t u = 0; u < 0x100000000ull; u += 65537) {
    const float f = bits_float(static_cast<std::uint32_t>(u));
    if (std::isnan(f)) continue;
    const std::uint16_t mine = float_to_half_bits(f);
    REQUIRE(mine == Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f)));
  }
  const float cases[] = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 2.9802322e-08f, 2.9802326e-08f,
                         5.9604645e-08f, 6.1035156e-05f, 6.1035152e-05f, 1.00048828125f, 1.00146484375f, 3.0e-7f,
                         -1.5e-5f, 1e30f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min()};
  for (float f : cases) REQUIRE(float_to_half_bits(f) == nearest_half_double(f));
}

TEST_CASE("bf16 conversions round to nearest even and agree with Eigen", "[half]") {
  for (std::uint64_t u = 0; u < 0x100000000ull; u += 4099 * 16 + 1) {
    const float f = bits_float(static_cast<std::uint32_t>(u));
    if (std::isnan(f)) {
      REQUIRE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
      continue;
    }
    REQUIRE(float_to_bf16_bits(f) == Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(f)));
  }
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_bits_to_float(static_cast<std::uint16_t>(b));
    if (!std::isnan(f)) REQUIRE(float_to_bf16_bits(f) == b);
  }
  // hand-computed ties: 1 + 2^-8 is half-way between 1 and 1 + 2^-7 -> even (1); 1 + 3*2^-8 -> 1 + 2^-6
  REQUIRE(float_to_bf16_bits(1.00390625f) == 0x3f80);
  REQUIRE(float_to_bf16_bits(1.01171875f) == 0x3f82);
}
