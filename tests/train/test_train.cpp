// Training a model from scratch: the BPE trainer (a case worked by hand, round trips, byte fallback, the
// tokenizer.bin written and read back), the schedule and gradient clipping (hand-computed), the whole model on
// the tape (its gradient against central differences in double; its loss against model/llama.hpp's forward
// and sum_nll), and a short training run (the loss falls; the same bits on 1 and 2 threads).
#include <catch2/catch.hpp>
#include <cmath>
#include <tuple>
#include <lowbit/autodiff/grad_check.hpp>
#include <lowbit/autodiff/model.hpp>
#include <lowbit/data/bpe_train.hpp>
#include <lowbit/lowbit.hpp>

#include "support/util.hpp"

using namespace lowbit;

namespace {
LlamaConfig tiny_config(int vocab) {
  LlamaConfig c;
  c.dim = 8, c.hidden_dim = 12, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 1, c.vocab_size = vocab, c.max_seq_len = 16;
  c.rope = RopeStyle::rotate_half;
  return c;
}
}  // namespace

TEST_CASE("UTF-8 characters are cut at a lead byte and at most 3 continuation bytes, by hand", "[bpe][tokenizer]") {
  const std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\x80\x80\x80\x80\x80z";  // a, e-acute, euro, emoji, 5 strays, z
  std::vector<std::size_t> lengths;
  for (std::size_t i = 0; i < s.size(); i += lengths.back()) lengths.push_back(utf8_char_length(s, i));
  // the emoji's 3 continuation bytes end it; the 5 stray continuation bytes are cut as one lead-less 4 and a 1
  REQUIRE(lengths == std::vector<std::size_t>{1, 2, 3, 4, 4, 1, 1});
  REQUIRE(detail::utf8_chars(s).size() == lengths.size());
  REQUIRE(utf8_char_length("\xC3", 0) == 1);  // a lead byte at the end stands alone
}

TEST_CASE("BPE pre-tokenization keeps one leading space with a word and never joins classes", "[bpe]") {
  const auto p = bpe_pretokenize("Hello, world!\nAnd  so 42's");
  std::vector<std::string> got;
  for (const auto& [s, n] : p) {
    got.push_back(s);
    REQUIRE(n == 1);
  }
  REQUIRE(got == std::vector<std::string>{"Hello", ",", " world", "!", "\n", "And", " ", " so", " 42", "'s"});
  const auto q = bpe_pretokenize("ab ab");
  REQUIRE(q.size() == 2);
  REQUIRE(q[1].first == " ab");
}

TEST_CASE("BPE training on a text worked by hand: merges in count order, scores in merge order", "[bpe]") {
  // pieces "ab", " ab" x2, " abc": pairs (a,b) 4, (' ',a) 3, (b,c) 1 -> merge "ab"; then (' ',ab) 3, (ab,c) 1 ->
  // merge " ab"; then (" ab",c) 1 < min_count 2: stop.  Characters by count: a 4, b 4 (byte order), ' ' 3, c 1.
  BpeOptions o;
  o.vocab_size = 400;
  const Tokenizer t = train_bpe("ab ab ab abc", o);
  REQUIRE(t.vocab.size() == 265);
  REQUIRE(t.vocab[0] == "<unk>");
  REQUIRE(t.vocab[3] == "<0x00>");
  REQUIRE(t.vocab[258] == "<0xFF>");
  REQUIRE(std::vector<std::string>(t.vocab.begin() + 259, t.vocab.end()) == std::vector<std::string>{"a", "b", " ", "c", "ab", " ab"});
  REQUIRE(t.scores[263] == 0.0f);
  REQUIRE(t.scores[264] == -1.0f);
  // " ab abc" (dummy prefix): "ab" twice (score 0, leftmost first), then " ab" twice
  REQUIRE(t.encode("ab abc", true) == std::vector<int>{1, 264, 264, 262});
  REQUIRE(t.decode(t.encode("ab abc", true)) == "ab abc");
  // a character never seen in training: byte fallback (byte + 3), and back
  REQUIRE(t.encode("z", false) == std::vector<int>{261, 'z' + 3});
  REQUIRE(t.decode(t.encode("ab z\xc3\xa9", true)) == "ab z\xc3\xa9");
  // the vocabulary size bounds the merges
  o.vocab_size = 264;
  REQUIRE(train_bpe("ab ab ab abc", o).vocab.size() == 264);
  o.vocab_size = 100;
  REQUIRE_THROWS_WITH(train_bpe("ab", o), Catch::Contains("vocabulary size 100"));
  REQUIRE_THROWS_WITH(train_bpe("", BpeOptions{}), Catch::Contains("empty"));
}

TEST_CASE("a trained BPE round-trips text, compresses it, and reads back from tokenizer.bin unchanged", "[bpe]") {
  std::string text;
  const char* verses[] = {"In the beginning God created the heaven and the earth.\n",
                          "And the earth was without form, and void; and darkness was upon the face of the deep.\n",
                          "And God said, Let there be light: and there was light.\n"};
  for (int r = 0; r < 20; ++r)
    for (const char* v : verses) text += v;
  BpeOptions o;
  o.vocab_size = 400;
  const Tokenizer t = train_bpe(text, o);
  REQUIRE(t.vocab.size() < 400);  // stopped early: every piece had become one token
  const std::vector<int> ids = t.encode(text, true);
  REQUIRE(t.decode(ids) == text);
  std::int64_t pieces = 0;
  for (const auto& pc : bpe_pretokenize(text)) pieces += pc.second;
  // BOS, then the dummy prefix " " alone (the text starts "In", never " In"), then one token per piece
  REQUIRE(std::int64_t(ids.size()) == pieces + 2);
  const std::string path = lowbit_test::tmp_path("bpe_tokenizer.bin");
  save_llama2c_tokenizer(t, path);
  const Tokenizer back = Tokenizer::load_llama2c(path, int(t.vocab.size()));
  REQUIRE(back.vocab == t.vocab);
  REQUIRE(back.scores == t.scores);
  REQUIRE(back.encode("And God said, Let there be light.", true) == t.encode("And God said, Let there be light.", true));
  // text the training never saw still round-trips (byte fallback)
  REQUIRE(back.decode(back.encode("Zebra #7 \xe2\x82\xac", true)) == "Zebra #7 \xe2\x82\xac");
}

TEST_CASE("cosine schedule and gradient clipping, by hand", "[train]") {
  REQUIRE(ad::cosine_lr(0, 100, 10, 1.0, 0.1) == Approx(0.1));
  REQUIRE(ad::cosine_lr(9, 100, 10, 1.0, 0.1) == Approx(1.0));
  REQUIRE(ad::cosine_lr(10, 100, 10, 1.0, 0.1) == Approx(1.0));
  REQUIRE(ad::cosine_lr(55, 100, 10, 1.0, 0.1) == Approx(0.55));  // half way: (1 + cos(pi/2)) / 2
  REQUIRE(ad::cosine_lr(100, 100, 10, 1.0, 0.1) == Approx(0.1));
  ad::AdamW<float> opt;
  const int a = opt.add("a", ad::Mat<float>::Zero(1, 2), 1e-3), b = opt.add("b", ad::Mat<float>::Zero(1, 1), 1e-3);
  opt[a].grad << 3, 0;
  opt[b].grad << 4;
  REQUIRE(ad::clip_grad_norm(opt, 10.0) == Approx(5.0));
  REQUIRE(opt[a].grad(0, 0) == 3.0f);  // under the limit: unchanged
  REQUIRE(ad::clip_grad_norm(opt, 1.0) == Approx(5.0));
  REQUIRE(opt[a].grad(0, 0) == Approx(0.6).epsilon(1e-5));
  REQUIRE(opt[b].grad(0, 0) == Approx(0.8).epsilon(1e-5));
}

TEST_CASE("the whole model on the tape: gradient against central differences in double", "[train][autodiff]") {
  const LlamaConfig cfg = tiny_config(11);
  ad::ModelParamsT<double> p = ad::ModelParamsT<double>::init(cfg, 5, 1e-3, 0.0);
  // larger weights than the initialisation's, so every op is far from linear
  std::mt19937 g(3);
  std::normal_distribution<double> nd(0.0, 0.4);
  for (std::size_t i = 0; i < p.opt.size(); ++i)
    for (Eigen::Index k = 0; k < p.opt[int(i)].value.size(); ++k) p.opt[int(i)].value.data()[k] += nd(g);
  const int L = 5;
  const std::vector<int> tok = {1, 4, 7, 7, 2, 10, 0, 3, 3, 9}, tg = {4, 7, 7, 2, 10, 0, 3, 3, 9, 5};
  ad::Tape<double> t;
  p.opt.zero_grad();
  t.backward(ad::model_loss(t, p, tok, tg, L));
  const auto loss_at = [&] {
    ad::NoGrad<double> ng(t);
    const auto m = t.mark();
    const double v = ad::model_loss(t, p, tok, tg, L).scalar();
    t.rewind(m);
    return v;
  };
  double worst = 0;
  int checked = 0;
  for (std::size_t i = 0; i < p.opt.size(); ++i) {
    ad::Parameter<double>& q = p.opt[int(i)];
    const Eigen::Index stride = std::max<Eigen::Index>(1, q.value.size() / 6);
    for (Eigen::Index k = 0; k < q.value.size(); k += stride) {
      double& x = q.value.data()[k];
      const double x0 = x, h = 1e-6 * std::max(1.0, std::abs(x0));
      x = x0 + h;
      const double fp = loss_at();
      x = x0 - h;
      const double fm = loss_at();
      x = x0;
      const double num = (fp - fm) / (2 * h), ana = q.grad.data()[k];
      worst = std::max(worst, std::abs(num - ana) / std::max(1e-3, std::abs(num)));
      ++checked;
    }
  }
  INFO("checked " << checked << " entries, worst relative error " << worst);
  REQUIRE(checked > 100);
  REQUIRE(worst < 1e-5);
}

TEST_CASE("the tape's model loss equals the model's forward and sum_nll", "[train]") {
  const LlamaConfig cfg = tiny_config(13);
  ad::ModelParams p = ad::ModelParams::init(cfg, 7, 1e-3, 0.0);
  const int L = 6;
  std::vector<int> tok, tg;
  for (int i = 0; i < 3 * L; ++i) tok.push_back((i * 5 + 1) % 13), tg.push_back((i * 7 + 2) % 13);
  ad::Tape<float> t;
  ad::NoGrad<float> ng(t);
  const double tape_loss = ad::model_loss(t, p, tok, tg, L).scalar();
  const Model m = p.to_model();
  const MatrixRM logits = forward(m, tok, L);
  const double ref = sum_nll(logits, tg, 0, logits.rows()) / double(tok.size());
  REQUIRE(tape_loss == Approx(ref).epsilon(1e-5));
  REQUIRE(tape_loss == Approx(std::log(13.0)).epsilon(0.05));  // N(0, 0.02) weights: nearly uniform
}

TEST_CASE("a short training run learns a repeating text, with the same bits on 1 and 2 threads", "[train]") {
  // wide enough that the tape's products and row loops run in parallel (core/parallel.hpp's work threshold)
  LlamaConfig cfg = tiny_config(9);
  cfg.dim = 64, cfg.hidden_dim = 128, cfg.n_heads = 4, cfg.n_kv_heads = 2, cfg.max_seq_len = 32;
  const int L = 32, steps = 40;
  std::vector<int> tok, tg;
  for (int i = 0; i < 4 * L; ++i) tok.push_back(i % 9), tg.push_back((i + 1) % 9);  // 0 1 2 ... 8 0 1 ...
  const int threads0 = max_threads();
  const auto train = [&](int threads) {
    set_num_threads(threads);
    ad::ModelParams p = ad::ModelParams::init(cfg, 11, 1e-2, 0.1);
    ad::Tape<float> t;
    double first = 0, last = 0;
    for (int s = 0; s < steps; ++s) {
      const auto m = t.mark();
      p.opt.zero_grad();
      const ad::Var<float> loss = ad::model_loss(t, p, tok, tg, L);
      (s == 0 ? first : last) = loss.scalar();
      t.backward(loss);
      t.rewind(m);
      ad::clip_grad_norm(p.opt, 1.0);
      for (std::size_t i = 0; i < p.opt.size(); ++i) p.opt[int(i)].lr = ad::cosine_lr(s, steps, 5, 1e-2, 1e-3);
      p.opt.step();
    }
    set_num_threads(threads0);
    return std::make_tuple(first, last, p.to_model());
  };
  const auto [f1, l1, m1] = train(1);
  const auto [f2, l2, m2] = train(2);
  INFO("loss " << f1 << " -> " << l1);
  REQUIRE(f1 > std::log(9.0) - 0.05);  // untrained: no better than uniform (the tied table favours the input token)
  REQUIRE(l1 < 0.2);  // the next token is a function of the current one
  REQUIRE(l1 == l2);
  lowbit_test::require_same_blocks(m1, m2);
  REQUIRE(m1.tok_embeddings == m2.tok_embeddings);
}
