// lowbit/core/dtype.hpp -- element types of tensors stored in files, and conversion to float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "error.hpp"
#include "half.hpp"

namespace lowbit {

enum class DType { f32, f16, bf16, f64, i8, u8, i16, i32, i64, boolean };

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: return 4;
    case DType::f16: case DType::bf16: case DType::i16: return 2;
    case DType::f64: case DType::i64: return 8;
    case DType::i8: case DType::u8: case DType::boolean: return 1;
  }
  return 0;
}

// Names as safetensors writes them.
inline const char* to_string(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::f64: return "F64";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i16: return "I16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

inline bool parse_dtype(std::string_view s, DType& out) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i8, DType::u8, DType::i16, DType::i32,
                  DType::i64, DType::boolean})
    if (s == to_string(t)) return out = t, true;
  return false;
}

// Converts n little-endian elements of type t at src to float (exact for f16/bf16/f32 and small ints).
inline void convert_to_float(DType t, const void* src, std::size_t n, float* dst) {
  if (n == 0) return;  // an empty tensor: dst may be null, and memcpy(nullptr, ..., 0) is undefined
  const auto* p = static_cast<const std::uint8_t*>(src);
  switch (t) {
    case DType::f32: std::memcpy(dst, p, n * 4); return;
    case DType::f16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = half_bits_to_float(h);
      }
      return;
    case DType::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_bits_to_float(h);
      }
      return;
    case DType::f64:
      for (std::size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
    case DType::i32:
      for (std::size_t i = 0; i < n; ++i) {
        std::int32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::i64:
      for (std::size_t i = 0; i < n; ++i) {
        std::int64_t v;
        std::memcpy(&v, p + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::i16:
      for (std::size_t i = 0; i < n; ++i) {
        std::int16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        dst[i] = v;
      }
      return;
    case DType::i8: for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<std::int8_t>(p[i]); return;
    case DType::u8: case DType::boolean: for (std::size_t i = 0; i < n; ++i) dst[i] = p[i]; return;
  }
}

}  // namespace lowbit
