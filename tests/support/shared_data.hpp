// Where the real data of ../shared lives for the tests: $LOWBIT_SHARED, else the directory beside the
// source tree.  A test that needs it calls LOWBIT_REQUIRE_SHARED(path): when the file is missing it
// prints why and returns (Catch2 v2 has no SKIP) -- unless LOWBIT_REQUIRE_SHARED=1 is set in the
// environment (CI sets it), where a missing file fails the test instead of skipping it.
#pragma once

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

namespace lowbit_test {

inline std::string shared_dir() {
  if (const char* env = std::getenv("LOWBIT_SHARED"); env && *env) return env;
  return LOWBIT_SHARED_DEFAULT;
}

inline std::string shared_path(const std::string& rel) { return shared_dir() + "/" + rel; }

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

inline bool shared_required() {
  const char* env = std::getenv("LOWBIT_REQUIRE_SHARED");
  return env && std::string(env) == "1";
}

}  // namespace lowbit_test

#define LOWBIT_REQUIRE_SHARED(rel)                                                                     \
  do {                                                                                                 \
    const std::string lowbit_path_ = lowbit_test::shared_path(rel);                                    \
    if (!lowbit_test::file_exists(lowbit_path_)) {                                                     \
      if (lowbit_test::shared_required()) FAIL("LOWBIT_REQUIRE_SHARED=1 but " << lowbit_path_ << " is missing"); \
      WARN("skipped: " << lowbit_path_ << " not found (set LOWBIT_SHARED to the shared/ data directory)"); \
      return;                                                                                          \
    }                                                                                                  \
  } while (0)
