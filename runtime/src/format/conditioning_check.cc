// SPDX-License-Identifier: Apache-2.0
// The loader's conditioning checks (format/conditioning_check.hpp): the label and condition
// inputs of a loaded graph, and the labels, conditions and guidance weight of its test vectors.
#include "format/conditioning_check.hpp"

#include <cstdio>

#include "math/elementary.hpp"

namespace siflow::detail {

// At most one LabelInput and one CondInput; what ModelInfo says about them.
Status check_conditioning(ModelData* data) {
  data->label_tensor = data->cond_tensor = 0;
  data->null_cond = nullptr;
  ModelInfo& info = data->info;
  for (uint32_t i = 0; i < data->node_count; ++i) {
    const NodeData& n = data->nodes[i];
    if (n.op != OpKind::kLabelInput && n.op != OpKind::kCondInput) continue;
    const bool label = n.op == OpKind::kLabelInput;
    uint32_t& tensor = label ? data->label_tensor : data->cond_tensor;
    if (tensor != 0)
      return Status::error(StatusCode::kInvalidModel,
                           "node %u: a second %s (node %u is one); a model takes at most one "
                           "class label and one condition vector per row",
                           i, label ? "LabelInput" : "CondInput", tensor - 2);
    tensor = i + 2;
    if (label) {
      info.takes_labels = true;
      info.label_classes = n.classes;
      info.null_label = n.null_label;
    } else {
      info.cond_width = n.width;
      info.has_null_cond = n.constant != nullptr;
      data->null_cond = n.constant;
    }
  }
  return Status();
}

// Labels, conditions and the guidance weight of the test vectors: present exactly when the
// model reads them, labels in range, conditions finite, a guidance weight other than 1 only with
// a null label / null vector.
Status check_test_conditioning(ModelData* data, const fb::TestVectors& tv) {
  data->test_labels = data->trajectory_labels = nullptr;
  data->test_cond = data->trajectory_cond = nullptr;
  const ModelInfo& info = data->info;
  const double w = tv.guidance();
  if (!math::is_finite(w))
    return Status::error(StatusCode::kInvalidModel, "test vectors: guidance weight is not finite");
  if (w != 1.0) {
    if (!info.takes_labels && info.cond_width == 0)
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors: guidance weight %g for a model without a label or "
                           "condition input",
                           w);
    if ((info.takes_labels && info.null_label < 0) || (info.cond_width && !info.has_null_cond))
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors: guidance weight %g, but the model has no null %s", w,
                           info.takes_labels && info.null_label < 0 ? "label" : "condition");
  }
  data->test_guidance = w;
  const uint32_t counts[2] = {tv.count(), tv.trajectory_count()};
  const char* names[2] = {"labels", "trajectory_labels"};
  const char* cond_names[2] = {"cond", "trajectory_cond"};
  const flatbuffers::Vector<int32_t>* labels[2] = {tv.labels(), tv.trajectory_labels()};
  const flatbuffers::Vector<float>* conds[2] = {tv.cond(), tv.trajectory_cond()};
  const int32_t* label_out[2] = {nullptr, nullptr};
  const float* cond_out[2] = {nullptr, nullptr};
  for (int k = 0; k < 2; ++k) {
    const uint32_t n = counts[k];
    const uint32_t have = labels[k] ? labels[k]->size() : 0;
    if (!info.takes_labels && have)
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors: %s given, but the model has no LabelInput", names[k]);
    if (info.takes_labels && n) {
      if (have != n)
        return Status::error(StatusCode::kInvalidModel,
                             "test vectors: %s has %u values, expected %u", names[k], have, n);
      // FlatBuffers aligns an int32 vector to 4 bytes: read in place.
      const int32_t* l = labels[k]->data();
      for (uint32_t i = 0; i < n; ++i)
        if (l[i] < 0 || static_cast<uint32_t>(l[i]) >= info.label_classes)
          return Status::error(StatusCode::kInvalidModel,
                               "test vectors: %s[%u] = %d is outside [0, %u)", names[k], i, l[i],
                               info.label_classes);
      label_out[k] = l;
    }
    const uint32_t have_c = conds[k] ? conds[k]->size() : 0;
    if (info.cond_width == 0 && have_c)
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors: %s given, but the model has no CondInput", cond_names[k]);
    if (info.cond_width && n) {
      const size_t expected = size_t{n} * info.cond_width;
      if (have_c == 0)
        return Status::error(StatusCode::kInvalidModel, "test vectors: %s missing (%u x %u)",
                             cond_names[k], n, info.cond_width);
      if (have_c != expected)
        return Status::error(StatusCode::kInvalidModel,
                             "test vectors %s has %u values, expected %zu", cond_names[k], have_c,
                             expected);
      const float* c = conds[k]->data();
      for (size_t i = 0; i < expected; ++i)
        if (!math::is_finite(c[i]))
          return Status::error(StatusCode::kInvalidModel, "test vectors %s[%zu] is not finite",
                               cond_names[k], i);
      cond_out[k] = c;
    }
  }
  data->test_labels = label_out[0];
  data->trajectory_labels = label_out[1];
  data->test_cond = cond_out[0];
  data->trajectory_cond = cond_out[1];
  return Status();
}

}  // namespace siflow::detail
