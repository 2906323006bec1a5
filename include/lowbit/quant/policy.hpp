// lowbit/quant/policy.hpp -- the compile-time policies a quantizer is built from.
//
//   Quantizer<Bits<4>, PerGroup<128>, Asymmetric>              W4 g128, zero point
//   Quantizer<Bits<8>, PerChannel, Symmetric>                  W8 per output row
//   Quantizer<Bits<8>, PerToken, Symmetric>                    A8, one scale per activation row
//   Quantizer<Bits<3>, PerGroup<dynamic_group>, Asymmetric>    group size chosen at run time
//
// Only what changes the inner loop is a type: the bit width (qmax, packing) and the symmetry (whether a
// zero point exists).  The integer-grid convention (Grid, see grid.hpp), a run-time group size and the
// ragged-last-group opt-in are values held by the quantizer, because they only change per-group
// arithmetic, never the per-element loop.
#pragma once

#include <type_traits>

namespace lowbit {

template <int N>
struct Bits {
  static_assert(N >= 2 && N <= 8, "lowbit supports 2..8-bit integer codes");
  static constexpr int value = N;
};

struct Symmetric {};
struct Asymmetric {};

// Granularity.  `group` is the number of consecutive elements of a row that share one scale:
//   tensor_group  -> the whole tensor shares one scale and zero point,
//   row_group     -> one scale per row (an output channel of a [out, in] weight, or a token of a
//                    [tokens, hidden] activation),
//   dynamic_group -> a group size held by the quantizer at run time,
//   G > 0         -> G consecutive elements along the row (the input dimension of a weight).
constexpr int tensor_group = -3;
constexpr int row_group = -2;
constexpr int dynamic_group = -1;

struct PerTensor { static constexpr int group = tensor_group; };
struct PerChannel { static constexpr int group = row_group; };
struct PerToken { static constexpr int group = row_group; };
template <int G>
struct PerGroup {
  static_assert(G > 0 || G == dynamic_group, "PerGroup<G>: G must be positive or dynamic_group");
  static constexpr int group = G;
};

template <class T> struct is_bits : std::false_type {};
template <int N> struct is_bits<Bits<N>> : std::true_type {};
template <class T> struct is_symmetry
    : std::integral_constant<bool, std::is_same_v<T, Symmetric> || std::is_same_v<T, Asymmetric>> {};
template <class T> struct is_granularity : std::false_type {};
template <> struct is_granularity<PerTensor> : std::true_type {};
template <> struct is_granularity<PerChannel> : std::true_type {};
template <> struct is_granularity<PerToken> : std::true_type {};
template <int G> struct is_granularity<PerGroup<G>> : std::true_type {};

}  // namespace lowbit
