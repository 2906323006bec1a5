#include <catch2/catch.hpp>
#include <lowbit/io/json.hpp>

using namespace lowbit;

TEST_CASE("json parses objects, arrays, numbers, escapes", "[json]") {
  auto v = json::parse(R"({"a": [1, -2.5e3, true, false, null], "s": "x\"\\\u00e9\ud83d\ude00", "o": {}})");
  REQUIRE(v.is_object());
  const auto& a = v.find("a")->arr;
  REQUIRE(a.size() == 5);
  REQUIRE(a[0].num == 1.0);
  REQUIRE(a[1].num == -2500.0);
  REQUIRE(a[2].b);
  REQUIRE(a[4].kind == json::Value::Kind::null);
  REQUIRE(v.find("s")->str == "x\"\\\xc3\xa9\xf0\x9f\x98\x80");
  REQUIRE(v.find("o")->obj.empty());
}

TEST_CASE("json rejects malformed input with the byte offset", "[json]") {
  for (const char* bad : {"{", "{\"a\":}", "[1,]", "\"abc", "{\"a\" 1}", "01x", "[1] 2", "\"\\q\"", "tru"})
    REQUIRE_THROWS_AS(json::parse(bad, "doc"), error);
  std::string deep(100, '[');
  REQUIRE_THROWS_WITH(json::parse(deep, "doc"), Catch::Contains("nesting"));
  REQUIRE_THROWS_WITH(json::parse("{\"a\":1,}", "hdr.json"), Catch::Contains("hdr.json: malformed JSON at byte"));
}
