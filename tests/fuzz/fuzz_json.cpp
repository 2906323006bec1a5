// Fuzz target: the JSON reader (safetensors headers, config.json, indexes) and PaddleSlim jsonl calibration
// files ({"src", "tgt"} per line).
#include <lowbit/data/calibration.hpp>
#include <lowbit/io/json.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  lowbit_fuzz::expect_clean([&] { (void)lowbit::json::parse(text, "fuzz.json"); });
  lowbit_fuzz::expect_clean([&] { (void)lowbit::read_jsonl_texts(text, "fuzz.jsonl"); });
  return 0;
}
