#include <sys/stat.h>
// The three real llama2.c models of shared/: loading, tokenizer parity, a naive double-precision forward,
// greedy samples and perplexity against the independent reimplementation's figures (shared/README.md).
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <map>

#include "support/shared_data.hpp"

using namespace lowbit;

namespace {

const char* kStories = "models/stories260K/stories260K.bin";
const char* kTok512 = "models/stories260K/tok512.bin";

const Model& stories() {
  static const Model m = load_llama2c(lowbit_test::shared_path(kStories));
  return m;
}

// Naive forward in double, written from the llama2.c equations, one token at a time with a KV cache.
std::vector<std::vector<double>> naive_logits(const Model& m, const std::vector<int>& toks) {
  const LlamaConfig& c = m.cfg;
  const int D = c.dim, hd = c.head_dim(), KV = c.kv_dim(), Hh = c.hidden_dim;
  const int NL = c.n_layers;
  std::vector<std::vector<std::vector<double>>> kc(NL), vc(NL);
  std::vector<std::vector<double>> out;
  auto matvec = [](const MatrixRM& W, const std::vector<double>& x) {
    std::vector<double> y(std::size_t(W.rows()), 0.0);
    for (Eigen::Index i = 0; i < W.rows(); ++i)
      for (Eigen::Index j = 0; j < W.cols(); ++j) y[i] += double(W(i, j)) * x[j];
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const Eigen::VectorXf& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    ss = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
    std::vector<double> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = double(w[Eigen::Index(i)]) * x[i] * ss;
    return y;
  };
  for (std::size_t pos = 0; pos < toks.size(); ++pos) {
    std::vector<double> x(static_cast<std::size_t>(D));
    for (int i = 0; i < D; ++i) x[i] = m.tok_embeddings(toks[pos], i);
    for (int l = 0; l < NL; ++l) {
      const Block& b = m.blocks[std::size_t(l)];
      auto xn = rms(x, b.attn_norm);
      auto q = matvec(b.q.W, xn), k = matvec(b.k.W, xn), v = matvec(b.v.W, xn);
      for (int i = 0; i < D; i += 2) {  // adjacent-pair RoPE
        const double f = 1.0 / std::pow(10000.0, double(i % hd) / hd), a = double(pos) * f;
        const double cr = std::cos(a), ci = std::sin(a);
        for (auto* vec : {&q, &k}) {
          if (i >= int(vec->size())) continue;
          const double v0 = (*vec)[i], v1 = (*vec)[i + 1];
          (*vec)[i] = v0 * cr - v1 * ci;
          (*vec)[i + 1] = v0 * ci + v1 * cr;
        }
      }
      kc[l].push_back(k);
      vc[l].push_back(v);
      std::vector<double> att(std::size_t(D), 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int kvh = h / (c.n_heads / c.n_kv_heads);
        std::vector<double> sc(pos + 1);
        double mx = -1e300;
        for (std::size_t t = 0; t <= pos; ++t) {
          double s = 0;
          for (int i = 0; i < hd; ++i) s += q[h * hd + i] * kc[l][t][kvh * hd + i];
          sc[t] = s / std::sqrt(double(hd));
          mx = std::max(mx, sc[t]);
        }
        double sum = 0;
        for (auto& s : sc) sum += (s = std::exp(s - mx));
        for (std::size_t t = 0; t <= pos; ++t)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += sc[t] / sum * vc[l][t][kvh * hd + i];
      }
      auto o = matvec(b.o.W, att);
      for (int i = 0; i < D; ++i) x[i] += o[i];
      xn = rms(x, b.ffn_norm);
      auto g = matvec(b.gate.W, xn), u = matvec(b.up.W, xn);
      for (int i = 0; i < Hh; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      auto d = matvec(b.down.W, g);
      for (int i = 0; i < D; ++i) x[i] += d[i];
      (void)KV;
    }
    out.push_back(matvec(m.classifier(), rms(x, m.final_norm)));
  }
  return out;
}

}  // namespace

TEST_CASE("stories260K loads with the documented config", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  const Model& m = stories();
  REQUIRE(m.cfg.dim == 64);
  REQUIRE(m.cfg.hidden_dim == 172);
  REQUIRE(m.cfg.n_layers == 5);
  REQUIRE(m.cfg.n_heads == 8);
  REQUIRE(m.cfg.n_kv_heads == 4);
  REQUIRE(m.cfg.vocab_size == 512);
  REQUIRE(m.cfg.tied_embeddings);
  REQUIRE(m.blocks[4].down.W.rows() == 64);
  REQUIRE(m.blocks[4].down.W.cols() == 172);
}

TEST_CASE("tok512 encodes the eval and calib texts to exactly the reference ids", "[data][tokenizer]") {
  LOWBIT_REQUIRE_SHARED(kTok512);
  const Tokenizer tok = Tokenizer::load_llama2c(lowbit_test::shared_path(kTok512), 512);
  for (std::string part : {"eval", "calib"}) {
    const std::string text = read_text_file(lowbit_test::shared_path("data/tinystories/tinystories_val." + part + ".txt"));
    const std::vector<int> ref = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val." + part + ".tokens.i32"));
    const std::vector<int> ids = tok.encode(text, true);
    REQUIRE(ids.size() == ref.size());
    REQUIRE(ids == ref);
    REQUIRE(tok.decode(ids) == text);  // round trip (the dummy-prefix space is dropped after BOS)
  }
  // by hand from the vocabulary file: "Once" after the dummy prefix is one merged piece " Once"
  const std::vector<int> once = tok.encode("Once", false);
  REQUIRE(once.size() == 1);
  REQUIRE(tok.vocab[std::size_t(once[0])] == " Once");
  REQUIRE(tok.decode(tok.encode("Hello, \xc3\xa9t\xc3\xa9 world!\n", true)) == "Hello, \xc3\xa9t\xc3\xa9 world!\n");  // no space after BOS (llama2.c decode)
  REQUIRE(tok.encode("", true) == std::vector<int>{1});
}

TEST_CASE("stories260K forward matches a naive double-precision forward", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  const Model& m = stories();
  const std::vector<int> toks = {1, 403, 407, 261, 378, 432, 261, 269, 1000 % 512, 300, 46, 280, 10, 13};
  const MatrixRM got = forward(m, toks, int(toks.size()));
  const auto ref = naive_logits(m, toks);
  double max_err = 0, max_ref = 0;
  for (std::size_t t = 0; t < toks.size(); ++t)
    for (int j = 0; j < m.cfg.vocab_size; ++j) {
      max_err = std::max(max_err, std::fabs(double(got(Eigen::Index(t), j)) - ref[t][std::size_t(j)]));
      max_ref = std::max(max_ref, std::fabs(ref[t][std::size_t(j)]));
    }
  INFO("max |logit error| " << max_err << " of max |logit| " << max_ref);
  REQUIRE(max_err < 2e-4 * max_ref);
  // batching two sequences gives each one's logits
  std::vector<int> two = toks;
  two.insert(two.end(), toks.rbegin(), toks.rend());
  const MatrixRM both = forward(m, two, int(toks.size()));
  REQUIRE((both.topRows(Eigen::Index(toks.size())) - got).cwiseAbs().maxCoeff() < 1e-5f * float(max_ref));
}

TEST_CASE("stories260K greedy sample from BOS is the known story", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kTok512);
  const Model& m = stories();
  const Tokenizer tok = Tokenizer::load_llama2c(lowbit_test::shared_path(kTok512), 512);
  const std::string text = tok.decode(generate_greedy(m, {1}, 40));
  INFO(text);
  REQUIRE(text.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 0) == 0);
}

TEST_CASE("stories260K perplexity matches the independent reimplementation", "[data][ppl]") {
  LOWBIT_REQUIRE_SHARED("data/tinystories/tinystories_val.eval.tokens.i32");
  const Model& m = stories();
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const PerplexityResult a = perplexity(m, ids, 512);
  const PerplexityResult b = perplexity(m, ids, 256);
  const PerplexityResult c = perplexity(m, ids, 256, 100352);
  INFO("ppl " << a.ppl << " " << b.ppl << " " << c.ppl);
  REQUIRE(a.ppl == Approx(5.820).margin(0.0015));
  REQUIRE(b.ppl == Approx(5.839).margin(0.0015));
  REQUIRE(c.ppl == Approx(6.707).margin(0.0015));
  REQUIRE(c.predictions == 392 * 255);
  set_num_threads(1);
  const PerplexityResult c1 = perplexity(m, ids, 256, 100352);
  set_num_threads(2);
  REQUIRE(c1.nll == c.nll);  // bitwise, whatever the thread count
}

TEST_CASE("babyllama-tok105 and the Q8_0 Shakespeare model load and generate their known text", "[data][model]") {
  LOWBIT_REQUIRE_SHARED("models/babyllama-tok105/model5000.bin");
  const Model baby = load_llama2c(lowbit_test::shared_path("models/babyllama-tok105/model5000.bin"));
  REQUIRE(baby.cfg.dim == 128);
  const Tokenizer t105 = Tokenizer::load_sentencepiece_vocab(lowbit_test::shared_path("models/babyllama-tok105/tok105.vocab"));
  REQUIRE(t105.vocab.size() == 105);
  const std::string s = t105.decode(generate_greedy(baby, {1}, 110));
  INFO(s);
  REQUIRE(s.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.", 0) == 0);
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tok105.i32"));
  REQUIRE(perplexity(baby, ids, 256, 100352).ppl == Approx(2.9106).margin(0.0015));

  LOWBIT_REQUIRE_SHARED("models/prometheus-shakespeare-q80/shakespeare_q80.bin");
  const Model sh = load_llama2c(lowbit_test::shared_path("models/prometheus-shakespeare-q80/shakespeare_q80.bin"));
  REQUIRE(sh.cfg.dim == 192);
  REQUIRE(sh.cfg.n_kv_heads == 6);
  std::string txt;
  for (int id : generate_greedy(sh, {1}, 40))
    if (id >= 3) txt += char(id - 3);
  INFO(txt);
  REQUIRE(txt.rfind("MENENIUS:\nWhat is the matter?", 0) == 0);
  // its held-out text: the byte stream of input.txt with BOS before every "\n\n"-separated paragraph (each
  // followed by "\n\n"), validation = the last 56,130 of its 1,122,618 tokens; 40 windows of 256 -> NLL 1.2766
  LOWBIT_REQUIRE_SHARED("data/tinyshakespeare/input.txt");
  const std::string all = read_text_file(lowbit_test::shared_path("data/tinyshakespeare/input.txt"));
  std::vector<int> stream;
  for (std::size_t p = 0;;) {
    const std::size_t e = all.find("\n\n", p);
    const std::string para = all.substr(p, e == std::string::npos ? std::string::npos : e - p) + "\n\n";
    stream.push_back(1);
    for (unsigned char ch : para) stream.push_back(int(ch) + 3);
    if (e == std::string::npos) break;
    p = e + 2;
  }
  REQUIRE(stream.size() == 1122618);
  const std::vector<int> val(stream.end() - 56130, stream.end());
  const PerplexityResult r = perplexity(sh, val, 256, 40 * 256);
  REQUIRE(r.predictions == 10200);
  REQUIRE(r.nll == Approx(1.2766).margin(0.0005));
}

TEST_CASE("ak42 version 1 (float32) exports load to the same model", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  const Model& m = stories();
  std::string bytes(256, '\0');
  const std::uint32_t magic = 0x616b3432u;
  const std::int32_t hdr[9] = {1, 64, 172, 5, 8, 4, 512, 512, 0};
  std::memcpy(&bytes[0], &magic, 4);
  std::memcpy(&bytes[4], hdr, 32);
  bytes[36] = 1;  // shared classifier
  auto put = [&](const float* p, Eigen::Index n) { bytes.append(reinterpret_cast<const char*>(p), std::size_t(n) * 4); };
  for (const Block& b : m.blocks) put(b.attn_norm.data(), b.attn_norm.size());
  for (const Block& b : m.blocks) put(b.ffn_norm.data(), b.ffn_norm.size());
  put(m.final_norm.data(), m.final_norm.size());
  put(m.tok_embeddings.data(), m.tok_embeddings.size());
  for (Role r : {Role::q, Role::k, Role::v, Role::o, Role::gate, Role::down, Role::up})
    for (const Block& b : m.blocks) put(b.linear(r).W.data(), b.linear(r).W.size());
  const std::string p = std::string(LOWBIT_BUILD_DIR) + "/stories_v1.bin";
  std::ofstream(p, std::ios::binary) << bytes;
  const Model v1 = load_llama2c(p);
  const std::vector<int> toks = {1, 403, 407, 261, 378};
  REQUIRE(forward(v1, toks, 5) == forward(m, toks, 5));
  std::remove(p.c_str());
}

TEST_CASE("block hooks see every linear's input and can rewrite it", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  const Model& m = stories();
  const std::vector<int> toks = {1, 403, 407, 261, 378, 432, 261, 269};
  MatrixRM x = embed(m, toks), x_plain = x;
  std::map<Role, MatrixRM> seen;
  BlockHooks hooks;
  hooks.linear_input = [&](Role r, const MatrixRM& in) { seen[r] = in; };
  block_forward(m.cfg, m.blocks[0], x, 8, &hooks);
  block_forward(m.cfg, m.blocks[0], x_plain, 8);
  REQUIRE(x == x_plain);  // observing changes nothing
  REQUIRE(seen.size() == 7);
  REQUIRE(seen[Role::q] == seen[Role::k]);  // q, k, v read the same normalised input
  REQUIRE(seen[Role::q] == seen[Role::v]);
  REQUIRE(seen[Role::gate] == seen[Role::up]);
  REQUIRE(seen[Role::down].cols() == 172);
  // the q input is rmsnorm(x) * attn_norm, computed here by hand
  const MatrixRM x0 = embed(m, toks);
  for (Eigen::Index t = 0; t < 8; ++t) {
    const float inv = 1.0f / std::sqrt(x0.row(t).squaredNorm() / 64.0f + 1e-5f);
    for (int j = 0; j < 64; ++j) REQUIRE(seen[Role::q](t, j) == Approx(x0(t, j) * inv * m.blocks[0].attn_norm[j]).epsilon(1e-5));
  }
  // activation fake-quantization at every linear input (W-A quantization) perturbs the output a little
  BlockHooks aq;
  aq.transform_input = [](Role, MatrixRM& in) { fake_quant(Quantizer<Bits<8>, PerToken, Symmetric>{}, in, in); };
  MatrixRM xq = embed(m, toks);
  block_forward(m.cfg, m.blocks[0], xq, 8, &aq);
  const float diff = (xq - x_plain).cwiseAbs().maxCoeff();
  REQUIRE(diff > 0.0f);
  REQUIRE(diff < 0.05f * x_plain.cwiseAbs().maxCoeff());
}

TEST_CASE("corrupt llama2.c files are clear errors naming the file", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  const std::string src = read_text_file(lowbit_test::shared_path(kStories));
  const std::string p = std::string(LOWBIT_BUILD_DIR) + "/corrupt.bin";
  auto write = [&](const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; };
  write(src.substr(0, src.size() - 100));
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("corrupt.bin") && Catch::Contains("truncated"));
  write(src + "extra");
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("unexpected bytes"));
  std::string bad = src;
  bad[12] = 7;  // n_heads = 7 does not divide dim 64
  write(bad);
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("not a multiple of n_heads"));
  bad = src;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&bad[28 + 4 * 100], &nan, 4);
  write(bad);
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("token_embedding has a non-finite value at element 100"));
  // issue 8: a header asking for gigabytes is checked against the file before anything is allocated
  std::int32_t huge[7] = {4096, 11008, 32, 32, 32, 32000, 4096};
  write(std::string(reinterpret_cast<const char*>(huge), 28));
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("legacy llama2.c") && Catch::Contains("but the file has 28"));
  huge[5] = std::numeric_limits<std::int32_t>::min();  // -INT_MIN has no value: rejected, no undefined negation
  write(std::string(reinterpret_cast<const char*>(huge), 28));
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("invalid config"));
  write("not a model at all, just some text that happens to be long enough");
  REQUIRE_THROWS_WITH(load_model(p), Catch::Contains("read as a legacy llama2.c checkpoint"));
  write("abc");
  REQUIRE_THROWS_WITH(load_llama2c(p), Catch::Contains("too small"));
  std::remove(p.c_str());
}

TEST_CASE("rotate-half RoPE on Hugging Face-permuted q/k rows equals interleaved RoPE", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  // HF's LLaMA conversion reorders each head's q/k rows from pairs (2i, 2i+1) to (i, i + hd/2); with the
  // rotate-half convention the model must compute the same function.
  Model hf = stories();
  hf.cfg.rope = RopeStyle::rotate_half;
  const int hd = hf.cfg.head_dim(), half = hd / 2;
  auto permute = [&](MatrixRM& W) {
    const MatrixRM old = W;
    for (Eigen::Index h = 0; h < W.rows() / hd; ++h)
      for (int i = 0; i < half; ++i)
        for (int j = 0; j < 2; ++j) W.row(h * hd + j * half + i) = old.row(h * hd + 2 * i + j);
  };
  for (Block& b : hf.blocks) permute(b.q.W), permute(b.k.W);
  const std::vector<int> toks = {1, 403, 407, 261, 378, 432, 261, 269, 300, 46, 280};
  const MatrixRM a = forward(stories(), toks, int(toks.size())), b = forward(hf, toks, int(toks.size()));
  REQUIRE((a - b).cwiseAbs().maxCoeff() < 1e-4f * a.cwiseAbs().maxCoeff());
}

TEST_CASE("tok105 .vocab encodes the eval text to exactly the reference ids (one <unk> per character)", "[data][tokenizer]") {
  LOWBIT_REQUIRE_SHARED("models/babyllama-tok105/tok105.vocab");
  const Tokenizer t = Tokenizer::load_sentencepiece_vocab(lowbit_test::shared_path("models/babyllama-tok105/tok105.vocab"));
  const std::string text = read_text_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.txt"));
  const std::vector<int> ref = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tok105.i32"));
  REQUIRE(t.encode(text, true) == ref);
}

TEST_CASE("forward reports every block's input and output", "[data][model]") {
  LOWBIT_REQUIRE_SHARED(kStories);
  const Model& m = stories();
  const std::vector<int> toks = {1, 403, 407, 261, 378, 432};
  std::vector<MatrixRM> ins, outs;
  int linear_calls = 0;
  BlockHooks h;
  h.linear_input = [&](Role, const MatrixRM&) { ++linear_calls; };
  const MatrixRM logits = forward(m, toks, 6, &h, [&](int i, const MatrixRM& in, const MatrixRM& out) {
    REQUIRE(i == int(ins.size()));
    ins.push_back(in), outs.push_back(out);
  });
  REQUIRE(ins.size() == 5);
  REQUIRE(linear_calls == 5 * 7);
  REQUIRE(ins[0] == embed(m, toks));
  for (int i = 1; i < 5; ++i) REQUIRE(ins[std::size_t(i)] == outs[std::size_t(i - 1)]);  // each block feeds the next
  MatrixRM x = ins[2];
  block_forward(m.cfg, m.blocks[2], x, 6);
  REQUIRE(x == outs[2]);
  REQUIRE(logits == logits_from_hidden(m, outs[4]));
}

TEST_CASE("a FIFO or a directory is refused as a model or data file, without blocking", "[model]") {
  const std::string fifo = std::string(LOWBIT_BUILD_DIR) + "/lowbit_test.fifo";
  std::remove(fifo.c_str());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  REQUIRE_THROWS_WITH(load_model(fifo), Catch::Contains("not a regular file"));
  REQUIRE_THROWS_WITH(read_text_file(fifo), Catch::Contains("FIFO"));
  REQUIRE_THROWS_WITH(read_token_file(fifo), Catch::Contains("FIFO"));
  REQUIRE_THROWS_WITH(read_text_file(LOWBIT_BUILD_DIR), Catch::Contains("a directory"));
  REQUIRE_THROWS_WITH(read_text_file(std::string(LOWBIT_BUILD_DIR) + "/no/such/file"), Catch::Contains("No such file"));
  std::remove(fifo.c_str());
}

TEST_CASE("model hyper-parameters that make every forward non-finite are load errors", "[model]") {
  LlamaConfig c;
  c.dim = 8, c.hidden_dim = 16, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2, c.vocab_size = 4, c.max_seq_len = 8;
  REQUIRE_NOTHROW(c.validate("cfg"));
  for (float eps : {0.0f, -1e-5f, 2.0f, std::numeric_limits<float>::quiet_NaN()}) {
    LlamaConfig b = c;
    b.norm_eps = eps;
    REQUIRE_THROWS_WITH(b.validate("cfg"), Catch::Contains("rms_norm_eps"));
  }
  for (float theta : {0.0f, -10000.0f, std::numeric_limits<float>::infinity()}) {
    LlamaConfig b = c;
    b.rope_theta = theta;
    REQUIRE_THROWS_WITH(b.validate("cfg"), Catch::Contains("rope_theta"));
  }
}

TEST_CASE("a non-finite loss is an error naming the window and the block where the forward overflowed", "[data][ppl]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  m.blocks[2].up.W.row(5).setConstant(3e38f);  // finite, but its products overflow
  REQUIRE_THROWS_WITH(perplexity(m, ids, 256, 2560),
                      Catch::Contains("window 0 (tokens 0..255) has a non-finite loss") &&
                          Catch::Contains("first turns non-finite at block 2, the input of down_proj"));
  REQUIRE(locate_nonfinite(m, std::vector<int>(ids.begin(), ids.begin() + 256), 256) == "block 2, the input of down_proj");
}

TEST_CASE("an evaluation window past the declared context is a warning, not an error", "[data][ppl]") {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  Model m = load_llama2c(lowbit_test::shared_path("models/stories260K/stories260K.bin"));
  const std::vector<int> ids = read_token_file(lowbit_test::shared_path("data/tinystories/tinystories_val.eval.tokens.i32"));
  const double within = perplexity(m, ids, 256, 2560).ppl;
  m.cfg.max_seq_len = 128;  // what llama.cpp's converter writes for stories260K
  std::vector<std::string> seen;
  const WarningHandler old = set_warning_handler([&](const std::string& w) { seen.push_back(w); });
  const double past = perplexity(m, ids, 256, 2560).ppl;
  set_warning_handler(old);
  REQUIRE(past == within);  // the declared context changes nothing in the computation
  REQUIRE(seen.size() == 1);
  REQUIRE_THAT(seen[0], Catch::Contains("longer than the model's declared context of 128"));
}
