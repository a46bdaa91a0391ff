// SPDX-License-Identifier: Apache-2.0
// Heap-backed integrator workspace for the oracle tests that call integrate/solve.hpp directly:
// every stage and multistep history buffer (with their divergence rows) and the state, in
// double; and a run check that never stops the run.
#pragma once

#include <cstddef>
#include <vector>

#include "integrate/solve.hpp"

namespace oracle {

struct Workspace {
  Workspace(size_t n, size_t rows) {
    for (int k = 0; k < siflow::kMaxStages; ++k) {
      stages[k].assign(n, 0);
      divs[k].assign(rows, 0);
      ws.stage[k] = stages[k].data();
      ws.stage_div[k] = divs[k].data();
    }
    for (int k = 0; k < siflow::kMaxHistory; ++k) {
      hist[k].assign(n, 0);
      hist_divs[k].assign(rows, 0);
      ws.history[k] = hist[k].data();
      ws.history_div[k] = hist_divs[k].data();
    }
    state.assign(n, 0);
    ws.state = state.data();
  }
  std::vector<double> stages[siflow::kMaxStages], hist[siflow::kMaxHistory], state;
  std::vector<double> divs[siflow::kMaxStages], hist_divs[siflow::kMaxHistory];
  siflow::OdeWorkspace<double> ws;
};

struct NoCheck {
  siflow::Status operator()(size_t) const { return siflow::Status(); }
  siflow::Status operator()(size_t, double) const { return siflow::Status(); }
};

}  // namespace oracle
