// Small helpers shared by the test files (one definition: the test executables compile as one translation unit
// each, LOWBIT_UNITY_TESTS).
#pragma once

#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <lowbit/data/calibration.hpp>
#include <lowbit/model/llama.hpp>
#include <random>
#include <string>
#include <vector>

namespace lowbit_test {

// A scratch file name in the build directory.
inline std::string tmp_path(const std::string& name) { return std::string(LOWBIT_BUILD_DIR) + "/" + name; }

// The windows' tokens one after another.
inline std::vector<int> concat(const lowbit::Windows& w) {
  std::vector<int> t;
  for (const auto& x : w) t.insert(t.end(), x.begin(), x.end());
  return t;
}

// An r x c matrix of type M, uniform in [lo, hi) from mt19937(seed), filled in storage order.
template <class M>
M uniform_matrix(Eigen::Index r, Eigen::Index c, unsigned seed, double lo = -1, double hi = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  M m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = typename M::Scalar(u(g));
  return m;
}

// Every linear of every block bit for bit.
inline void require_same_blocks(const lowbit::Model& a, const lowbit::Model& b) {
  REQUIRE(a.blocks.size() == b.blocks.size());
  for (std::size_t i = 0; i < a.blocks.size(); ++i)
    for (lowbit::Role r : lowbit::all_roles) {
      INFO("block " << i << " " << lowbit::to_string(r));
      REQUIRE(a.blocks[i].linear(r).W == b.blocks[i].linear(r).W);
    }
}

}  // namespace lowbit_test
