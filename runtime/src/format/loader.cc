// SPDX-License-Identifier: Apache-2.0
// The loader: bytes -> verified ModelData. Runs the FlatBuffers Verifier with explicit limits,
// then every semantic check (version, enums, shapes along the graph, limits, finite weights,
// interpolant validity). Nothing downstream ever sees a model that failed here.
#if !defined(SIFLOW_NO_FILESYSTEM)
#include <sys/stat.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "format/conditioning_check.hpp"
#include "format/loader.hpp"
#include "format/loader_impl.hpp"
#include "format/model_data.hpp"
#include "format/solvers.hpp"
#include "math/elementary.hpp"
#include "math/half.hpp"
#include "math/interpolant.hpp"
#include "math/reduced.hpp"
#include "siflow_generated.h"
#include "support/aligned_memory.hpp"
#include "support/memory.hpp"

namespace siflow {
namespace detail {
namespace load {

// Floats reserved for expanding stored weights: every F16, BF16 or I8 operand's vector, each
// rounded up to a 64-byte multiple so each expanded vector stays aligned. Bounded by the verified
// file size.
size_t Loader::count_f16_floats() const {
  size_t total = 0;
  auto add = [&](const fb::Weights* w) {
    if (w && w->dtype() != fb::DType::F32) total += expanded_floats(weight_values(*w).count);
  };
  const auto* nodes = graph_->nodes();
  for (uint32_t i = 0; i < node_count_; ++i) {
    const fb::Node* n = nodes->Get(i);
    add(n->weight());
    add(n->bias());
    add(n->constant());
    add(n->gamma());
    add(n->beta());
  }
  return total;
}

Status Loader::check_header() {
  if (size_ < 8)
    return Status::error(StatusCode::kInvalidModel,
                         "file too small to be a siflow model (%zu bytes)", size_);
  if (size_ > Limits::kMaxFileBytes)
    return Status::error(StatusCode::kInvalidModel, "model of %zu bytes exceeds the limit of %llu",
                         size_, static_cast<unsigned long long>(Limits::kMaxFileBytes));
  if (!flatbuffers::BufferHasIdentifier(bytes_, fb::ModelIdentifier())) {
    char id[5] = {};
    for (int i = 0; i < 4; ++i) {
      const char c = static_cast<char>(bytes_[4 + i]);
      id[i] = (c >= 32 && c < 127) ? c : '?';
    }
    return Status::error(StatusCode::kInvalidModel,
                         "not a siflow model: file identifier is '%s', expected 'SIFL'", id);
  }
  // Depth: Model > Graph > nodes > Node > Weights > vector is 6 levels; allow some slack.
  // Tables: every node has at most 6 tables; metadata and the rest add a few.
  flatbuffers::Verifier verifier(
      bytes_, size_, 16, Limits::kMaxNodes * 8 + Limits::kMaxMetadata + Limits::kMaxSolvers + 64);
  if (!fb::VerifyModelBuffer(verifier))
    return Status::error(StatusCode::kInvalidModel,
                         "FlatBuffers verification failed: the file is truncated or corrupt "
                         "(%zu bytes)",
                         size_);
  model_ = fb::GetModel(bytes_);
  const unsigned major = model_->format_major(), minor = model_->format_minor();
  if (major > kFormatMajor)
    return Status::error(StatusCode::kUnsupported,
                         "model format %u.%u is newer than this runtime reads (%u.x); "
                         "upgrade siflow",
                         major, minor, kFormatMajor);
  if (major < kFormatMajor)
    return Status::error(StatusCode::kUnsupported,
                         "model format %u.%u is older than this runtime reads (%u.x)", major, minor,
                         kFormatMajor);
  return Status();
}

Status Loader::check_graph_shape() {
  graph_ = model_->graph();
  if (!graph_) return Status::error(StatusCode::kInvalidModel, "model has no graph");
  dim_ = graph_->dim();
  if (dim_ == 0 || dim_ > Limits::kMaxDim)
    return Status::error(StatusCode::kInvalidModel, "graph dim %u is outside [1, %u]", dim_,
                         Limits::kMaxDim);
  Status s = read_shape("graph x_shape", graph_->x_shape(), dim_, &x_shape_);
  if (!s.ok()) return s;
  if (x_shape_.rank == 0) x_shape_ = flat_shape(dim_);
  const auto* nodes = graph_->nodes();
  node_count_ = nodes ? nodes->size() : 0;
  if (node_count_ == 0) return Status::error(StatusCode::kInvalidModel, "graph has no nodes");
  if (node_count_ > Limits::kMaxNodes)
    return Status::error(StatusCode::kInvalidModel, "graph has %u nodes, the limit is %u",
                         node_count_, Limits::kMaxNodes);
  for (uint32_t i = 0; i < node_count_; ++i) {
    const auto* inputs = nodes->Get(i)->inputs();
    if (inputs && inputs->size() > Limits::kMaxNodeInputs)
      return Status::error(StatusCode::kInvalidModel, "node %u has %u inputs, the limit is %u", i,
                           inputs->size(), Limits::kMaxNodeInputs);
  }
  if (graph_->output() < 2 || graph_->output() >= node_count_ + 2)
    return Status::error(StatusCode::kInvalidModel,
                         "graph output is tensor %u, but nodes produce tensors 2..%u",
                         graph_->output(), node_count_ + 1);
  return Status();
}

Status Loader::floats(const char* what, const flatbuffers::Vector<float>* v, size_t expected,
                      const float** out) {
  *out = nullptr;
  if (!v || v->size() == 0) return Status();
  if (v->size() != expected)
    return Status::error(StatusCode::kInvalidModel, "%s has %u values, expected %zu", what,
                         v->size(), expected);
  size_t bad = 0;
  if (!all_finite(v->data(), v->size(), &bad))
    return Status::error(StatusCode::kInvalidModel, "%s[%zu] is not finite", what, bad);
  *out = v->data();
  return Status();
}

Status Loader::read(const char* what, const fb::Weights* w, size_t expected, bool required,
                    const float** out) {
  *out = nullptr;
  if (!w) {
    if (required) return Status::error(StatusCode::kInvalidModel, "%s is missing", what);
    return Status();
  }
  const fb::DType dtype = w->dtype();
  const char* dtype_name = fb::EnumNameDType(dtype);
  if (dtype != fb::DType::F32 && dtype != fb::DType::F16 && dtype != fb::DType::BF16 &&
      dtype != fb::DType::I8)
    return Status::error(StatusCode::kUnsupported,
                         "%s has dtype %s; this runtime reads F32, F16, BF16 and I8 weights only",
                         what, (dtype_name && *dtype_name) ? dtype_name : "unknown");
  // BF16 and I8 came with format 1.3: a file that uses them says so.
  if ((dtype == fb::DType::BF16 || dtype == fb::DType::I8) && model_->format_minor() < 3)
    return Status::error(StatusCode::kInvalidModel,
                         "%s has dtype %s, which needs format 1.3, but the file says %u.%u", what,
                         dtype_name, model_->format_major(), model_->format_minor());
  const WeightValues v = weight_values(*w);
  if (v.other_count != 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s has dtype %s but also holds %zu values in other vectors; exactly the "
                         "dtype's vector may be set%s",
                         what, dtype_name, v.other_count,
                         dtype == fb::DType::I8 ? " (with its scales)" : "");
  const size_t n = v.count;
  if (n != expected)
    return Status::error(StatusCode::kInvalidModel, "%s has %zu values, expected %zu", what, n,
                         expected);
  if (n == 0) return Status();
  const size_t offset = offset_of(v.data);
  if (offset % kAlignment != 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s data at file offset %zu is not 64-byte aligned (written without "
                         "force_align)",
                         what, offset);
  const float* values = static_cast<const float*>(v.data);
  if (dtype != fb::DType::F32) {
    // I8: one positive finite scale per row of the first shape dimension.
    const auto* scale = w->scale();
    size_t rows = 0, columns = 0;
    if (dtype == fb::DType::I8) {
      const auto* shape = w->shape();
      rows = shape && shape->size() > 0 ? shape->Get(0) : 0;
      if (rows == 0 || n % rows != 0)
        return Status::error(StatusCode::kInvalidModel,
                             "%s: I8 weights need a shape whose first dimension divides the %zu "
                             "values",
                             what, n);
      columns = n / rows;
      if (!scale || scale->size() != rows)
        return Status::error(StatusCode::kInvalidModel,
                             "%s: I8 weights have %u scales, expected one per row (%zu)", what,
                             scale ? scale->size() : 0u, rows);
      if (offset_of(scale->data()) % alignof(float) != 0)
        return Status::error(StatusCode::kInvalidModel,
                             "%s: scales at file offset %zu are not "
                             "4-byte aligned",
                             what, offset_of(scale->data()));
      for (size_t r = 0; r < rows; ++r) {
        const float sc = scale->Get(static_cast<flatbuffers::uoffset_t>(r));
        if (!(sc > 0.0f && sc <= 3.4028235e38f))
          return Status::error(StatusCode::kInvalidModel,
                               "%s: scale[%zu] = %g is not a finite positive number", what, r,
                               static_cast<double>(sc));
      }
    }
    // count_f16_floats reserved room for exactly these vectors.
    const size_t reserved = expanded_floats(n);
    if (!expanded_ || expanded_used_ + reserved > expanded_capacity_)
      return Status::error(StatusCode::kInvalidModel, "%s: weight expansion space miscounted",
                           what);
    float* dst = expanded_ + expanded_used_;
    expanded_used_ += reserved;
    if (dtype == fb::DType::F16) {
      const auto* src = w->f16();
      for (size_t i = 0; i < n; ++i)
        dst[i] = half_to_float(src->Get(static_cast<flatbuffers::uoffset_t>(i)));
      f16_parameters_ += n;
    } else if (dtype == fb::DType::BF16) {
      const auto* src = w->bf16();
      for (size_t i = 0; i < n; ++i)
        dst[i] = bf16_to_float(src->Get(static_cast<flatbuffers::uoffset_t>(i)));
      bf16_parameters_ += n;
    } else {
      const auto* src = w->i8();
      for (size_t i = 0; i < n; ++i)
        dst[i] = scale->Get(static_cast<flatbuffers::uoffset_t>(i / columns)) *
                 static_cast<float>(src->Get(static_cast<flatbuffers::uoffset_t>(i)));
      i8_parameters_ += n;
      scale_count_ += rows;
    }
    values = dst;
  }
  size_t bad = 0;
  if (!all_finite(values, n, &bad))
    return Status::error(StatusCode::kInvalidModel, "%s[%zu] is not finite", what, bad);
  parameters_ += n;
  *out = values;
  return Status();
}

Status Loader::check_node(uint32_t index, const fb::Node* node, NodeData* out) {
  const uint32_t id = index + 2;
  NodeCheck check(index, *node, x_shape_, out - index, this);
  const auto* inputs = node->inputs();
  out->input_count = inputs ? inputs->size() : 0;
  out->inputs = inputs ? inputs->data() : nullptr;
  out->alpha = node->alpha();
  out->epsilon = node->epsilon();
  out->unary = UnaryKind::kIdentity;
  out->weight = out->bias = out->constant = out->gamma = out->beta = nullptr;
  out->constant_width = 0;
  out->classes = 0;
  out->null_label = -1;
  for (uint32_t i = 0; i < out->input_count; ++i) {
    if (out->inputs[i] >= id)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: input %u reads tensor %u, which is not produced before it "
                           "(tensors before this node: 0..%u)",
                           check.where(), i, out->inputs[i], id - 1);
  }
  OpVerifier module{};
  if (!find_(node->op(), &module)) {
    if (node->op() <= fb::OpType::MAX)
      return Status::error(StatusCode::kUnsupported,
                           "%s: op type %s is not supported by this runtime (it reads format "
                           "%u.%u)",
                           check.where(), fb::EnumNameOpType(node->op()), kFormatMajor,
                           kFormatMinor);
    return Status::error(StatusCode::kInvalidModel,
                         "node %u: unknown op type %d (a newer format's op? this runtime reads "
                         "format %u.%u)",
                         index, static_cast<int>(node->op()), kFormatMajor, kFormatMinor);
  }
  out->shape = Shape();
  Status s = module.verify(check, *node, out);
  if (!s.ok()) return s;
  if (out->shape.rank == 0) {
    // Ops that do not define a shape keep their first full-width input's, else are flat.
    out->shape = flat_shape(out->width);
    for (uint32_t i = 0; i < out->input_count; ++i)
      if (check.width_of(out->inputs[i]) == out->width) {
        out->shape = check.shape_of(out->inputs[i]);
        break;
      }
  }
  if (shape_size(out->shape) != out->width)
    return Status::error(
        StatusCode::kInvalidModel, "%s: its shape holds %llu values, but its output is %u wide",
        check.where(), static_cast<unsigned long long>(shape_size(out->shape)), out->width);
  char what[200];
  std::snprintf(what, sizeof what, "%s: shape", check.where());
  Shape stored;
  if (!(s = read_shape(what, node->shape(), out->width, &stored)).ok()) return s;
  if (stored.rank != 0 && !same_shape(stored, out->shape))
    return Status::error(StatusCode::kInvalidModel,
                         "%s: the file gives its output shape as %s, but the op produces %s "
                         "(use a Reshape node to read values with another shape)",
                         check.where(), shape_text(stored).text, shape_text(out->shape).text);
  // A weight vector the op did not read would be silently ignored: refuse it by name.
  const struct {
    const char* field;
    const fb::Weights* in_file;
    const float* read;
  } fields[] = {{"weight", node->weight(), out->weight},
                {"bias", node->bias(), out->bias},
                {"constant", node->constant(), out->constant},
                {"gamma", node->gamma(), out->gamma},
                {"beta", node->beta(), out->beta}};
  for (const auto& f : fields)
    if (f.in_file && !f.read)
      return Status::error(StatusCode::kInvalidModel, "%s: has a %s, which %s does not read",
                           check.where(), f.field, module.name);
  if (parameters_ > Limits::kMaxParameters)
    return Status::error(StatusCode::kInvalidModel, "%s: parameter count exceeds %llu",
                         check.where(), static_cast<unsigned long long>(Limits::kMaxParameters));
  return Status();
}

Status Loader::run(ModelData** out) {
  Status s;
  if (!(s = check_header()).ok()) return s;
  if (!(s = check_graph_shape()).ok()) return s;
  const auto* metadata = model_->metadata();
  const uint32_t meta_count = metadata ? metadata->size() : 0;
  if (meta_count > Limits::kMaxMetadata)
    return Status::error(StatusCode::kInvalidModel, "model has %u metadata entries, limit %u",
                         meta_count, Limits::kMaxMetadata);
  const double t0 = model_->time_start(), t1 = model_->time_end();
  if (!(t0 >= 0.0 && t0 < t1 && t1 <= 1.0))
    return Status::error(StatusCode::kInvalidModel,
                         "time range [%g, %g] must satisfy 0 <= start < end <= 1", t0, t1);

  if (!(s = count_solvers(*model_, &solver_count_, &solver_points_)).ok()) return s;
  // All counts are bounded now: size the one allocation, then fill it.
  expanded_capacity_ = count_f16_floats();
  const fb::Interpolant* fi = model_->interpolant();
  if (fi && fi->kind() == fb::InterpolantKind::LearnedFourier && fi->alpha())
    coefficient_capacity_ = fi->alpha()->size() < Limits::kMaxFourierTerms
                                ? fi->alpha()->size()
                                : Limits::kMaxFourierTerms;
  auto layout = [&](Bump& bump, ModelData** data) {
    *data = bump.take<ModelData>(1);
    NodeData* nodes = bump.take<NodeData>(node_count_);
    TensorData* tensors = bump.take<TensorData>(node_count_ + 2);
    double* base_a = bump.take<double>(dim_);
    double* base_b = bump.take<double>(dim_);
    const char** keys = bump.take<const char*>(meta_count);
    const char** values = bump.take<const char*>(meta_count);
    double* coefficients = bump.take<double>(2 * size_t{coefficient_capacity_});
    float* expanded = bump.take<float>(expanded_capacity_, kAlignment);
    SolverData* solvers = bump.take<SolverData>(solver_count_);
    double* solver_grids = bump.take<double>(solver_points_);
    if (*data) {
      (*data)->solvers = solvers;
      solver_grids_ = solver_grids;
      coefficients_ = coefficients;
      expanded_ = expanded;
      (*data)->nodes = nodes;
      (*data)->tensors = tensors;
      (*data)->base_a = base_a;
      (*data)->base_b = base_b;
      (*data)->metadata_keys = keys;
      (*data)->metadata_values = values;
    }
  };
  Bump sizing;
  ModelData* unused = nullptr;
  layout(sizing, &unused);
  // 64-byte aligned so the fp16 expansion region is; the model is freed with aligned_free.
  const size_t block_bytes = align_up(sizing.used, kAlignment);
  void* block = memory_ ? memory_->allocate(block_bytes, kAlignment)
                        : aligned_malloc(kAlignment, block_bytes);
  if (!block)
    return Status::error(StatusCode::kOutOfMemory, "cannot allocate %zu bytes for the model",
                         sizing.used);
  std::memset(block, 0, sizing.used);
  Bump bump{static_cast<uint8_t*>(block), 0};
  ModelData* data = nullptr;
  layout(bump, &data);
  ModelInfo& info = data->info;
  info = ModelInfo();
  info.held_bytes = sizing.used;
  data->bytes = bytes_;
  data->size = size_;
  data->dim = dim_;
  data->node_count = node_count_;
  data->output = graph_->output();

  data->in_region = memory_ != nullptr;
  auto fail = [&](Status st) {
    if (!memory_) {
      aligned_free(data->packed_block);
      aligned_free(block);
    }
    return st;
  };
  const auto* nodes = graph_->nodes();
  data->x_shape = x_shape_;
  data->tensors[0] = TensorData{dim_, true, 0, x_shape_};
  data->tensors[1] = TensorData{1, false, 0, flat_shape(1)};
  for (uint32_t i = 0; i < node_count_; ++i) {
    // check_node reads earlier widths through `out - k`, so nodes are filled in order.
    if (!(s = check_node(i, nodes->Get(i), &data->nodes[i])).ok()) return fail(s);
    bool depends = false;
    const NodeData& n = data->nodes[i];
    for (uint32_t k = 0; k < n.input_count; ++k) {
      depends = depends || data->tensors[n.inputs[k]].depends_on_x;
      data->tensors[n.inputs[k]].last_use = i;
    }
    data->tensors[i + 2] = TensorData{n.width, depends, i, n.shape};
  }
  data->tensors[data->output].last_use = node_count_;
  if (data->tensors[data->output].width != dim_)
    return fail(Status::error(StatusCode::kInvalidModel,
                              "graph output tensor %u has width %u, expected dim %u", data->output,
                              data->tensors[data->output].width, dim_));
  if (!(s = check_conditioning(data)).ok()) return fail(s);  // format/conditioning_check.cc
  if (!(s = check_interpolant(data)).ok()) return fail(s);
  if (!(s = check_base(data)).ok()) return fail(s);
  if (!(s = check_normalization(data)).ok()) return fail(s);
  if (!(s = check_tests(data)).ok()) return fail(s);
  if (!(s = check_solvers(*model_, dim_, data, solver_grids_)).ok()) return fail(s);
  for (uint32_t i = 0; i < meta_count; ++i) {
    const fb::KeyValue* kv = metadata->Get(i);
    if (!kv->key())
      return fail(Status::error(StatusCode::kInvalidModel, "metadata entry %u has no key", i));
    data->metadata_keys[i] = kv->key()->c_str();
    data->metadata_values[i] = kv->value() ? kv->value()->c_str() : "";
  }
  info.name = model_->name() ? model_->name()->c_str() : "";
  info.format_major = model_->format_major();
  info.format_minor = model_->format_minor();
  info.dim = dim_;
  info.node_count = node_count_;
  info.parameter_count = parameters_;
  info.weight_bytes =
      (parameters_ - f16_parameters_ - bf16_parameters_ - i8_parameters_ + scale_count_) *
          sizeof(float) +
      (f16_parameters_ + bf16_parameters_) * 2 + i8_parameters_;
  info.f16_parameter_count = f16_parameters_;
  info.expanded_bytes = expanded_capacity_ * sizeof(float);
  info.interpolant = data->interpolant.kind;
  info.fourier_terms = data->interpolant.terms;
  info.time_start = t0;
  info.time_end = t1;
  info.metadata_count = meta_count;
  info.solver_count = solver_count_;
  info.x_rank = x_shape_.rank;
  for (uint32_t k = 0; k < 3; ++k) info.x_shape[k] = k < x_shape_.rank ? x_shape_.dims[k] : 0;
  *out = data;
  return Status();
}

}  // namespace load

Status verify_model(const uint8_t* bytes, size_t size, Memory* memory, FindOpVerifier find,
                    ModelData** out) {
  return load::Loader(bytes, size, memory, find).run(out);
}

void free_model_data(ModelData* data) {
  if (!data) return;
  if (data->in_region) return;  // everything lives in the caller's memory
  void* owned = data->owned_bytes;
  aligned_free(data->packed_block);
  aligned_free(data);
  aligned_free(owned);
}

}  // namespace detail
}  // namespace siflow
