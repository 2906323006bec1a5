// lowbit/core/error.hpp -- the one exception type lowbit throws.
//
// Every message says *what* is wrong and *where* (file, tensor, row/column, config key), e.g.
//   "lowbit: quantize: non-finite value nan at row 3, column 17"
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lowbit {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error("lowbit: " + what) {}
};

// fail("tensor ", name, ": shape ", r, "x", c) -- builds the message from its parts and throws.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw error(os.str());
}

}  // namespace lowbit
