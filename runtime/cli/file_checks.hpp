// SPDX-License-Identifier: Apache-2.0
// The files a command reads and writes, treated as hostile: inputs must be regular files of a
// bounded size (a FIFO or a device is refused before any read), and no output may be an input or
// another output, compared by identity (device and inode), never by spelling.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace siflow::cli {

// The largest data file the CLI reads into memory (8 GiB).
constexpr uint64_t kMaxInputBytes = uint64_t{1} << 33;

// The bytes of a regular file of at most `limit` bytes; `what` names it in errors ("model").
// Opened non-blocking, so a FIFO under the name is refused instead of hanging. RunError otherwise.
std::vector<unsigned char> read_regular_file(const std::string& path, uint64_t limit,
                                             const char* what = nullptr);
// A RunError unless `path` opens (without blocking) as a regular file.
void require_regular_file(const std::string& path, const char* what);

// A path a command reads or writes, with the option that named it (for messages).
struct NamedPath {
  const char* option;
  std::string path;
};
// A UsageError when an output is the same file as an input or as another output: the same device
// and inode after resolving the path (symlinks, "./", "..", hard links), or, for an output that
// does not exist yet, the same resolved folder and name.
void check_distinct(const std::vector<NamedPath>& inputs, const std::vector<NamedPath>& outputs);
// For each output: the folder must be writable (check_writable), and temporaries a killed run of
// this program left there are removed (siflow::remove_stale_temporaries).
void prepare_outputs(const std::vector<NamedPath>& outputs);

}  // namespace siflow::cli
