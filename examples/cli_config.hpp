// cli_config.hpp -- `lowbit quantize --config FILE.yml` (LLMC-style YAML) and `--paddle-args FILE.json`
// (PaddleSlim / PaddleNLP-style argument files): each file is translated into the command line's own options,
// which then parse and validate exactly as if typed.  So config keys and options are one-to-one: every key of the
// tables below sets one option (or checks that the file asks for what lowbit does), and `lowbit help config` prints
// the tables (docs/configs.md holds the same text; a test compares them).
//
// Before any work: an unknown key, a value of the wrong type, a file that is missing, or contradictory keys
// (`load_clip` without `clip_path`) are errors naming the key and the file.  An option given on the command line
// overrides the file's key for it (so a shipped config runs on another model: --config F --model M); --dry-run
// lists every key, the option it set and whether the command line overrode it.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <lowbit/core/error.hpp>
#include <lowbit/io/text_file.hpp>
#include <nlohmann/json.hpp>

#if LOWBIT_HAS_YAML
#include <yaml-cpp/yaml.h>
#endif

namespace lowbit_cli {

// One option the file sets, and the key that set it (for errors and --dry-run).
struct ConfigArg {
  std::string option;  // "--wbits"
  std::string value;   // empty for a flag
  bool flag = false;
  std::string key;     // "quant.weight.bit"
  bool overridden = false;  // the command line gives the option too (and wins)
};

struct ConfigKey {
  const char* key;
  const char* option;  // the option it sets ("" = checked only)
  const char* meaning;
};

// LLMC's keys (configs/quantization/*/*.yml; llmc/compression/quantization/*.py) and lowbit's export keys.
inline const std::vector<ConfigKey>& llmc_keys() {
  static const std::vector<ConfigKey> k = {
      {"base.seed", "--seed", "seed of the calibration windows"},
      {"model.type", "", "Llama, Mistral or Qwen2 (the architecture is read from the model itself)"},
      {"model.path", "--model", "the model: llama2.c .bin, .gguf or a Hugging Face folder"},
      {"model.tokenizer", "--tokenizer", "lowbit: the tokenizer, when it is not beside the model"},
      {"model.torch_dtype", "", "auto, float16, bfloat16 or float32: lowbit computes in float32 whatever it is"},
      {"calib.name", "", "the data set's name (informational: the data is calib.path)"},
      {"calib.download", "", "must be false: lowbit never downloads"},
      {"calib.path", "--calib", "calibration text, jsonl or *.i32 tokens"},
      {"calib.n_samples", "--calib-samples", "calibration windows"},
      {"calib.seq_len", "--calib-seq-len", "tokens per window"},
      {"calib.bs", "", "-1 or a batch size: lowbit runs all windows through a block at once"},
      {"calib.preproc", "--calib-sampling", "*_gptq: random (GPTQ's random offsets); pileval_awq, txt_general_preproc, general: sequential"},
      {"calib.seed", "--seed", "seed of the calibration windows (must agree with base.seed)"},
      {"calib.type", "", "must be txt"},
      {"eval.eval_pos", "--no-fp-eval", "a list of pretrain, transformed, fake_quant: without pretrain the float model is not evaluated"},
      {"eval.name", "", "the data set's name (informational: the data is eval.path)"},
      {"eval.download", "", "must be false: lowbit never downloads"},
      {"eval.path", "--eval", "evaluation text or *.i32 tokens"},
      {"eval.seq_len", "--eval-seq-len", "evaluation window"},
      {"eval.bs", "", "accepted: lowbit evaluates one window at a time"},
      {"eval.inference_per_block", "", "accepted: lowbit always streams blocks"},
      {"quant.method", "--method", "Awq, GPTQ, RTN, OmniQuant, SmoothQuant, OsPlus (or a lowbit chain such as awq+gptq)"},
      {"quant.weight.bit", "--wbits", "weight bits"},
      {"quant.weight.symmetric", "--sym", "symmetric weight grid"},
      {"quant.weight.granularity", "--group", "per_group (with group_size) or per_channel (--group -1)"},
      {"quant.weight.group_size", "--group", "columns per group"},
      {"quant.weight.calib_algo", "", "minmax, or learnable (OmniQuant's LWC; with method OmniQuant only)"},
      {"quant.weight.ste", "", "must be true (OmniQuant's straight-through rounding)"},
      {"quant.act.bit", "--abits", "activation bits (per-token dynamic unless quant.act.static)"},
      {"quant.act.symmetric", "--act-asym", "false: asymmetric activations"},
      {"quant.act.granularity", "--act-granularity", "per_token or per_tensor"},
      {"quant.act.static", "--act-static", "static ranges calibrated on the calibration windows"},
      {"quant.act.calib_algo", "--act-observer", "minmax (static ranges)"},
      {"quant.special.trans", "", "AWQ's scale search: must be true with Awq"},
      {"quant.special.trans_version", "--duo-scaling", "v1: s = x^r / w^(1-r) (--duo-scaling); v2: s = x^r"},
      {"quant.special.weight_clip", "--no-clip", "false: no clip search"},
      {"quant.special.clip_version", "", "v1 or v2 (clips as OmniQuant's LWC start: awq+omniquant does it in one run)"},
      {"quant.special.clip_sym", "--asym-clip", "false: asymmetric clip search"},
      {"quant.special.save_scale", "--save-scale", "write AWQ's scales to scale_path"},
      {"quant.special.scale_path", "--save-scale", "a .safetensors file, or a folder (then scales.safetensors in it)"},
      {"quant.special.save_clip", "--save-clip", "write AWQ's clips to clip_path"},
      {"quant.special.clip_path", "--save-clip", "a .safetensors file, or a folder (then clips.safetensors in it)"},
      {"quant.special.search_scale_init", "--load-scale", "LET starts from the scales in scale_path"},
      {"quant.special.load_clip", "--load-clip", "LWC starts from the clips in clip_path"},
      {"quant.special.search_clip_init", "--search-clip-init", "LWC starts from AWQ's clip search on each block"},
      {"quant.special.aug_loss", "--aug-loss", "OmniQuant's aug_loss"},
      {"quant.special.lwc", "--no-lwc", "false: no learnable weight clipping"},
      {"quant.special.let", "--let", "learnable equivalent transformation"},
      {"quant.special.lwc_lr", "--lr-lwc", "LWC learning rate"},
      {"quant.special.let_lr", "--lr-let", "LET learning rate"},
      {"quant.special.use_shift", "", "must be false (LET without shifts)"},
      {"quant.special.alpha", "--alpha", "SmoothQuant / LET init migration strength"},
      {"quant.special.deactive_amp", "", "accepted: lowbit trains in float32"},
      {"quant.special.epochs", "--epochs", "OmniQuant epochs"},
      {"quant.special.wd", "--wd", "OmniQuant weight decay"},
      {"quant.special.actorder", "--act-order", "GPTQ act-order"},
      {"quant.special.static_groups", "--static-groups", "GPTQ static groups"},
      {"quant.special.percdamp", "--percdamp", "GPTQ dampening"},
      {"quant.special.blocksize", "", "must be 128 (GPTQ's block)"},
      {"quant.special.true_sequential", "", "must be true (lowbit's GPTQ is true-sequential)"},
      {"quant.quant_out", "--propagate", "true: the next block's input is the quantized block's output; false: the float one"},
      {"save.save_path", "", "the folder the save_* outputs go in (must exist)"},
      {"save.save_trans", "--save-trans", "save_path/transformed_model"},
      {"save.save_fake", "--save-fake", "save_path/fake_quant_model"},
      {"save.save_autoawq", "--save-awq", "save_path/autoawq_quant_model (AutoAWQ GEMM)"},
      {"save.save_gptq", "--save-gptq", "lowbit: save_path/gptq_quant_model (GPTQ)"},
      {"save.save_gguf", "--save-gguf", "lowbit: save_path/model.gguf (llama.cpp)"},
      {"save.gguf_type", "--gguf-type", "lowbit: auto, q4_0, q4_1, q8_0, f16 or f32"},
  };
  return k;
}

// PaddleNLP's llm/run_quantization.py arguments (llm/utils/argument.py QuantArgument and the training arguments its
// ptq_argument.json files carry).
inline const std::vector<ConfigKey>& paddle_keys() {
  static const std::vector<ConfigKey> k = {
      {"model_name_or_path", "--model", "the model"},
      {"dataset_name_or_path", "--calib", "a folder holding quant.json ({\"src\", \"tgt\"} jsonl), or the file itself"},
      {"output_dir", "--save-fake", "the quantized (fake-quantized) model's folder"},
      {"quant_type", "--quant-type", "A8W8, WINT8 or WINT4"},
      {"weight_quant_method", "--weight-quant-method", "abs_max_channel_wise or groupwise"},
      {"do_ptq", "--method", "the last step is PaddleSlim's PTQ (rtn) unless do_gptq"},
      {"ptq_step", "--calib-samples", "steps x per_device_train_batch_size windows (the largest *_step)"},
      {"shift", "--shift", "PaddleSlim's Shift first"},
      {"shift_all_linears", "--shift-all-linears", "shift every linear's input"},
      {"shift_sampler", "--shift-sampler", "ema, or none (lowbit's minmax midpoint)"},
      {"shift_step", "--calib-samples", "as ptq_step"},
      {"smooth", "--method", "SmoothQuant (pss with smooth_piecewise_search)"},
      {"smooth_all_linears", "--smooth-all-linears", "smooth every linear's input"},
      {"smooth_sampler", "", "must be none"},
      {"smooth_step", "--calib-samples", "as ptq_step"},
      {"smooth_piecewise_search", "--method", "PaddleSlim's piecewise search (pss)"},
      {"smooth_k_piece", "--k-piece", "pieces of the search"},
      {"smooth_search_piece", "--search-piece", "search the number of pieces"},
      {"do_gptq", "--method", "GPTQ as the last step"},
      {"gptq_step", "--calib-samples", "as ptq_step"},
      {"do_awq", "--method", "AWQ's scale search before the last step"},
      {"auto_clip", "--no-clip", "AWQ's clip search (with do_awq); false: --no-clip"},
      {"autoclip_step", "--calib-samples", "as ptq_step"},
      {"per_device_train_batch_size", "--calib-samples", "windows per step"},
      {"max_length", "--calib-seq-len", "tokens per calibration window"},
      {"src_length", "", "accepted: lowbit's windows are max_length tokens"},
      {"per_device_eval_batch_size", "", "accepted: lowbit evaluates one window at a time"},
      {"eval_accumulation_steps", "", "accepted"},
      {"do_eval", "", "accepted: evaluation is --eval FILE"},
      {"eval_with_do_generation", "", "must be false"},
      {"fp16", "", "accepted: lowbit computes in float32"},
      {"bf16", "", "accepted: lowbit computes in float32"},
      {"fp16_opt_level", "", "accepted"},
      {"unified_checkpoint", "", "accepted"},
  };
  return k;
}

// `lowbit help config`: both tables.
inline std::string config_help() {
  std::string s = "LLMC-style YAML (lowbit quantize --config FILE.yml): key -> option\n";
  for (const ConfigKey& k : llmc_keys())
    s += std::string("  ") + k.key + " -> " + (*k.option ? k.option : "(checked)") + ": " + k.meaning + "\n";
  s += "\nPaddleSlim-style JSON (lowbit quantize --paddle-args FILE.json): key -> option\n";
  for (const ConfigKey& k : paddle_keys())
    s += std::string("  ") + k.key + " -> " + (*k.option ? k.option : "(checked)") + ": " + k.meaning + "\n";
  return s;
}

namespace detail {

// A flat view of a config file: dotted key -> scalar text (lists joined by ','), with what was read.
class Flat {
 public:
  Flat(std::string file, const std::vector<ConfigKey>& known) : file_(std::move(file)) {
    for (const ConfigKey& k : known) known_.insert(k.key);
  }
  // What a value was in its file: YAML values are text, read as whatever the key needs; JSON's types are exact (a
  // string is no number or switch, and only a string is a text value) -- checked where the key is read, from its
  // reader's type.
  enum class Kind { text, json_string, json_other, list };
  void put(const std::string& key, std::string v, Kind kind = Kind::text) {
    if (kind == Kind::json_string) json_strings_.insert(key);
    if (kind == Kind::json_other) json_others_.insert(key);
    if (kind == Kind::list) lists_.insert(key);
    if (!known_.count(key)) {
      // the nearest known key: the same name elsewhere, or a name within two edits under the same section
      std::string near;
      const auto tail = [](const std::string& k) { return k.substr(k.rfind('.') + 1); };
      const auto head = [](const std::string& k) { return k.rfind('.') == std::string::npos ? std::string() : k.substr(0, k.rfind('.')); };
      for (const std::string& k : known_)
        if (tail(k) == tail(key) || (head(k) == head(key) && edits(tail(k), tail(key)) <= 2)) near = k;
      lowbit::fail(file_, ": unknown key '", key, "'", near.empty() ? "" : " (did you mean '" + near + "'?)",
                   "; lowbit help config lists the keys");
    }
    values_[key] = std::move(v);
  }
  bool has(const std::string& k) const { return values_.count(k) != 0; }
  const std::string& file() const { return file_; }

  std::string text(const std::string& k) {
    if (lists_.count(k)) lowbit::fail(file_, ": key '", k, "' must be a single value, not a list");
    return values_.at(k);
  }
  std::vector<std::string> list(const std::string& k) {
    std::vector<std::string> out;
    const std::string& v = values_.at(k);
    for (std::size_t i = 0, j; i <= v.size(); i = j + 1) {
      j = std::min(v.find(',', i), v.size());
      if (j > i) out.push_back(v.substr(i, j - i));
    }
    return out;
  }
  std::string string(const std::string& k) {
    if (json_others_.count(k)) lowbit::fail(file_, ": key '", k, "' must be a string");
    return text(k);
  }
  bool boolean(const std::string& k) {
    if (json_strings_.count(k)) lowbit::fail(file_, ": key '", k, "' must be true or false");
    std::string v = lower(text(k));
    if (v == "true" || v == "yes" || v == "on") return true;
    if (v == "false" || v == "no" || v == "off") return false;
    lowbit::fail(file_, ": key '", k, "' must be true or false, not '", values_.at(k), "'");
  }
  long long integer(const std::string& k) {
    if (json_strings_.count(k)) lowbit::fail(file_, ": key '", k, "' must be an integer");
    const std::string v = text(k);
    std::size_t used = 0;
    long long x = 0;
    try {
      x = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (v.empty() || used != v.size()) lowbit::fail(file_, ": key '", k, "' must be an integer, not '", v, "'");
    return x;
  }
  double number(const std::string& k) {
    if (json_strings_.count(k)) lowbit::fail(file_, ": key '", k, "' must be a finite number");
    const std::string v = text(k);
    std::size_t used = 0;
    double x = 0;
    try {
      x = std::stod(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (v.empty() || used != v.size() || !std::isfinite(x)) lowbit::fail(file_, ": key '", k, "' must be a finite number, not '", v, "'");
    return x;
  }
  [[noreturn]] void bad(const std::string& k, const std::string& why) { lowbit::fail(file_, ": key '", k, "': ", why); }

  static std::size_t edits(const std::string& a, const std::string& b) {  // Levenshtein distance
    std::vector<std::size_t> d(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) d[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diag = d[0];
      d[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = d[j];
        d[j] = std::min({d[j] + 1, d[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return d[b.size()];
  }
  static std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

 private:
  std::string file_;
  std::set<std::string> known_, lists_, json_strings_, json_others_;
  std::map<std::string, std::string> values_;
};

class Args {
 public:
  explicit Args(std::vector<ConfigArg>& out) : out_(out) {}
  void option(const std::string& opt, const std::string& value, const std::string& key) {
    for (const ConfigArg& a : out_)
      if (a.option == opt && !a.flag && a.value != value)
        lowbit::fail("keys '", a.key, "' and '", key, "' both set ", opt, " (", a.value, " and ", value, ")");
      else if (a.option == opt)
        return;
    out_.push_back({opt, value, false, key, false});
  }
  void flag(const std::string& opt, const std::string& key) {
    for (const ConfigArg& a : out_)
      if (a.option == opt) return;
    out_.push_back({opt, "", true, key, false});
  }

 private:
  std::vector<ConfigArg>& out_;
};

inline std::string join_path(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}
// scale_path / clip_path: a .safetensors file, or a folder that gets `name` in it.
inline std::string artifact_file(const std::string& p, const char* name) {
  const std::string ext = ".safetensors";
  return p.size() > ext.size() && p.compare(p.size() - ext.size(), ext.size(), ext) == 0 ? p : join_path(p, name);
}

#if LOWBIT_HAS_YAML
inline void flatten(const YAML::Node& n, const std::string& prefix, Flat& f) {
  if (n.IsMap()) {
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) lowbit::fail(f.file(), ": a key under '", prefix, "' is not a name");
      flatten(kv.second, prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar(), f);
    }
  } else if (n.IsSequence()) {
    std::string v;
    for (const auto& e : n) {
      if (!e.IsScalar()) lowbit::fail(f.file(), ": key '", prefix, "' must be a list of values");
      v += (v.empty() ? "" : ",") + e.Scalar();
    }
    f.put(prefix, v, detail::Flat::Kind::list);
  } else if (n.IsScalar()) {
    f.put(prefix, n.Scalar());
  } else if (n.IsNull()) {
    f.put(prefix, "");  // `key:` with nothing: treated as absent below
  }
}
#endif

}  // namespace detail

// The options an LLMC-style YAML file sets.
inline std::vector<ConfigArg> read_llmc_config(const std::string& path) {
#if !LOWBIT_HAS_YAML
  lowbit::fail(path, ": this lowbit was built without yaml-cpp (Debian: libyaml-cpp-dev), so --config cannot read YAML");
#else
  YAML::Node root;
  try {
    root = YAML::Load(lowbit::read_text_file(path));
  } catch (const YAML::Exception& e) {
    lowbit::fail(path, ": not valid YAML (line ", e.mark.line + 1, ", column ", e.mark.column + 1, "): ", e.msg);
  }
  if (!root.IsMap()) lowbit::fail(path, ": the config must be a mapping of sections (model, calib, quant, save, eval)");
  detail::Flat f(path, llmc_keys());
  detail::flatten(root, "", f);
  std::vector<ConfigArg> out;
  detail::Args a(out);
  const auto has = [&](const std::string& k) { return f.has(k) && !f.text(k).empty(); };
  const auto str = [&](const char* k, const char* opt) {
    if (has(k)) a.option(opt, f.text(k), k);
  };
  const auto integer = [&](const char* k, const char* opt) {
    if (has(k)) a.option(opt, std::to_string(f.integer(k)), k);
  };
  const auto number = [&](const char* k, const char* opt) {
    if (has(k)) (void)f.number(k), a.option(opt, f.text(k), k);
  };
  const auto flag_if = [&](const char* k, bool when, const char* opt) {
    if (has(k) && f.boolean(k) == when) a.flag(opt, k);
  };
  const auto must = [&](const char* k, bool want) {
    if (has(k) && f.boolean(k) != want) f.bad(k, std::string("lowbit supports ") + (want ? "true" : "false") + " only");
  };

  // the seed draws random windows; sequential ones (pileval_awq, ...) have none to draw
  const bool sequential = has("calib.preproc") && f.text("calib.preproc").find("_gptq") == std::string::npos &&
                          f.text("calib.preproc") != "random_truncate_txt";
  for (const char* k : {"base.seed", "calib.seed"})
    if (has(k)) {
      const long long seed = f.integer(k);
      if (!sequential) a.option("--seed", std::to_string(seed), k);
    }
  if (has("model.type")) {
    const std::string t = detail::Flat::lower(f.text("model.type"));
    if (t != "llama" && t != "mistral" && t != "qwen2") f.bad("model.type", "lowbit quantizes Llama, Mistral and Qwen2 models");
  }
  str("model.path", "--model");
  str("model.tokenizer", "--tokenizer");
  if (has("model.torch_dtype")) {
    const std::string t = f.text("model.torch_dtype");
    if (t != "auto" && t != "float16" && t != "bfloat16" && t != "float32") f.bad("model.torch_dtype", "auto, float16, bfloat16 or float32");
  }
  must("calib.download", false);
  must("eval.download", false);
  str("calib.path", "--calib");
  integer("calib.n_samples", "--calib-samples");
  integer("calib.seq_len", "--calib-seq-len");
  if (has("calib.bs") && f.integer("calib.bs") == 0) f.bad("calib.bs", "-1 or a positive batch size");
  if (has("calib.type") && f.text("calib.type") != "txt") f.bad("calib.type", "lowbit reads text (txt)");
  if (has("calib.preproc")) {
    const std::string p = f.text("calib.preproc");
    const bool random = p.size() > 5 && p.compare(p.size() - 5, 5, "_gptq") == 0;
    if (!random && p != "pileval_awq" && p != "txt_general_preproc" && p != "general" && p != "random_truncate_txt")
      f.bad("calib.preproc", "one of *_gptq, random_truncate_txt (random windows), pileval_awq, txt_general_preproc, general (sequential)");
    a.option("--calib-sampling", random || p == "random_truncate_txt" ? "random" : "sequential", "calib.preproc");
  }
  if (f.has("eval.eval_pos")) {
    bool pretrain = false;
    for (const std::string& p : f.list("eval.eval_pos")) {
      if (p != "pretrain" && p != "transformed" && p != "fake_quant" && p != "fake_quant_wo_kv")
        f.bad("eval.eval_pos", "'" + p + "' is not pretrain, transformed, fake_quant or fake_quant_wo_kv");
      pretrain |= p == "pretrain";
    }
    if (!pretrain) a.flag("--no-fp-eval", "eval.eval_pos");
  }
  str("eval.path", "--eval");
  integer("eval.seq_len", "--eval-seq-len");

  std::string method;
  if (has("quant.method")) {
    const std::string m = detail::Flat::lower(f.text("quant.method"));
    static const std::map<std::string, std::string> names = {{"awq", "awq"}, {"gptq", "gptq"}, {"rtn", "rtn"},
                                                             {"omniquant", "omniquant"}, {"smoothquant", "smoothquant"},
                                                             {"osplus", "os+"}};
    auto it = names.find(m);
    method = it != names.end() ? it->second : m;
    a.option("--method", method, "quant.method");
  }
  integer("quant.weight.bit", "--wbits");
  flag_if("quant.weight.symmetric", true, "--sym");
  if (has("quant.weight.granularity")) {
    const std::string g = f.text("quant.weight.granularity");
    if (g == "per_channel") a.option("--group", "-1", "quant.weight.granularity");
    else if (g != "per_group") f.bad("quant.weight.granularity", "per_group or per_channel");
    else if (!has("quant.weight.group_size")) f.bad("quant.weight.granularity", "per_group needs quant.weight.group_size");
  }
  integer("quant.weight.group_size", "--group");
  if (has("quant.weight.calib_algo")) {
    const std::string c = f.text("quant.weight.calib_algo");
    // learnable: OmniQuant's LWC; with Awq and clip_version v2 it marks the clips as LWC's start (step 1 of AWQ ->
    // OmniQuant), which --save-clip writes either way
    const bool v2_clips = method == "awq" && has("quant.special.clip_version") && f.text("quant.special.clip_version") == "v2";
    if (c == "learnable" && method != "omniquant" && method != "awq+omniquant" && !v2_clips)
      f.bad("quant.weight.calib_algo", "learnable (LWC) is OmniQuant's (or Awq's with clip_version v2); quant.method is " + method);
    if (c != "minmax" && c != "learnable") f.bad("quant.weight.calib_algo", "minmax or learnable");
  }
  must("quant.weight.ste", true);
  integer("quant.act.bit", "--abits");
  flag_if("quant.act.symmetric", false, "--act-asym");
  str("quant.act.granularity", "--act-granularity");
  flag_if("quant.act.static", true, "--act-static");
  str("quant.act.calib_algo", "--act-observer");
  if (has("quant.special.trans") && !f.boolean("quant.special.trans") && method == "awq")
    f.bad("quant.special.trans", "AWQ without its scale search is not a method lowbit runs (use quant.method RTN)");
  if (has("quant.special.trans_version")) {
    const std::string v = f.text("quant.special.trans_version");
    if (v == "v1") a.flag("--duo-scaling", "quant.special.trans_version");
    else if (v != "v2") f.bad("quant.special.trans_version", "v1 or v2");
  }
  flag_if("quant.special.weight_clip", false, "--no-clip");
  if (has("quant.special.clip_version") && f.text("quant.special.clip_version") != "v1" && f.text("quant.special.clip_version") != "v2")
    f.bad("quant.special.clip_version", "v1 or v2");
  flag_if("quant.special.clip_sym", false, "--asym-clip");
  const auto path_for = [&](const char* flag_key, const char* path_key, const char* opt, const char* name) {
    if (!has(flag_key) || !f.boolean(flag_key)) return;
    if (!has(path_key)) f.bad(flag_key, std::string("needs ") + path_key);
    a.option(opt, detail::artifact_file(f.text(path_key), name), flag_key);
  };
  path_for("quant.special.save_scale", "quant.special.scale_path", "--save-scale", "scales.safetensors");
  path_for("quant.special.save_clip", "quant.special.clip_path", "--save-clip", "clips.safetensors");
  path_for("quant.special.search_scale_init", "quant.special.scale_path", "--load-scale", "scales.safetensors");
  path_for("quant.special.load_clip", "quant.special.clip_path", "--load-clip", "clips.safetensors");
  flag_if("quant.special.search_clip_init", true, "--search-clip-init");
  flag_if("quant.special.aug_loss", true, "--aug-loss");
  flag_if("quant.special.lwc", false, "--no-lwc");
  flag_if("quant.special.let", true, "--let");
  number("quant.special.lwc_lr", "--lr-lwc");
  number("quant.special.let_lr", "--lr-let");
  must("quant.special.use_shift", false);
  number("quant.special.alpha", "--alpha");
  if (has("quant.special.deactive_amp")) (void)f.boolean("quant.special.deactive_amp");
  integer("quant.special.epochs", "--epochs");
  number("quant.special.wd", "--wd");
  flag_if("quant.special.actorder", true, "--act-order");
  flag_if("quant.special.static_groups", true, "--static-groups");
  number("quant.special.percdamp", "--percdamp");
  if (has("quant.special.blocksize") && f.integer("quant.special.blocksize") != 128) f.bad("quant.special.blocksize", "lowbit's GPTQ uses blocks of 128");
  must("quant.special.true_sequential", true);
  if (has("quant.quant_out")) a.option("--propagate", f.boolean("quant.quant_out") ? "quant" : "fp", "quant.quant_out");
  // a path key without its switch is contradictory too: nothing would be written or read
  for (const char* k : {"quant.special.scale_path", "quant.special.clip_path"})
    if (has(k) && !(has("quant.special.save_scale") && f.boolean("quant.special.save_scale")) &&
        !(has("quant.special.save_clip") && f.boolean("quant.special.save_clip")) &&
        !(has("quant.special.search_scale_init") && f.boolean("quant.special.search_scale_init")) &&
        !(has("quant.special.load_clip") && f.boolean("quant.special.load_clip")))
      f.bad(k, "is given but no save_scale / save_clip / search_scale_init / load_clip uses it");

  const std::string base = has("save.save_path") ? f.text("save.save_path") : std::string();
  const auto save = [&](const char* k, const char* opt, const char* name) {
    if (!has(k) || !f.boolean(k)) return;
    if (base.empty()) f.bad(k, "needs save.save_path");
    a.option(opt, detail::join_path(base, name), k);
  };
  save("save.save_trans", "--save-trans", "transformed_model");
  save("save.save_fake", "--save-fake", "fake_quant_model");
  save("save.save_autoawq", "--save-awq", "autoawq_quant_model");
  save("save.save_gptq", "--save-gptq", "gptq_quant_model");
  save("save.save_gguf", "--save-gguf", "model.gguf");
  if (has("save.gguf_type")) {  // the type of save_gguf's file: without it, nothing uses the key
    if (!(has("save.save_gguf") && f.boolean("save.save_gguf"))) (void)f.text("save.gguf_type");
    else a.option("--gguf-type", f.text("save.gguf_type"), "save.gguf_type");
  }
  return out;
#endif
}

// The options a PaddleSlim-style JSON argument file sets.
inline std::vector<ConfigArg> read_paddle_args(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(lowbit::read_text_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    lowbit::fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) lowbit::fail(path, ": the argument file must be one JSON object");
  detail::Flat f(path, paddle_keys());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& v = it.value();
    if (v.is_object() || v.is_array()) lowbit::fail(path, ": key '", it.key(), "' must be a single value");
    if (v.is_null()) continue;
    f.put(it.key(), v.is_string() ? v.get<std::string>() : v.dump(),
          v.is_string() ? detail::Flat::Kind::json_string : detail::Flat::Kind::json_other);
  }
  std::vector<ConfigArg> out;
  detail::Args a(out);
  const auto on = [&](const char* k) { return f.has(k) && f.boolean(k); };
  const auto str = [&](const char* k, const char* opt) {
    if (f.has(k)) a.option(opt, f.string(k), k);
  };
  str("model_name_or_path", "--model");
  if (f.has("dataset_name_or_path")) {
    const std::string d = f.string("dataset_name_or_path");
    const bool file = d.size() > 5 && (d.compare(d.size() - 5, 5, ".json") == 0 || d.compare(d.size() - 6, 6, ".jsonl") == 0);
    a.option("--calib", file ? d : detail::join_path(d, "quant.json"), "dataset_name_or_path");
  }
  str("output_dir", "--save-fake");
  str("quant_type", "--quant-type");
  str("weight_quant_method", "--weight-quant-method");
  // the method chain, in PaddleNLP's order: shift, smooth (or piecewise search), AWQ, then GPTQ or PTQ
  std::string chain;
  if (on("smooth")) chain = on("smooth_piecewise_search") ? "pss+" : "smoothquant+";
  else if (on("smooth_piecewise_search")) f.bad("smooth_piecewise_search", "needs smooth");
  if (on("do_awq")) chain += "awq+";
  else if (on("auto_clip")) f.bad("auto_clip", "lowbit's clip search is part of AWQ: set do_awq");
  if (f.has("do_ptq") && !f.boolean("do_ptq") && !on("do_gptq")) f.bad("do_ptq", "false with do_gptq false leaves nothing that quantizes");
  if (on("do_gptq")) chain += "gptq";
  else if (chain.empty()) chain = "rtn";
  else chain.pop_back();  // a transform alone ends in RTN (pipeline.hpp parse_method_chain)
  a.option("--method", chain, on("do_gptq") ? "do_gptq" : on("smooth") ? "smooth" : "do_ptq");
  if (on("shift")) a.flag("--shift", "shift");
  if (on("shift_all_linears")) a.flag("--shift-all-linears", "shift_all_linears");
  if (f.has("shift_sampler")) {
    const std::string s = f.string("shift_sampler");
    if (s != "ema" && s != "none") f.bad("shift_sampler", "ema or none");
    a.option("--shift-sampler", s == "ema" ? "ema" : "minmax", "shift_sampler");
  }
  if (on("smooth_all_linears")) a.flag("--smooth-all-linears", "smooth_all_linears");
  if (f.has("smooth_sampler") && f.string("smooth_sampler") != "none") f.bad("smooth_sampler", "lowbit's smoothing uses the absolute maxima (none)");
  if (f.has("smooth_k_piece")) a.option("--k-piece", std::to_string(f.integer("smooth_k_piece")), "smooth_k_piece");
  if (on("smooth_search_piece")) a.flag("--search-piece", "smooth_search_piece");
  if (on("do_awq") && f.has("auto_clip") && !f.boolean("auto_clip")) a.flag("--no-clip", "auto_clip");
  if (on("eval_with_do_generation")) f.bad("eval_with_do_generation", "lowbit evaluates perplexity only");
  // calibration windows: the largest step count x the batch size
  long long steps = 0;
  std::string step_key;
  for (const char* k : {"ptq_step", "shift_step", "smooth_step", "gptq_step", "autoclip_step"})
    if (f.has(k) && f.integer(k) > steps) steps = f.integer(k), step_key = k;
  for (const char* k : {"ptq_step", "shift_step", "smooth_step", "gptq_step", "autoclip_step", "per_device_train_batch_size", "max_length", "src_length", "per_device_eval_batch_size", "eval_accumulation_steps"})
    if (f.has(k) && f.integer(k) < 1) f.bad(k, "must be a positive integer");
  const long long bs = f.has("per_device_train_batch_size") ? f.integer("per_device_train_batch_size") : 1;
  if (steps > 0) a.option("--calib-samples", std::to_string(steps * bs), step_key);
  if (f.has("max_length")) a.option("--calib-seq-len", std::to_string(f.integer("max_length")), "max_length");
  for (const char* k : {"fp16", "bf16", "do_eval", "unified_checkpoint"})
    if (f.has(k)) (void)f.boolean(k);
  if (f.has("fp16_opt_level")) (void)f.string("fp16_opt_level");
  return out;
}

}  // namespace lowbit_cli
