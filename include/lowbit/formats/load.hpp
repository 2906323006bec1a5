// lowbit/formats/load.hpp -- one entry point that picks the loader from what the path is.
//   a directory              -> Hugging Face folder (config.json + safetensors)
//   a file starting "GGUF"   -> GGUF v3
//   any other file           -> llama2.c checkpoint (legacy or ak42 v1/v2)
#pragma once

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <string>

#include "gguf.hpp"
#include "hf.hpp"
#include "llama2c.hpp"

namespace lowbit {

// `tables`: Tables::deferred leaves a Hugging Face model's embedding table and classifier in the mapped file
// (quantization); llama2.c and GGUF models load them resident either way.
inline Model load_model(const std::string& path, Tables tables = Tables::resident) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, ": no such file or directory");
  if (S_ISDIR(st.st_mode)) return load_hf(path, tables);
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file or a directory (a FIFO or device cannot be a model)");
  const MappedFile f(path);
  if (f.size() >= 4 && std::memcmp(f.data(), "GGUF", 4) == 0) return load_gguf(path).model;
  return load_llama2c(path);  // its errors say the file was read as llama2.c and why
}

}  // namespace lowbit
