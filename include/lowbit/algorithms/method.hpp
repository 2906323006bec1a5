// lowbit/algorithms/method.hpp -- what a quantization method is to the block loop (algorithms/pipeline.hpp).
//
// A method is an object with its options and one step per block.  The loop hands the step a BlockJob: the
// block's float weights (a transform such as AWQ edits them in place: scales folded, clips applied), the
// block's calibration input on the chain the step reads, and the slots of the block's quantized linears that
// a quantizing step (RTN, GPTQ) fills.  Steps compose left to right ("awq+gptq": AWQ's scales and clips, then
// GPTQ on the transformed weights); a chain that ends in a transform is finished by RTN.
//
// Chains.  Each step reads the block input of one chain, its reference's choice: the full-precision chain
// (the original blocks' outputs: AWQ, SmoothQuant) or the quantized chain (the quantized blocks' outputs: GPTQ,
// OmniQuant).  The loop carries the chains its steps read (both for awq+gptq, so one run equals AWQ with
// save_trans followed by GPTQ on the saved model) unless PipelineOptions::propagate forces one.
#pragma once

#include <array>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "../core/matrix.hpp"
#include "../model/block.hpp"
#include "../quant/quantized.hpp"
#include "awq.hpp"
#include "gptq.hpp"

namespace lowbit {

enum class Chain { full_precision, quantized };
inline const char* to_string(Chain c) { return c == Chain::full_precision ? "full-precision" : "quantized"; }

// What the steps of one block found, for the artifact files and reports.
struct BlockArtifacts {
  std::optional<AwqBlockResult> awq;
  std::vector<GptqResult> gptq;  // per linear in processing order (Q and codes dropped: they are in `quantized`)
  std::map<std::string, Eigen::VectorXf> smooth;  // SmoothQuant / PSS / OS+ scales by input group key
  std::map<std::string, Eigen::VectorXf> shift;   // shifts by input group key
  std::vector<double> omniquant_loss;             // OmniQuant: the mean loss of each epoch
  std::string omniquant_stopped;                  // OmniQuant: why training stopped early (non-finite loss)
  double omniquant_seconds = 0;
  int damp_retries = 0;
};

struct BlockJob {
  BlockJob(const LlamaConfig& c, int i, int n, int len, Block& b) : cfg(c), index(i), n_blocks(n), L(len), block(b) {}
  const LlamaConfig& cfg;
  int index = 0, n_blocks = 0;
  int L = 0;                                         // calibration window length (0: no calibration)
  Block& block;                                      // float weights: transforms edit them in place
  std::array<const MatrixRM*, 2> inputs{};           // block input by Chain (null: chain not carried)
  std::array<std::optional<QuantizedLinear>, 7> quantized;  // by Role: filled by the quantizing step
  std::array<std::optional<MatrixRM>, 2> outputs;    // by Chain: this block's output on it, when a step computed it
  bool transformed = false;                          // a step has edited the float weights (no longer the original)
  BlockArtifacts artifacts;
  std::function<void(const std::string&)> step;      // progress: names the step now running
  // Whether the float weights must survive the quantizing step (a sink reads the transformed block); when not,
  // a quantizing step may overwrite them with their quantized values (GPTQ then needs no block copy).
  bool keep_float_weights = true;
  // The activation quantization the finished block will run with (weight-activation runs; off otherwise), for
  // steps whose search scores quantized activations.
  BlockActQuant act;

  const MatrixRM& input(Chain c) const {
    const MatrixRM* x = inputs[static_cast<std::size_t>(c)];
    if (!x) fail("block ", index, ": the ", to_string(c), " chain's input is not carried");
    return *x;
  }
  std::string where(Role r) const { return "block " + std::to_string(index) + " " + to_string(r); }
};

// Facts about a method that the loop and the command line need before a quantizer type exists.
struct MethodInfo {
  const char* name;
  bool quantizes;       // fills BlockJob::quantized (else: a transform, finished by a quantizing step)
  bool calibrated;      // reads calibration activations
  Chain reads;          // its reference's chain
  Grid grid;            // its reference's integer grid (the default when the user names none)
  // Run first, on the untouched block, the step leaves that block's output on the chain it reads in
  // BlockJob::outputs (AWQ's capture forward): the loop then needs no copy of the original block.
  bool outputs_original = false;
  // Also reads the full-precision chain, whatever chain it runs on (OmniQuant's target: fp_inps).
  bool target_full_precision = false;
};

template <class Q>
class BlockMethod {
 public:
  virtual ~BlockMethod() = default;
  virtual const MethodInfo& info() const = 0;
  // One block.  `chain` is the chain whose input the step reads (info().reads unless overridden).
  virtual void run(BlockJob& job, Chain chain) = 0;
};

}  // namespace lowbit
