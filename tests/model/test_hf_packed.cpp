// AutoAWQ GEMM and GPTQ checkpoints (pack/autoawq.hpp, pack/gptq.hpp, formats/hf_packed.hpp).  The packed tensors
// are read back by a reader written here from the layouts' definitions (bit by bit, AWQ's order and GPTQ's v1
// offset spelled out again), and dequantized: they must equal the method's own quantized weights with the
// scales rounded to fp16 -- bit for bit -- in Hugging Face's row order.  Words are also checked against values
// worked out by hand.
#include <catch2/catch.hpp>
#include <cstdio>
#include <lowbit/lowbit.hpp>
#include <sys/stat.h>

#include "support/shared_data.hpp"
#include "support/util.hpp"

using namespace lowbit;

namespace {

// The test's reader: codes [out, in], zeros and fp16 scales [out, G] of one packed linear.
struct Unpacked {
  Eigen::MatrixXi q, z;
  Eigen::MatrixXf s;
  std::vector<int> g_idx;
  MatrixRM dequantize() const {
    MatrixRM W(q.rows(), q.cols());
    for (Eigen::Index n = 0; n < q.rows(); ++n)
      for (Eigen::Index k = 0; k < q.cols(); ++k) {
        const int g = g_idx[std::size_t(k)];
        W(n, k) = float(q(n, k) - z(n, g)) * s(n, g);
      }
    return W;
  }
};

std::uint32_t word(const TensorInfo& t, std::int64_t i) {
  std::uint32_t w;
  std::memcpy(&w, t.data + 4 * i, 4);
  return w;
}
float half_at(const TensorInfo& t, std::int64_t i) {
  std::uint16_t h;
  std::memcpy(&h, t.data + 2 * i, 2);
  return half_bits_to_float(h);
}
const TensorInfo& tensor(const SafetensorsFile& f, const std::string& name, DType dt, std::vector<std::int64_t> shape) {
  INFO(name);
  REQUIRE(f.contains(name));
  const TensorInfo& t = f.at(name);
  REQUIRE(t.dtype == dt);
  REQUIRE(t.shape == shape);
  return t;
}

// AutoAWQ GEMM: int32 (k, j) holds rows j*8 + [0, 2, 4, 6, 1, 3, 5, 7][i] at bits 4i; zeros as they are.
Unpacked read_awq(const SafetensorsFile& f, const std::string& p, std::int64_t out, std::int64_t in, std::int64_t G) {
  const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  const TensorInfo& qw = tensor(f, p + ".qweight", DType::i32, {in, out / 8});
  const TensorInfo& qz = tensor(f, p + ".qzeros", DType::i32, {G, out / 8});
  const TensorInfo& sc = tensor(f, p + ".scales", DType::f16, {G, out});
  Unpacked u{Eigen::MatrixXi(out, in), Eigen::MatrixXi(out, G), Eigen::MatrixXf(out, G), {}};
  for (std::int64_t k = 0; k < in; ++k)
    for (std::int64_t j = 0; j < out / 8; ++j)
      for (int i = 0; i < 8; ++i) u.q(j * 8 + order[i], k) = int((word(qw, k * (out / 8) + j) >> (4 * i)) & 15u);
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t j = 0; j < out / 8; ++j)
      for (int i = 0; i < 8; ++i) u.z(j * 8 + order[i], g) = int((word(qz, g * (out / 8) + j) >> (4 * i)) & 15u);
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t n = 0; n < out; ++n) u.s(n, g) = half_at(sc, g * out + n);
  for (std::int64_t k = 0; k < in; ++k) u.g_idx.push_back(int(k / (in / G)));
  return u;
}

// Field i of a stream of b-bit fields in 32-bit words, bit by bit (bit t of the stream = bit t % 32 of word t / 32).
int field(const std::vector<std::uint32_t>& words, std::int64_t i, int b) {
  int v = 0;
  for (int j = 0; j < b; ++j) {
    const std::int64_t t = i * b + j;
    v |= int((words[std::size_t(t / 32)] >> (t % 32)) & 1u) << j;
  }
  return v;
}

// GPTQ: qweight [in*b/32, out] packs each column's inputs as a stream; qzeros [G, out*b/32] the zeros as a stream
// stored v1: zero - 1 in every field, subtracted as whole words, so the reader adds a 1 in every field per word.
Unpacked read_gptq(const SafetensorsFile& f, const std::string& p, std::int64_t out, std::int64_t in, std::int64_t G, int b) {
  const TensorInfo& qw = tensor(f, p + ".qweight", DType::i32, {in * b / 32, out});
  const TensorInfo& qz = tensor(f, p + ".qzeros", DType::i32, {G, out * b / 32});
  const TensorInfo& sc = tensor(f, p + ".scales", DType::f16, {G, out});
  const TensorInfo& gi = tensor(f, p + ".g_idx", DType::i32, {in});
  Unpacked u{Eigen::MatrixXi(out, in), Eigen::MatrixXi(out, G), Eigen::MatrixXf(out, G), {}};
  for (std::int64_t n = 0; n < out; ++n) {
    std::vector<std::uint32_t> col(static_cast<std::size_t>(in * b / 32));
    for (std::int64_t r = 0; r < in * b / 32; ++r) col[std::size_t(r)] = word(qw, r * out + n);
    for (std::int64_t k = 0; k < in; ++k) u.q(n, k) = field(col, k, b);
  }
  const std::int64_t zw = out * b / 32;
  std::vector<std::uint32_t> ones(std::size_t(zw), 0);
  for (std::int64_t i = 0; i < out; ++i) ones[std::size_t(i * b / 32)] |= 1u << ((i * b) % 32);
  for (std::int64_t g = 0; g < G; ++g) {
    std::vector<std::uint32_t> row(static_cast<std::size_t>(zw));
    for (std::int64_t w = 0; w < zw; ++w) row[std::size_t(w)] = word(qz, g * zw + w) + ones[std::size_t(w)];
    for (std::int64_t n = 0; n < out; ++n) u.z(n, g) = field(row, n, b);
    for (std::int64_t n = 0; n < out; ++n) u.s(n, g) = half_at(sc, g * out + n);
  }
  for (std::int64_t k = 0; k < in; ++k) u.g_idx.push_back(int(word(gi, k)));
  return u;
}

// The method's weight as the file must hold it: scales rounded to fp16, rows in Hugging Face's order (llama2.c's
// q / k rows are adjacent RoPE pairs: file row h*hd + j*hd/2 + i is the method's row h*hd + 2i + j).
MatrixRM expected(const QuantizedLinear& q, bool rope_rows, int hd) {
  QuantizedLinear h = q;
  h.params.scale = q.params.scale.unaryExpr([](float v) { return round_to_half(v); });
  const MatrixRM W = h.dequantize();
  if (!rope_rows) return W;
  MatrixRM out(W.rows(), W.cols());
  for (Eigen::Index head = 0; head < W.rows() / hd; ++head)
    for (int i = 0; i < hd / 2; ++i)
      for (int j = 0; j < 2; ++j) out.row(head * hd + j * (hd / 2) + i) = W.row(head * hd + 2 * i + j);
  return out;
}

QuantizedLinear hand_linear(int bits, Eigen::Index out, Eigen::Index in, Eigen::Index group) {
  QuantizedLinear q;
  q.bits = bits;
  q.codes = CodesRM::Zero(out, in);
  const Eigen::Index G = (in + group - 1) / group;
  q.params.scale = MatrixRM::Constant(out, G, 0.5f);
  q.params.zero = MatrixRM::Constant(out, G, float(1 << (bits - 1)));
  q.params.group = group;
  return q;
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("AutoAWQ and GPTQ words match values worked out by hand", "[pack][awq][gptq]") {
  // AutoAWQ: rows 0..7 of column 0 hold codes 0..7; fields from bit 0 hold rows 0, 2, 4, 6, 1, 3, 5, 7
  QuantizedLinear q = hand_linear(4, 8, 32, 32);
  for (int n = 0; n < 8; ++n) q.codes(n, 0) = std::uint8_t(n);
  q.params.zero(3, 0) = 0, q.params.zero(5, 0) = 15;
  const AwqPacked a = pack_autoawq(q);
  REQUIRE(std::uint32_t(a.qweight[0]) == 0x75316420u);
  REQUIRE(std::uint32_t(a.qweight[1]) == 0u);
  // zeros 8 everywhere but row 3 (field 5) = 0 and row 5 (field 6) = 15
  REQUIRE(std::uint32_t(a.qzeros[0]) == 0x8F088888u);
  REQUIRE(half_bits_to_float(a.scales[0]) == 0.5f);

  // GPTQ 4 bits: column 0's inputs 0..7 = 0..7 -> word 0 = 0x76543210; v1 zeros: 8 -> 7 in every field, and a
  // zero of 0 in field 0 borrows from field 1: 0x88888880 - 0x11111111 = 0x7777776F
  QuantizedLinear g = hand_linear(4, 32, 32, 32);
  for (int k = 0; k < 8; ++k) g.codes(0, k) = std::uint8_t(k);
  const GptqPacked p = pack_gptq(g);
  REQUIRE(std::uint32_t(p.qweight[0]) == 0x76543210u);
  REQUIRE(std::uint32_t(p.qzeros[1]) == 0x77777777u);
  g.params.zero(0, 0) = 0;
  REQUIRE(std::uint32_t(pack_gptq(g).qzeros[0]) == 0x7777776Fu);
  // 3 bits: a 1 in every field of a 32-field run
  const std::vector<std::uint32_t> ones3 = gptq_v1_offsets(3);
  REQUIRE(ones3 == std::vector<std::uint32_t>{0x49249249u, 0x92492492u, 0x24924924u});
  REQUIRE(gptq_v1_offsets(2) == std::vector<std::uint32_t>{0x55555555u, 0x55555555u});
  // 3-bit qweight: input 10 straddles words 0 and 1 (bits 30, 31 | bit 0)
  QuantizedLinear t = hand_linear(3, 32, 32, 32);
  t.codes(0, 10) = 7;
  const GptqPacked p3 = pack_gptq(t);
  REQUIRE(std::uint32_t(p3.qweight[0]) == 0xC0000000u);
  REQUIRE(std::uint32_t(p3.qweight[std::size_t(1 * 32)]) == 1u);  // row 1 of qweight, column 0
  REQUIRE(p3.g_idx == std::vector<std::int32_t>(32, 0));
}

TEST_CASE("packed layouts refuse what they cannot hold, naming the tensor", "[pack][awq][gptq]") {
  QuantizedLinear q = hand_linear(4, 8, 64, 32);
  REQUIRE_THROWS_WITH(pack_autoawq(hand_linear(3, 8, 64, 32), "blk.q"), Catch::Contains("blk.q") && Catch::Contains("4-bit codes only"));
  REQUIRE_THROWS_WITH(pack_autoawq(hand_linear(4, 12, 64, 32)), Catch::Contains("out_features 12 is not a multiple of 8"));
  REQUIRE_THROWS_WITH(pack_autoawq(hand_linear(4, 8, 48, 32)), Catch::Contains("in_features 48 is not a multiple of the group size 32"));
  REQUIRE_THROWS_WITH(pack_gptq(hand_linear(5, 32, 64, 32)), Catch::Contains("2, 3, 4 or 8-bit"));
  REQUIRE_THROWS_WITH(pack_gptq(hand_linear(4, 32, 48, 32)), Catch::Contains("in_features 48 is not a multiple of 32"));
  QuantizedLinear z = q;
  z.params.zero(2, 1) = -1;  // OmniQuant's unclamped zero of a group whose range excludes 0
  REQUIRE_THROWS_WITH(pack_autoawq(z, "x"), Catch::Contains("zero point -1 of row 2 group 1 is not a code in [0, 15]"));
  z = q;
  z.params.scale(1, 0) = 1e6f;  // beyond fp16
  REQUIRE_THROWS_WITH(pack_autoawq(z, "x"), Catch::Contains("scale 1e+06 of row 1 group 0 is not representable in fp16"));
  z = q;
  z.grid = Grid::ggml;  // asymmetric ggml: a float offset
  REQUIRE_THROWS_WITH(pack_autoawq(z, "x"), Catch::Contains("float offset"));
  z = q;
  z.g_idx = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
             1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  REQUIRE_NOTHROW(pack_autoawq(z, "x"));  // GPTQ's g_idx without act_order: column / group
  std::swap(z.g_idx[0], z.g_idx[63]);
  REQUIRE_THROWS_WITH(pack_autoawq(z, "x"), Catch::Contains("act-order"));
}

TEST_CASE("babyllama as AutoAWQ and GPTQ checkpoints unpacks to the method's weights bit for bit", "[data][export][awq][gptq]") {
  LOWBIT_REQUIRE_SHARED("models/babyllama-tok105/model5000.bin");
  const Model fp = load_llama2c(lowbit_test::shared_path("models/babyllama-tok105/model5000.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.calib.tok105.i32"));
  const Windows calib = sequential_windows(ids, 8, 64);
  const std::string awq_dir = lowbit_test::tmp_path("packed_awq"), gptq_dir = lowbit_test::tmp_path("packed_gptq");
  const int hd = fp.cfg.head_dim();
  struct Case {
    const char* method;
    bool sym, act_order;
  };
  for (const Case& c : {Case{"awq", false, false}, Case{"gptq", true, true}, Case{"gptq", false, false}, Case{"rtn", true, false}}) {
    INFO(c.method << (c.sym ? " sym" : " asym") << (c.act_order ? " act-order" : ""));
    ModelSink keep(fp, {true, false, true});
    SinkFan fan;
    fan.add(&keep);
    std::unique_ptr<HfPackedSink> awq, gptq;
    if (!c.act_order) awq = std::make_unique<HfPackedSink>(fp, awq_dir, PackedFormat::autoawq, PackedSpec{4, 32, 0.01});
    gptq = std::make_unique<HfPackedSink>(fp, gptq_dir, PackedFormat::gptq, PackedSpec{4, 32, 0.01});
    if (awq) fan.add(awq.get());
    fan.add(gptq.get());
    MethodOptions mo;
    mo.gptq.act_order = c.act_order;
    const auto run = [&](const auto& q) {
      auto chain = make_method_chain(c.method, q, mo);
      quantize_model(fp, calib, chain, fan);
    };
    if (c.sym) run(Quantizer<Bits<4>, PerGroup<dynamic_group>, Symmetric>(32, Grid::gptq));
    else run(Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(32));
    if (awq) awq->commit();
    gptq->commit();
    for (const std::string& dir : {awq_dir, gptq_dir}) {
      const bool is_awq = dir == awq_dir;
      if (is_awq && !awq) continue;
      INFO(dir);
      const SafetensorsFile f(dir + "/model.safetensors");
      const json::Value cfg = json::parse(read_text_file(dir + "/config.json"), dir);
      const json::Value& qc = *cfg.find("quantization_config");
      REQUIRE(qc.find("quant_method")->str == (is_awq ? "awq" : "gptq"));
      REQUIRE(qc.find("bits")->num == 4);
      REQUIRE(qc.find("group_size")->num == 32);
      REQUIRE(cfg.find("torch_dtype")->str == "float16");
      if (is_awq) {
        REQUIRE(qc.find("version")->str == "gemm");
        REQUIRE(qc.find("modules_to_not_convert")->kind == json::Value::Kind::null);  // every row is a multiple of 32
      } else {
        REQUIRE(qc.find("desc_act")->b == c.act_order);
        REQUIRE(qc.find("sym")->b == c.sym);  // GPTQ's symmetric grid: zero 8 everywhere (asymmetric: a zero of 0 somewhere)
        const json::Value qcf = json::parse(read_text_file(dir + "/quantize_config.json"), dir);
        REQUIRE(qcf.find("checkpoint_format")->str == "gptq");
        REQUIRE(qcf.find("desc_act")->b == c.act_order);
      }
      for (int b = 0; b < fp.cfg.n_layers; ++b)
        for (const LinearDesc& l : kLinears) {
          INFO("block " << b << " " << l.name);
          const QuantizedLinear& ql = keep.quantized[std::size_t(b)][std::size_t(l.role)];
          const std::string p = "model.layers." + std::to_string(b) + "." + l.hf;
          const Unpacked u = is_awq ? read_awq(f, p, ql.rows(), ql.cols(), ql.groups())
                                    : read_gptq(f, p, ql.rows(), ql.cols(), ql.groups(), 4);
          const MatrixRM want = expected(ql, l.rope, hd);
          REQUIRE(u.dequantize() == want);
          if (!l.rope) REQUIRE(u.q == ql.codes.cast<int>());
          if (!is_awq && c.act_order) {
            std::vector<int> gi(ql.g_idx.begin(), ql.g_idx.end());
            REQUIRE(u.g_idx == gi);
          }
          // and within fp16's rounding of the scales from the method's fake-quantized weights
          const MatrixRM& fake = keep.fake.blocks[std::size_t(b)].linear(l.role).W;
          if (!l.rope) REQUIRE((u.dequantize() - fake).cwiseAbs().maxCoeff() <= 8 * 1e-3f * fake.cwiseAbs().maxCoeff());
        }
      // the rest is fp16 of the model's own tensors
      REQUIRE(f.matrix("model.norm.weight").transpose() == fp.final_norm.unaryExpr([](float v) { return round_to_half(v); }));
      REQUIRE(f.at("model.layers.0.input_layernorm.weight").dtype == DType::f16);
    }
  }
}

TEST_CASE("a row the layout cannot pack stays fp16, named in the config, and folders appear only on commit", "[data][export][awq][gptq]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const Model fp = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::string dir = lowbit_test::tmp_path("packed_stories_awq"), gdir = lowbit_test::tmp_path("packed_stories_gptq");
  for (const std::string& d : {dir, gdir})
    if (exists(d)) detail::remove_flat_dir(d);  // an earlier run's
  ModelSink keep(fp, {true, false, true});
  HfPackedSink awq(fp, dir, PackedFormat::autoawq, PackedSpec{4, 32, 0.01});
  HfPackedSink gptq(fp, gdir, PackedFormat::gptq, PackedSpec{4, 32, 0.01});
  SinkFan fan;
  fan.add(&keep), fan.add(&awq), fan.add(&gptq);
  auto chain = make_method_chain("rtn", Quantizer<Bits<4>, PerGroup<dynamic_group>, Asymmetric>(32, Grid::minmax, true));
  quantize_model(fp, {}, chain, fan);
  REQUIRE_FALSE(exists(dir + "/config.json"));
  awq.commit();
  gptq.commit();
  // stories260K's hidden width 172 is neither a multiple of 8 (AutoAWQ's out) nor of 32 (GPTQ's in and out, AWQ's
  // group): gate / up (172 out) and down (172 in) stay fp16 in both
  REQUIRE(awq.writer().skipped() == std::vector<std::string>{"mlp.gate_proj: out_features 172 is not a multiple of 8",
                                                             "mlp.up_proj: out_features 172 is not a multiple of 8",
                                                             "mlp.down_proj: in_features 172 is not a multiple of the group size 32"});
  REQUIRE(gptq.writer().skipped().size() == 3);
  const json::Value cfg = json::parse(read_text_file(dir + "/config.json"), dir);
  const json::Value& skip = *cfg.find("quantization_config")->find("modules_to_not_convert");
  REQUIRE(skip.is_array());
  REQUIRE(skip.arr.size() == 3);
  REQUIRE(skip.arr[0].str == "mlp.down_proj");  // sorted
  REQUIRE(skip.arr[2].str == "mlp.up_proj");
  const json::Value gcfg = json::parse(read_text_file(gdir + "/config.json"), gdir);
  REQUIRE(gcfg.find("quantization_config")->find("modules_in_block_to_quantize")->arr[0].arr.size() == 4);
  const SafetensorsFile f(dir + "/model.safetensors");
  REQUIRE(f.matrix("model.layers.2.mlp.down_proj.weight") ==
          keep.fake.blocks[2].down.W.unaryExpr([](float v) { return round_to_half(v); }));
  const Unpacked u = read_awq(f, "model.layers.2.self_attn.v_proj", 32, 64, 2);
  REQUIRE(u.dequantize() == expected(keep.quantized[2][std::size_t(Role::v)], false, 8));

  // a run that stops before commit leaves nothing
  const std::string never = lowbit_test::tmp_path("packed_never");
  {
    HfPackedWriter w(fp, never, PackedFormat::gptq, PackedSpec{4, 32, 0.01});
    w.block(0, keep.fake.blocks[0], keep.quantized[0]);
    REQUIRE_THROWS_WITH(w.commit(), Catch::Contains("4 blocks were never written"));
  }
  REQUIRE_FALSE(exists(never));
  // a run quantized to 3 bits cannot claim 4 in its config; AutoAWQ holds 4 bits only
  HfPackedWriter w3(fp, never, PackedFormat::gptq, PackedSpec{3, 32, 0.01});
  REQUIRE_THROWS_WITH(w3.block(0, keep.fake.blocks[0], keep.quantized[0]), Catch::Contains("quantized to 4 bits, the checkpoint to 3"));
  REQUIRE_THROWS_WITH(HfPackedWriter(fp, never, PackedFormat::autoawq, PackedSpec{3, 32, 0.01}), Catch::Contains("4-bit weights only"));
}
