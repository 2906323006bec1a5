// Fuzz target: tokenizer files -- llama2.c tokenizer.bin (its vocabulary size from the input's first two
// bytes) and SentencePiece .vocab text -- then encoding and decoding a text with what they loaded (the
// merge heap sees the file's scores, NaN and infinities included).
#include <lowbit/data/tokenizer.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const int vocab = 1 + (data[0] | (data[1] << 8)) % 1024;
  const lowbit_fuzz::MemFile f(data + 2, size - 2);
  auto use = [](const lowbit::Tokenizer& t) {
    const std::vector<int> ids = t.encode("Once upon a time, Lily saw a \xe2\x80\x99 dog \xff\xfe.", true, true);
    for (int id : ids)
      if (id < 0 || std::size_t(id) >= t.vocab.size()) std::abort();  // every id must be a vocabulary entry
    (void)t.decode(ids);
  };
  lowbit_fuzz::expect_clean([&] { use(lowbit::Tokenizer::load_llama2c(f.path(), vocab)); });
  lowbit_fuzz::expect_clean([&] { use(lowbit::Tokenizer::load_sentencepiece_vocab(f.path())); });
  return 0;
}
