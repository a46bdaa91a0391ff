// SPDX-License-Identifier: Apache-2.0
/* Install-tree consumer (C99): loads the model file written by the C++ consumer through the C
 * API and samples 4 points, using only the installed siflow.h and library. Exit 0 iff all
 * calls succeed and the samples are finite. */
#include <siflow/siflow.h>
#include <stdio.h>

/* Finite without libm: Inf - Inf and NaN - NaN are NaN. */
static int is_finite_value(double v) { return v - v == 0.0; }

int main(int argc, char** argv) {
  siflow_error error;
  siflow_model* model = NULL;
  siflow_plan* plan = NULL;
  siflow_plan_options plan_options;
  siflow_run_options run_options;
  float x[4 * 2];
  double logp[4];
  int i;
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.sif\n", argv[0]);
    return 2;
  }
  if (siflow_model_load_file(argv[1], &model, &error) != SIFLOW_OK) {
    fprintf(stderr, "c consumer: load failed: %s\n", error.message);
    return 1;
  }
  siflow_plan_options_init(&plan_options);
  plan_options.max_batch = 4;
  if (siflow_plan_create(model, &plan_options, NULL, 0, &plan, &error) != SIFLOW_OK) {
    fprintf(stderr, "c consumer: plan failed: %s\n", error.message);
    siflow_model_free(model);
    return 1;
  }
  siflow_run_options_init(&run_options);
  run_options.seed = 7;
  run_options.steps = 20;
  if (siflow_sample(plan, 4, &run_options, x, logp, &error) != SIFLOW_OK) {
    fprintf(stderr, "c consumer: sample failed: %s\n", error.message);
    siflow_plan_free(plan);
    siflow_model_free(model);
    return 1;
  }
  for (i = 0; i < 4; ++i) {
    if (!is_finite_value(x[2 * i]) || !is_finite_value(x[2 * i + 1]) || !is_finite_value(logp[i])) {
      fprintf(stderr, "c consumer: sample %d is not finite\n", i);
      return 1;
    }
    printf("sample %d: %.6f %.6f logp %.6f\n", i, x[2 * i], x[2 * i + 1], logp[i]);
  }
  printf("siflow %s c consumer ok (dim %u)\n", siflow_version(), siflow_model_dim(model));
  siflow_plan_free(plan);
  siflow_model_free(model);
  return 0;
}
