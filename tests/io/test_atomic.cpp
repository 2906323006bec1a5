// Durable outputs: AtomicFile / AtomicDir leave the old output or the new one, never a mix or a partial one;
// temporaries of dead runs are cleaned; output locations are probed before work.  (The failure paths with a
// real failing fsync / full disk / killed process are the command-line tests cli_fsync_eio, cli_disk_full and
// cli_killed_while_committing, which inject the faults with an LD_PRELOAD library.)
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <lowbit/io/atomic_file.hpp>
#include <sstream>
#include <string>
#include "support/util.hpp"

using namespace lowbit;

namespace {
using lowbit_test::tmp_path;

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void put(const std::string& p, const std::string& text) { std::ofstream(p) << text; }

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// A pid that ran and is gone: a child that exited (and was reaped).
long dead_pid() {
  const pid_t c = ::fork();
  if (c == 0) ::_exit(0);
  int status = 0;
  ::waitpid(c, &status, 0);
  return long(c);
}

void write_file(const std::string& p, const std::string& text) {
  AtomicFile f(p);
  f.write(text.data(), text.size());
  f.commit();
}
}  // namespace

TEST_CASE("AtomicFile replaces the file whole and removes temporaries of dead runs only", "[io][atomic]") {
  const std::string p = tmp_path("atomic_a.txt");
  write_file(p, "old");
  {
    AtomicFile f(p);
    f.write("new, never committed", 20);
  }
  REQUIRE(slurp(p) == "old");
  const std::string stale = p + ".tmp-" + std::to_string(dead_pid());
  const std::string live = p + ".tmp-" + std::to_string(long(::getppid()));  // a running process (ours' parent)
  put(stale, "left by a killed run");
  put(live, "another run, still writing");
  write_file(p, "new");
  REQUIRE(slurp(p) == "new");
  REQUIRE_FALSE(exists(stale));
  REQUIRE(exists(live));
  std::remove(live.c_str());
  REQUIRE_THROWS_WITH(AtomicFile(tmp_path("no-such-folder/x.bin")), Catch::Contains("cannot create") && Catch::Contains("No such file"));
  std::remove(p.c_str());
}

TEST_CASE("AtomicDir puts a folder in place in one step and keeps the old one until then", "[io][atomic]") {
  const std::string d = tmp_path("atomic_dir");
  for (const char* f : {"/config.json", "/model.safetensors"}) std::remove((d + f).c_str());
  ::rmdir(d.c_str());
  {  // a new folder
    AtomicDir a(d);
    REQUIRE_FALSE(exists(d));
    put(a.staging() + "/config.json", "v1 config");
    put(a.staging() + "/model.safetensors", "v1 weights");
    REQUIRE_FALSE(exists(d));
    a.commit();
  }
  REQUIRE(slurp(d + "/config.json") == "v1 config");
  {  // abandoned: the old folder stays as it was, the staging folder goes
    AtomicDir a(d);
    put(a.staging() + "/model.safetensors", "v2 weights");
    REQUIRE(exists(a.staging()));
  }
  REQUIRE(slurp(d + "/model.safetensors") == "v1 weights");
  REQUIRE_FALSE(exists(d + ".tmp-" + std::to_string(long(::getpid()))));
  {  // replaced: only the new files, none of the old ones
    AtomicDir a(d);
    put(a.staging() + "/model.safetensors", "v3 weights");
    a.commit();
  }
  REQUIRE(slurp(d + "/model.safetensors") == "v3 weights");
  REQUIRE_FALSE(exists(d + "/config.json"));
  // a killed run's staging folder is removed by the next writer for the same folder
  const std::string stale = d + ".tmp-" + std::to_string(dead_pid());
  REQUIRE(::mkdir(stale.c_str(), 0755) == 0);
  put(stale + "/model.safetensors.tmp-1", "half");
  { AtomicDir a(d); }
  REQUIRE_FALSE(exists(stale));
  // a folder with a user's own files is never replaced
  put(d + "/notes.txt", "mine");
  REQUIRE_THROWS_WITH(AtomicDir(d), Catch::Contains("holds 'notes.txt'") && Catch::Contains("not replacing it"));
  REQUIRE_THROWS_WITH(check_writable_dir(d), Catch::Contains("holds 'notes.txt'"));
  REQUIRE(slurp(d + "/notes.txt") == "mine");
  for (const char* f : {"/notes.txt", "/model.safetensors"}) std::remove((d + f).c_str());
  ::rmdir(d.c_str());
}

TEST_CASE("output locations are probed before any work", "[io][atomic]") {
  REQUIRE_NOTHROW(check_writable_file(tmp_path("probe.bin")));
  REQUIRE_FALSE(exists(tmp_path("probe.bin")));
  REQUIRE_FALSE(exists(tmp_path("probe.bin.tmp-" + std::to_string(long(::getpid())))));
  REQUIRE_THROWS_WITH(check_writable_file(tmp_path("missing/probe.bin")), Catch::Contains("does not exist"));
  REQUIRE_THROWS_WITH(check_writable_file(LOWBIT_BUILD_DIR), Catch::Contains("is a folder"));
  REQUIRE_THROWS_WITH(check_writable_dir(tmp_path("missing/out")), Catch::Contains("does not exist"));
  put(tmp_path("a_file"), "x");
  REQUIRE_THROWS_WITH(check_writable_dir(tmp_path("a_file")), Catch::Contains("exists and is not a folder"));
  std::remove(tmp_path("a_file").c_str());
  REQUIRE_NOTHROW(check_writable_dir(tmp_path("new_out_dir")));
  REQUIRE_FALSE(exists(tmp_path("new_out_dir")));
}
