// lowbit/quant/spec.hpp -- QuantSpec, the run-time description users type, and visit(), the one bridge
// from it to the compiled Quantizer types.
//
// Spec strings (to_string(parse(s)) is canonical and round-trips):
//   w<B>a<A>[g<G>][-sym|-asym][-<grid>][-ragged]
//   "w4a16g128"        4-bit weights, groups of 128, asymmetric, minmax grid, activations unquantized
//   "w8a8"             8-bit per-channel weights, 8-bit per-token activations
//   "w3a16"            3-bit per-channel weights
//   "w4a16g32-sym-gptq-ragged"
// B and A are 2..8, or 16 for "not quantized"; no g (or g-1) means per output channel.
//
// visit(spec, f) instantiates Quantizer<Bits<2..8>, PerGroup<dynamic_group> | PerChannel, Symmetric |
// Asymmetric> -- 28 types -- and calls f with the one the spec names (visit_wbits + visit_layout<B>: the same,
// split by bit width).
#pragma once

#include <cctype>
#include <string>
#include <string_view>
#include <utility>

#include "quantizer.hpp"

namespace lowbit {

struct QuantSpec {
  int wbits = 16;             // 2..8, 16 = not quantized
  int abits = 16;             // 2..8, 16 = not quantized (activations: per token)
  int group_size = -1;        // > 0 per group, -1 per output channel
  bool symmetric = false;
  Grid grid = Grid::minmax;
  bool allow_ragged = false;  // shorter last group when group_size does not divide the row

  bool weight_quantized() const { return wbits != 16; }
  bool act_quantized() const { return abits != 16; }
  friend bool operator==(const QuantSpec& a, const QuantSpec& b) {
    return a.wbits == b.wbits && a.abits == b.abits && a.group_size == b.group_size && a.symmetric == b.symmetric &&
           a.grid == b.grid && a.allow_ragged == b.allow_ragged;
  }
};

// Throws lowbit::error naming the field when the spec is not one lowbit can run.
inline void validate(const QuantSpec& s) {
  auto bits_ok = [](int b) { return (b >= 2 && b <= 8) || b == 16; };
  if (!bits_ok(s.wbits)) fail("quant spec: wbits ", s.wbits, " is not supported (2..8, or 16 = not quantized)");
  if (!bits_ok(s.abits)) fail("quant spec: abits ", s.abits, " is not supported (2..8, or 16 = not quantized)");
  if (s.group_size == 0 || s.group_size < -1)
    fail("quant spec: group_size ", s.group_size, " is not supported (a positive size, or -1 = per channel)");
}

inline std::string to_string(const QuantSpec& s) {
  std::string out = "w" + std::to_string(s.wbits) + "a" + std::to_string(s.abits);
  if (s.group_size > 0) out += "g" + std::to_string(s.group_size);
  if (s.symmetric) out += "-sym";
  if (s.grid != Grid::minmax) out += std::string("-") + to_string(s.grid);
  if (s.allow_ragged) out += "-ragged";
  return out;
}

inline QuantSpec parse_spec(std::string_view text) {
  QuantSpec s;
  std::string t(text);
  for (auto& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::size_t i = 0;
  auto bad = [&](const std::string& why) -> void { fail("quant spec '", std::string(text), "': ", why); };
  auto number = [&](const char* field) {
    std::size_t j = i;
    if (j < t.size() && t[j] == '-') ++j;
    while (j < t.size() && std::isdigit(static_cast<unsigned char>(t[j]))) ++j;
    if (j == i || (t[i] == '-' && j == i + 1)) bad(std::string("expected a number for ") + field);
    if (j - i > 7) bad(std::string("the number for ") + field + " is out of range");
    const int v = std::stoi(t.substr(i, j - i));
    i = j;
    return v;
  };
  if (i >= t.size() || t[i] != 'w') bad("must start with w<bits>");
  ++i;
  s.wbits = number("wbits");
  if (i >= t.size() || t[i] != 'a') bad("expected a<bits> after the weight bits");
  ++i;
  s.abits = number("abits");
  if (i < t.size() && t[i] == 'g') {
    ++i;
    s.group_size = number("group_size");
  }
  while (i < t.size()) {
    if (t[i] != '-' && t[i] != '_') bad("unexpected '" + t.substr(i) + "'");
    ++i;
    std::size_t j = i;
    while (j < t.size() && t[j] != '-' && t[j] != '_') ++j;
    const std::string word = t.substr(i, j - i);
    i = j;
    if (word == "sym") s.symmetric = true;
    else if (word == "asym") s.symmetric = false;
    else if (word == "ragged") s.allow_ragged = true;
    else if (word == "minmax" || word == "gptq" || word == "omniquant" || word == "ggml") s.grid = parse_grid(word);
    else bad("unknown option '" + word + "' (sym, asym, ragged, minmax, gptq, omniquant, ggml)");
  }
  validate(s);
  return s;
}

namespace detail {
template <int B, int Last, class F>
decltype(auto) visit_bits(int bits, F&& f) {
  if constexpr (B == Last) {
    return f(std::integral_constant<int, B>{});
  } else {
    if (bits == B) return f(std::integral_constant<int, B>{});
    return visit_bits<B + 1, Last>(bits, std::forward<F>(f));
  }
}
inline void check_visitable(const QuantSpec& s) {
  validate(s);
  if (!s.weight_quantized()) fail("quant spec ", to_string(s), ": weights are not quantized (wbits 16)");
}
}  // namespace detail

// visit() in two halves, for a caller that compiles each bit width in a translation unit of its own (the
// command-line tool): visit_wbits(s, g) calls g(std::integral_constant<int, B>{}) for B = s.wbits, and
// visit_layout<B>(s, f) calls f with the quantizer of B bits that the rest of s names.
template <class G>
decltype(auto) visit_wbits(const QuantSpec& s, G&& g) {
  detail::check_visitable(s);
  return detail::visit_bits<2, 8>(s.wbits, std::forward<G>(g));
}

template <int B, class F>
decltype(auto) visit_layout(const QuantSpec& s, F&& f) {
  detail::check_visitable(s);
  if (s.wbits != B) fail("quant spec ", to_string(s), ": visited as ", B, " bits");
  using G = PerGroup<dynamic_group>;
  if (s.group_size > 0) {
    if (s.symmetric) return f(Quantizer<Bits<B>, G, Symmetric>(s.group_size, s.grid, s.allow_ragged));
    return f(Quantizer<Bits<B>, G, Asymmetric>(s.group_size, s.grid, s.allow_ragged));
  }
  if (s.symmetric) return f(Quantizer<Bits<B>, PerChannel, Symmetric>(s.grid));
  return f(Quantizer<Bits<B>, PerChannel, Asymmetric>(s.grid));
}

// Calls f(Quantizer<...>{...}) for the weight quantizer the spec names.  Every branch must return the same type.
template <class F>
decltype(auto) visit(const QuantSpec& s, F&& f) {
  return visit_wbits(s, [&](auto b) -> decltype(auto) { return visit_layout<decltype(b)::value>(s, f); });
}

}  // namespace lowbit
