// lowbit/io/mapped_file.hpp -- a read-only memory map of a whole file (POSIX mmap; a plain read fallback
// elsewhere).  Weights are viewed in place, never copied, so a model costs its page cache, not its size
// twice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOWBIT_HAS_MMAP 1
#else
#include <fstream>
#define LOWBIT_HAS_MMAP 0
#endif

namespace lowbit {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path) : path_(path) {
#if LOWBIT_HAS_MMAP
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below); no effect on regular files
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0) fail(path, ": cannot open (", std::strerror(errno), ")");
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, ": not a regular file (", S_ISDIR(st.st_mode) ? "a directory" : "a FIFO, socket or device", ")");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        fail(path, ": mmap failed (", std::strerror(errno), ")");
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);
#else
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, ": cannot open");
    buffer_.assign(std::istreambuf_iterator<char>(f), {});
    data_ = reinterpret_cast<const std::uint8_t*>(buffer_.data());
    size_ = buffer_.size();
#endif
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept { swap(o); }
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
#if !LOWBIT_HAS_MMAP
  std::vector<char> buffer_;
#endif
  void swap(MappedFile& o) noexcept {
    std::swap(path_, o.path_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
#if !LOWBIT_HAS_MMAP
    std::swap(buffer_, o.buffer_);
#endif
  }
  void release() {
#if LOWBIT_HAS_MMAP
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }
};

}  // namespace lowbit
