// Shared pieces of lowbit's fuzz targets (tests/fuzz/README.md).
//
// Every parser takes a path, as a user's file would reach it, so a target puts its input in a memfd (a regular
// file that lives in memory: no disk, no clean-up) and passes "/proc/self/fd/<n>".  A target accepts a
// lowbit::error -- a clear message is the correct answer to a bad file -- and lets anything else escape: an
// uncaught std::exception (std::bad_alloc from a size taken on trust, std::out_of_range from a bare stoi), a
// crash, a sanitizer report, a hang (-timeout) or an allocation over the limit (-rss_limit_mb) is a defect.
#pragma once

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <lowbit/core/error.hpp>

namespace lowbit_fuzz {

class MemFile {
 public:
  MemFile(const std::uint8_t* data, std::size_t n, const char* name = "lowbit-fuzz") {
    fd_ = ::memfd_create(name, 0);
    if (fd_ < 0) std::abort();
    for (std::size_t done = 0; done < n;) {
      const ssize_t w = ::write(fd_, data + done, n - done);
      if (w <= 0) std::abort();
      done += std::size_t(w);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const std::string& s, const char* name = "lowbit-fuzz")
      : MemFile(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), name) {}
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A folder of this process's own for targets that need a directory (Hugging Face folders); removed with its
// files when the process exits.
inline const std::string& scratch_dir() {
  // Allocated once and never freed: the exit handler runs after static destructors registered later than it,
  // so the path must not be a static std::string (that was a use-after-free at exit, found by ASan).
  static const std::string* d = [] {
    const char* base = std::getenv("TMPDIR");
    auto* p = new std::string(std::string(base && *base ? base : "/tmp") + "/lowbit-fuzz-" + std::to_string(::getpid()));
    ::mkdir(p->c_str(), 0700);
    std::atexit([] {
      const std::string& dir = scratch_dir();
      if (DIR* dd = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(dd))
          if (e->d_name[0] != '.') std::remove((dir + "/" + e->d_name).c_str());
        ::closedir(dd);
      }
      ::rmdir(dir.c_str());
    });
    return p;
  }();
  return *d;
}

inline void write_file(const std::string& path, const std::uint8_t* data, std::size_t n) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (n && std::fwrite(data, 1, n, f) != n) std::abort();
  std::fclose(f);
}

// Runs fn, accepting a lowbit::error (the tool's answer to a bad file) and nothing else.
template <class Fn>
void expect_clean(Fn&& fn) {
  try {
    fn();
  } catch (const lowbit::error&) {
  }
}

}  // namespace lowbit_fuzz
