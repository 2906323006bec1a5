// lowbit/io/atomic_file.hpp -- output files and folders appear whole or not at all, and survive a crash once
// they have appeared.
//
//   AtomicFile  writes "<path>.tmp-<pid>"; commit() flushes, fsyncs and closes it (each result checked: an
//               EIO or ENOSPC there is an error, never a file renamed into place), renames it over <path> and
//               fsyncs the directory so the rename itself is durable.  write_file_atomically(path, bytes): a
//               whole file at once through it.
//   AtomicDir   a folder written as "<dir>.tmp-<pid>/"; commit() fsyncs it and puts it in <dir>'s place in one
//               step (rename, or renameat2(RENAME_EXCHANGE) when <dir> exists, after which the old folder is
//               removed): a reader sees the old folder or the new one, never a mix of their files.
// A writer that throws, or is destroyed without commit(), removes its temporary; temporaries of our naming
// that a killed run left behind (their pid no longer runs) are removed when the next writer for the same path
// starts.  check_writable_file / check_writable_dir probe an output location before hours of work.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOWBIT_HAS_POSIX_IO 1
#else
#define LOWBIT_HAS_POSIX_IO 0
#endif

namespace lowbit {

namespace detail {

inline std::string parent_dir(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

inline std::string base_name(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

inline std::string errno_text(int e) { return std::strerror(e); }

inline std::string temp_name(const std::string& path) {
#if LOWBIT_HAS_POSIX_IO
  return path + ".tmp-" + std::to_string(::getpid());
#else
  return path + ".tmp";
#endif
}

#if LOWBIT_HAS_POSIX_IO
inline bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

inline bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// Makes a finished rename (or a created file) in `dir` durable.  Filesystems that cannot fsync a directory
// (EINVAL) are accepted; any other failure is an error.
inline void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail(dir, ": cannot open the directory to sync it (", errno_text(errno), ")");
  const int rc = ::fsync(fd), e = errno;
  ::close(fd);
  if (rc != 0 && e != EINVAL) fail(dir, ": fsync of the directory failed (", errno_text(e), ")");
}

// Removes a folder this module created: its plain files, then the folder (it never holds sub-folders).
inline void remove_flat_dir(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    ::closedir(d);
    for (const std::string& n : names) ::unlink((dir + "/" + n).c_str());
  }
  ::rmdir(dir.c_str());
}

// "<base>.tmp-<pid>" entries beside `path` whose pid no longer runs: what a killed run of ours left behind.
inline void remove_stale_temporaries(const std::string& path) {
  const std::string dir = parent_dir(path), prefix = base_name(path) + ".tmp-";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = n.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::atol(digits.c_str());
    if (pid <= 0 || pid == long(::getpid())) continue;
    if (::kill(pid_t(pid), 0) != 0 && errno == ESRCH) stale.push_back(dir + "/" + n);
  }
  ::closedir(d);
  for (const std::string& s : stale) {
    if (is_dir(s)) remove_flat_dir(s);
    else ::unlink(s.c_str());
  }
}
#endif

}  // namespace detail

class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)), tmp_(detail::temp_name(path_)) {
#if LOWBIT_HAS_POSIX_IO
    detail::remove_stale_temporaries(path_);
#endif
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) fail(path_, ": cannot create ", tmp_, " (", detail::errno_text(errno), ")");
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
    if (n && std::fwrite(data, 1, n, f_) != n) fail(path_, ": write failed (", detail::errno_text(errno), ")");
  }

  void commit() {
    if (!f_) fail(path_, ": committed twice");
    if (std::fflush(f_) != 0) abort_with("flush failed", errno);
#if LOWBIT_HAS_POSIX_IO
    if (::fsync(::fileno(f_)) != 0) abort_with("fsync failed", errno);
#endif
    std::FILE* f = f_;
    f_ = nullptr;
    if (std::fclose(f) != 0) {
      const int e = errno;
      std::remove(tmp_.c_str());
      fail(path_, ": closing ", tmp_, " failed (", detail::errno_text(e), "); nothing was written to ", path_);
    }
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const int e = errno;
      std::remove(tmp_.c_str());
      fail(path_, ": cannot rename ", tmp_, " into place (", detail::errno_text(e), ")");
    }
#if LOWBIT_HAS_POSIX_IO
    detail::fsync_dir(detail::parent_dir(path_));
#endif
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;

  [[noreturn]] void abort_with(const char* what, int e) {
    std::fclose(f_);
    f_ = nullptr;
    std::remove(tmp_.c_str());
    fail(path_, ": ", what, " (", detail::errno_text(e), "); nothing was written to ", path_);
  }
};

// A whole file's bytes through AtomicFile: the file appears complete or not at all.
inline void write_file_atomically(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

#if LOWBIT_HAS_POSIX_IO

namespace detail {
// Whether an existing folder may be replaced by a model folder: it holds only the files a model folder holds
// (so replacing it never deletes a user's other work).
inline void check_replaceable_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) fail(dir, ": cannot read the existing folder (", errno_text(errno), ")");
  std::string other;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    auto ends = [&](const char* s) {
      const std::size_t k = std::strlen(s);
      return n.size() >= k && n.compare(n.size() - k, k, s) == 0;
    };
    const bool model_file = n == "config.json" || n == "generation_config.json" || n == "tokenizer.json" ||
                            n == "tokenizer_config.json" || n == "special_tokens_map.json" || n == "tokenizer.model" ||
                            n == "tokenizer.bin" ||
                            n == "quantize_config.json" || ends(".safetensors") || ends(".safetensors.index.json") ||
                            n.find(".tmp-") != std::string::npos;
    if (!model_file || is_dir(dir + "/" + n)) {
      other = n;
      break;
    }
  }
  ::closedir(d);
  if (!other.empty())
    fail(dir, ": the folder exists and holds '", other, "', which is not part of a model folder; not replacing it "
         "(remove it or choose another output folder)");
}
}  // namespace detail

class AtomicDir {
 public:
  explicit AtomicDir(std::string dir) : dir_(std::move(dir)) {
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    tmp_ = detail::temp_name(dir_);
    if (detail::exists(dir_)) {
      if (!detail::is_dir(dir_)) fail(dir_, ": exists and is not a folder");
      detail::check_replaceable_dir(dir_);
    }
    detail::remove_stale_temporaries(dir_);
    if (detail::is_dir(tmp_)) detail::remove_flat_dir(tmp_);
    if (::mkdir(tmp_.c_str(), 0755) != 0)
      fail(dir_, ": cannot create the folder ", tmp_, " (", detail::errno_text(errno), ")");
  }
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;
  ~AtomicDir() {
    if (!committed_) detail::remove_flat_dir(tmp_);
  }

  // Where the folder's files are written until commit().
  const std::string& staging() const { return tmp_; }
  const std::string& path() const { return dir_; }

  void commit() {
    if (committed_) fail(dir_, ": committed twice");
    detail::fsync_dir(tmp_);
    if (!detail::exists(dir_)) {
      if (std::rename(tmp_.c_str(), dir_.c_str()) != 0) abort_with("cannot rename the new folder into place", errno);
    } else {
      detail::check_replaceable_dir(dir_);  // again: it may have changed while we worked
      const std::string old = dir_ + ".old-" + std::to_string(::getpid());
#if defined(__linux__) && defined(RENAME_EXCHANGE)
      if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, dir_.c_str(), RENAME_EXCHANGE) == 0) {
        committed_ = true;
        detail::remove_flat_dir(tmp_);  // now the old folder
        detail::fsync_dir(detail::parent_dir(dir_));
        return;
      }
      if (errno != EINVAL && errno != ENOSYS) abort_with("cannot exchange the new folder with the old one", errno);
#endif
      // No atomic exchange on this filesystem: move the old folder aside, the new one in, then drop the old.
      // A crash in between leaves the old folder at "<dir>.old-<pid>", never a mixed one at <dir>.
      if (std::rename(dir_.c_str(), old.c_str()) != 0) abort_with("cannot move the old folder aside", errno);
      if (std::rename(tmp_.c_str(), dir_.c_str()) != 0) {
        const int e = errno;
        std::rename(old.c_str(), dir_.c_str());
        abort_with("cannot rename the new folder into place", e);
      }
      detail::remove_flat_dir(old);
    }
    committed_ = true;
    detail::fsync_dir(detail::parent_dir(dir_));
  }

 private:
  std::string dir_, tmp_;
  bool committed_ = false;

  [[noreturn]] void abort_with(const char* what, int e) {
    fail(dir_, ": ", what, " (", detail::errno_text(e), ")");
  }
};

// Probes that `path` can be created: its folder exists and a file can be written there.  Meant for the
// start of a long run, so a missing or read-only location fails in seconds, not after hours.
namespace detail {
// Creates and removes "<path>.tmp-<pid>" (the name the writers stage under) in path's folder.
inline void probe_beside(const std::string& path) {
  const std::string dir = parent_dir(path);
  if (!is_dir(dir)) fail(path, ": the folder ", dir, " does not exist");
  const std::string probe = temp_name(path);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) fail(path, ": cannot write in ", dir, " (", errno_text(errno), ")");
  ::close(fd);
  ::unlink(probe.c_str());
}
}  // namespace detail

inline void check_writable_file(const std::string& path) {
  if (detail::is_dir(path)) fail(path, ": is a folder (a file name is expected)");
  detail::probe_beside(path);
}

// The same for an output folder: its parent must be writable, and an existing folder must be one that may be
// replaced (AtomicDir's rule).
inline void check_writable_dir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (detail::exists(dir)) {
    if (!detail::is_dir(dir)) fail(dir, ": exists and is not a folder");
    detail::check_replaceable_dir(dir);
  }
  detail::probe_beside(dir);  // the folder is staged beside its place
}

#endif  // LOWBIT_HAS_POSIX_IO

}  // namespace lowbit
