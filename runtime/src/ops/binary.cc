// SPDX-License-Identifier: Apache-2.0
// Add and Mul: a + b and a * b elementwise, b a second tensor or a constant [1, n]; a [B, 1] or
// [1, n] operand broadcasts over [B, n] and nothing else does. JVP: the sum and product rules.
// VJP: da = dy (* b), db = dy (* a), summed over the columns a [B, 1] operand was spread over.
// Cheap: runs on the caller's thread.
#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out, detail::OpKind kind) {
  out->op = kind;
  const fb::Weights* c = node.constant();
  Status s;
  const uint32_t a_width = out->input_count ? check.width_of(out->inputs[0]) : 0;
  uint32_t b_width = 0;
  if (c) {
    if (!(s = check.expect_inputs(*out, 1, 1)).ok()) return s.prefix("with a constant operand");
    const auto* shape = c->shape();
    const size_t n = c->dtype() == fb::DType::F16 ? (c->f16() ? c->f16()->size() : 0)
                                                  : (c->f32() ? c->f32()->size() : 0);
    if (shape && !(shape->size() == 1 && shape->Get(0) == n) &&
        !(shape->size() == 2 && shape->Get(0) == 1 && shape->Get(1) == n))
      return Status::error(StatusCode::kInvalidModel,
                           "%s: constant shape must be [n] or [1, n] with n = %zu values",
                           check.where(), n);
    if (n == 0 || n > Limits::kMaxWidth)
      return Status::error(StatusCode::kInvalidModel, "%s: constant has %zu values, expected 1..%u",
                           check.where(), n, Limits::kMaxWidth);
    if (!(s = check.weights("constant", c, n, true, &out->constant)).ok()) return s;
    b_width = out->constant_width = static_cast<uint32_t>(n);
    // A [1, n] constant broadcasts over rows of [B, n], or over a [B, 1] tensor.
    if (a_width != b_width && a_width != 1)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: constant [1,%u] cannot broadcast with input [B,%u] (only "
                           "[1,n] with [B,n] or [B,1])",
                           check.where(), b_width, a_width);
  } else {
    if (!(s = check.expect_inputs(*out, 2, 2)).ok()) return s;
    b_width = check.width_of(out->inputs[1]);
    if (a_width != b_width && a_width != 1 && b_width != 1)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: inputs [B,%u] and [B,%u] cannot broadcast (only [B,1] "
                           "against [B,n])",
                           check.where(), a_width, b_width);
  }
  out->width = a_width > b_width ? a_width : b_width;
  return Status();
}

Status verify_add(NodeCheck& check, const fb::Node& node, NodeData* out) {
  return verify(check, node, out, detail::OpKind::kAdd);
}
Status verify_mul(NodeCheck& check, const fb::Node& node, NodeData* out) {
  return verify(check, node, out, detail::OpKind::kMul);
}

// The second operand: the constant [1, n] shared by all rows, or tensor inputs[1].
template <typename T>
struct Second {
  const T* values;      // [rows, width] (nullptr for a constant)
  const float* shared;  // the constant, or nullptr
  uint32_t width;
  T at(size_t r, uint32_t c) const {
    const uint32_t k = width == 1 ? 0 : c;
    return shared ? static_cast<T>(shared[k]) : values[r * width + k];
  }
};

template <typename T>
Second<T> second(const NodeData& n, const uint32_t* widths, const T* const* values) {
  if (n.constant) return {nullptr, n.constant, n.constant_width};
  return {values[n.inputs[1]], nullptr, widths[n.inputs[1]]};
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const bool multiply = n.op == detail::OpKind::kMul;
  const uint32_t aw = op.widths[n.inputs[0]];
  const T* a = op.values[n.inputs[0]];
  const Second<T> b = second(n, op.widths, op.values);
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t c = 0; c < n.width; ++c) {
      const T av = a[r * aw + (aw == 1 ? 0 : c)];
      const T bv = b.at(r, c);
      op.out[r * n.width + c] = multiply ? av * bv : av + bv;
    }
}

// Tangents over `directions`: t_a or t_b is nullptr for an operand without one.
void jvp(const NodeData& n, const float* a, uint32_t a_width, const float* t_a,
         const Second<float>& b, const float* t_b, size_t rows, size_t directions, float* t_out) {
  const bool multiply = n.op == detail::OpKind::kMul;
  const uint32_t width = n.width;
  for (size_t r = 0; r < rows; ++r) {
    const float* ar = a + r * a_width;
    for (size_t p = 0; p < directions; ++p) {
      const size_t row = r * directions + p;
      float* to = t_out + row * width;
      for (uint32_t k = 0; k < width; ++k) {
        const uint32_t ka = a_width == 1 ? 0 : k, kb = b.width == 1 ? 0 : k;
        const float ta = t_a ? t_a[row * a_width + ka] : 0.0f;
        const float tb = t_b ? t_b[row * b.width + kb] : 0.0f;
        if (!multiply) {
          to[k] = ta + tb;
        } else {
          float v = t_a ? ta * b.at(r, k) : 0.0f;
          if (t_b) v += ar[ka] * tb;
          to[k] = v;
        }
      }
    }
  }
}

void run(const NodeRun& r) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const Second<float> b =
      n.constant ? Second<float>{nullptr, n.constant, n.constant_width}
                 : Second<float>{r.values[n.inputs[1]], nullptr, model.tensors[n.inputs[1]].width};
  const bool multiply = n.op == detail::OpKind::kMul;
  const uint32_t aw = model.tensors[a].width;
  const float* av = r.values[a];
  float* y = r.values[id];
  for (size_t row = 0; row < r.rows; ++row)
    for (uint32_t c = 0; c < n.width; ++c) {
      const float x = av[row * aw + (aw == 1 ? 0 : c)];
      const float z = b.at(row, c);
      y[row * n.width + c] = multiply ? x * z : x + z;
    }
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* tb = (!n.constant) ? r.tangents[n.inputs[1]] : nullptr;
  jvp(n, av, aw, r.tangents[a], b, tb, r.rows, r.directions, ty);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const bool multiply = n.op == detail::OpKind::kMul;
  const uint32_t in0 = n.inputs[0], aw = op.widths[in0], width = n.width;
  const T* a = op.values[in0];
  const T* dy = g.dy;
  const Second<T> b = second(n, op.widths, op.values);
  if (g.needs(g.tape, in0)) {
    T* da = g.target(g.tape, in0, op.rows * aw);
    for (size_t r = 0; r < op.rows; ++r) {
      if (aw == 1) {
        T acc = 0;
        for (uint32_t c = 0; c < width; ++c)
          acc += multiply ? dy[r * width + c] * b.at(r, c) : dy[r * width + c];
        da[r] = acc;
      } else {
        for (uint32_t c = 0; c < width; ++c)
          da[r * aw + c] = multiply ? dy[r * width + c] * b.at(r, c) : dy[r * width + c];
      }
    }
    g.commit(g.tape, in0, op.rows * aw);
  }
  if (n.constant || !g.needs(g.tape, n.inputs[1])) return;
  const uint32_t in1 = n.inputs[1], bw = b.width;
  T* db = g.target(g.tape, in1, op.rows * bw);
  for (size_t r = 0; r < op.rows; ++r) {
    auto term = [&](uint32_t c) {
      return multiply ? dy[r * width + c] * a[r * aw + (aw == 1 ? 0 : c)] : dy[r * width + c];
    };
    if (bw == 1) {
      T acc = 0;
      for (uint32_t c = 0; c < width; ++c) acc += term(c);
      db[r] = acc;
    } else {
      for (uint32_t c = 0; c < width; ++c) db[r * bw + c] = term(c);
    }
  }
  g.commit(g.tape, in1, op.rows * bw);
}

}  // namespace

extern const OpModule kAdd = {
    "add",          detail::OpKind::kAdd,
    verify_add,     kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

extern const OpModule kMul = {
    "mul",          detail::OpKind::kMul,
    verify_mul,     kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
