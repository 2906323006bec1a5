// peak_memory: peak RSS of evaluating a TinyLlama-1.1B-shaped model stored as fp16 safetensors.
//
//   build/benchmarks/peak_memory write DIR        writes DIR/{config.json, model.safetensors} (random weights, 2.2 GB)
//   build/benchmarks/peak_memory eval DIR [L]      loads DIR (weights stay mapped) and computes the NLL of one
//                                                  window of L tokens (default 512); prints peak RSS
// The writer streams one tensor at a time so it does not hold the model either.
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <string>
#include <vector>

namespace {

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

// xorshift-based values in about [-0.05, 0.05]: cheap, deterministic, not all equal.
struct Fill {
  std::uint64_t s = 88172645463325252ull;
  float next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return (float(s >> 40) / float(1 << 24) - 0.5f) * 0.1f;
  }
};

int write_model(const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  const int D = 2048, H = 5632, L = 22, NH = 32, KV = 4, V = 32000, hd = D / NH;
  std::ofstream(dir + "/config.json") << "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": " << D
                                      << ", \"intermediate_size\": " << H << ", \"num_hidden_layers\": " << L
                                      << ", \"num_attention_heads\": " << NH << ", \"num_key_value_heads\": " << KV
                                      << ", \"vocab_size\": " << V << ", \"max_position_embeddings\": 2048"
                                      << ", \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false}";
  struct T { std::string name; std::int64_t rows, cols; bool ones; };
  std::vector<T> ts = {{"model.embed_tokens.weight", V, D, false}, {"model.norm.weight", D, 0, true}, {"lm_head.weight", V, D, false}};
  for (int i = 0; i < L; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    ts.push_back({p + "input_layernorm.weight", D, 0, true});
    ts.push_back({p + "post_attention_layernorm.weight", D, 0, true});
    ts.push_back({p + "self_attn.q_proj.weight", D, D, false});
    ts.push_back({p + "self_attn.k_proj.weight", KV * hd, D, false});
    ts.push_back({p + "self_attn.v_proj.weight", KV * hd, D, false});
    ts.push_back({p + "self_attn.o_proj.weight", D, D, false});
    ts.push_back({p + "mlp.gate_proj.weight", H, D, false});
    ts.push_back({p + "mlp.up_proj.weight", H, D, false});
    ts.push_back({p + "mlp.down_proj.weight", D, H, false});
  }
  // header first (offsets known from the shapes), then the data tensor by tensor
  std::string h = "{";
  std::uint64_t off = 0;
  for (const T& t : ts) {
    const std::uint64_t n = std::uint64_t(t.rows) * std::uint64_t(t.cols ? t.cols : 1);
    h += (h.size() > 1 ? ",\"" : "\"") + t.name + "\":{\"dtype\":\"F16\",\"shape\":[" + std::to_string(t.rows) +
         (t.cols ? "," + std::to_string(t.cols) : "") + "],\"data_offsets\":[" + std::to_string(off) + "," +
         std::to_string(off + 2 * n) + "]}";
    off += 2 * n;
  }
  h += "}";
  while (h.size() % 8) h += ' ';
  lowbit::AtomicFile f(dir + "/model.safetensors");
  const std::uint64_t hn = h.size();
  f.write(&hn, 8);
  f.write(h.data(), h.size());
  Fill fill;
  std::vector<std::uint16_t> buf;
  for (const T& t : ts) {
    buf.resize(std::size_t(t.rows) * std::size_t(t.cols ? t.cols : 1));
    for (auto& v : buf) v = lowbit::float_to_half_bits(t.ones ? 1.0f : fill.next());
    f.write(buf.data(), buf.size() * 2);
  }
  f.commit();
  std::printf("wrote %s (%.2f GB of fp16 weights)\n", dir.c_str(), double(off) / 1e9);
  return 0;
}

int eval_model(const std::string& dir, int L) {
  const auto t0 = std::chrono::steady_clock::now();
  const lowbit::Model m = lowbit::load_hf(dir);
  const double after_load = peak_rss_gib();
  std::vector<int> toks(static_cast<std::size_t>(L));
  for (int i = 0; i < L; ++i) toks[std::size_t(i)] = (i * 7919) % m.cfg.vocab_size;
  const lowbit::PerplexityResult r = lowbit::perplexity(m, toks, L);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  struct stat st{};
  ::stat((dir + "/model.safetensors").c_str(), &st);
  std::printf("file %.2f GiB; peak RSS after load %.2f GiB, after evaluating %d tokens %.2f GiB; nll %.3f; %.1f s, %d threads\n",
              double(st.st_size) / (1024.0 * 1024 * 1024), after_load, L, peak_rss_gib(), r.nll, s, lowbit::max_threads());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 3 && std::string(argv[1]) == "write") return write_model(argv[2]);
    if (argc >= 3 && std::string(argv[1]) == "eval") return eval_model(argv[2], argc > 3 ? std::atoi(argv[3]) : 512);
    std::fprintf(stderr, "usage: peak_memory write DIR | peak_memory eval DIR [L]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
