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

// Below this much work (items x work_per_item, in element operations, about a nanosecond each) a loop runs
// serially: waking the team costs more than it saves, and on a busy machine a parallel region waits for a
// thread that is not scheduled.  Serial or parallel, the results are the same bits.
constexpr std::int64_t kParallelMinWork = std::int64_t(1) << 15;

// `work_per_item`: the loop body's cost in element operations, when the caller knows it (the default counts
// every item as large enough to be worth a thread).
template <class Fn>
void parallel_for(std::int64_t n, Fn&& fn, std::int64_t work_per_item = kParallelMinWork) {
#if LOWBIT_HAS_OPENMP
  const bool worth_it = work_per_item >= kParallelMinWork || n * work_per_item >= kParallelMinWork;
  if (n > 1 && worth_it && max_threads() > 1 && !omp_in_parallel()) {
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
#else
  (void)work_per_item;
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
  }, chunk);
}

}  // namespace lowbit
