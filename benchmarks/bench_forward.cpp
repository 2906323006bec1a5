// Forward pass throughput: one TinyLlama-1.1B-shaped block (dim 2048, hidden 5632, 32 heads, 4 kv heads)
// on one sequence of L = 512, and stories260K on 8 windows of 512, with Eigen's GEMM FLOP/s at the
// block's own linear shapes in the same binary as the roofline; BM_block_tinyllama_act is the same block with its
// activations fake-quantized (weight-activation forward), for the ratio to the plain forward.
//
//   build/benchmarks/bench_forward --benchmark_counters_tabular=true
// stories260K is read from $LOWBIT_SHARED (default ../shared) when present.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <random>

namespace {

lowbit::LlamaConfig tinyllama() {
  lowbit::LlamaConfig c;
  c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 22, c.n_heads = 32, c.n_kv_heads = 4, c.vocab_size = 32000;
  c.max_seq_len = 2048, c.rope = lowbit::RopeStyle::rotate_half;
  return c;
}

lowbit::MatrixRM rnd(long r, long c, std::mt19937& g, float sd) {
  std::normal_distribution<float> nd(0.0f, sd);
  lowbit::MatrixRM m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g);
  return m;
}

lowbit::Block random_block(const lowbit::LlamaConfig& c) {
  std::mt19937 g(3);
  lowbit::Block b;
  const float sd = 0.02f;
  b.attn_norm = Eigen::VectorXf::Ones(c.dim), b.ffn_norm = Eigen::VectorXf::Ones(c.dim);
  b.q.W = rnd(c.dim, c.dim, g, sd), b.k.W = rnd(c.kv_dim(), c.dim, g, sd), b.v.W = rnd(c.kv_dim(), c.dim, g, sd);
  b.o.W = rnd(c.dim, c.dim, g, sd), b.gate.W = rnd(c.hidden_dim, c.dim, g, sd), b.up.W = rnd(c.hidden_dim, c.dim, g, sd);
  b.down.W = rnd(c.dim, c.hidden_dim, g, sd);
  return b;
}

// FLOPs of one block on n sequences of L tokens: the seven linears plus causal attention (QK^T and PV over
// the L(L+1)/2 visible pairs per head).
double block_flops(const lowbit::LlamaConfig& c, double n, double L) {
  const double T = n * L;
  const double lin = 2.0 * T * (2.0 * c.dim * c.dim + 2.0 * c.dim * c.kv_dim() + 3.0 * c.dim * c.hidden_dim);
  const double att = n * c.n_heads * 2.0 * 2.0 * c.head_dim() * (L * (L + 1) / 2);
  return lin + att;
}

void BM_eigen_gemm(benchmark::State& st) {
  // the block's dominant shape: [512, 2048] x [2048, 5632]
  std::mt19937 g(1);
  const lowbit::MatrixRM x = rnd(512, 2048, g, 1.0f), W = rnd(5632, 2048, g, 0.02f);
  lowbit::MatrixRM y(512, 5632);
  for (auto _ : st) {
    y.noalias() = x * W.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * 512 * 2048 * 5632, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_block_tinyllama(benchmark::State& st) {
  const lowbit::LlamaConfig c = tinyllama();
  const lowbit::Block b = random_block(c);
  std::mt19937 g(2);
  const lowbit::MatrixRM x0 = rnd(512, c.dim, g, 1.0f);
  lowbit::MatrixRM x;
  for (auto _ : st) {
    x = x0;
    lowbit::block_forward(c, b, x, 512);
    benchmark::DoNotOptimize(x.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(block_flops(c, 1, 512), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens/s"] = benchmark::Counter(512, benchmark::Counter::kIsIterationInvariantRate);
}

// The same block with its activations fake-quantized (W8A8 / W4A4 forward: every linear's input per token; with
// range(1) also Q/K/V per (token, head)).  range(0) = activation bits.
void BM_block_tinyllama_act(benchmark::State& st) {
  const lowbit::LlamaConfig c = tinyllama();
  lowbit::Block b = random_block(c);
  b.act.input = lowbit::ActQuant{int(st.range(0)), lowbit::ActGranularity::per_token, true, lowbit::Grid::minmax};
  if (st.range(1)) b.act.q = b.act.k = b.act.v = b.act.input;
  std::mt19937 g(2);
  const lowbit::MatrixRM x0 = rnd(512, c.dim, g, 1.0f);
  lowbit::MatrixRM x;
  for (auto _ : st) {
    x = x0;
    lowbit::block_forward(c, b, x, 512);
    benchmark::DoNotOptimize(x.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(block_flops(c, 1, 512), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens/s"] = benchmark::Counter(512, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_forward_stories260K(benchmark::State& st) {
  const char* env = std::getenv("LOWBIT_SHARED");
  const std::string path = std::string(env && *env ? env : "../shared") + "/models/stories260K/stories260K.bin";
  if (!std::ifstream(path).good()) {
    st.SkipWithError(("stories260K not found at " + path + " (set LOWBIT_SHARED)").c_str());
    return;
  }
  const lowbit::Model m = lowbit::load_llama2c(path);
  std::vector<int> toks(8 * 512);
  for (std::size_t i = 0; i < toks.size(); ++i) toks[i] = int((i * 7919) % 512);
  for (auto _ : st) {
    auto logits = lowbit::forward(m, toks, 512);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["tokens/s"] = benchmark::Counter(double(toks.size()), benchmark::Counter::kIsIterationInvariantRate);
  double f = 0;
  for (int l = 0; l < m.cfg.n_layers; ++l) f += block_flops(m.cfg, 8, 512);
  f += 2.0 * double(toks.size()) * m.cfg.dim * m.cfg.vocab_size;
  st.counters["FLOP/s"] = benchmark::Counter(f, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_eigen_gemm_stories(benchmark::State& st) {
  // stories260K's largest linear at the benchmark's 4096 tokens: [4096, 64] x [64, 172]
  std::mt19937 g(1);
  const lowbit::MatrixRM x = rnd(4096, 64, g, 1.0f), W = rnd(172, 64, g, 0.02f);
  lowbit::MatrixRM y(4096, 172);
  for (auto _ : st) {
    y.noalias() = x * W.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * 4096 * 64 * 172, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_eigen_gemm)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_block_tinyllama)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_block_tinyllama_act)->Args({8, 0})->Args({8, 1})->Args({4, 0})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_eigen_gemm_stories)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_forward_stories260K)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
