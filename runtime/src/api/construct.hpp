// SPDX-License-Identifier: Apache-2.0
// Construction of the API objects, whose constructors are private, in the memory the runtime
// chose for them (the heap, or a caller's region). Internal to the runtime library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "siflow/siflow.hpp"
#include "support/memory.hpp"

namespace siflow::detail {

struct Construct {
  // A Plan over `data`, placement-constructed at `at`.
  static Plan* plan(void* at, PlanData* data);
  // A Model over `data`, after a 64-byte header, in `memory` (nullptr: the heap).
  static Status model(ModelData* data, Memory* memory, Model** out);
  // What every load ends with: verification, packing, the Model (api/model.cc).
  static Status finish(const uint8_t* span, size_t size, void* owned, size_t copied, Memory* memory,
                       std::unique_ptr<Model>* out);
  // Loading with every table in `memory` (nullptr: the heap).
  static Status load(const void* bytes, size_t size, const LoadOptions& options, Memory* memory,
                     std::unique_ptr<Model>* out);
};

}  // namespace siflow::detail
