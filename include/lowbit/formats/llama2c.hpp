// lowbit/formats/llama2c.hpp -- llama2.c checkpoints.
//
// Legacy format (run.c):
//   1. 7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab_size < 0 means
//      an untied classifier (|vocab_size| is the vocabulary);
//   2. float32, row-major [out][in]: token_embedding[V,D], rms_att[L,D], wq[L,D,D], wk[L,KV,D], wv[L,KV,D],
//      wo[L,D,D], rms_ffn[L,D], w1[L,H,D], w2[L,D,H], w3[L,H,D], rms_final[D],
//      freq_cis_real[seq_len, hd/2], freq_cis_imag[seq_len, hd/2] (unused: RoPE is recomputed), then
//      wcls[V,D] when untied.
// Versioned exports (export.py, magic "ak42" = 0x616b3432), a 256-byte header:
//   uint32 magic, int32 version, the 7 int32 above (vocab_size positive), uint8 shared_classifier at offset
//   36; version 2 adds int32 group_size at offset 37.
//   version 1: float32 rms_att[L,D], rms_ffn[L,D], rms_final[D], token_embedding, wq.., wk.., wv.., wo..,
//              w1.., w2.., w3.. (each per layer), [wcls].
//   version 2: the same norms in float32, then every matrix in Q8_0: its int8 values, then its float32
//              scales (one per group_size consecutive values); dequantized to float on load.
// Roles: w1 = gate, w3 = up, w2 = down.  RoPE: adjacent pairs, theta 10000; RMSNorm eps 1e-5.
#pragma once

#include <cstring>
#include <string>

#include "../io/mapped_file.hpp"
#include "../model/llama.hpp"

namespace lowbit {

namespace detail {

class Reader {
 public:
  Reader(const MappedFile& f, std::size_t offset) : f_(f), pos_(offset) {}
  std::size_t pos() const { return pos_; }

  void floats(float* out, std::size_t n, const char* what) {
    need(n * 4, what);
    std::memcpy(out, f_.data() + pos_, n * 4);
    pos_ += n * 4;
    check_finite(out, n, what);
  }
  void q8(float* out, std::size_t n, std::size_t group, const char* what) {
    if (n % group != 0) fail(f_.path(), ": ", what, " has ", n, " values, not a multiple of the Q8_0 group ", group);
    need(n + n / group * 4, what);
    const auto* q = reinterpret_cast<const std::int8_t*>(f_.data() + pos_);
    std::vector<float> scales(n / group);
    std::memcpy(scales.data(), f_.data() + pos_ + n, scales.size() * 4);
    for (std::size_t i = 0; i < n; ++i) out[i] = float(q[i]) * scales[i / group];
    pos_ += n + scales.size() * 4;
    check_finite(out, n, what);
  }
  void skip(std::size_t n, const char* what) {
    need(n, what);
    pos_ += n;
  }

 private:
  const MappedFile& f_;
  std::size_t pos_;
  void need(std::size_t n, const char* what) {
    if (pos_ + n > f_.size())
      fail(f_.path(), ": truncated: ", what, " needs ", n, " bytes at offset ", pos_, " but the file has ", f_.size());
  }
  void check_finite(const float* p, std::size_t n, const char* what) {
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) fail(f_.path(), ": ", what, " has a non-finite value at element ", i);
  }
};

}  // namespace detail

inline Model load_llama2c(const std::string& path) {
  MappedFile f(path);
  if (f.size() < 28) fail(path, ": too small for a llama2.c checkpoint (", f.size(), " bytes)");
  std::uint32_t magic;
  std::memcpy(&magic, f.data(), 4);
  int version = 0;
  std::int32_t h[7];
  std::size_t group = 0, offset = 28;
  bool shared = true;
  if (magic == 0x616b3432u) {
    if (f.size() < 256) fail(path, ": truncated ak42 header");
    std::memcpy(&version, f.data() + 4, 4);
    if (version != 1 && version != 2) fail(path, ": unsupported llama2.c export version ", version, " (1 and 2 are)");
    std::memcpy(h, f.data() + 8, 28);
    shared = f.data()[36] != 0;
    if (version == 2) {
      std::int32_t g;
      std::memcpy(&g, f.data() + 37, 4);
      if (g <= 0 || g > (1 << 20)) fail(path, ": invalid Q8_0 group size ", g);
      group = std::size_t(g);
    }
    offset = 256;
  } else {
    std::memcpy(h, f.data(), 28);
    shared = h[5] > 0;
    if (h[5] < 0) h[5] = h[5] == INT32_MIN ? 0 : -h[5];  // INT32_MIN has no negation: rejected by validate()
  }
  Model m;
  LlamaConfig& c = m.cfg;
  c.dim = h[0], c.hidden_dim = h[1], c.n_layers = h[2], c.n_heads = h[3], c.n_kv_heads = h[4], c.vocab_size = h[5];
  c.max_seq_len = h[6];
  c.tied_embeddings = shared;
  c.rope = RopeStyle::interleaved;
  const std::string as = path + (version ? " (read as a llama2.c ak42 export, version " + std::to_string(version) + ")"
                                          : " (read as a legacy llama2.c checkpoint: not a folder, no GGUF or ak42 magic)");
  c.validate(as);
  if (c.max_seq_len <= 0 || c.max_seq_len > (1 << 20)) fail(as, ": invalid seq_len ", c.max_seq_len);
  const std::size_t D = std::size_t(c.dim), H = std::size_t(c.hidden_dim), KV = std::size_t(c.kv_dim()),
                    V = std::size_t(c.vocab_size), NL = std::size_t(c.n_layers);
  // The file must be exactly as long as the header says before anything is allocated (validate() bounds every
  // size, so these products fit in 64 bits).
  {
    const std::uint64_t mats = V * D * (shared ? 1 : 2) + NL * (2 * D * D + 2 * KV * D + 3 * H * D);
    const std::uint64_t norms = (2 * NL + 1) * D;
    std::uint64_t bytes = offset + norms * 4;
    if (version == 0) bytes += mats * 4 + std::uint64_t(c.max_seq_len) * std::uint64_t(c.head_dim()) * 4;
    else if (version == 1) bytes += mats * 4;
    else bytes += mats + mats / group * 4;  // Q8_0: int8 values, a float32 scale per group (per matrix; checked below)
    if (bytes != f.size())
      fail(as, ": the header (dim ", c.dim,
           ", hidden ", c.hidden_dim, ", layers ", c.n_layers, ", heads ", c.n_heads, ", kv heads ", c.n_kv_heads, ", vocab ",
           c.vocab_size, ", seq_len ", c.max_seq_len, ") describes ", bytes, " bytes but the file has ", f.size(),
           bytes < f.size() ? " (unexpected bytes after the weights: the header does not match the file)"
                            : " (truncated, or not a llama2.c checkpoint)");
  }
  detail::Reader rd(f, offset);
  m.blocks.resize(NL);
  for (auto& b : m.blocks) {
    b.attn_norm.resize(c.dim), b.ffn_norm.resize(c.dim);
    b.q.W.resize(c.dim, c.dim), b.k.W.resize(c.kv_dim(), c.dim), b.v.W.resize(c.kv_dim(), c.dim);
    b.o.W.resize(c.dim, c.dim), b.gate.W.resize(c.hidden_dim, c.dim), b.down.W.resize(c.dim, c.hidden_dim);
    b.up.W.resize(c.hidden_dim, c.dim);
  }
  m.tok_embeddings.resize(c.vocab_size, c.dim);
  m.final_norm.resize(c.dim);
  auto mats = [&](auto&& read) {
    read(m.tok_embeddings.data(), V * D, "token_embedding");
    for (auto& b : m.blocks) read(b.q.W.data(), D * D, "wq");
    for (auto& b : m.blocks) read(b.k.W.data(), KV * D, "wk");
    for (auto& b : m.blocks) read(b.v.W.data(), KV * D, "wv");
    for (auto& b : m.blocks) read(b.o.W.data(), D * D, "wo");
    for (auto& b : m.blocks) read(b.gate.W.data(), H * D, "w1");
    for (auto& b : m.blocks) read(b.down.W.data(), D * H, "w2");
    for (auto& b : m.blocks) read(b.up.W.data(), H * D, "w3");
    if (!shared) {
      m.output.resize(c.vocab_size, c.dim);
      read(m.output.data(), V * D, "wcls");
    }
  };
  if (version == 0) {
    rd.floats(m.tok_embeddings.data(), V * D, "token_embedding");
    for (auto& b : m.blocks) rd.floats(b.attn_norm.data(), D, "rms_att");
    for (auto& b : m.blocks) rd.floats(b.q.W.data(), D * D, "wq");
    for (auto& b : m.blocks) rd.floats(b.k.W.data(), KV * D, "wk");
    for (auto& b : m.blocks) rd.floats(b.v.W.data(), KV * D, "wv");
    for (auto& b : m.blocks) rd.floats(b.o.W.data(), D * D, "wo");
    for (auto& b : m.blocks) rd.floats(b.ffn_norm.data(), D, "rms_ffn");
    for (auto& b : m.blocks) rd.floats(b.gate.W.data(), H * D, "w1");
    for (auto& b : m.blocks) rd.floats(b.down.W.data(), D * H, "w2");
    for (auto& b : m.blocks) rd.floats(b.up.W.data(), H * D, "w3");
    rd.floats(m.final_norm.data(), D, "rms_final");
    rd.skip(std::size_t(c.max_seq_len) * std::size_t(c.head_dim()) * 4, "freq_cis");
    if (!shared) {
      m.output.resize(c.vocab_size, c.dim);
      rd.floats(m.output.data(), V * D, "wcls");
    }
  } else {
    for (auto& b : m.blocks) rd.floats(b.attn_norm.data(), D, "rms_att");
    for (auto& b : m.blocks) rd.floats(b.ffn_norm.data(), D, "rms_ffn");
    rd.floats(m.final_norm.data(), D, "rms_final");
    if (version == 1) mats([&](float* p, std::size_t n, const char* w) { rd.floats(p, n, w); });
    else mats([&](float* p, std::size_t n, const char* w) { rd.q8(p, n, group, w); });
  }
  if (rd.pos() != f.size())
    fail(path, ": ", f.size() - rd.pos(), " unexpected bytes after the weights (header does not match the file)");
  return m;
}

}  // namespace lowbit
