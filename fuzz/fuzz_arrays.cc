// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the CLI's .npy and .csv readers on arbitrary bytes (first byte picks the
// format). They must either return an array of finite values with consistent shape or throw the
// CLI's RunError naming the problem; anything else (crash, other exception) is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "array_io.hpp"
#include "errors.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using siflow::cli::FileFormat;
  const FileFormat format = (data[0] & 1) ? FileFormat::kCsv : FileFormat::kNpy;
  const std::vector<unsigned char> bytes(data + 1, data + size);
  try {
    const siflow::cli::Array a = siflow::cli::parse_array(format, "input", bytes);
    if (a.values.size() != a.rows * a.cols) {
      std::fprintf(stderr, "fuzz finding: %zu values for shape [%zu, %zu]\n", a.values.size(),
                   a.rows, a.cols);
      std::abort();
    }
    for (double v : a.values)
      if (!fuzz::finite(v)) {
        std::fprintf(stderr, "fuzz finding: a non-finite value was accepted\n");
        std::abort();
      }
  } catch (const siflow::cli::RunError& e) {
    if (e.what()[0] == '\0') std::abort();
  }
  return 0;
}
