// Bit-for-bit agreement with the reference implementations' RTN outputs (shared/fixtures/rtn*.safetensors:
// llm-awq pseudo_quantize_tensor and GPTQ's Quantizer, see shared/fixtures/README.md).
#include <catch2/catch.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/quant/spec.hpp>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {
void check_against(const SafetensorsFile& f, const std::string& W, const std::string& prefix, const QuantSpec& spec) {
  INFO(f.path() << " " << prefix << " as " << to_string(spec));
  const MatrixRM w = f.matrix(W);
  const MatrixRM Q = f.matrix(prefix + ".Q"), scale = f.matrix(prefix + ".scale"), zero = f.matrix(prefix + ".zero");
  MatrixRM y(w.rows(), w.cols());
  QuantParams P;
  visit(spec, [&](auto q) { P = fake_quant(q, w, y); });
  REQUIRE(P.scale.rows() == scale.rows());
  REQUIRE(P.scale.cols() == scale.cols());
  REQUIRE(std::memcmp(P.scale.data(), scale.data(), sizeof(float) * std::size_t(scale.size())) == 0);
  for (Eigen::Index i = 0; i < zero.size(); ++i) REQUIRE(P.zero.data()[i] == zero.data()[i]);  // by value (-0 == 0)
  for (Eigen::Index i = 0; i < Q.size(); ++i) {
    INFO("element " << i);
    REQUIRE(float_bits(y.data()[i]) == float_bits(Q.data()[i]));
  }
}
}  // namespace

TEST_CASE("RTN on real stories260K layers matches llm-awq and GPTQ bit for bit", "[data][fixtures]") {
  LOWBIT_REQUIRE_SHARED("fixtures/rtn.safetensors");
  SafetensorsFile f(lowbit_test::shared_path("fixtures/rtn.safetensors"));
  for (std::string L : {"l0_q_proj", "l2_gate_proj"}) check_against(f, L + ".W", L + ".awq_w4_asym_g32", parse_spec("w4a16g32"));
  check_against(f, "l0_down_proj.W", "l0_down_proj.awq_w4_asym_g4", parse_spec("w4a16g4"));
  check_against(f, "l0_down_proj.W", "l0_down_proj.awq_w4_asym_perchannel", parse_spec("w4a16"));
  check_against(f, "l0_down_proj.W", "l0_down_proj.awq_w4_asym_g32_ragged", parse_spec("w4a16g32-ragged"));
  for (std::string L : {"l0_q_proj", "l2_gate_proj", "l0_down_proj"}) {
    check_against(f, L + ".W", L + ".gptq_w4_sym_perchannel", parse_spec("w4a16-sym-gptq"));
    check_against(f, L + ".W", L + ".gptq_w4_asym_g32", parse_spec("w4a16g32-gptq-ragged"));
  }
}

TEST_CASE("RTN edge rows (constant, zero, one-signed, tiny range) match the references", "[data][fixtures]") {
  LOWBIT_REQUIRE_SHARED("fixtures/rtn_edge.safetensors");
  SafetensorsFile f(lowbit_test::shared_path("fixtures/rtn_edge.safetensors"));
  for (int b : {4, 3, 2}) {
    const std::string w = std::to_string(b);
    check_against(f, "W", "awq_w" + w + "_asym_g32", parse_spec("w" + w + "a16g32"));
    check_against(f, "W", "gptq_w" + w + "_asym_g32", parse_spec("w" + w + "a16g32-gptq"));
    check_against(f, "W", "gptq_w" + w + "_sym_perchannel", parse_spec("w" + w + "a16-sym-gptq"));
  }
}
