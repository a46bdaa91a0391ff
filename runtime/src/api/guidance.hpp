// SPDX-License-Identifier: Apache-2.0
// Conditioning and classifier-free guidance for a plan's calls: the checks of a call's labels
// and conditions, filling the plan's per-row label and condition buffers for a chunk, and one
// evaluation of the (guided) velocity field with its divergence (docs/math.md, "Conditioning and
// classifier-free guidance"). Never allocates.
#pragma once

#include <cstddef>

#include "plan/build.hpp"
#include "siflow/siflow.hpp"

namespace siflow::detail {

// One evaluation of the (guided) velocity field on `rows` rows of x at per-row times `t_rows`
// (or one time `t` for every row when t_rows is null), with the divergence when `div` is set.
// The chunk's labels and conditions are already in p.label_rows / p.cond_rows
// (fill_call_conditioning). Guided (w not 0 or 1): the network runs 2 rows rows at once, x twice,
// the conditional rows first and the null rows after them, and v_w = v(null) + w (v(y) - v(null))
// in double, rounded once; the divergence likewise from the two halves' tangents.
void evaluate_network(PlanData& p, const float* t_rows, double t, const float* x, size_t rows,
                      DivergenceMode mode, size_t probes, float* v, double* div);

// Checks a call's conditioning against the model and the plan before any work: labels present
// when the model reads them (unless guidance 0 runs only the null label), in range, absent for a
// model without a label input; likewise finite conditions. `what` prefixes the message.
Status check_call_conditioning(const PlanData& p, const char* what, size_t n,
                               const Conditioning& c);

// Writes the labels and conditions of rows [first, first + rows) of a call into the plan's
// per-row buffers: the given ones (the null ones when guidance is 0), then, for a guided plan,
// the null ones for the second half.
void fill_call_conditioning(PlanData& p, const Conditioning& c, size_t first, size_t rows);

}  // namespace siflow::detail
