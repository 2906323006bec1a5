// lowbit/algorithms/omniquant.hpp -- OmniQuant's block-wise training (OpenGVLab/OmniQuant quantize/omniquant.py;
// ALGORITHMS.md 5) on lowbit's tape (autodiff/):
//
//   given the block's input on the quantized chain X_q (n samples of L tokens) and the targets Y = block_fp(X_fp)
//   (and Y2 = block_fp(X_q) with aug_loss), train the parameters theta by AdamW, one step per batch of samples in
//   order, for `epochs` passes:
//       loss = MSE(block_theta(X_q[j]), Y[j]) (+ MSE(block_theta(X_q[j]), Y2[j]))
//   block_theta: the block with
//     LWC  every linear's weight fake-quantized with clip ratios sigmoid(gamma), sigmoid(beta) per (row, group)
//          on the range (autodiff/quant_ops.hpp); gamma = beta = 4 initially (sigma = 0.982), or logit(r) of given
//          clip ratios r (AWQ's clip search: search_clip_init);
//     LET  per-channel scales, each |s| < 1e-2 pushed to +-1e-2 with a straight-through backward:
//            s_qkv [dim]   attn_norm / s, Wq, Wk, Wv * diag(s)             (OmniQuant qkv_smooth_scale)
//            s_out [dim]   Wv rows / s, Wo * diag(s)  (v -> o without GQA) (out_smooth_scale)
//            s_fc1 [dim]   ffn_norm / s, Wgate, Wup * diag(s)              (fc1_smooth_scale)
//            s_qk          Wq rows / s, Wk rows * s  (the Q/K scale)       (qkt_smooth_scale)
//          initialised as SmoothQuant: clamp(max|x|^alpha / max_o |W_key|^(1-alpha), 1e-5) with W_key the group's key
//          linear (q, o, up: OmniQuant's pairs), or from given scales (AWQ's: search_scale_init); s_qk starts at 1.
//          s_qk has one entry per RoPE pair of each K/V head: the two channels RoPE rotates together share it (so
//          scaling before RoPE is exact, which the reference does not enforce), and the query heads reading one K/V
//          head share it (exact under GQA; the reference has one per q channel, LLaMA-7B has no GQA).
//   Finalise: fold the LET into the block (fold_scales -- the same products in the same order as the trained
//   forward), and hand back the clip ratios for the quantizer (quant/quantizer.hpp ClipRatios); the block's
//   output is then a plain model's.
//
// A non-finite loss or gradient stops the block's training at that step with a warning naming block, epoch and
// step; the parameters of the last good step are kept (never a NaN in a model).  Deterministic: samples in order,
// the tape's ops are the same bits for any thread count.
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../autodiff/adamw.hpp"
#include "../autodiff/block.hpp"
#include "../core/error.hpp"
#include "../model/llama.hpp"
#include "../quant/quantizer.hpp"
#include "../transforms/smooth.hpp"

namespace lowbit {

struct OmniQuantOptions {
  int epochs = 20;             // reference scripts: 20 (40 at W2)
  bool lwc = true;
  bool let = false;
  double lr_lwc = 1e-2, lr_let = 5e-3, weight_decay = 0.0;
  bool aug_loss = false;
  int batch = 1;               // samples per step (the reference: 1)
  float alpha = 0.5f;          // LET's SmoothQuant initialisation
  float lwc_init = 4.0f;       // initial logit of both clip factors
  // LLMC's search_clip_init: LWC starts from AWQ's clip search run on the block (v, o, gate, up, down; q and k
  // start at lwc_init, as AWQ never clips them), unless clips are loaded (load_clip)
  bool search_clip_init = false;
  void validate() const {
    if (epochs < 0) fail("OmniQuant: epochs ", epochs, " < 0");
    if (epochs > 0 && !lwc && !let) fail("OmniQuant: training (epochs > 0) needs lwc or let (the reference asserts it too)");
    if (batch < 1) fail("OmniQuant: batch ", batch, " < 1");
    if (!(lr_lwc > 0) || !(lr_let > 0) || !(weight_decay >= 0)) fail("OmniQuant: learning rates must be > 0, weight decay >= 0");
    if (!(alpha >= 0.0f && alpha <= 1.0f)) fail("OmniQuant: alpha ", alpha, " is not in [0, 1]");
    if (!std::isfinite(lwc_init)) fail("OmniQuant: lwc_init is not finite");
  }
};

// Starting values other than the defaults.
struct OmniQuantInit {
  std::array<std::optional<MatrixRM>, 7> clip_up, clip_low;     // by Role: clip ratios in (0, 1] per (row, group)
  std::array<std::optional<Eigen::VectorXf>, 4> let_scales;     // by input group: LET's initial s (AWQ's scales)
};

// AWQ's clip of one linear as LWC's starting ratios (LLMC AutoClipper.get_clip_factor: up = max_val / max and
// low = min_val / min of each (row, group) of W, the weights OmniQuant starts from; a symmetric clip's min_val is
// -max_val).  A side the clip does not bind (ratio >= 1, or a group max <= 0 / min >= 0 that LWC's factor cannot
// move) starts at 1, which lwc_logit keeps just below 1; ratios stay >= 1e-4.
inline void lwc_ratios_from_clip(const MatrixRM& W, const GroupLayout& L, const MatrixRM& max_val, const MatrixRM* min_val,
                                 MatrixRM& up, MatrixRM& low) {
  if (max_val.rows() != L.rows || max_val.cols() != L.ngroups || (min_val && (min_val->rows() != L.rows || min_val->cols() != L.ngroups)))
    fail("OmniQuant: a clip of ", max_val.rows(), "x", max_val.cols(), " for a linear of ", L.rows, " rows and ", L.ngroups, " groups");
  up.resize(L.rows, L.ngroups);
  low.resize(L.rows, L.ngroups);
  const auto ratio = [](float clip, float edge) {
    if (!(edge != 0.0f) || !(clip / edge < 1.0f)) return 1.0f;
    return std::max(clip / edge, 1e-4f);
  };
  for (Eigen::Index r = 0; r < L.rows; ++r)
    for (Eigen::Index g = 0; g < L.ngroups; ++g) {
      const auto seg = W.row(r).segment(g * L.group, L.width(g));
      const float mx = seg.maxCoeff(), mn = seg.minCoeff();
      const float cmax = max_val(r, g), cmin = min_val ? (*min_val)(r, g) : -max_val(r, g);
      up(r, g) = mx > 0.0f ? ratio(cmax, mx) : 1.0f;
      low(r, g) = mn < 0.0f ? ratio(cmin, mn) : 1.0f;
    }
}

struct OmniQuantBlockResult {
  std::vector<double> epoch_loss;                // mean loss of each epoch run
  std::array<MatrixRM, 7> clip_up, clip_low;     // by Role: the learned ratios sigmoid(logit) (empty: no LWC)
  std::array<Eigen::VectorXf, 4> let_scales;     // by input group (empty: none)
  Eigen::VectorXf let_qk;                        // [kv_dim / 2] the Q/K scale per RoPE pair and K/V head
  std::string stopped;                           // why training stopped early (non-finite loss), else empty
  double seconds = 0;
  long steps = 0;
};

namespace detail {
// Index maps of the Q/K scale: for each q channel and each k channel, its entry in the [kv_dim / 2] parameter
// (pair p of kv head h: the pair's lower channel c < partner, numbered in order within the head).
inline void qk_scale_maps(const LlamaConfig& cfg, std::vector<int>& q_idx, std::vector<int>& k_idx) {
  const int hd = cfg.head_dim(), group = cfg.n_heads / cfg.n_kv_heads;
  std::vector<int> pair_of(std::size_t(hd), -1);
  int n = 0;
  for (int c = 0; c < hd; ++c)
    if (pair_of[std::size_t(c)] < 0) {
      pair_of[std::size_t(c)] = pair_of[std::size_t(rope_partner(cfg.rope, hd, c))] = n++;
    }
  k_idx.assign(std::size_t(cfg.kv_dim()), 0);
  q_idx.assign(std::size_t(cfg.dim), 0);
  for (int h = 0; h < cfg.n_kv_heads; ++h)
    for (int c = 0; c < hd; ++c) k_idx[std::size_t(h * hd + c)] = h * (hd / 2) + pair_of[std::size_t(c)];
  for (int h = 0; h < cfg.n_heads; ++h)
    for (int c = 0; c < hd; ++c) q_idx[std::size_t(h * hd + c)] = k_idx[std::size_t((h / group) * hd + c)];
}

inline const char* let_param_name(std::size_t g) {
  static const char* n[4] = {"qkv_smooth_scale", "out_smooth_scale", "fc1_smooth_scale", "down_smooth_scale"};
  return n[g];
}
// OmniQuant's key linear of each LET group (its max |W| initialises the scale).
inline Role let_key(std::size_t g) {
  static const Role r[4] = {Role::q, Role::o, Role::up, Role::down};
  return r[g];
}
}  // namespace detail

// Which input groups LET scales: the norm groups, and v -> o when its scale can be folded (no GQA); down has
// none in the reference.
inline bool let_group(const LlamaConfig& cfg, std::size_t g) {
  return g != 3 && group_applies(cfg, input_groups()[g]);
}

// One block's OmniQuant parameters and optimiser: step() trains on a batch, finish() folds the LET into the
// block and hands back the clip ratios.  `act_absmax`: each input group's max |x| on the full-precision chain
// (LET's SmoothQuant initialisation; read only with let and no given scales).  q is the weight quantizer (its
// bits, symmetry, grid, group size).  The block must outlive the trainer.
template <class Q>
class OmniQuantTrainer {
 public:
  OmniQuantTrainer(const Q& q, const LlamaConfig& cfg, Block& blk, const BlockActQuant& act, const OmniQuantOptions& o,
                   const OmniQuantInit& init, const std::vector<Eigen::VectorXf>& act_absmax, std::string where)
      : q_(q), cfg_(cfg), blk_(blk), act_(act), o_(o), where_(std::move(where)), tape_(std::size_t(1) << 22) {
    using namespace ad;
    o.validate();
    check_tape_block(blk, where_);
    if (q.grid != Grid::minmax && q.grid != Grid::omniquant)
      fail(where_, ": OmniQuant trains on the minmax or omniquant grid, not ", to_string(q.grid));
    // LWC: logits per (row, group) of every linear
    for (Role r : all_roles) {
      const std::size_t i = std::size_t(r);
      const MatrixRM& W = blk.linear(r).W;
      lay_[i] = group_layout(q, W.rows(), W.cols(), where_ + " " + to_string(r));
      if (lay_[i].per_tensor) fail(where_, ": OmniQuant's LWC is per channel or per group, not per tensor");
      spec_[i] = FakeQuantSpec{Q::bits, Q::symmetric, q.grid, lay_[i].group};
      up_[i] = low_[i] = -1;
      if (!o.lwc) continue;
      const auto logits = [&](const std::optional<MatrixRM>& ratio, const char* which) {
        Mat<float> m = Mat<float>::Constant(lay_[i].rows, lay_[i].ngroups, o.lwc_init);
        if (!ratio) return m;
        if (ratio->rows() != m.rows() || ratio->cols() != m.cols())
          fail(where_, " ", to_string(r), ": initial ", which, " clip ratios are ", ratio->rows(), "x", ratio->cols(),
               ", expected ", m.rows(), "x", m.cols());
        for (Eigen::Index k = 0; k < m.size(); ++k) m.data()[k] = lwc_logit(ratio->data()[k]);
        return m;
      };
      up_[i] = opt_.add(std::string(to_string(r)) + ".upbound_factor", logits(init.clip_up[i], "upper"), o.lr_lwc, o.weight_decay);
      low_[i] = opt_.add(std::string(to_string(r)) + ".lowbound_factor", logits(init.clip_low[i], "lower"), o.lr_lwc, o.weight_decay);
    }
    if (!o.let) return;
    // LET: scales per input group and the Q/K scale
    for (std::size_t g = 0; g < 4; ++g) {
      if (!let_group(cfg, g)) continue;
      Eigen::VectorXf s;
      if (init.let_scales[g]) {
        s = *init.let_scales[g];
        if (s.size() != cfg.dim || !s.allFinite() || (s.array() <= 0.0f).any())
          fail(where_, ": the initial LET scale of ", input_groups()[g].key, " must be ", cfg.dim, " finite positive values");
      } else {
        if (act_absmax.size() != 4 || act_absmax[g].size() != cfg.dim) fail(where_, ": LET needs the activation maxima of every group");
        s = smoothquant_scales(act_absmax[g], weight_absmax({&blk.linear(lowbit::detail::let_key(g)).W}), o.alpha);
      }
      let_[g] = opt_.add(lowbit::detail::let_param_name(g), Mat<float>(s.transpose()), o.lr_let, o.weight_decay);
    }
    lowbit::detail::qk_scale_maps(cfg, q_idx_, k_idx_);
    let_qk_ = opt_.add("qkt_smooth_scale", Mat<float>::Ones(1, cfg.kv_dim() / 2), o.lr_let, o.weight_decay);
  }

  // One AdamW step on `rows` tokens (whole sequences of L) at x with the targets y (and y2: aug_loss).  Returns
  // the loss; when it or a gradient is not finite the parameters are left as they were.
  float step(const float* x, const float* y, const float* y2, Eigen::Index rows, int L) {
    const auto m = tape_.mark();
    const ad::Var<float> loss = forward_loss(x, y, y2, rows, L);
    float lv = loss.scalar();
    opt_.zero_grad();
    if (std::isfinite(lv)) tape_.backward(loss);
    if (std::isfinite(lv) && !opt_.grads_finite()) lv = std::numeric_limits<float>::infinity();
    if (std::isfinite(lv)) opt_.step();
    tape_.rewind(m);
    return lv;
  }

  // The loss of the current parameters on a batch, recording nothing: the step's forward alone (a held-out loss;
  // the plain forward of the quantized block that a step differentiates).
  float loss(const float* x, const float* y, const float* y2, Eigen::Index rows, int L) {
    ad::NoGrad<float> no_grad(tape_);
    const auto m = tape_.mark();
    const float lv = forward_loss(x, y, y2, rows, L).scalar();
    tape_.rewind(m);
    return lv;
  }

  // Folds the LET into the block (the products of the trained forward, in its order) and fills the result's clip
  // ratios and scales.
  void finish(OmniQuantBlockResult& res) {
    Block& blk = blk_;
    if (o_.let) {
      const auto trunc = [](Eigen::VectorXf s) {  // the forward's truncate_ste
        for (Eigen::Index k = 0; k < s.size(); ++k) s[k] = ad::truncate_number(s[k], kLetFloor);
        return s;
      };
      const auto vec = [&](int p) { return Eigen::VectorXf(opt_[p].value.row(0).transpose()); };
      Eigen::VectorXf sqk = trunc(vec(let_qk_)), sq(cfg_.dim), sk(cfg_.kv_dim());
      for (int c = 0; c < cfg_.dim; ++c) sq[c] = sqk[q_idx_[std::size_t(c)]];
      for (int c = 0; c < cfg_.kv_dim(); ++c) sk[c] = sqk[k_idx_[std::size_t(c)]];
      for (std::size_t g = 0; g < 4; ++g)
        if (let_[g] >= 0) res.let_scales[g] = trunc(vec(let_[g]));
      fold_scales(blk, input_groups()[0], res.let_scales[0]);
      for (Eigen::Index r = 0; r < blk.q.W.rows(); ++r) blk.q.W.row(r) /= sq[r];
      for (Eigen::Index r = 0; r < blk.k.W.rows(); ++r) blk.k.W.row(r) *= sk[r];
      if (blk.q.b.size()) blk.q.b.array() /= sq.array();
      if (blk.k.b.size()) blk.k.b.array() *= sk.array();
      if (let_[1] >= 0) fold_scales(blk, input_groups()[1], res.let_scales[1]);
      fold_scales(blk, input_groups()[2], res.let_scales[2]);
      res.let_qk = sqk;
    }
    if (o_.lwc)
      for (Role r : all_roles) {
        const std::size_t i = std::size_t(r);
        res.clip_up[i] = opt_[up_[i]].value.unaryExpr([](float v) { return ad::lwc_ratio(v); });
        res.clip_low[i] = opt_[low_[i]].value.unaryExpr([](float v) { return ad::lwc_ratio(v); });
      }
  }

 private:
  // MSE(block_theta(x), y) (+ MSE(block_theta(x), y2)) on the tape.
  ad::Var<float> forward_loss(const float* x, const float* y, const float* y2, Eigen::Index rows, int L) {
    using namespace ad;
    const Var<float> out = block_forward(tape_, cfg_, weights(), act_, tape_.view(x, rows, cfg_.dim), L);
    Var<float> loss = mse(tape_, out, tape_.view(y, rows, cfg_.dim));
    if (y2) loss = add(tape_, loss, mse(tape_, out, tape_.view(y2, rows, cfg_.dim)));
    return loss;
  }

  // The block's weights as functions of the parameters.
  ad::BlockVars<float> weights() {
    using namespace ad;
    Tape<float>& t = tape_;
    BlockVars<float> v = block_views(t, blk_);
    // LET's scales on each linear's weight (fused into its fake quantization: no scaled copy on the tape)
    std::array<WeightScales<float>, 7> ws;
    if (o_.let) {
      std::array<Var<float>, 4> s;
      for (std::size_t g = 0; g < 4; ++g)
        if (let_[g] >= 0) s[g] = truncate_ste(t, opt_.var(t, let_[g]), kLetFloor);
      const Var<float> sqk = truncate_ste(t, opt_.var(t, let_qk_), kLetFloor);
      const Var<float> sq = reshape(t, gather(t, sqk, q_idx_), cfg_.dim, 1);
      const Var<float> sk = reshape(t, gather(t, sqk, k_idx_), cfg_.kv_dim(), 1);
      const auto w = [&](Role r) -> WeightScales<float>& { return ws[std::size_t(r)]; };
      // fold_scales' order: group 0, the Q/K scale, v -> o, group 2
      v.attn_norm = div(t, v.attn_norm, s[0]);
      for (Role r : {Role::q, Role::k, Role::v}) w(r).col = s[0];
      w(Role::q).row = sq, w(Role::q).op = RowScale::div;
      w(Role::k).row = sk, w(Role::k).op = RowScale::mul;
      if (v.b[0].v) v.b[0] = div(t, v.b[0], reshape(t, sq, 1, cfg_.dim));  // Qwen2's q/k/v biases follow their rows
      if (v.b[1].v) v.b[1] = mul(t, v.b[1], reshape(t, sk, 1, cfg_.kv_dim()));
      if (s[1].v) {
        w(Role::v).row = reshape(t, s[1], cfg_.dim, 1), w(Role::v).op = RowScale::div;
        if (v.b[2].v) v.b[2] = div(t, v.b[2], s[1]);
        w(Role::o).col = s[1];
      }
      v.ffn_norm = div(t, v.ffn_norm, s[2]);
      for (Role r : {Role::gate, Role::up}) w(r).col = s[2];
    }
    for (Role r : all_roles) {
      const std::size_t i = std::size_t(r);
      v.W[i] = o_.lwc ? scaled_fake_quant(t, v.W[i], ws[i], spec_[i], opt_.var(t, up_[i]), opt_.var(t, low_[i]))
                      : scaled_fake_quant(t, v.W[i], ws[i], spec_[i]);
    }
    return v;
  }

  static constexpr float kLetFloor = 1e-2f;  // LET scales' |s| floor (OmniQuant's truncate_number)
  Q q_;
  LlamaConfig cfg_;
  Block& blk_;
  BlockActQuant act_;
  OmniQuantOptions o_;
  std::string where_;
  ad::AdamW<float> opt_;
  ad::Tape<float> tape_;
  std::array<int, 7> up_{}, low_{};
  std::array<GroupLayout, 7> lay_;
  std::array<ad::FakeQuantSpec, 7> spec_;
  std::array<int, 4> let_{-1, -1, -1, -1};
  int let_qk_ = -1;
  std::vector<int> q_idx_, k_idx_;
};

// Trains one block: its LET folded into `blk` at the end, the learned clip ratios returned.  `x_q` [n L, dim]:
// the input on the quantized chain; `target` (and `target2`: aug_loss) the full-precision block's outputs.
template <class Q>
OmniQuantBlockResult omniquant_block(const Q& q, const LlamaConfig& cfg, Block& blk, const MatrixRM& x_q,
                                     const MatrixRM& target, const MatrixRM* target2, int L, const BlockActQuant& act,
                                     const OmniQuantOptions& o, const OmniQuantInit& init,
                                     const std::vector<Eigen::VectorXf>& act_absmax, const std::string& where,
                                     const std::function<void(int epoch, double loss)>& progress = {}) {
  if (x_q.rows() != target.rows() || x_q.cols() != cfg.dim || target.cols() != cfg.dim || L <= 0 || x_q.rows() % L ||
      (target2 && (target2->rows() != x_q.rows() || target2->cols() != cfg.dim)))
    fail(where, ": OmniQuant inputs are ", x_q.rows(), "x", x_q.cols(), " and ", target.rows(), "x", target.cols());
  const auto t0 = std::chrono::steady_clock::now();
  OmniQuantTrainer<Q> tr(q, cfg, blk, act, o, init, act_absmax, where);
  OmniQuantBlockResult res;
  const int n = int(x_q.rows() / L), B = std::min(o.batch, n), steps_per_epoch = (n + B - 1) / B;
  for (int e = 0; e < o.epochs && res.stopped.empty(); ++e) {
    double sum = 0;
    int count = 0;
    for (int j = 0; j < steps_per_epoch; ++j) {
      const Eigen::Index r0 = Eigen::Index(j) * B * L, rows = std::min<Eigen::Index>(Eigen::Index(B) * L, x_q.rows() - r0);
      const float lv = tr.step(x_q.data() + r0 * cfg.dim, target.data() + r0 * cfg.dim,
                               target2 ? target2->data() + r0 * cfg.dim : nullptr, rows, L);
      if (!std::isfinite(lv)) {
        res.stopped = where + " omniquant: epoch " + std::to_string(e + 1) + " step " + std::to_string(j + 1) +
                      ": the loss or its gradient is not finite (loss " + std::to_string(lv) +
                      "); training stopped, the parameters of the last finite step are kept";
        break;
      }
      sum += lv, ++count, ++res.steps;
    }
    if (count) res.epoch_loss.push_back(sum / count);
    if (progress && count) progress(e, sum / count);
  }
  if (!res.stopped.empty()) warn(res.stopped);
  tr.finish(res);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace lowbit
