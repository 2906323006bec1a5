// Fuzz target: safetensors files (the header's JSON, dtypes, shapes, offsets, metadata); every tensor that
// parses is converted to float, so a wrong size or offset would read outside the map.
#include <lowbit/io/safetensors.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const lowbit_fuzz::MemFile f(data, size);
  lowbit_fuzz::expect_clean([&] {
    const lowbit::SafetensorsFile st(f.path());
    for (const auto& [name, t] : st.tensors()) {
      if (t.numel() > (1 << 22)) continue;  // a valid but large tensor: converting it tests nothing more
      const std::vector<float> v = st.floats(name);
      if (v.size() != std::size_t(t.numel())) std::abort();
    }
  });
  return 0;
}
