// SPDX-License-Identifier: Apache-2.0
/* Embedding siflow in a C program without a heap: the model is linked into the binary as a
 * 64-byte aligned byte array (used in place, never copied), its tables are loaded into a static
 * buffer, the plan lives in a static arena, and the runtime never calls malloc. Draws samples
 * with their log-likelihoods, scores them again with log_prob, and checks that the two agree.
 * Exit status 0 when they do. The buffers are sized at compile time (`siflow info MODEL --batch
 * 16` prints both numbers); a buffer too small is an error that names the size needed.
 *
 * Build: see examples/embed_c/CMakeLists.txt (any .sif can be embedded with
 * siflow_embed_file). Run: embed_c [N] [--bits]. --bits runs the reference backend and also
 * prints every sample and log-likelihood as hex bits, the same on every platform (tests/run.sh
 * compares the host with the bare-metal image under qemu-system-arm). Integers are printed as
 * unsigned long: newlib-nano's printf has no %zu and no 64-bit integers. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "siflow/siflow.h"

extern const unsigned char siflow_embedded_model[];
extern const size_t siflow_embedded_model_size;

/* Plan for up to 16 rows per chunk: a larger request streams through in chunks. */
#define MAX_BATCH 16
/* Static memory for the loaded model's tables and for the plan (its arena and tables). */
#define MODEL_BYTES (64 * 1024)
#define ARENA_BYTES (512 * 1024)
static _Alignas(64) unsigned char model_memory[MODEL_BYTES];
static _Alignas(64) unsigned char arena[ARENA_BYTES];

#define MAX_SAMPLES 64
#define MAX_DIM 16
static float samples[MAX_SAMPLES * MAX_DIM];
static double logp_sampled[MAX_SAMPLES], logp_scored[MAX_SAMPLES];

static int fail(const char* what, const siflow_error* e) {
  fprintf(stderr, "embed_c: %s: %s\n", what, e->message);
  return 1;
}

static unsigned long float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (unsigned long)u;
}
/* A double's bits as two 32-bit halves. */
static void print_double_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  printf(" %08lx%08lx", (unsigned long)(u >> 32), (unsigned long)(u & 0xffffffffu));
}

int main(int argc, char** argv) {
  const int bits = argc > 2 && strcmp(argv[2], "--bits") == 0;
  const size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 8;
  if (n == 0 || n > MAX_SAMPLES) {
    fprintf(stderr, "embed_c: N must be in [1, %d]\n", MAX_SAMPLES);
    return 2;
  }
  siflow_error err;
  siflow_model* model = NULL;
  /* The array is 64-byte aligned, so the model reads its weights in place; only its tables go
   * into model_memory. */
  if (siflow_model_load_in(siflow_embedded_model, siflow_embedded_model_size, model_memory,
                           sizeof model_memory, &model, &err))
    return fail("load", &err);
  const uint32_t dim = siflow_model_dim(model);
  if (dim > MAX_DIM) {
    fprintf(stderr, "embed_c: model dimension %" PRIu32 " exceeds MAX_DIM %d\n", dim, MAX_DIM);
    siflow_model_free(model);
    return 1;
  }

  siflow_plan_options po;
  siflow_plan_options_init(&po);
  po.max_batch = MAX_BATCH;
  if (bits) po.backend = SIFLOW_BACKEND_REFERENCE;
  printf("model: dim %lu, %lu bytes linked in; static memory %d + %d bytes\n", (unsigned long)dim,
         (unsigned long)siflow_embedded_model_size, MODEL_BYTES, ARENA_BYTES);
  siflow_plan* plan = NULL;
  if (siflow_plan_create(model, &po, arena, sizeof arena, &plan, &err))
    return fail("plan_create", &err);

  /* Nothing above or below touches the heap. */
  siflow_run_options ro;
  siflow_run_options_init(&ro);
  ro.method = SIFLOW_RK4;
  ro.steps = 32;
  ro.seed = 42;
  if (siflow_sample(plan, n, &ro, samples, logp_sampled, &err)) return fail("sample", &err);
  if (siflow_log_prob(plan, n, samples, &ro, logp_scored, &err)) return fail("log_prob", &err);

  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    printf("x[%lu] = (", (unsigned long)i);
    for (uint32_t k = 0; k < dim; ++k) printf(k ? ", %.5f" : "%.5f", samples[i * dim + k]);
    printf(")  log p = %.5f (sampled) %.5f (scored)\n", logp_sampled[i], logp_scored[i]);
    if (bits) {
      printf("bits %lu", (unsigned long)i);
      for (uint32_t k = 0; k < dim; ++k) printf(" %08lx", float_bits(samples[i * dim + k]));
      print_double_bits(logp_sampled[i]);
      print_double_bits(logp_scored[i]);
      printf("\n");
    }
    const double d = fabs(logp_sampled[i] - logp_scored[i]);
    if (!(d <= worst)) worst = d;
  }
  siflow_plan_free(plan);
  siflow_model_free(model);
  /* Forward and backward RK4 with 32 steps agree to the integrator's error. */
  printf("largest |sampled - scored| log p: %.2e\n", worst);
  return worst < 1e-2 ? 0 : 1;
}
