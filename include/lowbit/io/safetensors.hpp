// lowbit/io/safetensors.hpp -- reading and writing Hugging Face safetensors files.
//
// Format (safetensors 0.x):
//   1. u64 little-endian N: the header size in bytes;
//   2. N bytes of UTF-8 JSON: { "<tensor name>": {"dtype": "F32"|"F16"|"BF16"|..., "shape": [d0, ...],
//      "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "value", ...} (optional) };
//   3. the data buffer; tensor bytes are [8 + N + begin, 8 + N + end), row-major, little-endian.
// The reader maps the file and views tensors in place.  It checks the header size against the file, the
// offsets against the buffer, and end - begin against dtype size x product(shape), and names the file and
// tensor in every error.  The writer goes through AtomicFile and aligns every tensor to 8 bytes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/parallel.hpp"
#include "atomic_file.hpp"
#include "json.hpp"
#include "mapped_file.hpp"

namespace lowbit {

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  const std::uint8_t* data = nullptr;
  std::size_t nbytes = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : file_(path) { parse(); }

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  const TensorInfo& at(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(path(), ": missing tensor '", name, "'");
    return it->second;
  }

  // The tensor as float32 (converted from F16/BF16/F64/ints), flattened.
  std::vector<float> floats(const std::string& name) const {
    const TensorInfo& t = at(name);
    std::vector<float> out(static_cast<std::size_t>(t.numel()));
    convert_to_float(t.dtype, t.data, out.size(), out.data());
    return out;
  }

  // A 2-D tensor (or a 1-D one as a single row) as a row-major float matrix.
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> matrix(const std::string& name) const {
    const TensorInfo& t = at(name);
    std::int64_t rows = 1, cols = 1;
    if (t.shape.size() == 1) cols = t.shape[0];
    else if (t.shape.size() == 2) rows = t.shape[0], cols = t.shape[1];
    else if (!t.shape.empty()) {  // fold leading dimensions into rows
      cols = t.shape.back();
      rows = t.numel() / std::max<std::int64_t>(cols, 1);
    }
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(rows, cols);
    convert_to_float(t.dtype, t.data, static_cast<std::size_t>(t.numel()), m.data());
    return m;
  }

  std::vector<std::int32_t> ints(const std::string& name) const {
    const TensorInfo& t = at(name);
    if (t.dtype != DType::i32) fail(path(), ": tensor '", name, "' is ", to_string(t.dtype), ", expected I32");
    std::vector<std::int32_t> out(static_cast<std::size_t>(t.numel()));
    if (t.nbytes) std::memcpy(out.data(), t.data, t.nbytes);
    return out;
  }

  std::vector<double> doubles(const std::string& name) const {
    const TensorInfo& t = at(name);
    if (t.dtype != DType::f64) fail(path(), ": tensor '", name, "' is ", to_string(t.dtype), ", expected F64");
    std::vector<double> out(static_cast<std::size_t>(t.numel()));
    if (t.nbytes) std::memcpy(out.data(), t.data, t.nbytes);
    return out;
  }

 private:
  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;

  void parse() {
    const std::size_t size = file_.size();
    if (size < 8) fail(path(), ": not a safetensors file (", size, " bytes, shorter than the 8-byte header size)");
    std::uint64_t n = 0;
    std::memcpy(&n, file_.data(), 8);
    if (n > size - 8) fail(path(), ": header size ", n, " exceeds the file (", size, " bytes): truncated or not safetensors");
    const json::Value h = json::parse(
        std::string_view(reinterpret_cast<const char*>(file_.data()) + 8, static_cast<std::size_t>(n)), path());
    if (!h.is_object()) fail(path(), ": header is not a JSON object");
    const std::uint8_t* base = file_.data() + 8 + n;
    const std::uint64_t buffer = size - 8 - n;
    for (const auto& [name, v] : h.obj) {
      if (name == "__metadata__") {
        for (const auto& [k, m] : v.obj)
          if (m.is_string()) metadata_[k] = m.str;
        continue;
      }
      const json::Value* dt = v.find("dtype");
      const json::Value* shape = v.find("shape");
      const json::Value* off = v.find("data_offsets");
      if (!v.is_object() || !dt || !dt->is_string() || !shape || !shape->is_array() || !off || !off->is_array() ||
          off->arr.size() != 2)
        fail(path(), ": tensor '", name, "': header entry needs dtype, shape and data_offsets [begin, end]");
      TensorInfo t;
      t.name = name;
      if (!parse_dtype(dt->str, t.dtype)) fail(path(), ": tensor '", name, "': unsupported dtype ", dt->str);
      std::uint64_t numel = 1;
      constexpr std::uint64_t kMaxNumel = std::uint64_t(1) << 50;
      for (const auto& d : shape->arr) {
        // range before any cast (a double outside int64's range, or NaN, is undefined behaviour to cast)
        if (!d.is_number() || !(d.num >= 0 && d.num <= double(kMaxNumel)) || d.num != std::floor(d.num))
          fail(path(), ": tensor '", name, "': invalid shape entry");
        const auto dim = static_cast<std::uint64_t>(d.num);
        if (dim != 0 && numel > kMaxNumel / dim) fail(path(), ": tensor '", name, "': shape too large");
        t.shape.push_back(static_cast<std::int64_t>(dim));
        numel *= dim;
      }
      const json::Value &jb = off->arr[0], &je = off->arr[1];
      if (!jb.is_number() || !je.is_number() || !(jb.num >= 0 && jb.num <= je.num && je.num <= double(buffer)) ||
          jb.num != std::floor(jb.num) || je.num != std::floor(je.num))
        fail(path(), ": tensor '", name, "': data_offsets [", jb.num, ", ", je.num, "] lie outside the ", buffer,
             "-byte data buffer or are not whole numbers (truncated file?)");
      const std::uint64_t begin = static_cast<std::uint64_t>(jb.num), end = static_cast<std::uint64_t>(je.num);
      if (end - begin != numel * dtype_size(t.dtype))
        fail(path(), ": tensor '", name, "': ", end - begin, " bytes for ", numel, " elements of ", to_string(t.dtype));
      t.data = base + begin;
      t.nbytes = static_cast<std::size_t>(end - begin);
      tensors_[name] = std::move(t);
    }
    // no two tensors may share bytes (a corrupt header would alias two weights)
    std::vector<const TensorInfo*> spans;
    for (const auto& [name, t] : tensors_)
      if (t.nbytes) spans.push_back(&t);
    std::sort(spans.begin(), spans.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->data < b->data; });
    for (std::size_t i = 1; i < spans.size(); ++i)
      if (spans[i - 1]->data + spans[i - 1]->nbytes > spans[i]->data)
        fail(path(), ": tensors '", spans[i - 1]->name, "' and '", spans[i]->name, "' overlap in the data buffer");
  }
};

// One tensor to write: raw little-endian bytes with dtype and shape.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
};

inline TensorToWrite tensor_f32(std::string name, std::vector<std::int64_t> shape, const float* data) {
  TensorToWrite t{std::move(name), DType::f32, std::move(shape), {}};
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  t.bytes.resize(static_cast<std::size_t>(n) * 4);
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

inline TensorToWrite tensor_f16(std::string name, std::vector<std::int64_t> shape, const float* data) {
  TensorToWrite t{std::move(name), DType::f16, std::move(shape), {}};
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  t.bytes.resize(static_cast<std::size_t>(n) * 2);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t h = float_to_half_bits(data[i]);
    std::memcpy(t.bytes.data() + 2 * i, &h, 2);
  }
  return t;
}

namespace detail {
inline std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else o += c;
  }
  return o;
}
}  // namespace detail

// A safetensors file written as a stream: the header (every tensor's name, dtype and shape, in file order) first,
// then each tensor's bytes in that order, so a model is written one block at a time.  Atomic: nothing is at
// `path` until commit().
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
  };
  SafetensorsWriter(const std::string& path, std::vector<Entry> entries, const std::map<std::string, std::string>& metadata = {})
      : f_(path), entries_(std::move(entries)) {
    std::string h = "{";
    bool first = true;
    if (!metadata.empty()) {
      h += "\"__metadata__\":{";
      for (auto it = metadata.begin(); it != metadata.end(); ++it)
        h += (it == metadata.begin() ? "\"" : ",\"") + detail::json_escape(it->first) + "\":\"" +
             detail::json_escape(it->second) + "\"";
      h += "}";
      first = false;
    }
    std::uint64_t offset = 0;
    for (const Entry& e : entries_) {
      offset = (offset + 7) / 8 * 8;
      std::uint64_t n = dtype_size(e.dtype);
      for (auto d : e.shape) n *= std::uint64_t(d);
      starts_.push_back(offset);
      sizes_.push_back(n);
      h += first ? "\"" : ",\"";
      first = false;
      h += detail::json_escape(e.name) + "\":{\"dtype\":\"" + to_string(e.dtype) + "\",\"shape\":[";
      for (std::size_t i = 0; i < e.shape.size(); ++i) h += (i ? "," : "") + std::to_string(e.shape[i]);
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n) + "]}";
      offset += n;
    }
    h += "}";
    while ((8 + h.size()) % 8 != 0) h += ' ';
    const std::uint64_t n = h.size();
    f_.write(&n, 8);
    f_.write(h.data(), h.size());
  }
  // The next tensor's bytes; its name must be the next entry's.
  void write(const std::string& name, const void* bytes, std::size_t n) {
    if (next_ >= entries_.size() || entries_[next_].name != name)
      fail(f_.path(), ": tensor '", name, "' written out of order (expected '",
           next_ < entries_.size() ? entries_[next_].name : std::string("none"), "')");
    if (n != sizes_[next_]) fail(f_.path(), ": tensor '", name, "' has ", n, " bytes, the header says ", sizes_[next_]);
    static const std::uint8_t zeros[8] = {};
    f_.write(zeros, static_cast<std::size_t>(starts_[next_] - pos_));
    f_.write(bytes, n);
    pos_ = starts_[next_] + n;
    ++next_;
  }
  // Writes float data converted to the entry's dtype (F32 or F16).
  void write_floats(const std::string& name, const float* data, std::size_t count) {
    if (next_ < entries_.size() && entries_[next_].dtype == DType::f16) {
      buf_.resize(count * 2);
      parallel_for_chunks(std::int64_t(count), 1 << 16, [&](std::int64_t c0, std::int64_t c1) {
        for (std::int64_t i = c0; i < c1; ++i) {
          const std::uint16_t h = float_to_half_bits(data[i]);
          std::memcpy(buf_.data() + 2 * i, &h, 2);
        }
      });
      write(name, buf_.data(), buf_.size());
    } else {
      write(name, data, count * 4);
    }
  }
  void commit() {
    if (next_ != entries_.size()) fail(f_.path(), ": ", entries_.size() - next_, " tensors were never written");
    f_.commit();
  }

 private:
  AtomicFile f_;
  std::vector<Entry> entries_;
  std::vector<std::uint64_t> starts_, sizes_;
  std::uint64_t pos_ = 0;
  std::size_t next_ = 0;
  std::vector<std::uint8_t> buf_;
};

// Writes the tensors (in the given order) atomically.
inline void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& t : tensors) entries.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(path, std::move(entries), metadata);
  for (const auto& t : tensors) w.write(t.name, t.bytes.data(), t.bytes.size());
  w.commit();
}

}  // namespace lowbit
