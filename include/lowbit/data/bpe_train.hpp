// lowbit/data/bpe_train.hpp -- trains a SentencePiece-style BPE vocabulary with byte fallback (the kind
// data/tokenizer.hpp reads and encodes with) and writes it as llama2.c's tokenizer.bin.
//
// Training (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units", Algorithm 1, on
// word types weighted by their counts):
//   1. pre-tokenize: the text is cut into pieces that no merge crosses -- a run of letters (ASCII letters, ' and
//      every non-ASCII byte, so a UTF-8 character is never split), a run of digits, a run of other printable
//      characters, each with at most one leading space; every newline, tab and further space is a piece alone;
//   2. the units are the UTF-8 characters of the pieces; every character seen becomes a token;
//   3. repeatedly: count every adjacent pair of units over all pieces (weighted by the piece's count), merge the
//      most frequent pair everywhere (ties: the pair whose concatenation sorts first, then its left part), and
//      add the concatenation as a token, until the vocabulary has `vocab_size` tokens or no pair occurs
//      `min_count` times.
// The vocabulary: 0 <unk>, 1 <s>, 2 </s>, 3..258 the byte tokens <0x00>..<0xFF> (byte fallback: text outside
// the training characters still encodes), then the characters (most frequent first), then the merges in order.
// Scores: merge k (0-based) scores -k, so Tokenizer::encode's highest-score-first merging applies the merges in
// the order they were learned (SentencePiece's BPE scores); specials, bytes and characters score 0 (they are
// never the concatenation of two tokens).  encode() adds a dummy-prefix space as SentencePiece does, so the
// first word of a text is " word" like every word after a space.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"
#include "tokenizer.hpp"

namespace lowbit {

struct BpeOptions {
  int vocab_size = 2048;  // total, the 259 specials and bytes included
  int min_count = 2;      // a pair seen fewer times is never merged
};

namespace detail {
enum class CharClass { letter, digit, other, space, newline };
inline CharClass char_class(unsigned char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '\'' || c >= 0x80) return CharClass::letter;
  if (c >= '0' && c <= '9') return CharClass::digit;
  if (c == ' ') return CharClass::space;
  if (c == '\n' || c == '\r' || c == '\t') return CharClass::newline;
  return CharClass::other;
}
}  // namespace detail

// The pieces of step 1 with their counts (in first-seen order, for determinism).
inline std::vector<std::pair<std::string, std::int64_t>> bpe_pretokenize(std::string_view text) {
  std::unordered_map<std::string, std::size_t> at;
  std::vector<std::pair<std::string, std::int64_t>> out;
  const auto add = [&](std::string_view p) {
    auto [it, fresh] = at.emplace(std::string(p), out.size());
    if (fresh) out.emplace_back(std::string(p), 0);
    ++out[it->second].second;
  };
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t start = i;
    detail::CharClass c = detail::char_class(static_cast<unsigned char>(text[i]));
    if (c == detail::CharClass::space && i + 1 < text.size()) {
      const detail::CharClass n = detail::char_class(static_cast<unsigned char>(text[i + 1]));
      if (n != detail::CharClass::space && n != detail::CharClass::newline) ++i, c = n;  // one leading space
    }
    if (c == detail::CharClass::space || c == detail::CharClass::newline) {
      add(text.substr(start, 1));
      i = start + 1;
      continue;
    }
    while (i < text.size() && detail::char_class(static_cast<unsigned char>(text[i])) == c) ++i;
    add(text.substr(start, i - start));
  }
  return out;
}

namespace detail {
// The UTF-8 characters of s, cut as Tokenizer::encode cuts them (utf8_char_length).
inline std::vector<std::string> utf8_chars(std::string_view s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char_length(s, i);
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}
}  // namespace detail

inline Tokenizer train_bpe(std::string_view text, const BpeOptions& o) {
  if (o.vocab_size < 260 || o.vocab_size > (1 << 20))
    fail("train_bpe: vocabulary size ", o.vocab_size, " (at least 260: 3 specials, 256 bytes and one character)");
  if (o.min_count < 1) fail("train_bpe: min_count ", o.min_count, " must be at least 1");
  if (text.empty()) fail("train_bpe: the training text is empty");
  Tokenizer t;
  t.vocab = {"<unk>", "<s>", "</s>"};
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) t.vocab.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
  t.scores.assign(t.vocab.size(), 0.0f);

  const auto pieces = bpe_pretokenize(text);
  // characters, most frequent first (ties: byte order)
  std::map<std::string, std::int64_t> char_count;
  for (const auto& [p, n] : pieces)
    for (const std::string& ch : detail::utf8_chars(p)) char_count[ch] += n;
  std::vector<std::pair<std::string, std::int64_t>> chars(char_count.begin(), char_count.end());
  std::stable_sort(chars.begin(), chars.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::unordered_map<std::string, int> id;
  for (const auto& [ch, n] : chars) {
    if (int(t.vocab.size()) >= o.vocab_size) fail("train_bpe: ", chars.size(), " distinct characters do not fit a vocabulary of ", o.vocab_size);
    id.emplace(ch, int(t.vocab.size()));
    t.vocab.push_back(ch);
    t.scores.push_back(0.0f);
  }
  // each piece as unit ids
  std::vector<std::vector<int>> words;
  std::vector<std::int64_t> counts;
  for (const auto& [p, n] : pieces) {
    std::vector<int> w;
    for (const std::string& ch : detail::utf8_chars(p)) w.push_back(id.at(ch));
    if (w.size() > 1) words.push_back(std::move(w)), counts.push_back(n);
  }
  int merges = 0;
  std::unordered_map<std::uint64_t, std::int64_t> pair_count;
  while (int(t.vocab.size()) < o.vocab_size) {
    pair_count.clear();
    for (std::size_t k = 0; k < words.size(); ++k)
      for (std::size_t j = 0; j + 1 < words[k].size(); ++j)
        pair_count[(std::uint64_t(std::uint32_t(words[k][j])) << 32) | std::uint32_t(words[k][j + 1])] += counts[k];
    std::uint64_t best = 0;
    std::int64_t best_n = 0;
    std::string best_s;
    for (const auto& [key, n] : pair_count) {
      if (n < best_n || n < o.min_count) continue;
      const int a = int(key >> 32), b = int(key & 0xffffffffu);
      std::string s = t.vocab[std::size_t(a)] + t.vocab[std::size_t(b)];
      if (n > best_n || s < best_s || (s == best_s && key < best)) best = key, best_n = n, best_s = std::move(s);
    }
    if (best_n == 0) break;  // nothing left that occurs min_count times
    const int a = int(best >> 32), b = int(best & 0xffffffffu);
    int merged;
    if (auto it = id.find(best_s); it != id.end()) {
      merged = it->second;  // the same string reached by another pair: one token
    } else {
      merged = int(t.vocab.size());
      id.emplace(best_s, merged);
      t.vocab.push_back(best_s);
      t.scores.push_back(-float(merges++));
    }
    for (std::vector<int>& w : words) {
      std::size_t out = 0;
      for (std::size_t j = 0; j < w.size(); ++j) {
        if (j + 1 < w.size() && w[j] == a && w[j + 1] == b) w[out++] = merged, ++j;
        else w[out++] = w[j];
      }
      w.resize(out);
    }
  }
  t.build_index("train_bpe");
  return t;
}

// llama2.c's tokenizer.bin (data/tokenizer.hpp's format) as bytes, and written atomically.
inline std::string llama2c_tokenizer_bytes(const Tokenizer& t) {
  if (t.vocab.size() != t.scores.size()) fail("tokenizer: ", t.scores.size(), " scores for ", t.vocab.size(), " tokens");
  std::int32_t max_len = 0;
  for (const std::string& s : t.vocab) max_len = std::max<std::int32_t>(max_len, std::int32_t(s.size()));
  std::string out;
  const auto put = [&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
  put(&max_len, 4);
  for (std::size_t i = 0; i < t.vocab.size(); ++i) {
    const std::int32_t len = std::int32_t(t.vocab[i].size());
    put(&t.scores[i], 4);
    put(&len, 4);
    put(t.vocab[i].data(), t.vocab[i].size());
  }
  return out;
}
inline void save_llama2c_tokenizer(const Tokenizer& t, const std::string& path) {
  write_file_atomically(path, llama2c_tokenizer_bytes(t));
}

}  // namespace lowbit
