// Fuzz target: AWQ scale and clip files (safetensors, blocks.<i>.<group>.scale / blocks.<i>.<linear>.max_val
// and .min_val).  The input is read as both; what loads is applied to a small random block with AWQ's own
// checks (shape, finite, positive, min <= max) -- the path where a min_val of the wrong shape once read past
// its buffer.
#include <lowbit/algorithms/methods/awq.hpp>

#include <random>

#include "fuzz_support.hpp"

namespace {
struct Tiny {
  lowbit::LlamaConfig cfg;
  lowbit::Block block;
  lowbit::MatrixRM X;
  Tiny() {
    cfg.dim = 16, cfg.hidden_dim = 32, cfg.n_layers = 2, cfg.n_heads = 2, cfg.n_kv_heads = 2, cfg.vocab_size = 8;
    cfg.max_seq_len = 8;
    std::mt19937 g(1);
    std::normal_distribution<float> nd(0.0f, 0.1f);
    auto fill = [&](lowbit::MatrixRM& m, int r, int c) {
      m.resize(r, c);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g);
    };
    for (lowbit::Role r : lowbit::all_roles) {
      const auto s = lowbit::linear_shape(cfg, r);
      fill(block.linear(r).W, int(s[0]), int(s[1]));
    }
    block.attn_norm = Eigen::VectorXf::Ones(16), block.ffn_norm = Eigen::VectorXf::Ones(16);
    fill(X, 8, 16);
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Tiny tiny;
  const lowbit_fuzz::MemFile f(data, size);
  const lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerGroup<lowbit::dynamic_group>, lowbit::Asymmetric> q(8, lowbit::Grid::minmax, false);
  for (bool as_scales : {true, false})
    lowbit_fuzz::expect_clean([&] {
      const std::vector<lowbit::AwqBlockResult> r =
          as_scales ? lowbit::load_awq(f.path(), "", tiny.cfg.n_layers) : lowbit::load_awq("", f.path(), tiny.cfg.n_layers);
      for (const lowbit::AwqBlockResult& b : r) {
        lowbit::Block blk = tiny.block;
        lowbit::AwqOptions o;
        o.n_grid = 2, o.clip_grid = 2, o.clip_tokens = 8;
        o.clip = !as_scales;
        lowbit::awq_block(tiny.cfg, blk, tiny.X, 4, q, o, as_scales ? lowbit::AwqPreset{&b, nullptr} : lowbit::AwqPreset{nullptr, &b});
      }
    });
  return 0;
}
