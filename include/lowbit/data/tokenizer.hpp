// lowbit/data/tokenizer.hpp -- SentencePiece-style BPE by merge scores with byte fallback (llama2.c's
// tokenizer), read from llama2.c's tokenizer.bin.
//
// tokenizer.bin: int32 max_token_length, then for each token: float32 score, int32 byte length, the bytes.
// Ids 0/1/2 are <unk>/BOS/EOS; when the vocabulary has byte tokens "<0x00>".."<0xFF>" they are ids 3..258.
//
// encode() follows llama2.c's encode() exactly:
//   1. optional BOS; a dummy-prefix " " token unless the text is empty (add_dummy_prefix);
//   2. the text is cut into UTF-8 sequences (a lead byte plus up to 3 continuation bytes); each sequence
//      that is a vocabulary entry becomes that token, otherwise each of its bytes becomes byte token b + 3
//      (a vocabulary without byte tokens gives one <unk> = 0 for the whole character instead);
//   3. repeatedly merge the adjacent pair whose concatenation is in the vocabulary with the highest score
//      (the leftmost one on ties; scores must exceed -1e10), until no pair merges.
// Step 3 runs with a heap over (score, position) and a linked list, O(n log n) instead of llama2.c's
// O(n^2), with the same choice at every step: a whole 400 KB text encodes in a fraction of a second.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../io/mapped_file.hpp"

namespace lowbit {

// The length of the UTF-8 character at s[i]: its lead byte and the continuation bytes after it, at most 4 bytes
// (llama2.c's encode() cuts characters so; invalid sequences are cut the same way, never rejected).
inline std::size_t utf8_char_length(std::string_view s, std::size_t i) {
  std::size_t n = 1;
  while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80 && n < 4) ++n;
  return n;
}

class Tokenizer {
 public:
  std::vector<std::string> vocab;
  std::vector<float> scores;
  int bos = 1, eos = 2;
  bool add_dummy_prefix = true;

  static Tokenizer load_llama2c(const std::string& path, int vocab_size) {
    MappedFile f(path);
    Tokenizer t;
    std::size_t pos = 4;
    auto need = [&](std::size_t n, int i) {
      if (pos + n > f.size()) fail(path, ": truncated tokenizer at token ", i, " (offset ", pos, ")");
    };
    need(0, 0);
    if (f.size() < 4) fail(path, ": truncated tokenizer header");
    for (int i = 0; i < vocab_size; ++i) {
      need(8, i);
      float score;
      std::int32_t len;
      std::memcpy(&score, f.data() + pos, 4);
      std::memcpy(&len, f.data() + pos + 4, 4);
      pos += 8;
      if (len < 0 || len > 1 << 16) fail(path, ": token ", i, " has invalid length ", len);
      need(std::size_t(len), i);
      t.vocab.emplace_back(reinterpret_cast<const char*>(f.data() + pos), std::size_t(len));
      t.scores.push_back(score);
      pos += std::size_t(len);
    }
    if (pos != f.size()) fail(path, ": ", f.size() - pos, " bytes after ", vocab_size, " tokens (vocabulary size mismatch?)");
    t.build_index(path);
    return t;
  }

  // A SentencePiece text vocabulary (`piece<TAB>score` per line, the .vocab file spm_train writes);
  // U+2581 (the SentencePiece space) is mapped to ' '.
  static Tokenizer load_sentencepiece_vocab(const std::string& path) {
    MappedFile f(path);
    Tokenizer t;
    std::string_view all(reinterpret_cast<const char*>(f.data()), f.size());
    std::size_t line_no = 0;
    while (!all.empty()) {
      ++line_no;
      const std::size_t nl = all.find('\n');
      std::string_view line = all.substr(0, nl);
      all = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
      if (line.empty()) continue;
      const std::size_t tab = line.find('\t');
      if (tab == std::string_view::npos) fail(path, ": line ", line_no, " has no tab between piece and score");
      std::string piece(line.substr(0, tab));
      for (std::size_t k; (k = piece.find("\xe2\x96\x81")) != std::string::npos;) piece.replace(k, 3, " ");
      t.vocab.push_back(piece);
      const std::string num(line.substr(tab + 1));
      char* end = nullptr;
      const float score = std::strtof(num.c_str(), &end);
      if (num.empty() || *end != '\0' || std::isnan(score))
        fail(path, ": line ", line_no, ": the score '", num, "' is not a number");
      t.scores.push_back(score);
    }
    t.build_index(path);
    return t;
  }

  // Indexes the vocabulary for encode(); checks that every id encode() can emit (<unk> = 0, bos, eos) is in it
  // and that every token has a score.  `where` names the file in errors.
  void build_index(const std::string& where = "tokenizer") {
    if (vocab.empty()) fail(where, ": the vocabulary is empty");
    if (scores.size() != vocab.size()) fail(where, ": ", scores.size(), " scores for ", vocab.size(), " tokens");
    if (bos < 0 || std::size_t(bos) >= vocab.size() || eos < 0 || std::size_t(eos) >= vocab.size())
      fail(where, ": the BOS / EOS ids ", bos, " / ", eos, " are outside the vocabulary of ", vocab.size(), " tokens");
    index_.clear();
    for (std::size_t i = 0; i < vocab.size(); ++i) index_.emplace(vocab[i], int(i));  // first id wins
    byte_fallback_ = vocab.size() > 258 && vocab[3] == "<0x00>" && vocab[258] == "<0xFF>";
  }

  int lookup(std::string_view s) const {
    auto it = index_.find(std::string(s));
    return it == index_.end() ? -1 : it->second;
  }

  std::vector<int> encode(std::string_view text, bool with_bos = true, bool with_eos = false) const {
    std::vector<int> out;
    if (with_bos) out.push_back(bos);
    std::vector<int> ids;
    ids.reserve(text.size() + 1);
    if (add_dummy_prefix && !text.empty()) {
      const int sp = lookup(" ");
      if (sp < 0) fail("tokenizer: no \" \" token for the dummy prefix");
      ids.push_back(sp);
    }
    for (std::size_t i = 0; i < text.size();) {
      const std::size_t n = utf8_char_length(text, i);
      const int id = lookup(text.substr(i, n));
      if (id >= 0) {
        ids.push_back(id);
      } else if (byte_fallback_) {
        for (std::size_t k = 0; k < n; ++k) ids.push_back(static_cast<unsigned char>(text[i + k]) + 3);
      } else {
        ids.push_back(0);  // <unk>, one per character, as SentencePiece does without byte fallback
      }
      i += n;
    }
    merge(ids);
    out.insert(out.end(), ids.begin(), ids.end());
    if (with_eos) out.push_back(eos);
    return out;
  }

  // The text of `token` following `prev` (llama2.c decode: no leading space after BOS; byte tokens -> bytes).
  std::string decode(int prev, int token) const {
    if (token < 0 || token >= int(vocab.size())) fail("tokenizer: token id ", token, " outside the vocabulary");
    std::string_view p = vocab[std::size_t(token)];
    if (prev == bos && !p.empty() && p[0] == ' ') p.remove_prefix(1);
    auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
    if (p.size() == 6 && p.substr(0, 3) == "<0x" && p[5] == '>' && hex(p[3]) >= 0 && hex(p[4]) >= 0)
      return std::string(1, char(hex(p[3]) * 16 + hex(p[4])));
    return std::string(p);
  }

  std::string decode(const std::vector<int>& tokens) const {
    std::string s;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == bos || tokens[i] == eos) continue;
      s += decode(i ? tokens[i - 1] : -1, tokens[i]);
    }
    return s;
  }

 private:
  std::unordered_map<std::string, int> index_;
  bool byte_fallback_ = false;

  void merge(std::vector<int>& ids) const {
    const int n = int(ids.size());
    if (n < 2) return;
    const std::size_t un = static_cast<std::size_t>(n);
    std::vector<int> prev(un), next(un), version(un, 0);
    for (int i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
    struct Cand {
      float score;
      int left, right, lver, rver, merged;
    };
    auto worse = [](const Cand& a, const Cand& b) { return a.score != b.score ? a.score < b.score : a.left > b.left; };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    auto consider = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      const int id = lookup(vocab[std::size_t(ids[l])] + vocab[std::size_t(ids[r])]);
      if (id >= 0 && scores[std::size_t(id)] > -1e10f) heap.push({scores[std::size_t(id)], l, r, version[l], version[r], id});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i, i + 1);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      if (ids[c.left] < 0 || ids[c.right] < 0 || next[c.left] != c.right || version[c.left] != c.lver ||
          version[c.right] != c.rver)
        continue;  // stale
      ids[c.left] = c.merged;
      ++version[c.left];
      ids[c.right] = -1;
      next[c.left] = next[c.right];
      if (next[c.right] >= 0) prev[next[c.right]] = c.left;
      consider(prev[c.left], c.left);
      consider(c.left, next[c.left]);
    }
    std::vector<int> out;
    for (int i = 0; i >= 0 && i < n; i = next[i]) out.push_back(ids[i]);
    ids.swap(out);
  }
};

}  // namespace lowbit
