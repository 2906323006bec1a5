// lowbit/io/text_file.hpp -- whole-file readers: text, and raw little-endian int32 token ids (*.i32).
#pragma once

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace lowbit {

// Raw little-endian int32 token ids (the *.tokens.i32 files).
inline std::vector<int> read_token_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), {});
  if (bytes.size() % 4 != 0) fail(path, ": ", bytes.size(), " bytes is not a whole number of int32 token ids");
  std::vector<int> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  return ids;
}

inline std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

}  // namespace lowbit
