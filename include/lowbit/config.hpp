// lowbit/config.hpp -- version, optional back-ends and the one host/device macro.
//
// The build system defines LOWBIT_HAS_XSIMD / LOWBIT_HAS_OPENMP / LOWBIT_HAS_CUDA to 0 or 1 (see the
// top-level CMakeLists.txt).  A consumer that includes the headers without CMake gets the plain scalar
// build: every fast kernel has a scalar `_ref` twin that computes bit-identical results.
#pragma once

#define LOWBIT_VERSION_MAJOR 0
#define LOWBIT_VERSION_MINOR 1
#define LOWBIT_VERSION_PATCH 0

#ifndef LOWBIT_HAS_XSIMD
#define LOWBIT_HAS_XSIMD 0
#endif
#ifndef LOWBIT_HAS_OPENMP
#define LOWBIT_HAS_OPENMP 0
#endif
#ifndef LOWBIT_HAS_CUDA
#define LOWBIT_HAS_CUDA 0
#endif

// Functions usable from CUDA device code as well as the host (CUTLASS_HOST_DEVICE in small).
#if defined(__CUDACC__)
#define LOWBIT_HOST_DEVICE __host__ __device__ inline
#else
#define LOWBIT_HOST_DEVICE inline
#endif
