// lowbit/algorithms/pipeline.hpp -- the one block loop of post-training quantization.
//
//   for block i:  load it (a copy from memory, or converted from the memory-mapped file: never the whole model)
//                 run the method steps on it (BlockJob: float weights, calibration inputs, quantized slots)
//                 move each chain's input on to block i+1: full precision through the original block,
//                   quantized through the quantized block (or the output a step already computed)
//                 hand the finished block -- float (transformed) weights, fake-quantized weights, quantized
//                   linears, artifacts -- to the sink, and drop it
// Peak memory = the calibration tokens' embeddings + the block in fp32 (the working copy; the original too when
// the full-precision chain is carried; a separate fake-quantized copy only when a sink wants the transformed
// weights) + the calibration activations of each chain carried + the step's statistics.  Progress and files live outside the loop
// (the progress callback; sinks in algorithms/sinks.hpp).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../data/calibration.hpp"
#include "../model/llama.hpp"
#include "method.hpp"
#include "methods/awq.hpp"
#include "methods/gptq.hpp"
#include "methods/omniquant.hpp"
#include "methods/rtn.hpp"
#include "methods/osplus.hpp"
#include "methods/pss.hpp"
#include "methods/shift.hpp"
#include "methods/smoothquant.hpp"

namespace lowbit {

// Options of every method, for building a chain by name (each method owns its own part).
struct MethodOptions {
  AwqOptions awq;
  AwqLoaded awq_loaded;
  GptqOptions gptq;
  SmoothOptions smooth;
  ShiftOptions shift;
  PssMethodOptions pss;
  OsPlusOptions osplus;
  OmniQuantOptions omniquant;
};

// The methods: their facts, in the order users see them, before any quantizer type is chosen (a plain list:
// naming the methods instantiates none of them).  A new method is a new file under methods/, one entry here and
// one branch in make_method below (tests/algorithms/test_pipeline.cpp checks that the two agree).
inline const std::vector<const MethodInfo*>& method_infos() {
  static const std::vector<const MethodInfo*> all = {&rtn_info(),   &awq_info(),  &gptq_info(),   &smoothquant_info(),
                                                     &shift_info(), &pss_info(),  &osplus_info(), &omniquant_info()};
  return all;
}

// Builds the method `m` (one of method_infos()) for the quantizer type Q.
template <class Q>
std::unique_ptr<BlockMethod<Q>> make_method(const MethodInfo& m, const Q& q, const MethodOptions& o) {
  if (&m == &rtn_info()) return std::make_unique<RtnMethod<Q>>(q);
  if (&m == &awq_info()) return std::make_unique<AwqMethod<Q>>(q, o.awq, o.awq_loaded);
  if (&m == &gptq_info()) return std::make_unique<GptqMethod<Q>>(q, o.gptq);
  if (&m == &smoothquant_info()) return std::make_unique<SmoothQuantMethod<Q>>(q, o.smooth);
  if (&m == &shift_info()) return std::make_unique<ShiftMethod<Q>>(q, o.shift);
  if (&m == &pss_info()) return std::make_unique<PssMethod<Q>>(q, o.pss);
  if (&m == &osplus_info()) return std::make_unique<OsPlusMethod<Q>>(q, o.osplus);
  if (&m == &omniquant_info()) return std::make_unique<OmniQuantMethod<Q>>(q, o.omniquant, o.awq, o.awq_loaded);
  fail("method ", m.name, ": no maker (a method listed in method_infos() needs a branch in make_method)");
}

[[noreturn]] inline void unknown_method(const std::string& name) {
  std::string known;
  for (const MethodInfo* i : method_infos()) known += (known.empty() ? "" : ", ") + std::string(i->name);
  fail("unknown method '", name, "' (", known, ", or a chain such as awq+gptq)");
}

template <class Q>
std::unique_ptr<BlockMethod<Q>> make_method(const std::string& name, const Q& q, const MethodOptions& o) {
  for (const MethodInfo* m : method_infos())
    if (name == m->name) return make_method(*m, q, o);
  unknown_method(name);
}

// A chain "a+b+c": transforms first, at most one quantizing step, last; RTN is appended after transforms.
// Returns the steps' infos (checks the chain before any quantizer type exists).
inline std::vector<const MethodInfo*> parse_method_chain(const std::string& chain) {
  std::vector<const MethodInfo*> steps;
  std::size_t i = 0;
  while (i <= chain.size()) {
    std::size_t j = std::min(chain.find('+', i), chain.size());
    std::string name = chain.substr(i, j - i);
    if (name == "os" && j < chain.size()) {  // "os+" is OS+ (osplus); the '+' after it is optional
      name = "osplus";
      if (j + 1 < chain.size() && chain[j + 1] == '+') ++j;
      if (j + 1 >= chain.size()) j = chain.size();
    }
    const MethodInfo* found = nullptr;
    for (const MethodInfo* m : method_infos())
      if (name == m->name) found = m;
    if (!found) unknown_method(name);
    if (!steps.empty() && steps.back()->quantizes)
      fail("method chain '", chain, "': ", steps.back()->name, " quantizes, so it must be the last step");
    steps.push_back(found);
    i = j + 1;
  }
  if (!steps.back()->quantizes) steps.push_back(&rtn_info());
  return steps;
}

// The grid of the chain's quantizing step's reference (GPTQ's for gptq and awq+gptq, min-max otherwise).
inline Grid reference_grid(const std::string& chain) { return parse_method_chain(chain).back()->grid; }

template <class Q>
struct MethodChain {
  std::string name;
  Q q;  // the quantizer of the chain's quantizing step
  std::vector<std::unique_ptr<BlockMethod<Q>>> steps;
  bool calibrated() const {
    for (const auto& s : steps)
      if (s->info().calibrated) return true;
    return false;
  }
};

template <class Q>
MethodChain<Q> make_method_chain(const std::string& chain, const Q& q, const MethodOptions& o = {}) {
  MethodChain<Q> c{chain, q, {}};
  for (const MethodInfo* i : parse_method_chain(chain)) c.steps.push_back(make_method<Q>(i->name, q, o));
  return c;
}

// A finished block, as the sink sees it (valid during the call only).
struct FinishedBlock {
  int index;
  const Block& transformed;  // float weights after the transforms (AWQ: scaled and clipped), not quantized
  const Block& fake;         // the same with every linear replaced by its dequantized quantized form
  const std::array<QuantizedLinear, 7>& quantized;  // by Role
  const BlockArtifacts& artifacts;
};

class BlockSink {
 public:
  virtual ~BlockSink() = default;
  virtual void block(const FinishedBlock& b) = 0;
  // Whether it reads FinishedBlock::transformed; when no sink does, the loop builds the fake-quantized block in
  // the working block's place (one block copy less in memory).
  virtual bool wants_transformed() const { return false; }
};

struct Progress {
  int block, n_blocks;
  std::string step;
  double elapsed;
};

// Weight-activation runs: how every quantized block quantizes its activations (copied into each finished block,
// so the sink's model evaluates the W-A quantized function and the quantized chain feeds the next block through
// it), and how static per-tensor ranges are observed (on the quantized chain, one step per calibration window,
// each group's range fixed before its input is quantized).
struct ActOptions {
  BlockActQuant quant;  // its ranges are ignored: they are calibrated
  ActObserver observer = ActObserver::minmax;
  double percentile = 99.99;
  bool on() const { return quant.on(); }
  bool static_ranges() const { return quant.input.on() && quant.input.static_range; }
  void validate() const {
    quant.input.validate("activation quantizer");
    quant.q.validate("Q quantizer");
    quant.k.validate("K quantizer");
    quant.v.validate("V quantizer");
    for (const ActQuant* a : {&quant.q, &quant.k, &quant.v})
      if (a->on() && a->granularity != ActGranularity::per_token) fail("Q/K/V quantizers are dynamic per (token, head)");
  }
};

struct PipelineOptions {
  std::optional<Chain> propagate;  // every step reads this chain (default: each its reference's)
  std::function<void(const Progress&)> progress;
  ActOptions act;
};

struct PipelineReport {
  double seconds = 0.0;
  int damp_retries = 0;
  std::vector<std::string> steps;
  bool carried[2] = {false, false};  // by Chain
  // Groups the grid cannot hold (degenerate_groups(): all values of one sign on the minmax grid), counted on the
  // weights the quantizing step received; `degenerate_linears` names the linears that have some.
  std::int64_t groups = 0, degenerate_groups = 0;
  std::vector<std::string> degenerate_linears;
  std::vector<std::vector<double>> train_loss;  // per block, the mean loss of each training epoch (OmniQuant)
};

// Progress on stderr: one line rewritten in place on a terminal, a line per step in a log.
inline std::function<void(const Progress&)> stderr_progress() {
  return [](const Progress& p) {
    const double eta = p.block > 0 ? p.elapsed / p.block * (p.n_blocks - p.block) : 0.0;
    const bool tty = ::isatty(2);
    std::fprintf(stderr, "%s[lowbit] block %d/%d  %-14s  elapsed %6.1fs  ETA %6.1fs%s", tty ? "\r" : "", p.block + 1,
                 p.n_blocks, p.step.c_str(), p.elapsed, eta, tty ? "   " : "\n");
    std::fflush(stderr);
  };
}

// Checks the quantizer against every linear's shape (group size vs row length) and the calibration windows,
// before any work.
template <class Q>
void check_quantizable(const LlamaConfig& cfg, const Q& q, const Windows& calib, bool calibrated) {
  for (int i = 0; i < cfg.n_layers; ++i)
    for (Role r : all_roles) {
      const auto shape = linear_shape(cfg, r);
      group_layout(q, shape[0], shape[1], "block " + std::to_string(i) + " " + to_string(r));
    }
  if (!calibrated) return;
  if (calib.empty()) fail("the method needs calibration windows");
  for (const auto& w : calib)
    if (w.size() != calib[0].size()) fail("calibration windows must all have the same length");
}

namespace detail {
// The groups of the block's linears, and those the grid cannot hold, as the quantizing step receives them.
template <class Q>
void count_groups(const Q& q, const BlockJob& job, PipelineReport& rep) {
  for (Role r : all_roles) {
    const MatrixRM& W = job.block.linear(r).W;
    const GroupLayout g = group_layout(q, W.rows(), W.cols());
    const std::int64_t d = degenerate_groups(q, W);
    rep.groups += g.per_tensor ? 1 : g.rows * g.ngroups;
    rep.degenerate_groups += d;
    if (d) rep.degenerate_linears.push_back(job.where(r));
  }
}
}  // namespace detail

template <class Q>
PipelineReport quantize_model(const Model& m, const Windows& calib, MethodChain<Q>& chain, BlockSink& sink,
                              const PipelineOptions& opt = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  const int n = m.cfg.n_layers;
  opt.act.validate();
  const bool static_act = opt.act.static_ranges();
  const bool calibrated = chain.calibrated() || static_act;  // static ranges are observed on calibration data
  check_quantizable(m.cfg, chain.q, calib, calibrated);
  PipelineReport rep;
  std::vector<Chain> reads;
  for (const auto& s : chain.steps) {
    rep.steps.push_back(s->info().name);
    const Chain c = opt.propagate ? *opt.propagate : s->info().reads;
    reads.push_back(c);
    if (s->info().calibrated) rep.carried[std::size_t(c)] = true;
    if (s->info().target_full_precision) rep.carried[std::size_t(Chain::full_precision)] = true;
  }
  if (static_act) rep.carried[std::size_t(Chain::quantized)] = true;
  const int L = calibrated ? int(calib.at(0).size()) : 0;
  if (calibrated && m.cfg.max_seq_len > 0 && L > m.cfg.max_seq_len)
    warn("calibration windows of ", L, " tokens are longer than the model's declared context of ", m.cfg.max_seq_len,
         " (RoPE runs past it; the statistics may not match the model's use)");
  std::array<MatrixRM, 2> x;  // block input by chain
  if (calibrated) {
    std::vector<int> toks;
    for (const auto& w : calib) toks.insert(toks.end(), w.begin(), w.end());
    const MatrixRM e = embed(m, toks);
    for (int c = 0; c < 2; ++c)
      if (rep.carried[c]) x[std::size_t(c)] = e;
  }
  auto report = [&](int i, const std::string& step) {
    if (opt.progress)
      opt.progress({i, n, step, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
  };
  const bool keep_transformed = sink.wants_transformed();
  // The full-precision chain runs the original block; no copy is needed when the first step hands over its output.
  const bool fp_chain = rep.carried[std::size_t(Chain::full_precision)];
  const bool keep_original = fp_chain && !(chain.steps[0]->info().outputs_original && reads[0] == Chain::full_precision);
  const std::size_t last = chain.steps.size() - 1;  // the quantizing step (parse_method_chain)
  for (int i = 0; i < n; ++i) {
    const std::string block = "block " + std::to_string(i);
    Block work = in_context(block + ": loading", [&] { return m.load_block(i); });
    Block orig;
    if (keep_original) orig = work;
    BlockJob job{m.cfg, i, n, L, work};
    for (int c = 0; c < 2; ++c)
      if (rep.carried[c]) job.inputs[std::size_t(c)] = &x[std::size_t(c)];
    job.step = [&](const std::string& s) { report(i, s); };
    job.keep_float_weights = keep_transformed;
    job.act = opt.act.quant;
    for (std::size_t k = 0; k < chain.steps.size(); ++k) {
      if (k == last) detail::count_groups(chain.q, job, rep);
      in_context(block + " " + chain.steps[k]->info().name, [&] { chain.steps[k]->run(job, reads[k]); });
    }
    std::array<QuantizedLinear, 7> ql;
    // everything as transformed (norms, biases, shifts); the linears' weights are replaced below
    Block fake_copy = keep_transformed ? without_weights(work) : Block();
    Block& fake = keep_transformed ? fake_copy : work;
    for (Role r : all_roles) {
      auto& slot = job.quantized[std::size_t(r)];
      if (!slot) fail(block, ": method chain '", chain.name, "' left ", to_string(r), " unquantized");
      ql[std::size_t(r)] = std::move(*slot);
      fake.linear(r).W = ql[std::size_t(r)].dequantize();
      if (!fake.linear(r).W.allFinite())
        fail(job.where(r), ": the quantized weight is not finite (its scales overflow float32)");
    }
    if (opt.act.on()) {
      fake.act = opt.act.quant;  // static ranges: calibrated below, as the quantized chain passes
      fake.act.range = {};
      job.outputs[std::size_t(Chain::quantized)].reset();  // a step's output ran with float activations
    }
    // Move each carried chain on to block i+1: the output a step already computed, else a forward through the
    // block that chain runs (the original one, or the quantized one).
    for (Chain c : {Chain::full_precision, Chain::quantized}) {
      const std::size_t ci = std::size_t(c);
      if (!rep.carried[ci]) continue;
      if (auto& out = job.outputs[ci]) {
        x[ci] = std::move(*out);
      } else if (c == Chain::quantized && static_act) {
        // each group's range from its input on this chain (one observer step per window), fixed before the
        // forward quantizes that input with it
        report(i, "act ranges");
        block_forward_staged(m.cfg, fake, x[ci], L, nullptr, [&](int s, const MatrixRM& in) {
          ActRangeObserver obs(opt.act.observer, fake.act.input.symmetric, opt.act.percentile);
          const std::string what = block + " " + input_groups()[std::size_t(s)].key;
          for (Eigen::Index w = 0; w + L <= in.rows(); w += L) obs.observe(in.middleRows(w, L), what);
          fake.act.range[std::size_t(s)] = obs.range();
        });
      } else {
        if (c == Chain::full_precision && !keep_original) fail(block, ": internal: the first step did not hand over its output");
        report(i, c == Chain::full_precision ? "propagate fp" : "propagate q");
        block_forward(m.cfg, c == Chain::full_precision ? orig : fake, x[ci], L);
      }
      if (!x[ci].allFinite())
        fail(block, ": the ", to_string(c), " chain's output is not finite (the activations overflow float32)");
    }
    rep.damp_retries += job.artifacts.damp_retries;
    if (!job.artifacts.omniquant_loss.empty()) rep.train_loss.push_back(job.artifacts.omniquant_loss);
    in_context(block + ": output", [&] { sink.block(FinishedBlock{i, work, fake, ql, job.artifacts}); });
  }
  if (opt.progress && ::isatty(2)) std::fprintf(stderr, "\n");
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace lowbit
