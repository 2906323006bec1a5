// lowbit/core/gemm.hpp -- matrix products that give the same bits for any thread count.
//
// Eigen's own multi-threaded GEMM splits its work by the number of threads, and on a long inner dimension (in
// >= ~512 here) 1 and 2 threads give different bits.  lowbit instead cuts the output into fixed tiles (never fewer
// than two, so the products always run inside lowbit's parallel loop, where Eigen does not split them again) and
// computes each tile with a serial Eigen GEMM: the tiles depend only on the shapes, never on the thread count, so
// neither do the bits.  A product too small to be worth a thread runs serially (parallel_for's work rule); it is
// then also below the size at which Eigen would split it (50,000 multiply-adds per thread), so it stays one serial
// GEMM.
//
// The tiles (product_tiles): about 1024 x 1024 of the output, both ways.  Each tile's GEMM packs its share of the
// two operands, so an operand is packed once per tile across it: the repeated packing of C [m, n] = A B is
// m n k (1/tile_n + 1/tile_m) elements, and 256-row tiles packed a 5632 x 2048 weight twice per product (the
// linears' forward and input gradient) and the activations 22 times (the weight gradient).  1024-wide tiles cut
// that 4-8x (a TinyLlama block's forward 4-8 % faster on 2 cores: docs/benchmarks.md, "Products in fixed 1024-wide
// tiles"); an even number of tiles keeps two or four threads balanced.
//   matmul_nt       C = A B^T (linears, logits)
//   tiled_product   C (+)= A B for any Eigen operands, transposed views included (the autodiff's products)
//   add_gram    sum += X^T X in float per chunk of tokens, summed in double (GPTQ's Hessian, AWQ's Gram scoring)
#pragma once

#include <algorithm>

#include "error.hpp"
#include "matrix.hpp"
#include "parallel.hpp"

namespace lowbit {

enum class Product { assign, accumulate };

// The fixed tiling of an [m, n] output (see the header): `rows` x `cols` tiles of `h` x `w` (the last ones smaller).
struct ProductTiles {
  Eigen::Index rows, cols, h, w;
  Eigen::Index count() const { return rows * cols; }
};

inline ProductTiles product_tiles(Eigen::Index m, Eigen::Index n) {
  // tiles of at least kAlignFrom rows / columns are rounded up to a multiple of kAlign (16 floats: every SIMD
  // width's register block) -- costing at most 6 % of balance; smaller ones are left as they are
  constexpr Eigen::Index kTarget = 1024, kAlign = 16, kAlignFrom = 256;
  const auto count = [](Eigen::Index len) { return std::max<Eigen::Index>(1, (len + kTarget / 2) / kTarget); };
  Eigen::Index tr = count(m), tc = count(n);
  if (tr * tc == 1) (m >= n ? tr : tc) = 2;  // at least two tiles: the GEMMs then run inside lowbit's loop
  else if ((tr * tc) % 2 == 1) (m >= n ? tr : tc) += 1;
  const auto size = [&](Eigen::Index len, Eigen::Index t) {
    const Eigen::Index s = (len + t - 1) / t;
    return std::max<Eigen::Index>(1, s >= kAlignFrom ? (s + kAlign - 1) / kAlign * kAlign : s);
  };
  const Eigen::Index h = size(m, tr), w = size(n, tc);
  return {(m + h - 1) / h, (n + w - 1) / w, h, w};
}

// C = A B (Product::accumulate: C += A B) for Eigen expressions A [m, k] and B [k, n] -- transposed views included -- by
// product_tiles of C, each a serial GEMM over the whole inner dimension: the same bits for any thread count.  C is a
// writable matrix or view (an Eigen::Map).
template <class Dst, class Lhs, class Rhs>
void tiled_product(Dst& C, const Lhs& A, const Rhs& B, Product mode) {
  const Eigen::Index m = C.rows(), n = C.cols();
  if (A.rows() != m || B.cols() != n || A.cols() != B.rows())
    fail("tiled_product: [", A.rows(), "x", A.cols(), "] x [", B.rows(), "x", B.cols(), "] into [", m, "x", n, "]");
  if (m == 0 || n == 0) return;
  const ProductTiles t = product_tiles(m, n);
  parallel_for(t.count(), [&](std::int64_t i) {
    const Eigen::Index r0 = (i / t.cols) * t.h, c0 = (i % t.cols) * t.w;
    const Eigen::Index h = std::min(t.h, m - r0), w = std::min(t.w, n - c0);
    auto c = C.block(r0, c0, h, w);
    if (mode == Product::accumulate) c.noalias() += A.middleRows(r0, h) * B.middleCols(c0, w);
    else c.noalias() = A.middleRows(r0, h) * B.middleCols(c0, w);
  }, std::int64_t(t.h) * t.w * A.cols());
}

// C = A B^T: A [m, k], B [n, k] (a weight [out, in]), C [m, n].
inline void matmul_nt(ConstMatrixRef A, ConstMatrixRef B, MatrixRM& C) {
  if (A.cols() != B.cols()) fail("matmul_nt: [", A.rows(), "x", A.cols(), "] x [", B.rows(), "x", B.cols(), "]^T");
  C.resize(A.rows(), B.rows());
  tiled_product(C, A, B.transpose(), Product::assign);
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
