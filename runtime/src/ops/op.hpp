// SPDX-License-Identifier: Apache-2.0
// An op module: everything about one graph op in one place (docs/architecture.md, "Adding an
// op"): how a node is verified and how wide its output is, its reference forward and JVP, its
// VJP for training, its scratch and packed-weight needs, and which fast kernels may run it.
// The loader, the planner, the executor, Model::node and the training tape dispatch through
// op_module(); none of them switches over op kinds. Modules never allocate while running.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"
#include "format/node_check.hpp"
#include "siflow/siflow.hpp"

namespace siflow {
class RowPool;
namespace simd {
struct Kernels;
}
namespace xnn {
struct DenseLayer;
struct ConvLayer;
struct ConvShape;
}  // namespace xnn
}  // namespace siflow

namespace siflow::ops {

// Which kernels run a node (chosen at plan time). kSimdNhwc: a Conv2d on the simd kernels' NHWC
// implicit GEMM (ops/conv2d_nhwc.cc), where kSimd is their NCHW convolution.
// kSimdWino: a 3x3 stride-1 Conv2d by the simd kernels' Winograd F(2x2, 3x3) on NHWC
// (ops/conv2d_nhwc.cc).
enum class NodeKernel : uint8_t {
  kReference = 0,
  kSimd = 1,
  kXnnpack = 2,
  kSimdNhwc = 3,
  kSimdWino = 4
};
constexpr uint32_t kernel_bit(NodeKernel k) { return 1u << static_cast<unsigned>(k); }

// A plan's kernel choice, shared by every node of a run. Default-constructed: reference kernels
// on the caller's thread.
struct FastKernels {
  const NodeKernel* node = nullptr;      // [node_count]; nullptr: reference everywhere
  const bool* fused = nullptr;           // [node_count]: a FullyConnected node whose following
                                         // Unary node runs in its epilogue
  const int32_t* seed_column = nullptr;  // [tensors]: column where identity seeds enter the
                                         // tensor's tangent (exact divergence), or -1
  const simd::Kernels* simd = nullptr;
  xnn::DenseLayer* const* xnn = nullptr;  // [node_count]: the node's XNNPACK operator or nullptr
  xnn::ConvLayer* const* xnn_conv = nullptr;  // [node_count]: a Conv2d's XNNPACK layer or nullptr
  RowPool* pool = nullptr;
  // Data-parallel blocks (net/executor.hpp NetThread): the index of the thread running the node
  // on its own, with pool nullptr; a Conv2d on XNNPACK runs whole on that thread's operator part
  // (xnn_conv.hpp). UINT32_MAX: the layer splits over its parts on its pool.
  uint32_t part = UINT32_MAX;
  // [tensors]: each tensor's layout within a row (TensorLayout; plan/layout_choice.hpp), or
  // nullptr: every tensor NCHW.
  const uint8_t* layout = nullptr;
  // Reduced precision (PlanOptions::precision): each node's weights converted at plan time by its
  // module's `reduce` (nullptr: the node runs in f32), and for kBf16 and kFp16 the activation
  // buffer the simd kernels convert rows into (simd::reduced_rows_words per row, for the most rows
  // a call has).
  Precision precision = Precision::kFp32;
  const void* const* reduced = nullptr;  // [node_count]
  uint32_t* reduced_rows = nullptr;
};

// uint32 words of FastKernels::reduced_rows a bf16 Conv2d node on the simd kernels needs (its
// im2col rows, their bf16 pairs and the sums of one sample); 0 for other nodes.
size_t conv_bf16_words(const detail::ModelData& model, uint32_t node);
// Scratch floats a Conv2d node on XNNPACK needs for `samples` samples at once (its NHWC input and
// output, xnn::conv_scratch_floats); 0 for other nodes or a build without XNNPACK.
size_t conv_xnn_scratch_floats(const detail::ModelData& model, uint32_t node, size_t samples);
// A Conv2d node's geometry as kernels/xnnpack/xnn_conv.hpp takes it, and the node's run on
// XNNPACK (ops/conv2d_xnn.cc; builds with XNNPACK only).
xnn::ConvShape conv_xnn_shape(const detail::NodeData& node);
struct NodeRun;
void run_conv_xnn(const NodeRun& run);

// A Conv2d on the simd kernels' NHWC implicit GEMM (ops/conv2d_nhwc.cc): whether the node can
// run there (groups 1, simd::conv_nhwc_applies; builds with the simd kernels), where its packed
// weights for it start within NodeData::packed (floats), the scratch of a run of `samples`
// samples (its NHWC input and output, for the sides the plan left NCHW) and the run.
bool conv_nhwc_runs(const detail::NodeData& node);
uint64_t conv_nhwc_packed_offset(const detail::NodeData& node);
size_t conv_nhwc_scratch_floats(const detail::ModelData& model, uint32_t node, size_t samples);
void run_conv_nhwc(const NodeRun& run);
// The same for the Winograd kernel (kSimdWino, ops/conv2d_nhwc.cc): 3x3, stride 1, dilation 1,
// groups 1 (simd::conv_wino_applies); its weights (G g G^T) after the NHWC kernel's; its scratch
// the NHWC copies, then a workspace per part of the units, a part per thread of the pool that
// splits the node (`threads`, the plan's; 1 runs every unit on one workspace).
bool conv_wino_runs(const detail::NodeData& node);
uint64_t conv_wino_packed_offset(const detail::NodeData& node);
size_t conv_wino_scratch_floats(const detail::ModelData& model, uint32_t node, size_t samples,
                                uint32_t threads);
void run_conv_wino(const NodeRun& run);
// Conv2d on the simd NCHW kernel (kSimd, ops/conv2d_simd.cc) with `weight` (the packed f32
// weights, or fp16 / int8 ones decoded at plan time, transposed per group as simd::Conv takes
// them), values and tangents.
void run_conv_simd(const NodeRun& run, const float* weight);
// ConvTranspose2d on the same kernel (kSimd, ops/conv2d_simd.cc): the stride-1 Conv2d over its
// input spread out. Element f of the file's weights [C_in][C_out / g][kh][kw] goes to
// conv_transposed_simd_index(node, f) of that Conv2d's simd::Conv weights (flipped kernels,
// transposed per group): the layout of the weights packed at load and of fp16 or int8 weights
// decoded at plan time. The packed floats, the packing, the scratch of a run of `rows` rows with
// `directions` tangents, and the run (f32, fp16 or int8 weights; not bf16).
// Whether the node runs there (builds with the simd kernels; a spread-out plane near the layer's
// own size, else the reference loops).
bool conv_transposed_simd_runs(const detail::NodeData& node);
size_t conv_transposed_simd_index(const detail::NodeData& node, size_t f);
uint64_t conv_transposed_packed_floats(const detail::ModelData& model, uint32_t node);
void conv_transposed_pack(const detail::ModelData& model, detail::NodeData* node, float* dst);
size_t conv_transposed_scratch_floats(const detail::ModelData& model, uint32_t node, size_t rows,
                                      size_t directions);
void run_conv_transposed_simd(const NodeRun& run);

// How an image tensor [C, H, W] is laid out within each of its rows (rows stay row-major, so
// blocks and tangents are unaffected; a tensor's tangents have its value's layout). A tensor with
// C = 1 or H x W = 1 is the same memory either way.
enum class TensorLayout : uint8_t { kNchw = 0, kNhwc = 1 };
// What a node allows of its tensors' layouts (OpModule::layout_form), on the kernel the plan chose:
//  - kNchw: every tensor it reads or writes is NCHW;
//  - kShared: it runs on any one layout shared by its input and output image tensors (those with
//    C > 1 and H x W > 1; a [C, 1, 1] operand is the same in both);
//  - kEither: it reads and writes either layout, each tensor its own (a convolution on XNNPACK
//    or on the simd NHWC kernel, converting at its edges only what is not NHWC).
enum class LayoutForm : uint8_t { kNchw = 0, kShared = 1, kEither = 2 };
// The image [C, H, W] a tensor's rows hold, for the layout choice: its shape when that has rank
// 3; for a Concat of rank-3 inputs of one H x W > 1 (flat, the channels side by side),
// [sum of C, H, W]; rank 0 otherwise (ops/concat.cc).
detail::Shape image_shape_of(const detail::ModelData& model, uint32_t tensor);
// Conv2d's and ConvTranspose2d's OpModule::layout_form (conv2d_xnn.cc): either layout on
// XNNPACK, kSimdNhwc or kSimdWino, else NCHW.
LayoutForm conv_layout_form(const detail::ModelData& model, uint32_t node, NodeKernel kernel);

// One node of one network evaluation: the arena's tensors and the plan's kernels.
struct NodeRun {
  const detail::ModelData* model;
  uint32_t node;           // index; the node writes tensor node + 2
  float* const* values;    // [tensors]
  float* const* tangents;  // [tensors]; nullptr entries for tensors without tangents
  size_t rows;
  size_t directions;    // tangent directions to propagate (0: forward only)
  bool identity_seeds;  // the seeds are exact divergence's identity directions
  const FastKernels* kernels;
  float* scratch;  // scratch_floats() floats for this node, or nullptr
  // The rows' class labels [rows] (as floats) and condition vectors [rows, cond width] that the
  // LabelInput and CondInput nodes output; nullptr for a model without them.
  const float* labels = nullptr;
  const float* cond = nullptr;
  // Exact divergence reads only the diagonal of the network output's tangents: entry
  // diagonal_first + p of direction p (identity seeds e_(diagonal_first + p)). The node that writes
  // the output (output_diagonal()) may compute just those entries and zero the rest. SIZE_MAX:
  // every entry is read.
  size_t diagonal_first = SIZE_MAX;
};

// Whether run's node may write only the diagonal of its tangents (NodeRun::diagonal_first): the
// caller asked for the diagonal, the node's output is the network's output (directly or through
// aliasing nodes such as Reshape), and no other node reads it.
bool output_diagonal(const NodeRun& run);

// One node's operands in T, for the reference forward and the VJP: the graph's tensors, the
// node's parameters (the model's floats, or a trainer's T values), `rows` rows.
template <typename T>
struct Operands {
  const detail::NodeData* node;
  const uint32_t* widths;  // [tensors]
  const T* const* values;  // [tensors]
  T* out;                  // the node's output [rows, node->width]
  const T* weight;         // FullyConnected [width][in]
  const T* bias;           // FullyConnected [width], nullable
  const T* gamma;          // LayerNorm [width], nullable
  const T* beta;
  size_t rows;
};

// Reverse mode for one node: dy of its output; gradients of its inputs are written through the
// trainer's target/commit pair (which adds a second contribution to a tensor), parameter
// gradients into d_* (FullyConnected writes them, LayerNorm adds into them).
template <typename T>
struct Gradients {
  const T* dy;
  void* tape;
  bool (*needs)(void* tape, uint32_t tensor);
  T* (*target)(void* tape, uint32_t tensor, size_t count);
  void (*commit)(void* tape, uint32_t tensor, size_t count);
  T* d_weight;
  T* d_bias;
  T* d_gamma;
  T* d_beta;
};

struct OpModule {
  const char* name;  // as Model::node and `siflow info` print it (Unary adds ":<kind>")
  detail::OpKind kind;
  // Checks a node whose inputs are ids below its own (the loader proved it) and fills `out`:
  // op fields, parameters, output width. Errors are kInvalidModel naming check.where().
  Status (*verify)(NodeCheck& check, const fb::Node& node, detail::NodeData* out);
  uint32_t kernels;  // kernel_bit()s of the kernels that may run it (reference always)
  // Scratch floats a run of this node needs (shared by all nodes: the plan keeps the maximum).
  size_t (*scratch_floats)(const detail::ModelData& model, uint32_t node, size_t rows,
                           size_t directions);
  // Floats of weights packed for the simd kernels at load (64-bit: plan/packing.cc refuses a total
  // beyond the address space), and the packing; 0 / no-op when the op has none.
  uint64_t (*packed_floats)(const detail::ModelData& model, uint32_t node);
  void (*pack)(const detail::ModelData& model, detail::NodeData* node, float* dst);
  // Forward and, with run.directions, the JVP, on the node's kernel (run.kernels->node).
  void (*run)(const NodeRun& run);
  // The reference forward and VJP for training: float (the runtime's arithmetic) and double
  // (gradient checks).
  void (*forward_f32)(const Operands<float>& op);
  void (*forward_f64)(const Operands<double>& op);
  void (*vjp_f32)(const Operands<float>& op, const Gradients<float>& g);
  void (*vjp_f64)(const Operands<double>& op, const Gradients<double>& g);
  // What Model::node and `siflow info` call a node when the name alone is not enough
  // ("unary:silu"); nullptr: the name.
  const char* (*label)(const detail::NodeData& node) = nullptr;
  // Bytes of the node's weights in `precision` for `kernel` (0: the op has none to convert) and
  // the conversion, at plan creation (plan/reduced_weights.hpp); `dst` is 64-byte aligned.
  size_t (*reduced_bytes)(const detail::ModelData& model, uint32_t node, Precision precision,
                          NodeKernel kernel) = nullptr;
  void (*reduce)(const detail::ModelData& model, uint32_t node, Precision precision,
                 NodeKernel kernel, void* dst) = nullptr;
  // The output is the input's memory read with another shape (Reshape): the plan gives it no
  // buffer of its own, keeps the input's buffer alive while the output is read, and the executor
  // points the output's value and tangent at the input's (bind_aliases); run() then copies
  // nothing.
  bool aliases_input = false;
  // The smaller of a converted node's reduction length and its outputs per position (a conv's
  // input channels per group times its kernel taps, and its output channels per group), which
  // the plan's narrow-layer rule reads; nullptr: the input and output widths (dense layers).
  uint32_t (*reduced_extent)(const detail::ModelData& model, uint32_t node) = nullptr;
  // Whether this node's parameters let `kernel`, one of `kernels`, run it (Add/Mul/Div: only
  // the broadcast forms the simd kernels have); the plan puts a node elsewhere when not.
  // nullptr: every kernel in `kernels` runs every node of the op.
  bool (*runs_on)(const detail::NodeData& node, NodeKernel kernel) = nullptr;
  // The layouts the node runs on with `kernel` (LayoutForm); nullptr: NCHW only.
  LayoutForm (*layout_form)(const detail::ModelData& model, uint32_t node,
                            NodeKernel kernel) = nullptr;
  // Floating-point operations of the node's forward pass per row (Model::node_flops, the
  // profile's GFLOP/s); nullptr: not counted.
  uint64_t (*flops)(const detail::ModelData& model, uint32_t node) = nullptr;
};

// The tensor whose buffer `tensor` reads: itself, or for the output of an aliasing op (Reshape,
// OpModule::aliases_input) the first tensor up its chain of inputs that has its own buffer.
uint32_t alias_root(const detail::ModelData& model, uint32_t tensor);

// The module of a loaded node's kind.
const OpModule& op_module(detail::OpKind kind);
// The module reading a file's op type, or nullptr for a type this runtime does not know.
const OpModule* op_module_for(fb::OpType type);
// The loader's view of the same table (format/node_check.hpp).
bool find_op_verifier(fb::OpType type, OpVerifier* out);

// Whether a run's tensor is NHWC within its rows (FastKernels::layout).
inline bool is_nhwc(const NodeRun& r, uint32_t tensor) {
  return r.kernels && r.kernels->layout &&
         r.kernels->layout[tensor] == static_cast<uint8_t>(TensorLayout::kNhwc);
}

// The kernel a plan chose for node i of a run.
inline NodeKernel kernel_of(const NodeRun& r) {
  return r.kernels && r.kernels->node ? r.kernels->node[r.node] : NodeKernel::kReference;
}

}  // namespace siflow::ops
