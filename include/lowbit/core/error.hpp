// lowbit/core/error.hpp -- the one exception type lowbit throws, and its warnings.
//
// Every message says *what* is wrong and *where* (file, tensor, row/column, config key), e.g.
//   "lowbit: quantize: non-finite value nan at row 3, column 17"
// A long-running step that calls code which does not know where it is (a layer-level search inside block 7)
// wraps the call in in_context("block 7 awq", fn): an error from inside comes out as
//   "lowbit: block 7 awq: AWQ: the scale search produced a non-finite loss at ratio 0.35"
// and an allocation failure as "lowbit: block 7 awq: out of memory" instead of a bare std::bad_alloc.
//
// Warnings (a result is computed, but the user should know something) go through one handler: by default a
// line "lowbit: warning: ..." on stderr; set_warning_handler() lets a program collect them (the command line
// puts them in its JSON) or silence them.
#pragma once

#include <cstdio>
#include <functional>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace lowbit {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error("lowbit: " + what), detail_(what) {}
  // The message without the "lowbit: " prefix.
  const std::string& detail() const { return detail_; }

 private:
  std::string detail_;
};

namespace detail {
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

// fail("tensor ", name, ": shape ", r, "x", c) -- builds the message from its parts and throws.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw error(detail::cat(parts...));
}

// Runs fn(); a lowbit::error or an allocation failure escaping it is re-thrown with "where: " in front.
template <class Fn>
decltype(auto) in_context(const std::string& where, Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const error& e) {
    throw error(where + ": " + e.detail());
  } catch (const std::bad_alloc&) {
    throw error(where + ": out of memory");
  }
}

using WarningHandler = std::function<void(const std::string&)>;

inline WarningHandler& warning_handler() {
  static WarningHandler h = [](const std::string& m) { std::fprintf(stderr, "lowbit: warning: %s\n", m.c_str()); };
  return h;
}

// Replaces the warning handler; returns the previous one (an empty handler drops warnings).
inline WarningHandler set_warning_handler(WarningHandler h) { return std::exchange(warning_handler(), std::move(h)); }

template <class... Parts>
void warn(const Parts&... parts) {
  if (const WarningHandler& h = warning_handler()) h(detail::cat(parts...));
}

}  // namespace lowbit
