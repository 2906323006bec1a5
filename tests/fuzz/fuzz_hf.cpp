// Fuzz target: Hugging Face folders.  The input is split at its first NUL byte: the part before is
// config.json, the part after is model.safetensors.index.json (absent when there is no NUL); the folder also
// holds the two shards of the seed model (tests/fuzz/make_seeds.cpp writes them beside the corpus: the target
// reads them from $LOWBIT_FUZZ_SHARDS, else uses none).  A model that loads is run forward.
#include <lowbit/formats/hf.hpp>

#include <cstring>

#include "fuzz_support.hpp"

namespace {
// The seed model's shards, copied into the scratch folder once.
void copy_shards(const std::string& dir) {
  static bool done = false;
  if (done) return;
  done = true;
  const char* src = std::getenv("LOWBIT_FUZZ_SHARDS");
  if (!src) return;
  for (const char* name : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors"}) {
    std::FILE* in = std::fopen((std::string(src) + "/" + name).c_str(), "rb");
    if (!in) continue;
    std::string bytes;
    char buf[65536];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, in)) > 0;) bytes.append(buf, n);
    std::fclose(in);
    lowbit_fuzz::write_file(dir + "/" + name, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& dir = lowbit_fuzz::scratch_dir();
  copy_shards(dir);
  const std::uint8_t* nul = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
  const std::size_t cfg_n = nul ? std::size_t(nul - data) : size;
  lowbit_fuzz::write_file(dir + "/config.json", data, cfg_n);
  const std::string index = dir + "/model.safetensors.index.json";
  if (nul) lowbit_fuzz::write_file(index, nul + 1, size - cfg_n - 1);
  else std::remove(index.c_str());
  for (lowbit::Tables t : {lowbit::Tables::resident, lowbit::Tables::deferred})
    lowbit_fuzz::expect_clean([&] {
      lowbit::Model m = lowbit::load_hf(dir, t);
      if (t == lowbit::Tables::deferred) return (void)lowbit::embed(m, {0});
      m.make_resident();
      (void)lowbit::forward(m, {0, m.cfg.vocab_size - 1}, 2);
    });
  return 0;
}
