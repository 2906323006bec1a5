// lowbit: the command-line tool.
//
//   lowbit eval --model PATH [--tokenizer PATH] --data FILE [--seq-len N] [--max-tokens M] [--threads T] [--json]
//
// --model: a llama2.c checkpoint (legacy .bin or ak42 v1/v2), a GGUF file or a Hugging Face folder.
// --tokenizer: llama2.c tokenizer.bin, a SentencePiece .vocab, or (built with libsentencepiece) a
// SentencePiece .model; by default the GGUF's own vocabulary, else tokenizer.model / tokenizer.bin / tok*.bin /
// *.vocab beside the model.  --data: a text file (encoded as BOS + the whole text) or raw int32 token ids
// (*.i32).  Errors go to stderr, exit code 1 (2 for usage errors).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <sys/stat.h>
#include <lowbit/lowbit.hpp>
#include <map>
#include <memory>
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
               "                   [--threads T] [--json]\n"
               "       lowbit quantize --model PATH --method rtn|awq|gptq|awq+gptq (--spec w4a16g128[-sym][-ragged][-grid] |\n"
               "                   --wbits B [--group G] [--sym] [--ragged])\n"
               "                   [--grid minmax|gptq|omniquant] [--act-order] [--static-groups] [--percdamp P]\n"
               "                   [--duo-scaling] [--awq-scoring fast|module|gram] [--awq-scale-tokens N] [--no-clip] [--asym-clip] [--propagate fp|quant]\n"
               "                   [--calib FILE --nsamples N --seqlen L\n"
               "                   --seed S --calib-sampling random|sequential] [--save-fake DIR] [--save-trans DIR]\n"
               "                   [--save-scale F] [--save-clip F] [--load-scale F] [--load-clip F] [--eval FILE\n"
               "                   [--eval-seq-len N] [--eval-max-tokens M]] [--tokenizer PATH] [--threads T]\n"
               "                   [--json] [--quiet]\n",
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

struct LoadedModel {
  lowbit::Model model;
  lowbit::GgufModel gguf;
  bool is_dir = false, is_gguf = false;
};

LoadedModel load_any(const std::string& path, lowbit::Tables tables = lowbit::Tables::resident) {
  LoadedModel r;
  struct stat st;
  r.is_dir = ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  r.is_gguf = !r.is_dir && ends_with(path, ".gguf");
  if (r.is_gguf) {
    r.gguf = lowbit::load_gguf(path);
    r.model = std::move(r.gguf.model);
  } else {
    r.model = lowbit::load_model(path, tables);
  }
  return r;
}

// Token ids of a data file: raw int32 ids (*.i32), or BOS + the text encoded with the model's tokenizer.
std::vector<int> load_ids(const Args& a, const LoadedModel& lm, const std::string& model_path, const std::string& data) {
  if (ends_with(data, ".i32")) return lowbit::read_token_file(data);
  if (lm.is_gguf && lm.gguf.has_tokenizer && !a.has("tokenizer")) return lm.gguf.tokenizer.encode(lowbit::read_text_file(data), true);
  return encode_with(a.has("tokenizer") ? a.get("tokenizer") : find_tokenizer(model_path, lm.is_dir), lm.model.cfg.vocab_size,
                     lowbit::read_text_file(data));
}

int cmd_eval(const Args& a) {
  if (!a.has("model")) usage("eval needs --model");
  if (!a.has("data")) usage("eval needs --data");
  if (a.has("threads")) lowbit::set_num_threads(int(a.num("threads", 0)));
  const std::string model_path = a.get("model"), data = a.get("data");
  const LoadedModel lm = load_any(model_path);
  const lowbit::Model& m = lm.model;
  const std::vector<int> ids = load_ids(a, lm, model_path, data);
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

int cmd_quantize(const Args& a) {
  for (const char* k : {"model", "method"})
    if (!a.has(k)) usage((std::string("quantize needs --") + k).c_str());
  if (a.has("spec") == a.has("wbits")) usage("quantize needs either --spec (e.g. w4a16g128-sym) or --wbits");
  if (a.has("threads")) lowbit::set_num_threads(int(a.num("threads", 0)));
  const auto t_start = std::chrono::steady_clock::now();
  const std::string model_path = a.get("model"), method = a.get("method");
  const std::vector<const lowbit::MethodInfo*> steps = lowbit::parse_method_chain(method);
  bool calibrated = false, transforms = false;
  for (const lowbit::MethodInfo* s : steps) calibrated |= s->calibrated, transforms |= !s->quantizes;
  // The weight quantizer: a spec string (parse_spec: "w4a16g128-sym-ragged", its grid the method's reference
  // unless it names one) or the same facts as flags.
  lowbit::QuantSpec spec;
  if (a.has("spec")) {
    const std::string text = a.get("spec");
    spec = lowbit::parse_spec(text);
    bool names_grid = false;
    for (const char* g : {"minmax", "gptq", "omniquant", "ggml"}) names_grid |= text.find(g) != std::string::npos;
    if (!names_grid) spec.grid = lowbit::reference_grid(method);
  } else {
    spec.wbits = int(a.num("wbits", 4));
    spec.group_size = int(a.num("group", -1));
    spec.symmetric = a.has("sym");
    spec.allow_ragged = a.has("ragged");
    spec.grid = lowbit::reference_grid(method);
  }
  if (a.has("grid")) spec.grid = lowbit::parse_grid(a.get("grid"));
  if (spec.act_quantized()) lowbit::fail("--spec ", lowbit::to_string(spec), ": activation quantization is not supported yet (a16)");
  if (spec.wbits < 2 || spec.wbits > 8) lowbit::fail("--wbits ", spec.wbits, " is not supported (2..8)");
  lowbit::validate(spec);
  if (a.has("save-trans") && !transforms) lowbit::fail("--save-trans needs a method with a transform (awq, awq+gptq)");
  // without --eval the classifier is never used: a Hugging Face model's tables stay in the mapped file
  LoadedModel lm = load_any(model_path, a.has("eval") ? lowbit::Tables::resident : lowbit::Tables::deferred);
  const lowbit::Model& m = lm.model;
  lowbit::Windows calib;
  if (calibrated) {
    if (!a.has("calib")) usage(("--method " + method + " needs --calib FILE").c_str());
    const std::vector<int> ids = load_ids(a, lm, model_path, a.get("calib"));
    const int n = int(a.num("nsamples", 128)), L = int(a.num("seqlen", 256));
    const std::string sampling = a.get("calib-sampling", "random");
    if (sampling == "random") calib = lowbit::random_windows(ids, n, L, std::uint64_t(a.num("seed", 0)));
    else if (sampling == "sequential") calib = lowbit::sequential_windows(ids, n, L);
    else usage("--calib-sampling must be random or sequential");
  }
  // every linear's shape against the spec, and the calibration windows, before any work
  lowbit::visit(spec, [&](auto q) { lowbit::check_quantizable(m.cfg, q, calib, calibrated); });
  std::vector<int> eval_ids;
  const long eval_L = a.num("eval-seq-len", std::min(512, m.cfg.max_seq_len)), eval_max = a.num("eval-max-tokens", -1);
  lowbit::PerplexityResult fp, qr;
  if (a.has("eval")) {
    eval_ids = load_ids(a, lm, model_path, a.get("eval"));
    fp = lowbit::perplexity(m, eval_ids, int(eval_L), eval_max);
    if (!a.has("json")) std::printf("fp32:      ppl %.4f  (nll %.4f over %lld tokens)\n", fp.ppl, fp.nll, (long long)fp.predictions);
  }
  lowbit::MethodOptions mo;
  mo.gptq.act_order = a.has("act-order");
  mo.gptq.static_groups = a.has("static-groups");
  if (a.has("percdamp")) mo.gptq.percdamp = std::stod(a.get("percdamp"));
  mo.awq.duo_scaling = a.has("duo-scaling");
  if (a.has("awq-scoring")) {
    const std::string sc = a.get("awq-scoring");
    if (sc == "module") mo.awq.scoring = lowbit::AwqScoring::module_output;
    else if (sc == "fast") mo.awq.scoring = lowbit::AwqScoring::fast;
    else if (sc == "gram") mo.awq.scoring = lowbit::AwqScoring::gram;
    else usage("--awq-scoring must be module (the reference), fast or gram");
  }
  if (a.has("awq-scale-tokens")) mo.awq.scale_tokens = std::stoi(a.get("awq-scale-tokens"));
  mo.awq.clip = !a.has("no-clip");
  mo.awq.symmetric_clip = !a.has("asym-clip");
  lowbit::PipelineOptions opt;
  if (!a.has("quiet") && !a.has("json")) opt.progress = lowbit::stderr_progress();
  if (a.has("propagate")) {
    const std::string pr = a.get("propagate");
    if (pr == "fp") opt.propagate = lowbit::Chain::full_precision;
    else if (pr == "quant") opt.propagate = lowbit::Chain::quantized;
    else usage("--propagate must be fp or quant");
  }
  std::vector<lowbit::AwqBlockResult> loaded;
  if (a.has("load-scale") || a.has("load-clip")) {
    loaded = lowbit::load_awq(a.get("load-scale"), a.get("load-clip"), m.cfg.n_layers);
    mo.awq_loaded = {&loaded, a.has("load-scale"), a.has("load-clip")};
  }
  // Sinks: the fake-quantized model in memory only when it is evaluated; files stream block by block.  The
  // output folders are created (and their files opened) now, before any work.
  lowbit::ModelSink keep(m, {a.has("eval"), false, false});
  lowbit::SinkFan sinks;
  sinks.add(&keep);
  const std::string desc = lowbit::to_string(spec) + " " + method;
  std::unique_ptr<lowbit::HfSink> fake_out, trans_out;
  if (a.has("save-fake")) {
    fake_out = std::make_unique<lowbit::HfSink>(m, a.get("save-fake"), lowbit::Weights::fake_quantized, lowbit::DType::f32,
                                                std::map<std::string, std::string>{{"lowbit", "fake-quantized " + desc}});
    sinks.add(fake_out.get());
  }
  if (a.has("save-trans")) {
    trans_out = std::make_unique<lowbit::HfSink>(m, a.get("save-trans"), lowbit::Weights::transformed, lowbit::DType::f32,
                                                 std::map<std::string, std::string>{{"lowbit", "transformed " + desc}});
    sinks.add(trans_out.get());
  }
  lowbit::PipelineReport rep;
  lowbit::visit(spec, [&](auto q) {
    auto chain = lowbit::make_method_chain(method, q, mo);
    rep = lowbit::quantize_model(m, calib, chain, sinks, opt);
  });
  if (fake_out) fake_out->commit();
  if (trans_out) trans_out->commit();
  if (a.has("save-scale")) lowbit::save_awq_scales(a.get("save-scale"), keep.awq);
  if (a.has("save-clip")) lowbit::save_awq_clips(a.get("save-clip"), keep.awq);
  if (a.has("eval")) qr = lowbit::perplexity(keep.fake, eval_ids, int(eval_L), eval_max);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (a.has("json")) {
    std::printf("{\"method\": \"%s\", \"spec\": \"%s\", \"wbits\": %d, \"group\": %d, \"sym\": %s, \"grid\": \"%s\", "
                "\"act_order\": %s, \"ppl_fp\": %.6f, \"ppl_quant\": %.6f, \"eval_tokens\": %lld, "
                "\"quant_seconds\": %.3f, \"seconds\": %.3f, \"damp_retries\": %d}\n",
                method.c_str(), lowbit::to_string(spec).c_str(), spec.wbits, spec.group_size,
                spec.symmetric ? "true" : "false", lowbit::to_string(spec.grid), mo.gptq.act_order ? "true" : "false",
                a.has("eval") ? fp.ppl : 0.0, a.has("eval") ? qr.ppl : 0.0, (long long)qr.predictions, rep.seconds, total,
                rep.damp_retries);
  } else {
    std::printf("%s %s: quantized in %.2f s%s\n", method.c_str(), lowbit::to_string(spec).c_str(), rep.seconds,
                rep.damp_retries ? " (GPTQ damping was raised for some layers)" : "");
    if (a.has("eval")) std::printf("quantized: ppl %.4f  (nll %.4f)\n", qr.ppl, qr.nll);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("missing subcommand");
  const std::string cmd = argv[1];
  try {
    if (cmd == "eval") return cmd_eval(parse(argc, argv, 2, {"json"}, {"model", "tokenizer", "data", "seq-len", "max-tokens", "threads"}));
    if (cmd == "quantize")
      return cmd_quantize(parse(argc, argv, 2,
                                {"sym", "ragged", "act-order", "static-groups", "duo-scaling", "no-clip", "asym-clip", "json", "quiet"},
                                {"model", "method", "spec", "wbits", "group", "grid", "percdamp", "calib", "nsamples", "seqlen", "seed",
                                 "calib-sampling", "awq-scoring", "awq-scale-tokens", "save-fake", "save-trans", "save-scale", "save-clip", "load-scale",
                                 "load-clip", "eval", "eval-seq-len", "eval-max-tokens", "tokenizer", "threads",
                                 "propagate"}));
    usage(("unknown subcommand '" + cmd + "'").c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
