// SPDX-License-Identifier: Apache-2.0
/* Parameters of the C API test model, shared by the C++ writer (make_capi_model.cc) and the C
 * test (test_capi.c) so that the test can compute v(t, y) by hand. Plain C, no siflow types. */
#ifndef SIFLOW_TESTS_CAPI_MODEL_H_
#define SIFLOW_TESTS_CAPI_MODEL_H_

/* v(t, y) = W2 tanh(W1 [y, t] + b1) + b2 in flow coordinates; data x = mean + std * y. */
#define CAPI_DIM 2
#define CAPI_HIDDEN 8
#define CAPI_IN (CAPI_DIM + 1)

static const float capi_w1[CAPI_HIDDEN * CAPI_IN] = {
    0.50f,  -0.25f, 0.10f,  /* row 0 */
    0.30f,  0.20f,  -0.40f, /* row 1 */
    -0.60f, 0.10f,  0.20f,  /* row 2 */
    0.05f,  0.50f,  0.30f,  /* row 3 */
    -0.20f, -0.35f, 0.15f,  /* row 4 */
    0.40f,  -0.10f, -0.25f, /* row 5 */
    0.15f,  0.45f,  0.05f,  /* row 6 */
    -0.30f, 0.25f,  -0.10f  /* row 7 */
};
static const float capi_b1[CAPI_HIDDEN] = {0.1f, 0.0f, -0.1f, 0.2f, 0.05f, -0.15f, 0.0f, 0.1f};
static const float capi_w2[CAPI_DIM * CAPI_HIDDEN] = {
    0.30f,  -0.20f, 0.10f, 0.40f,  -0.10f, 0.25f, 0.20f,  -0.30f, /* row 0 */
    -0.15f, 0.35f,  0.20f, -0.05f, 0.30f,  0.10f, -0.25f, 0.15f   /* row 1 */
};
static const float capi_b2[CAPI_DIM] = {0.05f, -0.05f};
static const float capi_norm_mean[CAPI_DIM] = {1.0f, -0.5f};
static const float capi_norm_std[CAPI_DIM] = {2.0f, 0.5f};

/* The second model: uniform base on [-1, 1]^2 and v = y * y (blows up in finite time from large
 * y), for SIFLOW_UNSUPPORTED (SDE needs a Gaussian base) and SIFLOW_NUMERICAL_ERROR. */
#define CAPI_UNIFORM_LOW (-1.0f)
#define CAPI_UNIFORM_HIGH 1.0f

/* The uniform model's embedded trajectory test: v = y * y, so y(1) = y0 / (1 - y0) from every
 * start y0 = CAPI_TRAJECTORY_START, integrated with CAPI_TRAJECTORY_STEPS RK4 steps. */
#define CAPI_TRAJECTORY_START 0.25f
#define CAPI_TRAJECTORY_STEPS 4096

/* The third model (class-conditional): v = W x + e_y with W [2][2] and a 3-class embedding
 * table [3][2] whose label 2 is the null label. */
static const float capi_label_w[4] = {0.5f, -0.25f, 0.125f, -0.75f};
static const float capi_label_table[6] = {1.5f, -2.0f, -1.0f, 0.75f, 0.25f, 0.5f};

#endif /* SIFLOW_TESTS_CAPI_MODEL_H_ */
