// SPDX-License-Identifier: Apache-2.0
// A model's data normalisation y = (x - mean) / std and its inverse, applied in place to rows.
// A model without normalisation leaves the rows untouched. Never allocates. Both return the
// first row holding a non-finite result (`rows` when there is none): finite inputs can still
// overflow float with extreme normalisation parameters, and callers must report it.
#pragma once

#include <cstddef>

#include "format/model_data.hpp"
#include "math/elementary.hpp"

namespace siflow::detail {

inline size_t normalize(const ModelData& md, float* x, size_t rows) {
  if (!md.norm_mean) return rows;
  size_t bad = rows;
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < md.dim; ++k) {
      float& v = x[r * md.dim + k];
      v = (v - md.norm_mean[k]) / md.norm_std[k];
      if (bad == rows && !math::is_finite(v)) bad = r;
    }
  return bad;
}

inline size_t denormalize(const ModelData& md, float* y, size_t rows) {
  if (!md.norm_mean) return rows;
  size_t bad = rows;
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < md.dim; ++k) {
      float& v = y[r * md.dim + k];
      v = md.norm_mean[k] + md.norm_std[k] * v;
      if (bad == rows && !math::is_finite(v)) bad = r;
    }
  return bad;
}

}  // namespace siflow::detail
