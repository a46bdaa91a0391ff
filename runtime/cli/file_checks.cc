// SPDX-License-Identifier: Apache-2.0
// Regular-file input reading and output identity checks for the CLI (file_checks.hpp). Nothing
// here writes a file; every refusal names the option and the path.
#include "file_checks.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "array_io.hpp"
#include "errors.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {
namespace {

std::string label(const char* what, const std::string& path) {
  return what ? format("%s '%s'", what, path.c_str()) : format("'%s'", path.c_str());
}

// Opens `path` read-only without blocking and checks it is a regular file; its size to *size.
int open_regular(const std::string& path, const char* what, uint64_t* size) {
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    throw RunError(format("cannot open %s: %s", label(what, path).c_str(), std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    throw RunError(format("%s is not a regular file", label(what, path).c_str()));
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

// What a path names, for comparing: a file's device and inode, or for a name that does not exist
// yet, its folder's device and inode and the name.
struct Identity {
  bool known = false;
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  std::string name;
};

Identity identify(const std::string& path) {
  Identity id;
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    id.known = id.exists = true;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    return id;
  }
  if (errno != ENOENT) return id;
  const size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "."
                             : slash == 0               ? "/"
                                                        : path.substr(0, slash);
  id.name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (id.name.empty() || id.name == "." || id.name == ".." || stat(folder.c_str(), &st) != 0)
    return id;
  id.known = true;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  return id;
}

bool same(const Identity& a, const Identity& b) {
  return a.known && b.known && a.exists == b.exists && a.dev == b.dev && a.ino == b.ino &&
         a.name == b.name;
}

}  // namespace

std::vector<unsigned char> read_regular_file(const std::string& path, uint64_t limit,
                                             const char* what) {
  uint64_t size = 0;
  const int fd = open_regular(path, what, &size);
  if (size > limit) {
    close(fd);
    throw RunError(format("%s has %" PRIu64 " bytes, more than the %" PRIu64 " this reads",
                          label(what, path).c_str(), size, limit));
  }
  std::vector<unsigned char> bytes(static_cast<size_t>(size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      close(fd);
      throw RunError(format("cannot read %s: %s", label(what, path).c_str(),
                            err ? std::strerror(err) : "it shrank while being read"));
    }
    got += static_cast<size_t>(n);
  }
  close(fd);
  return bytes;
}

void require_regular_file(const std::string& path, const char* what) {
  uint64_t size = 0;
  close(open_regular(path, what, &size));
}

void check_distinct(const std::vector<NamedPath>& inputs, const std::vector<NamedPath>& outputs) {
  std::vector<Identity> in, out;
  for (const NamedPath& p : inputs) in.push_back(identify(p.path));
  for (const NamedPath& p : outputs) out.push_back(identify(p.path));
  for (size_t o = 0; o < outputs.size(); ++o) {
    for (size_t i = 0; i < inputs.size(); ++i)
      if (same(out[o], in[i]))
        throw UsageError(format("%s '%s' is the input %s '%s'; refusing to overwrite an input",
                                outputs[o].option, outputs[o].path.c_str(), inputs[i].option,
                                inputs[i].path.c_str()));
    for (size_t k = 0; k < o; ++k)
      if (same(out[o], out[k]))
        throw UsageError(format("%s '%s' and %s '%s' name the same file", outputs[k].option,
                                outputs[k].path.c_str(), outputs[o].option,
                                outputs[o].path.c_str()));
  }
}

void prepare_outputs(const std::vector<NamedPath>& outputs) {
  for (const NamedPath& p : outputs) {
    check_writable(p.path);
    remove_stale_temporaries(p.path.c_str());
  }
}

}  // namespace siflow::cli
