// Graph execution over the reference kernels. Each node reads tensors with smaller ids (the
// loader proved it), so one pass in node order computes everything.
#include "net/executor.hpp"

#include <cstring>

#include "kernels/reference/ops.hpp"

namespace siflow {

using detail::ModelData;
using detail::NodeData;
using detail::OpKind;

void run_network(const ModelData& model, const NetBuffers& buffers, const float* x, size_t rows,
                 size_t directions) {
  float** values = buffers.values;
  float** tangents = buffers.tangents;
  values[0] = const_cast<float*>(x);  // read only: no node writes tensor 0
  const size_t trows = rows * directions;
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const NodeData& n = model.nodes[i];
    const uint32_t id = i + 2;
    float* y = values[id];
    float* ty = directions ? tangents[id] : nullptr;
    const uint32_t a = n.input_count ? n.inputs[0] : 0;
    const uint32_t a_width = model.tensors[a].width;
    const float* ta = directions ? tangents[a] : nullptr;
    switch (n.op) {
      case OpKind::kFullyConnected:
        reference::fully_connected(values[a], rows, a_width, n.weight, n.bias, n.width, y);
        // Tangents go through the same weights without the bias.
        if (ty) reference::fully_connected(ta, trows, a_width, n.weight, nullptr, n.width, ty);
        break;
      case OpKind::kUnary:
        reference::unary_forward(n.unary, n.alpha, values[a], rows * n.width, y);
        if (ty)
          reference::unary_jvp(n.unary, n.alpha, values[a], rows, n.width, directions, ta, ty);
        break;
      case OpKind::kConcat: {
        uint32_t col = 0;
        for (uint32_t k = 0; k < n.input_count; ++k) {
          const uint32_t in = n.inputs[k];
          const uint32_t w = model.tensors[in].width;
          for (size_t r = 0; r < rows; ++r)
            std::memcpy(y + r * n.width + col, values[in] + r * w, w * sizeof(float));
          if (ty) {
            const float* t_in = tangents[in];
            for (size_t r = 0; r < trows; ++r) {
              float* dst = ty + r * n.width + col;
              if (t_in)
                std::memcpy(dst, t_in + r * w, w * sizeof(float));
              else
                std::memset(dst, 0, w * sizeof(float));
            }
          }
          col += w;
        }
        break;
      }
      case OpKind::kAdd:
      case OpKind::kMul: {
        const bool multiply = n.op == OpKind::kMul;
        const bool shared = n.constant != nullptr;
        const float* b = shared ? n.constant : values[n.inputs[1]];
        const uint32_t b_width = shared ? n.constant_width : model.tensors[n.inputs[1]].width;
        const float* tb = (!shared && directions) ? tangents[n.inputs[1]] : nullptr;
        reference::binary_forward(multiply, values[a], a_width, b, b_width, shared, rows, y);
        if (ty)
          reference::binary_jvp(multiply, values[a], a_width, ta, b, b_width, tb, shared, rows,
                                directions, ty);
        break;
      }
      case OpKind::kLayerNorm:
        reference::layer_norm_forward(values[a], rows, n.width, n.gamma, n.beta, n.epsilon, y);
        if (ty)
          reference::layer_norm_jvp(values[a], rows, n.width, n.gamma, n.epsilon, directions, ta,
                                    ty);
        break;
    }
  }
}

void exact_divergence(const float* t_out, size_t rows, uint32_t dim, double* div) {
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (uint32_t p = 0; p < dim; ++p) sum += t_out[(r * dim + p) * dim + p];
    div[r] = sum;
  }
}

void hutchinson_divergence(const float* z, const float* t_out, size_t rows, uint32_t dim,
                           size_t probes, double* div) {
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (size_t p = 0; p < probes; ++p) {
      const size_t base = (r * probes + p) * dim;
      for (uint32_t k = 0; k < dim; ++k) sum += static_cast<double>(z[base + k]) * t_out[base + k];
    }
    div[r] = sum / static_cast<double>(probes);
  }
}

void fill_identity_seeds(float* seeds, size_t rows, uint32_t dim) {
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t p = 0; p < dim; ++p)
      for (uint32_t k = 0; k < dim; ++k) seeds[(r * dim + p) * dim + k] = p == k ? 1.0f : 0.0f;
}

}  // namespace siflow
