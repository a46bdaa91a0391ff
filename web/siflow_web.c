// SPDX-License-Identifier: Apache-2.0
// What the JavaScript wrapper (siflow.mjs) needs beyond the C API itself: the wasm32 layout of the
// C API's option and error structs (so the wrapper never hard-codes an offset), and one fixed
// progress callback that forwards siflow_progress_fn calls to a JavaScript function.
#include <emscripten.h>
#include <stddef.h>
#include <stdint.h>

#include "siflow/siflow.h"

// Calls Module.siflowProgress(user, done, total) when the wrapper set one; a falsy result
// cancels the run (SIFLOW_CANCELLED). uint64_t counts pass as doubles: exact below 2^53.
EM_JS(int, siflow_web_call_progress, (void* user, double done, double total), {
  const report = Module["siflowProgress"];
  return report ? (report(user, done, total) ? 1 : 0) : 1;
});

static int forward_progress(void* user, uint64_t done, uint64_t total) {
  return siflow_web_call_progress(user, (double)done, (double)total);
}

// The function pointer to store in siflow_run_options.progress.
EMSCRIPTEN_KEEPALIVE siflow_progress_fn siflow_web_progress(void) { return forward_progress; }

// Sizes and field offsets, in the order siflow.mjs reads them (its LAYOUT_FIELDS).
EMSCRIPTEN_KEEPALIVE const uint32_t* siflow_web_layout(void) {
  static const uint32_t layout[] = {
      sizeof(siflow_plan_options),
      offsetof(siflow_plan_options, max_batch),
      offsetof(siflow_plan_options, divergence),
      offsetof(siflow_plan_options, max_probes),
      offsetof(siflow_plan_options, threads),
      offsetof(siflow_plan_options, backend),
      sizeof(siflow_run_options),
      offsetof(siflow_run_options, method),
      offsetof(siflow_run_options, steps),
      offsetof(siflow_run_options, seed),
      offsetof(siflow_run_options, divergence),
      offsetof(siflow_run_options, probes),
      offsetof(siflow_run_options, probe),
      offsetof(siflow_run_options, time),
      offsetof(siflow_run_options, sde_epsilon),
      offsetof(siflow_run_options, progress),
      offsetof(siflow_run_options, progress_user),
      sizeof(siflow_error),
      offsetof(siflow_error, code),
      offsetof(siflow_error, message),
      sizeof(size_t),
  };
  return layout;
}
