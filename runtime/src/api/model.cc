// SPDX-License-Identifier: Apache-2.0
// The public Model object: loading from memory or a file (verification in format/, packing for
// the fast kernels in plan/, both in the memory the caller chose), and what a loaded model
// tells about itself. Everything a model holds is in one place: the heap or the caller's region.
#if !defined(SIFLOW_NO_FILESYSTEM)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <cstdio>
#include <cstring>
#include <new>

#include "api/construct.hpp"
#include "format/loader.hpp"
#include "format/model_data.hpp"
#include "ops/op.hpp"
#include "plan/packing.hpp"
#include "support/aligned_memory.hpp"
#include "support/memory.hpp"

namespace siflow {
namespace {

constexpr size_t kModelHeader = 64;

bool has_memory_fields(const LoadOptions& o) {
  return o.struct_size >= offsetof(LoadOptions, memory_size) + sizeof(o.memory_size);
}

Status check_load_options(const LoadOptions& options) {
  if (options.struct_size < sizeof(uint32_t) || options.struct_size > sizeof(LoadOptions))
    return Status::error(StatusCode::kInvalidArgument,
                         "load: LoadOptions.struct_size %u is "
                         "not one this runtime knows",
                         options.struct_size);
  return Status();
}

// The caller's memory, used from its first 64-byte boundary as memory_bytes() assumes; *skip
// receives the bytes skipped.
Status caller_region(const LoadOptions& options, detail::Memory* region, size_t* skip) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(options.memory);
  *skip = (64 - addr % 64) % 64;
  if (options.memory_size < *skip)
    return Status::error(StatusCode::kArenaTooSmall, "load: memory of %zu bytes is too small",
                         options.memory_size);
  *region = detail::Memory::region(static_cast<uint8_t*>(options.memory) + *skip,
                                   options.memory_size - *skip);
  return Status();
}

}  // namespace

// The Model object sits after a 64-byte header holding the heap block to free (nullptr in a
// caller's memory), which Model::operator delete frees.
Status detail::Construct::model(ModelData* data, Memory* memory, Model** out) {
  // Rounded to 64 bytes: the object is the last block of a load, so memory_bytes() is exact.
  constexpr size_t kBytes = kModelHeader + align_up(sizeof(Model));
  uint8_t* block =
      static_cast<uint8_t*>(memory ? memory->allocate(kBytes) : aligned_malloc(64, kBytes));
  if (!block) return Status::error(StatusCode::kOutOfMemory, "load: no memory for the model");
  void* owner = memory ? nullptr : block;
  std::memcpy(block, &owner, sizeof owner);
  *out = new (block + kModelHeader) Model(data);
  return Status();
}

void Model::operator delete(void* p) noexcept {
  if (!p) return;
  void* owner = nullptr;
  std::memcpy(&owner, static_cast<uint8_t*>(p) - kModelHeader, sizeof owner);
  detail::aligned_free(owner);
}

// The tail every load shares: verify the 64-byte aligned span, pack weights for the fast
// kernels, construct the Model. `owned` (heap bytes the model takes over, or nullptr) is freed
// on failure; `copied` counts bytes of the span the runtime made (held_bytes).
Status detail::Construct::finish(const uint8_t* span, size_t size, void* owned, size_t copied,
                                 Memory* memory, std::unique_ptr<Model>* out) {
  ModelData* data = nullptr;
  Status s = verify_model(span, size, memory, ops::find_op_verifier, &data);
  if (!s.ok()) {
    aligned_free(owned);
    return s;
  }
  data->owned_bytes = owned;
  data->info.held_bytes += copied;
  Model* model = nullptr;
  if (!(s = pack_model_weights(data, memory)).ok() ||
      !(s = Construct::model(data, memory, &model)).ok()) {
    free_model_data(data);
    return s;
  }
  if (memory) data->info.held_bytes = memory->high_water();
  out->reset(model);
  return Status();
}

// Loads from memory; memory == nullptr: every table on the heap, else all of it (an aligned copy
// of unaligned bytes included) in `memory`.
Status detail::Construct::load(const void* bytes, size_t size, const LoadOptions& options,
                               Memory* memory, std::unique_ptr<Model>* out) {
  if (!bytes) return Status::error(StatusCode::kInvalidArgument, "load: bytes is null");
  const uint8_t* span = static_cast<const uint8_t*>(bytes);
  if (reinterpret_cast<uintptr_t>(span) % 64 == 0)
    return finish(span, size, nullptr, 0, memory, out);
  if (!options.allow_copy)
    return Status::error(StatusCode::kInvalidArgument,
                         "load: model bytes at %p are not 64-byte aligned and copies are "
                         "not allowed",
                         bytes);
  if (size > Limits::kMaxFileBytes)
    return Status::error(StatusCode::kInvalidModel, "model of %zu bytes exceeds the limit of %llu",
                         size, static_cast<unsigned long long>(Limits::kMaxFileBytes));
  void* copy = memory ? memory->allocate(size ? size : 1) : aligned_malloc(64, size ? size : 1);
  if (!copy)
    return Status::error(StatusCode::kOutOfMemory,
                         "load: cannot allocate %zu bytes to copy the model into", size);
  std::memcpy(copy, bytes, size);
  return finish(static_cast<const uint8_t*>(copy), size, memory ? nullptr : copy, size, memory,
                out);
}

Status Model::load(const void* bytes, size_t size, const LoadOptions& options,
                   std::unique_ptr<Model>* out) {
  if (!out) return Status::error(StatusCode::kInvalidArgument, "load: out is null");
  out->reset();
  Status s = check_load_options(options);
  if (!s.ok()) return s;
  if (!has_memory_fields(options) || !options.memory)
    return detail::Construct::load(bytes, size, options, nullptr, out);
  detail::Memory region = detail::Memory::measuring();
  size_t skip = 0;
  if (!(s = caller_region(options, &region, &skip)).ok()) return s;
  s = detail::Construct::load(bytes, size, options, &region, out);
  if (s.code() != StatusCode::kOutOfMemory) return s;
  // Out of the caller's memory: say how much loading needs (measuring takes heap blocks, but
  // only on this error path).
  size_t need = 0;
  if (!memory_bytes(bytes, size, options, &need).ok()) return s;
  return Status::error(
      StatusCode::kArenaTooSmall, "load: memory of %zu bytes is too small: this model needs %zu%s",
      options.memory_size, need + skip, skip ? " including alignment padding" : "");
}

Status Model::memory_bytes(const void* bytes, size_t size, const LoadOptions& options,
                           size_t* out) {
  if (!out) return Status::error(StatusCode::kInvalidArgument, "memory_bytes: out is null");
  detail::Memory measuring = detail::Memory::measuring();
  std::unique_ptr<Model> model;
  Status s = detail::Construct::load(bytes, size, options, &measuring, &model);
  if (!s.ok()) return s;
  *out = measuring.high_water();
  return Status();
}

Status Model::load_file(const char* path, const LoadOptions& options, std::unique_ptr<Model>* out) {
  if (!out) return Status::error(StatusCode::kInvalidArgument, "load: out is null");
  out->reset();
  if (!path) return Status::error(StatusCode::kInvalidArgument, "load: path is null");
  Status s = check_load_options(options);
  if (!s.ok()) return s;
#if defined(SIFLOW_NO_FILESYSTEM)
  return Status::error(StatusCode::kUnsupported,
                       "load_file: this build has no file system (bare metal); load '%s' from "
                       "memory with Model::load",
                       path);
#else
  // The file is read into 64-byte aligned memory (the caller's, when LoadOptions::memory is
  // set: then it holds the file's bytes followed by what memory_bytes() counts for them), so
  // allow_copy has nothing to refuse.
  detail::Memory region = detail::Memory::measuring();
  size_t skip = 0;
  const bool in_caller_memory = has_memory_fields(options) && options.memory;
  if (in_caller_memory && !(s = caller_region(options, &region, &skip)).ok()) return s;
  // Opened without blocking, so a FIFO or a device cannot stall the open; only a regular file
  // is read.
  const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Status::error(StatusCode::kIoError, "cannot open model '%s'", path);
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status::error(StatusCode::kIoError, "model '%s' is not a regular file", path);
  }
  std::FILE* f = fdopen(fd, "rb");
  if (!f) {
    close(fd);
    return Status::error(StatusCode::kIoError, "cannot open model '%s'", path);
  }
  long size = -1;
  if (std::fseek(f, 0, SEEK_END) == 0) size = std::ftell(f);
  if (size < 0 || std::fseek(f, 0, SEEK_SET) != 0) {
    std::fclose(f);
    return Status::error(StatusCode::kIoError, "cannot read model '%s' (not a regular file?)",
                         path);
  }
  if (static_cast<unsigned long long>(size) > Limits::kMaxFileBytes) {
    std::fclose(f);
    return Status::error(StatusCode::kInvalidModel, "model '%s' of %ld bytes exceeds the limit",
                         path, size);
  }
  const size_t n = static_cast<size_t>(size);
  void* buffer = in_caller_memory ? region.allocate(n ? n : 1) : detail::aligned_malloc(64, n + 64);
  if (!buffer) {
    std::fclose(f);
    if (in_caller_memory)
      return Status::error(StatusCode::kArenaTooSmall,
                           "load: memory of %zu bytes is too small to hold the %zu bytes of '%s'",
                           options.memory_size, n, path);
    return Status::error(StatusCode::kOutOfMemory, "cannot allocate %zu bytes for '%s'", n, path);
  }
  const size_t got = n ? std::fread(buffer, 1, n, f) : 0;
  std::fclose(f);
  void* owned = in_caller_memory ? nullptr : buffer;
  if (got != n) {
    detail::aligned_free(owned);
    return Status::error(StatusCode::kIoError, "short read of model '%s' (%zu of %zu bytes)", path,
                         got, n);
  }
  s = detail::Construct::finish(static_cast<const uint8_t*>(buffer), n, owned, n,
                                in_caller_memory ? &region : nullptr, out);
  if (s.ok()) return s;
  if (in_caller_memory && s.code() == StatusCode::kOutOfMemory) {
    size_t need = 0;
    if (memory_bytes(buffer, n, options, &need).ok())
      return Status::error(StatusCode::kArenaTooSmall,
                           "%s: load: memory of %zu bytes is too small: this model needs %zu "
                           "(the file's %zu bytes, then its tables)%s",
                           path, options.memory_size, detail::align_up(n) + need + skip, n,
                           skip ? ", including alignment padding" : "");
  }
  return s.prefix("%s", path);
#endif
}

Model::~Model() { detail::free_model_data(data_); }

const ModelInfo& Model::info() const { return data_->info; }

bool Model::metadata(uint32_t i, const char** key, const char** value) const {
  if (i >= data_->info.metadata_count) return false;
  if (key) *key = data_->metadata_keys[i];
  if (value) *value = data_->metadata_values[i];
  return true;
}

uint32_t Model::node_shape(uint32_t i, uint32_t dims[3]) const {
  if (i >= data_->node_count) return 0;
  const detail::Shape& s = data_->nodes[i].shape;
  for (uint32_t k = 0; k < 3; ++k) dims[k] = k < s.rank ? s.dims[k] : 0;
  return s.rank;
}

bool Model::node(uint32_t i, const char** op, uint32_t* in_width, uint32_t* width) const {
  if (i >= data_->node_count) return false;
  const detail::NodeData& n = data_->nodes[i];
  const ops::OpModule& m = ops::op_module(n.op);
  if (op) *op = m.label ? m.label(n) : m.name;
  if (in_width) *in_width = n.input_count ? data_->tensors[n.inputs[0]].width : 0;
  if (width) *width = n.width;
  return true;
}

uint64_t Model::node_flops(uint32_t i) const {
  if (i >= data_->node_count) return 0;
  const ops::OpModule& m = ops::op_module(data_->nodes[i].op);
  return m.flops ? m.flops(*data_, i) : 0;
}

bool Model::solver(uint32_t i, SolverInfo* out) const {
  if (i >= data_->solver_count || !out) return false;
  const detail::SolverData& sd = data_->solvers[i];
  out->name = sd.name;
  out->method = sd.method;
  out->steps = sd.steps;
  out->grid = sd.grid;
  out->nfe = sd.nfe;
  out->sample_error = sd.sample_error;
  out->label = sd.label;
  out->guidance = sd.guidance;
  out->test_count = sd.test_count;
  out->test_tolerance = sd.test_tolerance;
  out->coefficients = sd.coefficients;
  out->coefficient_count = sd.coefficient_count;
  return true;
}

}  // namespace siflow
