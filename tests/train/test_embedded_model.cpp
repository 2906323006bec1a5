// lowbit's own model (models/kjv, trained by examples/train_kjv.sh; models/README.md): in the repository, so
// these run on every machine, ../shared or not.  The folder loads with its tokenizer, its held-out perplexity is
// the one the recipe printed, and quantization quality is checked on real trained weights: at W3 g128 AWQ and
// GPTQ beat RTN on the held-out books (calibration: the Gospel of Luke, from the training part).
#include <catch2/catch.hpp>
#include <lowbit/lowbit.hpp>

using namespace lowbit;

namespace {
const std::string kDir = std::string(LOWBIT_SOURCE_DIR) + "/models/kjv";
const std::string kText = std::string(LOWBIT_SOURCE_DIR) + "/models/kjv-text/";

struct Own {
  Model fp = load_model(kDir);
  Tokenizer tok = Tokenizer::load_llama2c(kDir + "/tokenizer.bin", fp.cfg.vocab_size);
  std::vector<int> val = tok.encode(read_text_file(kText + "val.txt"), true);
  std::vector<int> calib = tok.encode(read_text_file(kText + "calib.txt"), true);
};

double ppl(const Model& m, const std::vector<int>& ids, std::int64_t max_tokens = -1) {
  return perplexity(m, ids, 256, max_tokens).ppl;
}
}  // namespace

TEST_CASE("lowbit's own model: held-out perplexity matches the recipe's figure", "[own]") {
  const Own o;
  const LlamaConfig& c = o.fp.cfg;
  // the shape rules: wide enough for group 128, GQA
  REQUIRE(c.dim % 128 == 0);
  REQUIRE(c.hidden_dim % 128 == 0);
  REQUIRE(c.n_kv_heads < c.n_heads);
  REQUIRE(c.n_layers >= 4);
  REQUIRE(o.tok.decode(o.val) == read_text_file(kText + "val.txt"));  // the tokenizer round-trips the text
  // printed by examples/train_kjv.sh (val_ppl_fp16, the folder read back), models/README.md
  REQUIRE(ppl(o.fp, o.val) == Approx(23.2938).epsilon(1e-4));
}

TEST_CASE("lowbit's own model at W3 g128: AWQ and GPTQ beat RTN on the held-out books", "[own][awq][gptq]") {
  const Own o;
  const Windows calib = sequential_windows(o.calib, 32, 256);
  const std::int64_t eval_tokens = 16384;
  using W3 = Quantizer<Bits<3>, PerGroup<dynamic_group>, Asymmetric>;
  const auto run = [&](const std::string& method) {
    auto chain = make_method_chain(method, W3(128, reference_grid(method), false));
    ModelSink out(o.fp);
    quantize_model(o.fp, calib, chain, out);
    return ppl(out.fake, o.val, eval_tokens);
  };
  const double fp = ppl(o.fp, o.val, eval_tokens), rtn = run("rtn"), awq = run("awq"), gptq = run("gptq");
  INFO("fp " << fp << ", rtn " << rtn << ", awq " << awq << ", gptq " << gptq);
  REQUIRE(rtn > fp * 1.02);  // W3 costs something on real trained weights
  REQUIRE(awq < rtn);
  REQUIRE(gptq < rtn);
  REQUIRE(awq > fp);
  REQUIRE(gptq > fp);
}
