// lowbit/algorithms/methods/awq.hpp -- AWQ over a block (llm-awq auto_scale.py / auto_clip.py; ALGORITHMS.md
// 2.2-2.5), built on the layer-level searches of algorithms/awq.hpp:
//   1. capture the input of every input group (model/block.hpp) with the original weights;
//   2. for each group that applies (v -> o is skipped under GQA, as the reference does): search the scales on the
//      original block with the group's module -- attention for attn_norm -> q,k,v, the MLP for ffn_norm ->
//      gate,up, the linear itself for a linear -> linear group -- fold them into the previous op, and divide the
//      captured input by them (the clip search sees the scaled inputs);
//   3. clip search for v, o, gate, up, down (q and k are skipped: "qk bmm, hard to clip precisely").
// AWQ is a transform: it leaves float weights; the chain's quantizing step (RTN by default, or GPTQ in
// "awq+gptq") quantizes them.  It reads the full-precision chain (the next block's input is the original
// block's output), its reference's behaviour.
//
// Artifacts on disk (safetensors): scales as "blocks.<i>.<group key>.scale" [in], clips as
// "blocks.<i>.<linear>.max_val" (and ".min_val" for an asymmetric clip) [rows, ngroups] -- what the two-step
// workflows (AWQ, then OmniQuant initialised from it) pass between runs.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "../../io/safetensors.hpp"
#include "../../model/llama.hpp"
#include "../../transforms/smooth.hpp"
#include "../method.hpp"

namespace lowbit {

// Precomputed AWQ results to apply instead of searching (loaded scale / clip files): for each block, the scales
// of every group that applies and / or the clips of every clipped linear -- a missing entry is an error, never a
// silent search.
struct AwqPreset {
  const AwqBlockResult* scales = nullptr;
  const AwqBlockResult* clips = nullptr;
};

struct AwqLoaded {
  const std::vector<AwqBlockResult>* blocks = nullptr;
  bool scales = false, clips = false;
  AwqPreset at(int i) const {
    if (!blocks || (!scales && !clips)) return {};
    if (i < 0 || std::size_t(i) >= blocks->size()) fail("AWQ: the loaded scales/clips have no block ", i);
    const AwqBlockResult* r = &(*blocks)[std::size_t(i)];
    return {scales ? r : nullptr, clips ? r : nullptr};
  }
};

// The smallest loaded scale accepted (and 1 / it the largest).
constexpr float kAwqMinScale = 1e-8f;

inline const std::vector<Role>& awq_clip_roles() {
  static const std::vector<Role> r = {Role::v, Role::o, Role::gate, Role::up, Role::down};
  return r;
}

// The loaded scale of input group `key` (n entries), checked: finite, in [kAwqMinScale, 1 / kAwqMinScale].
inline const Eigen::VectorXf& loaded_awq_scale(const AwqBlockResult& loaded, const std::string& key, Eigen::Index n) {
  const auto it = loaded.scales.find(key);
  if (it == loaded.scales.end()) fail("AWQ: the loaded scales have no entry for group ", key);
  const Eigen::VectorXf& s = it->second;
  if (s.size() != n) fail("AWQ: loaded scales for ", key, " have ", s.size(), " entries, expected ", n);
  if (!s.allFinite() || (s.array() <= 0.0f).any()) fail("AWQ: loaded scales for ", key, " are not all finite and positive");
  // AWQ's search gives scales of about 1e-4..1e4 (x_mean^r clamped at 1e-4, normalised); far outside, folding
  // zeroes the channel's weights below any quantization step or overflows the op in front
  if ((s.array() < kAwqMinScale).any() || (s.array() > 1.0f / kAwqMinScale).any())
    fail("AWQ: loaded scales for ", key, " have entries outside [", kAwqMinScale, ", ", 1.0f / kAwqMinScale,
         "] (min ", s.minCoeff(), ", max ", s.maxCoeff(), "): not scales AWQ's search gives");
  return s;
}

// The loaded clip of linear r: max_val, and min_val when the file has one (else left empty), [rows, ngroups],
// checked: finite, min_val <= max_val (a symmetric clip: max_val >= 0).
inline void loaded_awq_clip(const AwqBlockResult& loaded, Role r, Eigen::Index rows, Eigen::Index ngroups, MatrixRM& mx,
                            MatrixRM& mn) {
  const auto it = loaded.clip_max.find(r);
  if (it == loaded.clip_max.end()) fail("AWQ: the loaded clips have no entry for ", to_string(r));
  mx = it->second;
  mn = loaded.clip_min.count(r) ? loaded.clip_min.at(r) : MatrixRM();
  if (mx.rows() != rows || mx.cols() != ngroups || (mn.size() && (mn.rows() != mx.rows() || mn.cols() != mx.cols())))
    fail("AWQ: loaded clip for ", to_string(r), " is [", mx.rows(), ", ", mx.cols(), "], expected [", rows, ", ", ngroups, "]");
  if (!mx.allFinite() || (mn.size() && !mn.allFinite())) fail("AWQ: loaded clip for ", to_string(r), " is not finite");
  if (mn.size() ? (mn.array() > mx.array()).any() : (mx.array() < 0.0f).any())
    fail("AWQ: loaded clip for ", to_string(r), mn.size() ? " has min_val > max_val" : " has a negative max_val");
}

// AWQ on one block: search (or take from `preset`) and fold the scales, then search (or take) and apply the clips.
// X is the block's input [n*L, dim].  Weights are left in float (not yet quantized).  `output`, when given,
// receives the block's output on X with the weights it had on entry (the capture forward computes it anyway).
// `act`: the run's activation quantizer (weight-activation runs): each scale candidate's module input is
// quantize(x / s) * s, i.e. the scaled linears read quantized activations (LLMC awq.py scaling_input + its act
// quantizer); a single-linear group is then scored by its module too (the Gram form has no quantized input).
template <class Q>
AwqBlockResult awq_block(const LlamaConfig& cfg, Block& b, const MatrixRM& X, int L, const Q& q, const AwqOptions& o,
                         AwqPreset preset = {}, MatrixRM* output = nullptr, const ActQuant& act = {}) {
  const std::vector<InputGroup>& groups = input_groups();
  std::vector<MatrixRM> in(groups.size());  // the input of every group, with the original weights
  {
    MatrixRM tmp = X;
    block_forward_staged(cfg, b, tmp, L, nullptr, [&](int s, const MatrixRM& x) { in[std::size_t(s)] = x; });
    if (output) *output = std::move(tmp);
  }
  AwqBlockResult res;
  const Block orig = b;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const InputGroup& g = groups[gi];
    if (!group_applies(cfg, g)) continue;
    const MatrixRM& x = in[gi];
    Eigen::VectorXf s;
    if (preset.scales) {
      s = loaded_awq_scale(*preset.scales, g.key, x.cols());
    } else {
      const Eigen::VectorXf xm = awq_act_mean(x);
      std::vector<const MatrixRM*> layers;
      for (Role r : g.linears) layers.push_back(&orig.linear(r).W);
      AwqScaleResult sr;
      const bool single = !g.prev.is_norm();  // one linear: the Gram loss is the module loss exactly
      if (!act.on() && (o.scoring == AwqScoring::gram || (o.scoring == AwqScoring::fast && single))) {
        sr = awq_search_scale_gram(q, layers, xm, awq_gram(x), x.rows(), o);
      } else {
        const bool sampled = o.scoring == AwqScoring::fast;
        const MatrixRM xs = sampled ? sample_sequences(x, L, o.scale_tokens) : MatrixRM();
        const MatrixRM& xl = sampled ? xs : x;
        // the module whose output the loss compares: what follows the previous op up to the block's next sum
        Block c = orig;
        const ActQuant aq = search_act_quant(act);
        MatrixRM xq;
        auto module = [&](const std::vector<MatrixRM>& W, const Eigen::VectorXf* cs) -> MatrixRM {
          for (std::size_t k = 0; k < g.linears.size(); ++k) c.linear(g.linears[k]).W = W[k];
          const MatrixRM* mx = &xl;
          if (act.on() && cs) {  // the scaled linears read quantize(x / s); W here is Q(W s) / s
            xq = xl.array().rowwise() / cs->transpose().array();
            fake_quant_activation(aq, xq, g.key);
            xq.array().rowwise() *= cs->transpose().array();
            mx = &xq;
          }
          if (g.prev.is_norm()) return g.prev.norm == NormRole::attn ? attention_forward(cfg, c, *mx, L) : mlp_forward(c, *mx);
          MatrixRM y;
          linear(*mx, c.linear(g.linears[0]), y);
          return y;
        };
        std::vector<MatrixRM> fp;
        for (Role r : g.linears) fp.push_back(orig.linear(r).W);
        sr = awq_search_scale(q, layers, xm, [&](const std::vector<MatrixRM>& W, const Eigen::VectorXf& cs) { return module(W, &cs); },
                              module(fp, nullptr), o);
      }
      s = sr.scales;
      res.x_mean[g.key] = xm;
      res.searches[g.key] = std::move(sr);
    }
    res.scales[g.key] = s;
    fold_scales(b, g, s);
    for (Eigen::Index t = 0; t < in[gi].rows(); ++t) in[gi].row(t).array() /= s.transpose().array();
  }
  if (o.clip) {
    for (Role r : awq_clip_roles()) {
      const MatrixRM& xs = in[std::size_t(describe(r).subset)];
      MatrixRM& W = b.linear(r).W;
      const GroupLayout Lg = group_layout(q, W.rows(), W.cols(), to_string(r));
      MatrixRM mx, mn;
      if (preset.clips) {
        loaded_awq_clip(*preset.clips, r, W.rows(), Lg.ngroups, mx, mn);
      } else {
        mx = awq_search_clip(q, W, sample_tokens(xs, o.clip_tokens), o, o.symmetric_clip ? nullptr : &mn);
      }
      apply_clip(W, mx, Lg.group, mn.size() ? &mn : nullptr);
      res.clip_max[r] = mx;
      if (mn.size()) res.clip_min[r] = mn;
    }
  }
  return res;
}

inline const MethodInfo& awq_info() {
  static const MethodInfo i{"awq", /*quantizes=*/false, /*calibrated=*/true, Chain::full_precision, Grid::minmax,
                            /*outputs_original=*/true};
  return i;
}

template <class Q>
class AwqMethod final : public BlockMethod<Q> {
 public:
  AwqMethod(const Q& q, const AwqOptions& o, AwqLoaded loaded = {}) : q_(q), o_(o), loaded_(loaded) {}
  const MethodInfo& info() const override { return awq_info(); }
  void run(BlockJob& job, Chain chain) override {
    job.step("awq search");
    // on the full-precision chain with the block untouched, the capture forward is that chain's output
    const bool fp_output = chain == Chain::full_precision && !job.transformed;
    MatrixRM out;
    job.artifacts.awq = awq_block(job.cfg, job.block, job.input(chain), job.L, q_, o_, loaded_.at(job.index),
                                  fp_output ? &out : nullptr, job.act.input);
    if (fp_output) job.outputs[std::size_t(Chain::full_precision)] = std::move(out);
    job.transformed = true;
  }

 private:
  Q q_;
  AwqOptions o_;
  AwqLoaded loaded_;
};

inline void save_awq_scales(const std::string& path, const std::vector<AwqBlockResult>& r) {
  std::vector<TensorToWrite> ts;
  for (std::size_t i = 0; i < r.size(); ++i)
    for (const auto& [key, s] : r[i].scales)
      ts.push_back(tensor_f32("blocks." + std::to_string(i) + "." + key + ".scale", {s.size()}, s.data()));
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

// Reads scale and/or clip files (either path may be empty) into per-block results for AwqLoaded.  Every tensor
// must be "blocks.<i>.<group key>.scale" (a key of input_groups()) or "blocks.<i>.<linear>.max_val" /
// ".min_val" (a linear AWQ clips), with i a block of the model; anything else is an error naming the tensor.
// Shapes and values are checked against the model when AWQ applies them (awq_block).
inline std::vector<AwqBlockResult> load_awq(const std::string& scale_path, const std::string& clip_path, int n_blocks) {
  std::vector<AwqBlockResult> r(static_cast<std::size_t>(n_blocks));
  // "blocks.<i>.<rest>": the block index and the rest of the name
  auto split = [&](const std::string& path, const std::string& name, std::string& rest) {
    const std::size_t dot = name.find('.', 7);
    const std::string digits = name.rfind("blocks.", 0) == 0 && dot != std::string::npos ? name.substr(7, dot - 7) : "";
    if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos)
      fail(path, ": tensor '", name, "' is not named blocks.<block index>.<name>");
    const int i = std::stoi(digits);
    if (i >= n_blocks) fail(path, ": tensor '", name, "' names block ", i, " but the model has ", n_blocks);
    rest = name.substr(dot + 1);
    return std::size_t(i);
  };
  auto strip = [](const std::string& s, const std::string& suffix, std::string& head) {
    if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    head = s.substr(0, s.size() - suffix.size());
    return true;
  };
  if (!scale_path.empty()) {
    SafetensorsFile f(scale_path);
    for (const auto& [name, t] : f.tensors()) {
      std::string rest, key;
      const std::size_t i = split(scale_path, name, rest);
      bool known = false;
      if (strip(rest, ".scale", key))
        for (const InputGroup& g : input_groups()) known |= key == g.key;
      if (!known) {
        std::string keys;
        for (const InputGroup& g : input_groups()) keys += (keys.empty() ? "" : ", ") + std::string(g.key);
        fail(scale_path, ": tensor '", name, "' is not a scale of an input group (blocks.<i>.<group>.scale with group one of ",
             keys, ")");
      }
      if (t.shape.size() != 1) fail(scale_path, ": tensor '", name, "' must be 1-D (one scale per input channel)");
      const std::vector<float> v = f.floats(name);
      r[i].scales[key] = Eigen::Map<const Eigen::VectorXf>(v.data(), Eigen::Index(v.size()));
    }
  }
  if (!clip_path.empty()) {
    SafetensorsFile f(clip_path);
    for (const auto& [name, t] : f.tensors()) {
      std::string rest, lin;
      const std::size_t i = split(clip_path, name, rest);
      const bool is_min = strip(rest, ".min_val", lin);
      if (!is_min && !strip(rest, ".max_val", lin)) lin.clear();
      const LinearDesc* d = nullptr;
      for (Role role : awq_clip_roles())
        if (lin == describe(role).name) d = &describe(role);
      if (!d) fail(clip_path, ": tensor '", name, "' is not a clip of a linear AWQ clips (blocks.<i>.<linear>.max_val or .min_val)");
      if (t.shape.size() != 2) fail(clip_path, ": tensor '", name, "' must be 2-D [rows, groups]");
      (is_min ? r[i].clip_min : r[i].clip_max)[d->role] = f.matrix(name);
    }
  }
  return r;
}

}  // namespace lowbit
