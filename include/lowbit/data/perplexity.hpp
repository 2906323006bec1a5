// lowbit/data/perplexity.hpp -- the GPTQ / AWQ / OmniQuant evaluation protocol.
//
// The whole text is one token stream (BOS once at the start), capped to its first max_tokens ids, cut into
// floor(n / seq_len) non-overlapping windows (the remainder is dropped); every window predicts its ids
// 1..seq_len-1 from the ids before them.  PPL = exp(mean NLL over all those predictions).  NLLs are summed
// in double in window order, so the result does not depend on the thread count.
#pragma once

#include <chrono>
#include <cmath>
#include <fstream>
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

// Windows go through the model in chunks of about `chunk_tokens` tokens (whole windows), each chunk block by
// block, so a mapped model converts one block at a time and activations stay bounded.
inline PerplexityResult perplexity(const Model& m, const std::vector<int>& stream, int seq_len,
                                   std::int64_t max_tokens = -1, std::int64_t chunk_tokens = 8192) {
  if (seq_len < 2) fail("perplexity: seq_len ", seq_len, " must be at least 2");
  if (m.cfg.max_seq_len > 0 && seq_len > m.cfg.max_seq_len)
    fail("perplexity: seq_len ", seq_len, " exceeds the model's context of ", m.cfg.max_seq_len);
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t n = std::int64_t(stream.size());
  if (max_tokens > 0 && max_tokens < n) n = max_tokens;
  PerplexityResult r;
  r.windows = n / seq_len;
  if (r.windows == 0) fail("perplexity: ", n, " tokens is shorter than one window of ", seq_len);
  double total = 0.0;
  const std::int64_t batch = std::max<std::int64_t>(1, chunk_tokens / seq_len);
  for (std::int64_t w0 = 0; w0 < r.windows; w0 += batch) {
    const std::int64_t nw = std::min<std::int64_t>(batch, r.windows - w0);
    std::vector<int> tokens(stream.begin() + w0 * seq_len, stream.begin() + (w0 + nw) * seq_len);
    const MatrixRM logits = forward(m, tokens, seq_len);
    for (std::int64_t w = 0; w < nw; ++w) {
      std::vector<int> targets(tokens.begin() + w * seq_len + 1, tokens.begin() + (w + 1) * seq_len);
      total += sum_nll(logits, targets, w * seq_len, seq_len - 1);
    }
  }
  r.predictions = r.windows * (seq_len - 1);
  r.nll = total / double(r.predictions);
  r.ppl = std::exp(r.nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace lowbit
