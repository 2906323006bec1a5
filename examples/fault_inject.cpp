/* fault_inject.cpp -- an LD_PRELOAD library for the command-line tool's durability tests (not installed).
 *
 * LOWBIT_FAULT selects the fault:
 *   fsync_eio          every fsync() fails with EIO (a disk that loses the write)
 *   exit_at_fsync      the process ends at its first fsync(), with _exit(137): no destructor or atexit handler
 *                      runs, as after SIGKILL, so whatever the run had staged is left on disk
 *   enospc_after:N     fwrite() fails with ENOSPC once N bytes have been written (a full disk)
 * Anything else (or unset): the real functions.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char* fault() {
  const char* m = getenv("LOWBIT_FAULT");
  return m ? m : "";
}

extern "C" int fsync(int fd) {
  if (strcmp(fault(), "fsync_eio") == 0) {
    errno = EIO;
    return -1;
  }
  if (strcmp(fault(), "exit_at_fsync") == 0) _exit(137);
  auto real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fsync"));
  return real(fd);
}

extern "C" size_t fwrite(const void* p, size_t size, size_t n, FILE* f) {
  static long long written = 0;
  const char* m = fault();
  if (strncmp(m, "enospc_after:", 13) == 0) {
    const long long limit = atoll(m + 13);
    if (written + static_cast<long long>(size * n) > limit) {
      errno = ENOSPC;
      return 0;
    }
    written += static_cast<long long>(size * n);
  }
  auto real = reinterpret_cast<size_t (*)(const void*, size_t, size_t, FILE*)>(dlsym(RTLD_NEXT, "fwrite"));
  return real(p, size, n, f);
}
