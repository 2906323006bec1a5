// lowbit/io/gguf.hpp -- GGUF v3 files: a reader (memory-mapped, validated) and a writer (atomic).
//
// Layout (all little-endian; "string" = u64 byte length + bytes, no terminator):
//   1. magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 kv_count;
//   2. kv_count pairs: string key, u32 value type, value.  Types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32,
//      6 f32, 7 bool (u8), 8 string, 9 array (u32 element type, u64 count, elements), 10 u64, 11 i64, 12 f64;
//   3. tensor_count infos: string name, u32 n_dims, u64 ne[n_dims] (ne[0] is the innermost, contiguous
//      dimension: a row-major [rows, cols] matrix has ne = {cols, rows}), u32 ggml type, u64 offset;
//   4. padding to `general.alignment` (u32, default 32), then the data section; a tensor's bytes start at
//      data_start + offset (offsets are multiples of the alignment).
// ggml types read here: 0 F32, 1 F16, 30 BF16, and the block types 2 Q4_0, 3 Q4_1, 8 Q8_0 (pack/ggml.hpp).
// The reader checks every length and offset against the file and names the file, key or tensor in errors.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "atomic_file.hpp"
#include "mapped_file.hpp"

namespace lowbit {

struct GgufValue {
  enum Type : std::uint32_t { u8 = 0, i8, u16, i16, u32, i32, f32, boolean, string, array, u64, i64, f64 };
  Type type = u32;
  double num = 0;                // every numeric and bool value
  std::string str;               // string
  Type elem = u32;               // array element type
  std::vector<double> nums;      // numeric arrays
  std::vector<std::string> strs; // string arrays
};

struct GgufTensor {
  std::string name;
  std::uint32_t ggml_type = 0;
  std::vector<std::uint64_t> ne;  // innermost first
  const std::uint8_t* data = nullptr;
  std::uint64_t nbytes = 0;
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
};

// ggml's type names (ggml.h enum ggml_type), for messages.
inline std::string ggml_type_name(std::uint32_t t) {
  static const char* const names[] = {"F32",    "F16",   "Q4_0",    "Q4_1",   "type 4", "type 5", "Q5_0",   "Q5_1",
                                      "Q8_0",   "Q8_1",  "Q2_K",    "Q3_K",   "Q4_K",   "Q5_K",   "Q6_K",   "Q8_K",
                                      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",  "IQ2_S",  "IQ4_XS",
                                      "I8",     "I16",   "I32",     "I64",    "F64",    "IQ1_M",  "BF16"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown type " + std::to_string(t);
}

// ggml.h enum ggml_type values of the types lowbit writes.
enum class GgmlType : std::uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, q4_k = 12, q6_k = 14 };

constexpr std::int64_t kGgmlBlock = 32;   // QK4_0 = QK4_1 = QK8_0
constexpr std::int64_t kGgmlSuper = 256;  // QK_K: the K-quants' super-blocks

inline const char* to_string(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return "f32";
    case GgmlType::f16: return "f16";
    case GgmlType::q4_0: return "q4_0";
    case GgmlType::q4_1: return "q4_1";
    case GgmlType::q8_0: return "q8_0";
    case GgmlType::q4_k: return "q4_k";
    case GgmlType::q6_k: return "q6_k";
  }
  return "?";
}

inline GgmlType parse_ggml_type(std::string_view s) {
  for (GgmlType t : {GgmlType::f32, GgmlType::f16, GgmlType::q4_0, GgmlType::q4_1, GgmlType::q8_0, GgmlType::q4_k, GgmlType::q6_k})
    if (s == to_string(t)) return t;
  fail("unknown GGUF tensor type '", std::string(s), "' (expected q4_0, q4_1, q8_0, q4_k, q6_k, f16 or f32)");
}

inline bool is_k_type(GgmlType t) { return t == GgmlType::q4_k || t == GgmlType::q6_k; }
inline bool is_block_type(GgmlType t) {
  return t == GgmlType::q4_0 || t == GgmlType::q4_1 || t == GgmlType::q8_0 || is_k_type(t);
}
// Elements per block: 32 (Q4_0 / Q4_1 / Q8_0), 256 (K-quants), 1 (f32, f16).
inline std::int64_t ggml_block_elems(GgmlType t) { return is_k_type(t) ? kGgmlSuper : is_block_type(t) ? kGgmlBlock : 1; }

// Bytes of one block (block types) or of one element (f32, f16) -- ggml-common.h's structs.
inline std::size_t ggml_unit_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return 4;
    case GgmlType::f16: return 2;
    case GgmlType::q4_0: return 18;
    case GgmlType::q4_1: return 20;
    case GgmlType::q8_0: return 34;
    case GgmlType::q4_k: return 144;  // fp16 d, dmin; 12 bytes of 6-bit scales / mins; 128 bytes of nibbles
    case GgmlType::q6_k: return 210;  // 128 bytes low nibbles, 64 high 2-bit pairs, 16 int8 scales, fp16 d
  }
  return 0;
}

// Bytes of a row of n elements; a block type needs n to be a multiple of its block.
inline std::size_t ggml_row_bytes(GgmlType t, std::int64_t n) {
  if (!is_block_type(t)) return std::size_t(n) * ggml_unit_bytes(t);
  const std::int64_t b = ggml_block_elems(t);
  if (n % b) fail("ggml ", to_string(t), ": a row of ", n, " elements is not a whole number of blocks of ", b);
  return std::size_t(n / b) * ggml_unit_bytes(t);
}

inline bool ggml_type_to_dtype(std::uint32_t t, DType& d) {
  if (t == 0) return d = DType::f32, true;
  if (t == 1) return d = DType::f16, true;
  if (t == 30) return d = DType::bf16, true;
  return false;
}

class GgufFile {
 public:
  explicit GgufFile(const std::string& path) : file_(path) { parse(); }
  const std::string& path() const { return file_.path(); }
  const std::map<std::string, GgufValue>& kv() const { return kv_; }
  const std::map<std::string, GgufTensor>& tensors() const { return tensors_; }
  std::uint32_t version() const { return version_; }

  const GgufValue* find(const std::string& key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
  }
  const GgufValue& at(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) fail(path(), ": missing metadata key '", key, "'");
    return *v;
  }
  const GgufTensor& tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(path(), ": missing tensor '", name, "'");
    return it->second;
  }
  bool has_tensor(const std::string& name) const { return tensors_.count(name) != 0; }

 private:
  MappedFile file_;
  std::size_t pos_ = 0;
  std::uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::map<std::string, GgufTensor> tensors_;

  void need(std::uint64_t n, const char* what) {
    if (n > file_.size() - pos_) fail(path(), ": truncated while reading ", what, " at offset ", pos_);
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, file_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const std::uint64_t n = get<std::uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(file_.data() + pos_), std::size_t(n));
    pos_ += std::size_t(n);
    return s;
  }
  double scalar(std::uint32_t t, const std::string& key) {
    switch (t) {
      case GgufValue::u8: return get<std::uint8_t>(key.c_str());
      case GgufValue::i8: return get<std::int8_t>(key.c_str());
      case GgufValue::u16: return get<std::uint16_t>(key.c_str());
      case GgufValue::i16: return get<std::int16_t>(key.c_str());
      case GgufValue::u32: return get<std::uint32_t>(key.c_str());
      case GgufValue::i32: return get<std::int32_t>(key.c_str());
      case GgufValue::f32: return get<float>(key.c_str());
      case GgufValue::boolean: return get<std::uint8_t>(key.c_str());
      case GgufValue::u64: return double(get<std::uint64_t>(key.c_str()));
      case GgufValue::i64: return double(get<std::int64_t>(key.c_str()));
      case GgufValue::f64: return get<double>(key.c_str());
    }
    fail(path(), ": metadata '", key, "' has unknown value type ", t);
  }

  void parse() {
    if (file_.size() < 24 || std::memcmp(file_.data(), "GGUF", 4) != 0) fail(path(), ": not a GGUF file (bad magic)");
    pos_ = 4;
    version_ = get<std::uint32_t>("version");
    if (version_ != 2 && version_ != 3) fail(path(), ": GGUF version ", version_, " is not supported (2, 3)");
    const std::uint64_t n_tensors = get<std::uint64_t>("tensor count"), n_kv = get<std::uint64_t>("kv count");
    if (n_tensors > (1u << 24) || n_kv > (1u << 24)) fail(path(), ": implausible tensor/kv counts (corrupt header)");
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      const std::string key = str("metadata key");
      GgufValue v;
      v.type = static_cast<GgufValue::Type>(get<std::uint32_t>(key.c_str()));
      if (v.type == GgufValue::string) {
        v.str = str(key.c_str());
      } else if (v.type == GgufValue::array) {
        v.elem = static_cast<GgufValue::Type>(get<std::uint32_t>(key.c_str()));
        const std::uint64_t n = get<std::uint64_t>(key.c_str());
        if (n > file_.size()) fail(path(), ": metadata '", key, "' claims ", n, " elements (corrupt)");
        if (v.elem == GgufValue::array) fail(path(), ": metadata '", key, "': nested arrays are not supported");
        for (std::uint64_t k = 0; k < n; ++k) {
          if (v.elem == GgufValue::string) v.strs.push_back(str(key.c_str()));
          else v.nums.push_back(scalar(v.elem, key));
        }
      } else {
        v.num = scalar(v.type, key);
      }
      if (!kv_.emplace(key, std::move(v)).second) fail(path(), ": metadata key '", key, "' appears twice");
    }
    std::vector<GgufTensor> infos;
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensor t;
      t.name = str("tensor name");
      const std::uint32_t nd = get<std::uint32_t>(t.name.c_str());
      if (nd == 0 || nd > 4) fail(path(), ": tensor '", t.name, "' has ", nd, " dimensions");
      for (std::uint32_t d = 0; d < nd; ++d) t.ne.push_back(get<std::uint64_t>(t.name.c_str()));
      t.ggml_type = get<std::uint32_t>(t.name.c_str());
      const std::uint64_t off = get<std::uint64_t>(t.name.c_str());
      t.nbytes = off;  // offset for now
      infos.push_back(std::move(t));
    }
    std::uint64_t align = 32;
    if (const GgufValue* a = find("general.alignment")) {
      if (!(a->num >= 1 && a->num <= 65536) || a->num != double(std::uint64_t(a->num)))
        fail(path(), ": general.alignment ", a->num, " is not a power of two in [1, 65536]");
      align = std::uint64_t(a->num);
      if ((align & (align - 1)) != 0) fail(path(), ": general.alignment ", align, " is not a power of two");
    }
    const std::uint64_t data_start = (pos_ + align - 1) / align * align;
    if (data_start > file_.size()) fail(path(), ": truncated before the data section");
    for (GgufTensor& t : infos) {
      const std::uint64_t off = t.nbytes;
      DType d;
      std::uint64_t numel = 1;
      for (auto e : t.ne) {  // the product stays <= 2^40: no overflow below
        if (e == 0 || e > (1ull << 40) / numel) fail(path(), ": tensor '", t.name, "' has an invalid shape");
        numel *= e;
      }
      if (off % align != 0) fail(path(), ": tensor '", t.name, "' at offset ", off, " is not aligned to ", align);
      t.nbytes = 0;  // an unknown type: the loader refuses it by name
      if (ggml_type_to_dtype(t.ggml_type, d)) {
        t.nbytes = numel * dtype_size(d);
      } else if (is_block_type(GgmlType(t.ggml_type))) {
        const std::uint64_t be = std::uint64_t(ggml_block_elems(GgmlType(t.ggml_type)));
        if (t.ne[0] % be)
          fail(path(), ": tensor '", t.name, "' of type ", ggml_type_name(t.ggml_type), " has rows of ", t.ne[0],
               " elements, not a whole number of blocks of ", be);
        t.nbytes = numel / be * ggml_unit_bytes(GgmlType(t.ggml_type));
      }
      if (off > file_.size() - data_start || t.nbytes > file_.size() - data_start - off)
        fail(path(), ": tensor '", t.name, "' at offset ", off, " (", t.nbytes, " bytes) lies outside the file (truncated?)");
      t.data = file_.data() + data_start + off;
      const std::string name = t.name;
      if (!tensors_.emplace(name, std::move(t)).second) fail(path(), ": tensor '", name, "' appears twice");
    }
    // tensors of a known type must not overlap (a corrupt index would alias two weights)
    std::vector<std::pair<const std::uint8_t*, const GgufTensor*>> spans;
    for (const auto& [name, t] : tensors_)
      if (t.nbytes) spans.push_back({t.data, &t});
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
      if (spans[i - 1].first + spans[i - 1].second->nbytes > spans[i].first)
        fail(path(), ": tensors '", spans[i - 1].second->name, "' and '", spans[i].second->name, "' overlap");
  }
};

// ---- writer ---------------------------------------------------------------------------------------------

struct GgufWriter {
  std::vector<std::uint8_t> kv_bytes;
  std::uint64_t n_kv = 0;
  struct Tensor {
    std::string name;
    std::vector<std::uint64_t> ne;
    std::uint32_t type;
    std::vector<std::uint8_t> bytes;
  };
  std::vector<Tensor> tensors;

  template <class T>
  static void put(std::vector<std::uint8_t>& b, T v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  static void put_str(std::vector<std::uint8_t>& b, const std::string& s) {
    put<std::uint64_t>(b, s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void key(const std::string& k, GgufValue::Type t) {
    put_str(kv_bytes, k);
    put<std::uint32_t>(kv_bytes, t);
    ++n_kv;
  }
  void add_u32(const std::string& k, std::uint32_t v) { key(k, GgufValue::u32), put(kv_bytes, v); }
  void add_f32(const std::string& k, float v) { key(k, GgufValue::f32), put(kv_bytes, v); }
  void add_string(const std::string& k, const std::string& v) { key(k, GgufValue::string), put_str(kv_bytes, v); }
  void add_strings(const std::string& k, const std::vector<std::string>& v) {
    key(k, GgufValue::array);
    put<std::uint32_t>(kv_bytes, GgufValue::string);
    put<std::uint64_t>(kv_bytes, v.size());
    for (const auto& s : v) put_str(kv_bytes, s);
  }
  void add_f32s(const std::string& k, const std::vector<float>& v) {
    key(k, GgufValue::array);
    put<std::uint32_t>(kv_bytes, GgufValue::f32);
    put<std::uint64_t>(kv_bytes, v.size());
    for (float x : v) put(kv_bytes, x);
  }
  void add_i32s(const std::string& k, const std::vector<std::int32_t>& v) {
    key(k, GgufValue::array);
    put<std::uint32_t>(kv_bytes, GgufValue::i32);
    put<std::uint64_t>(kv_bytes, v.size());
    for (auto x : v) put(kv_bytes, x);
  }
  // A row-major [rows, cols] float matrix (rows = 1 for a vector) stored as F32 (type 0) or F16 (type 1).
  void add_tensor(const std::string& name, const float* data, std::uint64_t rows, std::uint64_t cols, bool f16) {
    Tensor t{name, rows == 1 ? std::vector<std::uint64_t>{cols} : std::vector<std::uint64_t>{cols, rows}, f16 ? 1u : 0u, {}};
    const std::uint64_t n = rows * cols;
    t.bytes.resize(std::size_t(n * (f16 ? 2 : 4)));
    for (std::uint64_t i = 0; i < n; ++i) {
      if (f16) {
        const std::uint16_t h = float_to_half_bits(data[i]);
        std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      } else {
        std::memcpy(t.bytes.data() + 4 * i, data + i, 4);
      }
    }
    tensors.push_back(std::move(t));
  }

  void write(const std::string& path) const;
};

// A GGUF file written front to back: the header (metadata and every tensor's name, shape, type and size) first,
// then each tensor's bytes in the order of the header -- so a model is written a block at a time, never held
// whole.  Atomic (io/atomic_file.hpp): until commit() the file exists only under a temporary name.
class GgufStream {
 public:
  struct Info {
    std::string name;
    std::vector<std::uint64_t> ne;  // innermost first
    std::uint32_t type;
    std::uint64_t nbytes;
  };
  static constexpr std::uint64_t kAlign = 32;  // general.alignment's default

  GgufStream(const std::string& path, const GgufWriter& kv, std::vector<Info> infos) : f_(path), infos_(std::move(infos)) {
    std::vector<std::uint8_t> head;
    head.insert(head.end(), {'G', 'G', 'U', 'F'});
    GgufWriter::put<std::uint32_t>(head, 3);
    GgufWriter::put<std::uint64_t>(head, infos_.size());
    GgufWriter::put<std::uint64_t>(head, kv.n_kv);
    head.insert(head.end(), kv.kv_bytes.begin(), kv.kv_bytes.end());
    std::uint64_t off = 0;
    for (const Info& t : infos_) {
      GgufWriter::put_str(head, t.name);
      GgufWriter::put<std::uint32_t>(head, std::uint32_t(t.ne.size()));
      for (auto e : t.ne) GgufWriter::put<std::uint64_t>(head, e);
      GgufWriter::put<std::uint32_t>(head, t.type);
      GgufWriter::put<std::uint64_t>(head, off);
      offs_.push_back(off);
      off = (off + t.nbytes + kAlign - 1) / kAlign * kAlign;
    }
    head.resize((head.size() + kAlign - 1) / kAlign * kAlign, 0);
    f_.write(head.data(), head.size());
  }
  const std::string& path() const { return f_.path(); }
  // The next tensor's bytes: the header's next name, in pieces adding up to its size.
  void write(const std::string& name, const void* data, std::size_t n) {
    if (next_ >= infos_.size() || infos_[next_].name != name)
      fail(f_.path(), ": tensor '", name, "' written out of order (expected '",
           next_ < infos_.size() ? infos_[next_].name : std::string("none: all are written"), "')");
    const Info& t = infos_[next_];
    if (written_ == 0) {  // padding up to its offset
      static const std::uint8_t zeros[kAlign] = {};
      f_.write(zeros, std::size_t(offs_[next_] - pos_));
      pos_ = offs_[next_];
    }
    if (written_ + n > t.nbytes) fail(f_.path(), ": tensor '", name, "' gets more than its ", t.nbytes, " bytes");
    f_.write(data, n);
    written_ += n, pos_ += n;
    if (written_ == t.nbytes) ++next_, written_ = 0;
  }
  void commit() {
    if (next_ != infos_.size())
      fail(f_.path(), ": ", infos_.size() - next_, " tensors were never written (the next is '", infos_[next_].name, "')");
    f_.commit();
  }

 private:
  AtomicFile f_;
  std::vector<Info> infos_;
  std::vector<std::uint64_t> offs_;
  std::size_t next_ = 0;
  std::uint64_t written_ = 0, pos_ = 0;
};

inline void GgufWriter::write(const std::string& path) const {
  std::vector<GgufStream::Info> infos;
  for (const auto& t : tensors) infos.push_back({t.name, t.ne, t.type, t.bytes.size()});
  GgufStream f(path, *this, std::move(infos));
  for (const auto& t : tensors) f.write(t.name, t.bytes.data(), t.bytes.size());
  f.commit();
}

}  // namespace lowbit
