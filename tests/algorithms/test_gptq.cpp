#include <Eigen/LU>
#include <catch2/catch.hpp>
#include <lowbit/algorithms/gptq.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/quant/spec.hpp>
#include <random>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {

MatrixRM randn(Eigen::Index r, Eigen::Index c, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  MatrixRM m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(g);
  return m;
}

// Correlated activations: X = Z A with a random mixing matrix, so H has strong off-diagonal structure.
Eigen::MatrixXd correlated_hessian(Eigen::Index in, std::uint32_t seed, MatrixRM* X_out = nullptr) {
  const MatrixRM Z = randn(2048, in, seed), A = randn(in, in, seed + 1);
  MatrixRM X = Z * A;
  X.col(0) *= 10.0f;  // an outlier channel
  HessianAccumulator acc(in);
  acc.add_batch(X, 8);
  if (X_out) *X_out = X;
  return acc.hessian();
}

// One group's rounding in a naive GPTQ (a Round): fit(seg) on the group's current values, then operator()(x)
// the dequantized value of x.

// The gptq grid, asymmetric (quant.py of the reference).
struct GptqGridRound {
  int bits;
  GroupParams p{};
  explicit GptqGridRound(int b) : bits(b) {}
  void fit(const Eigen::VectorXf& seg) {
    p = group_params(Grid::gptq, bits, false, seg.minCoeff() + 0.0f, seg.maxCoeff() + 0.0f, 0.0f);
  }
  float operator()(float x) const {
    const float code = std::min(std::max(std::nearbyint(x / p.scale) + p.zero, 0.0f), float((1 << bits) - 1));
    return p.scale * (code - p.zero);
  }
};

// llama.cpp's reference block quantizers (ggml-quants.c quantize_row_q4_0_ref / quantize_row_q4_1_ref), with d and
// m in float32 as they are computed there (the file stores them as fp16 afterwards).
struct GgmlQ4Round {
  bool q4_0;
  float d = 0, m = 0;
  explicit GgmlQ4Round(bool sym) : q4_0(sym) {}
  void fit(const Eigen::VectorXf& seg) {
    if (q4_0) {
      float amax = 0, mx = 0;
      for (Eigen::Index i = 0; i < seg.size(); ++i)
        if (std::fabs(seg[i]) > amax) amax = std::fabs(seg[i]), mx = seg[i];
      d = mx / -8;
    } else {
      m = seg.minCoeff();
      d = (seg.maxCoeff() - m) / 15;
    }
  }
  float operator()(float x) const {
    const float id = d ? 1.0f / d : 0.0f;
    if (q4_0) return float(std::min(15, int(std::int8_t(x * id + 8.5f))) - 8) * d;
    return float(std::min(15, int(std::int8_t((x - m) * id + 0.5f)))) * d + m;
  }
};

// Straightforward GPTQ written here: column by column, no lazy batching, the whole remaining W updated
// after every column, explicit inverse (double throughout).  Groups are fitted on the current weights at
// the group's first column, which equals lowbit's GroupFit::current.
// `proto`: the Round every row starts from.
template <class Round>
MatrixRM naive_gptq(const MatrixRM& W, Eigen::MatrixXd H, const Round& proto, int gs, double percdamp) {
  const Eigen::Index rows = W.rows(), cols = W.cols();
  H.diagonal().array() += percdamp * H.diagonal().mean();
  const Eigen::MatrixXd Hinv = H.inverse();
  const Eigen::MatrixXd U = Eigen::LLT<Eigen::MatrixXd>(Hinv).matrixU();
  MatrixRM w = W, Qm(rows, cols);
  std::vector<Round> p(std::size_t(rows), proto);
  for (Eigen::Index c = 0; c < cols; ++c) {
    if (c % gs == 0)
      for (Eigen::Index r = 0; r < rows; ++r)
        p[std::size_t(r)].fit(w.row(r).segment(c, std::min<Eigen::Index>(gs, cols - c)).transpose());
    for (Eigen::Index r = 0; r < rows; ++r) {
      Qm(r, c) = p[std::size_t(r)](w(r, c));
      const float err = (w(r, c) - Qm(r, c)) / float(U(c, c));
      for (Eigen::Index j = c + 1; j < cols; ++j) w(r, j) -= float(U(c, j)) * err;
    }
  }
  return Qm;
}

}  // namespace

TEST_CASE("GPTQ equals a straightforward column-by-column GPTQ (same codes)", "[gptq]") {
  const MatrixRM W = randn(48, 96, 5);
  const Eigen::MatrixXd H = correlated_hessian(96, 9);
  Quantizer<Bits<3>, PerGroup<dynamic_group>, Asymmetric> q(32, Grid::gptq);
  GptqOptions o;
  o.block_size = 40;  // blocks that do not align with groups
  o.group_params_from = GroupFit::current;
  const GptqResult r = gptq_quantize(q, W, H, o);
  const MatrixRM ref = naive_gptq(W, H, GptqGridRound(3), 32, 0.01);
  Eigen::Index same = 0;
  for (Eigen::Index i = 0; i < W.size(); ++i) {
    const Eigen::Index rr = i / W.cols(), cc = i % W.cols();
    const float s = r.params.scale(rr, cc / 32);
    same += std::nearbyint(r.Q(rr, cc) / s) == std::nearbyint(ref(rr, cc) / s);
  }
  INFO(same << " of " << W.size() << " codes equal");
  REQUIRE(same == W.size());
}

TEST_CASE("GPTQ on the ggml grid equals a straightforward GPTQ with llama.cpp's Q4_0 / Q4_1 rounding", "[gptq][ggml]") {
  // 172 columns: five blocks of 32 and a ragged 12 (stories260K's down projection)
  const MatrixRM W = randn(40, 172, 21);
  const Eigen::MatrixXd H = correlated_hessian(172, 23);
  for (bool sym : {true, false}) {
    GptqOptions o;
    o.block_size = 48;
    o.group_params_from = GroupFit::current;
    const MatrixRM ref = naive_gptq(W, H, GgmlQ4Round(sym), 32, 0.01);
    QuantSpec spec{4, 16, 32, sym, Grid::ggml, true};
    visit(spec, [&](auto q) {
      const GptqResult r = gptq_quantize(q, W, H, o);
      Eigen::Index same = 0;
      for (Eigen::Index i = 0; i < W.size(); ++i) {
        const Eigen::Index rr = i / W.cols(), cc = i % W.cols();
        same += std::fabs(r.Q(rr, cc) - ref(rr, cc)) <= 1e-3f * std::fabs(r.params.scale(rr, cc / 32));
      }
      INFO((sym ? "Q4_0" : "Q4_1") << ": " << same << " of " << W.size() << " values equal");
      REQUIRE(same == W.size());
      // the codes dequantize to Q by the grid's formula (x = (c - 8) d, or c d + m)
      MatrixRM back(W.rows(), W.cols());
      dequantize(q, r.codes, r.params, back);
      REQUIRE(back == r.Q);
      // with a diagonal Hessian nothing propagates: GPTQ is the reference quantizer itself (RTN), code for code
      const Eigen::MatrixXd D = Eigen::VectorXd::LinSpaced(172, 1.0, 3.0).asDiagonal();
      const GptqResult diag = gptq_quantize(q, W, D);
      const MatrixRM rtn = naive_gptq(W, D, GgmlQ4Round(sym), 32, 0.01);
      REQUIRE(diag.Q == rtn);
      auto loss = [&](const MatrixRM& Qm) {
        const Eigen::MatrixXd d = (Qm - W).cast<double>();
        return (d * H * d.transpose()).trace();
      };
      MatrixRM plain(W.rows(), W.cols());
      fake_quant(q, W, plain);
      REQUIRE(loss(r.Q) < 0.9 * loss(plain));
    });
  }
}

TEST_CASE("GPTQ's loss tr(dW H dW^T) is below RTN's on correlated inputs", "[gptq]") {
  for (int bits : {2, 3, 4}) {
    const MatrixRM W = randn(64, 128, std::uint32_t(bits));
    const Eigen::MatrixXd H = correlated_hessian(128, 77);
    QuantSpec spec{bits, 16, 32, false, Grid::gptq, false};
    visit(spec, [&](auto q) {
      MatrixRM rtn(64, 128);
      fake_quant(q, W, rtn);
      for (bool act : {false, true}) {
        GptqOptions o;
        o.act_order = act;
        const GptqResult r = gptq_quantize(q, W, H, o);
        auto loss = [&](const MatrixRM& Qm) {
          const Eigen::MatrixXd d = (Qm - W).cast<double>();
          return (d * H * d.transpose()).trace();
        };
        INFO("bits " << bits << " act_order " << act);
        REQUIRE(loss(r.Q) < 0.9 * loss(rtn));
      }
    });
  }
}

TEST_CASE("GPTQ handles dead columns, retries damping, and rejects bad input", "[gptq]") {
  MatrixRM W = randn(8, 16, 1);
  Eigen::MatrixXd H = correlated_hessian(16, 2);
  H.row(3).setZero(), H.col(3).setZero();
  Quantizer<Bits<4>, PerChannel, Asymmetric> q(Grid::gptq);
  GptqResult r = gptq_quantize(q, W, H);
  REQUIRE(r.dead_columns == std::vector<int>{3});
  REQUIRE(r.Q.col(3).isZero());
  // an indefinite "Hessian" needs more damping: retried and reported
  Eigen::MatrixXd bad = Eigen::MatrixXd::Identity(16, 16);
  bad(0, 1) = bad(1, 0) = 1.5;
  r = gptq_quantize(q, W, bad);
  REQUIRE(r.damp_retries > 0);
  REQUIRE(r.percdamp_used > 0.01);
  Eigen::MatrixXd hopeless = -Eigen::MatrixXd::Identity(16, 16);
  REQUIRE_THROWS_WITH(gptq_quantize(q, W, hopeless), Catch::Contains("not positive definite"));
  REQUIRE_THROWS_WITH(gptq_quantize(q, W, Eigen::MatrixXd::Identity(15, 15)), Catch::Contains("Hessian is 15x15"));
  W(2, 5) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(gptq_quantize(q, W, H), Catch::Contains("row 2, column 5"));
}

TEST_CASE("GPTQ reproduces the reference fasterquant on real stories260K layers", "[data][gptq][fixtures]") {
  LOWBIT_REQUIRE_SHARED("fixtures/gptq_l0_q_proj.safetensors");
  struct Setting { const char* name; const char* spec; bool act, stat; };
  const Setting settings[] = {{"w4_asym_g32", "w4a16g32-gptq-ragged", false, false},
                              {"w3_asym_g32_actorder", "w3a16g32-gptq-ragged", true, false},
                              {"w4_sym_perchannel", "w4a16-sym-gptq", false, false},
                              {"w2_asym_g32_actorder_static", "w2a16g32-gptq-ragged", true, true}};
  for (const char* layer : {"gptq_l0_q_proj", "gptq_l0_down_proj", "gptq_l2_gate_proj"}) {
    SafetensorsFile f(lowbit_test::shared_path(std::string("fixtures/") + layer + ".safetensors"));
    const MatrixRM W = f.matrix("W");
    const Eigen::MatrixXd H = f.matrix("H").cast<double>();
    for (const Setting& s : settings) {
      INFO(layer << " " << s.name);
      GptqOptions o;
      o.act_order = s.act;
      o.static_groups = s.stat;
      GptqResult r;
      visit(parse_spec(s.spec), [&](auto q) { r = gptq_quantize(q, W, H, o); });
      const std::string p = std::string(s.name) + ".";
      const MatrixRM Qref = f.matrix(p + "Q"), sref = f.matrix(p + "scale"), zref = f.matrix(p + "zero");
      REQUIRE(r.g_idx == f.ints(p + "g_idx"));
      if (s.act) REQUIRE(r.perm == f.ints(p + "perm"));
      REQUIRE(r.error == Approx(f.doubles(p + "error")[0]).epsilon(1e-4));
      REQUIRE(r.params.scale.rows() == sref.rows());
      REQUIRE(r.params.scale.cols() == sref.cols());
      const bool late_groups = std::string(layer) == "gptq_l0_down_proj" && !s.stat && sref.cols() > 1;
      for (Eigen::Index g = 0; g < sref.cols(); ++g)
        for (Eigen::Index i = 0; i < sref.rows(); ++i) {
          if (late_groups && g >= 4) {  // fitted after the first block's update: ulp-level differences allowed
            REQUIRE(r.params.scale(i, g) == Approx(sref(i, g)).epsilon(1e-5));
          } else {
            REQUIRE(r.params.scale(i, g) == sref(i, g));
          }
          REQUIRE(r.params.zero(i, g) == zref(i, g));
        }
      Eigen::Index close = 0, codes_equal = 0;
      for (Eigen::Index i = 0; i < W.size(); ++i) {
        const Eigen::Index rr = i / W.cols(), cc = i % W.cols();
        const int g = r.g_idx[std::size_t(cc)];
        const float sc = sref(rr, g);
        close += std::fabs(r.Q(rr, cc) - Qref(rr, cc)) <= 1e-6f;
        codes_equal += std::nearbyint(r.Q(rr, cc) / sc) == std::nearbyint(Qref(rr, cc) / sc);
      }
      REQUIRE(codes_equal == W.size());
      REQUIRE(double(close) >= 0.999 * double(W.size()));
    }
  }
}

TEST_CASE("blocked Cholesky and triangular inverse match Eigen at sizes past one block", "[gptq]") {
  for (Eigen::Index n : {5, 256, 257, 700}) {
    const MatrixRM A = randn(n + 20, n, std::uint32_t(n));
    Eigen::MatrixXd H = (A.transpose() * A).cast<double>();
    H.diagonal().array() += 1.0;
    Eigen::MatrixXd L = H;
    REQUIRE(detail::cholesky_lower_inplace(L));
    const Eigen::MatrixXd ref = Eigen::LLT<Eigen::MatrixXd>(H).matrixL();
    REQUIRE((L - ref).cwiseAbs().maxCoeff() <= 1e-9 * ref.cwiseAbs().maxCoeff());
    Eigen::MatrixXd Li = L;
    detail::invert_lower_triangular<Eigen::MatrixXd>(Li);
    REQUIRE((Li * L - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() < 1e-9);
    // and the GPTQ factor: U^T U = (H + damp)^-1 with U upper triangular
    GptqResult r;
    const MatrixRM U = detail::gptq_inverse_factor<double>(H, GptqOptions{}, r);
    Eigen::MatrixXd Hd = H;
    Hd.diagonal().array() += 0.01 * H.diagonal().mean();
    const Eigen::MatrixXd Ud = U.cast<double>();
    REQUIRE(Ud.triangularView<Eigen::StrictlyLower>().toDenseMatrix().isZero());
    REQUIRE((Ud.transpose() * Ud * Hd - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() < 1e-4);
  }
  Eigen::MatrixXd bad = -Eigen::MatrixXd::Identity(300, 300);
  REQUIRE_FALSE(detail::cholesky_lower_inplace(bad));
}
