// Fuzz target: llama2.c checkpoints (legacy, ak42 v1 float32, ak42 v2 Q8_0) through load_model(), the path a
// user's .bin takes; a model that loads is run forward on a few tokens (its sizes came from the file).
#include <lowbit/formats/load.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const lowbit_fuzz::MemFile f(data, size);
  lowbit_fuzz::expect_clean([&] {
    const lowbit::Model m = lowbit::load_llama2c(f.path());
    const std::vector<int> tokens = {0, m.cfg.vocab_size - 1};
    (void)lowbit::forward(m, tokens, 2);
  });
  return 0;
}
