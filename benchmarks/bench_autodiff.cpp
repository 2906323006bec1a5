// OmniQuant's training step on the tape beside the plain forward of the same block, in one binary: a
// TinyLlama-1.1B-shaped block (dim 2048, hidden 5632, 32 heads, 4 kv heads) on one sequence of 512 tokens and a
// stories260K-shaped block (dim 64, hidden 172, 8 heads, 4 kv heads) on one sequence of 256 (OmniQuant's batch 1),
// with Eigen's GEMM at the block's dominant shape as the roofline.
//
//   BM_block_forward       lowbit's plain block forward (model/llama.hpp)
//   BM_tape_forward        the tape's forward of the float block, recording nothing (NoGrad)
//   BM_omniquant_step      one OmniQuant step: LWC-quantized weights (W4 g128; g32 on the small block) -> block
//                          forward -> MSE -> backward -> AdamW; range(0) = 1 adds LET and W4A4 per-token
//                          activations (the W-A setting); the steady state: one step runs before the timed ones
//   BM_step_over_forward   the plain forward, the quantized block's forward without the tape (the trainer's loss())
//                          and one step in turn, each timed on its own: counters forward_ms, forward_q_ms, step_ms,
//                          ratio = step / plain forward (the target's figure) and ratio_q = step / quantized forward
//   BM_step_products       the linears' products alone of the weight-only step, as the tape runs them
//                          (core/gemm.hpp tiled_product): every forward X W^T, every weight gradient d^T X, and the
//                          input gradient d W of o / gate / up / down (q / k / v need none: the block's input is a
//                          constant) -- the step's GEMM floor, 2.88 forwards' worth of FLOPs
//   BM_fake_quant_weight   LWC's fake quantization of one MLP weight (hidden x dim, W4, g128 / g32) on the tape,
//                          forward + backward (d loss / d Wq given), beside BM_memcpy_weight: a memcpy of the same
//                          weight (its memory-traffic roofline; the op reads the weight twice and its adjoint once
//                          and writes the quantized weight)
// The target is step / forward <= 3 (issue 10).
//   build/benchmarks/bench_autodiff --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <lowbit/lowbit.hpp>
#include <chrono>
#include <cstring>
#include <random>

namespace {

lowbit::LlamaConfig shape(int which) {
  lowbit::LlamaConfig c;
  if (which == 0) {
    c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 22, c.n_heads = 32, c.n_kv_heads = 4, c.vocab_size = 32000;
    c.max_seq_len = 2048, c.rope = lowbit::RopeStyle::rotate_half;
  } else {
    c.dim = 64, c.hidden_dim = 172, c.n_layers = 5, c.n_heads = 8, c.n_kv_heads = 4, c.vocab_size = 512;
    c.max_seq_len = 512;
  }
  return c;
}
int tokens_of(int which) { return which == 0 ? 512 : 256; }

lowbit::MatrixRM rnd(long r, long c, std::mt19937& g, float sd) {
  std::normal_distribution<float> nd(0.0f, sd);
  lowbit::MatrixRM m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g);
  return m;
}

lowbit::Block random_block(const lowbit::LlamaConfig& c) {
  std::mt19937 g(3);
  lowbit::Block b;
  b.attn_norm = Eigen::VectorXf::Ones(c.dim), b.ffn_norm = Eigen::VectorXf::Ones(c.dim);
  for (lowbit::Role r : lowbit::all_roles) {
    const auto s = lowbit::linear_shape(c, r);
    b.linear(r).W = rnd(s[0], s[1], g, 0.02f);
  }
  return b;
}

void BM_eigen_gemm(benchmark::State& st) {
  const int which = int(st.range(0));
  const lowbit::LlamaConfig c = shape(which);
  std::mt19937 g(1);
  const int T = tokens_of(which);
  const lowbit::MatrixRM x = rnd(T, c.dim, g, 1.0f), W = rnd(c.hidden_dim, c.dim, g, 0.02f);
  lowbit::MatrixRM y(T, c.hidden_dim);
  for (auto _ : st) {
    y.noalias() = x * W.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * T * c.dim * c.hidden_dim, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_block_forward(benchmark::State& st) {
  const int which = int(st.range(0));
  const lowbit::LlamaConfig c = shape(which);
  const lowbit::Block b = random_block(c);
  std::mt19937 g(2);
  const lowbit::MatrixRM x0 = rnd(tokens_of(which), c.dim, g, 1.0f);
  lowbit::MatrixRM x;
  for (auto _ : st) {
    x = x0;
    lowbit::block_forward(c, b, x, tokens_of(which));
    benchmark::DoNotOptimize(x.data());
  }
  st.counters["tokens/s"] = benchmark::Counter(tokens_of(which), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_tape_forward(benchmark::State& st) {
  const int which = int(st.range(0));
  const lowbit::LlamaConfig c = shape(which);
  const lowbit::Block b = random_block(c);
  std::mt19937 g(2);
  const lowbit::MatrixRM x0 = rnd(tokens_of(which), c.dim, g, 1.0f);
  lowbit::ad::Tape<float> t;
  for (auto _ : st) {
    lowbit::ad::NoGrad<float> ng(t);
    const auto m = t.mark();
    const auto y = lowbit::ad::block_forward(t, c, lowbit::ad::block_views(t, b), lowbit::BlockActQuant{},
                                             t.view(x0.data(), x0.rows(), c.dim), tokens_of(which));
    benchmark::DoNotOptimize(y.v);
    t.rewind(m);
  }
  st.counters["tokens/s"] = benchmark::Counter(tokens_of(which), benchmark::Counter::kIsIterationInvariantRate);
}

// One OmniQuant trainer on a random block of the benchmark's shape, with its fp target, after one step: the first
// step grows the tape's arena and allocates what the products and AdamW keep (Google Benchmark builds a fresh
// trainer for every repetition, and the TinyLlama step runs once per repetition, so without it every figure would be
// a first step); a block trains 128 samples x epochs steps.
struct Training {
  using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerGroup<lowbit::dynamic_group>, lowbit::Asymmetric>;
  lowbit::LlamaConfig c;
  lowbit::Block b;
  int T;
  lowbit::MatrixRM x, y;
  lowbit::OmniQuantTrainer<Q> tr;

  static lowbit::BlockActQuant act_of(bool wa) {
    lowbit::BlockActQuant act;
    if (wa) act.input = lowbit::ActQuant{4, lowbit::ActGranularity::per_token, false, lowbit::Grid::minmax};
    return act;
  }
  static lowbit::OmniQuantOptions options_of(bool wa) {
    lowbit::OmniQuantOptions o;
    o.let = wa;
    return o;
  }
  static lowbit::MatrixRM input_of(int which, const lowbit::LlamaConfig& c) {
    std::mt19937 g(2);
    return rnd(tokens_of(which), c.dim, g, 1.0f);
  }
  static lowbit::MatrixRM target_of(const lowbit::LlamaConfig& c, const lowbit::Block& b, lowbit::MatrixRM y, int T) {
    lowbit::block_forward(c, b, y, T);
    return y;
  }
  Training(int which, bool wa)
      : c(shape(which)), b(random_block(c)), T(tokens_of(which)), x(input_of(which, c)), y(target_of(c, b, x, T)),
        tr(Q(which == 0 ? 128 : 32, lowbit::Grid::omniquant, true), c, b, act_of(wa), options_of(wa), {},
           std::vector<Eigen::VectorXf>(4, Eigen::VectorXf::Ones(c.dim)), "bench") {
    step();
  }
  float step() { return tr.step(x.data(), y.data(), nullptr, T, T); }
  float loss() { return tr.loss(x.data(), y.data(), nullptr, T, T); }
};

void BM_omniquant_step(benchmark::State& st) {
  Training t(int(st.range(0)), st.range(1) != 0);
  for (auto _ : st) benchmark::DoNotOptimize(t.step());
  st.counters["tokens/s"] = benchmark::Counter(t.T, benchmark::Counter::kIsIterationInvariantRate);
}

// The target's ratio measured side by side: every iteration runs the plain block forward (BM_block_forward), the
// quantized block's forward without the tape recording (the trainer's loss(): fake-quantized weights and
// activations, the function a step differentiates) and one step (BM_omniquant_step), each timed on its own, so all
// three see the same machine state.  "ratio" is the steps' total time over the plain forwards', "ratio_q" over the
// quantized forwards'.  On a shared machine whose speed drifts between benchmarks these are the figures to read.
void BM_step_over_forward(benchmark::State& st) {
  Training t(int(st.range(0)), st.range(1) != 0);
  using clock = std::chrono::steady_clock;
  double forward_s = 0, forward_q_s = 0, step_s = 0;
  lowbit::MatrixRM h;
  for (auto _ : st) {
    h = t.x;
    const auto t0 = clock::now();
    lowbit::block_forward(t.c, t.b, h, t.T);
    benchmark::DoNotOptimize(h.data());
    const auto t1 = clock::now();
    benchmark::DoNotOptimize(t.loss());
    const auto t2 = clock::now();
    benchmark::DoNotOptimize(t.step());
    const auto t3 = clock::now();
    forward_s += std::chrono::duration<double>(t1 - t0).count();
    forward_q_s += std::chrono::duration<double>(t2 - t1).count();
    step_s += std::chrono::duration<double>(t3 - t2).count();
  }
  const double n = double(st.iterations());
  st.counters["forward_ms"] = forward_s / n * 1e3;
  st.counters["forward_q_ms"] = forward_q_s / n * 1e3;
  st.counters["step_ms"] = step_s / n * 1e3;
  st.counters["ratio"] = step_s / forward_s;
  st.counters["ratio_q"] = step_s / forward_q_s;
}

void BM_step_products(benchmark::State& st) {
  const int which = int(st.range(0));
  const lowbit::LlamaConfig c = shape(which);
  const lowbit::Block b = random_block(c);
  const int T = tokens_of(which);
  std::mt19937 g(4);
  struct Lin {
    lowbit::MatrixRM x, y, d, gx, gw;
    bool input_grad;
  };
  std::vector<Lin> lins;
  double flop = 0;
  for (lowbit::Role r : lowbit::all_roles) {
    const auto s = lowbit::linear_shape(c, r);
    const bool gx = r != lowbit::Role::q && r != lowbit::Role::k && r != lowbit::Role::v;
    lins.push_back({rnd(T, s[1], g, 1.0f), lowbit::MatrixRM(T, s[0]), rnd(T, s[0], g, 1.0f), lowbit::MatrixRM::Zero(T, s[1]),
                    lowbit::MatrixRM::Zero(s[0], s[1]), gx});
    flop += 2.0 * T * s[0] * s[1] * (gx ? 3 : 2);
  }
  using lowbit::Product;
  for (auto _ : st) {
    for (std::size_t i = 0; i < lins.size(); ++i) {
      Lin& l = lins[i];
      const lowbit::MatrixRM& W = b.linear(lowbit::all_roles[i]).W;
      lowbit::tiled_product(l.y, l.x, W.transpose(), Product::assign);
      lowbit::tiled_product(l.gw, l.d.transpose(), l.x, Product::accumulate);
      if (l.input_grad) lowbit::tiled_product(l.gx, l.d, W, Product::accumulate);
    }
    benchmark::DoNotOptimize(lins[0].y.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(flop, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_fake_quant_weight(benchmark::State& st) {
  const int which = int(st.range(0));
  const lowbit::LlamaConfig c = shape(which);
  const Eigen::Index R = c.hidden_dim, C = c.dim, G = which == 0 ? 128 : 32, ng = (C + G - 1) / G;
  std::mt19937 g(5);
  const lowbit::MatrixRM W = rnd(R, C, g, 0.02f), D = rnd(R, C, g, 1.0f);
  lowbit::ad::Mat<float> up = lowbit::ad::Mat<float>::Constant(R, ng, 4.0f), low = up;
  lowbit::ad::Mat<float> gu = lowbit::ad::Mat<float>::Zero(R, ng), gl = gu;
  lowbit::ad::Tape<float> t(std::size_t(1) << 22);
  const lowbit::ad::FakeQuantSpec q{4, false, lowbit::Grid::omniquant, G};
  for (auto _ : st) {
    const auto m = t.mark();
    const auto y = lowbit::ad::fake_quant(t, t.view(W.data(), R, C), q, t.parameter(up.data(), gu.data(), R, ng),
                                          t.parameter(low.data(), gl.data(), R, ng));
    t.backward(lowbit::ad::dot(t, y, t.view(D.data(), R, C)));
    benchmark::DoNotOptimize(gu.data());
    t.rewind(m);
  }
  st.counters["bytes/s"] = benchmark::Counter(double(R * C) * sizeof(float), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_memcpy_weight(benchmark::State& st) {
  const lowbit::LlamaConfig c = shape(int(st.range(0)));
  std::mt19937 g(5);
  const lowbit::MatrixRM W = rnd(c.hidden_dim, c.dim, g, 0.02f);
  lowbit::MatrixRM out(c.hidden_dim, c.dim);
  for (auto _ : st) {
    std::memcpy(out.data(), W.data(), std::size_t(W.size()) * sizeof(float));
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["bytes/s"] = benchmark::Counter(double(W.size()) * sizeof(float), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_eigen_gemm)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_block_forward)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_tape_forward)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_memcpy_weight)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_fake_quant_weight)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_step_products)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_omniquant_step)->Args({0, 0})->Args({0, 1})->Args({1, 0})->Args({1, 1})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_step_over_forward)->Args({0, 0})->Args({0, 1})->Args({1, 0})->Args({1, 1})->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(4.0);

BENCHMARK_MAIN();
