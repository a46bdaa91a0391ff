// A model's data normalisation y = (x - mean) / std and its inverse, applied in place to rows.
// A model without normalisation leaves the rows untouched. Never allocates.
#pragma once

#include <cstddef>

#include "format/model_data.hpp"

namespace siflow::detail {

inline void normalize(const ModelData& md, float* x, size_t rows) {
  if (!md.norm_mean) return;
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < md.dim; ++k) {
      float& v = x[r * md.dim + k];
      v = (v - md.norm_mean[k]) / md.norm_std[k];
    }
}

inline void denormalize(const ModelData& md, float* y, size_t rows) {
  if (!md.norm_mean) return;
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < md.dim; ++k) {
      float& v = y[r * md.dim + k];
      v = md.norm_mean[k] + md.norm_std[k] * v;
    }
}

}  // namespace siflow::detail
