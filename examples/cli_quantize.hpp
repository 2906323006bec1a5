// lowbit command-line tool: the quantize command's model pass, in two translation units by weight bit width.
//
// Every method of the pipeline is a template on the quantizer, and a spec names one of 28 quantizer types
// (quant/spec.hpp visit); compiled in one file, those 28 x every method were the build's longest file by minutes.
// run_quantize<B> instantiates the 4 quantizers of B bits (group or channel, symmetric or not); two files share
// the bit widths (cli_quantize_w2_4.cpp, cli_quantize_w5_8.cpp), which the build compiles side by side.  (One
// file per bit width cost more than it saved: each file parses the library's headers again, ~50 s.)
#pragma once

#include <lowbit/lowbit.hpp>
#include <string>

namespace lowbit_cli {

struct QuantizeRun {
  const lowbit::Model& model;
  const lowbit::Windows& calib;
  const std::string& method;  // a method chain (make_method_chain), or "awq+omniquant": both of its steps
  const lowbit::MethodOptions& options;
  lowbit::SinkFan& sinks;
  const lowbit::PipelineOptions& pipeline;
  lowbit::AwqOmniQuantStep1* step1;  // filled by awq+omniquant
};

template <int B>
lowbit::PipelineReport run_quantize(const lowbit::QuantSpec& spec, const QuantizeRun& r) {
  return lowbit::visit_layout<B>(spec, [&](auto q) {
    if (r.method == "awq+omniquant") return lowbit::quantize_awq_omniquant(r.model, r.calib, q, r.options, r.sinks, r.pipeline, r.step1);
    auto chain = lowbit::make_method_chain(r.method, q, r.options);
    return lowbit::quantize_model(r.model, r.calib, chain, r.sinks, r.pipeline);
  });
}

// Instantiated in cli_quantize_w2_4.cpp and cli_quantize_w5_8.cpp.
#define LOWBIT_CLI_RUN_QUANTIZE(B) \
  template lowbit::PipelineReport run_quantize<B>(const lowbit::QuantSpec&, const QuantizeRun&);
extern LOWBIT_CLI_RUN_QUANTIZE(2) extern LOWBIT_CLI_RUN_QUANTIZE(3) extern LOWBIT_CLI_RUN_QUANTIZE(4)
extern LOWBIT_CLI_RUN_QUANTIZE(5) extern LOWBIT_CLI_RUN_QUANTIZE(6) extern LOWBIT_CLI_RUN_QUANTIZE(7)
extern LOWBIT_CLI_RUN_QUANTIZE(8)

}  // namespace lowbit_cli
