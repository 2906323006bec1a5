// Compile-only check: lowbit's host/device headers build under nvcc (no GPU is needed to build this).
#include <lowbit/core/half.hpp>

__global__ void to_half(const float* x, unsigned short* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = lowbit::float_to_half_bits(x[i]);
}

int main() { return lowbit::float_to_half_bits(1.0f) == 0x3c00 ? 0 : 1; }
