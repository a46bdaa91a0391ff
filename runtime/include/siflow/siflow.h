// SPDX-License-Identifier: Apache-2.0
/* siflow C API: a thin, stable layer over the C++ API for embedding in apps. Opaque handles,
 * status codes with messages, no exceptions crossing it.
 * Threads: a loaded model is immutable and may be shared by any number of threads; a plan (and
 * its arena) belongs to one thread at a time, so give each thread its own plan. Every function
 * is reentrant. The only global state is XNNPACK's one-time initialization (in builds with the
 * xnnpack backend, at the first plan that uses it), which is thread-safe. */
#ifndef SIFLOW_H_
#define SIFLOW_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SIFLOW_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define SIFLOW_API __attribute__((visibility("default")))
#else
#define SIFLOW_API
#endif

typedef enum siflow_status {
  SIFLOW_OK = 0,
  SIFLOW_INVALID_ARGUMENT = 1,
  SIFLOW_INVALID_MODEL = 2,
  SIFLOW_UNSUPPORTED = 3,
  SIFLOW_ARENA_TOO_SMALL = 4,
  SIFLOW_OUT_OF_MEMORY = 5,
  SIFLOW_NUMERICAL_ERROR = 6,
  SIFLOW_IO_ERROR = 7,
  SIFLOW_CANCELLED = 8
} siflow_status;

/* Filled by every call that fails (when non-null): the code and a message naming the cause. */
typedef struct siflow_error {
  siflow_status code;
  char message[256];
} siflow_error;

typedef struct siflow_model siflow_model;
typedef struct siflow_plan siflow_plan;

typedef enum siflow_method {
  SIFLOW_EULER = 0,
  SIFLOW_HEUN = 1,
  SIFLOW_MIDPOINT = 2,
  SIFLOW_RK4 = 3,
  SIFLOW_RK4_38 = 4,
  SIFLOW_AB2 = 5, /* Adams-Bashforth: one evaluation per step after a one-step bootstrap */
  SIFLOW_AB3 = 6,
  SIFLOW_AB4 = 7,
  SIFLOW_DOPRI5 = 8 /* adaptive Dormand-Prince 5(4): rtol, atol, max_steps */
} siflow_method;

/* Time-grid families of `steps` steps (siflow.hpp's GridKind): SHIFT takes grid_param A, POWER
 * grid_param R (both in [0.001, 1000]). */
typedef enum siflow_grid_kind {
  SIFLOW_GRID_UNIFORM = 0,
  SIFLOW_GRID_SHIFT = 1,
  SIFLOW_GRID_POWER = 2,
  SIFLOW_GRID_COSINE = 3
} siflow_grid_kind;

typedef enum siflow_divergence {
  SIFLOW_DIVERGENCE_NONE = 0,
  SIFLOW_DIVERGENCE_EXACT = 1,
  SIFLOW_DIVERGENCE_HUTCHINSON = 2
} siflow_divergence;

typedef enum siflow_probe { SIFLOW_PROBE_RADEMACHER = 0, SIFLOW_PROBE_GAUSSIAN = 1 } siflow_probe;

typedef enum siflow_eps_schedule {
  SIFLOW_EPS_CONSTANT = 0,
  SIFLOW_EPS_PROPORTIONAL_TO_A = 1
} siflow_eps_schedule;

/* Kernels for dense layers and activations (siflow.hpp's Backend). AUTO: the fastest available;
 * REFERENCE: portable scalar, bit-identical on every platform. */
typedef enum siflow_backend {
  SIFLOW_BACKEND_AUTO = 0,
  SIFLOW_BACKEND_REFERENCE = 1,
  SIFLOW_BACKEND_SIMD = 2,
  SIFLOW_BACKEND_XNNPACK = 3
} siflow_backend;

/* Number format of the dense layers and convolutions (siflow.hpp's Precision; docs/math.md). */
typedef enum siflow_precision {
  SIFLOW_PRECISION_FP32 = 0,
  SIFLOW_PRECISION_BF16 = 1,
  SIFLOW_PRECISION_FP16 = 2,
  SIFLOW_PRECISION_INT8 = 3
} siflow_precision;

typedef enum siflow_sde_method {
  SIFLOW_SDE_EULER_MARUYAMA = 0,
  SIFLOW_SDE_HEUN = 1
} siflow_sde_method;

typedef enum siflow_interpolant {
  SIFLOW_INTERPOLANT_LINEAR = 0,
  SIFLOW_INTERPOLANT_TRIG = 1,
  SIFLOW_INTERPOLANT_LEARNED_FOURIER = 2
} siflow_interpolant;

typedef enum siflow_base { SIFLOW_BASE_NORMAL = 0, SIFLOW_BASE_UNIFORM = 1 } siflow_base;

/* Returns nonzero to continue, 0 to cancel (the call then fails with SIFLOW_CANCELLED). */
typedef int (*siflow_progress_fn)(void* user, uint64_t done, uint64_t total);

/* Every options struct starts with struct_size = sizeof(struct); *_init fills defaults. */
typedef struct siflow_plan_options {
  uint32_t struct_size;
  size_t max_batch;             /* default 256 */
  siflow_divergence divergence; /* default EXACT */
  uint32_t max_probes;          /* default 1 */
  /* Threads a run uses (the caller's plus threads - 1 workers started by the plan), 1..256;
   * default 1. Results are bit-identical for any count. Builds without a thread pool accept
   * only 1 (others give SIFLOW_UNSUPPORTED). Fields are added last, so the struct_size of older
   * callers still works: a missing field takes its default. */
  uint32_t threads;
  siflow_backend backend;     /* default AUTO */
  int tune;                   /* nonzero: AUTO times simd and XNNPACK per dense/conv layer */
  siflow_precision precision; /* default FP32 */
  /* Exact divergence: Jacobian columns per network pass (PlanOptions::tangent_block); 0
   * (default): automatic, all d unless their tangents would exceed 256 MiB. Bit-identical
   * results for every value; smaller arenas for smaller blocks. */
  uint32_t tangent_block;
  /* Classifier-free guidance weight w of every call (default 1: the conditional model; 0: the
   * null label / vector). Any other w runs the conditional and the null rows as one batched pass
   * of 2 max_batch rows, which the arena holds. Needs a model with a null label (or vector). */
  double guidance;
  /* Rows the network runs over at a time (PlanOptions::block_rows); 0 (default): the plan's
   * choice from its working set per row against a cache budget. At most 2^20. Bit-identical for
   * every value without tune (tuning times layers at the block's rows, so it may choose other
   * kernels). */
  size_t block_rows;
} siflow_plan_options;

typedef struct siflow_run_options {
  uint32_t struct_size;
  siflow_method method; /* default RK4 */
  uint32_t steps;       /* default 50 */
  const double* grid;   /* optional explicit increasing time grid */
  size_t grid_size;
  uint64_t seed;                /* base draws, SDE noise and Hutchinson probes */
  siflow_divergence divergence; /* for log-likelihoods; default EXACT */
  uint32_t probes;              /* Hutchinson probes, default 1 */
  siflow_probe probe;
  double time;        /* log_prob time s; negative: the model's end time */
  double sde_epsilon; /* 0: ODE */
  siflow_eps_schedule sde_schedule;
  double sde_stop_delta;
  siflow_sde_method sde_method;
  siflow_progress_fn progress;
  void* progress_user;
  /* Added later (a smaller struct_size leaves them at their defaults): */
  siflow_grid_kind grid_kind; /* default UNIFORM; excludes `grid` */
  double grid_param;
  double rtol;        /* DOPRI5, default 1e-6 */
  double atol;        /* DOPRI5, default 1e-6 */
  uint32_t max_steps; /* DOPRI5 attempted steps per chunk, default 100000 */
  /* The name of a solver stored in the model (siflow_model_solver): its method and grid replace
   * method, steps and grid_kind; NULL (default): none. */
  const char* solver;
  /* Conditional models (siflow_model_info.takes_labels / cond_width): labels [n] one per row,
   * or, when NULL, `label` for every row (-1, the default: none); cond [n, cond_width]. */
  const int32_t* labels;
  int32_t label;
  const float* cond;
  double temperature; /* sample: base draws scaled by it (Gaussian bases); default 1 */
} siflow_run_options;

SIFLOW_API const char* siflow_version(void); /* "MAJOR.MINOR.PATCH" */
SIFLOW_API void siflow_plan_options_init(siflow_plan_options* options);
SIFLOW_API void siflow_run_options_init(siflow_run_options* options);

/* Loads from memory (copied once if not 64-byte aligned and allow_copy is nonzero; the bytes
 * must outlive the model otherwise) or from a file. */
SIFLOW_API siflow_status siflow_model_load(const void* bytes, size_t size, int allow_copy,
                                           siflow_model** out, siflow_error* error);
SIFLOW_API siflow_status siflow_model_load_file(const char* path, siflow_model** out,
                                                siflow_error* error);
/* Heap-free loading: every table of the model (and a copy of unaligned bytes) goes into the
 * caller's memory, which must outlive the model; siflow_model_memory_bytes says how much
 * (measured with short-lived heap blocks: call it on a host or at start-up; `siflow info`
 * prints it too). Memory of any alignment needs 63 bytes more. */
SIFLOW_API siflow_status siflow_model_memory_bytes(const void* bytes, size_t size, size_t* out,
                                                   siflow_error* error);
SIFLOW_API siflow_status siflow_model_load_in(const void* bytes, size_t size, void* memory,
                                              size_t memory_size, siflow_model** out,
                                              siflow_error* error);
SIFLOW_API void siflow_model_free(siflow_model* model);
SIFLOW_API uint32_t siflow_model_dim(const siflow_model* model);

SIFLOW_API siflow_status siflow_arena_bytes(const siflow_model* model,
                                            const siflow_plan_options* options, size_t* bytes,
                                            siflow_error* error);
/* arena may be NULL (the plan allocates one block for itself) or caller memory of at least
 * arena_bytes (+ 63 if not 64-byte aligned), which then holds the whole plan: creating it takes
 * no heap (with threads = 1 and no XNNPACK layers). siflow_arena_bytes measures with short-lived
 * heap blocks: call it on a host or at start-up. */
SIFLOW_API siflow_status siflow_plan_create(const siflow_model* model,
                                            const siflow_plan_options* options, void* arena,
                                            size_t arena_size, siflow_plan** out,
                                            siflow_error* error);
SIFLOW_API void siflow_plan_free(siflow_plan* plan);
/* The kernel running graph node `node` ("reference", "simd/avx2+silu", "fused", "xnnpack", ...;
 * "" past the last node or for a NULL plan). Valid while the plan lives. */
SIFLOW_API const char* siflow_plan_node_kernel(const siflow_plan* plan, uint32_t node);

/* Network evaluations per trajectory (NFE) of the plan's last sample/decode/encode/log_prob
 * (dopri5: the most of any chunk); 0 for a NULL plan or before the first run. */
SIFLOW_API uint64_t siflow_plan_evaluations(const siflow_plan* plan);

/* Points are row-major [n][dim] floats in data space; logp arrays are [n] doubles. */
SIFLOW_API siflow_status siflow_sample(siflow_plan* plan, size_t n,
                                       const siflow_run_options* options, float* x, double* logp,
                                       siflow_error* error);
SIFLOW_API siflow_status siflow_decode(siflow_plan* plan, size_t n, const float* x0,
                                       const siflow_run_options* options, float* x1, double* logp,
                                       siflow_error* error);
SIFLOW_API siflow_status siflow_encode(siflow_plan* plan, size_t n, const float* x1,
                                       const siflow_run_options* options, float* x0,
                                       siflow_error* error);
SIFLOW_API siflow_status siflow_log_prob(siflow_plan* plan, size_t n, const float* x,
                                         const siflow_run_options* options, double* logp,
                                         siflow_error* error);
SIFLOW_API siflow_status siflow_velocity(siflow_plan* plan, size_t n, const float* t,
                                         const float* y, float* v, siflow_error* error);
/* The velocity of a conditional model: the labels and conditions of `options` (the rest of it is
 * not read); the plan's guidance weight applies. */
SIFLOW_API siflow_status siflow_velocity_conditioned(siflow_plan* plan, size_t n, const float* t,
                                                     const float* y,
                                                     const siflow_run_options* options, float* v,
                                                     siflow_error* error);

/* What a loaded model is (siflow.hpp's ModelInfo; `siflow info` prints it). The caller sets
 * struct_size to sizeof its version of the struct; fields past it are not written. The name
 * lives as long as the model. */
typedef struct siflow_model_info {
  uint32_t struct_size;
  uint32_t dim;
  const char* name; /* "" when unnamed */
  uint16_t format_major;
  uint16_t format_minor;
  uint32_t node_count;
  uint64_t parameter_count;
  uint64_t f16_parameter_count; /* parameters stored as fp16 */
  size_t weight_bytes;          /* bytes the weights take in the file */
  size_t expanded_bytes;        /* float copies of fp16 weights made at load */
  size_t held_bytes;            /* heap the loaded model holds */
  size_t packed_bytes;          /* dense weights repacked for the simd kernels */
  siflow_interpolant interpolant;
  uint32_t fourier_terms;
  siflow_base base;
  int normalized;      /* nonzero: the flow runs on (x - mean) / std */
  int score_available; /* nonzero: SDE sampling possible */
  double time_start;
  double time_end;
  uint32_t test_vector_count;
  uint32_t test_trajectory_count;
  uint32_t metadata_count;
  uint32_t solver_count; /* stored solvers (format 1.2) */
  int takes_labels;      /* nonzero: a class label per row, 0 .. label_classes - 1 */
  uint32_t label_classes;
  int32_t null_label;  /* the unconditional label, -1 when none (guidance refused) */
  uint32_t cond_width; /* > 0: a condition vector of this width per row */
  int has_null_cond;   /* nonzero: the model stores the null condition vector */
  /* Per-sample shape of x and v (format 1.4): [C, H, W] for an image model, [dim] otherwise;
   * sample_shape[sample_rank ..] are 0. Rows are still passed flat, dim floats each. */
  uint32_t sample_rank;
  uint32_t sample_shape[3];
} siflow_model_info;

SIFLOW_API siflow_status siflow_model_get_info(const siflow_model* model, siflow_model_info* info,
                                               siflow_error* error);
/* Metadata entry i as key and value (valid while the model lives); 0 past the end. */
SIFLOW_API int siflow_model_metadata(const siflow_model* model, uint32_t i, const char** key,
                                     const char** value);
/* Stored solver i: its name (valid while the model lives), network evaluations per sample and
 * the sample error measured when it was tuned; 0 past the end. Select it by name with
 * siflow_run_options.solver. */
SIFLOW_API int siflow_model_solver(const siflow_model* model, uint32_t i, const char** name,
                                   uint32_t* nfe, double* sample_error);
/* Graph node i: op name ("fully_connected", "unary:silu", ...), input and output widths; 0 past
 * the end. */
SIFLOW_API int siflow_model_node(const siflow_model* model, uint32_t i, const char** op,
                                 uint32_t* in_width, uint32_t* width);

/* Agreement of a model with its embedded test vectors (siflow.hpp's ValidationReport). Errors
 * are relative: max |v - v_ref| / max(1, max |v_ref|). The caller sets struct_size. */
typedef struct siflow_validation_report {
  uint32_t struct_size;
  uint32_t velocity_count;
  double velocity_max_error;
  double velocity_tolerance;
  int velocity_ok;
  uint32_t trajectory_count;
  uint32_t trajectory_steps;
  double trajectory_max_error;
  double trajectory_tolerance;
  int trajectory_ok;
  /* Stored solvers' test vectors: solvers checked, and the one furthest from its tolerance. */
  uint32_t solver_count;
  double solver_max_error;
  double solver_tolerance;
  int solver_ok;
  const char* solver_worst; /* its name ("" when none), valid while the model lives */
} siflow_validation_report;

/* Re-runs the embedded velocities and RK4 trajectories. Fails only when it cannot run (no test
 * vectors, no memory) or is cancelled; mismatches are in the report. options (nullable:
 * defaults) give backend, threads and tune; validation plans its own batch and allocates a plan
 * of its own. progress (nullable) is called after the velocity check and after every RK4 step,
 * done/total counting network evaluations of one row (velocity points + 4 per trajectory step,
 * at most 2^22, a bound the loader enforces); returning 0 stops it with SIFLOW_CANCELLED. */
SIFLOW_API siflow_status siflow_validate(const siflow_model* model,
                                         const siflow_plan_options* options,
                                         siflow_progress_fn progress, void* progress_user,
                                         siflow_validation_report* report, siflow_error* error);

#ifdef __cplusplus
}
#endif

#endif /* SIFLOW_H_ */
