// SPDX-License-Identifier: Apache-2.0
// Atomic output: temporaries are created exclusively (never through a planted symlink) with mode
// 0644 minus the umask, a set of files appears all or none, and the temporaries of a killed
// process are removed later while a running process's are kept.
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "siflow/siflow.hpp"

namespace {

// A fresh folder of its own under the system's temporary folder, removed with its files.
struct Folder {
  std::string path;
  Folder() {
    std::string name = std::string(P_tmpdir) + "/siflow_test_write_file_XXXXXX";
    REQUIRE(mkdtemp(&name[0]) != nullptr);
    path = name;
  }
  ~Folder() {
    if (DIR* d = opendir(path.c_str())) {
      while (const dirent* e = readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          unlink((path + "/" + e->d_name).c_str());
      closedir(d);
    }
    rmdir(path.c_str());
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    DIR* d = opendir(path.c_str());
    while (const dirent* e = readdir(d))
      if (e->d_name[0] != '.') out.push_back(e->d_name);
    closedir(d);
    return out;
  }
};

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void put(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A pid that no process has (a child that has exited and been reaped).
pid_t dead_pid() {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  REQUIRE(child > 0);
  int status = 0;
  waitpid(child, &status, 0);
  return child;
}

TEST_CASE("a symlink planted at the old predictable temporary name is never written through") {
  Folder dir;
  const std::string victim = dir / "victim.txt", target = dir / "out.npy";
  put(victim, "precious");
  // The name the former implementation used: "<target>.tmp.<pid>".
  const std::string planted = target + ".tmp." + std::to_string(getpid());
  REQUIRE(symlink(victim.c_str(), planted.c_str()) == 0);
  REQUIRE(siflow::write_file_atomic(target.c_str(), "new", 3).ok());
  CHECK(contents(victim) == "precious");
  CHECK(contents(target) == "new");
}

TEST_CASE("the output gets mode 0644 minus the umask, whatever the umask allows") {
  Folder dir;
  const mode_t old = umask(0);
  const std::string target = dir / "mode.csv";
  const siflow::Status s = siflow::write_file_atomic(target.c_str(), "x\n", 2);
  umask(old);
  REQUIRE(s.ok());
  struct stat st;
  REQUIRE(stat(target.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
}

TEST_CASE("a set of files appears all or none") {
  Folder dir;
  const std::string a = dir / "a.npy", b = dir / "b.npy";
  // b's name is taken by a folder: its rename fails after a's would have succeeded.
  REQUIRE(mkdir(b.c_str(), 0755) == 0);
  const siflow::FileOutput files[] = {{a.c_str(), "aaaa", 4}, {b.c_str(), "bbbb", 4}};
  const siflow::Status s = siflow::write_files_atomic(files, 2);
  CHECK_FALSE(s.ok());
  CHECK(access(a.c_str(), F_OK) != 0);                      // a is not left behind
  CHECK(dir.names() == std::vector<std::string>{"b.npy"});  // and no temporary is
  rmdir(b.c_str());
  REQUIRE(siflow::write_files_atomic(files, 2).ok());
  CHECK(contents(a) == "aaaa");
  CHECK(contents(b) == "bbbb");
  const siflow::FileOutput twice[] = {{a.c_str(), "1", 1}, {a.c_str(), "2", 1}};
  CHECK(siflow::write_files_atomic(twice, 2).code() == siflow::StatusCode::kInvalidArgument);
}

TEST_CASE("stale temporaries of a dead process are removed; others are kept") {
  Folder dir;
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(getpid());
  put(dir / ("s.npy.siflow-tmp-" + dead + "-abcDE9"), "stale");
  put(dir / ("s.npy.siflow-tmp-" + live + "-abcDE9"), "in progress");
  put(dir / ("s.npy.siflow-tmp-" + dead + "-abc"), "not our pattern");
  put(dir / ("notes.tmp." + dead), "not our pattern either");
  put(dir / "victim.txt", "precious");
  REQUIRE(symlink((dir / "victim.txt").c_str(),
                  (dir / ("l.npy.siflow-tmp-" + dead + "-zzzzzz")).c_str()) == 0);
  size_t removed = 0;
  REQUIRE(siflow::remove_stale_temporaries((dir / "s.npy").c_str(), &removed).ok());
  CHECK(removed == 1);
  std::vector<std::string> names = dir.names();
  std::sort(names.begin(), names.end());
  std::vector<std::string> kept = {"l.npy.siflow-tmp-" + dead + "-zzzzzz", "notes.tmp." + dead,
                                   "s.npy.siflow-tmp-" + dead + "-abc",
                                   "s.npy.siflow-tmp-" + live + "-abcDE9", "victim.txt"};
  std::sort(kept.begin(), kept.end());
  CHECK(names == kept);
  CHECK(contents(dir / "victim.txt") == "precious");
}

}  // namespace
