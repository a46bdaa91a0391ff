// SPDX-License-Identifier: Apache-2.0
// Reference activations (UnaryKind): values and slopes in double, and the float forms the runtime
// uses (rounded once). The simd kernels are tested against them. Never allocate, never call libm.
//
// Tangent layout: a tensor [rows, width] with P tangent directions has tangents
// [rows * P, width], row (r * P + p) holding direction p of row r.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"

namespace siflow::reference {

float unary(UnaryKind kind, float alpha, float x);
// d unary(x) / dx.
float unary_derivative(UnaryKind kind, float alpha, float x);
// The same in double, unrounded: unary() and unary_derivative() round these once. Training's
// VJP rules and their finite-difference checks use them directly.
double unary_value(UnaryKind kind, double alpha, double x);
double unary_slope(UnaryKind kind, double alpha, double x);

void unary_forward(UnaryKind kind, float alpha, const float* x, size_t n, float* y);
// t_out[r*P+p][k] = f'(x[r][k]) * t_in[r*P+p][k].
void unary_jvp(UnaryKind kind, float alpha, const float* x, size_t rows, uint32_t width,
               size_t directions, const float* t_in, float* t_out);

}  // namespace siflow::reference
