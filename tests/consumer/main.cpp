// Quantizes a small weight with the installed / embedded lowbit and checks the result.
#include <cstdio>
#include <lowbit/lowbit.hpp>

int main() {
  lowbit::MatrixRM w(4, 64);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = float(i % 17) - 8.0f;
  lowbit::MatrixRM y(4, 64);
  lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerGroup<32>, lowbit::Asymmetric> q;
  lowbit::fake_quant(q, w, y);
  const float err = (w - y).cwiseAbs().maxCoeff();
  std::printf("consumer: lowbit %d.%d, max error %g\n", LOWBIT_VERSION_MAJOR, LOWBIT_VERSION_MINOR, err);
  return err <= 16.0f / 15.0f / 2.0f * 1.0001f ? 0 : 1;
}
