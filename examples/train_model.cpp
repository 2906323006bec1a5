// lowbit-train: trains a small LLaMA-architecture model from scratch on a text, with lowbit's own BPE trainer
// (data/bpe_train.hpp) and autodiff (autodiff/model.hpp), and writes it as a Hugging Face folder
// (model.safetensors + config.json, fp16) with its tokenizer.bin, which every lowbit command loads.
//
//   lowbit-train --train TRAIN.txt --val VAL.txt --out DIR [--vocab 2048] [--dim 256] [--hidden 640]
//                [--layers 4] [--heads 8] [--kv-heads 4] [--seq-len 256] [--batch 16] [--tokens N]
//                [--minutes M] [--lr 1e-3] [--min-lr 1e-4] [--warmup 200] [--weight-decay 0.1] [--clip 1]
//                [--seed 0] [--eval-every 250] [--log FILE.csv] [--plot FILE.svg] [--threads T]
//
// The run: BPE on the training text; the text as one token stream; each step B windows of L + 1 tokens at
// offsets drawn from the seed (inputs the first L, targets the last L); mean cross-entropy; backward; gradient
// clipping; AdamW with a cosine schedule.  The schedule runs over the token budget (--tokens), which makes a run
// the same for a seed on any machine and any thread count; --minutes only stops it early (then the schedule is
// cut short and the note in the log says so).  Every --eval-every steps and at the end: validation perplexity
// under the evaluation protocol (data/perplexity.hpp: windows of L), and a checkpoint of the model folder written
// atomically (a killed run leaves the last checkpoint, never a partial folder).  The log (CSV: step, tokens,
// seconds, lr, loss, grad norm, val nll) and an SVG plot of the curve are rewritten with each checkpoint.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <lowbit/autodiff/model.hpp>
#include <lowbit/data/bpe_train.hpp>
#include <lowbit/lowbit.hpp>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

struct Args {
  std::string train, val, out, log, plot;
  int vocab = 2048, dim = 256, hidden = 640, layers = 4, heads = 8, kv_heads = 4, seq_len = 256, batch = 16;
  long long tokens = 4'000'000;
  double minutes = 0, lr = 1e-3, min_lr = 1e-4, weight_decay = 0.1, clip = 1.0;
  int warmup = 200, eval_every = 250, threads = 0;
  std::uint64_t seed = 0;
};

// lowbit's whole-file reader (io/text_file.hpp: refuses folders and FIFOs), and no empty text.
std::string read_text(const std::string& path) {
  std::string s = lowbit::read_text_file(path);
  if (s.empty()) lowbit::fail(path, ": the text is empty");
  return s;
}

struct Point {
  long step;
  long long tokens;
  double seconds, lr, loss, gnorm, val_nll;  // val_nll: NaN where not evaluated
};

std::string fmt_time(double s) {
  char b[32];
  const long t = long(s + 0.5);
  std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  return b;
}

void write_log(const std::string& path, const std::vector<Point>& pts, const std::string& note) {
  if (path.empty()) return;
  std::string s = "step,tokens,seconds,lr,loss,grad_norm,val_nll\n";
  char b[256];
  for (const Point& p : pts) {
    std::snprintf(b, sizeof b, "%ld,%lld,%.2f,%.6g,%.5f,%.4f,", p.step, p.tokens, p.seconds, p.lr, p.loss, p.gnorm);
    s += b;
    if (std::isfinite(p.val_nll)) std::snprintf(b, sizeof b, "%.5f\n", p.val_nll), s += b;
    else s += "\n";
  }
  if (!note.empty()) s += "# " + note + "\n";
  lowbit::write_file_atomically(path, s);
}

// Training loss (mean of each 20 steps) and validation loss against tokens seen, nats per token.
void write_plot(const std::string& path, const std::vector<Point>& pts, const std::string& title) {
  if (path.empty() || pts.empty()) return;
  const double W = 720, H = 420, l = 60, r = 20, t = 40, btm = 50;
  std::vector<std::pair<double, double>> tr, va;
  double acc = 0;
  int n = 0;
  for (std::size_t i = 0; i < pts.size(); ++i) {
    acc += pts[i].loss, ++n;
    if (n == 20 || i + 1 == pts.size()) tr.emplace_back(double(pts[i].tokens), acc / n), acc = 0, n = 0;
    if (std::isfinite(pts[i].val_nll)) va.emplace_back(double(pts[i].tokens), pts[i].val_nll);
  }
  double xmax = double(pts.back().tokens), ymin = 1e9, ymax = -1e9;
  for (const auto& v : {tr, va})
    for (const auto& p : v) ymin = std::min(ymin, p.second), ymax = std::max(ymax, p.second);
  ymin = std::floor(ymin * 2) / 2, ymax = std::min(std::ceil(ymax * 2) / 2, ymin + 6.0);
  const auto X = [&](double x) { return l + (W - l - r) * x / xmax; };
  const auto Y = [&](double y) { return t + (H - t - btm) * (1 - (std::min(y, ymax) - ymin) / (ymax - ymin)); };
  std::string s;
  char b[256];
  std::snprintf(b, sizeof b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  s += b;
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"20\" font-size=\"14\">%s</text>\n", l, title.c_str());
  s += b;
  for (double y = ymin; y <= ymax + 1e-9; y += 0.5) {
    std::snprintf(b, sizeof b, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n",
                  l, Y(y), W - r, Y(y), l - 6, Y(y) + 4, y);
    s += b;
  }
  for (int k = 0; k <= 5; ++k) {
    const double x = xmax * k / 5;
    std::snprintf(b, sizeof b, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%.1fM</text>\n", X(x), H - btm + 18, x / 1e6);
    s += b;
  }
  std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">tokens seen</text>\n", (W + l) / 2, H - 10);
  s += b;
  std::snprintf(b, sizeof b, "<text x=\"14\" y=\"%g\" transform=\"rotate(-90 14 %g)\" text-anchor=\"middle\">loss (nats / token)</text>\n", H / 2, H / 2);
  s += b;
  const auto poly = [&](const std::vector<std::pair<double, double>>& v, const char* colour, const char* name, double ly) {
    if (v.empty()) return;
    std::string p;
    for (const auto& q : v) std::snprintf(b, sizeof b, "%.1f,%.1f ", X(q.first), Y(q.second)), p += b;
    s += "<polyline fill=\"none\" stroke=\"" + std::string(colour) + "\" stroke-width=\"1.5\" points=\"" + p + "\"/>\n";
    std::snprintf(b, sizeof b, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/><text x=\"%g\" y=\"%g\">%s</text>\n",
                  W - 200, ly, W - 180, ly, colour, W - 175, ly + 4, name);
    s += b;
  };
  poly(tr, "#1f77b4", "training (mean of 20 steps)", t + 10);
  poly(va, "#d62728", "validation (held-out books)", t + 28);
  s += "</svg>\n";
  lowbit::write_file_atomically(path, s);
}

int run(const Args& a) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto secs = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  if (a.threads > 0) lowbit::set_num_threads(a.threads);
  // every output checked before minutes of training, not at the first checkpoint
  lowbit::check_writable_dir(a.out);
  if (!a.log.empty()) lowbit::check_writable_file(a.log);
  if (!a.plot.empty()) lowbit::check_writable_file(a.plot);
  const std::string train_text = read_text(a.train), val_text = read_text(a.val);

  lowbit::BpeOptions bo;
  bo.vocab_size = a.vocab;
  const lowbit::Tokenizer tok = lowbit::train_bpe(train_text, bo);
  const std::vector<int> train_ids = tok.encode(train_text, true), val_ids = tok.encode(val_text, true);
  std::fprintf(stderr, "tokenizer: %zu tokens (BPE in %.1f s); training text %zu bytes -> %zu tokens, validation %zu -> %zu\n",
               tok.vocab.size(), secs(), train_text.size(), train_ids.size(), val_text.size(), val_ids.size());

  lowbit::LlamaConfig cfg;
  cfg.dim = a.dim, cfg.hidden_dim = a.hidden, cfg.n_layers = a.layers, cfg.n_heads = a.heads, cfg.n_kv_heads = a.kv_heads;
  cfg.vocab_size = int(tok.vocab.size()), cfg.max_seq_len = a.seq_len, cfg.rope = lowbit::RopeStyle::rotate_half;
  cfg.tied_embeddings = true;
  lowbit::ad::ModelParams p = lowbit::ad::ModelParams::init(cfg, a.seed, a.lr, a.weight_decay);
  long long n_params = 0;
  for (std::size_t i = 0; i < p.opt.size(); ++i) n_params += p.opt[int(i)].value.size();

  const int L = a.seq_len, B = a.batch;
  if (train_ids.size() < std::size_t(L + 2)) lowbit::fail(a.train, ": ", train_ids.size(), " tokens, too few for windows of ", L);
  const long total = long((a.tokens + (long long)B * L - 1) / ((long long)B * L));
  std::fprintf(stderr, "model: dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d, %lld parameters; %ld steps of %d x %d tokens\n",
               cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size, n_params, total, B, L);

  std::mt19937_64 rng(a.seed ^ 0x9E3779B97F4A7C15ull);
  std::uniform_int_distribution<std::size_t> pick(0, train_ids.size() - std::size_t(L) - 1);
  lowbit::ad::Tape<float> tape(std::size_t(1) << 26);
  std::vector<int> in(std::size_t(B) * L), tg(in.size());
  std::vector<Point> pts;
  std::string note;
  const bool tty = ::isatty(2);
  // validation and checkpoint together, on one copy of the parameters
  const auto evaluate_and_save = [&](Point& pt) {
    const lowbit::Model m = p.to_model();
    pt.val_nll = lowbit::perplexity(m, val_ids, L).nll;
    pts.push_back(pt);
    lowbit::HfWriter w(m, a.out, lowbit::DType::f16, {{"lowbit_recipe", "lowbit-train seed " + std::to_string(a.seed)}});
    for (int i = 0; i < cfg.n_layers; ++i) w.block(i, m.blocks[std::size_t(i)]);
    w.add_file("tokenizer.bin", lowbit::llama2c_tokenizer_bytes(tok));
    w.commit();
    write_log(a.log, pts, note);
    write_plot(a.plot, pts, "lowbit-train: dim " + std::to_string(cfg.dim) + ", " + std::to_string(cfg.n_layers) +
                                " layers, vocab " + std::to_string(cfg.vocab_size) + ", seed " + std::to_string(a.seed));
  };
  double last_val = NAN;
  for (long step = 0; step < total; ++step) {
    for (int b = 0; b < B; ++b) {
      const std::size_t o = pick(rng);
      for (int k = 0; k < L; ++k) in[std::size_t(b * L + k)] = train_ids[o + std::size_t(k)], tg[std::size_t(b * L + k)] = train_ids[o + std::size_t(k) + 1];
    }
    const double lr = lowbit::ad::cosine_lr(step, total, a.warmup, a.lr, a.min_lr);
    for (std::size_t i = 0; i < p.opt.size(); ++i) p.opt[int(i)].lr = lr;
    const auto mark = tape.mark();
    p.opt.zero_grad();
    const lowbit::ad::Var<float> loss = lowbit::ad::model_loss(tape, p, in, tg, L);
    const double lv = loss.scalar();
    if (!std::isfinite(lv)) lowbit::fail("step ", step + 1, ": the training loss is not finite (", lv, "); lower --lr");
    tape.backward(loss);
    tape.rewind(mark);
    if (!p.opt.grads_finite()) lowbit::fail("step ", step + 1, ": a gradient is not finite; lower --lr");
    const double gn = lowbit::ad::clip_grad_norm(p.opt, a.clip);
    p.opt.step();
    Point pt{step + 1, (long long)(step + 1) * B * L, secs(), lr, lv, gn, NAN};
    const bool stop_time = a.minutes > 0 && pt.seconds > a.minutes * 60;
    const bool last = step + 1 == total || stop_time;
    if (stop_time) note = "stopped by --minutes " + std::to_string(a.minutes) + " at step " + std::to_string(step + 1) + " of " + std::to_string(total);
    if ((step + 1) % a.eval_every == 0 || last) {
      evaluate_and_save(pt);
      last_val = pt.val_nll;
    } else {
      pts.push_back(pt);
    }
    const double rate = double(pt.tokens) / pt.seconds;
    const double eta = double(total - step - 1) * B * L / rate;
    if (tty || (step + 1) % 50 == 0 || last)
      std::fprintf(stderr, "%sstep %ld/%ld  %.2fM/%.2fM tokens  %.0f tok/s  loss %.3f  val ppl %s  lr %.2e  ETA %s%s",
                   tty ? "\r" : "", step + 1, total, pt.tokens / 1e6, double(total) * B * L / 1e6, rate, lv,
                   std::isfinite(last_val) ? std::to_string(std::exp(last_val)).substr(0, 6).c_str() : "-", lr,
                   fmt_time(eta).c_str(), tty ? "   " : "\n");
    if (stop_time) break;
  }
  if (tty) std::fprintf(stderr, "\n");
  // the folder as written (fp16), read back and evaluated: the figure a user of the model gets
  const lowbit::Model back = lowbit::load_model(a.out);
  const lowbit::PerplexityResult r = lowbit::perplexity(back, val_ids, L);
  std::printf("{\"out\":\"%s\",\"parameters\":%lld,\"vocab\":%d,\"steps\":%zu,\"tokens\":%lld,\"seconds\":%.1f,"
              "\"train_loss_last\":%.4f,\"val_ppl_fp32\":%.4f,\"val_ppl_fp16\":%.4f,\"val_predictions\":%lld%s%s%s}\n",
              a.out.c_str(), n_params, cfg.vocab_size, pts.size(), pts.back().tokens, secs(), pts.back().loss,
              std::exp(last_val), r.ppl, (long long)r.predictions, note.empty() ? "" : ",\"note\":\"", note.c_str(),
              note.empty() ? "" : "\"");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"lowbit-train: train a small LLaMA-architecture model from scratch (BPE tokenizer + model)"};
  app.add_option("--train", a.train, "training text")->required();
  app.add_option("--val", a.val, "validation text (held out: never trained on)")->required();
  app.add_option("--out", a.out, "the model folder to write (model.safetensors, config.json, tokenizer.bin)")->required();
  app.add_option("--vocab", a.vocab, "BPE vocabulary size (259 specials and bytes included)")->capture_default_str();
  app.add_option("--dim", a.dim, "model width")->capture_default_str();
  app.add_option("--hidden", a.hidden, "MLP width")->capture_default_str();
  app.add_option("--layers", a.layers, "blocks")->capture_default_str();
  app.add_option("--heads", a.heads, "attention heads")->capture_default_str();
  app.add_option("--kv-heads", a.kv_heads, "K/V heads (GQA)")->capture_default_str();
  app.add_option("--seq-len", a.seq_len, "tokens per window (training and evaluation)")->capture_default_str()->check(CLI::Range(8, 8192));
  app.add_option("--batch", a.batch, "windows per step")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--tokens", a.tokens, "token budget: the schedule's length")->capture_default_str()->check(CLI::Range(1LL, 1LL << 40));
  app.add_option("--minutes", a.minutes, "stop early after this long (0: never)")->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", a.min_lr, "final learning rate")->capture_default_str();
  app.add_option("--warmup", a.warmup, "warm-up steps")->capture_default_str()->check(CLI::Range(1, 1 << 30));
  app.add_option("--weight-decay", a.weight_decay, "AdamW weight decay of the matrices")->capture_default_str();
  app.add_option("--clip", a.clip, "gradient-norm clip (0: none)")->capture_default_str();
  app.add_option("--seed", a.seed, "seed of the initial weights and the window draws")->capture_default_str();
  app.add_option("--eval-every", a.eval_every, "steps between validation + checkpoint")->capture_default_str()->check(CLI::Range(1, 1 << 30));
  app.add_option("--log", a.log, "training log (CSV)");
  app.add_option("--plot", a.plot, "training curve (SVG)");
  app.add_option("--threads", a.threads, "threads (default: all)")->check(CLI::Range(1, 4096));
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nlowbit-train: error: %s\n", e.what());
    return 1;
  }
}
