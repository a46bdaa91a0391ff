// SPDX-License-Identifier: Apache-2.0
// Atomic file output: write to a temporary name beside the target, flush, rename into place,
// so an interrupted run never leaves a truncated file under the final name.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "siflow/siflow.hpp"

namespace siflow {

Status write_file_atomic(const char* path, const void* data, size_t size) {
  if (!path || !*path) return Status::error(StatusCode::kInvalidArgument, "write: empty path");
  if (!data && size) return Status::error(StatusCode::kInvalidArgument, "write: data is null");
  char tmp[4096];
  const int n = std::snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, static_cast<long>(getpid()));
  if (n < 0 || static_cast<size_t>(n) >= sizeof tmp)
    return Status::error(StatusCode::kInvalidArgument, "write: path too long: %s", path);
  std::FILE* f = std::fopen(tmp, "wb");
  if (!f)
    return Status::error(StatusCode::kIoError, "cannot create '%s': %s", tmp, std::strerror(errno));
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  const bool flushed = std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!written || !flushed || !closed) {
    std::remove(tmp);
    return Status::error(StatusCode::kIoError, "cannot write '%s' (disk full?)", path);
  }
  if (std::rename(tmp, path) != 0) {
    const int err = errno;
    std::remove(tmp);
    return Status::error(StatusCode::kIoError, "cannot rename '%s' to '%s': %s", tmp, path,
                         std::strerror(err));
  }
  return Status();
}

}  // namespace siflow
