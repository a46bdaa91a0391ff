// SPDX-License-Identifier: Apache-2.0
// A plan's conditioning and guidance (api/guidance.hpp): per-call checks of labels and
// conditions, the per-chunk label/condition rows, and the guided evaluation of the network as
// one batched pass of 2B rows.
#include "api/guidance.hpp"

#include <cstring>

#include "format/normalization.hpp"
#include "math/elementary.hpp"
#include "net/executor.hpp"

namespace siflow::detail {

// One evaluation of the (guided) velocity field on `rows` rows of x at per-row times `t_rows`
// (or one time `t` for every row when t_rows is null), with the divergence when `div` is set.
// The chunk's labels and conditions are already in p.label_rows / p.cond_rows
// (fill_call_conditioning). Guided (w not 0 or 1): the network runs 2 rows rows at once, x twice,
// the conditional rows first and the null rows after them, and v_w = v(null) + w (v(y) - v(null))
// in double, rounded once; the divergence likewise from the two halves' tangents.
void evaluate_network(PlanData& p, const float* t_rows, double t, const float* x, size_t rows,
                      DivergenceMode mode, size_t probes, float* v, double* div) {
  const ModelData& md = *p.md;
  const bool guided = p.layout.guided;
  const size_t net_rows = guided ? 2 * rows : rows;
  float* t_net = p.values[1];
  const float tf = static_cast<float>(t);
  for (size_t r = 0; r < net_rows; ++r) t_net[r] = t_rows ? t_rows[r % rows] : tf;
  const float* in = x;
  if (guided) {
    std::memcpy(p.net_x, x, rows * md.dim * sizeof(float));
    std::memcpy(p.net_x + rows * md.dim, x, rows * md.dim * sizeof(float));
    in = p.net_x;
  }
  NetBuffers net{p.values,     p.tangents,  p.layout.directions, p.choice.kernels, p.scratch,
                 p.label_rows, p.cond_rows, &p.blocking,         p.profile};
  // Tuning found this plan's velocity runs faster on the caller's thread alone
  // (plan/build.cc, choose_velocity_threads): the same bits, the pool left idle.
  if (!div && p.choice.velocity_on_caller) net.kernels = on_one_thread(net.kernels, 0);
  double* d = guided ? p.net_div : div;
  if (div && mode == DivergenceMode::kExact && p.layout.exact_block < md.dim) {
    // Exact divergence in blocks of exact_block Jacobian columns, one network pass per block
    // (the forward values are the same bits each time); the diagonal entries are summed in the
    // same order as exact_divergence sums all d at once: bit-identical.
    const size_t block = p.layout.exact_block;
    for (size_t r = 0; r < net_rows; ++r) d[r] = 0.0;
    for (size_t first = 0; first < md.dim; first += block) {
      const size_t count = first + block <= md.dim ? block : md.dim - first;
      fill_identity_block(p.tangents[0], net_rows, md.dim, first, count);
      run_network(md, net, in, net_rows, count, false, first);
      const float* t_out = p.tangents[md.output];
      if (!t_out) continue;  // v does not depend on x: zero divergence
      for (size_t r = 0; r < net_rows; ++r)
        for (size_t j = 0; j < count; ++j) d[r] += t_out[(r * count + j) * md.dim + first + j];
    }
  } else {
    const size_t directions = !div ? 0 : mode == DivergenceMode::kExact ? md.dim : probes;
    const bool exact = div && mode == DivergenceMode::kExact;
    run_network(md, net, in, net_rows, directions, exact, exact ? 0 : SIZE_MAX);
    if (div) {
      const float* t_out = p.tangents[md.output];
      if (!t_out) {
        for (size_t r = 0; r < net_rows; ++r) d[r] = 0.0;
      } else if (mode == DivergenceMode::kExact) {
        exact_divergence(t_out, net_rows, md.dim, d);
      } else {
        hutchinson_divergence(p.tangents[0], t_out, net_rows, md.dim, probes, d);
      }
    }
  }
  const float* out = p.values[md.output];
  if (!guided) {
    std::memcpy(v, out, rows * md.dim * sizeof(float));
    return;
  }
  const double w = p.options.guidance;
  const size_t half = rows * md.dim;
  for (size_t i = 0; i < half; ++i) {
    const double vy = out[i], v0 = out[half + i];
    v[i] = static_cast<float>(v0 + w * (vy - v0));
  }
  if (div)
    for (size_t r = 0; r < rows; ++r) div[r] = d[rows + r] + w * (d[r] - d[rows + r]);
}

// Checks a call's conditioning against the model and the plan before any work: labels present
// when the model reads them (unless guidance 0 runs only the null label), in range, absent for a
// model without a label input; likewise finite conditions.
Status check_call_conditioning(const PlanData& p, const char* what, size_t n,
                               const Conditioning& c) {
  const ModelData& md = *p.md;
  const ModelInfo& info = md.info;
  if (c.struct_size < sizeof(uint32_t) || c.struct_size > sizeof(Conditioning))
    return Status::error(StatusCode::kInvalidArgument,
                         "%s: Conditioning.struct_size %u is not one this runtime knows", what,
                         c.struct_size);
  Conditioning k;
  std::memcpy(&k, &c, c.struct_size);  // fields past an older caller's struct keep defaults
  const bool null_only = p.options.guidance == 0.0;
  const bool has_labels = k.labels || k.label != -1;
  if (!info.takes_labels && has_labels)
    return Status::error(StatusCode::kInvalidArgument,
                         "%s: a class label was given, but this model takes no class label", what);
  if (info.takes_labels) {
    if (!has_labels && !null_only)
      return Status::error(StatusCode::kInvalidArgument,
                           "%s: this model takes a class label (0 to %u%s); give one per row or "
                           "one for every row",
                           what, info.label_classes - 1,
                           info.null_label >= 0 ? ", or its null label for none" : "");
    if (!k.labels && has_labels &&
        (k.label < 0 || static_cast<uint32_t>(k.label) >= info.label_classes))
      return Status::error(StatusCode::kInvalidArgument,
                           "%s: label %d is outside the model's classes [0, %u)", what, k.label,
                           info.label_classes);
    for (size_t r = 0; k.labels && r < n; ++r)
      if (k.labels[r] < 0 || static_cast<uint32_t>(k.labels[r]) >= info.label_classes)
        return Status::error(StatusCode::kInvalidArgument,
                             "%s: label %d of row %zu is outside the model's classes [0, %u)", what,
                             k.labels[r], r, info.label_classes);
  }
  if (!info.cond_width && k.cond)
    return Status::error(StatusCode::kInvalidArgument,
                         "%s: a condition vector was given, but this model takes none", what);
  if (info.cond_width) {
    if (!k.cond && !null_only)
      return Status::error(StatusCode::kInvalidArgument,
                           "%s: this model takes a condition vector of width %u per row; none "
                           "was given",
                           what, info.cond_width);
    if (k.cond) {
      const size_t bad = first_nonfinite_row(k.cond, n, info.cond_width);
      if (bad < n)
        return Status::error(StatusCode::kInvalidArgument,
                             "%s: the condition of row %zu holds NaN or Inf", what, bad);
    }
  }
  return Status();
}

// Writes the labels and conditions of rows [first, first + rows) of a call into the plan's
// per-row buffers: the given ones (the null ones when guidance is 0), then, for a guided plan,
// the null ones for the second half.
void fill_call_conditioning(PlanData& p, const Conditioning& c, size_t first, size_t rows) {
  const ModelData& md = *p.md;
  const ModelInfo& info = md.info;
  Conditioning k;
  std::memcpy(&k, &c, c.struct_size);
  const bool null_only = p.options.guidance == 0.0;
  const size_t net_rows = p.layout.guided ? 2 * rows : rows;
  if (p.label_rows) {
    const float null_label = static_cast<float>(info.null_label < 0 ? 0 : info.null_label);
    for (size_t r = 0; r < net_rows; ++r) {
      float l = null_label;
      if (r < rows && !null_only) l = static_cast<float>(k.labels ? k.labels[first + r] : k.label);
      p.label_rows[r] = l;
    }
  }
  if (p.cond_rows) {
    const uint32_t w = info.cond_width;
    for (size_t r = 0; r < net_rows; ++r) {
      const float* src = (r < rows && !null_only) ? k.cond + (first + r) * w : md.null_cond;
      if (src)
        std::memcpy(p.cond_rows + r * w, src, w * sizeof(float));
      else
        std::memset(p.cond_rows + r * w, 0, w * sizeof(float));
    }
  }
}

}  // namespace siflow::detail
