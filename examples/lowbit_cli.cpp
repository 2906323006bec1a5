// lowbit: the command-line tool.  `lowbit --help`, `lowbit help quantize` and `lowbit quantize --help` list every
// option with its default and allowed values.
//
//   lowbit eval --model PATH --data FILE [--seq-len N] [--max-tokens M] [--tokenizer PATH] [--threads T] [--json]
//   lowbit quantize --model PATH --method rtn|awq|gptq|smoothquant|shift|pss|os+|awq+gptq|smoothquant+gptq ...
//                   (--spec w4a16g128[-sym][-ragged] | w8a8 | --wbits B ... | --quant-type A8W8|WINT8|WINT4)
//                   [--abits A --act-granularity per_token|per_tensor --act-static --qk-bits B --kv-bits B]
//                   [--calib FILE ...] [--save-fake DIR] [--save-gguf FILE] [--save-awq DIR] [--save-gptq DIR]
//                   [--eval FILE ...] [--json]
//   lowbit convert --model PATH --save-gguf FILE [--gguf-type f32|f16|q8_0|q4_0|q4_1|q4_k|q6_k] [--tokenizer PATH]
//                   (llama.cpp's convert + llama-quantize without an importance matrix, in one step)
//
// Options are parsed by CLI11 (--opt value and --opt=value; numbers range-checked before anything runs; a typo
// gets the nearest option suggested) and every file and folder is checked before the long work starts: input
// files exist and are regular files, output locations are probed, options that do not apply to the chosen
// method are warned about.  Progress goes to stderr (also with --json, whose one JSON object goes to stdout).
// Errors go to stderr with exit code 1; usage errors exit with 2.
//
// --model: a llama2.c checkpoint (legacy .bin or ak42 v1/v2), a GGUF file or a Hugging Face folder.
// --tokenizer: llama2.c tokenizer.bin, a SentencePiece .vocab, or (built with libsentencepiece) a SentencePiece
// .model; by default the GGUF's own vocabulary, else tokenizer.model / tokenizer.bin / tok*.bin / *.vocab beside
// the model.  Data files: text (encoded as BOS + the whole text) or raw int32 token ids (*.i32).
//
// Threads: OpenMP's default is to spin while waiting for work, which on a machine shared with other jobs turns
// into waiting for a descheduled thread.  Unless OMP_WAIT_POLICY is set, lowbit runs with OMP_WAIT_POLICY=passive
// (libgomp reads it once at start-up, so the tool re-executes itself with it set); docs/benchmarks.md has the
// measurements and the --threads guidance.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_config.hpp"
#include <optional>
#include <string>
#include <vector>

#include "cli_quantize.hpp"

#if LOWBIT_HAS_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

const std::string kVersion = std::to_string(LOWBIT_VERSION_MAJOR) + "." + std::to_string(LOWBIT_VERSION_MINOR) + "." +
                             std::to_string(LOWBIT_VERSION_PATCH);

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// ---- what the user sees while it runs -------------------------------------------------------------------

// Progress and warnings on stderr; warnings are also kept for --json.
struct Console {
  bool quiet = false;
  std::vector<std::string> warnings;
  void progress(const std::string& line) const {
    if (quiet) return;
    std::fprintf(stderr, "[lowbit] %s\n", line.c_str());
    std::fflush(stderr);
  }
  void warning(const std::string& m) {
    warnings.push_back(m);
    std::fprintf(stderr, "lowbit: warning: %s\n", m.c_str());
  }
};
Console console;

// Evaluation progress: a line per step on a log, one line rewritten in place on a terminal.
std::function<void(std::int64_t, std::int64_t)> eval_progress(const std::string& label) {
  if (console.quiet) return {};
  const auto t0 = Clock::now();
  const bool tty = ::isatty(2);
  return [=](std::int64_t done, std::int64_t total) {
    if (!tty && done != total && done * 10 / total == (done - 1) * 10 / total) return;  // ~10 lines on a log
    std::fprintf(stderr, "%s[lowbit] %s: window %lld/%lld  %6.1fs%s", tty ? "\r" : "", label.c_str(), (long long)done,
                 (long long)total, since(t0), tty && done != total ? "   " : "\n");
    std::fflush(stderr);
  };
}

// ---- inputs ---------------------------------------------------------------------------------------------

std::string find_tokenizer(const std::string& model_path, bool is_dir) {
  const std::size_t slash = model_path.find_last_of('/');
  const std::string dir = is_dir ? model_path : slash == std::string::npos ? "." : model_path.substr(0, slash);
  std::vector<std::string> found;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n == "tokenizer.bin" || n == "tokenizer.model" || (n.rfind("tok", 0) == 0 && ends_with(n, ".bin")) ||
          ends_with(n, ".vocab"))
        found.push_back(dir + "/" + n);
    }
    closedir(d);
  }
  if (found.size() != 1)
    lowbit::fail(model_path, ": pass --tokenizer (found ", found.size(), " tokenizer candidates beside the model)");
  return found[0];
}

// Token ids of BOS + text with the tokenizer at `path`.
std::vector<int> encode_with(const std::string& path, int vocab, const std::string& text) {
  if (ends_with(path, ".model")) {
#if LOWBIT_HAS_SENTENCEPIECE
    sentencepiece::SentencePieceProcessor sp;
    const auto status = sp.Load(path);
    if (!status.ok()) lowbit::fail(path, ": ", status.ToString());
    if (sp.GetPieceSize() != vocab) lowbit::fail(path, ": ", sp.GetPieceSize(), " pieces but the model's vocabulary is ", vocab);
    std::vector<int> ids;
    if (!sp.Encode(text, &ids).ok()) lowbit::fail(path, ": encoding failed");
    ids.insert(ids.begin(), sp.bos_id() >= 0 ? sp.bos_id() : 1);
    return ids;
#else
    lowbit::fail(path, ": SentencePiece .model files need lowbit built with libsentencepiece-dev "
                 "(or pass the .vocab text file, or token ids as .i32)");
#endif
  }
  const lowbit::Tokenizer tok = ends_with(path, ".vocab") ? lowbit::Tokenizer::load_sentencepiece_vocab(path)
                                                          : lowbit::Tokenizer::load_llama2c(path, vocab);
  if (int(tok.vocab.size()) != vocab)
    lowbit::fail(path, ": ", tok.vocab.size(), " tokens but the model's vocabulary is ", vocab);
  return tok.encode(text, true);
}

struct LoadedModel {
  std::string path;
  lowbit::Model model;
  lowbit::GgufModel gguf;
  bool is_dir = false, is_gguf = false;
  const char* format() const { return is_dir ? "huggingface" : is_gguf ? "gguf" : "llama2c"; }
};

LoadedModel load_any(const std::string& path, lowbit::Tables tables = lowbit::Tables::resident) {
  LoadedModel r;
  r.path = path;
  struct stat st;
  r.is_dir = ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (!r.is_dir) {
    const lowbit::MappedFile f(path);  // refuses missing and non-regular files with the system's reason
    r.is_gguf = f.size() >= 4 && std::memcmp(f.data(), "GGUF", 4) == 0;
  }
  if (r.is_gguf) {
    r.gguf = lowbit::load_gguf(path);
    r.model = std::move(r.gguf.model);
  } else {
    r.model = lowbit::load_model(path, tables);
  }
  return r;
}

// Token ids of a data file: raw int32 ids (*.i32), or BOS + the text encoded with the model's tokenizer.
std::vector<int> load_ids(const LoadedModel& lm, const std::string& tokenizer, const std::string& data) {
  const auto t0 = Clock::now();
  console.progress("reading " + data);
  std::vector<int> ids;
  if (ends_with(data, ".i32")) {
    ids = lowbit::read_token_file(data);
  } else {
    const std::string text = lowbit::read_text_file(data);
    if (lm.is_gguf && lm.gguf.has_tokenizer && tokenizer.empty()) ids = lm.gguf.tokenizer.encode(text, true);
    else
      ids = encode_with(tokenizer.empty() ? find_tokenizer(lm.path, lm.is_dir) : tokenizer, lm.model.cfg.vocab_size, text);
  }
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= lm.model.cfg.vocab_size)
      lowbit::fail(data, ": token id ", ids[i], " at position ", i, " is outside the model's vocabulary (", lm.model.cfg.vocab_size, ")");
  if (!ends_with(data, ".i32")) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%zu tokens in %.2f s", ids.size(), since(t0));
    console.progress("tokenized " + data + ": " + buf);
  }
  return ids;
}

// A file that must exist and be a regular file (a FIFO would block; a folder is a mistake).
void check_input_file(const std::string& opt, const std::string& path) {
  if (path.empty()) return;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) lowbit::fail(opt, " ", path, ": ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) lowbit::fail(opt, " ", path, ": not a regular file");
}

void check_model_path(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) lowbit::fail("--model ", path, ": ", std::strerror(errno));
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) lowbit::fail("--model ", path, ": not a file or a folder");
}

Json model_json(const LoadedModel& lm) {
  const lowbit::LlamaConfig& c = lm.model.cfg;
  return Json{{"path", lm.path},         {"format", lm.format()},  {"dim", c.dim},       {"hidden_dim", c.hidden_dim},
              {"layers", c.n_layers},    {"heads", c.n_heads},     {"kv_heads", c.n_kv_heads},
              {"vocab", c.vocab_size},   {"context", c.max_seq_len}};
}

// ---- GGUF output ----------------------------------------------------------------------------------------

// The tokenizer a GGUF export embeds: the GGUF's own, else --tokenizer or the one beside the model (a llama2.c
// tokenizer.bin or a SentencePiece .vocab; for a .model, the .vocab beside it).
lowbit::Tokenizer tokenizer_for_gguf(const LoadedModel& lm, const std::string& given) {
  if (lm.is_gguf && lm.gguf.has_tokenizer && given.empty()) return lm.gguf.tokenizer;
  std::string path = given.empty() ? find_tokenizer(lm.path, lm.is_dir) : given;
  if (ends_with(path, ".model")) {
    const std::string vocab = path.substr(0, path.size() - 6) + ".vocab";
    struct stat st;
    if (::stat(vocab.c_str(), &st) != 0)
      lowbit::fail("--save-gguf: ", path, " is a SentencePiece .model; the GGUF's vocabulary is read from its .vocab text "
                   "file (", vocab, " is missing): pass --tokenizer FILE.vocab");
    path = vocab;
  }
  lowbit::Tokenizer t = ends_with(path, ".vocab") ? lowbit::Tokenizer::load_sentencepiece_vocab(path)
                                                  : lowbit::Tokenizer::load_llama2c(path, lm.model.cfg.vocab_size);
  if (int(t.vocab.size()) != lm.model.cfg.vocab_size)
    lowbit::fail("--save-gguf: ", path, " has ", t.vocab.size(), " tokens but the model's vocabulary is ", lm.model.cfg.vocab_size);
  return t;
}

// --gguf-type auto: the block type that holds the spec's codes as they are (pack/ggml.hpp ggml_pack_codes).
lowbit::GgmlType auto_gguf_type(const lowbit::QuantSpec& s) {
  if (!s.weight_quantized()) return lowbit::GgmlType::f16;
  if (s.wbits > 4) return lowbit::GgmlType::q8_0;
  // OmniQuant's symmetric grid has z = 2^(b-1) - 1 (codes up to +2^(b-1)): no Q4_0, its codes fit Q4_1
  return s.symmetric && s.grid != lowbit::Grid::omniquant ? lowbit::GgmlType::q4_0 : lowbit::GgmlType::q4_1;
}

struct GgufSummary {
  int codes = 0, requantized = 0, fallback = 0;
  double worst = 0;  // the largest relative RMS error of a linear against the method's weights
  std::string worst_name;
};
GgufSummary summarize(const lowbit::GgufModelWriter& w) {
  GgufSummary s;
  for (const lowbit::GgufTensorReport& r : w.report()) {
    if (r.name.rfind("blk.", 0) != 0 || r.type == lowbit::GgmlType::f32) continue;  // the linears
    s.codes += r.how == lowbit::GgufStorage::codes;
    s.requantized += r.how == lowbit::GgufStorage::requantized;
    s.fallback += r.how == lowbit::GgufStorage::f16_fallback;
    if (r.rel_rms > s.worst) s.worst = r.rel_rms, s.worst_name = r.name;
  }
  return s;
}

void report_gguf(const lowbit::GgufModelWriter& w, const std::string& path) {
  const GgufSummary s = summarize(w);
  char line[512];
  std::snprintf(line, sizeof line, "%s: %d linears as the method's codes, %d re-quantized, %d F16 (rows not a multiple of 32); "
                "%.2f MB of tensors; largest error against the method's weights %.2e (%s)", path.c_str(), s.codes,
                s.requantized, s.fallback, double(w.bytes()) / 1e6, s.worst, s.worst_name.c_str());
  console.progress(line);
  if (s.requantized)
    console.warning(path + ": " + std::to_string(s.requantized) + " linears are not in the method's grid as GGUF blocks "
                    "(groups not a multiple of 32, act-order, or another type asked): re-quantized with llama.cpp's "
                    "reference quantizer, which adds error (see \"gguf\" in --json)");
}

// The linears each packed checkpoint keeps as fp16 weights, and why.
Json packed_json(const lowbit::HfPackedSink* awq, const lowbit::HfPackedSink* gptq) {
  Json j = Json::object();
  if (awq) j["awq"] = awq->writer().skipped();
  if (gptq) j["gptq"] = gptq->writer().skipped();
  return j;
}

Json gguf_json(const lowbit::GgufModelWriter& w) {
  const GgufSummary s = summarize(w);
  Json tensors = Json::array();
  for (const lowbit::GgufTensorReport& r : w.report())
    tensors.push_back(Json{{"name", r.name}, {"type", lowbit::to_string(r.type)}, {"storage", lowbit::to_string(r.how)},
                           {"rel_rms", r.rel_rms}, {"bytes", r.bytes}});
  return Json{{"linears_codes", s.codes}, {"linears_requantized", s.requantized}, {"linears_f16", s.fallback},
              {"max_rel_rms", s.worst}, {"tensor_bytes", w.bytes()}, {"tensors", tensors}};
}

// ---- options --------------------------------------------------------------------------------------------

// Plain decimal integers only (CLI11 alone would read "010" as octal, "0x10" as hex and "-1" as 2^64-1 for an
// unsigned option).
CLI::Validator decimal(bool allow_sign) {
  return CLI::Validator(
      [allow_sign](std::string& s) -> std::string {
        const std::size_t start = allow_sign && !s.empty() && s[0] == '-' ? 1 : 0;
        if (s.size() == start || s.size() > 19 || s.find_first_not_of("0123456789", start) != std::string::npos ||
            (s[start] == '0' && s.size() > start + 1))
          return "'" + s + "' is not a " + (allow_sign ? "decimal integer" : "non-negative decimal integer");
        return "";
      },
      "", "decimal");
}
const CLI::Validator kCount = decimal(false), kInt = decimal(true);

const CLI::Validator kFinite(
    [](std::string& s) -> std::string {
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (s.empty() || *end != '\0' || !std::isfinite(v)) return "'" + s + "' is not a finite number";
      return "";
    },
    "", "finite");

// The nearest option names to a mistyped one (edit distance <= 3), for "did you mean".
std::string suggest(const CLI::App& app, const std::string& arg) {
  std::string name = arg.substr(0, arg.find('='));
  while (!name.empty() && name[0] == '-') name.erase(0, 1);
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::size_t> d(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) d[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t prev = d[0];
      d[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t cur = d[j];
        d[j] = std::min({d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
        prev = cur;
      }
    }
    return d[b.size()];
  };
  std::size_t best = 4;
  std::string out;
  for (const CLI::Option* o : app.get_options())
    for (const std::string& l : o->get_lnames()) {
      const std::size_t dd = distance(name, l);
      if (dd < best) best = dd, out = "--" + l;
    }
  return out;
}

struct EvalArgs {
  std::string model, tokenizer, data;
  int seq_len = 0;  // 0: min(512, the model's context)
  std::int64_t max_tokens = 0;
  std::string scoring = "all";
  int threads = 0;
  bool json = false, quiet = false;
};

struct ConvertArgs {
  std::string model, tokenizer, save_gguf, gguf_type = "f16";
  int threads = 0;
  bool json = false, quiet = false;
};

struct QuantizeArgs {
  std::string model, tokenizer, method, spec, grid;
  int wbits = 0, group = -1;
  bool sym = false, ragged = false;
  // GPTQ
  bool act_order = false, static_groups = false;
  double percdamp = 0.01;
  // AWQ
  bool duo_scaling = false, no_clip = false, asym_clip = false;
  std::string awq_scoring = "fast";
  int awq_scale_tokens = 4096;
  std::string propagate;
  // weight-activation
  int abits = 0, qk_bits = 0, kv_bits = 0;
  std::string act_granularity = "per_token", act_observer = "minmax", act_grid = "minmax";
  bool act_static = false, act_asym = false;
  double act_percentile = 99.99;
  std::string quant_type, weight_quant_method = "abs_max_channel_wise";
  // transforms: SmoothQuant, shift, PSS, OS+
  double alpha = 0.5;
  bool smooth_all_linears = false, shift = false, shift_all_linears = false, search_piece = false;
  std::string shift_sampler = "minmax";
  int k_piece = 3, search_tokens = 512;
  // OmniQuant
  int epochs = 20, omni_batch = 1;
  bool no_lwc = false, let = false, aug_loss = false, search_clip_init = false;
  double lr_lwc = 1e-2, lr_let = 5e-3, omni_wd = 0.0, lwc_init = 4.0;
  // calibration
  std::string calib, calib_sampling = "random";
  int calib_samples = 128, calib_seq_len = 256;
  std::uint64_t seed = 0;
  // outputs
  std::string save_fake, save_trans, save_scale, save_clip, load_scale, load_clip, save_dtype = "f32";
  std::string save_gguf, gguf_type = "auto", gguf_fallback = "quantized";
  std::string save_awq, save_gptq;
  // configs: the files (translated into the options above before parsing), --dry-run, and the plan main resolved
  std::string config, paddle_args;
  bool dry_run = false;
  std::vector<lowbit_cli::ConfigArg> from_config;
  std::string plan;
  // evaluation
  std::string eval, fp_eval_from;
  int eval_seq_len = 0;
  std::int64_t eval_max_tokens = 0;
  bool no_fp_eval = false;
  int threads = 0;
  bool json = false, quiet = false;
  std::vector<std::string> given;  // the options on the command line (long names)
  bool has(const std::string& name) const { return std::find(given.begin(), given.end(), name) != given.end(); }
};

void add_common(CLI::App* c, std::string& model, std::string& tokenizer, int& threads, bool& json, bool& quiet) {
  c->add_option("--model", model, "llama2.c .bin, .gguf, or a Hugging Face folder")->required()->group("Model");
  c->add_option("--tokenizer", tokenizer,
                "llama2.c tokenizer.bin, SentencePiece .vocab or .model (default: the GGUF's own, else the one beside the model)")
      ->group("Model");
  c->add_option("--threads", threads, "threads (default: all cores; see docs/benchmarks.md on shared machines)")
      ->check(kCount)
      ->check(CLI::Range(1, 1024))
      ->group("Run");
  c->add_flag("--json", json, "print one JSON object on stdout (progress stays on stderr)")->group("Run");
  c->add_flag("--quiet", quiet, "no progress lines (warnings and errors are still printed)")->group("Run");
}

void add_eval_options(CLI::App* c, EvalArgs& a) {
  add_common(c, a.model, a.tokenizer, a.threads, a.json, a.quiet);
  c->add_option("--data", a.data, "text file (BOS + the whole text) or int32 token ids (*.i32)")->required()->group("Evaluation");
  c->add_option("--seq-len,--eval-seq-len", a.seq_len, "window length (default: min(512, the model's context))")
      ->check(kCount)
      ->check(CLI::Range(2, 1 << 20))
      ->group("Evaluation");
  c->add_option("--max-tokens,--eval-max-tokens", a.max_tokens, "use only the first M token ids (default: all)")
      ->check(kCount)
      ->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 40))
      ->group("Evaluation");
  c->add_option("--scoring", a.scoring,
                "all: every prediction of every window (GPTQ / AWQ); llama-perplexity: llama.cpp's rule (BOS at each "
                "window's start, only its second half scored)")
      ->capture_default_str()
      ->check(CLI::IsMember({"all", "llama-perplexity"}))
      ->group("Evaluation");
}

void add_convert_options(CLI::App* c, ConvertArgs& a) {
  add_common(c, a.model, a.tokenizer, a.threads, a.json, a.quiet);
  c->add_option("--save-gguf", a.save_gguf, "the GGUF file to write")->required()->group("Outputs");
  c->add_option("--gguf-type", a.gguf_type, "the linears' type (q4_0 / q4_1 / q8_0 / q4_k / q6_k: llama.cpp's reference quantizers)")
      ->capture_default_str()
      ->check(CLI::IsMember({"q4_0", "q4_1", "q8_0", "q4_k", "q6_k", "f16", "f32"}))
      ->group("Outputs");
}

void add_quantize_options(CLI::App* c, QuantizeArgs& a) {
  add_common(c, a.model, a.tokenizer, a.threads, a.json, a.quiet);
  std::string methods;
  for (const lowbit::MethodInfo* m : lowbit::method_infos()) methods += (methods.empty() ? "" : ", ") + std::string(m->name);
  c->add_option("--method", a.method, "method or chain: " + methods + ", or transforms then one quantizer (awq+gptq); awq+omniquant: the two-step AWQ -> OmniQuant workflow (5 epochs)")
      ->required()
      ->group("Method");
  auto* spec = c->add_option("--spec", a.spec, "quantizer spec: w<bits>a<bits>[g<group>][-sym][-ragged][-minmax|-gptq|-omniquant|-ggml] (a16: weight-only)")
                   ->group("Method");
  auto* wbits = c->add_option("--wbits", a.wbits, "weight bits (instead of --spec)")->check(kCount)->check(CLI::Range(2, 8))->group("Method");
  auto* group = c->add_option("--group", a.group, "group size; -1 = per output channel")
                    ->capture_default_str()
                    ->check(kInt)
                    ->check(CLI::Range(-1, 1 << 20))
                    ->group("Method");
  auto* sym = c->add_flag("--sym", a.sym, "symmetric (spec suffix -sym)")->group("Method");
  auto* ragged = c->add_flag("--ragged", a.ragged, "allow a shorter last group when the group size does not divide a row (spec suffix -ragged)")
                     ->group("Method");
  spec->excludes(wbits)->excludes(group)->excludes(sym)->excludes(ragged);
  group->needs(wbits);
  c->add_option("--grid", a.grid, "integer grid (default: the method's reference: gptq for gptq chains, else minmax)")
      ->check(CLI::IsMember({"minmax", "gptq", "omniquant", "ggml"}))
      ->group("Method");
  // GPTQ
  c->add_flag("--act-order", a.act_order, "GPTQ: columns in order of decreasing Hessian diagonal")->group("GPTQ");
  c->add_flag("--static-groups", a.static_groups, "GPTQ: group parameters fixed before the updates")->group("GPTQ");
  c->add_option("--percdamp", a.percdamp, "GPTQ: damping as a fraction of mean(diag H)")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::Range(0.0, 10.0))
      ->group("GPTQ");
  // AWQ
  c->add_flag("--duo-scaling", a.duo_scaling, "AWQ: scales x^r / w^(1-r) (AutoAWQ) instead of x^r (llm-awq)")->group("AWQ");
  c->add_option("--awq-scoring", a.awq_scoring, "AWQ: candidate scoring: fast (exact Gram + sampled module loss), module (the reference), gram")
      ->capture_default_str()
      ->check(CLI::IsMember({"fast", "module", "gram"}))
      ->group("AWQ");
  c->add_option("--awq-scale-tokens", a.awq_scale_tokens, "AWQ fast scoring: tokens the module loss is scored on")
      ->capture_default_str()
      ->check(kCount)
      ->check(CLI::Range(1, 1 << 24))
      ->group("AWQ");
  c->add_flag("--no-clip", a.no_clip, "AWQ: skip the clip search")->group("AWQ");
  c->add_flag("--asym-clip", a.asym_clip, "AWQ: search min and max clips (the reference clips symmetrically)")->group("AWQ");
  c->add_option("--load-scale", a.load_scale, "AWQ: apply these scales (safetensors) instead of searching")->group("AWQ");
  c->add_option("--load-clip", a.load_clip, "AWQ: apply these clips instead of searching")->group("AWQ");
  // weight-activation quantization
  c->add_option("--abits", a.abits, "activation bits (2..8; 16 = not quantized; the spec's a<bits> otherwise)")
      ->check(kCount)
      ->check(CLI::IsMember({2, 3, 4, 5, 6, 7, 8, 16}))
      ->group("Activations");
  c->add_option("--act-granularity", a.act_granularity, "per_token (dynamic, one range per row) or per_tensor")
      ->capture_default_str()
      ->check(CLI::IsMember({"per_token", "per_tensor"}))
      ->group("Activations");
  c->add_flag("--act-static", a.act_static, "per-tensor ranges calibrated once (implies per_tensor; PaddleSlim's ptq_step)")->group("Activations");
  c->add_option("--act-observer", a.act_observer, "how static ranges are calibrated: minmax, ema or percentile")
      ->capture_default_str()
      ->check(CLI::IsMember({"minmax", "ema", "percentile"}))
      ->group("Activations");
  c->add_option("--act-percentile", a.act_percentile, "percentile observer: the percentile kept")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::Range(50.0, 100.0))
      ->group("Activations");
  c->add_flag("--act-asym", a.act_asym, "asymmetric activations (default symmetric: SmoothQuant, LLMC, int8 GEMMs)")->group("Activations");
  c->add_option("--act-grid", a.act_grid, "activation grid: minmax or omniquant")
      ->capture_default_str()
      ->check(CLI::IsMember({"minmax", "omniquant"}))
      ->group("Activations");
  c->add_option("--qk-bits", a.qk_bits, "quantize the attention's Q and K after RoPE, per (token, head)")
      ->check(kCount)
      ->check(CLI::Range(2, 8))
      ->group("Activations");
  c->add_option("--kv-bits", a.kv_bits, "quantize the attention's K (after RoPE) and V, per (token, head): the KV cache")
      ->check(kCount)
      ->check(CLI::Range(2, 8))
      ->group("Activations");
  c->add_option("--quant-type", a.quant_type, "PaddleSlim preset: A8W8 (int8 per-channel weights, static int8 activations), WINT8, WINT4")
      ->check(CLI::IsMember({"a8w8", "wint8", "wint4"}, CLI::ignore_case))
      ->group("Activations");
  c->add_option("--weight-quant-method", a.weight_quant_method, "PaddleSlim preset weights: abs_max_channel_wise or groupwise (--group, default 128)")
      ->capture_default_str()
      ->check(CLI::IsMember({"abs_max_channel_wise", "groupwise"}))
      ->group("Activations");
  // transforms
  c->add_option("--alpha", a.alpha, "SmoothQuant: migration strength (0.8-0.85 typical for LLaMA)")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::Range(0.0, 1.0))
      ->group("Smoothing");
  c->add_flag("--smooth-all-linears", a.smooth_all_linears, "SmoothQuant / PSS: also o (after v) and down (after up)")->group("Smoothing");
  c->add_flag("--shift", a.shift, "shift the activations first (OS+ / PaddleSlim shift): the method runs as shift+METHOD")->group("Smoothing");
  c->add_option("--shift-sampler", a.shift_sampler, "shift: minmax (midpoint of each channel's range) or ema (of the channel means)")
      ->capture_default_str()
      ->check(CLI::IsMember({"minmax", "ema"}))
      ->group("Smoothing");
  c->add_flag("--shift-all-linears", a.shift_all_linears, "shift: also the inputs of o and down")->group("Smoothing");
  c->add_option("--k-piece", a.k_piece, "PSS: pieces the channels are split into")
      ->capture_default_str()
      ->check(kCount)
      ->check(CLI::Range(1, 64))
      ->group("Smoothing");
  c->add_flag("--search-piece", a.search_piece, "PSS: also search the number of pieces (1..k)")->group("Smoothing");
  c->add_option("--epochs", a.epochs, "OmniQuant: training epochs per block (reference scripts: 20, 40 at W2)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000))
      ->group("OmniQuant");
  c->add_flag("--no-lwc", a.no_lwc, "OmniQuant: no learnable weight clipping (LWC is on by default)")->group("OmniQuant");
  c->add_flag("--let", a.let, "OmniQuant: learnable equivalent transforms (per-channel scales; init from --alpha)")->group("OmniQuant");
  c->add_flag("--search-clip-init", a.search_clip_init, "OmniQuant: LWC starts from AWQ's clip search on each block (LLMC search_clip_init)")->group("OmniQuant");
  c->add_flag("--aug-loss", a.aug_loss, "OmniQuant: add the loss against the full-precision block on the quantized input")->group("OmniQuant");
  c->add_option("--lr-lwc", a.lr_lwc, "OmniQuant: LWC learning rate")->capture_default_str()->check(kFinite)->check(CLI::PositiveNumber)->group("OmniQuant");
  c->add_option("--lr-let", a.lr_let, "OmniQuant: LET learning rate")->capture_default_str()->check(kFinite)->check(CLI::PositiveNumber)->group("OmniQuant");
  c->add_option("--wd", a.omni_wd, "OmniQuant: AdamW weight decay")->capture_default_str()->check(kFinite)->check(CLI::NonNegativeNumber)->group("OmniQuant");
  c->add_option("--lwc-init", a.lwc_init, "OmniQuant: initial clip logit (sigmoid(4) = 0.982)")->capture_default_str()->check(kFinite)->group("OmniQuant");
  c->add_option("--omni-batch", a.omni_batch, "OmniQuant: calibration samples per training step (reference: 1)")
      ->capture_default_str()
      ->check(kCount)
      ->group("OmniQuant");
  c->add_option("--search-tokens", a.search_tokens, "PSS / OS+: calibration rows the candidates are scored on")
      ->capture_default_str()
      ->check(kCount)
      ->check(CLI::Range(1, 1 << 24))
      ->group("Smoothing");
  c->add_option("--propagate", a.propagate, "chain every step reads: fp (full precision) or quant (default: each method's reference)")
      ->check(CLI::IsMember({"fp", "quant"}))
      ->group("Method");
  // calibration
  c->add_option("--calib", a.calib, "calibration text or int32 token ids (*.i32)")->group("Calibration");
  c->add_option("--calib-samples,--nsamples", a.calib_samples, "calibration windows")
      ->capture_default_str()
      ->check(kCount)
      ->check(CLI::Range(1, 1 << 24))
      ->group("Calibration");
  c->add_option("--calib-seq-len,--seqlen", a.calib_seq_len, "calibration window length")
      ->capture_default_str()
      ->check(kCount)
      ->check(CLI::Range(1, 1 << 20))
      ->group("Calibration");
  c->add_option("--calib-sampling", a.calib_sampling, "random (GPTQ's random offsets) or sequential (the first windows)")
      ->capture_default_str()
      ->check(CLI::IsMember({"random", "sequential"}))
      ->group("Calibration");
  c->add_option("--seed", a.seed, "seed of random calibration windows")->capture_default_str()->check(kCount)->group("Calibration");
  // outputs
  c->add_option("--save-fake", a.save_fake, "write the fake-quantized model as a Hugging Face folder")->group("Outputs");
  c->add_option("--save-trans", a.save_trans, "write the transformed (not quantized) model as a Hugging Face folder")->group("Outputs");
  c->add_option("--save-dtype", a.save_dtype, "dtype of the saved folders")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16"}))
      ->group("Outputs");
  c->add_option("--save-gguf", a.save_gguf, "write the quantized model as a llama.cpp GGUF file")->group("Outputs");
  c->add_option("--gguf-type", a.gguf_type,
                "the GGUF linears' type; auto: the one that holds the method's codes (q4_0 for a symmetric grid at <= 4 "
                "bits, q4_1 asymmetric, q8_0 above 4 bits)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "q4_0", "q4_1", "q8_0", "q4_k", "q6_k", "f16", "f32"}))
      ->group("Outputs");
  c->add_option("--gguf-fallback", a.gguf_fallback,
                "what a linear whose rows are not whole blocks holds as F16: the method's quantized weights, or its float "
                "(transformed) weights, as llama.cpp's own fallback")
      ->capture_default_str()
      ->check(CLI::IsMember({"quantized", "float"}))
      ->group("Outputs");
  c->add_option("--config", a.config, "an LLMC-style YAML config (keys: lowbit help config); its keys become these options")
      ->group("Config");
  c->add_option("--paddle-args", a.paddle_args, "a PaddleSlim-style JSON argument file (keys: lowbit help config)")->group("Config");
  c->add_flag("--dry-run", a.dry_run, "check everything and print the resolved plan (every option's value), then stop")->group("Config");
  c->add_option("--save-awq", a.save_awq,
                "write the quantized model as an AutoAWQ GEMM checkpoint folder (4 bits; vLLM / Transformers quant_method awq)")
      ->group("Outputs");
  c->add_option("--save-gptq", a.save_gptq,
                "write the quantized model as a GPTQ checkpoint folder (2 / 3 / 4 / 8 bits, g_idx; quant_method gptq)")
      ->group("Outputs");
  c->add_option("--save-scale", a.save_scale, "write AWQ's scales (safetensors)")->group("Outputs");
  c->add_option("--save-clip", a.save_clip, "write AWQ's clips (safetensors)")->group("Outputs");
  // evaluation
  c->add_option("--eval", a.eval, "evaluate perplexity before and after on this text or *.i32 file")->group("Evaluation");
  c->add_option("--eval-seq-len", a.eval_seq_len, "evaluation window length (default: min(512, the model's context))")
      ->check(kCount)
      ->check(CLI::Range(2, 1 << 20))
      ->group("Evaluation");
  c->add_option("--eval-max-tokens", a.eval_max_tokens, "evaluate only the first M token ids (default: all)")
      ->check(kCount)
      ->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 40))
      ->group("Evaluation");
  c->add_flag("--no-fp-eval", a.no_fp_eval, "skip the full-precision evaluation (ppl_fp is null)")->group("Evaluation");
  c->add_option("--fp-eval-from", a.fp_eval_from,
                "reuse nll_fp/ppl_fp from an earlier --json output with the same model and evaluation settings")
      ->group("Evaluation");
}

// ---- eval -----------------------------------------------------------------------------------------------

int cmd_eval(const EvalArgs& a) {
  const auto t0 = Clock::now();
  check_model_path(a.model);
  check_input_file("--data", a.data);
  check_input_file("--tokenizer", a.tokenizer);
  const LoadedModel lm = load_any(a.model);
  const lowbit::Model& m = lm.model;
  const double t_load = since(t0);
  const auto t1 = Clock::now();
  const std::vector<int> ids = load_ids(lm, a.tokenizer, a.data);
  const double t_tok = since(t1);
  const int seq_len = a.seq_len ? a.seq_len : std::min(512, m.cfg.max_seq_len);
  lowbit::PerplexityOptions po;
  po.max_tokens = a.max_tokens;
  po.scoring = a.scoring == "all" ? lowbit::Scoring::all : lowbit::Scoring::llama_perplexity;
  if (lm.is_gguf && lm.gguf.has_tokenizer) po.bos = lm.gguf.tokenizer.bos;
  po.progress = eval_progress("eval");
  const lowbit::PerplexityResult r = lowbit::perplexity(m, ids, seq_len, po);
  if (a.json) {
    Json j;
    j["lowbit"] = kVersion;
    j["command"] = "eval";
    j["ppl"] = r.ppl;
    j["nll"] = r.nll;
    j["predictions"] = r.predictions;
    j["scoring"] = a.scoring;
    j["model"] = model_json(lm);
    j["data"] = Json{{"file", a.data},
                     {"tokens", ids.size()},
                     {"max_tokens", a.max_tokens ? Json(a.max_tokens) : Json(nullptr)},
                     {"seq_len", seq_len},
                     {"windows", r.windows},
                     {"tokens_used", r.windows * seq_len}};
    j["threads"] = lowbit::max_threads();
    j["seconds"] = Json{{"load", t_load}, {"tokenize", t_tok}, {"eval", r.seconds}, {"total", since(t0)}};
    j["warnings"] = console.warnings;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model %s: dim %d, %d layers, vocab %d\n", a.model.c_str(), m.cfg.dim, m.cfg.n_layers, m.cfg.vocab_size);
    std::printf("data %s: %zu tokens, %lld windows of %d, %lld predictions\n", a.data.c_str(), ids.size(),
                (long long)r.windows, seq_len, (long long)r.predictions);
    std::printf("nll %.4f  ppl %.4f  (%.2f s, %d threads)\n", r.nll, r.ppl, r.seconds, lowbit::max_threads());
  }
  return 0;
}

// ---- quantize -------------------------------------------------------------------------------------------

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// ---- convert --------------------------------------------------------------------------------------------

// A model as GGUF without a method: F32 / F16 as they are, Q4_0 / Q4_1 / Q8_0 by llama.cpp's reference quantizers
// (what llama-quantize writes without an importance matrix), the baseline lowbit's methods are measured against.
int cmd_convert(const ConvertArgs& a) {
  const auto t0 = Clock::now();
  check_model_path(a.model);
  check_input_file("--tokenizer", a.tokenizer);
  if (same_file(a.save_gguf, a.model)) lowbit::fail(a.save_gguf, ": is the input model; choose another output file");
  lowbit::check_writable_file(a.save_gguf);
  const LoadedModel lm = load_any(a.model);
  const lowbit::Tokenizer tok = tokenizer_for_gguf(lm, a.tokenizer);
  lowbit::GgufModelWriter w(lm.model, &tok, a.save_gguf, lowbit::parse_ggml_type(a.gguf_type));
  for (int i = 0; i < lm.model.cfg.n_layers; ++i) {
    console.progress("block " + std::to_string(i + 1) + "/" + std::to_string(lm.model.cfg.n_layers));
    lowbit::with_block(lm.model, i, [&](const lowbit::Block& b) { w.block(i, b, nullptr); });
  }
  w.commit();
  if (a.json) {
    Json j;
    j["lowbit"] = kVersion;
    j["command"] = "convert";
    j["model"] = model_json(lm);
    j["save_gguf"] = a.save_gguf;
    j["gguf"] = gguf_json(w);
    j["seconds"] = since(t0);
    j["warnings"] = console.warnings;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %s, %.2f MB of tensors (%.2f s)\n", a.save_gguf.c_str(), a.gguf_type.c_str(), double(w.bytes()) / 1e6, since(t0));
  }
  return 0;
}


// The full-precision result of an earlier run (its --json output), if it measured the same thing.
std::pair<double, double> reuse_fp_eval(const std::string& path, const LoadedModel& lm, const std::string& eval, int L,
                                        std::int64_t max_tokens) {
  Json j;
  try {
    j = Json::parse(lowbit::read_text_file(path));
  } catch (const Json::exception& e) {
    lowbit::fail("--fp-eval-from ", path, ": not a JSON object (", e.what(), ")");
  }
  auto field = [&](const Json& o, const char* k) -> const Json& {
    if (!o.is_object() || !o.contains(k)) lowbit::fail("--fp-eval-from ", path, ": no \"", k, "\" (not a lowbit quantize --json output?)");
    return o.at(k);
  };
  const Json& ev = field(j, "evaluation");
  auto mismatch = [&](const char* what, const std::string& was, const std::string& now) {
    lowbit::fail("--fp-eval-from ", path, ": it evaluated ", what, " ", was, ", this run evaluates ", now);
  };
  if (field(field(j, "model"), "path").dump() != Json(lm.path).dump()) mismatch("the model", field(j["model"], "path").dump(), lm.path);
  if (field(ev, "file").dump() != Json(eval).dump()) mismatch("the file", field(ev, "file").dump(), eval);
  if (field(ev, "seq_len").dump() != Json(L).dump()) mismatch("windows of", field(ev, "seq_len").dump(), std::to_string(L));
  const Json mt = max_tokens ? Json(max_tokens) : Json(nullptr);
  if (field(ev, "max_tokens").dump() != mt.dump()) mismatch("max_tokens", field(ev, "max_tokens").dump(), mt.dump());
  const Json &nll = field(j, "nll_fp"), &ppl = field(j, "ppl_fp");
  if (!nll.is_number() || !ppl.is_number()) lowbit::fail("--fp-eval-from ", path, ": it has no full-precision result (ppl_fp is null)");
  return {nll.get<double>(), ppl.get<double>()};
}

int cmd_quantize(const QuantizeArgs& args) {
  const auto t0 = Clock::now();
  QuantizeArgs a = args;
  std::map<std::string, double> seconds;
  // --shift runs the shift first (os+ shifts by itself)
  if (a.shift && a.method.rfind("shift", 0) != 0 && a.method.rfind("os", 0) != 0) a.method = "shift+" + a.method;
  const std::vector<const lowbit::MethodInfo*> steps = lowbit::parse_method_chain(a.method);
  // awq+omniquant: the seeds' two-step workflow (algorithms/awq_omniquant.hpp), 5 epochs unless told
  const bool awq_omni = a.method == "awq+omniquant";
  if (awq_omni && !a.has("--epochs")) a.epochs = 5;
  bool calibrated = false, transforms = false, has_awq = false, has_gptq = false, has_sq = false, has_pss = false,
       has_shift = false, has_osplus = false, has_omni = false;
  std::vector<std::string> transform_names;
  for (const lowbit::MethodInfo* s : steps) {
    const std::string n = s->name;
    calibrated |= s->calibrated, transforms |= !s->quantizes;
    if (!s->quantizes) transform_names.push_back(n);
    has_awq |= n == "awq", has_gptq |= n == "gptq", has_sq |= n == "smoothquant", has_pss |= n == "pss";
    has_shift |= n == "shift", has_osplus |= n == "osplus", has_omni |= n == "omniquant";
  }
  // PaddleSlim's quant_type presets (PaddleNLP llm/utils/argument.py): the spec and the activations
  std::string preset;
  if (!a.quant_type.empty()) {
    if (!a.spec.empty() || a.wbits) lowbit::fail("--quant-type ", a.quant_type, " sets the weight quantizer: drop --spec / --wbits");
    std::string t = a.quant_type;
    for (char& ch : t) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    const bool groupwise = a.weight_quant_method == "groupwise";
    const int g = groupwise ? (a.has("--group") ? a.group : 128) : -1;
    if (t == "a8w8") {
      a.spec = "w8a8" + std::string(groupwise ? "g" + std::to_string(g) : "") + "-sym";
      if (!a.has("--act-granularity")) a.act_granularity = "per_tensor";
      if (a.act_granularity == "per_tensor" && !a.has("--act-static")) a.act_static = true;
    } else {
      a.spec = std::string(t == "wint8" ? "w8a16" : "w4a16") + (groupwise ? "g" + std::to_string(g) : "") + "-sym";
    }
    preset = t;
  } else if (a.has("--weight-quant-method")) {
    console.warning("--weight-quant-method applies to --quant-type only; ignored");
  }
  if (a.spec.empty() && a.wbits == 0) lowbit::fail("quantize needs --spec (e.g. w4a16g128-sym), --wbits or --quant-type");
  // The weight quantizer: a spec string (its grid the method's reference unless it names one) or the same facts
  // as flags; --grid overrides either.
  lowbit::QuantSpec spec;
  if (!a.spec.empty()) {
    spec = lowbit::parse_spec(a.spec);
    bool names_grid = false;
    for (const char* g : {"minmax", "gptq", "omniquant", "ggml"}) names_grid |= a.spec.find(g) != std::string::npos;
    if (!names_grid) spec.grid = lowbit::reference_grid(a.method);
  } else {
    spec.wbits = a.wbits;
    spec.group_size = a.group;
    spec.symmetric = a.sym;
    spec.allow_ragged = a.ragged;
    spec.grid = lowbit::reference_grid(a.method);
  }
  if (!a.grid.empty()) spec.grid = lowbit::parse_grid(a.grid);
  if (a.abits) {
    if (!a.spec.empty() && spec.act_quantized() && spec.abits != a.abits)
      lowbit::fail("--abits ", a.abits, " contradicts --spec ", a.spec, " (a", spec.abits, ")");
    spec.abits = a.abits;
  }
  if (spec.group_size == 0) lowbit::fail("--group 0: a group size is positive, or -1 for per channel");
  lowbit::validate(spec);
  // the activation quantizers (every linear's input; Q/K/V inside attention)
  lowbit::ActOptions act;
  if (a.act_static && !a.has("--act-granularity")) a.act_granularity = "per_tensor";
  const lowbit::Grid act_grid = lowbit::parse_grid(a.act_grid);
  if (spec.act_quantized()) {
    act.quant.input = lowbit::ActQuant{spec.abits, lowbit::parse_act_granularity(a.act_granularity), !a.act_asym, act_grid, a.act_static};
    act.quant.input.validate("--act-static");
    act.observer = lowbit::parse_act_observer(a.act_observer);
    act.percentile = a.act_percentile;
  } else {
    for (const char* o : {"--act-granularity", "--act-static"})
      if (a.has(o)) console.warning(std::string(o) + " does not apply: activations are not quantized (a16); ignored");
  }
  if (!act.static_ranges())
    for (const char* o : {"--act-observer", "--act-percentile"})
      if (a.has(o)) console.warning(std::string(o) + " applies to static activation ranges (--act-static) only; ignored");
  if (!spec.act_quantized() && !a.qk_bits && !a.kv_bits)
    for (const char* o : {"--act-asym", "--act-grid"})
      if (a.has(o)) console.warning(std::string(o) + " does not apply: no activation is quantized; ignored");
  auto head_quant = [&](int bits) { return lowbit::ActQuant{bits, lowbit::ActGranularity::per_token, !a.act_asym, act_grid}; };
  if (a.qk_bits) act.quant.q = act.quant.k = head_quant(a.qk_bits);
  if (a.kv_bits) {
    act.quant.v = head_quant(a.kv_bits);
    act.quant.k = head_quant(a.qk_bits ? std::min(a.qk_bits, a.kv_bits) : a.kv_bits);
    if (a.qk_bits && a.qk_bits != a.kv_bits)
      console.warning("--qk-bits " + std::to_string(a.qk_bits) + " and --kv-bits " + std::to_string(a.kv_bits) +
                      " both quantize K: it gets " + std::to_string(std::min(a.qk_bits, a.kv_bits)) + " bits");
  }
  act.validate();
  if (act.static_ranges()) calibrated = true;
  if (!a.save_trans.empty() && !transforms) lowbit::fail("--save-trans needs a method with a transform (awq, awq+gptq)");
  if (act.static_ranges() && a.calib.empty())
    lowbit::fail("--act-static needs --calib FILE (static activation ranges are calibrated on it)");
  if (calibrated && a.calib.empty()) lowbit::fail("--method ", a.method, " needs --calib FILE");
  if (!a.fp_eval_from.empty() && a.no_fp_eval) lowbit::fail("--fp-eval-from and --no-fp-eval exclude each other");
  if ((a.no_fp_eval || !a.fp_eval_from.empty() || a.eval_seq_len || a.eval_max_tokens) && a.eval.empty())
    lowbit::fail("--no-fp-eval, --fp-eval-from, --eval-seq-len and --eval-max-tokens need --eval FILE");
  // Options that do not apply to this method: a warning, so a sweep that passes them everywhere still runs.
  auto not_for = [&](bool applies, std::initializer_list<const char*> opts, const char* who) {
    if (applies) return;
    for (const char* o : opts)
      if (a.has(o)) console.warning(std::string(o) + " does not apply to --method " + a.method + " (" + who + " only); ignored");
  };
  not_for(has_gptq, {"--act-order", "--static-groups", "--percdamp"}, "gptq");
  not_for(has_awq, {"--duo-scaling", "--no-clip", "--asym-clip", "--awq-scoring", "--awq-scale-tokens", "--save-scale",
                    "--save-clip"}, "awq");
  not_for(has_awq || has_omni, {"--load-scale", "--load-clip"}, "awq and omniquant");
  if (awq_omni && (!a.load_scale.empty() || !a.load_clip.empty()))
    lowbit::fail("--method awq+omniquant searches AWQ's scales and clips in its step 1: to start from saved ones, run "
                 "--method omniquant --let --load-scale FILE --load-clip FILE");
  if (awq_omni && a.search_clip_init) console.warning("--search-clip-init: awq+omniquant chooses LWC's start itself; ignored");
  not_for(calibrated, {"--calib", "--calib-samples", "--calib-seq-len", "--calib-sampling", "--seed"}, "calibrated methods");
  not_for(calibrated, {"--propagate"}, "calibrated methods");
  not_for(has_sq || (has_omni && a.let), {"--alpha"}, "smoothquant and omniquant --let");
  not_for(has_omni, {"--epochs", "--no-lwc", "--let", "--search-clip-init", "--aug-loss", "--lr-lwc", "--lr-let", "--wd", "--lwc-init", "--omni-batch"}, "omniquant");
  if (has_omni && act.quant.input.on() && act.quant.input.granularity != lowbit::ActGranularity::per_token)
    lowbit::fail("--method omniquant trains with dynamic per-token activation quantization (as the reference): drop --act-granularity per_tensor / --act-static");
  not_for(has_sq || has_pss, {"--smooth-all-linears"}, "smoothquant and pss");
  not_for(has_shift, {"--shift-sampler", "--shift-all-linears"}, "shift");
  not_for(has_pss, {"--k-piece", "--search-piece"}, "pss");
  not_for(has_pss || has_osplus, {"--search-tokens"}, "pss and os+");
  // a shifted model has biases and input shifts a Hugging Face LLaMA cannot hold
  if ((has_shift || has_osplus) && (!a.save_fake.empty() || !a.save_trans.empty()))
    lowbit::fail("--save-fake / --save-trans: the shift (", has_osplus ? "os+" : "shift",
                 ") adds biases and input shifts that a Hugging Face LLaMA cannot hold; evaluate the model with --eval instead");
  for (const auto& [opt, dir] : {std::pair<const char*, const std::string*>{"--save-awq", &a.save_awq}, {"--save-gptq", &a.save_gptq}}) {
    if (dir->empty()) continue;
    if (has_shift || has_osplus)
      lowbit::fail(opt, ": the shift (", has_osplus ? "os+" : "shift",
                   ") adds biases and input shifts that a Hugging Face LLaMA cannot hold; evaluate the model with --eval instead");
    if (!spec.weight_quantized()) lowbit::fail(opt, ": the weights are not quantized (w16); nothing to pack");
    if (act.on())
      console.warning(std::string(opt) + " writes the quantized weights; the activation quantization (a" + std::to_string(spec.abits) +
                      ") is a run-time setting the checkpoint does not hold");
  }
  if (!a.save_awq.empty() && spec.wbits != 4)
    lowbit::fail("--save-awq: the AutoAWQ GEMM layout holds 4-bit weights only (this run: ", spec.wbits, " bits); use --save-gptq");
  if (!a.save_awq.empty() && a.act_order)
    lowbit::fail("--save-awq: --act-order's g_idx cannot be written in the AutoAWQ layout; use --save-gptq");
  if (!a.save_awq.empty() && spec.grid == lowbit::Grid::ggml && !spec.symmetric)
    lowbit::fail("--save-awq: the ggml grid's asymmetric zero is a float offset, not an integer code; use --grid minmax or gptq");
  if (!a.save_gptq.empty() && !lowbit::gptq_bits_supported(spec.wbits))
    lowbit::fail("--save-gptq: the GPTQ layout holds 2, 3, 4 or 8-bit weights (this run: ", spec.wbits, " bits)");
  if (!a.save_gptq.empty() && spec.grid == lowbit::Grid::ggml && !spec.symmetric)
    lowbit::fail("--save-gptq: the ggml grid's asymmetric zero is a float offset, not an integer code; use --grid minmax or gptq");
  if ((has_shift || has_osplus) && !a.save_gguf.empty())
    lowbit::fail("--save-gguf: the shift (", has_osplus ? "os+" : "shift",
                 ") adds biases and input shifts that a llama.cpp LLaMA cannot hold; evaluate the model with --eval instead");
  not_for(!a.save_gguf.empty(), {"--gguf-type", "--gguf-fallback"}, "--save-gguf");
  if (act.on() && !a.save_gguf.empty())
    console.warning("--save-gguf writes the quantized weights; llama.cpp quantizes activations its own way (the a" +
                    std::to_string(spec.abits) + " setting is not in the file)");
  if (act.on() && !a.save_fake.empty())
    console.warning("--save-fake writes the fake-quantized weights; the activation quantization (a" + std::to_string(spec.abits) +
                    (a.qk_bits || a.kv_bits ? ", Q/K/V" : "") + ") is a run-time setting the folder does not hold");
  if (calibrated && a.calib_sampling == "sequential" && a.has("--seed"))
    console.warning("--seed does not apply to --calib-sampling sequential; ignored");

  // Every input and output location before any work: hours of quantization must not end in "cannot write".
  check_model_path(a.model);
  if (calibrated) check_input_file("--calib", a.calib);
  check_input_file("--tokenizer", a.tokenizer);
  check_input_file("--eval", a.eval);
  check_input_file("--load-scale", a.load_scale);
  check_input_file("--load-clip", a.load_clip);
  check_input_file("--fp-eval-from", a.fp_eval_from);
  for (const std::string* d : {&a.save_fake, &a.save_trans, &a.save_awq, &a.save_gptq})
    if (!d->empty()) {
      if (same_file(*d, a.model)) lowbit::fail(*d, ": is the input model's folder; choose another output folder");
      lowbit::check_writable_dir(*d);
    }
  {
    const std::vector<std::pair<const char*, const std::string*>> dirs = {
        {"--save-fake", &a.save_fake}, {"--save-trans", &a.save_trans}, {"--save-awq", &a.save_awq}, {"--save-gptq", &a.save_gptq}};
    for (std::size_t i = 0; i < dirs.size(); ++i)
      for (std::size_t j = i + 1; j < dirs.size(); ++j)
        if (!dirs[i].second->empty() && *dirs[i].second == *dirs[j].second)
          lowbit::fail(dirs[i].first, " and ", dirs[j].first, " name the same folder ", *dirs[i].second);
  }
  for (const std::string* f : {&a.save_scale, &a.save_clip, &a.save_gguf})
    if (!f->empty()) lowbit::check_writable_file(*f);
  if (a.dry_run) {
    if (a.json) {
      Json keys = Json::object();
      for (const lowbit_cli::ConfigArg& c : a.from_config)
        keys[c.key] = (c.flag ? c.option : c.option + " " + c.value) + (c.overridden ? " (overridden by the command line)" : "");
      Json warnings = console.warnings;
      std::printf("%s\n", Json{{"dry_run", true}, {"method", a.method}, {"spec", lowbit::to_string(spec)},
                               {"config", a.config.empty() ? (a.paddle_args.empty() ? Json(nullptr) : Json(a.paddle_args)) : Json(a.config)},
                               {"from_config", keys}, {"options", a.plan}, {"warnings", warnings}}.dump().c_str());
    } else {
      std::printf("plan: %s %s (nothing run: --dry-run)\n", a.method.c_str(), lowbit::to_string(spec).c_str());
      for (const lowbit_cli::ConfigArg& c : a.from_config)
        std::printf("  %s -> %s%s%s%s\n", c.key.c_str(), c.option.c_str(), c.flag ? "" : " ", c.value.c_str(),
                    c.overridden ? " (overridden by the command line)" : "");
      std::printf("%s", a.plan.c_str());
    }
    return 0;
  }

  // without --eval the classifier is never used: a Hugging Face model's tables stay in the mapped file
  auto t = Clock::now();
  LoadedModel lm = load_any(a.model, a.eval.empty() ? lowbit::Tables::deferred : lowbit::Tables::resident);
  const lowbit::Model& m = lm.model;
  seconds["load"] = since(t);
  t = Clock::now();
  lowbit::Windows calib;
  std::size_t calib_tokens = 0;
  if (calibrated) {
    const std::vector<int> ids = load_ids(lm, a.tokenizer, a.calib);
    calib_tokens = ids.size();
    calib = a.calib_sampling == "random" ? lowbit::random_windows(ids, a.calib_samples, a.calib_seq_len, a.seed)
                                         : lowbit::sequential_windows(ids, a.calib_samples, a.calib_seq_len);
  }
  // every linear's shape against the spec, and the calibration windows, before any work
  lowbit::visit(spec, [&](auto q) { lowbit::check_quantizable(m.cfg, q, calib, calibrated); });
  std::vector<int> eval_ids;
  const int eval_L = a.eval_seq_len ? a.eval_seq_len : std::min(512, m.cfg.max_seq_len);
  if (!a.eval.empty()) eval_ids = load_ids(lm, a.tokenizer, a.eval);
  seconds["tokenize"] = since(t);
  // the GGUF's tokenizer (llama.cpp needs one) and type, resolved before any work
  std::optional<lowbit::Tokenizer> gguf_tok;
  if (!a.save_gguf.empty()) gguf_tok = tokenizer_for_gguf(lm, a.tokenizer);
  const lowbit::GgmlType gguf_type = a.gguf_type == "auto" ? auto_gguf_type(spec) : lowbit::parse_ggml_type(a.gguf_type);
  std::vector<std::pair<double, double>> loaded_fp;
  if (!a.fp_eval_from.empty()) loaded_fp.push_back(reuse_fp_eval(a.fp_eval_from, lm, a.eval, eval_L, a.eval_max_tokens));
  std::vector<lowbit::AwqBlockResult> loaded;
  if (!a.load_scale.empty() || !a.load_clip.empty()) loaded = lowbit::load_awq(a.load_scale, a.load_clip, m.cfg.n_layers);

  lowbit::PerplexityOptions po;
  po.max_tokens = a.eval_max_tokens;
  std::optional<lowbit::PerplexityResult> fp, qr;
  std::string fp_source = a.eval.empty() ? "none" : a.no_fp_eval ? "skipped" : !a.fp_eval_from.empty() ? "reused" : "measured";
  if (fp_source == "measured") {
    po.progress = eval_progress("eval fp");
    fp = lowbit::perplexity(m, eval_ids, eval_L, po);
    seconds["eval_fp"] = fp->seconds;
    if (!a.json) std::printf("fp32:      ppl %.4f  (nll %.4f over %lld predictions)\n", fp->ppl, fp->nll, (long long)fp->predictions);
  }

  lowbit::MethodOptions mo;
  mo.gptq.act_order = a.act_order;
  mo.gptq.static_groups = a.static_groups;
  mo.gptq.percdamp = a.percdamp;
  mo.awq.duo_scaling = a.duo_scaling;
  mo.awq.scoring = a.awq_scoring == "module" ? lowbit::AwqScoring::module_output
                   : a.awq_scoring == "gram" ? lowbit::AwqScoring::gram
                                             : lowbit::AwqScoring::fast;
  mo.awq.scale_tokens = a.awq_scale_tokens;
  mo.awq.clip = !a.no_clip;
  mo.awq.symmetric_clip = !a.asym_clip;
  if (!loaded.empty()) mo.awq_loaded = {&loaded, !a.load_scale.empty(), !a.load_clip.empty()};
  lowbit::PipelineOptions opt;
  if (!a.quiet) opt.progress = lowbit::stderr_progress();
  if (!a.propagate.empty()) opt.propagate = a.propagate == "fp" ? lowbit::Chain::full_precision : lowbit::Chain::quantized;
  opt.act = act;
  mo.smooth.alpha = float(a.alpha);
  mo.smooth.all_linears = a.smooth_all_linears;
  mo.shift.sampler = lowbit::parse_shift_sampler(a.shift_sampler);
  mo.shift.all_linears = a.shift_all_linears;
  mo.pss.all_linears = a.smooth_all_linears;
  mo.pss.search.k_piece = a.k_piece;
  mo.pss.search.search_piece = a.search_piece;
  mo.pss.tokens = a.search_tokens;
  mo.osplus.tokens = a.search_tokens;
  mo.omniquant.epochs = a.epochs;
  mo.omniquant.lwc = !a.no_lwc;
  mo.omniquant.let = a.let;
  mo.omniquant.aug_loss = a.aug_loss;
  mo.omniquant.search_clip_init = a.search_clip_init && !awq_omni;
  mo.omniquant.lr_lwc = a.lr_lwc;
  mo.omniquant.lr_let = a.lr_let;
  mo.omniquant.weight_decay = a.omni_wd;
  mo.omniquant.lwc_init = float(a.lwc_init);
  mo.omniquant.batch = a.omni_batch;
  mo.omniquant.alpha = float(a.alpha);
  mo.omniquant.validate();

  // Sinks: the fake-quantized model in memory only when it is evaluated; folders stream block by block and are
  // staged beside their place (created now, before any work).
  lowbit::ModelSink keep(m, {!a.eval.empty(), false, false});
  lowbit::SinkFan sinks;
  sinks.add(&keep);
  const std::string desc = lowbit::to_string(spec) + " " + a.method;
  const lowbit::DType dtype = a.save_dtype == "f16" ? lowbit::DType::f16 : lowbit::DType::f32;
  std::unique_ptr<lowbit::HfSink> fake_out, trans_out;
  if (!a.save_fake.empty()) {
    fake_out = std::make_unique<lowbit::HfSink>(m, a.save_fake, lowbit::Weights::fake_quantized, dtype,
                                                std::map<std::string, std::string>{{"lowbit", "fake-quantized " + desc}});
    sinks.add(fake_out.get());
  }
  if (!a.save_trans.empty()) {
    trans_out = std::make_unique<lowbit::HfSink>(m, a.save_trans, lowbit::Weights::transformed, dtype,
                                                 std::map<std::string, std::string>{{"lowbit", "transformed " + desc}});
    sinks.add(trans_out.get());
  }
  std::unique_ptr<lowbit::GgufSink> gguf_out;
  if (!a.save_gguf.empty()) {
    gguf_out = std::make_unique<lowbit::GgufSink>(m, &*gguf_tok, a.save_gguf, gguf_type,
                                                  a.gguf_fallback == "float" ? lowbit::GgufFallback::float_weights
                                                                             : lowbit::GgufFallback::quantized);
    sinks.add(gguf_out.get());
  }
  std::unique_ptr<lowbit::HfPackedSink> awq_out, gptq_out;
  const lowbit::PackedSpec packed{spec.wbits, spec.group_size, a.percdamp};
  if (!a.save_awq.empty()) {
    awq_out = std::make_unique<lowbit::HfPackedSink>(m, a.save_awq, lowbit::PackedFormat::autoawq, packed,
                                                     std::map<std::string, std::string>{{"lowbit", "AutoAWQ " + desc}});
    sinks.add(awq_out.get());
  }
  if (!a.save_gptq.empty()) {
    gptq_out = std::make_unique<lowbit::HfPackedSink>(m, a.save_gptq, lowbit::PackedFormat::gptq, packed,
                                                      std::map<std::string, std::string>{{"lowbit", "GPTQ " + desc}});
    sinks.add(gptq_out.get());
  }
  lowbit::PipelineReport rep;
  lowbit::AwqOmniQuantStep1 step1;
  const lowbit_cli::QuantizeRun run{m, calib, a.method, mo, sinks, opt, &step1};
  rep = lowbit::visit_wbits(spec, [&](auto b) { return lowbit_cli::run_quantize<decltype(b)::value>(spec, run); });
  const std::vector<lowbit::AwqBlockResult>& awq_results = awq_omni ? step1.awq : keep.awq;
  seconds["quantize"] = rep.seconds;
  if (rep.degenerate_groups) {
    std::string where;
    for (std::size_t k = 0; k < rep.degenerate_linears.size() && k < 3; ++k) where += (k ? ", " : "") + rep.degenerate_linears[k];
    if (rep.degenerate_linears.size() > 3) where += ", ...";
    console.warning(std::to_string(rep.degenerate_groups) + " of " + std::to_string(rep.groups) + " groups (" + where +
                    ") have values of one sign only, which the minmax grid cannot hold: like AWQ's reference, they lose "
                    "their offset (a constant group becomes 1e-5). Kept for parity; --grid gptq or omniquant includes "
                    "zero in every group's range" + (spec.allow_ragged ? "; a 1-wide ragged last group is always one" : ""));
  }
  t = Clock::now();
  if (fake_out) fake_out->commit();
  if (trans_out) trans_out->commit();
  if (gguf_out) {
    gguf_out->commit();
    report_gguf(gguf_out->writer(), a.save_gguf);
  }
  for (const auto& [sink, dir] : {std::pair<lowbit::HfPackedSink*, const std::string*>{awq_out.get(), &a.save_awq}, {gptq_out.get(), &a.save_gptq}}) {
    if (!sink) continue;
    sink->commit();
    for (const std::string& why : sink->writer().skipped())
      console.warning(*dir + ": " + why + ": kept as fp16 weights (named in config.json, as the loaders skip modules)");
  }
  if (!a.save_scale.empty()) lowbit::save_awq_scales(a.save_scale, awq_results);
  if (!a.save_clip.empty()) lowbit::save_awq_clips(a.save_clip, awq_results);
  seconds["save"] = since(t);
  if (!a.eval.empty()) {
    po.progress = eval_progress("eval quantized");
    qr = lowbit::perplexity(keep.fake, eval_ids, eval_L, po);
    seconds["eval_quant"] = qr->seconds;
  }
  seconds["total"] = since(t0);
  const std::optional<double> nll_fp = fp ? std::optional<double>(fp->nll) : loaded_fp.empty() ? std::nullopt : std::optional<double>(loaded_fp[0].first);
  const std::optional<double> ppl_fp = fp ? std::optional<double>(fp->ppl) : loaded_fp.empty() ? std::nullopt : std::optional<double>(loaded_fp[0].second);
  if (a.json) {
    auto opt_num = [](std::optional<double> v) { return v ? Json(*v) : Json(nullptr); };
    Json j;
    j["lowbit"] = kVersion;
    j["command"] = "quantize";
    j["method"] = a.method;
    j["spec"] = lowbit::to_string(spec);
    j["wbits"] = spec.wbits;
    j["abits"] = spec.abits;
    j["group"] = spec.group_size;
    j["sym"] = spec.symmetric;
    j["ragged"] = spec.allow_ragged;
    j["grid"] = lowbit::to_string(spec.grid);
    j["nll_fp"] = opt_num(nll_fp);
    j["ppl_fp"] = opt_num(ppl_fp);
    j["nll_quant"] = opt_num(qr ? std::optional<double>(qr->nll) : std::nullopt);
    j["ppl_quant"] = opt_num(qr ? std::optional<double>(qr->ppl) : std::nullopt);
    j["fp_eval"] = fp_source;
    j["quant_seconds"] = rep.seconds;
    j["model"] = model_json(lm);
    j["steps"] = rep.steps;
    Json o = Json::object();
    if (has_gptq) o.update(Json{{"act_order", a.act_order}, {"static_groups", a.static_groups}, {"percdamp", a.percdamp}});
    if (has_awq)
      o.update(Json{{"duo_scaling", a.duo_scaling}, {"awq_scoring", a.awq_scoring}, {"awq_scale_tokens", a.awq_scale_tokens},
                    {"clip", !a.no_clip}, {"symmetric_clip", !a.asym_clip},
                    {"load_scale", a.load_scale.empty() ? Json(nullptr) : Json(a.load_scale)},
                    {"load_clip", a.load_clip.empty() ? Json(nullptr) : Json(a.load_clip)}});
    if (has_sq) o.update(Json{{"alpha", a.alpha}, {"smooth_all_linears", a.smooth_all_linears}});
    if (has_shift) o.update(Json{{"shift_sampler", a.shift_sampler}, {"shift_all_linears", a.shift_all_linears}});
    if (has_pss)
      o.update(Json{{"k_piece", a.k_piece}, {"search_piece", a.search_piece}, {"smooth_all_linears", a.smooth_all_linears}});
    if (has_pss || has_osplus) o["search_tokens"] = a.search_tokens;
    if (has_omni) {
      o.update(Json{{"epochs", a.epochs}, {"lwc", !a.no_lwc}, {"let", a.let}, {"aug_loss", a.aug_loss}, {"lr_lwc", a.lr_lwc},
                    {"lr_let", a.lr_let}, {"wd", a.omni_wd}, {"lwc_init", a.lwc_init}, {"batch", a.omni_batch},
                    {"search_clip_init", awq_omni ? !a.let : a.search_clip_init},
                    {"load_scale", a.load_scale.empty() ? Json(nullptr) : Json(a.load_scale)},
                    {"load_clip", a.load_clip.empty() ? Json(nullptr) : Json(a.load_clip)}});
      if (a.let) o["alpha"] = a.alpha;
      Json tl = Json::array();
      for (const auto& b : rep.train_loss) tl.push_back(b);
      j["train_loss"] = tl;  // per block, the mean loss of each epoch
    }
    o["propagate"] = a.propagate.empty() ? Json("reference") : Json(a.propagate);
    j["options"] = o;
    j["transforms"] = transform_names;
    j["quant_type"] = preset.empty() ? Json(nullptr) : Json(preset);
    auto act_json = [](const lowbit::ActQuant& q) {
      return q.on() ? Json{{"bits", q.bits}, {"sym", q.symmetric}, {"grid", lowbit::to_string(q.grid)}} : Json(nullptr);
    };
    Json aj = Json(nullptr);
    if (act.on()) {
      aj = Json::object();
      aj["bits"] = act.quant.input.on() ? Json(act.quant.input.bits) : Json(16);
      if (act.quant.input.on()) {
        aj["granularity"] = lowbit::to_string(act.quant.input.granularity);
        aj["static"] = act.quant.input.static_range;
        aj["sym"] = act.quant.input.symmetric;
        aj["grid"] = lowbit::to_string(act.quant.input.grid);
        aj["observer"] = act.static_ranges() ? Json(lowbit::to_string(act.observer)) : Json(nullptr);
      }
      aj["q"] = act_json(act.quant.q);
      aj["k"] = act_json(act.quant.k);
      aj["v"] = act_json(act.quant.v);
    }
    j["activations"] = aj;
    j["calibration"] = calibrated ? Json{{"file", a.calib},
                                         {"tokens", calib_tokens},
                                         {"windows", calib.size()},
                                         {"seq_len", a.calib_seq_len},
                                         {"sampling", a.calib_sampling},
                                         {"seed", a.calib_sampling == "random" ? Json(a.seed) : Json(nullptr)}}
                                  : Json(nullptr);
    j["evaluation"] = a.eval.empty() ? Json(nullptr)
                                     : Json{{"file", a.eval},
                                            {"tokens", eval_ids.size()},
                                            {"max_tokens", a.eval_max_tokens ? Json(a.eval_max_tokens) : Json(nullptr)},
                                            {"seq_len", eval_L},
                                            {"windows", qr->windows},
                                            {"predictions", qr->predictions}};
    j["outputs"] = Json{{"save_fake", a.save_fake.empty() ? Json(nullptr) : Json(a.save_fake)},
                        {"save_trans", a.save_trans.empty() ? Json(nullptr) : Json(a.save_trans)},
                        {"save_scale", a.save_scale.empty() ? Json(nullptr) : Json(a.save_scale)},
                        {"save_clip", a.save_clip.empty() ? Json(nullptr) : Json(a.save_clip)},
                        {"dtype", a.save_dtype},
                        {"save_gguf", a.save_gguf.empty() ? Json(nullptr) : Json(a.save_gguf)},
                        {"save_awq", a.save_awq.empty() ? Json(nullptr) : Json(a.save_awq)},
                        {"save_gptq", a.save_gptq.empty() ? Json(nullptr) : Json(a.save_gptq)},
                        {"packed_fp16", packed_json(awq_out.get(), gptq_out.get())},
                        {"gguf", gguf_out ? gguf_json(gguf_out->writer()) : Json(nullptr)}};
    j["groups"] = rep.groups;
    j["degenerate_groups"] = rep.degenerate_groups;
    j["damp_retries"] = rep.damp_retries;
    j["threads"] = lowbit::max_threads();
    Json s = Json::object();
    for (const char* k : {"load", "tokenize", "eval_fp", "quantize", "save", "eval_quant", "total"})
      s[k] = seconds.count(k) ? Json(seconds[k]) : Json(nullptr);
    j["seconds"] = s;
    j["warnings"] = console.warnings;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s %s: quantized in %.2f s%s\n", a.method.c_str(), lowbit::to_string(spec).c_str(), rep.seconds,
                rep.damp_retries ? " (GPTQ damping was raised for some layers)" : "");
    if (ppl_fp && !fp) std::printf("fp32:      ppl %.4f  (reused from %s)\n", *ppl_fp, a.fp_eval_from.c_str());
    if (qr) std::printf("quantized: ppl %.4f  (nll %.4f)\n", qr->ppl, qr->nll);
  }
  return 0;
}

// libgomp reads OMP_WAIT_POLICY once, when it is loaded; to change the default the tool runs itself again with
// the variable set (once: the variable is then set).  LOWBIT_NO_REEXEC=1 turns this off.
void default_wait_policy(char** argv) {
  if (!LOWBIT_HAS_OPENMP || std::getenv("OMP_WAIT_POLICY") || std::getenv("LOWBIT_NO_REEXEC")) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run on with the default policy
}

}  // namespace

// The options `lowbit quantize --config F` / `--paddle-args F` stand for; a key whose option the command line gives
// too is marked overridden (the command line wins, and --dry-run says so).
std::vector<lowbit_cli::ConfigArg> config_options(const CLI::App& quant, const std::vector<std::string>& args, std::string& file) {
  if (args.size() < 2 || args[1] != "quantize") return {};
  std::string yaml, paddle;
  std::vector<std::string> given;  // the command line's options, by long name
  for (std::size_t i = 2; i < args.size(); ++i) {
    const std::string& t = args[i];
    if (t.rfind("--", 0) != 0) continue;
    const std::string name = t.substr(0, t.find('='));
    const std::string value = t.find('=') != std::string::npos ? t.substr(t.find('=') + 1) : i + 1 < args.size() ? args[i + 1] : "";
    if (name == "--config") yaml = value;
    if (name == "--paddle-args") paddle = value;
    if (const CLI::Option* o = quant.get_option_no_throw(name); o && !o->get_lnames().empty()) given.push_back("--" + o->get_lnames()[0]);
  }
  if (yaml.empty() && paddle.empty()) return {};
  if (!yaml.empty() && !paddle.empty()) lowbit::fail("--config and --paddle-args: give one config file");
  file = yaml.empty() ? paddle : yaml;
  std::vector<lowbit_cli::ConfigArg> out = yaml.empty() ? lowbit_cli::read_paddle_args(file) : lowbit_cli::read_llmc_config(file);
  for (lowbit_cli::ConfigArg& c : out) {
    const CLI::Option* o = quant.get_option_no_throw(c.option);
    if (!o) lowbit::fail(file, ": key '", c.key, "' maps to ", c.option, ", which lowbit quantize does not have");
    const std::string canon = "--" + o->get_lnames()[0];
    c.overridden = std::find(given.begin(), given.end(), canon) != given.end();  // the command line wins
  }
  return out;
}

int main(int argc, char** argv) {
  default_wait_policy(argv);
  CLI::App app{"lowbit " + kVersion + ": post-training quantization of LLaMA-family models on the CPU", "lowbit"};
  app.set_version_flag("--version", "lowbit " + kVersion);
  app.require_subcommand(1);
  app.fallthrough(false);
  EvalArgs ea;
  QuantizeArgs qa;
  ConvertArgs ca;
  CLI::App* eval = app.add_subcommand("eval", "perplexity of a model on a text (the GPTQ/AWQ protocol)");
  add_eval_options(eval, ea);
  CLI::App* quant = app.add_subcommand("quantize", "quantize a model (RTN, AWQ, GPTQ, chains such as awq+gptq)");
  add_quantize_options(quant, qa);
  CLI::App* conv = app.add_subcommand("convert", "write a model as GGUF for llama.cpp (F32 / F16, or Q4_0 / Q4_1 / Q8_0 by llama.cpp's reference quantizers)");
  add_convert_options(conv, ca);
  CLI::App* help = app.add_subcommand("help", "help on a command: lowbit help quantize");
  std::string help_on;
  help->add_option("command", help_on, "eval, quantize, convert, or config (the config files' keys)");
  // --config / --paddle-args: the file's keys become options placed before the command line's own
  std::vector<std::string> args(argv, argv + argc);
  std::string config_file;
  try {
    qa.from_config = config_options(*quant, args, config_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  if (!qa.from_config.empty()) {
    std::vector<std::string> merged(args.begin(), args.begin() + 2);  // lowbit quantize
    for (const lowbit_cli::ConfigArg& c : qa.from_config) {
      if (c.overridden) continue;
      merged.push_back(c.option);
      if (!c.flag) merged.push_back(c.value);
    }
    merged.insert(merged.end(), args.begin() + 2, args.end());
    args = std::move(merged);
  }
  const auto from_config_note = [&](const std::string& what) {
    for (const lowbit_cli::ConfigArg& c : qa.from_config)
      if (!c.overridden && what.find(c.option) != std::string::npos)
        std::fprintf(stderr, "lowbit: %s was set by key '%s' of %s\n", c.option.c_str(), c.key.c_str(), config_file.c_str());
  };
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend() - 1);  // CLI11 takes them last first, without argv[0]
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lowbit: %s\n", e.what());
    from_config_note(e.what());
    // an unknown option: name the nearest one of the command the user meant
    for (CLI::App* sub : {eval, quant, conv})
      if (sub->parsed())
        for (const std::string& r : sub->remaining())
          if (r.rfind("-", 0) == 0)
            if (const std::string s = suggest(*sub, r); !s.empty()) std::fprintf(stderr, "lowbit: %s: did you mean %s?\n", r.c_str(), s.c_str());
    std::fprintf(stderr, "Run with --help for more information.\n");
    return 2;
  }
  if (help->parsed()) {
    if (help_on.empty()) std::printf("%s", app.help().c_str());
    else if (help_on == "config") std::printf("%s", lowbit_cli::config_help().c_str());
    else if (help_on == "eval") std::printf("%s", eval->help().c_str());
    else if (help_on == "quantize") std::printf("%s", quant->help().c_str());
    else if (help_on == "convert") std::printf("%s", conv->help().c_str());
    else {
      std::fprintf(stderr, "lowbit: help: unknown command '%s' (eval, quantize, convert, config)\n", help_on.c_str());
      return 2;
    }
    return 0;
  }
  for (const CLI::Option* o : quant->get_options())
    if (o->count() > 0 && !o->get_lnames().empty()) qa.given.push_back("--" + o->get_lnames()[0]);
  if (quant->parsed() && qa.dry_run) qa.plan = quant->config_to_str(true, false);
  const bool json = eval->parsed() ? ea.json : conv->parsed() ? ca.json : qa.json;
  console.quiet = eval->parsed() ? ea.quiet : conv->parsed() ? ca.quiet : qa.quiet;
  lowbit::set_warning_handler([](const std::string& m) { console.warning(m); });
  try {
    const int threads = eval->parsed() ? ea.threads : conv->parsed() ? ca.threads : qa.threads;
    if (threads > 0) lowbit::set_num_threads(threads);
    if (conv->parsed()) return cmd_convert(ca);
    return eval->parsed() ? cmd_eval(ea) : cmd_quantize(qa);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lowbit: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    from_config_note(e.what());
  }
  if (json) std::fflush(stdout);
  return 1;
}
