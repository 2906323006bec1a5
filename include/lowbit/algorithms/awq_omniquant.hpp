// lowbit/algorithms/awq_omniquant.hpp -- AWQ -> OmniQuant, the seeds' two-step workflow (LLMC's
// configs/quantization/combination/awq_comb_omni; ALGORITHMS.md 6), as two passes of the block loop in one call,
// each pass exactly one step of the two-process workflow:
//
//   weight-only (no LET)    step 1  AWQ's scales folded, no clip (LLMC w4a16g128 step 1: weight_clip False);
//                                   the transformed model kept (save_trans)
//                           step 2  OmniQuant on the transformed model with search_clip_init: AWQ's clip search
//                                   on each block's training input gives LWC's starting ratios
//   with LET (W-A)          step 1  AWQ (scale search scoring the run's activation quantization) with its clips;
//                                   scales and clips kept (save_scale, save_clip), the model left as it was
//                           step 2  OmniQuant on the original model: LET starts from AWQ's scales
//                                   (search_scale_init), LWC from AWQ's clips (load_clip)
//
// Two processes -- step 1 writing the transformed folder in f32 (or the scale and clip files), step 2 loading
// them with --method omniquant --search-clip-init (or --let --load-scale --load-clip) -- give the same model bit
// for bit (tests/algorithms/test_omniquant.cpp): the files hold f32 exactly and each step reads only them (for a
// Hugging Face model; saving a llama2.c model reorders its q/k rows to Hugging Face's RoPE convention).
// Memory: step 1 keeps the transformed blocks (weight-only), as the saved folder would.
#pragma once

#include <vector>

#include "pipeline.hpp"
#include "sinks.hpp"

namespace lowbit {

// What step 1 left: the transformed model (weight-only), AWQ's scales and clips per block, its report.
struct AwqOmniQuantStep1 {
  Model transformed;
  std::vector<AwqBlockResult> awq;
  PipelineReport report;
};

// Step 1 alone (what the first process runs).
template <class Q>
AwqOmniQuantStep1 awq_omniquant_step1(const Model& m, const Windows& calib, const Q& q, MethodOptions mo,
                                      const PipelineOptions& po) {
  const bool let = mo.omniquant.let;
  if (!let) mo.awq.clip = false;  // the clip search runs in step 2, on the transformed model
  mo.awq_loaded = {};
  ModelSink keep(m, ModelSink::Keep{false, !let, false});
  auto chain = make_method_chain("awq", q, mo);
  AwqOmniQuantStep1 s;
  s.report = quantize_model(m, calib, chain, keep, po);
  if (!let) s.transformed = std::move(keep.transformed);
  s.awq = std::move(keep.awq);
  return s;
}

// Step 2 alone (what the second process runs): OmniQuant on `m` (the transformed model, weight-only; the original,
// with LET) starting from step 1's clips and scales.
template <class Q>
PipelineReport awq_omniquant_step2(const Model& m, const Windows& calib, const Q& q, MethodOptions mo,
                                   const std::vector<AwqBlockResult>& awq, BlockSink& sink, const PipelineOptions& po) {
  const bool let = mo.omniquant.let;
  mo.omniquant.search_clip_init = !let;
  mo.awq_loaded = let ? AwqLoaded{&awq, true, mo.awq.clip} : AwqLoaded{};
  auto chain = make_method_chain("omniquant", q, mo);
  return quantize_model(m, calib, chain, sink, po);
}

// Both steps; `step1`, when given, receives step 1's results.
template <class Q>
PipelineReport quantize_awq_omniquant(const Model& m, const Windows& calib, const Q& q, const MethodOptions& mo,
                                      BlockSink& sink, const PipelineOptions& po, AwqOmniQuantStep1* step1 = nullptr) {
  AwqOmniQuantStep1 s = awq_omniquant_step1(m, calib, q, mo, po);
  PipelineReport r = awq_omniquant_step2(mo.omniquant.let ? m : s.transformed, calib, q, mo, s.awq, sink, po);
  r.seconds += s.report.seconds;
  std::vector<std::string> steps = s.report.steps;
  steps.insert(steps.end(), r.steps.begin(), r.steps.end());
  r.steps = std::move(steps);
  if (step1) *step1 = std::move(s);
  return r;
}

}  // namespace lowbit
