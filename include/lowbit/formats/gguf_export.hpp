// lowbit/formats/gguf_export.hpp -- a quantized LLaMA model as a GGUF file that llama.cpp runs.
//
// What is written (llama.cpp's converters' conventions: convert_hf_to_gguf.py, convert-llama2c-to-ggml.cpp):
//   metadata   general.architecture = "llama", llama.{context_length, embedding_length, feed_forward_length,
//              block_count, attention.head_count, attention.head_count_kv, rope.dimension_count, rope.freq_base,
//              attention.layer_norm_rms_epsilon}, general.file_type; tokenizer.ggml.{model = "llama", tokens
//              (spaces as U+2581), scores, token_type, bos / eos / unknown_token_id} when a tokenizer is given
//   tensors    token_embd, blk.<i>.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
//              ffn_down}, output_norm, output (absent when tied); names from model/block.hpp's tables
//   q / k rows in Meta's adjacent-pair order (RopeStyle::interleaved), as llama.cpp's converter permutes them
//
// Types, for `--gguf-type T`:
//   the seven linears    T.  A block type stores the method's own codes when its grid is the block format
//                        (pack/ggml.hpp ggml_pack_codes: groups a multiple of 32, codes in range) -- GPTQ, AWQ,
//                        OmniQuant then optimise exactly what llama.cpp runs; otherwise the method's
//                        dequantized weights are re-quantized with llama.cpp's reference quantizer.  A row
//                        length that is not a multiple of 32 cannot be a block: F16 of the dequantized weights.
//   output (or the tied  Q8_0 for a block type: llama.cpp's choice (llama_tensor_get_type: Q6_K, and Q8_0 when
//   token_embd)          the row is not a multiple of 256; lowbit has no K-quants yet, so Q8_0 always)
//   token_embd (untied)  T (llama.cpp's default for the file type), F16 when the row is not a multiple of 32
//   norms                F32
// Every tensor's storage and its error against the method's weights (relative RMS) are reported.
//
// Streamed (io/gguf.hpp GgufStream): the header first, then each block's tensors as the block loop finishes
// them; atomic: until commit() nothing exists under the file's name.
#pragma once

#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../core/parallel.hpp"
#include "../data/tokenizer.hpp"
#include "../io/gguf.hpp"
#include "../model/block.hpp"
#include "../model/llama.hpp"
#include "../pack/ggml.hpp"
#include "../quant/quantized.hpp"

namespace lowbit {

// llama.cpp's LLAMA_FTYPE of a file whose linears are `t` (general.file_type).
inline std::uint32_t gguf_file_type(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return 0;
    case GgmlType::f16: return 1;
    case GgmlType::q4_0: return 2;
    case GgmlType::q4_1: return 3;
    case GgmlType::q8_0: return 7;
    case GgmlType::q4_k: return 14;  // LLAMA_FTYPE_MOSTLY_Q4_K_S: every linear Q4_K
    case GgmlType::q6_k: return 18;  // LLAMA_FTYPE_MOSTLY_Q6_K
  }
  return 0;
}

// The llama.* metadata of `c` and, when given, the tokenizer as tokenizer.ggml.* (token types as
// convert-llama2c-to-ggml.cpp assigns them: unknown, control for BOS / EOS / empty pieces, byte for <0xHH>).
inline void add_llama_metadata(GgufWriter& w, const LlamaConfig& c, const Tokenizer* tok, GgmlType type,
                               const std::string& name = "lowbit") {
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", name);
  w.add_u32("general.file_type", gguf_file_type(type));
  w.add_u32("llama.context_length", std::uint32_t(c.max_seq_len));
  w.add_u32("llama.embedding_length", std::uint32_t(c.dim));
  w.add_u32("llama.feed_forward_length", std::uint32_t(c.hidden_dim));
  w.add_u32("llama.block_count", std::uint32_t(c.n_layers));
  w.add_u32("llama.attention.head_count", std::uint32_t(c.n_heads));
  w.add_u32("llama.attention.head_count_kv", std::uint32_t(c.n_kv_heads));
  w.add_u32("llama.rope.dimension_count", std::uint32_t(c.head_dim()));
  w.add_f32("llama.rope.freq_base", c.rope_theta);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  if (!tok) return;
  if (int(tok->vocab.size()) != c.vocab_size)
    fail("GGUF export: the tokenizer has ", tok->vocab.size(), " tokens but the model's vocabulary is ", c.vocab_size);
  std::vector<std::string> pieces;
  std::vector<std::int32_t> types;
  for (std::size_t i = 0; i < tok->vocab.size(); ++i) {
    std::string s = tok->vocab[i];
    int kind = 1;  // LLAMA_TOKEN_TYPE_NORMAL
    unsigned byte = 0;
    char tail = 0;
    if (i == 0 && s.find("unk") != std::string::npos) s = "<unk>", kind = 2;  // UNKNOWN
    else if (int(i) == tok->bos) s = "<s>", kind = 3;                          // CONTROL
    else if (int(i) == tok->eos) s = "</s>", kind = 3;
    else if (s.empty()) kind = 3;
    else if (s.size() == 6 && std::sscanf(s.c_str(), "<0x%2X%c", &byte, &tail) == 2 && tail == '>') kind = 6;  // BYTE
    for (std::size_t k; (k = s.find(' ')) != std::string::npos;) s.replace(k, 1, "\xe2\x96\x81");
    pieces.push_back(std::move(s));
    types.push_back(kind);
  }
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_strings("tokenizer.ggml.tokens", pieces);
  w.add_f32s("tokenizer.ggml.scores", tok->scores);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_u32("tokenizer.ggml.bos_token_id", std::uint32_t(tok->bos));
  w.add_u32("tokenizer.ggml.eos_token_id", std::uint32_t(tok->eos));
  if (types[0] == 2) w.add_u32("tokenizer.ggml.unknown_token_id", 0);
}

// What a linear whose rows are not whole blocks holds as F16: the method's dequantized weights (the and
// the default: the file computes the method's function), or its float weights after the transforms (what
// llama.cpp's own fallback holds: the same bytes, no quantization error in those tensors).
enum class GgufFallback { quantized, float_weights };

// How one tensor was stored.
enum class GgufStorage {
  codes,        // the method's own codes and scales in the block format
  requantized,  // the method's dequantized weights through llama.cpp's reference quantizer
  f16_fallback, // F16 (of the method's or the float weights, GgufFallback): the row is not a whole number of blocks
  values        // F32 / F16 of the weights as asked (norms, or --gguf-type f32 / f16)
};

inline const char* to_string(GgufStorage s) {
  switch (s) {
    case GgufStorage::codes: return "codes";
    case GgufStorage::requantized: return "requantized";
    case GgufStorage::f16_fallback: return "f16-fallback";
    case GgufStorage::values: return "values";
  }
  return "?";
}

struct GgufTensorReport {
  std::string name;
  GgmlType type;
  GgufStorage how;
  double rel_rms = 0;  // ||stored - method's|| / ||method's||, the stored tensor as llama.cpp dequantizes it
  std::uint64_t bytes = 0;
};

class GgufModelWriter {
 public:
  // `base`: the config and the tensors outside the blocks; `tok`: the tokenizer to embed (null: none).
  GgufModelWriter(const Model& base, const Tokenizer* tok, const std::string& path, GgmlType type,
                  GgufFallback fallback = GgufFallback::quantized)
      : cfg_(base.cfg), type_(type), fallback_(fallback) {
    const LlamaConfig& c = cfg_;
    if (c.qkv_bias) fail(path, ": GGUF export writes LLaMA models; q/k/v biases (Qwen2) are not supported yet");
    GgufWriter kv;
    add_llama_metadata(kv, c, tok, type);
    const bool block = is_block_type(type);
    // llama.cpp's llama_tensor_get_type: the classifier (or the tied table) Q6_K, Q8_0 when its rows are not
    // whole super-blocks; an untied table at the file's type, with the linears' fallback
    out_type_ = block ? (c.dim % kGgmlSuper == 0 ? GgmlType::q6_k : GgmlType::q8_0) : type;
    emb_type_ = c.tied_embeddings && block ? out_type_ : linear_type(c.dim);
    std::vector<GgufStream::Info> infos;
    const auto add = [&](const std::string& n, std::int64_t rows, std::int64_t cols, GgmlType t) {
      infos.push_back({n, rows == 1 ? std::vector<std::uint64_t>{std::uint64_t(cols)}
                                    : std::vector<std::uint64_t>{std::uint64_t(cols), std::uint64_t(rows)},
                       std::uint32_t(t), std::uint64_t(rows) * ggml_row_bytes(t, cols)});
    };
    add("token_embd.weight", c.vocab_size, c.dim, emb_type_);
    for (int i = 0; i < c.n_layers; ++i) {
      for (const NormDesc& n : kNorms) add(name(i, n.gguf), 1, c.dim, GgmlType::f32);
      for (const LinearDesc& l : kLinears) {
        const auto s = linear_shape(c, l.role);
        add(name(i, l.gguf), s[0], s[1], linear_type(s[1]));
      }
    }
    add("output_norm.weight", 1, c.dim, GgmlType::f32);
    if (!c.tied_embeddings) add("output.weight", c.vocab_size, c.dim, out_type_);
    f_ = std::make_unique<GgufStream>(path, kv, std::move(infos));
    put("token_embd.weight", base.embeddings_matrix(), emb_type_, nullptr, false);
    final_norm_ = base.final_norm;
    if (!c.tied_embeddings) output_ = base.output_matrix();
  }

  // Block i (in order): `fake` the method's fake-quantized block; `quantized` its codes per role (null, or an
  // entry without codes: re-quantize the fake weights); `transformed` its float weights after the transforms, for
  // GgufFallback::float_weights (required then).
  bool wants_transformed() const { return fallback_ == GgufFallback::float_weights && is_block_type(type_); }
  void block(int i, const Block& fake, const std::array<QuantizedLinear, 7>* quantized, const Block* transformed = nullptr) {
    if (wants_transformed() && !transformed) fail(f_->path(), ": block ", i, ": the float fallback needs the transformed block");
    if (i != next_) fail(f_->path(), ": block ", i, " written out of order (expected ", next_, ")");
    for (std::size_t s = 0; s < fake.shift.size(); ++s)
      if (fake.shift[s].size())
        fail(f_->path(), ": block ", i, " shifts the input of ", input_groups()[s].key,
             " (the shift transform), which a llama.cpp LLaMA model cannot hold");
    for (const LinearDesc& l : kLinears)
      if (fake.linear(l.role).b.size())
        fail(f_->path(), ": block ", i, " ", l.name, " has a bias, which lowbit's GGUF export does not write");
    for (const NormDesc& n : kNorms) put(name(i, n.gguf), MatrixRM(fake.norm(n.role).transpose()), GgmlType::f32, nullptr, false);
    for (const LinearDesc& l : kLinears) {
      const QuantizedLinear* q = quantized && (*quantized)[std::size_t(l.role)].codes.size() ? &(*quantized)[std::size_t(l.role)] : nullptr;
      const MatrixRM& W = fake.linear(l.role).W;
      const bool fallback = is_block_type(type_) && linear_type(W.cols()) == GgmlType::f16;
      const Block& floats = transformed ? *transformed : fake;  // checked above when the fallback needs it
      const MatrixRM& stored = fallback && wants_transformed() ? floats.linear(l.role).W : W;
      put(name(i, l.gguf), stored, linear_type(W.cols()), q, l.rope && cfg_.rope == RopeStyle::rotate_half, &W);
    }
    ++next_;
  }

  void commit() {
    if (next_ != cfg_.n_layers) fail(f_->path(), ": ", cfg_.n_layers - next_, " blocks were never written");
    put("output_norm.weight", MatrixRM(final_norm_.transpose()), GgmlType::f32, nullptr, false);
    if (!cfg_.tied_embeddings) put("output.weight", output_, out_type_, nullptr, false);
    f_->commit();
  }

  const std::vector<GgufTensorReport>& report() const { return report_; }
  std::uint64_t bytes() const {
    std::uint64_t n = 0;
    for (const GgufTensorReport& r : report_) n += r.bytes;
    return n;
  }

 private:
  static bool fits(GgmlType t, std::int64_t cols) { return !is_block_type(t) || cols % ggml_block_elems(t) == 0; }
  // A row that is not whole blocks of the file's type: llama.cpp's fallback (Q4_K -> Q5_0, which lowbit does not
  // write: Q4_1; Q6_K -> Q8_0), and F16 when it is not whole blocks of 32 either.
  GgmlType linear_type(std::int64_t cols) const {
    if (fits(type_, cols)) return type_;
    const GgmlType smaller = type_ == GgmlType::q4_k ? GgmlType::q4_1 : type_ == GgmlType::q6_k ? GgmlType::q8_0 : GgmlType::f16;
    return fits(smaller, cols) ? smaller : GgmlType::f16;
  }
  static std::string name(int i, const char* t) { return "blk." + std::to_string(i) + "." + t + ".weight"; }

  // Writes W (rows in llama.cpp's order: `to_interleaved` maps rotate-half q / k rows to adjacent pairs) as t.
  // `method`: the weights the report compares with (W itself when null).
  void put(const std::string& n, const MatrixRM& W, GgmlType t, const QuantizedLinear* q, bool to_interleaved,
           const MatrixRM* method = nullptr) {
    const std::int64_t R = W.rows(), C = W.cols(), hd = cfg_.head_dim(), half = hd / 2;
    // GGUF row r holds W's row src(r): within a head, adjacent pair (2i, 2i+1) <- (i, i + hd/2)
    const auto src = [&](std::int64_t r) {
      if (!to_interleaved) return r;
      const std::int64_t h = r / hd, k = r % hd;
      return h * hd + (k % 2) * half + k / 2;
    };
    const std::size_t rb = ggml_row_bytes(t, C);
    std::vector<std::uint8_t> bytes(std::size_t(R) * rb);
    GgufTensorReport rep{n, t, GgufStorage::values, 0, bytes.size()};
    if (is_block_type(t)) {
      const bool codes = q != nullptr && ggml_pack_linear(t, *q, bytes.data(), src);
      rep.how = codes ? GgufStorage::codes : GgufStorage::requantized;
      if (!codes)
        parallel_for(R, [&](std::int64_t r) { ggml_quantize_row(t, W.row(src(r)).data(), bytes.data() + std::size_t(r) * rb, C); }, C * 4);
    } else {
      if (t == GgmlType::f16 && is_block_type(type_) && R > 1) rep.how = GgufStorage::f16_fallback;
      for (std::int64_t r = 0; r < R; ++r) ggml_quantize_row(t, W.row(src(r)).data(), bytes.data() + std::size_t(r) * rb, C);
    }
    // the stored tensor as llama.cpp reads it, against the weights given (row sums in row order)
    std::vector<double> err(static_cast<std::size_t>(R)), ref(static_cast<std::size_t>(R));
    parallel_for(R, [&](std::int64_t r) {
      std::vector<float> y(static_cast<std::size_t>(C));
      ggml_dequantize_row(t, bytes.data() + std::size_t(r) * rb, y.data(), C);
      const float* w = (method ? *method : W).row(src(r)).data();
      double e = 0, s = 0;
      for (std::int64_t k = 0; k < C; ++k) {
        if (!std::isfinite(y[std::size_t(k)]))
          fail(f_->path(), ": tensor '", n, "' row ", r, " is not finite as ", to_string(t), " (a scale beyond fp16's range?)");
        e += (double(y[std::size_t(k)]) - w[k]) * (double(y[std::size_t(k)]) - w[k]), s += double(w[k]) * w[k];
      }
      err[std::size_t(r)] = e, ref[std::size_t(r)] = s;
    }, C * 8);
    double e = 0, s = 0;
    for (std::size_t r = 0; r < err.size(); ++r) e += err[r], s += ref[r];
    rep.rel_rms = s > 0 ? std::sqrt(e / s) : std::sqrt(e);
    f_->write(n, bytes.data(), bytes.size());
    report_.push_back(std::move(rep));
  }

  LlamaConfig cfg_;
  GgmlType type_, emb_type_ = GgmlType::f32, out_type_ = GgmlType::f32;
  GgufFallback fallback_;
  std::unique_ptr<GgufStream> f_;
  Eigen::VectorXf final_norm_;
  MatrixRM output_;
  std::vector<GgufTensorReport> report_;
  int next_ = 0;
};

}  // namespace lowbit
