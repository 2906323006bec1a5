// lowbit/core/gemm.hpp -- matrix products that give the same bits for any thread count.
//
// Eigen's own multi-threaded GEMM splits its work by the number of threads, and on a long inner dimension (in
// >= ~512 here) 1 and 2 threads give different bits.  lowbit instead cuts the output into fixed tiles (never fewer
// than two, so the products always run inside lowbit's parallel loop, where Eigen does not split them again) and
// computes each tile with a serial Eigen GEMM: the tiles do not depend on the thread count, so neither do the bits.
#pragma once

#include <algorithm>

#include "matrix.hpp"
#include "parallel.hpp"

namespace lowbit {

// C = A B^T: A [m, k], B [n, k] (a weight [out, in]), C [m, n]; tiles of 256 rows of A.
inline void matmul_nt(ConstMatrixRef A, ConstMatrixRef B, MatrixRM& C) {
  const Eigen::Index m = A.rows();
  C.resize(m, B.rows());
  const Eigen::Index tile = std::max<Eigen::Index>(1, std::min<Eigen::Index>(256, (m + 1) / 2));
  parallel_for((m + tile - 1) / tile, [&](std::int64_t t) {
    const Eigen::Index r0 = t * tile, h = std::min(tile, m - r0);
    C.middleRows(r0, h).noalias() = A.middleRows(r0, h) * B.transpose();
  });
}

}  // namespace lowbit
