// lowbit/algorithms/pipeline.hpp -- block-sequential weight-only PTQ of a whole model: RTN, AWQ, GPTQ.
//
// The calibration windows go through the model once, block by block: for block i the pipeline collects
// what the method needs from the block's input, quantizes the block, and hands the next block either the
// full-precision output of block i (AWQ's reference behaviour) or the quantized block's output (GPTQ's);
// `propagate` selects, each method defaulting to its reference.  Memory: the model, plus the current block's
// activations for all windows.
//
//   RTN   fake-quantizes every linear (no calibration).
//   AWQ   awq_block(): scale search for the groups {attn_norm -> q,k,v}, {v -> o} (skipped under GQA, as the
//         reference does), {ffn_norm -> gate,up}, {up -> down}, all searched on the original block and then
//         folded into the previous op; then the clip search for v, o, gate, up, down (q/k are skipped) on the
//         scaled inputs; then every linear is fake-quantized.
//   GPTQ  true-sequential: {q,k,v}, then {o}, then {gate,up}, then {down}; each subset's Hessians are collected
//         with the earlier subsets already quantized.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "../io/safetensors.hpp"
#include "../model/calibration.hpp"
#include "../model/llama.hpp"
#include "../quant/spec.hpp"
#include "awq.hpp"
#include "gptq.hpp"

namespace lowbit {

enum class Method { rtn, awq, gptq };

inline const char* to_string(Method m) { return m == Method::rtn ? "rtn" : m == Method::awq ? "awq" : "gptq"; }
inline Method parse_method(const std::string& s) {
  if (s == "rtn") return Method::rtn;
  if (s == "awq") return Method::awq;
  if (s == "gptq") return Method::gptq;
  fail("unknown method '", s, "' (rtn, awq, gptq)");
}

enum class Propagate { method_default, full_precision, quantized };

// What AWQ found for one block: the scales of each group (by prev-op name) and the clip of each linear.
struct AwqBlockResult {
  std::map<std::string, Eigen::VectorXf> scales;       // "attn_norm", "v_proj", "ffn_norm", "up_proj"
  std::map<std::string, Eigen::VectorXf> x_mean;       // the activation statistics the scales came from
  std::map<std::string, AwqScaleResult> searches;
  std::map<Role, MatrixRM> clip_max, clip_min;         // [rows, ngroups]
};

struct PipelineOptions {
  Method method = Method::rtn;
  Propagate propagate = Propagate::method_default;
  GptqOptions gptq;
  AwqOptions awq;
  bool awq_clip = true;
  // Precomputed AWQ results (loaded scale / clip files): when present for a block, they are applied instead
  // of being searched.
  const std::vector<AwqBlockResult>* awq_load = nullptr;
  bool load_scales = false, load_clips = false;
  bool progress = true;  // block i/n, step, elapsed, ETA on stderr
  bool keep_transformed = false;  // AWQ: keep the scaled + clipped float blocks (save_trans)
};

struct PipelineReport {
  double seconds = 0.0;
  std::vector<AwqBlockResult> awq;    // per block (AWQ)
  std::vector<GptqResult> gptq_info;  // per linear, in processing order (Q dropped)
  std::vector<Block> transformed;     // AWQ: each block after scaling and clipping, before quantization
  int damp_retries = 0;
};

namespace detail {

inline void progress(bool on, int block, int n, const char* step, std::chrono::steady_clock::time_point t0) {
  if (!on) return;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double eta = block > 0 ? el / block * (n - block) : 0.0;
  // on a terminal one line is rewritten in place; in a log every step gets its own line
  std::fprintf(stderr, "%s[lowbit] block %d/%d  %-12s  elapsed %6.1fs  ETA %6.1fs%s", ::isatty(2) ? "\r" : "", block + 1, n,
               step, el, eta, ::isatty(2) ? "   " : "\n");
  std::fflush(stderr);
}

// Folds s into the op before the group: a norm (w /= s) or a linear's output rows (W /= s, b /= s); the
// group's linears get W[:, j] *= s_j.  The model's function is unchanged.
inline void fold_scales(Block& b, const std::string& prev, const std::vector<Role>& roles, const Eigen::VectorXf& s) {
  if (prev == "attn_norm") b.attn_norm.array() /= s.array();
  else if (prev == "ffn_norm") b.ffn_norm.array() /= s.array();
  else {
    Linear& p = b.linear(prev == "v_proj" ? Role::v : Role::up);
    for (Eigen::Index r = 0; r < p.W.rows(); ++r) p.W.row(r) /= s[r];
    if (p.b.size()) p.b.array() /= s.array();
  }
  for (Role r : roles) b.linear(r).W = b.linear(r).W * s.asDiagonal();
}

}  // namespace detail

// AWQ on one block: search (or load) and fold the scales, then search (or load) and apply the clips.  X is
// the block's input [n*L, dim].  Weights are left in float (not yet quantized).
template <class Q>
AwqBlockResult awq_block(const LlamaConfig& cfg, Block& b, const MatrixRM& X, int L, const Q& q, const AwqOptions& o,
                         bool clip, const AwqBlockResult* load = nullptr, bool load_scales = false, bool load_clips = false) {
  // inputs of every linear, with the original weights
  std::map<Role, MatrixRM> in;
  BlockHooks hooks;
  hooks.linear_input = [&](Role r, const MatrixRM& x) {
    if (r == Role::q || r == Role::o || r == Role::gate || r == Role::down) in[r] = x;
  };
  MatrixRM tmp = X;
  block_forward(cfg, b, tmp, L, &hooks);
  AwqBlockResult res;
  const Block orig = b;
  struct Group { std::string prev; std::vector<Role> roles; Role input; };
  std::vector<Group> groups = {{"attn_norm", {Role::q, Role::k, Role::v}, Role::q}};
  if (b.v.W.rows() == b.o.W.rows() && b.v.W.cols() == b.o.W.cols()) groups.push_back({"v_proj", {Role::o}, Role::o});
  groups.push_back({"ffn_norm", {Role::gate, Role::up}, Role::gate});
  groups.push_back({"up_proj", {Role::down}, Role::down});
  for (const Group& g : groups) {
    const MatrixRM& x = in[g.input];
    Eigen::VectorXf s;
    if (load_scales && load && load->scales.count(g.prev)) {
      s = load->scales.at(g.prev);
      if (s.size() != x.cols()) fail("AWQ: loaded scales for ", g.prev, " have ", s.size(), " entries, expected ", x.cols());
    } else {
      const Eigen::VectorXf xm = awq_act_mean(x);
      std::vector<const MatrixRM*> layers;
      for (Role r : g.roles) layers.push_back(&orig.linear(r).W);
      auto module = [&](const std::vector<MatrixRM>& W) -> MatrixRM {
        Block c = orig;
        for (std::size_t k = 0; k < g.roles.size(); ++k) c.linear(g.roles[k]).W = W[k];
        if (g.prev == "attn_norm") return attention_forward(cfg, c, x, L);
        if (g.prev == "ffn_norm") return mlp_forward(c, x);
        const Linear& lin = c.linear(g.roles[0]);
        MatrixRM y = x * lin.W.transpose();
        if (lin.b.size()) y.rowwise() += lin.b.transpose();
        return y;
      };
      std::vector<MatrixRM> fp;
      for (Role r : g.roles) fp.push_back(orig.linear(r).W);
      const MatrixRM y_fp = module(fp);
      AwqScaleResult sr = awq_search_scale(q, layers, xm, module, y_fp, o);
      s = sr.scales;
      res.x_mean[g.prev] = xm;
      res.searches[g.prev] = std::move(sr);
    }
    res.scales[g.prev] = s;
    detail::fold_scales(b, g.prev, g.roles, s);
    // the clip search sees the scaled inputs
    MatrixRM& xs = in[g.input];
    for (Eigen::Index t = 0; t < xs.rows(); ++t) xs.row(t).array() /= s.transpose().array();
  }
  if (clip) {
    for (Role r : {Role::v, Role::o, Role::gate, Role::up, Role::down}) {
      const Role src = r == Role::v ? Role::q : r == Role::up ? Role::gate : r;
      MatrixRM& W = b.linear(r).W;
      const GroupLayout Lg = group_layout(q, W.rows(), W.cols(), to_string(r));
      MatrixRM mx, mn;
      if (load_clips && load && load->clip_max.count(r)) {
        mx = load->clip_max.at(r);
        if (load->clip_min.count(r)) mn = load->clip_min.at(r);
        if (mx.rows() != W.rows() || mx.cols() != Lg.ngroups) fail("AWQ: loaded clip for ", to_string(r), " has the wrong shape");
      } else {
        mx = awq_search_clip(q, W, sample_tokens(in[src], o.clip_tokens), o, o.symmetric_clip ? nullptr : &mn);
      }
      apply_clip(W, mx, Lg.group, mn.size() ? &mn : nullptr);
      res.clip_max[r] = mx;
      if (mn.size()) res.clip_min[r] = mn;
    }
  }
  return res;
}

// Quantizes the model's linear weights in place (fake-quantized: dequantized values in float).
template <class Q>
PipelineReport quantize_model(Model& m, const Windows& calib, const Q& q, const PipelineOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  m.make_resident();
  PipelineReport rep;
  const int n = m.cfg.n_layers;
  const bool need_calib = opt.method != Method::rtn;
  const bool propagate_q = opt.propagate == Propagate::quantized ||
                           (opt.propagate == Propagate::method_default && opt.method == Method::gptq);
  int L = 0;
  MatrixRM x;
  if (need_calib) {
    if (calib.empty()) fail(to_string(opt.method), " needs calibration windows");
    L = int(calib[0].size());
    std::vector<int> toks;
    for (const auto& w : calib) {
      if (int(w.size()) != L) fail("calibration windows must all have the same length");
      toks.insert(toks.end(), w.begin(), w.end());
    }
    x = embed(m, toks);
  }
  auto fq_all = [&](Block& b) {
    for (Role r : all_roles) {
      MatrixRM& W = b.linear(r).W;
      fake_quant(q, W, W, {}, to_string(r));
    }
  };
  for (int i = 0; i < n; ++i) {
    Block& b = m.blocks[std::size_t(i)];
    if (opt.method == Method::rtn) {
      detail::progress(opt.progress, i, n, "rtn", t0);
      fq_all(b);
      continue;
    }
    MatrixRM next;
    if (opt.method == Method::awq) {
      if (!propagate_q) {  // the next block's input is this block's full-precision output
        next = x;
        block_forward(m.cfg, b, next, L);
      }
      detail::progress(opt.progress, i, n, "awq search", t0);
      const AwqBlockResult* load = opt.awq_load && std::size_t(i) < opt.awq_load->size() ? &(*opt.awq_load)[std::size_t(i)] : nullptr;
      rep.awq.push_back(awq_block(m.cfg, b, x, L, q, opt.awq, opt.awq_clip, load, opt.load_scales, opt.load_clips));
      if (opt.keep_transformed) rep.transformed.push_back(b);
      fq_all(b);
    } else {  // GPTQ, true-sequential
      const std::vector<std::vector<Role>> subsets = {{Role::q, Role::k, Role::v}, {Role::o}, {Role::gate, Role::up}, {Role::down}};
      for (const auto& sub : subsets) {
        detail::progress(opt.progress, i, n, to_string(sub[0]), t0);
        std::map<Role, HessianAccumulator> acc;
        BlockHooks hooks;
        hooks.linear_input = [&](Role r, const MatrixRM& in) {
          for (Role s : sub)
            if (s == r) acc[r].add_batch(in, std::int64_t(calib.size()));
        };
        MatrixRM tmp = x;
        block_forward(m.cfg, b, tmp, L, &hooks);
        for (Role r : sub) {
          MatrixRM& W = b.linear(r).W;
          GptqResult g = gptq_quantize(q, W, acc[r].hessian(), opt.gptq, to_string(r));
          W = g.Q;
          rep.damp_retries += g.damp_retries;
          g.Q.resize(0, 0);
          rep.gptq_info.push_back(std::move(g));
        }
      }
    }
    if (propagate_q) {
      next = x;
      block_forward(m.cfg, b, next, L);
    }
    x.swap(next);
  }
  if (opt.progress && ::isatty(2)) std::fprintf(stderr, "\n");
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace lowbit

namespace lowbit {

// AWQ artifacts on disk (safetensors): scales as "blocks.<i>.<prev_op>.scale" [in], clips as
// "blocks.<i>.<linear>.max_val" (and ".min_val" for an asymmetric clip) [rows, ngroups].  They are what the
// two-step workflows (AWQ, then OmniQuant initialised from it) pass between runs.
inline void save_awq_scales(const std::string& path, const std::vector<AwqBlockResult>& r) {
  std::vector<TensorToWrite> ts;
  for (std::size_t i = 0; i < r.size(); ++i)
    for (const auto& [prev, s] : r[i].scales)
      ts.push_back(tensor_f32("blocks." + std::to_string(i) + "." + prev + ".scale", {s.size()}, s.data()));
  write_safetensors(path, ts, {{"format", "lowbit-awq-scales"}});
}

inline void save_awq_clips(const std::string& path, const std::vector<AwqBlockResult>& r) {
  std::vector<TensorToWrite> ts;
  for (std::size_t i = 0; i < r.size(); ++i) {
    for (const auto& [role, m] : r[i].clip_max)
      ts.push_back(tensor_f32("blocks." + std::to_string(i) + "." + to_string(role) + ".max_val", {m.rows(), m.cols()}, m.data()));
    for (const auto& [role, m] : r[i].clip_min)
      ts.push_back(tensor_f32("blocks." + std::to_string(i) + "." + to_string(role) + ".min_val", {m.rows(), m.cols()}, m.data()));
  }
  write_safetensors(path, ts, {{"format", "lowbit-awq-clips"}});
}

// Reads scale and/or clip files (either path may be empty) into per-block results for PipelineOptions::awq_load.
inline std::vector<AwqBlockResult> load_awq(const std::string& scale_path, const std::string& clip_path, int n_blocks) {
  std::vector<AwqBlockResult> r(static_cast<std::size_t>(n_blocks));
  auto block_of = [&](const std::string& path, const std::string& name, std::string& rest) {
    if (name.rfind("blocks.", 0) != 0) fail(path, ": unexpected tensor '", name, "'");
    const std::size_t dot = name.find('.', 7);
    const int i = std::stoi(name.substr(7, dot - 7));
    if (i < 0 || i >= n_blocks) fail(path, ": tensor '", name, "' names block ", i, " but the model has ", n_blocks);
    rest = name.substr(dot + 1);
    return std::size_t(i);
  };
  if (!scale_path.empty()) {
    SafetensorsFile f(scale_path);
    for (const auto& [name, t] : f.tensors()) {
      std::string rest;
      const std::size_t i = block_of(scale_path, name, rest);
      const std::string prev = rest.substr(0, rest.rfind(".scale"));
      const std::vector<float> v = f.floats(name);
      r[i].scales[prev] = Eigen::Map<const Eigen::VectorXf>(v.data(), Eigen::Index(v.size()));
    }
  }
  if (!clip_path.empty()) {
    SafetensorsFile f(clip_path);
    for (const auto& [name, t] : f.tensors()) {
      std::string rest;
      const std::size_t i = block_of(clip_path, name, rest);
      const std::string lin = rest.substr(0, rest.find('.'));
      Role role = Role::q;
      bool found = false;
      for (Role rr : all_roles)
        if (lin == to_string(rr)) role = rr, found = true;
      if (!found) fail(clip_path, ": tensor '", name, "' names no linear");
      (rest.find(".min_val") != std::string::npos ? r[i].clip_min : r[i].clip_max)[role] = f.matrix(name);
    }
  }
  return r;
}

}  // namespace lowbit
