// SPDX-License-Identifier: Apache-2.0
// siflow C++ API: load a verified model, plan a fixed arena, then sample, decode, encode,
// compute log-likelihoods and velocities without touching the heap. No exceptions: every call
// returns a Status whose message names the cause.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace siflow {

constexpr int kVersionMajor = 0;
constexpr int kVersionMinor = 1;
constexpr int kVersionPatch = 0;
// The model format this runtime reads: files of the same major version, any minor.
constexpr uint16_t kFormatMajor = 1;
// 1.1: the Exp op; 1.2: stored solvers; 1.3: I8 and BF16 weights; 1.4: per-sample shapes and the
// image and conditioning ops.
constexpr uint16_t kFormatMinor = 4;

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // a caller's argument is wrong (dims, batch 0, NaN input, options)
  kInvalidModel = 2,     // the model bytes fail verification
  kUnsupported = 3,  // valid request this runtime or model cannot serve (e.g. SDE, uniform base)
  kArenaTooSmall = 4,
  kOutOfMemory = 5,
  kNumericalError = 6,  // the integration produced a non-finite state
  kIoError = 7,
  kCancelled = 8,  // a progress callback asked to stop
};

const char* status_code_name(StatusCode code);

class Status {
 public:
  Status() = default;
  static Status error(StatusCode code, const char* format, ...)
      __attribute__((format(printf, 2, 3)));
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const char* message() const { return message_; }
  // Prefixes the message with context ("layer 3: ...").
  Status& prefix(const char* format, ...) __attribute__((format(printf, 2, 3)));

 private:
  StatusCode code_ = StatusCode::kOk;
  char message_[256] = {};
};

// Documented limits, checked before anything is allocated.
struct Limits {
  static constexpr uint32_t kMaxDim = 12288;          // width of x: 3 x 64 x 64 images
  static constexpr uint32_t kMaxWidth = 131072;       // width of any tensor (2^17)
  static constexpr uint32_t kMaxNodes = 1024;         // graph nodes
  static constexpr uint32_t kMaxNodeInputs = 64;      // inputs of one node (concat)
  static constexpr uint32_t kMaxFourierTerms = 64;    // learned interpolant coefficients
  static constexpr uint32_t kMaxMetadata = 256;       // metadata entries
  static constexpr uint32_t kMaxTestVectors = 65536;  // embedded test points
  static constexpr uint64_t kMaxParameters = 1ull << 28;
  static constexpr uint64_t kMaxFileBytes = (1ull << 31) - 2;  // FlatBuffers' 32-bit offsets
  static constexpr uint64_t kMaxBatch = 1ull << 20;            // plan max_batch
  static constexpr uint32_t kMaxSteps = 1u << 20;              // integrator steps
  static constexpr uint32_t kMaxProbes = 1024;                 // Hutchinson probes
  // Network evaluations of one row that a model's test vectors ask validate_embedded for:
  // velocity points + 4 (RK4 stages) x trajectories x trajectory steps. The loader refuses more,
  // so validation costs at most this many evaluations of the network (time linear in its size).
  static constexpr uint64_t kMaxValidationEvaluations = 1ull << 22;
  static constexpr uint32_t kMaxSolvers = 64;     // stored solvers in a model (format 1.2)
  static constexpr uint32_t kMaxSolverName = 64;  // bytes of a stored solver's name
  // Largest |c| of a multistep solver's per-step coefficients (docs/math.md, "Per-step
  // coefficients"); the Adams-Bashforth weights the step-ratio rule allows stay below 40.
  static constexpr double kMaxSolverCoefficient = 64.0;
};

enum class InterpolantKind : uint8_t { kLinear = 0, kTrig = 1, kLearnedFourier = 2 };
enum class BaseKind : uint8_t { kNormal = 0, kUniform = 1 };
enum class UnaryKind : uint8_t {
  kIdentity = 0,
  kRelu = 1,
  kLeakyRelu = 2,
  kElu = 3,
  kSelu = 4,
  kTanh = 5,
  kSigmoid = 6,
  kSilu = 7,
  kGeluErf = 8,
  kGeluTanh = 9,
  kSoftplus = 10,
  kSin = 11,
  kCos = 12,
  // Format 1.4: elementwise maths (Log, Sqrt, Reciprocal give -inf, inf or NaN at 0 and below,
  // which a run reports as a numerical error), Abs, and the HardSwish and Mish activations.
  kLog = 13,
  kSqrt = 14,
  kReciprocal = 15,
  kAbs = 16,
  kHardSwish = 17,
  kMish = 18,
};

// Reduce nodes (format 1.4): the mean, sum or L2 norm along a per-sample axis.
enum class ReduceKind : uint8_t { kMean = 0, kSum = 1, kL2 = 2 };

// Names of the enums, spelled as the CLI and the converter spell them ("?" or "unknown" for a
// value outside the enum); each parse function accepts exactly those names. All of them live in
// one table per enum (runtime/src/support/names.cc).
// "identity", "relu", "leaky_relu", ..., "cos", "log", "sqrt", "reciprocal", "abs", "hard_swish",
// "mish".
const char* unary_kind_name(UnaryKind kind);
bool parse_unary_kind(const char* text, UnaryKind* out);
// "linear", "trig", "learned" (the learned Fourier family).
const char* interpolant_kind_name(InterpolantKind kind);
bool parse_interpolant_kind(const char* text, InterpolantKind* out);
// "normal", "uniform".
const char* base_kind_name(BaseKind kind);

struct LoadOptions {
  uint32_t struct_size = sizeof(LoadOptions);
  // An aligned span is used in place (F32 weights are read from it; F16 weights are expanded
  // and dense weights also packed, in the model's own memory) and must outlive the model. A span
  // not 64-byte aligned is copied once into aligned memory; false refuses it instead.
  bool allow_copy = true;
  // Caller memory for everything the loaded model holds (tables, packed weights, the copy of
  // unaligned bytes, the Model object), so loading touches no heap; it must outlive the model.
  // At least Model::memory_bytes() (+ 63 if not 64-byte aligned). nullptr: the heap.
  void* memory = nullptr;
  size_t memory_size = 0;
};

struct ModelInfo {
  const char* name = "";
  uint16_t format_major = 0, format_minor = 0;
  uint32_t dim = 0;
  uint32_t node_count = 0;
  uint64_t parameter_count = 0;
  size_t weight_bytes = 0;           // bytes the weights take in the file (4 per f32, 2 per f16)
  uint64_t f16_parameter_count = 0;  // parameters stored as fp16
  size_t expanded_bytes = 0;  // float copies of fp16 weights made at load (part of held_bytes)
  size_t held_bytes = 0;      // heap the loaded model holds (aligned copy, descriptors, expansion,
                              // packed weights)
  size_t packed_bytes = 0;    // dense weights repacked at load for the simd kernels (in held_bytes)
  InterpolantKind interpolant = InterpolantKind::kTrig;
  uint32_t fourier_terms = 0;
  BaseKind base = BaseKind::kNormal;
  bool normalized = false;
  bool score_available = false;  // a Gaussian base and a*b_dot - a_dot*b != 0 on [0, 1)
  double time_start = 0.0, time_end = 1.0;
  uint32_t test_vector_count = 0;
  uint32_t test_trajectory_count = 0;
  uint32_t metadata_count = 0;
  uint32_t solver_count = 0;  // stored solvers (format 1.2), Model::solver()
  // Per-sample shape of x and v (format 1.4): [C, H, W] for an image model; [dim] otherwise.
  uint32_t x_rank = 1;
  uint32_t x_shape[3] = {0, 0, 0};
  // Conditioning (format 1.4). takes_labels: the model reads a class label per row (0 ..
  // label_classes - 1); null_label is its unconditional label, -1 when it has none (then
  // classifier-free guidance is refused). cond_width > 0: the model reads a condition vector of
  // that width per row; has_null_cond: the file stores the null vector guidance uses.
  bool takes_labels = false;
  uint32_t label_classes = 0;
  int32_t null_label = -1;
  uint32_t cond_width = 0;
  bool has_null_cond = false;
};

struct SolverInfo;  // below, after Method

namespace detail {
struct ModelData;
struct PlanData;
struct Construct;
}  // namespace detail

// An immutable, verified model. Safe to share between threads; each thread uses its own Plan.
class Model {
 public:
  static Status load(const void* bytes, size_t size, const LoadOptions& options,
                     std::unique_ptr<Model>* out);
  static Status load_file(const char* path, const LoadOptions& options,
                          std::unique_ptr<Model>* out);
  // Bytes LoadOptions::memory must hold to load these bytes with these options (from a 64-byte
  // aligned start). Measuring loads once with short-lived heap blocks: call it on the host or at
  // start-up (siflow info prints it).
  static Status memory_bytes(const void* bytes, size_t size, const LoadOptions& options,
                             size_t* out);
  ~Model();
  // Frees the model's own heap block, if any (nothing when it lives in a caller's memory).
  static void operator delete(void* p) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& info() const;
  // Metadata entry i as key/value; returns false past the end.
  bool metadata(uint32_t i, const char** key, const char** value) const;
  // Graph node i: op name ("fully_connected", "unary:silu", "concat", "add", "mul",
  // "layer_norm"), input width (of its first input) and output width; false past the end.
  bool node(uint32_t i, const char** op, uint32_t* in_width, uint32_t* width) const;
  // Stored solver i (valid while the model lives); false past the end.
  bool solver(uint32_t i, SolverInfo* out) const;
  // Per-sample shape of graph node i's output: its rank (1 to 3) with dims[0 .. rank); 0 past
  // the end.
  uint32_t node_shape(uint32_t i, uint32_t dims[3]) const;
  // Floating-point operations of graph node i's forward pass for one row (multiply and add
  // counted apart) for the ops whose count is known: conv2d, conv_transpose2d, fully_connected,
  // matmul; 0 for the others and past the end. The profile's GFLOP/s (NodeProfile).
  uint64_t node_flops(uint32_t i) const;
  const detail::ModelData& data() const { return *data_; }

 private:
  friend struct detail::Construct;
  explicit Model(detail::ModelData* data) : data_(data) {}
  detail::ModelData* data_;
};

// One-step Runge-Kutta methods (euler .. rk4-38), Adams-Bashforth multistep methods of order
// 2..4 on any grid (ab2 .. ab4; one evaluation per step after a one-step bootstrap), and the
// adaptive Dormand-Prince 5(4) pair (dopri5; OdeOptions::rtol, atol, max_steps).
enum class Method : uint8_t {
  kEuler = 0,
  kHeun = 1,
  kMidpoint = 2,
  kRK4 = 3,
  kRK4_38 = 4,
  kAB2 = 5,
  kAB3 = 6,
  kAB4 = 7,
  kDopri5 = 8,
};
// Families of time grids of N steps, s = i/N mapped onto the run's time range (docs/math.md,
// "Time grids"): uniform; shift (param A): A s / (1 + (A - 1) s); power (param R):
// 1 - (1 - s)^R, small steps near the data end; cosine: (1 - cos pi s) / 2.
enum class GridKind : uint8_t { kUniform = 0, kShift = 1, kPower = 2, kCosine = 3 };

// A solver stored in the model (format 1.2): a fixed-grid method on a time grid tuned for this
// model (`siflow tune-solver`), selected by name with OdeOptions::solver.
struct SolverInfo {
  const char* name = "";
  Method method = Method::kRK4;
  uint32_t steps = 0;
  const double* grid = nullptr;  // steps + 1 absolute times, time_start to time_end
  uint32_t nfe = 0;              // network evaluations per sample
  double sample_error = 0.0;     // measured on held-out draws when it was tuned
  int32_t label = -1;            // the class label it was tuned for (-1: unconditional)
  double guidance = 1.0;
  uint32_t test_count = 0;  // test points validate_embedded re-runs
  float test_tolerance = 0.0f;
  // Per-step coefficients of ab2..ab4 (solver_coefficient_count(method, steps) values), or none.
  const double* coefficients = nullptr;
  uint32_t coefficient_count = 0;
};
enum class DivergenceMode : uint8_t { kNone = 0, kExact = 1, kHutchinson = 2 };
enum class ProbeKind : uint8_t { kRademacher = 0, kGaussian = 1 };
enum class EpsilonSchedule : uint8_t { kConstant = 0, kProportionalToA = 1 };
enum class SdeMethod : uint8_t { kEulerMaruyama = 0, kHeun = 1 };

const char* method_name(Method method);
// Parses "euler", "heun", "midpoint", "rk4", "rk4-38", "ab2", "ab3", "ab4", "dopri5"; false for
// anything else.
bool parse_method(const char* text, Method* out);
// True for ab2..ab4 (they keep earlier velocities; the SDE refuses them).
inline bool is_multistep(Method m) { return m >= Method::kAB2 && m <= Method::kAB4; }
// Network evaluations per sample of a fixed-grid method over `steps` steps: stages x steps for
// the Runge-Kutta methods; (k - 1) s + (steps - k + 1) for ab<k> with its s-stage bootstrap
// (Euler, Heun, RK4), all bootstrap when steps < k - 1. 0 for dopri5 (adaptive).
uint64_t fixed_grid_evaluations(Method method, uint64_t steps);
// Per-step coefficients of a learned multistep combination (docs/math.md, "Per-step
// coefficients"): ab<k> on `steps` steps takes k for each step from step k - 1 on,
// (steps - k + 1) k in all (0 when steps < k); the other methods take none.
uint64_t solver_coefficient_count(Method method, uint64_t steps);
// Checks `count` coefficients for `method` on `steps` steps: the count exactly, every value
// finite and within +-Limits::kMaxSolverCoefficient, each step's k values summing to 1 within
// 1e-9. The error names the step and value.
Status check_solver_coefficients(Method method, uint64_t steps, const double* coefficients,
                                 size_t count);
// The coefficients with which ab<k> on `grid` (grid_size strictly increasing points) takes
// exactly its Adams-Bashforth steps: each step's weights over its length, zero past a step's
// order where the step-ratio rule drops it. `out` holds solver_coefficient_count values.
Status adams_bashforth_coefficients(Method method, const double* grid, size_t grid_size,
                                    double* out);
// "uniform", "shift", "power", "cosine".
const char* grid_kind_name(GridKind kind);
bool parse_grid_kind(const char* text, GridKind* out);
// "none", "exact", "hutchinson".
const char* divergence_mode_name(DivergenceMode mode);
bool parse_divergence_mode(const char* text, DivergenceMode* out);
// "rademacher", "gaussian".
const char* probe_kind_name(ProbeKind kind);
bool parse_probe_kind(const char* text, ProbeKind* out);
// "em" (Euler-Maruyama), "heun".
const char* sde_method_name(SdeMethod method);
bool parse_sde_method(const char* text, SdeMethod* out);
// "constant", "a" (proportional to a(t)).
const char* epsilon_schedule_name(EpsilonSchedule schedule);
bool parse_epsilon_schedule(const char* text, EpsilonSchedule* out);

// Called after every integrator step; return false to cancel (the call returns kCancelled).
// done/total count row-steps over the whole request.
typedef bool (*ProgressFn)(void* user, uint64_t done, uint64_t total);

// The kernels a plan runs its nodes on (docs/architecture.md).
enum class Backend : uint8_t {
  kAuto = 0,       // the fastest this build and CPU offer: simd (else reference), or per layer
                   // what PlanOptions::tune measured fastest
  kReference = 1,  // portable scalar kernels: bit-identical results on every platform
  kSimd = 2,       // the project's vector kernels (AVX2+FMA or SSE2 on x86-64, NEON on ARM)
  kXnnpack = 3,    // dense layers through XNNPACK (builds that have it), activations on simd
};
const char* backend_name(Backend backend);
// Parses "auto", "reference", "simd", "xnnpack"; false for anything else.
bool parse_backend(const char* text, Backend* out);

// The number format of the weight layers' arithmetic (docs/math.md, "Reduced precision"). kFp32
// is the runtime's plain float arithmetic. The others apply to the dense layers and convolutions
// between the first and the last (those two, narrow layers, activations, the integrator and the
// divergence bookkeeping stay f32):
//  - kBf16: weights and activations rounded to bfloat16, products accumulated in f32 with the
//    semantics of AVX-512 BF16's vdpbf16ps, which CPUs without it emulate bit for bit;
//  - kFp16: weights and activations rounded to IEEE half, products accumulated in f32 by FMA
//    (AArch64's FMLAL where the CPU has FEAT_FHM; the same bits by conversion elsewhere);
//  - kInt8: weights quantized to int8 per output channel (scale max|w|/127), dequantized as
//    scale * q in f32; activations f32, so JVPs stay derivatives of the evaluated function.
// Weights are converted at plan creation, into the plan's memory.
enum class Precision : uint8_t { kFp32 = 0, kBf16 = 1, kFp16 = 2, kInt8 = 3 };
const char* precision_name(Precision precision);
// Parses "fp32", "bf16", "fp16", "int8"; false for anything else.
bool parse_precision(const char* text, Precision* out);

struct PlanOptions {
  uint32_t struct_size = sizeof(PlanOptions);
  size_t max_batch = 256;  // rows per chunk; larger requests stream through the arena
  // Tangent directions the arena holds: kExact plans max(dim, max_probes) (serving exact and
  // Hutchinson with up to that many probes), kHutchinson max_probes (exact too when
  // max_probes >= dim); kNone plans no tangents (then log-likelihoods are refused).
  DivergenceMode divergence = DivergenceMode::kExact;
  uint32_t max_probes = 1;
  // Threads a run uses: the caller's plus threads - 1 workers the plan starts (and stops when
  // destroyed). Results are bit-identical for every thread count. A run of at least two
  // network blocks (block_rows) gives each thread whole blocks on its own copy of the block's
  // buffers (f32 plans; the arena holds one copy per thread); a run of one block splits every
  // layer over the threads (with tune, only if that times faster than the caller's thread alone
  // for a velocity run: Plan::velocity_threads). Builds without a thread pool (SIFLOW_MINIMAL,
  // bare metal) accept only 1.
  uint32_t threads = 1;
  Backend backend = Backend::kAuto;
  // With kAuto and a build that has XNNPACK: time each dense layer and each Conv2d (the whole
  // layer, NCHW<->NHWC conversions included) on both simd and XNNPACK at plan creation (a few
  // runs at the rows of one network block, see block_rows; a ConvTranspose2d on simd and
  // XNNPACK; a Conv2d also on the simd NHWC implicit GEMM and, for 3x3 stride 1, the
  // Winograd kernel, the fastest of all) and keep the faster (CLI --tune-kernels on). The choice
  // then depends on the machine's timing, so results may differ between plans by rounding; off,
  // the choice is the fixed rule (simd). With threads > 1 and a plan that splits each layer over
  // the threads (no data-parallel blocks), tuning (backend auto, in any build) also times a
  // velocity run of one block that way against one with every layer on the caller's thread
  // (timing its layers on one thread) and splits velocity and sampling runs only if that saves a
  // tenth (same bits either way; Plan::velocity_threads): a layer too small to gain from a split
  // still pays the hand-off and the other core's caches.
  bool tune = false;
  Precision precision = Precision::kFp32;  // the weight layers' number format (see Precision)
  // Exact divergence at large d: the tangent directions (Jacobian columns) propagated per
  // network pass. The arena holds one block of them (counted in arena_bytes) and each block
  // re-runs the forward pass, so a block of k costs about d/k forward passes more; results are
  // bit-identical for every block size. 0: automatic, all d at once unless their tangents would
  // take more than kAutoTangentBytes, else the most that fit (at least 1). For large d,
  // Hutchinson with K probes costs (1 + K) passes instead of about 2d.
  uint32_t tangent_block = 0;
  static constexpr uint64_t kAutoTangentBytes = 256ull << 20;
  // Classifier-free guidance weight w of every call: v_w = v(null) + w (v(y) - v(null)). 1 (the
  // default) runs the conditional model, 0 the unconditional one (the null label / vector);
  // any other w runs both as one batched pass of 2 max_batch rows (and twice the tangents), which
  // the arena holds (arena_bytes counts it). The weight is the plan's because it sizes the arena.
  // Needs a conditional model with a null label (or null vector); must be finite.
  double guidance = 1.0;
  // Rows the network runs over at a time: every node over rows [r0, r0 + block_rows), then the
  // next block, so one block's activations stay in the core's cache instead of each layer
  // streaming the whole batch. 0 (default): the plan's choice from its per-row working set
  // against a cache budget (Plan::block_rows); at least max_batch (or 2 max_batch when guided):
  // no blocking. Results are bit-identical for every value without tune (with tune the layers
  // are timed at the block's rows, so another value may choose other kernels). At most
  // Limits::kMaxBatch.
  size_t block_rows = 0;
};

struct OdeOptions {
  uint32_t struct_size = sizeof(OdeOptions);
  Method method = Method::kRK4;
  uint32_t steps = 50;  // uniform grid of `steps` steps, unless `grid` is given
  // Explicit time grid, strictly increasing from time_start to time_end (sample/decode/encode)
  // or to the log-likelihood time s (log_prob). Run backwards for encode and log_prob.
  const double* grid = nullptr;
  size_t grid_size = 0;
  ProgressFn progress = nullptr;
  void* progress_user = nullptr;
  // Fields below were added after the first release; a struct_size that does not cover one
  // leaves it at its default.
  // The family of the `steps`-step grid when `grid` is null (uniform by default); grid_param is
  // A for kShift and R for kPower (> 0), unused otherwise.
  GridKind grid_kind = GridKind::kUniform;
  double grid_param = 0.0;
  // kDopri5: relative and absolute tolerances of the error per step, and the most steps
  // (accepted or rejected) one chunk may take before the run fails naming max_steps.
  double rtol = 1e-6;
  double atol = 1e-6;
  uint32_t max_steps = 100000;
  // The name of a solver stored in the model (Model::solver): its method and time grid replace
  // method, steps and grid_kind (grid must then be null). Runs over the model's whole time range
  // (not log_prob at an earlier time).
  const char* solver = nullptr;
  // Per-step coefficients of ab2..ab4 on the run's grid (solver_coefficient_count values;
  // docs/math.md, "Per-step coefficients"); null for the Adams-Bashforth weights. A stored
  // solver brings its own (these must then be null). Used on forward runs (sample, decode);
  // encode and log_prob walk the grid backwards with the Adams-Bashforth weights.
  const double* coefficients = nullptr;
  size_t coefficient_count = 0;
};

struct DivergenceOptions {
  DivergenceMode mode = DivergenceMode::kExact;
  uint32_t probes = 1;  // Hutchinson probes per sample, held fixed along a trajectory
  ProbeKind probe = ProbeKind::kRademacher;
  uint64_t seed = 0;  // probe seed (stream 1)
};

// SDE sampling dX = [v + eps s] dt + sqrt(2 eps) dW for a Gaussian base. The guard that keeps
// eps*s bounded at t -> 1 is explicit: schedule kProportionalToA (eps = epsilon a(t)), or
// stop_delta > 0 (SDE on [time_start, 1 - delta], then ODE steps of OdeOptions::method).
struct SdeOptions {
  double epsilon = 0.0;  // 0: plain ODE sampling
  EpsilonSchedule schedule = EpsilonSchedule::kProportionalToA;
  double stop_delta = 0.0;
  SdeMethod method = SdeMethod::kHeun;
};

struct SampleOptions {
  uint32_t struct_size = sizeof(SampleOptions);
  uint64_t seed = 0;
  size_t first_index = 0;  // global index of the first sample (for reproducible sharding)
  OdeOptions ode;
  SdeOptions sde;
  DivergenceOptions divergence;  // used when log-likelihoods are requested
  // Base draws scaled by T about the base mean (Gaussian bases only): x0 = mean + std * T * z.
  // Must be positive and finite; 1 samples the model itself.
  double temperature = 1.0;
};

struct LogProbOptions {
  uint32_t struct_size = sizeof(LogProbOptions);
  OdeOptions ode;
  DivergenceOptions divergence;
  double time = -1.0;      // s: log rho_s; negative means time_end
  size_t first_index = 0;  // global index of the first row (Hutchinson probe counters)
};

// What conditions the rows of one call of a conditional model (ModelInfo::takes_labels,
// cond_width). labels: [n] class labels, one per row; or, when labels is null, `label` for every
// row (-1: none). cond: [n, cond_width] condition vectors. A model that takes labels needs them
// (unless the plan's guidance is 0, which runs the null label), a model without a label input
// refuses them; likewise for conditions. Labels outside [0, classes) and non-finite conditions
// are refused naming the row.
struct Conditioning {
  uint32_t struct_size = sizeof(Conditioning);
  const int32_t* labels = nullptr;
  int32_t label = -1;
  const float* cond = nullptr;
};

// Bytes a plan needs for `model` and `options` (its arena and its tables), known before running.
// Measuring takes a few short-lived heap blocks; call it on the host or at start-up (siflow info
// prints it).
Status arena_bytes(const Model& model, const PlanOptions& options, size_t* bytes);

// One graph node's share of a plan's runs while profiling (Plan::set_profile): the runs add to
// it, the caller zeroes it.
struct NodeProfile {
  uint64_t calls = 0;        // runs of the node: network evaluations times blocks per evaluation
  uint64_t nanoseconds = 0;  // wall-clock (steady clock) time of those runs, summed
  // Rows those runs computed, each counted 1 + its tangent directions times: with
  // Model::node_flops, rows * flops is the work of a forward-only run (and the forward-equivalent
  // work of a JVP run).
  uint64_t rows = 0;
};

// A planned arena for one model and max batch. Not thread-safe: one Plan per thread.
// After create(), sample/decode/encode/log_prob/velocity allocate nothing and make no
// system call (but the worker pool's wake-ups and sleeps with threads > 1). All points are
// row-major [n][dim] in data space unless stated otherwise.
class Plan {
 public:
  // arena == nullptr: the plan allocates one block for itself, its tables and its arena;
  // otherwise all of it lives in the caller's memory (any alignment; at least
  // siflow::arena_bytes() + 63 bytes if unaligned), which must outlive the plan: creating it
  // then touches no heap (unless threads > 1, or XNNPACK operators are needed).
  static Status create(const Model& model, const PlanOptions& options, void* arena,
                       size_t arena_size, std::unique_ptr<Plan>* out);
  ~Plan();
  // Frees the block create() allocated, if any (nothing for a caller's memory).
  static void operator delete(void* p) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  size_t arena_bytes() const;  // what it occupies: siflow::arena_bytes for its options
  // Network evaluations per trajectory of the last sample/decode/encode/log_prob call (NFE,
  // bootstrap stages included; for dopri5, whose steps differ between chunks, the most any
  // chunk used); 0 before the first run; after a failed run, those made before it stopped.
  uint64_t evaluations() const;
  const Model& model() const;
  uint32_t threads() const;
  // Threads a velocity or sampling run without log-likelihoods uses: threads(), or 1 when
  // tuning found that this plan's one-block velocity runs are faster with every layer on the
  // caller's thread than with each layer split over the workers (PlanOptions::tune). Runs with
  // log-likelihoods use threads().
  uint32_t velocity_threads() const;
  // Rows per network block (PlanOptions::block_rows, or the plan's choice) for a run that
  // propagates `directions` tangent directions (0: velocity and sampling); a run of no more rows
  // than this is not split.
  size_t block_rows(size_t directions = 0) const;
  // The kernel that runs graph node `node`: "reference", "simd/avx2", "simd/avx2+silu" (a dense
  // layer with the following activation fused into it), "fused" (that activation), "xnnpack";
  // "" past the last node.
  const char* node_kernel(uint32_t node) const;
  // Per-node profile of every following run: `nodes` [count >= model().info().node_count]
  // receives each node's calls, time and rows (added to what it holds), until
  // set_profile(nullptr, 0) turns it off (the default: nothing is timed). The table is the
  // caller's and must outlive the runs that fill it; profiling takes no heap and adds one clock
  // read per node run. kInvalidArgument when count is too small.
  Status set_profile(NodeProfile* nodes, size_t count);

  // n samples from the base pushed to the target. logp (nullable, [n]) receives
  // log p(x) of each sample (ODE only; with an SDE it is refused).
  Status sample(size_t n, const SampleOptions& options, float* x, double* logp);
  // Maps base points x0 (flow coordinates of the base) to data-space x1; logp as in sample.
  // first_index: global index of the first row, for Hutchinson probe counters (sharding).
  Status decode(size_t n, const float* x0, const OdeOptions& options,
                const DivergenceOptions& divergence, float* x1, double* logp,
                size_t first_index = 0);
  // Maps data-space x1 to base points x0 (reverse ODE).
  Status encode(size_t n, const float* x1, const OdeOptions& options, float* x0);
  // log p(x) of data-space rows (at time s: log rho_s in flow coordinates plus the
  // normalisation's Jacobian).
  Status log_prob(size_t n, const float* x, const LogProbOptions& options, double* logp);
  // The network's v(t_i, y_i) in flow (normalised) coordinates; t is [n].
  Status velocity(size_t n, const float* t, const float* y, float* v);

  // The same calls for a conditional model: `conditioning` gives each row's label and/or
  // condition (see Conditioning); the plan's guidance weight applies. The calls above are these
  // with an empty Conditioning (refused by a model that needs labels or conditions).
  Status sample(size_t n, const SampleOptions& options, const Conditioning& conditioning, float* x,
                double* logp);
  Status decode(size_t n, const float* x0, const OdeOptions& options,
                const DivergenceOptions& divergence, const Conditioning& conditioning, float* x1,
                double* logp, size_t first_index = 0);
  Status encode(size_t n, const float* x1, const OdeOptions& options,
                const Conditioning& conditioning, float* x0);
  Status log_prob(size_t n, const float* x, const LogProbOptions& options,
                  const Conditioning& conditioning, double* logp);
  Status velocity(size_t n, const float* t, const float* y, const Conditioning& conditioning,
                  float* v);

 private:
  friend struct detail::Construct;
  explicit Plan(detail::PlanData* data) : data_(data) {}
  detail::PlanData* data_;
};

// Agreement of a model with its embedded test vectors. Errors are relative:
// max |v - v_ref| / max(1, max |v_ref|), likewise for trajectory end points.
struct ValidationReport {
  uint32_t velocity_count = 0;
  double velocity_max_error = 0.0;
  double velocity_tolerance = 0.0;
  bool velocity_ok = true;
  uint32_t trajectory_count = 0;
  uint32_t trajectory_steps = 0;
  double trajectory_max_error = 0.0;
  double trajectory_tolerance = 0.0;
  bool trajectory_ok = true;
  // Stored solvers' test vectors (base points decoded with the solver, compared in data space):
  // how many solvers were checked, and the error and tolerance of the one furthest from its
  // tolerance (named by solver_worst, valid while the model lives).
  uint32_t solver_count = 0;
  double solver_max_error = 0.0;
  double solver_tolerance = 0.0;
  bool solver_ok = true;
  const char* solver_worst = "";
};

// max_i |value_i - reference_i| / max(1, max_i |reference_i|): the error measure of the
// embedded test vectors (and of `siflow validate --expected`). NaN in value gives NaN.
double max_relative_error(const float* value, const float* reference, size_t n);

// Re-runs the embedded velocities and classic-RK4 trajectories (in flow coordinates). Fails
// only when it cannot run (no test vectors, no memory); mismatches are in the report. The plan
// it makes takes backend, threads and tune from `execution` (default: PlanOptions()).
Status validate_embedded(const Model& model, ValidationReport* report);
Status validate_embedded(const Model& model, const PlanOptions& execution,
                         ValidationReport* report);
// The same, cancellable: `progress` (nullable) is called after the velocity check and after
// every RK4 step of the trajectory check, with done/total counting network evaluations of one
// row (velocity points + 4 per trajectory step, at most Limits::kMaxValidationEvaluations);
// returning false stops validation with kCancelled (the report is then left empty).
Status validate_embedded(const Model& model, const PlanOptions& execution, ValidationReport* report,
                         ProgressFn progress, void* progress_user = nullptr);

// Writes `size` bytes to `path` through a temporary file renamed into place. The temporary,
// "<path>.siflow-tmp-<pid>-<6 random letters>", is created exclusively (O_CREAT | O_EXCL |
// O_NOFOLLOW, mode 0644 minus the umask) beside the target, so a planted file or symlink is
// never written through; it is removed when anything fails.
Status write_file_atomic(const char* path, const void* data, size_t size);

// One file of a set written together.
struct FileOutput {
  const char* path;
  const void* data;
  size_t size;
};
// Writes every file or none: all temporaries are written and synced before the first rename; on
// a failure the temporaries and any target already replaced are removed. Paths must differ.
Status write_files_atomic(const FileOutput* files, size_t count);
// Removes the temporaries write_file_atomic left in the folder of `path` when its process died
// (killed mid-write): only regular files of this user whose name matches the pattern above and
// whose pid no longer runs. `removed` (optional) receives how many went.
Status remove_stale_temporaries(const char* path, size_t* removed = nullptr);

}  // namespace siflow
