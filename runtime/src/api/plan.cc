// SPDX-License-Identifier: Apache-2.0
// Plan: binds a model to an arena and serves sample/decode/encode/log_prob/velocity by
// streaming requests through the arena in chunks of max_batch rows. After create() nothing
// here allocates or makes a system call; every input is checked before any work starts.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "api/construct.hpp"
#include "api/guidance.hpp"
#include "api/ode_options.hpp"
#include "format/model_data.hpp"
#include "format/normalization.hpp"
#include "integrate/ode.hpp"
#include "integrate/sde.hpp"
#include "integrate/solve.hpp"
#include "math/interpolant.hpp"
#include "math/random.hpp"
#include "net/executor.hpp"
#include "plan/buffer_planner.hpp"
#include "plan/build.hpp"
#include "support/aligned_memory.hpp"
#include "support/parallel.hpp"

namespace siflow {

namespace detail {

Plan* Construct::plan(void* at, PlanData* data) { return new (at) Plan(data); }

}  // namespace detail

namespace {

using detail::ModelData;
using detail::NodeData;
using detail::PlanData;

constexpr double kNegInf = -__builtin_inf();

// The velocity field the integrators see: the network on arena buffers, with the divergence
// from tangents when asked.
struct NetworkField {
  PlanData* p;
  DivergenceMode mode;
  size_t probes;
  uint64_t evaluations = 0;  // calls so far: the NFE of each row of the chunk

  Status eval(double t, const float* x, size_t rows, float* v, double* div) {
    ++evaluations;
    detail::evaluate_network(*p, nullptr, t, x, rows, mode, probes, v, div);
    return Status();
  }
};

// Mapping between data space and flow coordinates can overflow float for finite values when the
// model's normalisation is extreme; such a row is an error, never an inf in the output.
Status data_space_overflow(size_t row) {
  return Status::error(StatusCode::kNumericalError,
                       "row %zu overflows float in data space (x = mean + std * y with the "
                       "model's normalisation)",
                       row);
}
Status flow_space_overflow(const char* what, size_t row) {
  return Status::error(StatusCode::kNumericalError,
                       "%s: row %zu overflows float in flow coordinates (y = (x - mean) / std "
                       "with the model's normalisation)",
                       what, row);
}

Status check_finite_rows(const char* what, const float* x, size_t n, uint32_t width) {
  const size_t bad = first_nonfinite_row(x, n, width);
  if (bad < n)
    return Status::error(StatusCode::kInvalidArgument, "%s: row %zu holds NaN or Inf", what, bad);
  return Status();
}

Status check_divergence(const PlanData& p, const DivergenceOptions& d) {
  const uint32_t dim = p.md->dim;
  switch (d.mode) {
    case DivergenceMode::kExact:
      if (p.layout.exact_block == 0)
        return Status::error(StatusCode::kInvalidArgument,
                             "exact divergence needs a plan made with divergence exact (this "
                             "plan holds %zu tangent directions, dim is %u)",
                             p.layout.directions, dim);
      return Status();
    case DivergenceMode::kHutchinson:
      if (d.probes == 0 || d.probes > p.layout.directions)
        return Status::error(StatusCode::kInvalidArgument,
                             "Hutchinson probes %u outside [1, %zu] (the plan's max_probes)",
                             d.probes, p.layout.directions);
      if (d.probe != ProbeKind::kRademacher && d.probe != ProbeKind::kGaussian)
        return Status::error(StatusCode::kInvalidArgument, "unknown probe kind %d",
                             static_cast<int>(d.probe));
      return Status();
    case DivergenceMode::kNone:
      return Status::error(StatusCode::kInvalidArgument,
                           "a log-likelihood needs a divergence mode (exact or hutchinson)");
  }
  return Status::error(StatusCode::kInvalidArgument, "unknown divergence mode %d",
                       static_cast<int>(d.mode));
}

// Seeds the tangent directions for a chunk: identity for exact, probes for Hutchinson
// (probe p of sample i from blocks p * ceil(d/4) of stream 1).
void fill_seeds(PlanData& p, const DivergenceOptions& d, size_t first_sample, size_t rows) {
  const uint32_t dim = p.md->dim;
  float* seeds = p.tangents[0];
  if (d.mode == DivergenceMode::kExact) {
    // In blocks, each network pass seeds its own columns (evaluate_network); guided plans seed
    // both halves of their 2 rows rows.
    if (p.layout.exact_block == dim)
      fill_identity_seeds(seeds, p.layout.guided ? 2 * rows : rows, dim);
    return;
  }
  const uint32_t blocks = blocks_per_vector(dim);
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < d.probes; ++k) {
      float* z = seeds + (r * d.probes + k) * dim;
      if (d.probe == ProbeKind::kRademacher)
        fill_signs(d.seed, first_sample + r, kStreamProbe, k * blocks, z, dim);
      else
        fill_normals(d.seed, first_sample + r, kStreamProbe, k * blocks, z, dim);
    }
  // A guided pass's null rows use the same probes as their conditional rows (sample i's).
  if (p.layout.guided)
    std::memcpy(seeds + rows * d.probes * dim, seeds, rows * d.probes * dim * sizeof(float));
}

double base_log_density(const ModelData& md, const float* y) {
  double sum = md.base_log_norm;
  for (uint32_t k = 0; k < md.dim; ++k) {
    if (md.info.base == BaseKind::kNormal) {
      const double z = (y[k] - md.base_a[k]) / md.base_b[k];
      sum -= 0.5 * z * z;
    } else if (!(y[k] >= md.base_a[k] && y[k] <= md.base_b[k])) {
      return kNegInf;
    }
  }
  return sum;
}

// Tracks progress over a whole request and checks the state after every step.
struct StepMonitor {
  const OdeOptions* ode;
  uint64_t done;
  uint64_t total;
  const float* state;
  size_t rows;
  size_t first_row;
  uint32_t dim;
  const TimeGrid* grid;
  size_t step_offset;
  const double* ell = nullptr;  // the log-density term, checked too when carried

  // After a step of a fixed grid.
  Status operator()(size_t step) {
    Status s = check(step, grid->at(step + 1));
    if (!s.ok()) return s;
    done += rows;
    return report();
  }
  // After an accepted step of dopri5, at time t: progress counts kAdaptiveUnits per row over
  // the time range (total = n * kAdaptiveUnits), chunks in order.
  static constexpr uint64_t kAdaptiveUnits = 1000;
  Status operator()(size_t step, double t) {
    Status s = check(step, t);
    if (!s.ok()) return s;
    const double from = grid->at(0), to = grid->at(grid->steps);
    const double fraction = to != from ? (t - from) / (to - from) : 1.0;
    done = static_cast<uint64_t>(first_row) * kAdaptiveUnits +
           static_cast<uint64_t>(static_cast<double>(rows * kAdaptiveUnits) * fraction);
    return report();
  }

 private:
  Status check(size_t step, double t) const {
    const size_t bad = first_nonfinite_row(state, rows, dim);
    if (bad < rows)
      return Status::error(StatusCode::kNumericalError,
                           "integration diverged: row %zu is not finite after step %zu "
                           "(t = %g)",
                           first_row + bad, step_offset + step + 1, t);
    for (size_t r = 0; ell && r < rows; ++r)
      if (!math::is_finite(ell[r]))
        return Status::error(StatusCode::kNumericalError,
                             "divergence integral diverged: row %zu is not finite after step "
                             "%zu (t = %g)",
                             first_row + r, step_offset + step + 1, t);
    return Status();
  }
  Status report() const {
    if (ode->progress && !ode->progress(ode->progress_user, done, total))
      return Status::error(StatusCode::kCancelled, "cancelled by the progress callback");
    return Status();
  }
};

// Row-steps (or progress units, for dopri5) a request of n rows reports in total.
uint64_t progress_total(const OdeOptions& ode, size_t n, const TimeGrid& grid) {
  return static_cast<uint64_t>(n) *
         (ode.method == Method::kDopri5 ? StepMonitor::kAdaptiveUnits : grid.steps);
}

// Integrates rows of y (flow coordinates) forward over the grid, carrying l when `ell` is set.
Status forward_ode(PlanData& p, const OdeOptions& ode, const TimeGrid& grid, float* y, size_t rows,
                   double* ell, const DivergenceOptions* div, StepMonitor& monitor) {
  NetworkField field{&p, div ? div->mode : DivergenceMode::kNone, div ? div->probes : 0};
  monitor.state = y;
  monitor.grid = &grid;
  monitor.ell = ell;
  AdaptiveOptions adaptive;
  adaptive.rtol = ode.rtol;
  adaptive.atol = ode.atol;
  adaptive.max_steps = ode.max_steps;
  Status s =
      integrate_method(field, ode.method, adaptive, grid, rows, p.md->dim, y, ell, p.ws, monitor);
  if (field.evaluations > p.evaluations) p.evaluations = field.evaluations;
  return s;
}

}  // namespace

namespace {

constexpr size_t kPlanHeader = 64;

// Builds a plan in `memory` (plan/build.hpp for the sequence); a measuring `memory` leaves *out
// null.
Status build_plan(const Model& model, const PlanOptions& options, detail::Memory& memory,
                  void* owned, Plan** out) {
  *out = nullptr;
  void* object = nullptr;
  PlanData* p = nullptr;
  Status s = detail::build_plan_data(model, options, memory, owned, kPlanHeader + sizeof(Plan),
                                     &object, &p);
  if (!s.ok() || memory.is_measuring()) return s;
  // The Plan object sits after a 64-byte header holding the block create() allocated (or
  // nullptr in a caller's memory), which Plan::operator delete frees.
  std::memcpy(object, &owned, sizeof owned);
  *out = detail::Construct::plan(static_cast<uint8_t*>(object) + kPlanHeader, p);
  return Status();
}

// The bytes a caller's region must hold for build_plan, from a 64-byte aligned start.
Status measure_plan(const Model& model, const PlanOptions& options, size_t* bytes) {
  detail::Memory measuring = detail::Memory::measuring();
  Plan* none = nullptr;
  Status s = build_plan(model, options, measuring, nullptr, &none);
  if (!s.ok()) return s;
  *bytes = measuring.high_water();
  return Status();
}

}  // namespace

Status arena_bytes(const Model& model, const PlanOptions& options, size_t* bytes) {
  if (!bytes) return Status::error(StatusCode::kInvalidArgument, "arena_bytes: bytes is null");
  return measure_plan(model, options, bytes);
}

Status Plan::create(const Model& model, const PlanOptions& options, void* arena, size_t arena_size,
                    std::unique_ptr<Plan>* out) {
  if (!out) return Status::error(StatusCode::kInvalidArgument, "plan: out is null");
  out->reset();
  size_t need = 0;
  void* owned = nullptr;
  if (!arena) {
    // Measured first, then one allocation holds the whole plan.
    Status s = measure_plan(model, options, &need);
    if (!s.ok()) return s;
    owned = detail::aligned_malloc(kArenaAlignment, need);
    if (!owned)
      return Status::error(StatusCode::kOutOfMemory, "plan: cannot allocate %zu bytes", need);
    arena = owned;
    arena_size = need;
  }
  // A caller's region is used from its first 64-byte boundary, as the measurement assumes.
  const uintptr_t addr = reinterpret_cast<uintptr_t>(arena);
  const size_t skip = (kArenaAlignment - addr % kArenaAlignment) % kArenaAlignment;
  detail::Memory region =
      detail::Memory::region(static_cast<uint8_t*>(arena) + (arena_size < skip ? arena_size : skip),
                             arena_size < skip ? 0 : arena_size - skip);
  Plan* plan = nullptr;
  Status s = build_plan(model, options, region, owned, &plan);
  if (s.ok()) {
    out->reset(plan);
    return s;
  }
  detail::aligned_free(owned);
  if (s.code() != StatusCode::kOutOfMemory || owned) return s;
  // The caller's memory ran out: say how much the plan needs (measuring takes heap blocks, but
  // only on this error path).
  if (!measure_plan(model, options, &need).ok()) return s;
  return Status::error(StatusCode::kArenaTooSmall,
                       "arena of %zu bytes is too small: this plan needs %zu (max_batch %zu)%s",
                       arena_size, need + skip, options.max_batch,
                       skip ? ", including alignment padding" : "");
}

// A plan lives in its region (the caller's memory or the one block create() allocated): the
// destructor stops its worker threads and XNNPACK operators, and delete frees the block, if
// create() allocated it, through the header before the object.
Plan::~Plan() { free_kernel_choice(*data_->md, &data_->choice); }

void Plan::operator delete(void* p) noexcept {
  if (!p) return;
  void* owned = nullptr;
  std::memcpy(&owned, static_cast<uint8_t*>(p) - kPlanHeader, sizeof owned);
  detail::aligned_free(owned);
}

size_t Plan::arena_bytes() const { return data_->total_bytes; }
uint64_t Plan::evaluations() const { return data_->evaluations; }
size_t Plan::block_rows(size_t directions) const {
  return siflow::block_rows(data_->blocking, directions);
}
uint32_t Plan::threads() const { return RowPool::threads_of(data_->choice.kernels.pool); }
uint32_t Plan::velocity_threads() const { return data_->choice.velocity_on_caller ? 1 : threads(); }
const char* Plan::node_kernel(uint32_t node) const {
  return node < data_->md->node_count ? data_->choice.names[node] : "";
}
const Model& Plan::model() const { return *data_->model; }
Status Plan::set_profile(NodeProfile* nodes, size_t count) {
  if (nodes && count < data_->md->node_count)
    return Status::error(StatusCode::kInvalidArgument,
                         "set_profile: the table has %zu entries, the model %u nodes", count,
                         data_->md->node_count);
  data_->profile = nodes;
  return Status();
}

namespace {

// The one chunk loop: fn(first, rows) over [0, n) in chunks of at most max_rows rows, in order,
// stopping at the first error.
template <typename Fn>
Status for_each_chunk(size_t n, size_t max_rows, Fn&& fn) {
  for (size_t first = 0; first < n; first += max_rows) {
    Status s = fn(first, n - first < max_rows ? n - first : max_rows);
    if (!s.ok()) return s;
  }
  return Status();
}

Status check_common(const char* what, size_t n, const void* in, const void* out) {
  if (n == 0) return Status::error(StatusCode::kInvalidArgument, "%s: n is 0 (empty batch)", what);
  if (!in) return Status::error(StatusCode::kInvalidArgument, "%s: input pointer is null", what);
  if (!out) return Status::error(StatusCode::kInvalidArgument, "%s: output pointer is null", what);
  return Status();
}

// Forward ODE pass over all chunks of y (already in flow coordinates, in place), writing
// log p into logp when non-null. Shared by sample and decode.
Status push_forward(PlanData& p, size_t n, size_t first_index, float* y, double* logp,
                    const OdeOptions& ode, const DivergenceOptions& div, const TimeGrid& grid,
                    const Conditioning& cond) {
  const ModelData& md = *p.md;
  const size_t chunk = p.layout.max_rows;
  StepMonitor monitor{&ode, 0, progress_total(ode, n, grid), nullptr, 0, 0, md.dim, &grid, 0};
  return for_each_chunk(n, chunk, [&](size_t first, size_t rows) -> Status {
    float* yc = y + first * md.dim;
    monitor.rows = rows;
    monitor.first_row = first;
    detail::fill_call_conditioning(p, cond, first, rows);
    if (logp) {
      for (size_t r = 0; r < rows; ++r) {
        logp[first + r] = base_log_density(md, yc + r * md.dim);
        p.ell[r] = 0.0;
      }
      fill_seeds(p, div, first_index + first, rows);
    }
    Status s =
        forward_ode(p, ode, grid, yc, rows, logp ? p.ell : nullptr, logp ? &div : nullptr, monitor);
    if (!s.ok()) return s;
    if (logp)
      for (size_t r = 0; r < rows; ++r) logp[first + r] += -p.ell[r] - md.norm_log_det;
    const size_t bad = denormalize(md, yc, rows);
    if (bad < rows) return data_space_overflow(first + bad);
    return Status();
  });
}

}  // namespace

Status Plan::sample(size_t n, const SampleOptions& options, float* x, double* logp) {
  return sample(n, options, Conditioning(), x, logp);
}

Status Plan::sample(size_t n, const SampleOptions& options, const Conditioning& conditioning,
                    float* x, double* logp) {
  PlanData& p = *data_;
  const ModelData& md = *p.md;
  Status s = check_common("sample", n, &options, x);
  if (!s.ok()) return s;
  if (options.struct_size < sizeof(uint32_t) || options.struct_size > sizeof(SampleOptions))
    return Status::error(StatusCode::kInvalidArgument,
                         "sample: SampleOptions.struct_size %u is not one this runtime knows",
                         options.struct_size);
  p.evaluations = 0;
  TimeGrid grid;
  OdeOptions ode;
  if (!(s = check_ode_options(md, options.ode, md.info.time_start, md.info.time_end, &ode, &grid))
           .ok())
    return s.prefix("sample");
  if (!(s = detail::check_call_conditioning(p, "sample", n, conditioning)).ok()) return s;
  SampleOptions so;  // fields past an older caller's struct keep their defaults
  std::memcpy(&so, &options, options.struct_size);
  const double temperature = so.temperature;
  if (!(temperature > 0.0) || !math::is_finite(temperature))
    return Status::error(StatusCode::kInvalidArgument,
                         "sample: temperature %g must be positive and finite", temperature);
  if (temperature != 1.0 && md.info.base != BaseKind::kNormal)
    return Status::error(StatusCode::kUnsupported,
                         "sample: a temperature scales Gaussian base draws; this model's base is "
                         "uniform");
  const SdeOptions& sde = options.sde;
  const bool use_sde = sde.epsilon != 0.0;
  if (use_sde && p.options.guidance != 1.0)
    return Status::error(StatusCode::kUnsupported,
                         "sample: SDE sampling with guidance weight %g is refused: the score "
                         "derived from the guided velocity is not the score of the guided flow's "
                         "marginals (use the ODE, or guidance 1)",
                         p.options.guidance);
  size_t sde_steps = 0;
  if (use_sde) {
    if (!(sde.epsilon > 0.0) || !math::is_finite(sde.epsilon))
      return Status::error(StatusCode::kInvalidArgument, "sample: SDE epsilon %g must be > 0",
                           sde.epsilon);
    if (md.info.base != BaseKind::kNormal)
      return Status::error(StatusCode::kUnsupported,
                           "sample: SDE sampling needs a Gaussian base; this model's base is "
                           "uniform");
    if (!md.info.score_available)
      return Status::error(StatusCode::kUnsupported,
                           "sample: SDE sampling needs the score, but this interpolant's "
                           "a*b_dot - a_dot*b vanishes on [0, 1)");
    if (logp)
      return Status::error(StatusCode::kInvalidArgument,
                           "sample: SDE samples have no per-sample log-likelihood; run log_prob "
                           "on the samples instead");
    if (is_multistep(ode.method) || ode.method == Method::kDopri5)
      return Status::error(StatusCode::kInvalidArgument,
                           "sample: the SDE runs one-step methods on a fixed grid; %s is %s",
                           method_name(ode.method),
                           ode.method == Method::kDopri5 ? "adaptive" : "a multistep method");
    if (sde.schedule != EpsilonSchedule::kConstant &&
        sde.schedule != EpsilonSchedule::kProportionalToA)
      return Status::error(StatusCode::kInvalidArgument, "sample: unknown epsilon schedule %d",
                           static_cast<int>(sde.schedule));
    if (sde.method != SdeMethod::kEulerMaruyama && sde.method != SdeMethod::kHeun)
      return Status::error(StatusCode::kInvalidArgument, "sample: unknown SDE method %d",
                           static_cast<int>(sde.method));
    if (!(sde.stop_delta >= 0.0) || !math::is_finite(sde.stop_delta))
      return Status::error(StatusCode::kInvalidArgument, "sample: SDE stop delta %g must be >= 0",
                           sde.stop_delta);
    if (sde.stop_delta > 0.0) {
      // The SDE runs up to the last grid point at or before time_end - delta.
      const double stop = md.info.time_end - sde.stop_delta;
      while (sde_steps < grid.steps && grid.at(sde_steps + 1) <= stop) ++sde_steps;
      if (sde_steps == 0 || sde_steps == grid.steps)
        return Status::error(StatusCode::kInvalidArgument,
                             "sample: SDE stop delta %g leaves %s on this grid of %zu steps",
                             sde.stop_delta, sde_steps == 0 ? "no SDE step" : "no ODE step",
                             grid.steps);
    } else {
      if (sde.schedule == EpsilonSchedule::kConstant && md.info.time_end >= 1.0)
        return Status::error(StatusCode::kInvalidArgument,
                             "sample: a constant epsilon without a stop leaves eps*score "
                             "unbounded at t = 1; use the schedule proportional to a(t) or a "
                             "stop delta");
      sde_steps = grid.steps;
    }
  }
  if (logp && !(s = check_divergence(p, options.divergence)).ok()) return s.prefix("sample");

  const uint32_t dim = md.dim;
  // Base draws: sample i's component k from block k/4 of stream 0 (docs/math.md).
  for (size_t r = 0; r < n; ++r) {
    float* y = x + r * dim;
    const uint64_t index = options.first_index + r;
    if (md.info.base == BaseKind::kNormal) {
      fill_normals(options.seed, index, kStreamBase, 0, y, dim);
      for (uint32_t k = 0; k < dim; ++k)
        y[k] = static_cast<float>(md.base_a[k] + md.base_b[k] * (temperature * y[k]));
    } else {
      fill_uniforms(options.seed, index, kStreamBase, 0, y, dim, md.base_a, md.base_b);
    }
  }
  if (!use_sde)
    return push_forward(p, n, options.first_index, x, logp, ode, options.divergence, grid,
                        conditioning);

  const SdeCoefficients coeffs{&md.interpolant, md.base_a, md.base_b, sde.epsilon, sde.schedule};
  const TimeGrid sde_grid = grid.piece(0, sde_steps);
  const TimeGrid ode_grid = grid.piece(sde_steps, grid.steps - sde_steps);
  const uint32_t blocks = blocks_per_vector(dim);
  const size_t chunk = p.layout.max_rows;
  StepMonitor monitor{&ode,      0, static_cast<uint64_t>(n) * grid.steps, nullptr, 0, 0, dim,
                      &sde_grid, 0};
  return for_each_chunk(n, chunk, [&](size_t first, size_t rows) -> Status {
    float* yc = x + first * dim;
    monitor.rows = rows;
    monitor.first_row = first;
    monitor.state = yc;
    monitor.grid = &sde_grid;
    monitor.step_offset = 0;
    detail::fill_call_conditioning(p, conditioning, first, rows);
    // Noise of step k for sample i: blocks from k * ceil(d/4) of stream 2.
    auto noise = [&](size_t step, float* xi) {
      for (size_t r = 0; r < rows; ++r)
        fill_normals(options.seed, options.first_index + first + r, kStreamSdeNoise,
                     static_cast<uint32_t>(step * blocks), xi + r * dim, dim);
    };
    NetworkField field{&p, DivergenceMode::kNone, 0};
    s = integrate_sde(field, coeffs, sde.method, sde_grid, rows, dim, yc, p.ws, noise, monitor);
    if (!s.ok()) return s;
    const uint64_t sde_evaluations = field.evaluations;
    const uint64_t before = p.evaluations;
    p.evaluations = 0;
    if (ode_grid.steps > 0) {
      monitor.step_offset = sde_steps;
      s = forward_ode(p, ode, ode_grid, yc, rows, nullptr, nullptr, monitor);
      if (!s.ok()) return s;
    }
    p.evaluations += sde_evaluations;
    if (before > p.evaluations) p.evaluations = before;
    const size_t bad = denormalize(md, yc, rows);
    if (bad < rows) return data_space_overflow(first + bad);
    return Status();
  });
}

Status Plan::decode(size_t n, const float* x0, const OdeOptions& options,
                    const DivergenceOptions& divergence, float* x1, double* logp,
                    size_t first_index) {
  return decode(n, x0, options, divergence, Conditioning(), x1, logp, first_index);
}

Status Plan::decode(size_t n, const float* x0, const OdeOptions& options,
                    const DivergenceOptions& divergence, const Conditioning& conditioning,
                    float* x1, double* logp, size_t first_index) {
  PlanData& p = *data_;
  const ModelData& md = *p.md;
  Status s = check_common("decode", n, x0, x1);
  if (!s.ok()) return s;
  p.evaluations = 0;
  TimeGrid grid;
  OdeOptions ode;
  if (!(s = check_ode_options(md, options, md.info.time_start, md.info.time_end, &ode, &grid)).ok())
    return s.prefix("decode");
  if (logp && !(s = check_divergence(p, divergence)).ok()) return s.prefix("decode");
  if (!(s = check_finite_rows("decode: input", x0, n, md.dim)).ok()) return s;
  if (!(s = detail::check_call_conditioning(p, "decode", n, conditioning)).ok()) return s;
  if (x1 != x0) std::memmove(x1, x0, n * md.dim * sizeof(float));
  return push_forward(p, n, first_index, x1, logp, ode, divergence, grid, conditioning);
}

Status Plan::encode(size_t n, const float* x1, const OdeOptions& options, float* x0) {
  return encode(n, x1, options, Conditioning(), x0);
}

Status Plan::encode(size_t n, const float* x1, const OdeOptions& options,
                    const Conditioning& conditioning, float* x0) {
  PlanData& p = *data_;
  const ModelData& md = *p.md;
  Status s = check_common("encode", n, x1, x0);
  if (!s.ok()) return s;
  p.evaluations = 0;
  TimeGrid grid;
  OdeOptions ode;
  if (!(s = check_ode_options(md, options, md.info.time_start, md.info.time_end, &ode, &grid)).ok())
    return s.prefix("encode");
  grid.backward = true;
  if (!(s = check_finite_rows("encode: input", x1, n, md.dim)).ok()) return s;
  if (!(s = detail::check_call_conditioning(p, "encode", n, conditioning)).ok()) return s;
  if (x0 != x1) std::memmove(x0, x1, n * md.dim * sizeof(float));
  const size_t chunk = p.layout.max_rows;
  StepMonitor monitor{&ode, 0, progress_total(ode, n, grid), nullptr, 0, 0, md.dim, &grid, 0};
  return for_each_chunk(n, chunk, [&](size_t first, size_t rows) -> Status {
    float* yc = x0 + first * md.dim;
    const size_t bad = normalize(md, yc, rows);
    if (bad < rows) return flow_space_overflow("encode", first + bad);
    monitor.rows = rows;
    monitor.first_row = first;
    detail::fill_call_conditioning(p, conditioning, first, rows);
    if (!(s = forward_ode(p, ode, grid, yc, rows, nullptr, nullptr, monitor)).ok()) return s;
    return Status();
  });
}

Status Plan::log_prob(size_t n, const float* x, const LogProbOptions& options, double* logp) {
  return log_prob(n, x, options, Conditioning(), logp);
}

Status Plan::log_prob(size_t n, const float* x, const LogProbOptions& options,
                      const Conditioning& conditioning, double* logp) {
  PlanData& p = *data_;
  const ModelData& md = *p.md;
  Status s = check_common("log_prob", n, x, logp);
  if (!s.ok()) return s;
  if (options.struct_size < sizeof(uint32_t) || options.struct_size > sizeof(LogProbOptions))
    return Status::error(StatusCode::kInvalidArgument,
                         "log_prob: LogProbOptions.struct_size %u is not one this runtime knows",
                         options.struct_size);
  const double time = options.time < 0.0 ? md.info.time_end : options.time;
  if (!(time > md.info.time_start && time <= md.info.time_end))
    return Status::error(StatusCode::kInvalidArgument,
                         "log_prob: time %.9g is outside the model's range (%.9g, %.9g]", time,
                         md.info.time_start, md.info.time_end);
  p.evaluations = 0;
  TimeGrid grid;
  OdeOptions ode;
  if (!(s = check_ode_options(md, options.ode, md.info.time_start, time, &ode, &grid)).ok())
    return s.prefix("log_prob");
  grid.backward = true;
  if (!(s = check_divergence(p, options.divergence)).ok()) return s.prefix("log_prob");
  if (!(s = check_finite_rows("log_prob: input", x, n, md.dim)).ok()) return s;
  if (!(s = detail::check_call_conditioning(p, "log_prob", n, conditioning)).ok()) return s;
  const size_t chunk = p.layout.max_rows;
  StepMonitor monitor{&ode, 0, progress_total(ode, n, grid), nullptr, 0, 0, md.dim, &grid, 0};
  return for_each_chunk(n, chunk, [&](size_t first, size_t rows) -> Status {
    std::memcpy(p.work, x + first * md.dim, rows * md.dim * sizeof(float));
    const size_t bad = normalize(md, p.work, rows);
    if (bad < rows) return flow_space_overflow("log_prob", first + bad);
    for (size_t r = 0; r < rows; ++r) p.ell[r] = 0.0;
    detail::fill_call_conditioning(p, conditioning, first, rows);
    fill_seeds(p, options.divergence, options.first_index + first, rows);
    monitor.rows = rows;
    monitor.first_row = first;
    s = forward_ode(p, ode, grid, p.work, rows, p.ell, &options.divergence, monitor);
    if (!s.ok()) return s;
    // log rho_s(y) = log rho_0(X(0)) + l(0); data space subtracts sum log sigma.
    for (size_t r = 0; r < rows; ++r)
      logp[first + r] = base_log_density(md, p.work + r * md.dim) + p.ell[r] - md.norm_log_det;
    return Status();
  });
}

Status Plan::velocity(size_t n, const float* t, const float* y, float* v) {
  return velocity(n, t, y, Conditioning(), v);
}

Status Plan::velocity(size_t n, const float* t, const float* y, const Conditioning& conditioning,
                      float* v) {
  PlanData& p = *data_;
  const ModelData& md = *p.md;
  Status s = check_common("velocity", n, y, v);
  if (!s.ok()) return s;
  if (!t) return Status::error(StatusCode::kInvalidArgument, "velocity: t is null");
  if (!(s = check_finite_rows("velocity: t", t, n, 1)).ok()) return s;
  if (!(s = check_finite_rows("velocity: input", y, n, md.dim)).ok()) return s;
  if (!(s = detail::check_call_conditioning(p, "velocity", n, conditioning)).ok()) return s;
  const size_t chunk = p.layout.max_rows;
  return for_each_chunk(n, chunk, [&](size_t first, size_t rows) -> Status {
    detail::fill_call_conditioning(p, conditioning, first, rows);
    // Staged in the plan's work rows: a chunk whose output is not finite is never written.
    detail::evaluate_network(p, t + first, 0.0, y + first * md.dim, rows, DivergenceMode::kNone, 0,
                             p.work, nullptr);
    const size_t bad = first_nonfinite_row(p.work, rows, md.dim);
    if (bad < rows)
      return Status::error(StatusCode::kNumericalError,
                           "velocity: the network's output is not finite in row %zu (an overflow "
                           "in its weights or activations at t = %g)",
                           first + bad, static_cast<double>(t[first + bad]));
    std::memcpy(v + first * md.dim, p.work, rows * md.dim * sizeof(float));
    return Status();
  });
}

}  // namespace siflow
