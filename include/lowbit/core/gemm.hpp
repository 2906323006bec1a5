// lowbit/core/gemm.hpp -- matrix products that give the same bits for any thread count.
//
// Eigen's own multi-threaded GEMM splits its work by the number of threads, and on a long inner dimension (in
// >= ~512 here) 1 and 2 threads give different bits.  lowbit instead cuts the output into fixed tiles (never fewer
// than two, so the products always run inside lowbit's parallel loop, where Eigen does not split them again) and
// computes each tile with a serial Eigen GEMM: the tiles do not depend on the thread count, so neither do the bits.
// A product too small to be worth a thread runs serially (parallel_for's work rule); it is then also below the
// size at which Eigen would split it (50,000 multiply-adds per thread), so it stays one serial GEMM.
//   matmul_nt       C = A B^T (linears, logits)
//   tiled_product   C (+)= A B for any Eigen operands, transposed views included (the autodiff's products)
//   add_gram    sum += X^T X in float per chunk of tokens, summed in double (GPTQ's Hessian, AWQ's Gram scoring)
#pragma once

#include <algorithm>

#include "error.hpp"
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
  }, std::int64_t(tile) * B.rows() * A.cols());
}

enum class Product { assign, accumulate };

// C = A B (Product::accumulate: C += A B) for Eigen expressions A [m, k] and B [k, n] -- transposed views included -- by
// tiles of 256 rows of C (at least two), each a serial GEMM over the whole inner dimension: the same bits for any
// thread count.  C is a writable view (an Eigen::Map).
template <class Dst, class Lhs, class Rhs>
void tiled_product(Dst& C, const Lhs& A, const Rhs& B, Product mode) {
  const Eigen::Index m = C.rows();
  if (A.rows() != m || B.cols() != C.cols() || A.cols() != B.rows())
    fail("tiled_product: [", A.rows(), "x", A.cols(), "] x [", B.rows(), "x", B.cols(), "] into [", m, "x", C.cols(), "]");
  const Eigen::Index tile = std::max<Eigen::Index>(1, std::min<Eigen::Index>(256, (m + 1) / 2));
  parallel_for((m + tile - 1) / tile, [&](std::int64_t t) {
    const Eigen::Index r0 = t * tile, h = std::min(tile, m - r0);
    if (mode == Product::accumulate) C.middleRows(r0, h).noalias() += A.middleRows(r0, h) * B;
    else C.middleRows(r0, h).noalias() = A.middleRows(r0, h) * B;
  }, std::int64_t(tile) * B.cols() * A.cols());
}

// sum += X^T X: the float product of each chunk of up to 4096 tokens, added in double.  The product runs as
// serial GEMMs over tiles of at most 128 output columns, the tiles in parallel: Eigen's own parallel GEMM splits its work
// by thread count and gives different bits for 1 and 2 threads on a long inner dimension; fixed tiles do not.
inline void add_gram(ConstMatrixRef X, Eigen::MatrixXd& sum) {
  if (sum.rows() != X.cols() || sum.cols() != X.cols()) fail("add_gram: sum is [", sum.rows(), ", ", sum.cols(), "], expected [", X.cols(), ", ", X.cols(), "]");
  constexpr Eigen::Index kChunk = 4096;
  // at least two tiles, so the GEMMs always run inside the parallel loop (where Eigen does not split them)
  const Eigen::Index in = X.cols(), kTile = std::max<Eigen::Index>(1, std::min<Eigen::Index>(128, (in + 1) / 2));
  const Eigen::Index tiles = (in + kTile - 1) / kTile;
  Eigen::MatrixXf P(in, in);
  for (Eigen::Index t0 = 0; t0 < X.rows(); t0 += kChunk) {
    const auto Xc = X.middleRows(t0, std::min(kChunk, X.rows() - t0));
    parallel_for(tiles, [&](std::int64_t t) {
      const Eigen::Index j = t * kTile, w = std::min(kTile, in - j);
      P.middleCols(j, w).noalias() = Xc.transpose() * Xc.middleCols(j, w);
    }, std::int64_t(kTile) * in * Xc.rows());
    sum += P.cast<double>();
  }
}

}  // namespace lowbit
