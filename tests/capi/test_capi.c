// SPDX-License-Identifier: Apache-2.0
/* C API test, written in C99: every entry point of siflow.h on the models make_capi_model
 * writes (argv[1]: Gaussian-base network of capi_model.h; argv[2]: uniform base, v = y*y).
 * A plain harness: counts checks, prints "N passed, N failed" last, exits nonzero on failure. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capi_model.h"
#include "siflow/siflow.h"

/* ---- harness ---------------------------------------------------------------------------- */

static int g_passed = 0;
static int g_failed = 0;

static void check_impl(int ok, const char* expr, const char* file, int line) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
  }
}

#define CHECK(cond) check_impl((cond) ? 1 : 0, #cond, __FILE__, __LINE__)

/* Checks a status, the error struct it filled, and (for failures) a non-empty message. */
static void check_status_impl(siflow_status got, siflow_status want, const siflow_error* error,
                              const char* expr, const char* file, int line) {
  int ok = got == want;
  if (ok && error && want != SIFLOW_OK) ok = error->code == want && error->message[0] != '\0';
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    fprintf(stderr, "%s:%d: %s returned %d, expected %d (error: %d '%s')\n", file, line, expr,
            (int)got, (int)want, error ? (int)error->code : -1, error ? error->message : "");
  }
}

#define CHECK_STATUS(call, want, error) \
  check_status_impl((call), (want), (error), #call, __FILE__, __LINE__)

/* Resets an error struct so that a stale message cannot satisfy a check. */
static siflow_error* fresh(siflow_error* e) {
  e->code = SIFLOW_OK;
  memset(e->message, 0, sizeof e->message);
  return e;
}

static int is_finite_value(double v) { return v - v == 0.0; }

static int all_finite_f(const float* v, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i)
    if (!is_finite_value(v[i])) return 0;
  return 1;
}

static int all_finite_d(const double* v, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i)
    if (!is_finite_value(v[i])) return 0;
  return 1;
}

static double max_abs_diff_f(const float* a, const float* b, size_t n) {
  double m = 0.0;
  size_t i;
  for (i = 0; i < n; ++i) {
    const double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

static double max_abs_diff_d(const double* a, const double* b, size_t n) {
  double m = 0.0;
  size_t i;
  for (i = 0; i < n; ++i) {
    const double d = fabs(a[i] - b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

/* Reads a whole file into malloc'd memory; *size receives its length. */
static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  data = (unsigned char*)malloc((size_t)n + 1);
  if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

/* The first 64-byte aligned address at or after p. */
static unsigned char* align64(unsigned char* p) {
  const uintptr_t a = (uintptr_t)p;
  return p + (size_t)((64 - a % 64) % 64);
}

/* v(t, y) of capi_model.h in double, for comparison with siflow_velocity. */
static void reference_velocity(float t, const float* y, double* v) {
  double h[CAPI_HIDDEN];
  int j, k;
  for (j = 0; j < CAPI_HIDDEN; ++j) {
    double s = capi_b1[j];
    for (k = 0; k < CAPI_DIM; ++k) s += (double)capi_w1[j * CAPI_IN + k] * y[k];
    s += (double)capi_w1[j * CAPI_IN + CAPI_DIM] * t;
    h[j] = tanh(s);
  }
  for (k = 0; k < CAPI_DIM; ++k) {
    double s = capi_b2[k];
    for (j = 0; j < CAPI_HIDDEN; ++j) s += (double)capi_w2[k * CAPI_HIDDEN + j] * h[j];
    v[k] = s;
  }
}

/* A progress callback: records calls and cancels when the call count reaches `cancel_at`
 * (0: never). */
typedef struct progress_state {
  unsigned calls;
  unsigned cancel_at;
  uint64_t last_done;
  uint64_t total;
  int monotonic;
} progress_state;

static int on_progress(void* user, uint64_t done, uint64_t total) {
  progress_state* p = (progress_state*)user;
  ++p->calls;
  if (done <= p->last_done || done > total) p->monotonic = 0;
  p->last_done = done;
  p->total = total;
  return !(p->cancel_at != 0 && p->calls >= p->cancel_at);
}

static int should_not_be_called(void* user, uint64_t done, uint64_t total) {
  (void)done;
  (void)total;
  ++*(unsigned*)user;
  return 1;
}

static siflow_plan* make_plan(const siflow_model* model, size_t max_batch,
                              siflow_divergence divergence, uint32_t max_probes) {
  siflow_plan_options po;
  siflow_plan* plan = NULL;
  siflow_error error;
  siflow_plan_options_init(&po);
  po.max_batch = max_batch;
  po.divergence = divergence;
  po.max_probes = max_probes;
  if (siflow_plan_create(model, &po, NULL, 0, &plan, &error) != SIFLOW_OK) {
    fprintf(stderr, "make_plan: %s\n", error.message);
    return NULL;
  }
  return plan;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_version(void) {
  const char* v = siflow_version();
  int major = -1, minor = -1, patch = -1;
  char tail = 0;
  printf("[version] %s\n", v ? v : "(null)");
  CHECK(v != NULL);
  if (!v) return;
  CHECK(sscanf(v, "%d.%d.%d%c", &major, &minor, &patch, &tail) == 3);
  CHECK(major >= 0 && minor >= 0 && patch >= 0);
  CHECK(strcmp(v, siflow_version()) == 0);
}

static void test_options_init(void) {
  siflow_plan_options po;
  siflow_run_options ro;
  printf("[options init]\n");
  memset(&po, 0xAB, sizeof po);
  memset(&ro, 0xAB, sizeof ro);
  siflow_plan_options_init(&po);
  CHECK(po.struct_size == sizeof po);
  CHECK(po.max_batch == 256);
  CHECK(po.divergence == SIFLOW_DIVERGENCE_EXACT);
  CHECK(po.max_probes == 1);
  siflow_run_options_init(&ro);
  CHECK(ro.struct_size == sizeof ro);
  CHECK(ro.method == SIFLOW_RK4);
  CHECK(ro.steps == 50);
  CHECK(ro.grid == NULL);
  CHECK(ro.grid_size == 0);
  CHECK(ro.seed == 0);
  CHECK(ro.divergence == SIFLOW_DIVERGENCE_EXACT);
  CHECK(ro.probes == 1);
  CHECK(ro.probe == SIFLOW_PROBE_RADEMACHER);
  CHECK(ro.time < 0.0);
  CHECK(ro.sde_epsilon == 0.0);
  CHECK(ro.sde_schedule == SIFLOW_EPS_PROPORTIONAL_TO_A);
  CHECK(ro.sde_stop_delta == 0.0);
  CHECK(ro.sde_method == SIFLOW_SDE_HEUN);
  CHECK(ro.progress == NULL);
  CHECK(ro.progress_user == NULL);
  /* NULL is ignored, not dereferenced. */
  siflow_plan_options_init(NULL);
  siflow_run_options_init(NULL);
  CHECK(1);
}

static void test_load(const char* path, const char* uniform_path) {
  siflow_error error;
  siflow_model* model = NULL;
  siflow_model* other = NULL;
  size_t size = 0;
  unsigned char* file = read_file(path, &size);
  unsigned char* block;
  unsigned char* aligned;
  unsigned char* misaligned;
  printf("[load]\n");
  CHECK(file != NULL && size > 64);
  if (!file) return;

  /* From a file. */
  CHECK_STATUS(siflow_model_load_file(path, &model, fresh(&error)), SIFLOW_OK, &error);
  CHECK(model != NULL);
  CHECK(siflow_model_dim(model) == CAPI_DIM);
  siflow_model_free(model);
  model = NULL;
  CHECK_STATUS(siflow_model_load_file(uniform_path, &model, fresh(&error)), SIFLOW_OK, &error);
  CHECK(siflow_model_dim(model) == CAPI_DIM);
  siflow_model_free(model);
  model = (siflow_model*)&error; /* must be reset to NULL on failure */
  CHECK_STATUS(siflow_model_load_file("/nonexistent/dir/model.sif", &model, fresh(&error)),
               SIFLOW_IO_ERROR, &error);
  CHECK(model == NULL);

  /* From memory: aligned, zero-copy (the bytes must outlive the model). */
  block = (unsigned char*)malloc(size + 128);
  CHECK(block != NULL);
  if (!block) {
    free(file);
    return;
  }
  aligned = align64(block);
  memcpy(aligned, file, size);
  CHECK_STATUS(siflow_model_load(aligned, size, 0, &model, fresh(&error)), SIFLOW_OK, &error);
  CHECK(siflow_model_dim(model) == CAPI_DIM);
  CHECK_STATUS(siflow_model_load(aligned, size, 1, &other, fresh(&error)), SIFLOW_OK, &error);
  CHECK(siflow_model_dim(other) == CAPI_DIM);
  siflow_model_free(model);
  siflow_model_free(other);
  model = other = NULL;

  /* Heap-free loading into caller memory: exactly siflow_model_memory_bytes suffices, one byte
   * less is too small and the message names the size. */
  {
    size_t need = 0;
    unsigned char* memory;
    CHECK_STATUS(siflow_model_memory_bytes(aligned, size, &need, fresh(&error)), SIFLOW_OK, &error);
    CHECK(need > 0 && need % 64 == 0);
    memory = (unsigned char*)malloc(need + 64);
    CHECK(memory != NULL);
    if (memory) {
      unsigned char* at = align64(memory);
      CHECK_STATUS(siflow_model_load_in(aligned, size, at, need, &model, fresh(&error)), SIFLOW_OK,
                   &error);
      CHECK(siflow_model_dim(model) == CAPI_DIM);
      siflow_model_free(model);
      model = NULL;
      CHECK_STATUS(siflow_model_load_in(aligned, size, at, need - 1, &model, fresh(&error)),
                   SIFLOW_ARENA_TOO_SMALL, &error);
      CHECK(model == NULL);
      CHECK(strstr(error.message, "this model needs") != NULL);
      CHECK_STATUS(siflow_model_load_in(aligned, size, NULL, need, &model, fresh(&error)),
                   SIFLOW_INVALID_ARGUMENT, &error);
      free(memory);
    }
  }

  /* Misaligned: copied with allow_copy, refused without. */
  misaligned = aligned + 1;
  memmove(misaligned, file, size);
  CHECK_STATUS(siflow_model_load(misaligned, size, 1, &model, fresh(&error)), SIFLOW_OK, &error);
  other = (siflow_model*)&error;
  CHECK_STATUS(siflow_model_load(misaligned, size, 0, &other, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(other == NULL);
  CHECK(strstr(error.message, "aligned") != NULL);
  /* The copy is the model's own: wiping and freeing the caller's bytes changes nothing. */
  memset(block, 0, size + 128);
  free(block);
  block = NULL;
  {
    siflow_plan* plan = make_plan(model, 4, SIFLOW_DIVERGENCE_EXACT, 1);
    siflow_run_options ro;
    float x[4 * CAPI_DIM];
    CHECK(plan != NULL);
    siflow_run_options_init(&ro);
    ro.steps = 8;
    CHECK_STATUS(siflow_sample(plan, 4, &ro, x, NULL, fresh(&error)), SIFLOW_OK, &error);
    CHECK(all_finite_f(x, 4 * CAPI_DIM));
    siflow_plan_free(plan);
  }
  siflow_model_free(model);
  model = NULL;

  /* Bad bytes: garbage, a wrong identifier, a truncated file, too small. */
  block = (unsigned char*)malloc(size + 128);
  CHECK(block != NULL);
  if (block) {
    aligned = align64(block);
    memset(aligned, 0x5A, size);
    CHECK_STATUS(siflow_model_load(aligned, size, 1, &model, fresh(&error)), SIFLOW_INVALID_MODEL,
                 &error);
    CHECK(model == NULL);
    memcpy(aligned, file, size);
    aligned[4] = 'X';
    CHECK_STATUS(siflow_model_load(aligned, size, 1, &model, fresh(&error)), SIFLOW_INVALID_MODEL,
                 &error);
    CHECK(strstr(error.message, "SIFL") != NULL);
    memcpy(aligned, file, size);
    CHECK_STATUS(siflow_model_load(aligned, size / 2, 1, &model, fresh(&error)),
                 SIFLOW_INVALID_MODEL, &error);
    CHECK_STATUS(siflow_model_load(aligned, 4, 1, &model, fresh(&error)), SIFLOW_INVALID_MODEL,
                 &error);
    CHECK_STATUS(siflow_model_load(aligned, 0, 1, &model, fresh(&error)), SIFLOW_INVALID_MODEL,
                 &error);
    CHECK(model == NULL);
    free(block);
  }
  free(file);
}

static void test_arena_and_plan(const siflow_model* model) {
  static unsigned char arena_storage[1 << 20];
  siflow_error error;
  siflow_plan_options po;
  siflow_plan* plan = NULL;
  siflow_plan* owned_plan = NULL;
  siflow_run_options ro;
  size_t bytes = 0, bytes_small = 0, bytes_none = 0, bytes_hutch = 0;
  unsigned char* arena;
  float x_static[8 * CAPI_DIM], x_owned[8 * CAPI_DIM];
  double lp_static[8], lp_owned[8];
  printf("[arena + plan]\n");

  siflow_plan_options_init(&po);
  po.max_batch = 8;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes, fresh(&error)), SIFLOW_OK, &error);
  CHECK(bytes > 0);
  CHECK(bytes % 64 == 0);
  CHECK(bytes + 64 <= sizeof arena_storage);
  po.max_batch = 1;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_small, fresh(&error)), SIFLOW_OK, &error);
  CHECK(bytes_small > 0 && bytes_small < bytes);
  po.max_batch = 8;
  po.divergence = SIFLOW_DIVERGENCE_NONE;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_none, fresh(&error)), SIFLOW_OK, &error);
  CHECK(bytes_none > 0 && bytes_none < bytes);
  po.divergence = SIFLOW_DIVERGENCE_HUTCHINSON;
  po.max_probes = 1;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_hutch, fresh(&error)), SIFLOW_OK, &error);
  CHECK(bytes_hutch > bytes_none && bytes_hutch < bytes);
  /* Plan options the runtime refuses. */
  po.divergence = SIFLOW_DIVERGENCE_HUTCHINSON;
  po.max_probes = 0;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_hutch, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  /* Threads: 1 is the default; 0 and more than 256 are invalid. */
  siflow_plan_options_init(&po);
  CHECK(po.threads == 1);
  po.threads = 0;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  po.threads = 1000;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "threads = 1000") != NULL);
  /* An older caller's struct without the threads field means threads = 1. */
  siflow_plan_options_init(&po);
  po.threads = 4;
  po.struct_size = (uint32_t)offsetof(siflow_plan_options, threads);
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)), SIFLOW_OK, &error);
  siflow_plan_free(plan);
  plan = NULL;
  /* Backends: the default is AUTO; REFERENCE names its kernels; an unknown one is refused, and
   * so is a struct that ends before the backend field but carries one (it reads as AUTO). */
  siflow_plan_options_init(&po);
  CHECK(po.backend == SIFLOW_BACKEND_AUTO && po.tune == 0);
  po.backend = SIFLOW_BACKEND_REFERENCE;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)), SIFLOW_OK, &error);
  CHECK(strcmp(siflow_plan_node_kernel(plan, 0), "reference") == 0);
  CHECK(strcmp(siflow_plan_node_kernel(plan, 100000), "") == 0);
  CHECK(strcmp(siflow_plan_node_kernel(NULL, 0), "") == 0);
  siflow_plan_free(plan);
  plan = NULL;
  po.backend = (siflow_backend)7;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "unknown backend 7") != NULL);
  po.struct_size = (uint32_t)offsetof(siflow_plan_options, backend);
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)), SIFLOW_OK, &error);
  siflow_plan_free(plan);
  plan = NULL;
  /* Precision: the default is FP32; INT8 plans run; an unknown one is refused, but not in a
   * struct that ends before the field (it reads as FP32). */
  siflow_plan_options_init(&po);
  CHECK(po.precision == SIFLOW_PRECISION_FP32);
  po.precision = SIFLOW_PRECISION_INT8;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)), SIFLOW_OK, &error);
  siflow_plan_free(plan);
  plan = NULL;
  po.precision = (siflow_precision)9;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "unknown precision 9") != NULL);
  po.struct_size = (uint32_t)offsetof(siflow_plan_options, precision);
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)), SIFLOW_OK, &error);
  siflow_plan_free(plan);
  plan = NULL;
  siflow_plan_options_init(&po);
  po.max_batch = 0;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_hutch, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(plan == NULL);
  po.max_batch = 8;
  po.divergence = (siflow_divergence)7;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  /* 257 would wrap onto EXACT (1) in an 8-bit field; it must be refused, not reinterpreted. */
  po.divergence = (siflow_divergence)257;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  po.divergence = (siflow_divergence)-1;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);

  /* A caller's static arena: aligned and exactly arena_bytes. */
  siflow_plan_options_init(&po);
  po.max_batch = 8;
  arena = align64(arena_storage);
  CHECK_STATUS(siflow_plan_create(model, &po, arena, bytes, &plan, fresh(&error)), SIFLOW_OK,
               &error);
  CHECK(plan != NULL);
  /* The same plan from a NULL arena (the plan allocates) gives bit-identical results. */
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &owned_plan, fresh(&error)), SIFLOW_OK,
               &error);
  siflow_run_options_init(&ro);
  ro.seed = 11;
  ro.steps = 16;
  CHECK_STATUS(siflow_sample(plan, 8, &ro, x_static, lp_static, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_sample(owned_plan, 8, &ro, x_owned, lp_owned, fresh(&error)), SIFLOW_OK,
               &error);
  CHECK(memcmp(x_static, x_owned, sizeof x_static) == 0);
  CHECK(memcmp(lp_static, lp_owned, sizeof lp_static) == 0);
  siflow_plan_free(plan);
  plan = NULL;

  /* Misaligned caller memory needs up to 63 bytes of padding; arena_bytes + 63 always fits. */
  CHECK_STATUS(siflow_plan_create(model, &po, arena + 1, bytes + 63, &plan, fresh(&error)),
               SIFLOW_OK, &error);
  CHECK_STATUS(siflow_sample(plan, 8, &ro, x_static, lp_static, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(x_static, x_owned, sizeof x_static) == 0);
  siflow_plan_free(plan);
  plan = NULL;

  /* Too small: SIFLOW_ARENA_TOO_SMALL, with a message, and no plan. */
  plan = (siflow_plan*)&error;
  CHECK_STATUS(siflow_plan_create(model, &po, arena, bytes - 1, &plan, fresh(&error)),
               SIFLOW_ARENA_TOO_SMALL, &error);
  CHECK(plan == NULL);
  CHECK(strstr(error.message, "too small") != NULL);
  CHECK_STATUS(siflow_plan_create(model, &po, arena + 1, bytes, &plan, fresh(&error)),
               SIFLOW_ARENA_TOO_SMALL, &error);
  CHECK_STATUS(siflow_plan_create(model, &po, arena, 0, &plan, fresh(&error)),
               SIFLOW_ARENA_TOO_SMALL, &error);
  CHECK(plan == NULL);
  siflow_plan_free(owned_plan);
}

static void test_sample_decode_encode(const siflow_model* model) {
  enum { N = 10 };
  siflow_error error;
  siflow_plan* plan = make_plan(model, 4, SIFLOW_DIVERGENCE_EXACT, 1); /* 3 chunks for N=10 */
  siflow_plan* big = make_plan(model, 64, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_run_options ro;
  float x[N * CAPI_DIM], x_nolp[N * CAPI_DIM], x_big[N * CAPI_DIM], x_other[N * CAPI_DIM];
  float x0[N * CAPI_DIM], x1[N * CAPI_DIM], back[N * CAPI_DIM];
  double lp[N], lp_big[N], lp_decode[N], lp_eval[N];
  int i, method;
  printf("[sample, decode, encode, log_prob]\n");
  CHECK(plan != NULL && big != NULL);
  if (!plan || !big) return;
  siflow_run_options_init(&ro);
  ro.seed = 42;
  ro.steps = 100;

  /* Sample with and without log p: the same points; chunking does not change anything. */
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, lp, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(x, N * CAPI_DIM));
  CHECK(all_finite_d(lp, N));
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_nolp, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(x, x_nolp, sizeof x) == 0);
  CHECK_STATUS(siflow_sample(big, N, &ro, x_big, lp_big, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(x, x_big, sizeof x) == 0);
  CHECK(memcmp(lp, lp_big, sizeof lp) == 0);
  ro.seed = 43;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_other, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(max_abs_diff_f(x, x_other, N * CAPI_DIM) > 1e-3);
  ro.seed = 42;

  /* log_prob of the samples agrees with the log p that sample computed. */
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp_eval, fresh(&error)), SIFLOW_OK, &error);
  printf("  max |log_prob - sample log p| = %.3g\n", max_abs_diff_d(lp, lp_eval, N));
  CHECK(max_abs_diff_d(lp, lp_eval, N) < 1e-4);

  /* Exact divergence one Jacobian column per pass: the same bits in a smaller arena. */
  {
    siflow_plan_options po;
    siflow_plan* blocked = NULL;
    double lp_blocked[N];
    size_t bytes_all = 0, bytes_blocked = 0;
    siflow_plan_options_init(&po);
    po.max_batch = 4;
    CHECK(po.tangent_block == 0);
    CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_all, fresh(&error)), SIFLOW_OK, &error);
    po.tangent_block = 1;
    CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes_blocked, fresh(&error)), SIFLOW_OK, &error);
    CHECK(bytes_blocked < bytes_all);
    CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &blocked, fresh(&error)), SIFLOW_OK,
                 &error);
    if (blocked) {
      CHECK_STATUS(siflow_log_prob(blocked, N, x, &ro, lp_blocked, fresh(&error)), SIFLOW_OK,
                   &error);
      CHECK(memcmp(lp_blocked, lp_eval, sizeof lp_eval) == 0);
      siflow_plan_free(blocked);
    }
  }

  /* Blocked execution, one row per block: the same bits; a block past the largest batch is
   * refused. */
  {
    siflow_plan_options po;
    siflow_plan* blocked = NULL;
    double lp_blocked[N];
    siflow_plan_options_init(&po);
    po.max_batch = 4;
    CHECK(po.block_rows == 0);
    po.block_rows = 1;
    CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &blocked, fresh(&error)), SIFLOW_OK,
                 &error);
    if (blocked) {
      CHECK_STATUS(siflow_log_prob(blocked, N, x, &ro, lp_blocked, fresh(&error)), SIFLOW_OK,
                   &error);
      CHECK(memcmp(lp_blocked, lp_eval, sizeof lp_eval) == 0);
      siflow_plan_free(blocked);
      blocked = NULL;
    }
    po.block_rows = ((size_t)1 << 20) + 1;
    CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &blocked, fresh(&error)),
                 SIFLOW_INVALID_ARGUMENT, &error);
    CHECK(strstr(error.message, "block_rows") != NULL);
  }

  /* Encode the samples to the base and decode back: the round trip is close to identity. */
  CHECK_STATUS(siflow_encode(plan, N, x, &ro, x0, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(x0, N * CAPI_DIM));
  CHECK(max_abs_diff_f(x0, x, N * CAPI_DIM) > 1e-2); /* the flow moved them */
  CHECK_STATUS(siflow_decode(plan, N, x0, &ro, x1, lp_decode, fresh(&error)), SIFLOW_OK, &error);
  printf("  decode(encode(x)): max |diff| = %.3g\n", max_abs_diff_f(x1, x, N * CAPI_DIM));
  CHECK(max_abs_diff_f(x1, x, N * CAPI_DIM) < 1e-4);
  CHECK(max_abs_diff_d(lp_decode, lp, N) < 1e-4);
  /* decode without log p, in place (x1 == x0 is allowed). */
  memcpy(back, x0, sizeof back);
  CHECK_STATUS(siflow_decode(plan, N, back, &ro, back, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(back, x1, sizeof back) == 0);
  /* encode in place. */
  CHECK_STATUS(siflow_encode(plan, N, back, &ro, back, fresh(&error)), SIFLOW_OK, &error);
  CHECK(max_abs_diff_f(back, x0, N * CAPI_DIM) < 1e-4);

  /* The data space is the normalised one: with a tiny flow, samples sit around the mean. */
  {
    double mean[CAPI_DIM] = {0.0, 0.0};
    for (i = 0; i < N; ++i) {
      mean[0] += x[i * CAPI_DIM] / N;
      mean[1] += x[i * CAPI_DIM + 1] / N;
    }
    CHECK(fabs(mean[0] - capi_norm_mean[0]) < 3.0 * capi_norm_std[0]);
    CHECK(fabs(mean[1] - capi_norm_mean[1]) < 3.0 * capi_norm_std[1]);
  }

  /* Every method runs; higher-order methods agree closely with RK4. */
  for (method = SIFLOW_EULER; method <= SIFLOW_RK4_38; ++method) {
    float xm[N * CAPI_DIM];
    double lpm[N];
    ro.method = (siflow_method)method;
    CHECK_STATUS(siflow_sample(plan, N, &ro, xm, lpm, fresh(&error)), SIFLOW_OK, &error);
    printf("  method %d vs rk4: max |dx| = %.3g, max |dlogp| = %.3g\n", method,
           max_abs_diff_f(xm, x, N * CAPI_DIM), max_abs_diff_d(lpm, lp, N));
    CHECK(max_abs_diff_f(xm, x, N * CAPI_DIM) < (method == SIFLOW_EULER ? 5e-2 : 1e-3));
    CHECK(max_abs_diff_d(lpm, lp, N) < (method == SIFLOW_EULER ? 5e-2 : 1e-3));
  }
  ro.method = SIFLOW_RK4;

  /* An explicit grid equal to the uniform one gives the same result; bad grids are refused. */
  {
    double grid[101];
    float xg[N * CAPI_DIM];
    for (i = 0; i <= 100; ++i) grid[i] = i / 100.0;
    grid[100] = 1.0;
    ro.grid = grid;
    ro.grid_size = 101;
    CHECK_STATUS(siflow_sample(plan, N, &ro, xg, NULL, fresh(&error)), SIFLOW_OK, &error);
    CHECK(max_abs_diff_f(xg, x, N * CAPI_DIM) < 1e-6);
    grid[50] = grid[49];
    CHECK_STATUS(siflow_sample(plan, N, &ro, xg, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
                 &error);
    grid[50] = 0.5;
    grid[0] = 0.001; /* increasing, but does not start at time_start */
    CHECK_STATUS(siflow_sample(plan, N, &ro, xg, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
                 &error);
    ro.grid_size = 1;
    CHECK_STATUS(siflow_sample(plan, N, &ro, xg, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
                 &error);
    ro.grid = NULL;
    ro.grid_size = 0;
  }

  /* log_prob at an intermediate time s, and times outside (time_start, time_end]. */
  ro.time = 0.5;
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp_eval, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_d(lp_eval, N));
  ro.time = 0.0;
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp_eval, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.time = 1.5;
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp_eval, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.time = -1.0;

  /* Argument checks inside the runtime: n = 0, steps = 0, unknown method, NaN inputs. */
  CHECK_STATUS(siflow_sample(plan, 0, &ro, x_other, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.steps = 0;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_other, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.steps = 100;
  ro.method = (siflow_method)99;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_other, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.method = SIFLOW_RK4;
  memcpy(x_other, x, sizeof x_other);
  x_other[3] = (float)NAN;
  CHECK_STATUS(siflow_decode(plan, N, x_other, &ro, x1, NULL, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_encode(plan, N, x_other, &ro, x1, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_log_prob(plan, N, x_other, &ro, lp_eval, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  x_other[3] = (float)INFINITY;
  CHECK_STATUS(siflow_log_prob(plan, N, x_other, &ro, lp_eval, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);

  siflow_plan_free(plan);
  siflow_plan_free(big);
}

static void test_velocity(const siflow_model* model) {
  enum { N = 7 };
  siflow_error error;
  siflow_plan* plan = make_plan(model, 3, SIFLOW_DIVERGENCE_NONE, 1); /* 3 chunks for N=7 */
  float t[N], y[N * CAPI_DIM], v[N * CAPI_DIM];
  double worst = 0.0;
  int i, k;
  printf("[velocity]\n");
  CHECK(plan != NULL);
  if (!plan) return;
  for (i = 0; i < N; ++i) {
    t[i] = (float)i / (N - 1);
    y[i * CAPI_DIM] = -1.5f + 0.5f * (float)i;
    y[i * CAPI_DIM + 1] = 0.75f - 0.3f * (float)i;
  }
  CHECK_STATUS(siflow_velocity(plan, N, t, y, v, fresh(&error)), SIFLOW_OK, &error);
  for (i = 0; i < N; ++i) {
    double ref[CAPI_DIM];
    reference_velocity(t[i], y + i * CAPI_DIM, ref);
    for (k = 0; k < CAPI_DIM; ++k) {
      const double d = fabs(ref[k] - v[i * CAPI_DIM + k]);
      if (!(d <= worst)) worst = d;
    }
  }
  printf("  max |v - v_ref| = %.3g\n", worst);
  CHECK(worst < 1e-5);
  CHECK_STATUS(siflow_velocity(plan, 0, t, y, v, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  t[2] = (float)NAN;
  CHECK_STATUS(siflow_velocity(plan, N, t, y, v, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  t[2] = 0.5f;
  y[5] = (float)NAN;
  CHECK_STATUS(siflow_velocity(plan, N, t, y, v, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  siflow_plan_free(plan);
}

static void test_divergence_modes(const siflow_model* model) {
  enum { N = 64 };
  siflow_error error;
  siflow_plan* exact = make_plan(model, N, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_plan* hutch = make_plan(model, 16, SIFLOW_DIVERGENCE_HUTCHINSON, 4);
  siflow_plan* hutch1 = make_plan(model, 16, SIFLOW_DIVERGENCE_HUTCHINSON, 1);
  siflow_plan* none = make_plan(model, 16, SIFLOW_DIVERGENCE_NONE, 1);
  siflow_run_options ro;
  float x[N * CAPI_DIM];
  double lp_exact[N], lp_h[N], lp_h2[N], lp_g[N];
  double mean_diff = 0.0;
  int i;
  printf("[divergence: exact, Hutchinson, none]\n");
  CHECK(exact && hutch && hutch1 && none);
  if (!exact || !hutch || !hutch1 || !none) return;
  siflow_run_options_init(&ro);
  ro.seed = 5;
  ro.steps = 40;
  CHECK_STATUS(siflow_sample(exact, N, &ro, x, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_log_prob(exact, N, x, &ro, lp_exact, fresh(&error)), SIFLOW_OK, &error);

  ro.divergence = SIFLOW_DIVERGENCE_HUTCHINSON;
  ro.probes = 4;
  ro.probe = SIFLOW_PROBE_RADEMACHER;
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_h, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_d(lp_h, N));
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_h2, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(lp_h, lp_h2, sizeof lp_h) == 0); /* probes are a function of the seed */
  /* Unbiased: over many rows the estimate centres on the exact value. */
  for (i = 0; i < N; ++i) mean_diff += (lp_h[i] - lp_exact[i]) / N;
  printf("  mean(Hutchinson - exact) = %.3g, max |diff| = %.3g\n", mean_diff,
         max_abs_diff_d(lp_h, lp_exact, N));
  CHECK(fabs(mean_diff) < 0.05);
  CHECK(max_abs_diff_d(lp_h, lp_exact, N) < 0.5);
  ro.probe = SIFLOW_PROBE_GAUSSIAN;
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_g, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_d(lp_g, N));
  CHECK(max_abs_diff_d(lp_g, lp_h, N) > 0.0);
  /* A sample's own log p with Hutchinson. */
  CHECK_STATUS(siflow_sample(hutch, N, &ro, x, lp_g, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_d(lp_g, N));
  /* More probes than the plan holds; an unknown probe kind. */
  ro.probe = SIFLOW_PROBE_RADEMACHER;
  ro.probes = 5;
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.probes = 0;
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.probes = 1;
  ro.probe = (siflow_probe)9;
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.probe = SIFLOW_PROBE_RADEMACHER;
  /* Exact divergence needs dim tangent directions: a Hutchinson plan with max_probes >= dim
   * serves it (bit-identical to an exact plan), a 1-probe Hutchinson plan refuses it. */
  ro.divergence = SIFLOW_DIVERGENCE_EXACT;
  CHECK_STATUS(siflow_log_prob(hutch, N, x, &ro, lp_h2, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_log_prob(exact, N, x, &ro, lp_h, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(lp_h, lp_h2, sizeof lp_h) == 0);
  ro.divergence = SIFLOW_DIVERGENCE_EXACT;
  CHECK_STATUS(siflow_log_prob(hutch1, N, x, &ro, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  /* A plan without tangents: samples fine, refuses anything that needs log p. */
  CHECK_STATUS(siflow_sample(none, N, &ro, x, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_sample(none, N, &ro, x, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_log_prob(none, N, x, &ro, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  /* A log-likelihood with divergence NONE is refused even on an exact plan. */
  ro.divergence = SIFLOW_DIVERGENCE_NONE;
  CHECK_STATUS(siflow_log_prob(exact, N, x, &ro, lp_h, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  siflow_plan_free(exact);
  siflow_plan_free(hutch);
  siflow_plan_free(hutch1);
  siflow_plan_free(none);
}

static void test_sde(const siflow_model* model, const siflow_model* uniform) {
  enum { N = 32 };
  siflow_error error;
  siflow_plan* plan = make_plan(model, 8, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_plan* uplan = make_plan(uniform, 8, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_run_options ro;
  float x_ode[N * CAPI_DIM], x_sde[N * CAPI_DIM], x_again[N * CAPI_DIM], x_em[N * CAPI_DIM];
  double lp[N];
  printf("[SDE]\n");
  CHECK(plan && uplan);
  if (!plan || !uplan) return;
  siflow_run_options_init(&ro);
  ro.seed = 3;
  ro.steps = 50;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_ode, NULL, fresh(&error)), SIFLOW_OK, &error);
  ro.sde_epsilon = 0.5;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_sde, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(x_sde, N * CAPI_DIM));
  CHECK(max_abs_diff_f(x_sde, x_ode, N * CAPI_DIM) > 1e-3);
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(x_sde, x_again, sizeof x_sde) == 0); /* noise is a function of the seed */
  ro.sde_method = SIFLOW_SDE_EULER_MARUYAMA;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_em, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(x_em, N * CAPI_DIM));
  CHECK(max_abs_diff_f(x_em, x_sde, N * CAPI_DIM) > 0.0);
  ro.sde_method = SIFLOW_SDE_HEUN;
  /* SDE samples have no per-sample log p. */
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  /* A constant epsilon needs a stop before t = 1. */
  ro.sde_schedule = SIFLOW_EPS_CONSTANT;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.sde_stop_delta = 0.1;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(x_again, N * CAPI_DIM));
  ro.sde_stop_delta = 2.0; /* leaves no SDE step */
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.sde_stop_delta = -0.1;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.sde_stop_delta = 0.0;
  ro.sde_schedule = SIFLOW_EPS_PROPORTIONAL_TO_A;
  ro.sde_epsilon = -1.0;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.sde_epsilon = 0.5;
  ro.sde_method = (siflow_sde_method)5;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.sde_method = SIFLOW_SDE_HEUN;
  /* A uniform base has no score: SDE sampling is unsupported (ODE sampling works). */
  CHECK_STATUS(siflow_sample(uplan, N, &ro, x_again, NULL, fresh(&error)), SIFLOW_UNSUPPORTED,
               &error);
  ro.sde_epsilon = 0.0;
  CHECK_STATUS(siflow_sample(uplan, N, &ro, x_again, lp, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(x_again, N * CAPI_DIM));
  siflow_plan_free(plan);
  siflow_plan_free(uplan);
}

static void test_numerical_error(const siflow_model* uniform) {
  siflow_error error;
  siflow_plan* plan = make_plan(uniform, 4, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_run_options ro;
  float x0[2 * CAPI_DIM] = {0.1f, -0.1f, 100.0f, 100.0f};
  float x1[2 * CAPI_DIM];
  printf("[numerical error]\n");
  CHECK(plan != NULL);
  if (!plan) return;
  siflow_run_options_init(&ro);
  /* dy/dt = y^2 from y0 = 100 blows up at t = 0.01: row 1 diverges. */
  CHECK_STATUS(siflow_decode(plan, 2, x0, &ro, x1, NULL, fresh(&error)), SIFLOW_NUMERICAL_ERROR,
               &error);
  CHECK(strstr(error.message, "row 1") != NULL);
  /* The small row alone is fine. */
  CHECK_STATUS(siflow_decode(plan, 1, x0, &ro, x1, NULL, fresh(&error)), SIFLOW_OK, &error);
  siflow_plan_free(plan);
}

static void test_progress(const siflow_model* model) {
  enum { N = 10 };
  siflow_error error;
  siflow_plan* plan = make_plan(model, 4, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_run_options ro;
  progress_state state;
  unsigned stray = 0;
  float x[N * CAPI_DIM], x0[N * CAPI_DIM];
  double lp[N];
  printf("[progress + cancel]\n");
  CHECK(plan != NULL);
  if (!plan) return;
  siflow_run_options_init(&ro);
  ro.steps = 12;
  ro.progress = on_progress;
  ro.progress_user = &state;

  /* A callback that never cancels sees done grow to total = n * steps. */
  memset(&state, 0, sizeof state);
  state.monotonic = 1;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, lp, fresh(&error)), SIFLOW_OK, &error);
  CHECK(state.calls == 3 * 12); /* 3 chunks of max_batch 4, 12 steps each */
  CHECK(state.total == (uint64_t)N * 12);
  CHECK(state.last_done == state.total);
  CHECK(state.monotonic);

  /* Cancelling stops every entry point with SIFLOW_CANCELLED and a message. */
  memset(&state, 0, sizeof state);
  state.monotonic = 1;
  state.cancel_at = 5;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_CANCELLED, &error);
  CHECK(state.calls == 5);
  CHECK(strstr(error.message, "cancel") != NULL);
  state.calls = 0;
  state.last_done = 0;
  CHECK_STATUS(siflow_decode(plan, N, x, &ro, x0, NULL, fresh(&error)), SIFLOW_CANCELLED, &error);
  state.calls = 0;
  state.last_done = 0;
  CHECK_STATUS(siflow_encode(plan, N, x, &ro, x0, fresh(&error)), SIFLOW_CANCELLED, &error);
  state.calls = 0;
  state.last_done = 0;
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp, fresh(&error)), SIFLOW_CANCELLED, &error);
  CHECK(state.calls == 5);
  state.calls = 0;
  state.last_done = 0;
  ro.sde_epsilon = 0.5;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_CANCELLED, &error);
  CHECK(state.calls == 5);
  ro.sde_epsilon = 0.0;
  /* Cancelling on the very first step works too. */
  state.calls = 0;
  state.last_done = 0;
  state.cancel_at = 1;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_CANCELLED, &error);
  CHECK(state.calls == 1);
  /* A progress pointer past a short struct_size is not read. */
  ro.progress = should_not_be_called;
  ro.progress_user = &stray;
  ro.struct_size = (uint32_t)offsetof(siflow_run_options, grid);
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(stray == 0);
  siflow_plan_free(plan);
}

static void test_struct_size(const siflow_model* model) {
  enum { N = 6 };
  siflow_error error;
  siflow_plan* plan = make_plan(model, 8, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_plan_options po;
  siflow_run_options ro, ref;
  siflow_plan* p2 = NULL;
  size_t bytes = 0;
  float x[N * CAPI_DIM], x_ref[N * CAPI_DIM], x0[N * CAPI_DIM];
  double lp[N], lp_ref[N];
  printf("[struct_size]\n");
  CHECK(plan != NULL);
  if (!plan) return;
  siflow_run_options_init(&ro);
  siflow_plan_options_init(&po);

  /* Too large or too small (< 4) struct_size: refused by every call that takes options. */
  ro.struct_size = sizeof ro + 8;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK(strstr(error.message, "struct_size") != NULL);
  CHECK_STATUS(siflow_decode(plan, N, x, &ro, x0, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_encode(plan, N, x, &ro, x0, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.struct_size = 0;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.struct_size = 3;
  CHECK_STATUS(siflow_log_prob(plan, N, x, &ro, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  po.struct_size = sizeof po + 1;
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &p2, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK(p2 == NULL);
  po.struct_size = 0;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &p2, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);

  /* A shorter (older) struct: fields past struct_size keep their defaults. */
  siflow_plan_options_init(&po);
  po.struct_size = (uint32_t)offsetof(siflow_plan_options, max_batch);
  po.max_batch = 0; /* past struct_size: ignored, the default 256 applies */
  CHECK_STATUS(siflow_arena_bytes(model, &po, &bytes, fresh(&error)), SIFLOW_OK, &error);
  {
    siflow_plan_options full;
    size_t full_bytes = 0;
    siflow_plan_options_init(&full);
    CHECK_STATUS(siflow_arena_bytes(model, &full, &full_bytes, fresh(&error)), SIFLOW_OK, &error);
    CHECK(bytes == full_bytes);
  }
  siflow_run_options_init(&ref);
  ref.steps = 10;
  CHECK_STATUS(siflow_sample(plan, N, &ref, x_ref, lp_ref, fresh(&error)), SIFLOW_OK, &error);
  siflow_run_options_init(&ro);
  ro.steps = 10;
  ro.struct_size = (uint32_t)offsetof(siflow_run_options, grid);
  ro.divergence = SIFLOW_DIVERGENCE_NONE; /* past struct_size: the default EXACT applies */
  CHECK_STATUS(siflow_log_prob(plan, N, x_ref, &ro, lp, fresh(&error)), SIFLOW_OK, &error);
  ro.divergence = SIFLOW_DIVERGENCE_EXACT;
  CHECK_STATUS(siflow_log_prob(plan, N, x_ref, &ref, lp_ref, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(lp, lp_ref, sizeof lp) == 0);
  /* The seed lies past this struct_size too, so sample must use the default seed 0. */
  ro.seed = 12345;
  CHECK_STATUS(siflow_sample(plan, N, &ro, x, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(x, x_ref, sizeof x) == 0);
  siflow_plan_free(plan);
}

static void test_null_arguments(const siflow_model* model) {
  siflow_error error;
  siflow_plan* plan = make_plan(model, 4, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_model* out_model = NULL;
  siflow_plan* out_plan = NULL;
  siflow_plan_options po;
  siflow_run_options ro;
  unsigned char bytes[64];
  size_t arena = 0;
  float t[2] = {0.5f, 0.5f}, x[2 * CAPI_DIM] = {0.1f, 0.2f, 0.3f, 0.4f}, y[2 * CAPI_DIM];
  double lp[2];
  printf("[NULL arguments]\n");
  CHECK(plan != NULL);
  if (!plan) return;
  siflow_plan_options_init(&po);
  siflow_run_options_init(&ro);
  memset(bytes, 0, sizeof bytes);

  CHECK_STATUS(siflow_model_load(NULL, 100, 1, &out_model, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK(out_model == NULL);
  CHECK_STATUS(siflow_model_load(bytes, sizeof bytes, 1, NULL, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_model_load_file(NULL, &out_model, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK(out_model == NULL);
  CHECK_STATUS(siflow_model_load_file("x.sif", NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK(siflow_model_dim(NULL) == 0);

  CHECK_STATUS(siflow_arena_bytes(NULL, &po, &arena, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_arena_bytes(model, NULL, &arena, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_arena_bytes(model, &po, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_plan_create(NULL, &po, NULL, 0, &out_plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(out_plan == NULL);
  CHECK_STATUS(siflow_plan_create(model, NULL, NULL, 0, &out_plan, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, NULL, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);

  CHECK_STATUS(siflow_sample(NULL, 2, &ro, y, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_sample(plan, 2, NULL, y, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_sample(plan, 2, &ro, NULL, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);

  CHECK_STATUS(siflow_decode(NULL, 2, x, &ro, y, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_decode(plan, 2, NULL, &ro, y, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_decode(plan, 2, x, NULL, y, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_decode(plan, 2, x, &ro, NULL, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);

  CHECK_STATUS(siflow_encode(NULL, 2, x, &ro, y, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_encode(plan, 2, NULL, &ro, y, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_encode(plan, 2, x, NULL, y, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_encode(plan, 2, x, &ro, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);

  CHECK_STATUS(siflow_log_prob(NULL, 2, x, &ro, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_log_prob(plan, 2, NULL, &ro, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_log_prob(plan, 2, x, NULL, lp, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_log_prob(plan, 2, x, &ro, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);

  CHECK_STATUS(siflow_velocity(NULL, 2, t, x, y, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_velocity(plan, 2, NULL, x, y, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_velocity(plan, 2, t, NULL, y, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  CHECK_STATUS(siflow_velocity(plan, 2, t, x, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);

  /* Freeing NULL handles is a no-op. */
  siflow_model_free(NULL);
  siflow_plan_free(NULL);
  CHECK(1);

  /* error == NULL is accepted by failing and succeeding calls alike. */
  CHECK(siflow_model_load(NULL, 100, 1, &out_model, NULL) == SIFLOW_INVALID_ARGUMENT);
  CHECK(siflow_model_load(bytes, sizeof bytes, 1, &out_model, NULL) == SIFLOW_INVALID_MODEL);
  CHECK(siflow_model_load_file("/nonexistent.sif", &out_model, NULL) == SIFLOW_IO_ERROR);
  CHECK(siflow_arena_bytes(model, &po, NULL, NULL) == SIFLOW_INVALID_ARGUMENT);
  CHECK(siflow_arena_bytes(model, &po, &arena, NULL) == SIFLOW_OK);
  CHECK(siflow_plan_create(model, &po, bytes, 1, &out_plan, NULL) == SIFLOW_ARENA_TOO_SMALL);
  CHECK(siflow_plan_create(model, &po, NULL, 0, &out_plan, NULL) == SIFLOW_OK);
  CHECK(siflow_sample(out_plan, 2, &ro, y, lp, NULL) == SIFLOW_OK);
  CHECK(siflow_sample(out_plan, 0, &ro, y, lp, NULL) == SIFLOW_INVALID_ARGUMENT);
  CHECK(siflow_decode(out_plan, 2, x, &ro, y, lp, NULL) == SIFLOW_OK);
  CHECK(siflow_encode(out_plan, 2, x, &ro, y, NULL) == SIFLOW_OK);
  CHECK(siflow_log_prob(out_plan, 2, x, &ro, lp, NULL) == SIFLOW_OK);
  CHECK(siflow_log_prob(out_plan, 2, x, NULL, lp, NULL) == SIFLOW_INVALID_ARGUMENT);
  CHECK(siflow_velocity(out_plan, 2, t, x, y, NULL) == SIFLOW_OK);
  CHECK(siflow_velocity(NULL, 2, t, x, y, NULL) == SIFLOW_INVALID_ARGUMENT);
  siflow_plan_free(out_plan);
  siflow_plan_free(plan);
}

/* Plans are independent: two plans of one model interleave without affecting each other. */
static void test_two_plans(const siflow_model* model) {
  enum { N = 5 };
  siflow_error error;
  siflow_plan* a = make_plan(model, 2, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_plan* b = make_plan(model, 2, SIFLOW_DIVERGENCE_EXACT, 1);
  siflow_run_options ro;
  float xa[N * CAPI_DIM], xb[N * CAPI_DIM], xa2[N * CAPI_DIM];
  double la[N], lb[N];
  printf("[two plans]\n");
  CHECK(a && b);
  if (!a || !b) return;
  siflow_run_options_init(&ro);
  ro.seed = 99;
  ro.steps = 20;
  CHECK_STATUS(siflow_sample(a, N, &ro, xa, la, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_log_prob(b, N, xa, &ro, lb, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_sample(b, N, &ro, xb, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK_STATUS(siflow_sample(a, N, &ro, xa2, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(memcmp(xa, xb, sizeof xa) == 0);
  CHECK(memcmp(xa, xa2, sizeof xa) == 0);
  CHECK(max_abs_diff_d(la, lb, N) < 1e-3);
  siflow_plan_free(a);
  siflow_plan_free(b);
}

static void test_info_and_validate(const siflow_model* model, const siflow_model* uniform) {
  siflow_error error;
  siflow_model_info info;
  siflow_validation_report report;
  siflow_plan_options po;
  const char* key = NULL;
  const char* value = NULL;
  const char* op = NULL;
  uint32_t in = 0, width = 0, i;
  printf("[info, metadata, nodes, validate]\n");
  memset(&info, 0xab, sizeof info);
  info.struct_size = sizeof info;
  CHECK_STATUS(siflow_model_get_info(model, &info, fresh(&error)), SIFLOW_OK, &error);
  CHECK(info.struct_size == sizeof info);
  CHECK(info.dim == CAPI_DIM);
  CHECK(strcmp(info.name, "capi-test") == 0);
  CHECK(info.format_major == 1);
  CHECK(info.interpolant == SIFLOW_INTERPOLANT_TRIG);
  CHECK(info.base == SIFLOW_BASE_NORMAL);
  CHECK(info.normalized == 1);
  CHECK(info.score_available == 1);
  CHECK(info.time_start == 0.0 && info.time_end == 1.0);
  CHECK(info.parameter_count ==
        (uint64_t)CAPI_HIDDEN * CAPI_IN + CAPI_HIDDEN + CAPI_DIM * CAPI_HIDDEN + CAPI_DIM);
  CHECK(info.test_vector_count == 0 && info.test_trajectory_count == 0);
  CHECK(info.metadata_count == 1);
  CHECK(siflow_model_metadata(model, 0, &key, &value) == 1);
  CHECK(key && strcmp(key, "purpose") == 0 && value && strcmp(value, "C API test") == 0);
  CHECK(siflow_model_metadata(model, 1, &key, &value) == 0);
  CHECK(key && key[0] == '\0' && value && value[0] == '\0');
  CHECK(siflow_model_metadata(NULL, 0, NULL, NULL) == 0);
  for (i = 0; siflow_model_node(model, i, &op, &in, &width); ++i) {
  }
  CHECK(i == info.node_count);
  CHECK(siflow_model_node(model, i, &op, &in, &width) == 0);
  CHECK(op && op[0] == '\0' && in == 0 && width == 0);
  CHECK(siflow_model_node(NULL, 0, NULL, NULL, NULL) == 0);
  CHECK(siflow_model_get_info(uniform, &info, NULL) == SIFLOW_OK);
  CHECK(info.base == SIFLOW_BASE_UNIFORM && info.interpolant == SIFLOW_INTERPOLANT_LINEAR);
  CHECK(info.score_available == 0 && info.normalized == 0);
  CHECK(info.sample_rank == 1 && info.sample_shape[0] == info.dim && info.sample_shape[1] == 0);

  /* A short struct_size gets only the fields it covers; a wrong one is refused. */
  memset(&info, 0xab, sizeof info);
  info.struct_size = (uint32_t)offsetof(siflow_model_info, name);
  CHECK_STATUS(siflow_model_get_info(model, &info, fresh(&error)), SIFLOW_OK, &error);
  CHECK(info.dim == CAPI_DIM);
  CHECK(info.node_count == 0xabababab);
  info.struct_size = sizeof info + 8;
  CHECK_STATUS(siflow_model_get_info(model, &info, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "struct_size") != NULL);
  CHECK_STATUS(siflow_model_get_info(NULL, &info, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_model_get_info(model, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);

  /* The main model embeds no test vectors: validation says so. */
  report.struct_size = sizeof report;
  CHECK_STATUS(siflow_validate(model, NULL, NULL, NULL, &report, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "no test vectors") != NULL);
  siflow_plan_options_init(&po);
  po.backend = SIFLOW_BACKEND_REFERENCE;
  po.struct_size = 2;
  CHECK_STATUS(siflow_validate(uniform, &po, NULL, NULL, &report, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "struct_size") != NULL);
  report.struct_size = sizeof report + 1;
  CHECK_STATUS(siflow_validate(uniform, NULL, NULL, NULL, &report, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_validate(uniform, NULL, NULL, NULL, NULL, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK_STATUS(siflow_validate(NULL, NULL, NULL, NULL, &report, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
}

/* The uniform model's trajectory test (v = y * y): validation with a progress callback that
 * never cancels sees every RK4 step, and one that cancels stops it at once. */
static void test_validate_progress(const siflow_model* uniform) {
  const uint64_t total = 4ull * CAPI_TRAJECTORY_STEPS; /* one trajectory, 4 RK4 stages a step */
  siflow_error error;
  siflow_validation_report report;
  siflow_plan_options po;
  progress_state state;
  printf("[validate: progress + cancel]\n");
  siflow_plan_options_init(&po);
  po.backend = SIFLOW_BACKEND_REFERENCE;

  report.struct_size = sizeof report;
  CHECK_STATUS(siflow_validate(uniform, &po, NULL, NULL, &report, fresh(&error)), SIFLOW_OK,
               &error);
  CHECK(report.velocity_count == 0 && report.trajectory_count == 1);
  CHECK(report.trajectory_steps == CAPI_TRAJECTORY_STEPS);
  CHECK(report.trajectory_ok == 1 && report.trajectory_max_error < 1e-5);

  memset(&state, 0, sizeof state);
  state.monotonic = 1;
  memset(&report, 0, sizeof report);
  report.struct_size = sizeof report;
  CHECK_STATUS(siflow_validate(uniform, &po, on_progress, &state, &report, fresh(&error)),
               SIFLOW_OK, &error);
  CHECK(state.calls == CAPI_TRAJECTORY_STEPS);
  CHECK(state.monotonic == 1 && state.last_done == total && state.total == total);
  CHECK(report.trajectory_count == 1 && report.trajectory_ok == 1);

  /* Cancelled at the 10th of 4096 steps: SIFLOW_CANCELLED, no further call, no report. */
  memset(&state, 0, sizeof state);
  state.monotonic = 1;
  state.cancel_at = 10;
  memset(&report, 0, sizeof report);
  report.struct_size = sizeof report;
  CHECK_STATUS(siflow_validate(uniform, &po, on_progress, &state, &report, fresh(&error)),
               SIFLOW_CANCELLED, &error);
  CHECK(strstr(error.message, "cancelled") != NULL);
  CHECK(state.calls == 10 && state.last_done == 40 && state.total == total);
  CHECK(report.trajectory_count == 0);
}

/* A class-conditional model through the C API: ModelInfo, labels in the run options, the plan's
 * guidance weight, and the refusals. v = W x + e_y (capi_model.h). */
static void test_labels(const char* path) {
  siflow_error error;
  siflow_model* model = NULL;
  siflow_model_info info;
  siflow_plan_options po;
  siflow_run_options ro;
  siflow_plan* plan = NULL;
  siflow_plan* guided = NULL;
  const float t[3] = {0.2f, 0.5f, 0.8f};
  const float x[6] = {0.5f, -1.0f, 1.5f, 0.25f, -0.75f, 2.0f};
  const int32_t labels[3] = {0, 1, 2};
  float v[6], samples[6];
  size_t i, k;
  CHECK_STATUS(siflow_model_load_file(path, &model, fresh(&error)), SIFLOW_OK, &error);
  if (!model) return;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_STATUS(siflow_model_get_info(model, &info, fresh(&error)), SIFLOW_OK, &error);
  CHECK(info.takes_labels == 1);
  CHECK(info.label_classes == 3);
  CHECK(info.null_label == 2);
  CHECK(info.cond_width == 0);
  CHECK(info.has_null_cond == 0);
  plan = make_plan(model, 2, SIFLOW_DIVERGENCE_NONE, 1);
  siflow_run_options_init(&ro);
  CHECK(ro.label == -1 && ro.labels == NULL && ro.cond == NULL && ro.temperature == 1.0);
  /* No label: refused by name. */
  CHECK_STATUS(siflow_velocity_conditioned(plan, 3, t, x, &ro, v, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "takes a class label") != NULL);
  CHECK_STATUS(siflow_velocity(plan, 3, t, x, v, fresh(&error)), SIFLOW_INVALID_ARGUMENT, &error);
  ro.labels = labels;
  CHECK_STATUS(siflow_velocity_conditioned(plan, 3, t, x, &ro, v, fresh(&error)), SIFLOW_OK,
               &error);
  for (i = 0; i < 3; ++i)
    for (k = 0; k < 2; ++k) {
      const double ref = (double)capi_label_w[2 * k] * x[2 * i] +
                         (double)capi_label_w[2 * k + 1] * x[2 * i + 1] +
                         capi_label_table[2 * labels[i] + k];
      CHECK(fabs(v[2 * i + k] - ref) < 1e-5);
    }
  ro.labels = NULL;
  ro.label = 3;
  CHECK_STATUS(siflow_velocity_conditioned(plan, 3, t, x, &ro, v, fresh(&error)),
               SIFLOW_INVALID_ARGUMENT, &error);
  CHECK(strstr(error.message, "label 3 is outside") != NULL);
  /* Guidance 3 with label 0: e_2 + 3 (e_0 - e_2). */
  siflow_plan_options_init(&po);
  CHECK(po.guidance == 1.0);
  po.max_batch = 2;
  po.divergence = SIFLOW_DIVERGENCE_NONE;
  po.guidance = 3.0;
  CHECK_STATUS(siflow_plan_create(model, &po, NULL, 0, &guided, fresh(&error)), SIFLOW_OK, &error);
  ro.label = 0;
  CHECK_STATUS(siflow_velocity_conditioned(guided, 3, t, x, &ro, v, fresh(&error)), SIFLOW_OK,
               &error);
  for (i = 0; i < 3; ++i)
    for (k = 0; k < 2; ++k) {
      const double e0 = capi_label_table[4 + k], ey = capi_label_table[k];
      const double ref = (double)capi_label_w[2 * k] * x[2 * i] +
                         (double)capi_label_w[2 * k + 1] * x[2 * i + 1] + e0 + 3.0 * (ey - e0);
      CHECK(fabs(v[2 * i + k] - ref) < 1e-5);
    }
  /* Sampling with a label, a temperature, and refused without the label. */
  ro.steps = 4;
  ro.temperature = 0.5;
  CHECK_STATUS(siflow_sample(guided, 3, &ro, samples, NULL, fresh(&error)), SIFLOW_OK, &error);
  CHECK(all_finite_f(samples, 6));
  ro.temperature = 0.0;
  CHECK_STATUS(siflow_sample(guided, 3, &ro, samples, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  ro.temperature = 1.0;
  ro.label = -1;
  CHECK_STATUS(siflow_sample(guided, 3, &ro, samples, NULL, fresh(&error)), SIFLOW_INVALID_ARGUMENT,
               &error);
  siflow_plan_free(guided);
  siflow_plan_free(plan);
  siflow_model_free(model);
}

int main(int argc, char** argv) {
  siflow_error error;
  siflow_model* model = NULL;
  siflow_model* uniform = NULL;
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s MODEL.sif UNIFORM.sif [LABELS.sif] (written by make_capi_model)\n",
            argv[0]);
    return 2;
  }
  test_version();
  test_options_init();
  test_load(argv[1], argv[2]);
  if (siflow_model_load_file(argv[1], &model, &error) != SIFLOW_OK ||
      siflow_model_load_file(argv[2], &uniform, &error) != SIFLOW_OK) {
    fprintf(stderr, "cannot load the test models: %s\n", error.message);
    return 1;
  }
  test_arena_and_plan(model);
  test_sample_decode_encode(model);
  test_velocity(model);
  test_divergence_modes(model);
  test_sde(model, uniform);
  test_numerical_error(uniform);
  test_progress(model);
  test_struct_size(model);
  test_null_arguments(model);
  test_two_plans(model);
  test_info_and_validate(model, uniform);
  test_validate_progress(uniform);
  if (argc == 4) test_labels(argv[3]);
  siflow_model_free(model);
  siflow_model_free(uniform);
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
