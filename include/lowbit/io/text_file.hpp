// lowbit/io/text_file.hpp -- whole-file readers: text, and raw little-endian int32 token ids (*.i32).
// Both read through MappedFile: a missing file names the system's reason, a directory, FIFO or device is
// refused (a FIFO would block forever).
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "mapped_file.hpp"

namespace lowbit {

// Raw little-endian int32 token ids (the *.tokens.i32 files).
inline std::vector<int> read_token_file(const std::string& path) {
  const MappedFile f(path);
  if (f.size() % 4 != 0) fail(path, ": ", f.size(), " bytes is not a whole number of int32 token ids");
  std::vector<int> ids(f.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), f.data(), f.size());
  return ids;
}

inline std::string read_text_file(const std::string& path) {
  const MappedFile f(path);
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

}  // namespace lowbit
