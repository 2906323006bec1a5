// quantize_demo: quantizes a weight matrix with several policies and prints the error and bits per weight.
//
//   quantize_demo [rows cols]        (default 1024 x 4096, a heavy-tailed random weight, seed 0)
#include <cstdio>
#include <cstdlib>
#include <lowbit/lowbit.hpp>
#include <random>
#include <string>

int main(int argc, char** argv) {
  try {
    const long rows = argc > 2 ? std::atol(argv[1]) : 1024, cols = argc > 2 ? std::atol(argv[2]) : 4096;
    if (rows <= 0 || cols <= 0) lowbit::fail("usage: quantize_demo [rows cols] with positive sizes");
    // Student-t(4) entries: the heavy tails of real LLM weights.
    std::mt19937 rng(0);
    std::student_t_distribution<float> t4(4.0f);
    lowbit::MatrixRM w(rows, cols);
    for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = 0.02f * t4(rng);
    const double norm2 = double(w.squaredNorm());
    std::printf("weight %ld x %ld, student-t(4) * 0.02, %d threads\n", rows, cols, lowbit::max_threads());
    std::printf("%-26s %8s %12s %12s\n", "spec", "bits/w", "rel. MSE", "max |err|");
    for (const char* s : {"w8a16", "w8a16-sym", "w4a16g128", "w4a16g128-sym", "w4a16g128-sym-gptq", "w4a16g32",
                          "w4a16", "w3a16g128", "w3a16g32", "w2a16g64", "w2a16g32-gptq"}) {
      const lowbit::QuantSpec spec = lowbit::parse_spec(s);
      lowbit::MatrixRM y(rows, cols);
      double bpw = 0;
      lowbit::visit(spec, [&](auto q) {
        lowbit::fake_quant(q, w, y);
        bpw = lowbit::bits_per_weight(q, rows, cols);
      });
      const double err2 = double((w - y).squaredNorm());
      std::printf("%-26s %8.3f %12.4e %12.4e\n", lowbit::to_string(spec).c_str(), bpw, err2 / norm2,
                  double((w - y).cwiseAbs().maxCoeff()));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
