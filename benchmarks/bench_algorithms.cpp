// GPTQ on a 4096 x 4096 layer (W4 g128, blocksize 128) and AWQ's scale + clip search on a TinyLlama-1.1B-shaped
// block, with Eigen's float GEMM as the roofline in the same binary.
//
//   build/benchmarks/bench_algorithms --benchmark_counters_tabular=true
// GPTQ FLOPs counted: the factorisation (one Cholesky + one triangular inverse, 2/3 n^3, in double), the lazy
// block updates (2 * rows * 128 * remaining columns per block) and the in-block rank-1 updates.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>

#include <lowbit/lowbit.hpp>
#include <random>

namespace {

lowbit::MatrixRM rnd(long r, long c, std::uint32_t seed, float sd) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  lowbit::MatrixRM m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g);
  return m;
}

const Eigen::MatrixXd& hessian4096() {
  static const Eigen::MatrixXd H = [] {
    lowbit::HessianAccumulator acc(4096);
    acc.add_batch(rnd(2048, 4096, 7, 1.0f), 4);  // rank-deficient on purpose: damping makes it definite
    acc.add_batch(rnd(4096, 4096, 8, 0.5f), 8);
    return acc.hessian();
  }();
  return H;
}

double gptq_flops(double rows, double cols, double B) {
  double f = 2.0 / 3.0 * cols * cols * cols;
  for (double i1 = 0; i1 < cols; i1 += B) {
    const double i2 = std::min(i1 + B, cols), count = i2 - i1;
    f += 2.0 * rows * count * (cols - i2) + rows * count * (count - 1);
  }
  return f;
}

void BM_eigen_gemm_4096x128x4096(benchmark::State& st) {
  const lowbit::MatrixRM A = rnd(4096, 128, 1, 1.0f), B = rnd(128, 4096, 2, 1.0f);
  lowbit::MatrixRM C(4096, 4096);
  for (auto _ : st) {
    C.noalias() = A * B;
    benchmark::DoNotOptimize(C.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * 4096 * 128 * 4096, benchmark::Counter::kIsIterationInvariantRate);
}

// The Hessian of one 4096-wide layer from 2,048 calibration rows (the side-by-side case), and the same
// product as one double GEMM (the way lowbit accumulated before: X cast to double, rank update in double).
void BM_hessian_4096_rows2048(benchmark::State& st) {
  const lowbit::MatrixRM X = rnd(2048, 4096, 9, 1.0f);
  for (auto _ : st) {
    lowbit::HessianAccumulator acc(4096);
    acc.add_batch(X, 4);
    benchmark::DoNotOptimize(std::move(acc).hessian().data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * 2048 * 4096 * 4096, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_hessian_4096_rows2048_double(benchmark::State& st) {
  const lowbit::MatrixRM X = rnd(2048, 4096, 9, 1.0f);
  for (auto _ : st) {
    Eigen::MatrixXd H = Eigen::MatrixXd::Zero(4096, 4096);
    const Eigen::MatrixXd Xd = X.cast<double>();
    H.selfadjointView<Eigen::Lower>().rankUpdate(Xd.transpose());
    benchmark::DoNotOptimize(H.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * 2048 * 4096 * 4096, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gptq_4096_w4g128(benchmark::State& st) {
  const lowbit::MatrixRM W = rnd(4096, 4096, 3, 0.02f);
  const Eigen::MatrixXd& H = hessian4096();
  lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerGroup<128>, lowbit::Asymmetric> q(128, lowbit::Grid::gptq);
  for (auto _ : st) {
    auto r = lowbit::gptq_quantize(q, W, H);
    benchmark::DoNotOptimize(r.Q.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(gptq_flops(4096, 4096, 128), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_awq_block_tinyllama(benchmark::State& st) {
  lowbit::LlamaConfig c;
  c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 1, c.n_heads = 32, c.n_kv_heads = 4, c.vocab_size = 32000;
  c.max_seq_len = 2048, c.rope = lowbit::RopeStyle::rotate_half;
  lowbit::Block b;
  b.attn_norm = Eigen::VectorXf::Ones(c.dim), b.ffn_norm = Eigen::VectorXf::Ones(c.dim);
  b.q.W = rnd(c.dim, c.dim, 11, 0.02f), b.k.W = rnd(c.kv_dim(), c.dim, 12, 0.02f), b.v.W = rnd(c.kv_dim(), c.dim, 13, 0.02f);
  b.o.W = rnd(c.dim, c.dim, 14, 0.02f), b.gate.W = rnd(c.hidden_dim, c.dim, 15, 0.02f);
  b.up.W = rnd(c.hidden_dim, c.dim, 16, 0.02f), b.down.W = rnd(c.dim, c.hidden_dim, 17, 0.02f);
  const int n = int(st.range(0)), L = int(st.range(1));
  const lowbit::MatrixRM X = rnd(long(n) * L, c.dim, 18, 1.0f);
  lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerGroup<128>, lowbit::Asymmetric> q(128);
  for (auto _ : st) {
    lowbit::Block w = b;
    auto r = lowbit::awq_block(c, w, X, L, q, lowbit::AwqOptions{});
    benchmark::DoNotOptimize(r.scales.size());
  }
  st.counters["tokens"] = double(n) * L;
}

// PieceWiseSearch smooth (methods/pss.hpp) and OS+ on a TinyLlama-shaped block: W8A8 per-channel weights with
// per-token 8-bit activations, n windows of L, `--search-tokens` 512; planted outlier channels in the input so
// the pieces differ.  Counters: seconds per group search (where the time goes).
void BM_smooth_search_block_tinyllama(benchmark::State& st) {
  lowbit::LlamaConfig c;
  c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 1, c.n_heads = 32, c.n_kv_heads = 4, c.vocab_size = 32000;
  c.max_seq_len = 2048, c.rope = lowbit::RopeStyle::rotate_half;
  lowbit::Block b;
  b.attn_norm = Eigen::VectorXf::Ones(c.dim), b.ffn_norm = Eigen::VectorXf::Ones(c.dim);
  for (int j = 0; j < c.dim; j += 97) b.attn_norm[j] = b.ffn_norm[j] = 20.0f;  // outlier channels
  b.q.W = rnd(c.dim, c.dim, 11, 0.02f), b.k.W = rnd(c.kv_dim(), c.dim, 12, 0.02f), b.v.W = rnd(c.kv_dim(), c.dim, 13, 0.02f);
  b.o.W = rnd(c.dim, c.dim, 14, 0.02f), b.gate.W = rnd(c.hidden_dim, c.dim, 15, 0.02f);
  b.up.W = rnd(c.hidden_dim, c.dim, 16, 0.02f), b.down.W = rnd(c.dim, c.hidden_dim, 17, 0.02f);
  const int L = 512, n = 4;
  const lowbit::MatrixRM X = rnd(long(n) * L, c.dim, 18, 1.0f);
  using Q = lowbit::Quantizer<lowbit::Bits<8>, lowbit::PerChannel, lowbit::Symmetric>;
  lowbit::MethodOptions mo;
  mo.pss.all_linears = true;
  const char* method = st.range(0) ? "os+" : "pss";
  std::map<std::string, double> seconds;
  for (auto _ : st) {
    lowbit::Block w = b;
    auto chain = lowbit::make_method_chain(method, Q(), mo);
    lowbit::BlockJob job(c, 0, 1, L, w);
    job.inputs[0] = &X;
    job.act.input = lowbit::ActQuant{8, lowbit::ActGranularity::per_token, true, lowbit::Grid::minmax};
    auto t = std::chrono::steady_clock::now();
    std::string cur;
    job.step = [&](const std::string& s) {
      const auto now = std::chrono::steady_clock::now();
      if (!cur.empty()) seconds[cur] += std::chrono::duration<double>(now - t).count();
      cur = s, t = now;
    };
    chain.steps[0]->run(job, lowbit::Chain::full_precision);
    job.step("");
    benchmark::DoNotOptimize(w.q.W.data());
  }
  for (const auto& [k, v] : seconds) st.counters[k] = v / double(st.iterations());
}

}  // namespace

BENCHMARK(BM_eigen_gemm_4096x128x4096)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_gptq_4096_w4g128)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_hessian_4096_rows2048)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_hessian_4096_rows2048_double)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_awq_block_tinyllama)->Args({16, 512})->Args({128, 512})->UseRealTime()->Unit(benchmark::kSecond)->Iterations(1);

BENCHMARK(BM_smooth_search_block_tinyllama)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kSecond)->Iterations(1);

BENCHMARK_MAIN();
