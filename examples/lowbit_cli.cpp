// lowbit: the command-line tool.
//
//   lowbit eval --model PATH [--tokenizer PATH] --data FILE [--seq-len N] [--max-tokens M] [--threads T] [--json]
//
// --model: a llama2.c checkpoint (legacy .bin or ak42 v1/v2), a GGUF file or a Hugging Face folder.
// --tokenizer: llama2.c tokenizer.bin, a SentencePiece .vocab, or (built with libsentencepiece) a
// SentencePiece .model; by default the GGUF's own vocabulary, else tokenizer.model / tokenizer.bin / tok*.bin /
// *.vocab beside the model.  --data: a text file (encoded as BOS + the whole text) or raw int32 token ids
// (*.i32).  Errors go to stderr, exit code 1 (2 for usage errors).
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <sys/stat.h>
#include <lowbit/lowbit.hpp>
#include <map>
#include <string>
#include <vector>

#if LOWBIT_HAS_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace {

struct Args {
  std::map<std::string, std::string> opts;
  bool has(const std::string& k) const { return opts.count(k) != 0; }
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? def : it->second;
  }
  long num(const std::string& k, long def) const {
    if (!has(k)) return def;
    char* end = nullptr;
    const std::string v = get(k);
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0') lowbit::fail("--", k, ": '", v, "' is not an integer");
    return n;
  }
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "lowbit: %s\n"
               "usage: lowbit eval --model PATH [--tokenizer PATH] --data FILE [--seq-len N] [--max-tokens M]\n"
               "                   [--threads T] [--json]\n",
               why);
  std::exit(2);
}

Args parse(int argc, char** argv, int first, const std::vector<std::string>& flags, const std::vector<std::string>& valued) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) usage(("unexpected argument '" + k + "'").c_str());
    k = k.substr(2);
    bool is_flag = false, is_valued = false;
    for (const auto& f : flags) is_flag |= f == k;
    for (const auto& v : valued) is_valued |= v == k;
    if (is_flag) a.opts[k] = "1";
    else if (is_valued) {
      if (i + 1 >= argc) usage(("--" + k + " needs a value").c_str());
      a.opts[k] = argv[++i];
    } else usage(("unknown option --" + k).c_str());
  }
  return a;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

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

int cmd_eval(const Args& a) {
  if (!a.has("model")) usage("eval needs --model");
  if (!a.has("data")) usage("eval needs --data");
  if (a.has("threads")) lowbit::set_num_threads(int(a.num("threads", 0)));
  const std::string model_path = a.get("model"), data = a.get("data");
  struct stat st;
  const bool is_dir = ::stat(model_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  const bool is_gguf = !is_dir && ends_with(model_path, ".gguf");
  lowbit::GgufModel g;
  if (is_gguf) g = lowbit::load_gguf(model_path);
  const lowbit::Model m = is_gguf ? std::move(g.model) : lowbit::load_model(model_path);
  std::vector<int> ids;
  if (ends_with(data, ".i32")) {
    ids = lowbit::read_token_file(data);
  } else if (is_gguf && g.has_tokenizer && !a.has("tokenizer")) {
    ids = g.tokenizer.encode(lowbit::read_text_file(data), true);
  } else {
    ids = encode_with(a.has("tokenizer") ? a.get("tokenizer") : find_tokenizer(model_path, is_dir), m.cfg.vocab_size,
                      lowbit::read_text_file(data));
  }
  const long seq_len = a.num("seq-len", std::min(512, m.cfg.max_seq_len));
  const lowbit::PerplexityResult r = lowbit::perplexity(m, ids, int(seq_len), a.num("max-tokens", -1));
  if (a.has("json")) {
    std::printf("{\"ppl\": %.6f, \"nll\": %.6f, \"tokens\": %lld, \"windows\": %lld, \"seq_len\": %ld, \"seconds\": %.3f}\n",
                r.ppl, r.nll, (long long)r.predictions, (long long)r.windows, seq_len, r.seconds);
  } else {
    std::printf("model %s: dim %d, %d layers, vocab %d\n", model_path.c_str(), m.cfg.dim, m.cfg.n_layers, m.cfg.vocab_size);
    std::printf("data %s: %zu tokens, %lld windows of %ld, %lld predictions\n", data.c_str(), ids.size(),
                (long long)r.windows, seq_len, (long long)r.predictions);
    std::printf("nll %.4f  ppl %.4f  (%.2f s, %d threads)\n", r.nll, r.ppl, r.seconds, lowbit::max_threads());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("missing subcommand");
  const std::string cmd = argv[1];
  try {
    if (cmd == "eval") return cmd_eval(parse(argc, argv, 2, {"json"}, {"model", "tokenizer", "data", "seq-len", "max-tokens", "threads"}));
    usage(("unknown subcommand '" + cmd + "'").c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
