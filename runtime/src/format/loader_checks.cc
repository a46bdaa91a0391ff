// SPDX-License-Identifier: Apache-2.0
// The loader's checks of everything around the graph: the interpolant, the base distribution,
// the data normalisation and the test vectors (format/loader_impl.hpp has the Loader class).
#include "format/conditioning_check.hpp"
#include "format/loader_impl.hpp"

namespace siflow {
namespace detail {
namespace load {

Status Loader::check_interpolant(ModelData* data) {
  InterpolantData& interp = data->interpolant;
  interp = InterpolantData{InterpolantKind::kTrig, 0, nullptr, nullptr};
  const fb::Interpolant* fi = model_->interpolant();
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
      if (na != nb || na == 0 || na > Limits::kMaxFourierTerms || na > coefficient_capacity_)
        return Status::error(StatusCode::kInvalidModel,
                             "interpolant: learned Fourier needs equal alpha and beta counts in "
                             "[1, %u], got %u and %u",
                             Limits::kMaxFourierTerms, na, nb);
      // FlatBuffers checks only the 4-byte alignment of a vector's length, so [double] data may
      // sit at 4 mod 8: the values are copied out byte-wise, never read through a double*.
      const uint8_t* alpha = fi->alpha()->Data();
      const uint8_t* beta = fi->beta()->Data();
      for (uint32_t m = 0; m < na; ++m) {
        std::memcpy(&coefficients_[m], alpha + size_t{m} * sizeof(double), sizeof(double));
        std::memcpy(&coefficients_[na + m], beta + size_t{m} * sizeof(double), sizeof(double));
      }
      for (uint32_t m = 0; m < 2 * na; ++m) {
        if (!math::is_finite(coefficients_[m]))
          return Status::error(StatusCode::kInvalidModel,
                               "interpolant: %s coefficient %u is not finite",
                               m < na ? "alpha" : "beta", m % na + 1);
      }
      interp.terms = na;
      interp.alpha = coefficients_;
      interp.beta = coefficients_ + na;
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

Status Loader::check_base(ModelData* data) {
  const fb::Base* b = model_->base();
  const fb::BaseKind kind = b ? b->kind() : fb::BaseKind::Normal;
  if (kind > fb::BaseKind::MAX)
    return Status::error(StatusCode::kInvalidModel, "base: unknown kind %d",
                         static_cast<int>(kind));
  data->info.base = static_cast<BaseKind>(kind);
  double log_norm = 0.0;
  Status s;
  if (kind == fb::BaseKind::Normal) {
    const float *mean = nullptr, *std = nullptr;
    if (b && !(s = floats("base mean", b->mean(), dim_, &mean)).ok()) return s;
    if (b && !(s = floats("base std", b->std(), dim_, &std)).ok()) return s;
    for (uint32_t i = 0; i < dim_; ++i) {
      data->base_a[i] = mean ? mean[i] : 0.0;
      data->base_b[i] = std ? std[i] : 1.0;
      if (!(data->base_b[i] > 0.0))
        return Status::error(StatusCode::kInvalidModel, "base std[%u] = %g must be positive", i,
                             data->base_b[i]);
      log_norm -= math::log(data->base_b[i]);
    }
    log_norm -= 0.5 * dim_ * math::log(2.0 * math::kPi);
  } else {
    const float *low = nullptr, *high = nullptr;
    if (!(s = floats("base low", b->low(), dim_, &low)).ok()) return s;
    if (!(s = floats("base high", b->high(), dim_, &high)).ok()) return s;
    if (!low || !high)
      return Status::error(StatusCode::kInvalidModel, "uniform base needs low and high [%u]", dim_);
    for (uint32_t i = 0; i < dim_; ++i) {
      data->base_a[i] = low[i];
      data->base_b[i] = high[i];
      if (!(high[i] > low[i]))
        return Status::error(StatusCode::kInvalidModel,
                             "uniform base: high[%u] = %g must exceed low[%u] = %g", i,
                             static_cast<double>(high[i]), i, static_cast<double>(low[i]));
      log_norm -= math::log(data->base_b[i] - data->base_a[i]);
    }
    data->info.score_available = false;
  }
  data->base_log_norm = log_norm;
  return Status();
}

Status Loader::check_normalization(ModelData* data) {
  data->norm_mean = data->norm_std = nullptr;
  data->norm_log_det = 0.0;
  const fb::Normalization* n = model_->normalization();
  if (!n) return Status();
  Status s;
  if (!(s = floats("normalization mean", n->mean(), dim_, &data->norm_mean)).ok()) return s;
  if (!(s = floats("normalization std", n->std(), dim_, &data->norm_std)).ok()) return s;
  if (!data->norm_mean || !data->norm_std)
    return Status::error(StatusCode::kInvalidModel,
                         "normalization needs both mean and std with %u values", dim_);
  for (uint32_t i = 0; i < dim_; ++i) {
    if (!(data->norm_std[i] > 0.0f))
      return Status::error(StatusCode::kInvalidModel, "normalization std[%u] = %g must be positive",
                           i, static_cast<double>(data->norm_std[i]));
    data->norm_log_det += math::log(data->norm_std[i]);
  }
  data->info.normalized = true;
  return Status();
}

Status Loader::check_tests(ModelData* data) {
  data->test_t = data->test_y = data->test_v = nullptr;
  data->trajectory_start = data->trajectory_end = nullptr;
  data->trajectory_steps = 0;
  data->test_tolerance = data->trajectory_tolerance = 0.0f;
  data->test_guidance = 1.0;
  const fb::TestVectors* tv = model_->test_vectors();
  if (!tv) return Status();
  const uint32_t count = tv->count(), traj = tv->trajectory_count();
  if (count > Limits::kMaxTestVectors || traj > Limits::kMaxTestVectors)
    return Status::error(StatusCode::kInvalidModel,
                         "test vectors: %u points and %u trajectories exceed the limit %u", count,
                         traj, Limits::kMaxTestVectors);
  Status s;
  if (count > 0) {
    if (!(s = floats("test vectors t", tv->t(), count, &data->test_t)).ok()) return s;
    if (!(s = floats("test vectors y", tv->y(), size_t{count} * dim_, &data->test_y)).ok())
      return s;
    if (!(s = floats("test vectors v", tv->v(), size_t{count} * dim_, &data->test_v)).ok())
      return s;
    if (!data->test_t || !data->test_y || !data->test_v)
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors: %u points but t, y or v "
                           "missing",
                           count);
    if (!(tv->velocity_tolerance() >= 0.0f) || !math::is_finite(tv->velocity_tolerance()))
      return Status::error(StatusCode::kInvalidModel, "test vectors: bad velocity tolerance");
  }
  if (traj > 0) {
    if (tv->trajectory_steps() == 0 || tv->trajectory_steps() > Limits::kMaxSteps)
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors: trajectory steps %u outside [1, %u]",
                           tv->trajectory_steps(), Limits::kMaxSteps);
    if (!(s = floats("trajectory start", tv->trajectory_start(), size_t{traj} * dim_,
                     &data->trajectory_start))
             .ok())
      return s;
    if (!(s = floats("trajectory end", tv->trajectory_end(), size_t{traj} * dim_,
                     &data->trajectory_end))
             .ok())
      return s;
    if (!data->trajectory_start || !data->trajectory_end)
      return Status::error(StatusCode::kInvalidModel, "test vectors: trajectory data missing");
    if (!(tv->trajectory_tolerance() >= 0.0f) || !math::is_finite(tv->trajectory_tolerance()))
      return Status::error(StatusCode::kInvalidModel, "test vectors: bad trajectory tolerance");
  }
  const uint64_t evaluations =
      uint64_t{count} + (traj > 0 ? 4ull * traj * tv->trajectory_steps() : 0);
  if (evaluations > Limits::kMaxValidationEvaluations)
    return Status::error(StatusCode::kInvalidModel,
                         "test vectors: %u points and %u trajectories of %u steps ask for %llu "
                         "network evaluations (points + 4 x trajectories x steps), limit %llu",
                         count, traj, tv->trajectory_steps(),
                         static_cast<unsigned long long>(evaluations),
                         static_cast<unsigned long long>(Limits::kMaxValidationEvaluations));
  if (!(s = check_test_conditioning(data, *tv)).ok()) return s;  // format/conditioning_check.cc
  data->info.test_vector_count = count;
  data->info.test_trajectory_count = traj;
  data->test_tolerance = tv->velocity_tolerance();
  data->trajectory_steps = tv->trajectory_steps();
  data->trajectory_tolerance = tv->trajectory_tolerance();
  return Status();
}

}  // namespace load
}  // namespace detail
}  // namespace siflow
