// SPDX-License-Identifier: Apache-2.0
// Loader checks that need none of the loader's state (format/loader.cc runs them): a stored
// per-sample shape, and the interpolant (its learned coefficients and the proof that a(t) and
// b(t) never vanish together).
#include "format/model_checks.hpp"

#include <cstring>

#include "math/elementary.hpp"
#include "math/interpolant.hpp"

namespace siflow::detail {

// A stored per-sample shape: absent or empty leaves *out at rank 0; else rank 1 to 3, every
// extent at least 1, product `width`.
Status read_shape(const char* what, const flatbuffers::Vector<uint32_t>* v, uint32_t width,
                  Shape* out) {
  *out = Shape();
  if (!v || v->size() == 0) return Status();
  if (v->size() > 3)
    return Status::error(StatusCode::kInvalidModel, "%s has rank %u, the limit is 3", what,
                         v->size());
  uint64_t n = 1;
  for (uint32_t i = 0; i < v->size(); ++i) {
    const uint32_t e = v->Get(i);
    if (e == 0)
      return Status::error(StatusCode::kInvalidModel, "%s has extent 0 on axis %u", what, i);
    n *= e;
    if (n > width) break;
    out->dims[i] = e;
  }
  if (n != width)
    return Status::error(StatusCode::kInvalidModel,
                         "%s holds %llu values per sample, but the tensor is %u wide", what,
                         static_cast<unsigned long long>(n), width);
  out->rank = v->size();
  return Status();
}

Status check_interpolant(const fb::Model& model, double* coefficients, uint32_t capacity,
                         ModelData* data) {
  InterpolantData& interp = data->interpolant;
  interp = InterpolantData{InterpolantKind::kTrig, 0, nullptr, nullptr};
  const fb::Interpolant* fi = model.interpolant();
  if (fi) {
    if (fi->kind() > fb::InterpolantKind::MAX)
      return Status::error(StatusCode::kInvalidModel, "interpolant: unknown kind %d",
                           static_cast<int>(fi->kind()));
    interp.kind = static_cast<InterpolantKind>(fi->kind());
    const uint32_t na = fi->alpha() ? fi->alpha()->size() : 0;
    const uint32_t nb = fi->beta() ? fi->beta()->size() : 0;
    if (interp.kind != InterpolantKind::kLearnedFourier && (na || nb))
      return Status::error(StatusCode::kInvalidModel,
                           "interpolant: %s has no coefficients, but the file gives %u alpha "
                           "and %u beta",
                           interpolant_kind_name(interp.kind), na, nb);
    if (interp.kind == InterpolantKind::kLearnedFourier) {
      if (na != nb || na == 0 || na > Limits::kMaxFourierTerms || na > capacity)
        return Status::error(StatusCode::kInvalidModel,
                             "interpolant: learned Fourier needs equal alpha and beta counts in "
                             "[1, %u], got %u and %u",
                             Limits::kMaxFourierTerms, na, nb);
      // FlatBuffers checks only the 4-byte alignment of a vector's length, so [double] data may
      // sit at 4 mod 8: the values are copied out byte-wise, never read through a double*.
      const uint8_t* alpha = fi->alpha()->Data();
      const uint8_t* beta = fi->beta()->Data();
      for (uint32_t m = 0; m < na; ++m) {
        std::memcpy(&coefficients[m], alpha + size_t{m} * sizeof(double), sizeof(double));
        std::memcpy(&coefficients[na + m], beta + size_t{m} * sizeof(double), sizeof(double));
      }
      for (uint32_t m = 0; m < 2 * na; ++m) {
        if (!math::is_finite(coefficients[m]))
          return Status::error(StatusCode::kInvalidModel,
                               "interpolant: %s coefficient %u is not finite",
                               m < na ? "alpha" : "beta", m % na + 1);
      }
      interp.terms = na;
      interp.alpha = coefficients;
      interp.beta = coefficients + na;
    }
  }
  // a and b must never vanish together; the score needs W = a*b_dot - a_dot*b != 0 on [0, 1).
  // The proof's work is bounded whatever the coefficients (math/interpolant.hpp).
  const InterpolantProof proof = prove_interpolant(interp);
  if (!proof.apart && proof.exhausted)
    return Status::error(StatusCode::kInvalidModel,
                         "interpolant: cannot prove that a(t) and b(t) never vanish together "
                         "within the loader's bounded check (stopped near t = %.6f; the "
                         "coefficients are too large or too oscillatory)",
                         proof.where);
  if (!proof.apart)
    return Status::error(StatusCode::kInvalidModel,
                         "interpolant: a(t) and b(t) both vanish near t = %.6f", proof.where);
  data->info.score_available = proof.score_ok;
  return Status();
}

}  // namespace siflow::detail
