// SPDX-License-Identifier: Apache-2.0
// Numeric arrays in and out of the CLI: .npy (little-endian float32/float64, C order, 1-D to
// 4-D: [N], [N, d] or [N, C, H, W]) and .csv ([N, d]). Every problem names the file and its row or
// line. Output only ever goes through siflow::write_files_atomic (all or none), never written in
// place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace siflow::cli {

enum class FileFormat { kNpy, kCsv };

// Whether a path's extension names a format (.npy or .csv, any case), and which.
bool known_format(const std::string& path, FileFormat* format);
// The format a path's extension names; a UsageError naming `option` otherwise.
FileFormat format_of(const char* option, const std::string& path);
// A RunError when the directory `path` would be written into is missing or not writable, so a
// long run does not fail only at its end.
void check_writable(const std::string& path);

// A numeric array read from a file; every value is finite.
struct Array {
  FileFormat format = FileFormat::kNpy;
  size_t rows = 0;
  size_t cols = 0;  // 1 for a 1-D array; the product of the trailing extents of a .npy
  bool one_dimensional = false;
  std::vector<uint64_t> npy_shape;  // .npy: the full shape, rows first
  std::vector<double> values;       // row-major
  std::vector<size_t> lines;        // .csv: the file line (from 1) of each row
  std::string integer_dtype;        // .npy of integers ("<i4", "<i8"): only read_labels takes them
};

// Parses file contents; `name` (the path) prefixes every error. Throws RunError on any problem.
Array parse_array(FileFormat format, const std::string& name,
                  const std::vector<unsigned char>& bytes);
// `option` names the command-line option the path came from (for an unknown extension).
Array read_array(const char* option, const std::string& path);

// Points for a model of dimension `dim`: a 2-D [N, dim] array (or 1-D [N] when dim is 1), or a
// .npy of shape [N, *sample_shape] when the model's x has a shape of rank 2 or 3 (sample_shape,
// e.g. {C, H, W}); N >= 1, every value representable as float32. Row-major [N][dim].
std::vector<float> read_points(const char* option, const std::string& path, uint32_t dim,
                               const std::vector<uint32_t>& sample_shape = {});
// A vector [N] (or 2-D [N, 1]), N >= 1.
std::vector<double> read_vector(const char* option, const std::string& path);
// read_vector that also takes integer .npy arrays (int32, int64): class labels.
std::vector<double> read_labels(const char* option, const std::string& path);

// The bytes of points [rows, dim] as float32 .npy (of shape [rows, *sample_shape] when that has
// rank 2 or 3), or .csv [rows, dim] with header x0,x1,..., by the extension of `path`.
std::string encode_points(const std::string& path, const float* x, size_t rows, uint32_t dim,
                          const std::vector<uint32_t>& sample_shape = {});
// The bytes of log-likelihoods [n] as float64 .npy, or .csv with header logp.
std::string encode_log_probs(const std::string& path, const double* logp, size_t n);
// Writes (path, bytes) pairs all or none (siflow::write_files_atomic); RunError on failure.
void write_outputs(const std::vector<std::pair<std::string, std::string>>& files);
// write_outputs of one file of points.
void write_points(const std::string& path, const float* x, size_t rows, uint32_t dim,
                  const std::vector<uint32_t>& sample_shape = {});

}  // namespace siflow::cli
