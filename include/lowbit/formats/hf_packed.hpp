// lowbit/formats/hf_packed.hpp -- packed 4-bit (and 2/3/8-bit) Hugging Face checkpoints that GPU runtimes load:
//   AutoAWQ GEMM  (--save-awq)   pack/autoawq.hpp's layout; config.json quantization_config
//                                {quant_method "awq", bits, group_size, zero_point, version "gemm", modules_to_not_convert}
//   GPTQ          (--save-gptq)  pack/gptq.hpp's layout; config.json quantization_config and quantize_config.json
//                                {bits, group_size, damp_percent, desc_act, static_groups, sym, true_sequential,
//                                 model_name_or_path, model_file_base_name, quant_method "gptq", checkpoint_format "gptq"}
// Each linear model.layers.<i>.<hf> becomes <hf>.qweight / .qzeros / .scales (GPTQ: + .g_idx), from the method's
// own codes (QuantizedLinear); embeddings, norms, classifier and biases are fp16 (torch_dtype float16), written by
// HfWriter, which also puts q / k rows in Hugging Face's rotate-half order (codes and their scales move together).
//
// A linear whose shape the layout cannot hold (AutoAWQ: out % 8, in % group; GPTQ: in or out % 32 -- stories260K's
// 172-wide down projection) stays an fp16 `weight` holding the method's fake-quantized values, and is named in the
// config the way the loaders skip modules: AutoAWQ's modules_to_not_convert (matched as a substring of the module
// name), Transformers' GPTQConfig modules_in_block_to_quantize (the ones that are packed).  The decision is by
// role, from the shapes, so it is the same in every block.
//
// `desc_act` is true when the method produced act-order g_idx; `sym` when every zero point is 2^(b-1) (the kernels
// that take sym = true, Marlin among them, assume that zero and ignore qzeros; OmniQuant's symmetric grid has
// zero 2^(b-1) - 1, so it is written sym = false with its zeros).
#pragma once

#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../pack/autoawq.hpp"
#include "../pack/gptq.hpp"
#include "hf.hpp"

namespace lowbit {

enum class PackedFormat { autoawq, gptq };
inline const char* to_string(PackedFormat f) { return f == PackedFormat::autoawq ? "AutoAWQ" : "GPTQ"; }

// What the checkpoint's config states; every block's quantized linears must agree with it.
struct PackedSpec {
  int bits = 4;
  int group_size = 128;       // -1: per output channel
  double damp_percent = 0.01; // GPTQ's dampening, recorded in quantize_config.json
};

namespace detail {

class PackedStore final : public HfLinearStore {
 public:
  PackedStore(PackedFormat f, PackedSpec s, std::string dir) : format_(f), spec_(s), dir_(std::move(dir)) {
    if (f == PackedFormat::autoawq && s.bits != 4)
      fail(dir_, ": the AutoAWQ GEMM layout holds 4-bit weights only (this run quantizes to ", s.bits, " bits)");
    if (f == PackedFormat::gptq && !gptq_bits_supported(s.bits))
      fail(dir_, ": the GPTQ layout holds 2, 3, 4 or 8-bit weights (this run quantizes to ", s.bits, " bits)");
  }

  void declare(const std::string& prefix, const LinearDesc& l, std::int64_t out, std::int64_t in,
               std::vector<SafetensorsWriter::Entry>& e) override {
    const std::string why = shape_problem(out, in);
    if (!why.empty()) {
      if (skipped_.insert(l.hf).second) skip_reasons_.push_back(std::string(l.hf) + ": " + why);
      e.push_back({prefix + ".weight", DType::f16, {out, in}});
      return;
    }
    packed_.insert(l.hf);
    const std::int64_t G = groups(in);
    if (format_ == PackedFormat::autoawq) {
      e.push_back({prefix + ".qweight", DType::i32, {in, out / 8}});
      e.push_back({prefix + ".qzeros", DType::i32, {G, out / 8}});
      e.push_back({prefix + ".scales", DType::f16, {G, out}});
    } else {
      e.push_back({prefix + ".qweight", DType::i32, {in * spec_.bits / 32, out}});
      e.push_back({prefix + ".qzeros", DType::i32, {G, out * spec_.bits / 32}});
      e.push_back({prefix + ".scales", DType::f16, {G, out}});
      e.push_back({prefix + ".g_idx", DType::i32, {in}});
    }
  }

  void write(SafetensorsWriter& w, const std::string& prefix, const LinearDesc& l, const MatrixRM& W,
             const QuantizedLinear* q) override {
    if (skipped_.count(l.hf)) return w.write_floats(prefix + ".weight", W.data(), std::size_t(W.size()));
    if (!q) fail(dir_, ": ", prefix, " has no quantized codes to pack (the ", to_string(format_), " layout stores codes)");
    if (q->bits != spec_.bits) fail(dir_, ": ", prefix, " is quantized to ", q->bits, " bits, the checkpoint to ", spec_.bits);
    if (q->groups() != groups(q->cols()))
      fail(dir_, ": ", prefix, " has ", q->groups(), " groups per row, group size ", spec_.group_size, " means ", groups(q->cols()));
    const std::string where = dir_ + ": " + prefix;
    for (Eigen::Index r = 0; r < q->rows() && sym_; ++r)
      for (Eigen::Index g = 0; g < q->groups() && sym_; ++g) sym_ = q->params.at(r, g).zero == float(1 << (spec_.bits - 1));
    if (format_ == PackedFormat::autoawq) {
      const AwqPacked p = pack_autoawq(*q, where);
      w.write(prefix + ".qweight", p.qweight.data(), p.qweight.size() * 4);
      w.write(prefix + ".qzeros", p.qzeros.data(), p.qzeros.size() * 4);
      w.write(prefix + ".scales", p.scales.data(), p.scales.size() * 2);
    } else {
      if (q->act_order()) desc_act_ = true;
      const GptqPacked p = pack_gptq(*q, where);
      w.write(prefix + ".qweight", p.qweight.data(), p.qweight.size() * 4);
      w.write(prefix + ".qzeros", p.qzeros.data(), p.qzeros.size() * 4);
      w.write(prefix + ".scales", p.scales.data(), p.scales.size() * 2);
      w.write(prefix + ".g_idx", p.g_idx.data(), p.g_idx.size() * 4);
    }
  }

  std::string config_members() const override {
    return "  \"quantization_config\": " + (format_ == PackedFormat::autoawq ? awq_config() : gptq_config("    "));
  }

  void finish(const std::string& staging) override {
    if (format_ != PackedFormat::gptq) return;
    const std::string text = gptq_config("  ") + "\n";
    write_file_atomically(staging + "/quantize_config.json", text);
  }

  // The linears (by Hugging Face name) left as fp16 weights, each with why.
  const std::vector<std::string>& skipped() const { return skip_reasons_; }

 private:
  std::string shape_problem(std::int64_t out, std::int64_t in) const {
    return format_ == PackedFormat::autoawq ? autoawq_shape_problem(out, in, spec_.group_size) : gptq_shape_problem(out, in);
  }
  std::int64_t groups(std::int64_t in) const {
    return spec_.group_size <= 0 || spec_.group_size >= in ? 1 : (in + spec_.group_size - 1) / spec_.group_size;
  }
  static std::string names(const std::set<std::string>& s) {
    std::string out = "[";
    for (const std::string& n : s) out += (out.size() > 1 ? ", \"" : "\"") + n + "\"";
    return out + "]";
  }
  std::string awq_config() const {
    return "{\"quant_method\": \"awq\", \"bits\": " + std::to_string(spec_.bits) + ", \"group_size\": " +
           std::to_string(spec_.group_size) + ", \"zero_point\": true, \"version\": \"gemm\", \"modules_to_not_convert\": " +
           (skipped_.empty() ? std::string("null") : names(skipped_)) + "}";
  }
  std::string gptq_config(const std::string& in) const {
    char damp[32];
    std::snprintf(damp, sizeof damp, "%.9g", spec_.damp_percent);
    std::string s = "{\n" + in + "\"quant_method\": \"gptq\",\n" + in + "\"checkpoint_format\": \"gptq\",\n" + in +
                    "\"bits\": " + std::to_string(spec_.bits) + ",\n" + in + "\"group_size\": " + std::to_string(spec_.group_size) +
                    ",\n" + in + "\"desc_act\": " + (desc_act_ ? "true" : "false") + ",\n" + in + "\"sym\": " +
                    (sym_ ? "true" : "false") + ",\n" + in + "\"damp_percent\": " + damp + ",\n" + in +
                    "\"static_groups\": false,\n" + in + "\"true_sequential\": true,\n" + in +
                    "\"model_name_or_path\": null,\n" + in + "\"model_file_base_name\": \"model\"";
    if (!skipped_.empty()) s += ",\n" + in + "\"modules_in_block_to_quantize\": [" + names(packed_) + "]";
    return s + "\n" + in.substr(2) + "}";
  }

  PackedFormat format_;
  PackedSpec spec_;
  std::string dir_;
  std::set<std::string> skipped_, packed_;
  std::vector<std::string> skip_reasons_;
  bool sym_ = true, desc_act_ = false;
};

}  // namespace detail

// Streams a quantized model into an AutoAWQ or GPTQ folder, block by block, atomically (HfWriter's AtomicDir).
class HfPackedWriter {
 public:
  HfPackedWriter(const Model& base, const std::string& dir, PackedFormat f, PackedSpec spec,
                 const std::map<std::string, std::string>& metadata = {}) {
    auto store = std::make_unique<detail::PackedStore>(f, spec, dir);
    store_ = store.get();
    w_ = std::make_unique<HfWriter>(base, dir, DType::f16, metadata, std::move(store));
  }
  void block(int i, const Block& fake, const std::array<QuantizedLinear, 7>& quantized) { w_->block(i, fake, &quantized); }
  void commit() { w_->commit(); }
  const std::vector<std::string>& skipped() const { return store_->skipped(); }

 private:
  detail::PackedStore* store_ = nullptr;  // owned by w_
  std::unique_ptr<HfWriter> w_;
};

}  // namespace lowbit
