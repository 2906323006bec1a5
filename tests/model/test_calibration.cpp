#include <catch2/catch.hpp>
#include <lowbit/data/calibration.hpp>
#include <numeric>

using namespace lowbit;

TEST_CASE("sequential, random and concat-split windows", "[calibration]") {
  std::vector<int> s(1000);
  std::iota(s.begin(), s.end(), 0);
  Windows w = sequential_windows(s, 3, 100);
  REQUIRE(w.size() == 3);
  REQUIRE(w[2].front() == 200);
  REQUIRE(w[2].back() == 299);
  REQUIRE_THROWS_WITH(sequential_windows(s, 11, 100), Catch::Contains("too few for 11 windows of 100"));
  Windows r1 = random_windows(s, 5, 100, 42), r2 = random_windows(s, 5, 100, 42), r3 = random_windows(s, 5, 100, 43);
  REQUIRE(r1 == r2);
  REQUIRE(r1 != r3);
  for (const auto& win : r1) {
    REQUIRE(win.size() == 100);
    REQUIRE(win.back() - win.front() == 99);  // contiguous
    REQUIRE(win.front() >= 0);
    REQUIRE(win.back() < 1000);
  }
  // AWQ: skip empty and over-long samples, stop after n, concatenate, cut
  std::vector<std::vector<int>> samples = {{1, 2, 3}, {}, std::vector<int>(20, 9), {4, 5}, {6, 7, 8, 9}, {10}};
  Windows c = concat_split(samples, 3, 4);  // uses {1,2,3},{4,5},{6,7,8,9} -> 9 tokens -> 2 windows
  REQUIRE(c.size() == 2);
  REQUIRE(c[0] == std::vector<int>{1, 2, 3, 4});
  REQUIRE(c[1] == std::vector<int>{5, 6, 7, 8});
}

TEST_CASE("PaddleSlim jsonl: src/tgt strings or lists", "[calibration]") {
  const auto t = read_jsonl_texts("{\"src\": \"a\", \"tgt\": \"b\"}\n\n{\"src\": [\"c\", \"d\"], \"tgt\": [\"e\"]}\n", "c.jsonl");
  REQUIRE(t == std::vector<std::string>{"ab", "cde"});
  REQUIRE_THROWS_WITH(read_jsonl_texts("{\"src\": \"a\"}\n", "c.jsonl"), Catch::Contains("c.jsonl line 1: missing \"tgt\""));
  REQUIRE_THROWS_WITH(read_jsonl_texts("{\"src\": 1, \"tgt\": \"x\"}", "c.jsonl"), Catch::Contains("must be a string"));
  REQUIRE_THROWS_WITH(read_jsonl_texts("ok\n{\"src\":\"a\",\"tgt\":\"b\"}", "c.jsonl"), Catch::Contains("c.jsonl line 1"));
}
