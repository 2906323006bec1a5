// lowbit/io/atomic_file.hpp -- output files appear whole or not at all.
//
// AtomicFile writes to "<path>.tmp-<pid>" and renames it over <path> in commit() after flushing (and
// fsync on POSIX).  A writer that throws, or is destroyed without commit(), removes the temporary file,
// so a failed run never leaves a half-written model behind.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "../core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace lowbit {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
#if defined(__unix__) || defined(__APPLE__)
    tmp_ = path_ + ".tmp-" + std::to_string(::getpid());
#else
    tmp_ = path_ + ".tmp";
#endif
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) fail(path_, ": cannot create ", tmp_, " (", std::strerror(errno), ")");
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (f_) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }

  void write(const void* data, std::size_t n) {
    if (n && std::fwrite(data, 1, n, f_) != n) fail(path_, ": write failed (", std::strerror(errno), ")");
  }

  void commit() {
    if (std::fflush(f_) != 0) fail(path_, ": flush failed (", std::strerror(errno), ")");
#if defined(__unix__) || defined(__APPLE__)
    ::fsync(::fileno(f_));
#endif
    std::fclose(f_);
    f_ = nullptr;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      std::remove(tmp_.c_str());
      fail(path_, ": cannot rename ", tmp_, " into place (", std::strerror(errno), ")");
    }
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

}  // namespace lowbit
