// peak_memory: memory and time of lowbit on real-sized models stored as fp16 Hugging Face folders.
//
//   peak_memory write DIR [tinyllama|llama2-7b]   writes a sharded HF folder of that shape with random weights
//                                                 (uniform in +-0.05, about LLaMA's weight scale; norms 1)
//   peak_memory eval DIR [L]                      NLL of one window of L tokens (default 512); peak RSS
//   peak_memory quantize DIR rtn|gptq OUT [N L [B]]  W4 g128 (GPTQ: its grid, N x L random calibration tokens,
//                                                 default 16 x 512), the fake-quantized model written to OUT as
//                                                 fp16; peak RSS and peak anonymous memory (RssAnon of
//                                                 /proc/self/status, sampled every 10 ms), time per stage;
//                                                 B > 0: only the first B blocks (same peak, time x n_layers / B)
//   peak_memory disk DIR GB                       sequential write (fsync) and read (page cache dropped for the
//                                                 file) bandwidth of a GB-sized file in DIR: the roofline of
//                                                 streaming quantization
// The writer streams one tensor at a time, so it never holds the model either.
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <lowbit/lowbit.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

// kB value of a "Key:   N kB" line of /proc/self/status.
long status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(f, line))
    if (line.rfind(k, 0) == 0) return std::atol(line.c_str() + k.size());
  return -1;
}

// Samples RssAnon (and VmRSS) every 10 ms on a thread of its own; keeps the peaks.
class MemorySampler {
 public:
  MemorySampler() : t_([this] {
      while (!stop_) {
        const long a = status_kb("RssAnon"), r = status_kb("VmRSS");
        if (a > anon_) anon_ = a;
        if (r > rss_) rss_ = r;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }) {}
  ~MemorySampler() { stop(); }
  void stop() {
    if (t_.joinable()) stop_ = true, t_.join();
  }
  double anon_gib() const { return double(anon_) / (1024.0 * 1024.0); }
  double rss_gib() const { return double(rss_) / (1024.0 * 1024.0); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<long> anon_{0}, rss_{0};
  std::thread t_;
};

// xorshift-based values in about [-0.05, 0.05]: cheap, deterministic, not all equal.
struct Fill {
  std::uint64_t s = 88172645463325252ull;
  float next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return (float(s >> 40) / float(1 << 24) - 0.5f) * 0.1f;
  }
};

lowbit::LlamaConfig shape(const std::string& name) {
  lowbit::LlamaConfig c;
  if (name == "tinyllama") c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 22, c.n_heads = 32, c.n_kv_heads = 4;
  else if (name == "llama2-7b") c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32;
  else lowbit::fail("unknown shape '", name, "' (tinyllama, llama2-7b)");
  c.vocab_size = 32000, c.max_seq_len = 2048, c.tied_embeddings = false;
  return c;
}

// Sharded as Hugging Face does: tensors in order, a new shard when the current one would pass max_bytes, and
// model.safetensors.index.json mapping every tensor to its shard.
int write_model(const std::string& dir, const std::string& shape_name) {
  const auto t0 = Clock::now();
  ::mkdir(dir.c_str(), 0755);
  const lowbit::LlamaConfig c = shape(shape_name);
  struct T { std::string name; std::vector<std::int64_t> shape; bool ones; };
  std::vector<T> ts = {{"model.embed_tokens.weight", {c.vocab_size, c.dim}, false}};
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const lowbit::NormDesc& n : lowbit::kNorms) ts.push_back({p + n.hf + ".weight", {c.dim}, true});
    for (const lowbit::LinearDesc& l : lowbit::kLinears) {
      const auto s = lowbit::linear_shape(c, l.role);
      ts.push_back({p + l.hf + ".weight", {s[0], s[1]}, false});
    }
  }
  ts.push_back({"model.norm.weight", {c.dim}, true});
  ts.push_back({"lm_head.weight", {c.vocab_size, c.dim}, false});
  const std::uint64_t max_bytes = 4ull << 30;
  std::vector<std::vector<const T*>> shards(1);
  std::uint64_t cur = 0, total = 0;
  for (const T& t : ts) {
    std::uint64_t n = 2;
    for (auto d : t.shape) n *= std::uint64_t(d);
    if (cur > 0 && cur + n > max_bytes) shards.emplace_back(), cur = 0;
    shards.back().push_back(&t);
    cur += n, total += n;
  }
  Fill fill;
  std::vector<float> buf;
  std::string index = "{\"metadata\": {\"total_size\": " + std::to_string(total) + "}, \"weight_map\": {";
  for (std::size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    std::vector<lowbit::SafetensorsWriter::Entry> e;
    for (const T* t : shards[s]) {
      e.push_back({t->name, lowbit::DType::f16, t->shape});
      index += std::string(index.back() == '{' ? "" : ", ") + "\"" + t->name + "\": \"" + name + "\"";
    }
    lowbit::SafetensorsWriter w(dir + "/" + name, std::move(e), {{"format", "pt"}});
    for (const T* t : shards[s]) {
      std::size_t n = 1;
      for (auto d : t->shape) n *= std::size_t(d);
      buf.resize(n);
      for (auto& v : buf) v = t->ones ? 1.0f : fill.next();
      w.write_floats(t->name, buf.data(), n);
    }
    w.commit();
  }
  index += "}}\n";
  std::ofstream(dir + "/model.safetensors.index.json") << index;
  std::ofstream(dir + "/config.json") << "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": " << c.dim
                                      << ", \"intermediate_size\": " << c.hidden_dim << ", \"num_hidden_layers\": " << c.n_layers
                                      << ", \"num_attention_heads\": " << c.n_heads << ", \"num_key_value_heads\": " << c.n_kv_heads
                                      << ", \"vocab_size\": " << c.vocab_size << ", \"max_position_embeddings\": 2048"
                                      << ", \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false}";
  std::printf("wrote %s: %s shape, %zu shards, %.2f GB of fp16 weights, %.1f s\n", dir.c_str(), shape_name.c_str(),
              shards.size(), double(total) / 1e9, since(t0));
  return 0;
}

// Bytes of the folder's .safetensors files.
double dir_bytes(const std::string& dir) {
  double total = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      struct stat st{};
      if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0 && ::stat((dir + "/" + n).c_str(), &st) == 0)
        total += double(st.st_size);
    }
    ::closedir(d);
  }
  return total;
}

int eval_model(const std::string& dir, int L) {
  const auto t0 = Clock::now();
  const lowbit::Model m = lowbit::load_hf(dir);
  const double after_load = peak_rss_gib();
  std::vector<int> toks(static_cast<std::size_t>(L));
  for (int i = 0; i < L; ++i) toks[std::size_t(i)] = (i * 7919) % m.cfg.vocab_size;
  const lowbit::PerplexityResult r = lowbit::perplexity(m, toks, L);
  std::printf("files %.2f GiB; peak RSS after load %.2f GiB, after evaluating %d tokens %.2f GiB; nll %.3f; %.1f s, %d threads\n",
              dir_bytes(dir) / double(1 << 30), after_load, L, peak_rss_gib(), r.nll, since(t0), lowbit::max_threads());
  return 0;
}

int quantize_model(const std::string& dir, const std::string& method, const std::string& out, int n, int L, int blocks) {
  MemorySampler mem;
  const auto t0 = Clock::now();
  lowbit::Model m = lowbit::load_hf(dir, lowbit::Tables::deferred);
  // the first `blocks` blocks only (a smaller model of the same width): every block has the same shape, so the
  // peak memory is the full model's and the time scales by n_layers / blocks
  if (blocks > 0 && blocks < m.cfg.n_layers) m.cfg.n_layers = blocks;
  const double t_load = since(t0);
  lowbit::Windows calib;
  if (method != "rtn") {
    std::vector<int> ids(std::size_t(n) * std::size_t(L));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int((i * 7919 + 13) % std::size_t(m.cfg.vocab_size));
    calib = lowbit::sequential_windows(ids, n, L);
  }
  // W4 g128 on the method's grid: the one quantizer type (no visit over all 28 types: this file compiles
  // several times faster)
  using W4g128 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerGroup<lowbit::dynamic_group>, lowbit::Asymmetric>;
  double t_quant = 0, t_commit = 0;
  std::vector<double> step_time;
  std::map<std::string, double> per_step;
  {
    auto chain = lowbit::make_method_chain(method, W4g128(128, lowbit::reference_grid(method), false));
    const auto t1 = Clock::now();
    lowbit::HfSink sink(m, out, lowbit::Weights::fake_quantized, lowbit::DType::f16, {{"lowbit", "peak_memory " + method}});
    lowbit::PipelineOptions opt;
    std::string last;
    auto last_t = Clock::now();
    opt.progress = [&](const lowbit::Progress& p) {  // time per step kind, and a line per block
      const auto now = Clock::now();
      if (!last.empty()) per_step[last] += std::chrono::duration<double>(now - last_t).count();
      last = p.step, last_t = now;
      if (p.step == "rtn" || p.step.rfind("gptq q", 0) == 0)
        std::fprintf(stderr, "[peak_memory] block %d/%d  %.1f s  RssAnon %.2f GiB\n", p.block + 1, p.n_blocks, p.elapsed,
                     double(status_kb("RssAnon")) / (1024.0 * 1024.0));
    };
    lowbit::quantize_model(m, calib, chain, sink, opt);
    if (!last.empty()) per_step[last] += since(last_t);
    t_quant = since(t1);
    const auto t2 = Clock::now();
    sink.commit();
    t_commit = since(t2);
  }
  const double total = since(t0);
  mem.stop();
  const double in_bytes = dir_bytes(dir), out_bytes = dir_bytes(out);
  std::printf("%s W4 g128 of %s (%.2f GB fp16; %d blocks quantized) -> %s (%.2f GB fp16), %d threads\n", method.c_str(),
              dir.c_str(), in_bytes / 1e9, m.cfg.n_layers, out.c_str(), out_bytes / 1e9, lowbit::max_threads());
  std::printf("wall %.1f s (load %.1f, block loop incl. streaming writes %.1f, commit %.1f); %.2f GB/s read+written\n",
              total, t_load, t_quant, t_commit, (in_bytes + out_bytes) / 1e9 / total);
  std::printf("peak RSS %.2f GiB (sampled %.2f), peak RssAnon %.2f GiB\n", peak_rss_gib(), mem.rss_gib(), mem.anon_gib());
  std::printf("time by step (the progress callback's labels; the sink's writes count in the step before them):\n");
  for (const auto& [k, v] : per_step) std::printf("  %-16s %8.1f s\n", k.c_str(), v);
  return 0;
}

int disk(const std::string& dir, double gb) {
  const std::string path = dir + "/peak_memory_disk.tmp";
  const std::size_t chunk = 64u << 20, chunks = std::size_t(gb * 1e9 / double(chunk)) + 1;
  std::vector<char> buf(chunk);
  for (std::size_t i = 0; i < chunk; ++i) buf[i] = char(i * 131);
  auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) lowbit::fail(path, ": cannot create");
  for (std::size_t c = 0; c < chunks; ++c)
    if (::write(fd, buf.data(), chunk) != ssize_t(chunk)) lowbit::fail(path, ": write failed");
  ::fsync(fd);
  const double tw = since(t0);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // drop the file's pages so the read comes from the disk
  ::close(fd);
  t0 = Clock::now();
  const int rfd = ::open(path.c_str(), O_RDONLY);
  std::size_t got = 0;
  for (ssize_t r; (r = ::read(rfd, buf.data(), chunk)) > 0;) got += std::size_t(r);
  ::close(rfd);
  const double tr = since(t0);
  std::remove(path.c_str());
  const double bytes = double(chunks * chunk);
  std::printf("disk %s: %.2f GB; sequential write (fsync) %.2f GB/s, read (cache dropped) %.2f GB/s (read %.2f GB)\n",
              dir.c_str(), bytes / 1e9, bytes / 1e9 / tw, double(got) / 1e9 / tr, double(got) / 1e9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc >= 2 ? argv[1] : "";
    if (argc >= 3 && cmd == "write") return write_model(argv[2], argc > 3 ? argv[3] : "tinyllama");
    if (argc >= 3 && cmd == "eval") return eval_model(argv[2], argc > 3 ? std::atoi(argv[3]) : 512);
    if (argc >= 5 && cmd == "quantize")
      return quantize_model(argv[2], argv[3], argv[4], argc > 5 ? std::atoi(argv[5]) : 16, argc > 6 ? std::atoi(argv[6]) : 512,
                            argc > 7 ? std::atoi(argv[7]) : 0);
    if (argc >= 4 && cmd == "disk") return disk(argv[2], std::atof(argv[3]));
    std::fprintf(stderr, "usage: peak_memory write DIR [tinyllama|llama2-7b] | eval DIR [L] | quantize DIR rtn|gptq OUT [N L [B]] | disk DIR GB\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
