#include <catch2/catch.hpp>
#include <lowbit/pack/bitpack.hpp>
#include <random>
#include <vector>

using namespace lowbit;

namespace {
// Independent reference: set stream bit i*b + k from bit k of code i, one bit at a time.
std::vector<std::uint8_t> naive_pack(const std::vector<std::uint8_t>& codes, int bits) {
  std::vector<std::uint8_t> out(packed_bytes(codes.size(), bits), 0);
  for (std::size_t i = 0; i < codes.size(); ++i)
    for (int k = 0; k < bits; ++k)
      if ((codes[i] >> k) & 1) {
        const std::size_t bit = i * std::size_t(bits) + std::size_t(k);
        out[bit / 8] |= std::uint8_t(1u << (bit % 8));
      }
  return out;
}
}  // namespace

TEST_CASE("pack/unpack round-trips every width and length, and the layout matches the naive bit stream", "[pack]") {
  std::mt19937 rng(42);
  for (int bits : {2, 3, 4, 5, 6, 7, 8})
    for (std::size_t n : {0, 1, 2, 3, 7, 8, 9, 10, 11, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4095}) {
      std::vector<std::uint8_t> codes(n);
      for (auto& c : codes) c = std::uint8_t(rng() & ((1u << bits) - 1));
      if (n) codes.back() = std::uint8_t((1u << bits) - 1);
      std::vector<std::uint8_t> bytes(packed_bytes(n, bits)), back(n);
      pack_bits(codes.data(), n, bits, bytes.data());
      REQUIRE(bytes == naive_pack(codes, bits));
      unpack_bits(bytes.data(), n, bits, back.data());
      REQUIRE(back == codes);
      std::vector<std::uint32_t> words(packed_words(n, bits));
      pack_bits32(codes.data(), n, bits, words.data());
      // word k is stream bits [32k, 32k+32): the naive bytes read little-endian
      std::vector<std::uint8_t> ref = naive_pack(codes, bits);
      ref.resize(words.size() * 4, 0);
      for (std::size_t k = 0; k < words.size(); ++k)
        REQUIRE(words[k] == (std::uint32_t(ref[4 * k]) | std::uint32_t(ref[4 * k + 1]) << 8 |
                             std::uint32_t(ref[4 * k + 2]) << 16 | std::uint32_t(ref[4 * k + 3]) << 24));
      std::fill(back.begin(), back.end(), 0);
      unpack_bits32(words.data(), n, bits, back.data());
      REQUIRE(back == codes);
    }
}

TEST_CASE("hand-computed packings", "[pack]") {
  const std::uint8_t c4[] = {1, 2, 3, 4, 15};
  std::uint8_t b4[3];
  pack_bits(c4, 5, 4, b4);
  REQUIRE(b4[0] == 0x21);
  REQUIRE(b4[1] == 0x43);
  REQUIRE(b4[2] == 0x0F);
  // 3 bit: 32 codes fill exactly 3 words; code 10 straddles words 0 and 1 (GPTQ's 3-bit layout)
  std::vector<std::uint8_t> c3(32, 0);
  c3[10] = 0b101;
  std::uint32_t w3[3];
  pack_bits32(c3.data(), 32, 3, w3);
  REQUIRE(w3[0] == (1u << 30));
  REQUIRE(w3[1] == 1u);
  REQUIRE(w3[2] == 0u);
  const std::uint8_t c2[] = {3, 0, 1, 2};
  std::uint8_t b2;
  pack_bits(c2, 4, 2, &b2);
  REQUIRE(b2 == 0b10010011);
}

TEST_CASE("codes that do not fit are an error naming the index", "[pack]") {
  const std::uint8_t c[] = {1, 2, 9};
  std::uint8_t out[2];
  REQUIRE_THROWS_WITH(pack_bits(c, 3, 3, out), Catch::Contains("code 9 at index 2"));
  REQUIRE_THROWS_WITH(pack_bits(c, 3, 9, out), Catch::Contains("width 9"));
}
