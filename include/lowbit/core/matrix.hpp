// lowbit/core/matrix.hpp -- the dense types every layer shares: row-major float matrices (weights are
// [out, in], activations [tokens, features]), byte code matrices, and the Eigen::Ref views pure functions take.
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace lowbit {

using MatrixRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CodesRM = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixRef = Eigen::Ref<const MatrixRM>;
using MatrixRef = Eigen::Ref<MatrixRM>;

}  // namespace lowbit
