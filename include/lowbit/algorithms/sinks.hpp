// lowbit/algorithms/sinks.hpp -- where the block loop's finished blocks go.
//   ModelSink      keeps the fake-quantized model (and optionally the transformed one) resident, for evaluation
//                  and tests; collects AWQ artifacts for the scale / clip files
//   HfSink         streams the fake-quantized or the transformed model into a Hugging Face folder, block by block
//   GgufSink       streams the quantized model into a llama.cpp GGUF file (formats/gguf_export.hpp), the
//                  method's own codes where its grid is the block format
//   HfPackedSink   streams the quantized model into an AutoAWQ or GPTQ checkpoint folder (formats/hf_packed.hpp)
//   SinkFan        hands each block to several sinks
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../formats/gguf_export.hpp"
#include "../formats/hf.hpp"
#include "../formats/hf_packed.hpp"
#include "pipeline.hpp"

namespace lowbit {

class ModelSink final : public BlockSink {
 public:
  struct Keep {
    bool fake = true, transformed = false, quantized = false;
  };
  // `base` gives the non-block tensors (embeddings, norms, classifier) and the config.
  explicit ModelSink(const Model& base) : ModelSink(base, Keep{}) {}
  ModelSink(const Model& base, Keep keep) : keep_(keep) {
    fake.cfg = base.cfg;
    fake.tok_embeddings = base.tok_embeddings;
    fake.final_norm = base.final_norm;
    fake.output = base.output;
    fake.embedding_row = base.embedding_row;
    fake.load_output = base.load_output;
    if (keep.transformed) transformed = fake;
  }
  bool wants_transformed() const override { return keep_.transformed; }
  void block(const FinishedBlock& b) override {
    if (keep_.fake) fake.blocks.push_back(b.fake);
    if (keep_.transformed) transformed.blocks.push_back(b.transformed);
    if (keep_.quantized) quantized.push_back(b.quantized);
    awq.push_back(b.artifacts.awq ? *b.artifacts.awq : AwqBlockResult{});
    for (const GptqResult& g : b.artifacts.gptq) gptq.push_back(g);
  }

  Model fake, transformed;
  std::vector<std::array<QuantizedLinear, 7>> quantized;
  std::vector<AwqBlockResult> awq;  // per block (empty entries when AWQ did not run)
  std::vector<GptqResult> gptq;     // per linear in processing order

 private:
  Keep keep_;
};

enum class Weights { fake_quantized, transformed };

class HfSink final : public BlockSink {
 public:
  HfSink(const Model& base, const std::string& dir, Weights which, DType dtype = DType::f32,
         const std::map<std::string, std::string>& metadata = {})
      : w_(base, dir, dtype, metadata), which_(which) {}
  void block(const FinishedBlock& b) override { w_.block(b.index, which_ == Weights::fake_quantized ? b.fake : b.transformed); }
  bool wants_transformed() const override { return which_ == Weights::transformed; }
  void commit() { w_.commit(); }

 private:
  HfWriter w_;
  Weights which_;
};

class GgufSink final : public BlockSink {
 public:
  GgufSink(const Model& base, const Tokenizer* tok, const std::string& path, GgmlType type,
           GgufFallback fallback = GgufFallback::quantized)
      : w_(base, tok, path, type, fallback) {}
  bool wants_transformed() const override { return w_.wants_transformed(); }
  void block(const FinishedBlock& b) override { w_.block(b.index, b.fake, &b.quantized, &b.transformed); }
  void commit() { w_.commit(); }
  const GgufModelWriter& writer() const { return w_; }

 private:
  GgufModelWriter w_;
};

class HfPackedSink final : public BlockSink {
 public:
  HfPackedSink(const Model& base, const std::string& dir, PackedFormat f, PackedSpec spec,
               const std::map<std::string, std::string>& metadata = {})
      : w_(base, dir, f, spec, metadata) {}
  void block(const FinishedBlock& b) override { w_.block(b.index, b.fake, b.quantized); }
  void commit() { w_.commit(); }
  const HfPackedWriter& writer() const { return w_; }

 private:
  HfPackedWriter w_;
};

class SinkFan final : public BlockSink {
 public:
  void add(BlockSink* s) { sinks_.push_back(s); }
  bool wants_transformed() const override {
    for (const BlockSink* s : sinks_)
      if (s->wants_transformed()) return true;
    return false;
  }
  void block(const FinishedBlock& b) override {
    for (BlockSink* s : sinks_) s->block(b);
  }

 private:
  std::vector<BlockSink*> sinks_;
};

}  // namespace lowbit
