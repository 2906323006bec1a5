// A main() for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput on every file named on the
// command line or found in a folder named there (sorted, not recursive).  The test suite builds each target
// with it (also under AddressSanitizer + UBSan) and replays the seed corpus and every saved reproducer in
// tests/fuzz/regressions/<target>/, so a defect the fuzzer once found stays fixed, with or without clang.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    struct stat st;
    if (::stat(argv[i], &st) != 0) {
      std::fprintf(stderr, "replay: %s: no such file or folder\n", argv[i]);
      return 2;
    }
    if (!S_ISDIR(st.st_mode)) {
      files.push_back(argv[i]);
      continue;
    }
    std::vector<std::string> in_dir;
    if (DIR* d = ::opendir(argv[i])) {
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') in_dir.push_back(std::string(argv[i]) + "/" + e->d_name);
      ::closedir(d);
    }
    std::sort(in_dir.begin(), in_dir.end());
    files.insert(files.end(), in_dir.begin(), in_dir.end());
  }
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", f.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replayed %zu inputs, 0 failed\n", files.size());
  return files.empty() ? 1 : 0;  // an empty corpus tests nothing
}
