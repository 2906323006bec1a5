#include <catch2/catch.hpp>
#include <lowbit/core/error.hpp>
#include <lowbit/core/gemm.hpp>
#include <lowbit/core/parallel.hpp>
#include <algorithm>
#include <array>
#include <new>
#include <random>
#include <string>
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

TEST_CASE("matmul_nt: the same bits for 1 and 2 threads on a long inner dimension, close to a double product", "[parallel][gemm]") {
  std::mt19937 g(3);
  std::normal_distribution<float> nd;
  lowbit::MatrixRM A(300, 2048), B(96, 2048), C1, C2;
  for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = nd(g);
  for (Eigen::Index i = 0; i < B.size(); ++i) B.data()[i] = nd(g);
  lowbit::set_num_threads(1);
  lowbit::matmul_nt(A, B, C1);
  lowbit::set_num_threads(2);
  lowbit::matmul_nt(A, B, C2);
  REQUIRE(C1 == C2);
  const Eigen::MatrixXd ref = A.cast<double>() * B.cast<double>().transpose();
  REQUIRE((C1.cast<double>() - ref).cwiseAbs().maxCoeff() <= 1e-3);
}

TEST_CASE("product_tiles cover the output with an even number of fixed tiles of about 1024", "[parallel][gemm]") {
  for (const auto& mn : std::vector<std::array<Eigen::Index, 2>>{{1, 1}, {1, 32000}, {7, 3}, {256, 172}, {512, 5632},
                                                                {512, 256}, {5632, 2048}, {2100, 2100}, {4096, 3000}}) {
    const ProductTiles t = product_tiles(mn[0], mn[1]);
    INFO("m " << mn[0] << ", n " << mn[1] << ": " << t.rows << " x " << t.cols << " tiles of " << t.h << " x " << t.w);
    if (mn[0] * mn[1] == 1) REQUIRE(t.count() == 1);
    else REQUIRE(t.count() % 2 == 0);  // even, and so at least two
    REQUIRE((t.rows * t.h >= mn[0] && (t.rows - 1) * t.h < mn[0]));  // every row covered, no empty tile
    REQUIRE((t.cols * t.w >= mn[1] && (t.cols - 1) * t.w < mn[1]));
    REQUIRE((t.h <= 1536 && t.w <= 1536));
  }
  const ProductTiles big = product_tiles(512, 5632);  // a TinyLlama MLP linear on 512 tokens: 6 column tiles
  REQUIRE((big.rows == 1 && big.cols == 6 && big.w == 944));
}

TEST_CASE("tiled_product over 2-D tiles: assign and accumulate, transposed operands, the same bits for 1-3 threads", "[parallel][gemm]") {
  std::mt19937 g(5);
  std::normal_distribution<float> nd;
  const auto rnd = [&](Eigen::Index r, Eigen::Index c) {
    MatrixRM m(r, c);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g);
    return m;
  };
  for (const auto& mn : std::vector<std::array<Eigen::Index, 2>>{{2100, 2100}, {300, 2600}, {37, 5}}) {
    const Eigen::Index m = mn[0], n = mn[1], k = 40;
    const MatrixRM A = rnd(m, k), Bt = rnd(n, k), C0 = rnd(m, n);
    const Eigen::MatrixXd ref = A.cast<double>() * Bt.cast<double>().transpose();
    std::vector<MatrixRM> got;
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      MatrixRM C(m, n), D = C0;
      tiled_product(C, A, Bt.transpose(), Product::assign);
      tiled_product(D, A, Bt.transpose(), Product::accumulate);
      REQUIRE((C.cast<double>() - ref).cwiseAbs().maxCoeff() <= 1e-4);
      REQUIRE((D.cast<double>() - C0.cast<double>() - ref).cwiseAbs().maxCoeff() <= 1e-4);
      got.push_back(C), got.push_back(D);
    }
    for (std::size_t i = 2; i < got.size(); ++i) REQUIRE(got[i] == got[i % 2]);
  }
  set_num_threads(2);
  MatrixRM C(3, 4);
  REQUIRE_THROWS_WITH(tiled_product(C, MatrixRM(3, 5), MatrixRM(4, 4), Product::assign), Catch::Contains("tiled_product: [3x5] x [4x4] into [3x4]"));
}

TEST_CASE("in_context names where an error arose, and warnings go to the handler", "[error]") {
  REQUIRE_THROWS_WITH(in_context("block 3 awq", [] { fail("the search produced a non-finite loss"); }),
                      "lowbit: block 3 awq: the search produced a non-finite loss");
  REQUIRE_THROWS_WITH(in_context("block 3 gptq", []() -> int { throw std::bad_alloc(); }), "lowbit: block 3 gptq: out of memory");
  REQUIRE(in_context("x", [] { return 7; }) == 7);
  std::vector<std::string> seen;
  const WarningHandler old = set_warning_handler([&](const std::string& m) { seen.push_back(m); });
  warn("window of ", 256, " tokens");
  set_warning_handler(old);
  REQUIRE(seen == std::vector<std::string>{"window of 256 tokens"});
}

TEST_CASE("parallel_for runs small work serially and large work on every thread", "[parallel]") {
  set_num_threads(2);
  auto threads_used = [](std::int64_t n, std::int64_t work) {
    std::vector<int> who(static_cast<std::size_t>(n), -1);
    parallel_for(n, [&](std::int64_t i) {
#if LOWBIT_HAS_OPENMP
      who[std::size_t(i)] = omp_get_thread_num();
#else
      who[std::size_t(i)] = 0;
#endif
    }, work);
    return *std::max_element(who.begin(), who.end()) + 1;
  };
  REQUIRE(threads_used(64, 16) == 1);  // 1,024 element operations: not worth waking a thread
#if LOWBIT_HAS_OPENMP
  REQUIRE(threads_used(64, 1 << 12) == 2);
  REQUIRE(threads_used(2, kParallelMinWork) == 2);
#endif
}
