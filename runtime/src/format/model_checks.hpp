// SPDX-License-Identifier: Apache-2.0
// Loader checks that need none of the loader's state: a stored per-sample shape and the
// interpolant (format/model_checks.cc). Only format/loader.cc calls them.
#pragma once

#include <cstdint>

#include "format/model_data.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"

namespace siflow::detail {

// A stored per-sample shape: absent or empty leaves *out at rank 0; else rank 1 to 3, every
// extent at least 1, product `width`. `what` prefixes the message.
Status read_shape(const char* what, const flatbuffers::Vector<uint32_t>* v, uint32_t width,
                  Shape* out);

// The model's interpolant into data->interpolant (trig when absent) and data->info's
// score_available: a learned Fourier interpolant's coefficients are copied into `coefficients`
// (room for `capacity` terms of alpha and of beta, reserved by the loader), then a(t) and b(t)
// are proved never to vanish together within a bounded check.
Status check_interpolant(const fb::Model& model, double* coefficients, uint32_t capacity,
                         ModelData* data);

}  // namespace siflow::detail
