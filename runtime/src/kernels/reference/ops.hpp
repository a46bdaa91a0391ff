// SPDX-License-Identifier: Apache-2.0
// Reference kernels: portable scalar C++ for every op of the graph, forward and JVP. They define
// what correct means; optimized kernels are tested against them. Never allocate, never call libm.
//
// Tangent layout: a tensor [rows, width] with P tangent directions has tangents
// [rows * P, width], row (r * P + p) holding direction p of row r.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"

namespace siflow::reference {

// y[r][o] = sum_i x[r][i] * w[o][i] + bias[o] (bias nullable), summed in order i = 0, 1, ...
void fully_connected(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                     uint32_t out, float* y);

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

// Layer norm over each row: y = (x - mean) / sqrt(var + eps) * gamma + beta.
void layer_norm_forward(const float* x, size_t rows, uint32_t width, const float* gamma,
                        const float* beta, float epsilon, float* y);
void layer_norm_jvp(const float* x, size_t rows, uint32_t width, const float* gamma, float epsilon,
                    size_t directions, const float* t_in, float* t_out);

// Elementwise a (+|*) b with the broadcasting the format allows: widths equal, or one of them 1
// ([B,1] or, for constants, [1,n]). `b_rows_shared` marks b as a constant [1, b_width].
void binary_forward(bool multiply, const float* a, uint32_t a_width, const float* b,
                    uint32_t b_width, bool b_rows_shared, size_t rows, float* y);
// Tangent of binary_forward over `directions`; t_a or t_b is nullptr for an operand without a
// tangent (a constant, or a tensor that does not depend on x).
void binary_jvp(bool multiply, const float* a, uint32_t a_width, const float* t_a, const float* b,
                uint32_t b_width, const float* t_b, bool b_rows_shared, size_t rows,
                size_t directions, float* t_out);

}  // namespace siflow::reference
