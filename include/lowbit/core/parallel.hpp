// lowbit/core/parallel.hpp -- deterministic data parallelism over OpenMP (or serial without it).
//
// parallel_for(n, fn) calls fn(i) for every i in [0, n) with a static partition.  The callers in lowbit
// only ever parallelise over independent items (rows, groups, fixed-size chunks) and never reduce floats
// across threads in thread order, so results are bit-identical for any thread count.
//
// An exception thrown by fn is caught inside the parallel region (it must not escape an OpenMP region)
// and re-thrown afterwards: the one with the smallest index i wins, so even the error message does not
// depend on the thread count.  Eigen products called inside fn run single-threaded (Eigen checks
// omp_get_num_threads() > 1).
#pragma once

#include <cstdint>
#include <exception>
#include <limits>

#include "../config.hpp"

#if LOWBIT_HAS_OPENMP
#include <omp.h>
#endif

namespace lowbit {

inline int max_threads() {
#if LOWBIT_HAS_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Sets the number of threads lowbit's parallel loops use (no effect without OpenMP).
inline void set_num_threads(int n) {
#if LOWBIT_HAS_OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

template <class Fn>
void parallel_for(std::int64_t n, Fn&& fn) {
#if LOWBIT_HAS_OPENMP
  if (n > 1 && max_threads() > 1 && !omp_in_parallel()) {
    std::exception_ptr first;
    std::int64_t first_index = std::numeric_limits<std::int64_t>::max();
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      try {
        fn(i);
      } catch (...) {
#pragma omp critical(lowbit_parallel_for_error)
        if (i < first_index) {
          first_index = i;
          first = std::current_exception();
        }
      }
    }
    if (first) std::rethrow_exception(first);
    return;
  }
#endif
  for (std::int64_t i = 0; i < n; ++i) fn(i);
}

// Calls fn(begin, end) over fixed chunks of `chunk` items; the chunking does not depend on the threads.
template <class Fn>
void parallel_for_chunks(std::int64_t n, std::int64_t chunk, Fn&& fn) {
  if (chunk < 1) chunk = 1;
  const std::int64_t nchunks = (n + chunk - 1) / chunk;
  parallel_for(nchunks, [&](std::int64_t c) {
    const std::int64_t b = c * chunk;
    fn(b, b + chunk < n ? b + chunk : n);
  });
}

}  // namespace lowbit
