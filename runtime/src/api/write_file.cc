// SPDX-License-Identifier: Apache-2.0
// Atomic file output: every file goes to an exclusive temporary beside its target (created with
// O_CREAT | O_EXCL | O_NOFOLLOW, so a planted name or symlink is never written through), all are
// flushed before any is renamed into place, and a failure removes them: outputs appear all or none.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "siflow/siflow.hpp"

namespace siflow {
namespace {

// Temporary names: "<target>.siflow-tmp-<pid>-<6 letters or digits>".
constexpr char kTempTag[] = ".siflow-tmp-";
constexpr size_t kTempRandom = 6;
constexpr char kTempAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Unpredictable enough that another user cannot pre-plant the name; O_EXCL makes it safe anyway.
uint64_t random_word() {
  static std::atomic<uint64_t> counter{0};
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t seed =
      static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 30) ^
      (static_cast<uint64_t>(getpid()) << 17) ^ reinterpret_cast<uintptr_t>(&counter);
  return mix(seed + mix(counter.fetch_add(1)));
}

// The folder a path's file lives in ("." for a bare name).
std::string folder_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  if (!slash) return ".";
  if (slash == path) return "/";
  return std::string(path, static_cast<size_t>(slash - path));
}

// Creates an exclusive temporary beside `path`; its name goes to *tmp. -1 with errno on failure.
int create_temporary(const char* path, std::string* tmp) {
  for (int attempt = 0; attempt < 64; ++attempt) {
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, "%s%ld-", kTempTag, static_cast<long>(getpid()));
    *tmp = std::string(path) + suffix;
    uint64_t r = random_word();
    for (size_t i = 0; i < kTempRandom; ++i, r /= 62) *tmp += kTempAlphabet[r % 62];
    // 0644 minus the umask (the kernel applies it), as a plain fopen would create it.
    const int fd = open(tmp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

bool write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Whether `name` is "<something>.siflow-tmp-<pid>-<6 alphanumerics>"; the pid goes to *pid.
bool temporary_name(const char* name, long* pid) {
  const char* tag = std::strstr(name, kTempTag);
  if (!tag || tag == name) return false;
  for (const char* next; (next = std::strstr(tag + 1, kTempTag)) != nullptr;) tag = next;
  const char* p = tag + std::strlen(kTempTag);
  long value = 0;
  const char* digits = p;
  while (*p >= '0' && *p <= '9') {
    if (value > 1000000000L) return false;
    value = value * 10 + (*p++ - '0');
  }
  if (p == digits || *p++ != '-') return false;
  for (size_t i = 0; i < kTempRandom; ++i, ++p)
    if (!*p || !std::strchr(kTempAlphabet, *p)) return false;
  if (*p) return false;
  *pid = value;
  return value > 0;
}

}  // namespace

Status write_files_atomic(const FileOutput* files, size_t count) {
  if (!files && count) return Status::error(StatusCode::kInvalidArgument, "write: files is null");
  for (size_t i = 0; i < count; ++i) {
    if (!files[i].path || !*files[i].path)
      return Status::error(StatusCode::kInvalidArgument, "write: empty path");
    if (!files[i].data && files[i].size)
      return Status::error(StatusCode::kInvalidArgument, "write: data of '%s' is null",
                           files[i].path);
    for (size_t j = 0; j < i; ++j)
      if (std::strcmp(files[i].path, files[j].path) == 0)
        return Status::error(StatusCode::kInvalidArgument, "write: '%s' is named twice",
                             files[i].path);
  }
  std::vector<std::string> temps(count);
  size_t created = 0, renamed = 0;
  Status failure;
  // Every temporary written and synced before any target changes.
  for (; created < count; ++created) {
    const FileOutput& f = files[created];
    const int fd = create_temporary(f.path, &temps[created]);
    if (fd < 0) {
      failure = Status::error(StatusCode::kIoError, "cannot create a temporary file for '%s': %s",
                              f.path, std::strerror(errno));
      break;
    }
    const bool written = f.size == 0 || write_all(fd, f.data, f.size);
    const int err = errno;
    const bool synced = written && fsync(fd) == 0;
    const bool closed = close(fd) == 0;
    if (!written || !synced || !closed) {
      ++created;  // remove this one too
      failure = Status::error(StatusCode::kIoError, "cannot write '%s': %s", f.path,
                              std::strerror(written ? errno : err));
      break;
    }
  }
  if (failure.ok())
    for (; renamed < count; ++renamed)
      if (std::rename(temps[renamed].c_str(), files[renamed].path) != 0) {
        failure = Status::error(StatusCode::kIoError, "cannot rename '%s' to '%s': %s",
                                temps[renamed].c_str(), files[renamed].path, std::strerror(errno));
        break;
      }
  if (!failure.ok()) {
    // None of the set appears: the targets already replaced go too (their old contents are gone
    // either way), and every temporary is removed.
    for (size_t i = 0; i < renamed; ++i) unlink(files[i].path);
    for (size_t i = renamed; i < created; ++i) unlink(temps[i].c_str());
    return failure;
  }
  // The renames themselves made durable (best effort: some file systems refuse a folder fsync).
  for (size_t i = 0; i < count; ++i) {
    const int dir = open(folder_of(files[i].path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      fsync(dir);
      close(dir);
    }
  }
  return Status();
}

Status write_file_atomic(const char* path, const void* data, size_t size) {
  const FileOutput file{path, data, size};
  return write_files_atomic(&file, 1);
}

Status remove_stale_temporaries(const char* path, size_t* removed) {
  if (removed) *removed = 0;
  if (!path || !*path) return Status::error(StatusCode::kInvalidArgument, "clean: empty path");
  const std::string folder = folder_of(path);
  DIR* dir = opendir(folder.c_str());
  if (!dir)
    return Status::error(StatusCode::kIoError, "cannot list '%s': %s", folder.c_str(),
                         std::strerror(errno));
  const int dir_fd = dirfd(dir);
  while (const dirent* entry = readdir(dir)) {
    long pid = 0;
    if (!temporary_name(entry->d_name, &pid)) continue;
    // Only a process that is gone: kill(pid, 0) fails with ESRCH (EPERM means it exists).
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    // Only this user's own regular files, never what a symlink points to.
    struct stat st;
    if (fstatat(dir_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        st.st_uid != geteuid())
      continue;
    if (unlinkat(dir_fd, entry->d_name, 0) == 0 && removed) ++*removed;
  }
  closedir(dir);
  return Status();
}

}  // namespace siflow
