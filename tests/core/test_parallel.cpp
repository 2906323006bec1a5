#include <catch2/catch.hpp>
#include <lowbit/core/error.hpp>
#include <lowbit/core/parallel.hpp>
#include <vector>

using namespace lowbit;

TEST_CASE("parallel_for visits every index once and rethrows the lowest-index error", "[parallel]") {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::vector<int> hits(1000, 0);
    parallel_for(1000, [&](std::int64_t i) { hits[i] += 1; });
    for (int h : hits) REQUIRE(h == 1);
    try {
      parallel_for(1000, [&](std::int64_t i) {
        if (i % 100 == 37) fail("bad index ", i);
      });
      FAIL("no exception");
    } catch (const error& e) {
      REQUIRE(std::string(e.what()) == "lowbit: bad index 37");
    }
    std::vector<int> chunks(103, 0);
    parallel_for_chunks(103, 10, [&](std::int64_t b, std::int64_t e) {
      for (auto i = b; i < e; ++i) chunks[i] += 1;
    });
    for (int h : chunks) REQUIRE(h == 1);
  }
  set_num_threads(2);
}
