// lowbit/data/perplexity.hpp -- the GPTQ / AWQ / OmniQuant evaluation protocol.
//
// The whole text is one token stream (BOS once at the start), capped to its first max_tokens ids, cut into
// floor(n / seq_len) non-overlapping windows (the remainder is dropped); every window predicts its ids
// 1..seq_len-1 from the ids before them.  PPL = exp(mean NLL over all those predictions).  NLLs are summed
// in double in window order, so the result does not depend on the thread count.  A non-finite loss is an error
// that names the window and the place (block, linear) where the forward first turned non-finite.
//
// Scoring::llama_perplexity is llama.cpp's rule (examples/perplexity/perplexity.cpp, perplexity()): the same
// windows ("chunks" of n_ctx), each window's first token replaced by BOS, and only the second half scored --
// logits rows first = L/2 .. L-2 predicting ids first+1 .. L-1, L - 1 - L/2 predictions per window -- so lowbit's
// figure and llama-perplexity's can be compared directly on the same token stream.
#pragma once

#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../model/llama.hpp"

namespace lowbit {

struct PerplexityResult {
  std::int64_t predictions = 0;  // tokens whose NLL was counted
  std::int64_t windows = 0;
  double nll = 0.0;  // mean, nats per token
  double ppl = 0.0;
  double seconds = 0.0;
};

// Sum of -log softmax(logits[t])[target[t]] over the rows given.
inline double sum_nll(const MatrixRM& logits, const std::vector<int>& targets, Eigen::Index first_row,
                      Eigen::Index rows) {
  double total = 0.0;
  for (Eigen::Index t = 0; t < rows; ++t) {
    const auto row = logits.row(first_row + t);
    const float m = row.maxCoeff();
    const double s = (row.array() - m).exp().template cast<double>().sum();  // float exp, double sum
    total += double(m) + std::log(s) - double(row[targets[std::size_t(t)]]);
  }
  return total;
}

// Where a forward on `tokens` (whole windows of L) first turns non-finite: "the token embeddings", "block 2, the
// input of o_proj", "block 4's output", "the final norm / classifier".  Empty when it stays finite.  Used to name
// the place of a non-finite loss (a weight of 3e38 is finite, but its products overflow).
inline std::string locate_nonfinite(const Model& m, const std::vector<int>& tokens, int L) {
  MatrixRM x = embed(m, tokens);
  if (!x.allFinite()) return "the token embeddings";
  for (int i = 0; i < m.cfg.n_layers; ++i) {
    std::string where;
    BlockHooks hooks;
    hooks.linear_input = [&](Role r, const MatrixRM& in) {
      if (where.empty() && !in.allFinite()) where = "block " + std::to_string(i) + ", the input of " + to_string(r);
    };
    with_block(m, i, [&](const Block& b) { block_forward(m.cfg, b, x, L, &hooks); });
    if (!where.empty()) return where;
    if (!x.allFinite()) return "block " + std::to_string(i) + "'s output";
  }
  if (!logits_from_hidden(m, x).allFinite()) return "the final norm / classifier";
  return "";
}

enum class Scoring {
  all,               // every prediction of every window (GPTQ / AWQ / OmniQuant)
  llama_perplexity   // llama.cpp's llama-perplexity: BOS first, the second half of each window scored
};

struct PerplexityOptions {
  std::int64_t max_tokens = -1;     // use only the stream's first max_tokens ids (<= 0: all)
  Scoring scoring = Scoring::all;
  int bos = 1;                      // Scoring::llama_perplexity: the id put at each window's start
  std::int64_t chunk_tokens = 8192;  // windows per forward: about this many tokens
  std::function<void(std::int64_t windows_done, std::int64_t windows)> progress;  // after each chunk
};

// Windows go through the model in chunks of about `chunk_tokens` tokens (whole windows), each chunk block by
// block, so a mapped model converts one block at a time and activations stay bounded.  A window longer than the
// model's declared context is a warning, not an error (RoPE models run past it; llama.cpp warns too).  A
// non-finite loss is an error naming the window and where the forward first turned non-finite.
inline PerplexityResult perplexity(const Model& m, const std::vector<int>& stream, int seq_len, const PerplexityOptions& o) {
  if (seq_len < 2) fail("perplexity: seq_len ", seq_len, " must be at least 2");
  if (m.cfg.max_seq_len > 0 && seq_len > m.cfg.max_seq_len)
    warn("evaluation windows of ", seq_len, " tokens are longer than the model's declared context of ", m.cfg.max_seq_len,
         " (RoPE runs past it; quality may drop)");
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t n = std::int64_t(stream.size());
  if (o.max_tokens > 0 && o.max_tokens < n) n = o.max_tokens;
  PerplexityResult r;
  r.windows = n / seq_len;
  if (r.windows == 0) fail("perplexity: ", n, " tokens is shorter than one window of ", seq_len);
  const bool llama = o.scoring == Scoring::llama_perplexity;
  const int first = llama ? seq_len / 2 : 0, scored = seq_len - 1 - first;
  if (scored < 1) fail("perplexity: windows of ", seq_len, " tokens leave nothing to score under llama-perplexity's rule");
  if (llama && (o.bos < 0 || o.bos >= m.cfg.vocab_size)) fail("perplexity: BOS id ", o.bos, " is outside the vocabulary");
  double total = 0.0;
  const std::int64_t batch = std::max<std::int64_t>(1, o.chunk_tokens / seq_len);
  for (std::int64_t w0 = 0; w0 < r.windows; w0 += batch) {
    const std::int64_t nw = std::min<std::int64_t>(batch, r.windows - w0);
    std::vector<int> tokens(stream.begin() + w0 * seq_len, stream.begin() + (w0 + nw) * seq_len);
    if (llama)
      for (std::int64_t w = 0; w < nw; ++w) tokens[std::size_t(w * seq_len)] = o.bos;
    const MatrixRM logits = forward(m, tokens, seq_len);
    for (std::int64_t w = 0; w < nw; ++w) {
      std::vector<int> targets(tokens.begin() + w * seq_len + first + 1, tokens.begin() + (w + 1) * seq_len);
      const double s = sum_nll(logits, targets, w * seq_len + first, scored);
      if (!std::isfinite(s)) {
        const std::vector<int> win(tokens.begin() + w * seq_len, tokens.begin() + (w + 1) * seq_len);
        const std::string where = locate_nonfinite(m, win, seq_len);
        fail("perplexity: window ", w0 + w, " (tokens ", (w0 + w) * seq_len, "..", (w0 + w + 1) * seq_len - 1,
             ") has a non-finite loss", where.empty() ? std::string(" (the logits are finite: the softmax overflows)")
                                                      : "; the forward first turns non-finite at " + where);
      }
      total += s;
    }
    if (o.progress) o.progress(w0 + nw, r.windows);
  }
  r.predictions = r.windows * scored;
  r.nll = total / double(r.predictions);
  r.ppl = std::exp(r.nll);
  if (!std::isfinite(r.ppl)) fail("perplexity: the mean loss ", r.nll, " gives a perplexity that overflows a double");
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

inline PerplexityResult perplexity(const Model& m, const std::vector<int>& stream, int seq_len,
                                   std::int64_t max_tokens = -1, std::int64_t chunk_tokens = 8192) {
  PerplexityOptions o;
  o.max_tokens = max_tokens;
  o.chunk_tokens = chunk_tokens;
  return perplexity(m, stream, seq_len, o);
}

}  // namespace lowbit
