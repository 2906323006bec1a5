// Fuzz target: GGUF files -- the container (metadata of every type, arrays, tensor infos, alignment) and the
// LLaMA model and tokenizer read from it (tokenizer.ggml.*); a model that loads encodes a text and runs forward.
#include <lowbit/formats/gguf.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const lowbit_fuzz::MemFile f(data, size);
  lowbit_fuzz::expect_clean([&] {
    const lowbit::GgufFile g(f.path());  // the container alone: files that are no LLaMA model still parse here
    (void)g.kv().size();
  });
  lowbit_fuzz::expect_clean([&] {
    lowbit::GgufModel gm = lowbit::load_gguf(f.path());
    gm.model.make_resident();
    std::vector<int> tokens = {0, gm.model.cfg.vocab_size - 1};
    if (gm.has_tokenizer) {
      const std::vector<int> enc = gm.tokenizer.encode("Once upon a time, \xc3\xa9 \xf0\x9f\x99\x82 <0x41>", true);
      for (int id : enc)
        if (id < 0 || id >= gm.model.cfg.vocab_size) std::abort();  // an id the model cannot embed
      (void)gm.tokenizer.decode(enc);
    }
    (void)lowbit::forward(gm.model, tokens, 2);
  });
  return 0;
}
