// lowbit/data/calibration.hpp -- calibration windows from text, jsonl or token files.
//
// Three ways to cut N windows of L tokens, all deterministic:
//   sequential_windows   the first N consecutive windows of the stream (the benchmark protocol "P");
//   random_windows       GPTQ's datautils: N windows starting at uniform random offsets of the stream,
//                        drawn from a seeded SplitMix64 (same windows on every platform and thread count);
//   concat_split         AWQ's calib_data: take samples in order, skip empty ones and those longer than L,
//                        stop after N samples, concatenate them and cut into floor(total / L) windows.
// read_jsonl_texts reads PaddleSlim-style jsonl ({"src": str | [str], "tgt": str | [str]} per line): each
// line gives one sample, the src strings followed by the tgt strings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/json.hpp"

namespace lowbit {

// SplitMix64: a tiny seeded generator with a fixed, documented output sequence.
struct SplitMix64 {
  std::uint64_t state;
  explicit SplitMix64(std::uint64_t seed) : state(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias (rejection).
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = ~std::uint64_t(0) - (~std::uint64_t(0) % n);
    std::uint64_t x;
    do x = next(); while (x >= limit);
    return x % n;
  }
};

using Windows = std::vector<std::vector<int>>;

inline Windows sequential_windows(const std::vector<int>& stream, int n, int L) {
  if (n <= 0 || L <= 0) fail("calibration: need a positive number of windows and window length (got ", n, " x ", L, ")");
  if (std::int64_t(stream.size()) < std::int64_t(n) * L)
    fail("calibration: ", stream.size(), " tokens are too few for ", n, " windows of ", L, " tokens");
  Windows w(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) w[std::size_t(i)].assign(stream.begin() + std::int64_t(i) * L, stream.begin() + std::int64_t(i + 1) * L);
  return w;
}

inline Windows random_windows(const std::vector<int>& stream, int n, int L, std::uint64_t seed) {
  if (n <= 0 || L <= 0) fail("calibration: need a positive number of windows and window length (got ", n, " x ", L, ")");
  if (std::int64_t(stream.size()) <= L)
    fail("calibration: ", stream.size(), " tokens are too few for random windows of ", L, " tokens");
  SplitMix64 rng(seed);
  Windows w(static_cast<std::size_t>(n));
  for (auto& win : w) {
    const std::int64_t start = std::int64_t(rng.below(std::uint64_t(stream.size()) - std::uint64_t(L)));
    win.assign(stream.begin() + start, stream.begin() + start + L);
  }
  return w;
}

inline Windows concat_split(const std::vector<std::vector<int>>& samples, int n, int L) {
  if (n <= 0 || L <= 0) fail("calibration: need a positive number of samples and window length (got ", n, " x ", L, ")");
  std::vector<int> all;
  int taken = 0;
  for (const auto& s : samples) {
    if (taken == n) break;
    if (s.empty() || int(s.size()) > L) continue;
    all.insert(all.end(), s.begin(), s.end());
    ++taken;
  }
  const std::size_t nw = all.size() / std::size_t(L);
  if (nw == 0) fail("calibration: the ", taken, " usable samples hold ", all.size(), " tokens, fewer than one window of ", L);
  Windows w(nw);
  for (std::size_t i = 0; i < nw; ++i) w[i].assign(all.begin() + std::int64_t(i) * L, all.begin() + std::int64_t(i + 1) * L);
  return w;
}

inline std::vector<std::string> read_jsonl_texts(const std::string& content, const std::string& name) {
  std::vector<std::string> out;
  std::size_t line_no = 0, pos = 0;
  while (pos < content.size()) {
    const std::size_t nl = content.find('\n', pos);
    const std::string line = content.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? content.size() : nl + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = name + " line " + std::to_string(line_no);
    const json::Value v = json::parse(line, where);
    if (!v.is_object()) fail(where, ": expected an object with \"src\" and \"tgt\"");
    std::string text;
    for (const char* key : {"src", "tgt"}) {
      const json::Value* f = v.find(key);
      if (!f) fail(where, ": missing \"", key, "\"");
      if (f->is_string()) text += f->str;
      else if (f->is_array()) {
        for (const auto& e : f->arr) {
          if (!e.is_string()) fail(where, ": \"", key, "\" must hold strings");
          text += e.str;
        }
      } else fail(where, ": \"", key, "\" must be a string or a list of strings");
    }
    out.push_back(std::move(text));
  }
  return out;
}

}  // namespace lowbit
