#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <lowbit/io/safetensors.hpp>
#include <string>
#include <vector>
#include "support/util.hpp"

using namespace lowbit;

namespace {
using lowbit_test::tmp_path;

void write_raw(const std::string& path, const std::string& header, const std::vector<std::uint8_t>& data) {
  std::ofstream f(path, std::ios::binary);
  const std::uint64_t n = header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
}
}  // namespace

TEST_CASE("safetensors round trip: F32, F16 and metadata", "[safetensors]") {
  const std::string p = tmp_path("roundtrip.safetensors");
  std::vector<float> a = {1.0f, -2.0f, 3.5f, 0.1f, 65504.0f, -0.0f};
  write_safetensors(p, {tensor_f32("a", {2, 3}, a.data()), tensor_f16("b", {6}, a.data())}, {{"format", "pt"}});
  SafetensorsFile f(p);
  REQUIRE(f.metadata().at("format") == "pt");
  auto m = f.matrix("a");
  REQUIRE(m.rows() == 2);
  REQUIRE(m.cols() == 3);
  for (int i = 0; i < 6; ++i) REQUIRE(m.data()[i] == a[i]);
  auto b = f.floats("b");
  for (int i = 0; i < 6; ++i) REQUIRE(b[i] == round_to_half(a[i]));
  REQUIRE(f.at("b").dtype == DType::f16);
  REQUIRE_THROWS_WITH(f.at("c"), Catch::Contains("missing tensor 'c'"));
  std::remove(p.c_str());
}

TEST_CASE("safetensors rejects truncated and inconsistent files, naming file and tensor", "[safetensors]") {
  const std::string p = tmp_path("bad.safetensors");
  {
    std::ofstream f(p, std::ios::binary);
    f << "abc";
  }
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("bad.safetensors") && Catch::Contains("shorter"));
  {
    std::ofstream f(p, std::ios::binary);
    const std::uint64_t n = 1000;
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << "{}";
  }
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("exceeds the file"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", std::vector<std::uint8_t>(8));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("'w'") && Catch::Contains("outside"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", std::vector<std::uint8_t>(16));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("'w'") && Catch::Contains("16 bytes for 6 elements"));
  write_raw(p, R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})", std::vector<std::uint8_t>(1));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("unsupported dtype Q4"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", std::vector<std::uint8_t>(8));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("malformed JSON"));
  // issue 8: overlapping, fractional, NaN-like and huge offsets or shapes, duplicate names
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::vector<std::uint8_t>(12));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("'a' and 'b' overlap"));
  write_raw(p, R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0.5,2.5]}})", std::vector<std::uint8_t>(4));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("'w'") && Catch::Contains("not whole numbers"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[1e300,2],"data_offsets":[0,8]}})", std::vector<std::uint8_t>(8));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("invalid shape entry"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[1125899906842624,1125899906842624],"data_offsets":[0,8]}})",
            std::vector<std::uint8_t>(8));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("shape too large"));
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
            std::vector<std::uint8_t>(8));
  REQUIRE_THROWS_WITH(SafetensorsFile(p), Catch::Contains("duplicate key \"w\""));
  std::remove(p.c_str());
}

TEST_CASE("AtomicFile leaves nothing behind when not committed", "[safetensors]") {
  const std::string p = tmp_path("atomic.bin");
  std::remove(p.c_str());
  {
    AtomicFile f(p);
    f.write("abc", 3);
  }
  REQUIRE_FALSE(std::ifstream(p).good());
  {
    AtomicFile f(p);
    f.write("abc", 3);
    f.commit();
  }
  REQUIRE(std::ifstream(p).good());
  std::remove(p.c_str());
}
