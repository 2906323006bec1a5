// lowbit/io/json.hpp -- a small JSON reader for file headers (safetensors, config.json, GGUF-less HF folders).
//
// The library's headers need only Eigen, so the few JSON documents lowbit reads go through this
// ~150-line parser instead of an external one.  It accepts RFC 8259 JSON (numbers as double, strings
// with \uXXXX escapes incl. surrogate pairs), limits nesting to 64 levels, and throws lowbit::error with
// the byte offset and the document's name on malformed input.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace lowbit::json {

struct Value {
  enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<Value> arr;
  std::map<std::string, Value> obj;  // keys sorted; order of appearance is not kept

  bool is_object() const { return kind == Kind::object; }
  bool is_array() const { return kind == Kind::array; }
  bool is_string() const { return kind == Kind::string; }
  bool is_number() const { return kind == Kind::number; }
  const Value* find(const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &it->second;
  }
};

namespace detail {
class Parser {
 public:
  Parser(std::string_view text, std::string_view name) : t_(text), name_(name) {}

  Value document() {
    Value v = value(0);
    ws();
    if (i_ != t_.size()) error("trailing characters");
    return v;
  }

 private:
  std::string_view t_;
  std::string_view name_;
  std::size_t i_ = 0;

  [[noreturn]] void error(const char* what) { fail(name_, ": malformed JSON at byte ", i_, ": ", what); }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
  }
  char peek() { return i_ < t_.size() ? t_[i_] : '\0'; }
  void expect(char c) {
    if (peek() != c) error("unexpected character");
    ++i_;
  }
  void literal(std::string_view word) {
    if (t_.substr(i_, word.size()) != word) error("invalid literal");
    i_ += word.size();
  }

  Value value(int depth) {
    if (depth > 64) error("nesting deeper than 64");
    ws();
    Value v;
    switch (peek()) {
      case '{': {
        v.kind = Value::Kind::object;
        ++i_;
        ws();
        if (peek() == '}') { ++i_; return v; }
        for (;;) {
          ws();
          std::string key = string();
          ws();
          expect(':');
          if (v.obj.count(key)) error(("duplicate key \"" + key + "\"").c_str());
          v.obj[key] = value(depth + 1);
          ws();
          if (peek() == ',') { ++i_; continue; }
          expect('}');
          return v;
        }
      }
      case '[': {
        v.kind = Value::Kind::array;
        ++i_;
        ws();
        if (peek() == ']') { ++i_; return v; }
        for (;;) {
          v.arr.push_back(value(depth + 1));
          ws();
          if (peek() == ',') { ++i_; continue; }
          expect(']');
          return v;
        }
      }
      case '"': v.kind = Value::Kind::string; v.str = string(); return v;
      case 't': literal("true"); v.kind = Value::Kind::boolean; v.b = true; return v;
      case 'f': literal("false"); v.kind = Value::Kind::boolean; return v;
      case 'n': literal("null"); return v;
      default: v.kind = Value::Kind::number; v.num = number(); return v;
    }
  }

  double number() {
    const std::size_t start = i_;
    if (peek() == '-') ++i_;
    auto digits = [&] {
      const std::size_t s = i_;
      while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
      if (i_ == s) error("expected a digit");
    };
    digits();
    if (peek() == '.') { ++i_; digits(); }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      digits();
    }
    return std::strtod(std::string(t_.substr(start, i_ - start)).c_str(), nullptr);
  }

  unsigned hex4() {
    if (i_ + 4 > t_.size()) error("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = t_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else error("bad hex digit in \\u escape");
    }
    return v;
  }

  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
      out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
    else
      out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F)), out += char(0x80 | ((cp >> 6) & 0x3F)),
          out += char(0x80 | (cp & 0x3F));
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (i_ >= t_.size()) error("unterminated string");
      const char c = t_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') { out += c; continue; }
      if (i_ >= t_.size()) error("unterminated escape");
      const char e = t_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && t_.substr(i_, 2) == "\\u") {
            i_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) error("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default: error("unknown escape");
      }
    }
  }
};
}  // namespace detail

inline Value parse(std::string_view text, std::string_view name = "json") { return detail::Parser(text, name).document(); }

}  // namespace lowbit::json
