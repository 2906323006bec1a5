// Quantizer kernels on a 4096 x 4096 fp32 weight and a 2048 x 4096 activation, with memcpy of the same
// buffer as the roofline.  bytes/s counts the fp32 input once for every benchmark (memcpy of N bytes
// reads N and writes N; fake-quant reads N and writes N), so "fake-quant / memcpy" is a traffic ratio.
//
// BM_act_* are the run-time activation quantizers of weight-activation runs on the same activation.
//
// BM_ggml_pack_codes is the GGUF export's packing (pack/ggml.hpp ggml_pack_codes: a method's codes and group
// parameters -> Q4_0 / Q4_1 blocks) of the weight's codes, beside BM_memcpy_codes, a memcpy of the same codes
// (one byte per weight); bytes/s counts the codes once for both, so their ratio is the packing's share of memcpy
// bandwidth (issue 11's target: >= 60 %).  BM_pack_autoawq / BM_pack_gptq: the same codes in the AutoAWQ GEMM and
// GPTQ checkpoint layouts (allocation of the packed tensors included, as the export does).
//
//   build/benchmarks/bench_quant --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <atomic>

#include <cstring>
#include <lowbit/lowbit.hpp>
#include <random>
#include <vector>

namespace {

lowbit::MatrixRM make(long rows, long cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  lowbit::MatrixRM m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

const lowbit::MatrixRM& weight() {
  static const lowbit::MatrixRM w = make(4096, 4096);
  return w;
}
const lowbit::MatrixRM& activation() {
  static const lowbit::MatrixRM a = make(2048, 4096);
  return a;
}

void set_bytes(benchmark::State& st, const lowbit::MatrixRM& m) {
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(m.size()) * 4);
  st.counters["threads"] = lowbit::max_threads();
}

void BM_memcpy_weight(benchmark::State& st) {
  const auto& w = weight();
  lowbit::MatrixRM out(w.rows(), w.cols());
  out.setZero();
  for (auto _ : st) {
    // split like the kernels so both use every core
    lowbit::parallel_for_chunks(w.rows(), 64, [&](std::int64_t b, std::int64_t e) {
      std::memcpy(out.row(b).data(), w.row(b).data(), std::size_t((e - b) * w.cols()) * 4);
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(st, w);
}

template <class Q>
void BM_fake_quant(benchmark::State& st, Q q) {
  const auto& w = weight();
  lowbit::MatrixRM out(w.rows(), w.cols());
  out.setZero();
  for (auto _ : st) {
    auto P = lowbit::fake_quant(q, w, out);
    benchmark::DoNotOptimize(P.scale.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(st, w);
}

template <class Q>
void BM_quantize_pack(benchmark::State& st, Q q, const lowbit::MatrixRM* src) {
  const auto& w = *src;
  lowbit::CodesRM codes;
  std::vector<std::uint8_t> packed(lowbit::packed_bytes(std::size_t(w.cols()), Q::bits) * std::size_t(w.rows()));
  const std::size_t row_bytes = lowbit::packed_bytes(std::size_t(w.cols()), Q::bits);
  for (auto _ : st) {
    const auto P = lowbit::compute_params(q, w);
    lowbit::quantize(q, w, P, codes);
    lowbit::parallel_for(w.rows(), [&](std::int64_t r) {
      lowbit::pack_bits(codes.row(r).data(), std::size_t(w.cols()), Q::bits, packed.data() + std::size_t(r) * row_bytes);
    });
    benchmark::DoNotOptimize(packed.data());
  }
  set_bytes(st, w);
}

using lowbit::Asymmetric;
using lowbit::Bits;
using lowbit::Symmetric;
using W4g128A = lowbit::Quantizer<Bits<4>, lowbit::PerGroup<128>, Asymmetric>;
using W4g128S = lowbit::Quantizer<Bits<4>, lowbit::PerGroup<128>, Symmetric>;
using W8ch = lowbit::Quantizer<Bits<8>, lowbit::PerChannel, Symmetric>;
using A8tok = lowbit::Quantizer<Bits<8>, lowbit::PerToken, Symmetric>;

void BM_memcpy_activation(benchmark::State& st) {
  const auto& a = activation();
  lowbit::MatrixRM out(a.rows(), a.cols());
  out.setZero();
  for (auto _ : st) {
    lowbit::parallel_for_chunks(a.rows(), 64, [&](std::int64_t b, std::int64_t e) {
      std::memcpy(out.row(b).data(), a.row(b).data(), std::size_t((e - b) * a.cols()) * 4);
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(st, a);
}

// Weight-activation runs: lowbit's run-time activation quantizers (quant/activation.hpp) on the same activation.
// Per-token int8 codes + a scale per row (what an int8 GEMM reads), and the in-place fake quantization the
// quantized forward runs.
void BM_act_quantize_per_token_int8(benchmark::State& st) {
  const auto& a = activation();
  const lowbit::ActQuant q{8, lowbit::ActGranularity::per_token, true, lowbit::Grid::minmax};
  lowbit::CodesRM codes;
  Eigen::VectorXf scale, zero;
  for (auto _ : st) {
    lowbit::quantize_per_token(q, a, codes, scale, zero, "activation");
    benchmark::DoNotOptimize(codes.data());
  }
  set_bytes(st, a);
}

void BM_act_fake_quant_per_token(benchmark::State& st) {
  const auto& a = activation();
  const lowbit::ActQuant q{int(st.range(0)), lowbit::ActGranularity::per_token, true, lowbit::Grid::minmax};
  lowbit::MatrixRM x = a;
  for (auto _ : st) {
    st.PauseTiming();
    x = a;
    st.ResumeTiming();
    lowbit::fake_quant_dynamic(q, x, x.cols(), "activation");
    benchmark::DoNotOptimize(x.data());
  }
  set_bytes(st, a);
}

const lowbit::QuantizedLinear& weight_codes(bool sym) {
  static const lowbit::QuantizedLinear a = lowbit::quantize_linear(W4g128A{}, weight());
  static const lowbit::QuantizedLinear s = lowbit::quantize_linear(W4g128S{}, weight());
  return sym ? s : a;
}

void BM_memcpy_codes(benchmark::State& st) {
  const lowbit::CodesRM& c = weight_codes(false).codes;
  lowbit::CodesRM out(c.rows(), c.cols());
  out.setZero();
  for (auto _ : st) {
    lowbit::parallel_for_chunks(c.rows(), 64, [&](std::int64_t b, std::int64_t e) {
      std::memcpy(out.row(b).data(), c.row(b).data(), std::size_t((e - b) * c.cols()));
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(c.size()));
}

void BM_ggml_pack_codes(benchmark::State& st) {
  const bool sym = st.range(0) != 0;
  const lowbit::GgmlType t = sym ? lowbit::GgmlType::q4_0 : lowbit::GgmlType::q4_1;
  const lowbit::QuantizedLinear& q = weight_codes(sym);
  const std::size_t rb = lowbit::ggml_row_bytes(t, q.cols());
  std::vector<std::uint8_t> out(rb * std::size_t(q.rows()), 0);
  bool refused = false;
  for (auto _ : st) {
    refused |= !lowbit::ggml_pack_linear(t, q, out.data(), [](std::int64_t r) { return r; });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (refused) st.SkipWithError("a row is not in the block format");
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(q.codes.size()));
  st.SetLabel(lowbit::to_string(t));
}

// The AutoAWQ GEMM and GPTQ layouts of the same codes (pack/autoawq.hpp, pack/gptq.hpp), bytes/s as above.
void BM_pack_autoawq(benchmark::State& st) {
  const lowbit::QuantizedLinear& q = weight_codes(false);
  for (auto _ : st) {
    lowbit::AwqPacked p = lowbit::pack_autoawq(q);
    benchmark::DoNotOptimize(p.qweight.data());
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(q.codes.size()));
}
void BM_pack_gptq(benchmark::State& st) {
  const lowbit::QuantizedLinear& q = weight_codes(false);
  for (auto _ : st) {
    lowbit::GptqPacked p = lowbit::pack_gptq(q);
    benchmark::DoNotOptimize(p.qweight.data());
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(q.codes.size()));
}

}  // namespace

BENCHMARK(BM_memcpy_codes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ggml_pack_codes)->Arg(1)->Arg(0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_pack_autoawq)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_pack_gptq)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_memcpy_weight)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_fake_quant, w4g128_asym, W4g128A{})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_fake_quant, w4g128_sym, W4g128S{})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_fake_quant, w8_perchannel_sym, W8ch{})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_quantize_pack, w4g128_asym, W4g128A{}, &weight())->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_quantize_pack, w4g128_sym, W4g128S{}, &weight())->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_quantize_pack, w8_perchannel_sym, W8ch{}, &weight())->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_memcpy_activation)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_quantize_pack, a8_pertoken_sym, A8tok{}, &activation())->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_act_quantize_per_token_int8)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_act_fake_quant_per_token)->Arg(8)->Arg(4)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
