// SPDX-License-Identifier: Apache-2.0
// Training checkpoints (schemas/checkpoint.fbs): the whole state of a run, written atomically
// and read back through the FlatBuffers verifier, so a damaged file is refused by name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "siflow/train.hpp"

namespace siflow::train {

struct CheckpointState {
  TrainOptions options;
  bool toy = true;
  ToyData toy_kind = ToyData::kCheckerboard;
  uint32_t dim = 0;
  uint64_t data_rows = 0;
  uint64_t data_fingerprint = 0;
  std::string data_name;
  uint64_t step = 0;
  std::vector<float> params, adam_m, adam_v, norm_mean, norm_std;
  std::vector<double> alpha, beta, coef_m, coef_v;
};

Status write_checkpoint(const char* path, const CheckpointState& state);
// Reads a regular file of at most Limits::kMaxFileBytes and parses it.
Status read_checkpoint(const char* path, CheckpointState* state);
// Verifies and parses checkpoint bytes (8-byte aligned; `path` names them in errors). Every value
// is checked: finite parameters and Adam moments (second moments >= 0), finite normalisation with
// std > 0, finite interpolant coefficients, step <= steps, known enum values.
Status parse_checkpoint(const uint8_t* bytes, size_t size, const char* path,
                        CheckpointState* state);

}  // namespace siflow::train
