#include <catch2/catch.hpp>
#include <lowbit/quant/spec.hpp>

using namespace lowbit;

TEST_CASE("spec strings parse, print canonically and round-trip", "[spec]") {
  const QuantSpec a = parse_spec("w4a16g128");
  REQUIRE(a.wbits == 4);
  REQUIRE(a.abits == 16);
  REQUIRE(a.group_size == 128);
  REQUIRE_FALSE(a.symmetric);
  REQUIRE(a.grid == Grid::minmax);
  const QuantSpec b = parse_spec("W8A8");
  REQUIRE(b.wbits == 8);
  REQUIRE(b.abits == 8);
  REQUIRE(b.group_size == -1);
  REQUIRE(to_string(b) == "w8a8");
  const QuantSpec c = parse_spec("w3a16g32-sym-gptq-ragged");
  REQUIRE(c.symmetric);
  REQUIRE(c.grid == Grid::gptq);
  REQUIRE(c.allow_ragged);
  for (const char* s : {"w4a16g128", "w8a8", "w3a16", "w2a16g64-omniquant", "w4a16g32-sym-gptq-ragged", "w6a6-sym",
                        "w4a16g32-ggml-ragged"})  // ggml blocks with a shorter last group (GGUF stores such rows as F16)
    REQUIRE(to_string(parse_spec(s)) == s);
  REQUIRE(parse_spec("w4a16g-1").group_size == -1);
}

TEST_CASE("bad specs name the field", "[spec]") {
  REQUIRE_THROWS_WITH(parse_spec("w9a16"), Catch::Contains("wbits 9"));
  REQUIRE_THROWS_WITH(parse_spec("w4a1"), Catch::Contains("abits 1"));
  REQUIRE_THROWS_WITH(parse_spec("w4a16g0"), Catch::Contains("group_size 0"));
  REQUIRE_THROWS_WITH(parse_spec("x4a16"), Catch::Contains("must start with w"));
  REQUIRE_THROWS_WITH(parse_spec("w4"), Catch::Contains("expected a<bits>"));
  REQUIRE_THROWS_WITH(parse_spec("w4a16-fast"), Catch::Contains("unknown option 'fast'"));
  REQUIRE_THROWS_WITH(visit(parse_spec("w16a8"), [](auto) {}), Catch::Contains("weights are not quantized"));
}

TEST_CASE("visit dispatches to the compiled quantizer the spec names", "[spec]") {
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {false, true})
      for (int g : {-1, 64}) {
        QuantSpec s{bits, 16, g, sym, Grid::gptq, false};
        visit(s, [&](auto q) {
          using Q = decltype(q);
          REQUIRE(Q::bits == bits);
          REQUIRE(Q::symmetric == sym);
          REQUIRE(quant_traits<Q>::has_zero_point == !sym);
          REQUIRE(q.grid == Grid::gptq);
          if (g > 0) REQUIRE(q.group_size == g);
          else REQUIRE(Q::static_group == row_group);
        });
      }
}
