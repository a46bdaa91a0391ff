# SPDX-License-Identifier: Apache-2.0
# siflow.load and the Model: numpy arrays in and out of the C API, plans cached per options set,
# runs with the GIL released (ctypes drops it for every CDLL call) and Ctrl-C turned into a
# cancelling progress callback. Never computes anything itself: every number is the runtime's.
import ctypes
import dataclasses
import os
import signal
import threading

import numpy as np

from . import _capi, _options
from ._errors import InvalidArgument, from_status

_lib = _capi.lib

# Plans kept per model: those of the most recent options sets (each holds an arena).
_MAX_OPTION_SETS = 8

_INTERPOLANTS = {0: "linear", 1: "trig", 2: "learned_fourier"}
_BASES = {0: "normal", 1: "uniform"}


def _check(status, error):
    if status != 0:
        raise from_status(status, error.message.decode("utf-8", "replace"))


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the C API reports about a model (siflow_model_info, metadata and nodes)."""

    name: str
    format_version: tuple
    dim: int
    sample_shape: tuple
    node_count: int
    parameter_count: int
    f16_parameter_count: int
    weight_bytes: int
    expanded_bytes: int
    held_bytes: int
    packed_bytes: int
    interpolant: str  # "linear", "trig" or "learned_fourier"
    fourier_terms: int
    base: str  # "normal" or "uniform"
    normalized: bool
    score_available: bool
    time_start: float
    time_end: float
    test_vector_count: int
    test_trajectory_count: int
    metadata: dict  # key -> value
    nodes: tuple  # (op, input width, output width) per graph node
    solvers: tuple = ()  # (name, NFE, sample error) per stored solver (format 1.2)
    # Conditional models (format 1.4): label=/labels= take 0 .. label_classes - 1; null_label is
    # the unconditional class (-1: none, guidance refused); cond= takes [n, cond_width].
    takes_labels: bool = False
    label_classes: int = 0
    null_label: int = -1
    cond_width: int = 0
    has_null_cond: bool = False  # the model stores the null condition vector (guidance works)


# siflow_model_info field -> ModelInfo field (tests/test_options.py checks it covers siflow.h).
INFO_SPELLINGS = {
    "struct_size": None, "dim": "dim", "name": "name", "format_major": "format_version",
    "format_minor": "format_version", "node_count": "node_count",
    "parameter_count": "parameter_count", "f16_parameter_count": "f16_parameter_count",
    "weight_bytes": "weight_bytes", "expanded_bytes": "expanded_bytes",
    "held_bytes": "held_bytes", "packed_bytes": "packed_bytes", "interpolant": "interpolant",
    "fourier_terms": "fourier_terms", "base": "base", "normalized": "normalized",
    "score_available": "score_available", "time_start": "time_start", "time_end": "time_end",
    "test_vector_count": "test_vector_count", "test_trajectory_count": "test_trajectory_count",
    "metadata_count": "metadata", "solver_count": "solvers", "takes_labels": "takes_labels",
    "label_classes": "label_classes", "null_label": "null_label", "cond_width": "cond_width",
    "has_null_cond": "has_null_cond", "sample_rank": "sample_shape", "sample_shape": "sample_shape",
}


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """Agreement with the embedded test vectors (siflow_validation_report). Errors are relative:
    max |v - v_ref| / max(1, max |v_ref|)."""

    velocity_count: int
    velocity_max_error: float
    velocity_tolerance: float
    velocity_ok: bool
    trajectory_count: int
    trajectory_steps: int
    trajectory_max_error: float
    trajectory_tolerance: float
    trajectory_ok: bool
    solver_count: int = 0  # stored solvers whose test vectors were re-run
    solver_max_error: float = 0.0  # of the solver furthest from its tolerance
    solver_tolerance: float = 0.0
    solver_ok: bool = True
    solver_worst: str = ""

    @property
    def ok(self):
        return self.velocity_ok and self.trajectory_ok and self.solver_ok


def _aligned_copy(data):
    """A private 64-byte aligned copy of the bytes (the runtime uses aligned bytes in place, so
    they must not change or go away while the model lives)."""
    view = memoryview(data).cast("B")
    buffer = (ctypes.c_uint8 * (view.nbytes + 64))()
    offset = (-ctypes.addressof(buffer)) % 64
    ctypes.memmove(ctypes.addressof(buffer) + offset, bytes(view), view.nbytes)
    return buffer, ctypes.addressof(buffer) + offset, view.nbytes


def _is_bytes(source):
    return isinstance(source, (bytes, bytearray, memoryview))


def load(source):
    """Loads a .sif model from a path (str or os.PathLike) or from bytes-like data (copied)."""
    error = _capi.Error_()
    handle = _capi._model_p()
    keep = None
    if _is_bytes(source):
        keep, address, size = _aligned_copy(source)
        status = _lib.siflow_model_load(address, size, 0, ctypes.byref(handle),
                                        ctypes.byref(error))
    elif isinstance(source, (str, os.PathLike)):
        status = _lib.siflow_model_load_file(os.fsencode(source), ctypes.byref(handle),
                                             ctypes.byref(error))
    else:
        raise TypeError(f"load: expected a path or bytes, not {type(source).__name__}")
    _check(status, error)
    return Model(handle, keep)


def memory_bytes(source):
    """Bytes of caller memory loading this model without a heap takes (siflow_model_memory_bytes;
    C embedding, siflow_model_load_in)."""
    if not _is_bytes(source):
        with open(source, "rb") as f:
            source = f.read()
    keep, address, size = _aligned_copy(source)
    out = ctypes.c_size_t()
    error = _capi.Error_()
    _check(_lib.siflow_model_memory_bytes(address, size, ctypes.byref(out), ctypes.byref(error)),
           error)
    del keep
    return out.value


class _Interrupt:
    """One run's progress callback: the caller's `progress`, and Ctrl-C. A SIGINT handler that
    only sets a flag is installed for the call (from the main thread, when SIGINT has Python's
    default handler); the callback then returns 0 and the runtime stops with SIFLOW_CANCELLED
    after the current step. The call raises KeyboardInterrupt afterwards."""

    def __init__(self, progress):
        if progress is not None and not callable(progress):
            raise InvalidArgument(f"progress: expected a callable (done, total), not "
                                  f"{progress!r}")
        self.user = progress
        self.interrupted = False
        self.raised = None
        self.previous = None
        self.installed = False
        self.function = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
            self.installed = True
        if self.installed or self.user is not None:
            self.function = _capi.PROGRESS_FN(self._on_progress)
        return self

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
        return False

    def _on_sigint(self, signum, frame):
        self.interrupted = True

    def _on_progress(self, user, done, total):
        if self.interrupted or self.raised is not None:
            return 0
        if self.user is None:
            return 1
        try:
            keep_going = self.user(done, total)
        except BaseException as e:  # re-raised by the call once the runtime has stopped
            self.raised = e
            return 0
        return 0 if keep_going is False else 1

    def attach(self, ro):
        if self.function is not None:
            ro.progress = self.function

    def finish(self, status, error):
        if self.interrupted:
            raise KeyboardInterrupt
        if self.raised is not None:
            raise self.raised
        _check(status, error)


def _points(x, dim, name):
    """A C-contiguous, aligned float32 [n, dim] array (copied only when it is not one)."""
    a = np.asarray(x)
    if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        raise InvalidArgument(f"{name}: dtype {a.dtype} is not float32 or float64")
    if a.ndim != 2 or a.shape[1] != dim:
        raise InvalidArgument(f"{name}: shape {a.shape}, expected [n, {dim}] (the model's dim)")
    if a.dtype.itemsize == 8:
        finite = np.abs(a[np.isfinite(a)])
        if finite.size and finite.max() > np.finfo(np.float32).max:
            raise InvalidArgument(f"{name}: {finite.max():g} does not fit in float32 (the "
                                  f"runtime computes in float32)")
    return np.require(a, dtype=np.float32, requirements=["C_CONTIGUOUS", "ALIGNED"])


def _f32(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _f64(a):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


class Model:
    """A loaded, verified model (siflow_model). Thread-safe: runs from several threads use
    separate plans. Close it with close() or a `with` block; closing waits for running calls."""

    def __init__(self, handle, keep):
        self._handle = handle
        self._keep = keep  # the aligned copy of loaded bytes, used in place by the runtime
        self._lock = threading.Condition()
        self._running = 0
        self._idle = {}  # plan options key -> idle plan handles
        self._info = None

    # ---- lifetime -------------------------------------------------------------------------

    def close(self):
        """Frees the model and its plans. Further calls raise siflow.InvalidArgument."""
        with self._lock:
            while self._running:
                self._lock.wait()
            handle, self._handle = self._handle, None
            plans, self._idle = self._idle, {}
        for idle in plans.values():
            for plan in idle:
                _lib.siflow_plan_free(plan)
        if handle:
            _lib.siflow_model_free(handle)
        self._keep = None

    @property
    def closed(self):
        return not self._handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_handle", None):
            try:
                self.close()
            except Exception:  # interpreter shutdown: the library may be gone already
                pass

    def __repr__(self):
        if self.closed:
            return "<siflow.Model (closed)>"
        i = self.info
        return (f"<siflow.Model {i.name or '(unnamed)'!r}: dim {i.dim}, {i.interpolant} "
                f"interpolant, {i.base} base, {i.parameter_count} parameters>")

    def _enter(self):
        with self._lock:
            if not self._handle:
                raise InvalidArgument("the model is closed")
            self._running += 1
            return self._handle

    def _leave(self):
        with self._lock:
            self._running -= 1
            self._lock.notify_all()

    # ---- plans: one per options set, reused; a busy plan (another thread) gets a sibling ---

    def _take_plan(self, po):
        key = _options.plan_key(po)
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return key, idle.pop()
        plan = _capi._plan_p()
        error = _capi.Error_()
        _check(_lib.siflow_plan_create(self._handle, ctypes.byref(po), None, 0,
                                       ctypes.byref(plan), ctypes.byref(error)), error)
        return key, plan

    def _give_plan(self, key, plan):
        evicted = []
        with self._lock:
            if key not in self._idle and len(self._idle) >= _MAX_OPTION_SETS:
                evicted = self._idle.pop(next(iter(self._idle)))  # the oldest options set
            self._idle.setdefault(key, []).append(plan)
        for old in evicted:
            _lib.siflow_plan_free(old)

    def _run(self, po, call, progress=None, ro=None):
        """Runs call(plan, error) on a plan for `po` with the progress bridge in `ro`."""
        self._enter()
        try:
            key, plan = self._take_plan(po)
            try:
                error = _capi.Error_()
                with _Interrupt(progress) as interrupt:
                    if ro is not None:
                        interrupt.attach(ro)
                    status = call(plan, error)
                interrupt.finish(status, error)
            finally:
                self._give_plan(key, plan)
        finally:
            self._leave()

    # ---- what the model is -----------------------------------------------------------------

    @property
    def info(self):
        """ModelInfo: dim, sample shape, interpolant, base, time range, metadata, nodes, ..."""
        handle = self._enter()  # raises when closed
        try:
            if self._info is None:
                self._info = self._read_info(handle)
        finally:
            self._leave()
        return self._info

    @property
    def dim(self):
        return self.info.dim

    @staticmethod
    def _read_info(handle):
        c = _capi.ModelInfo()
        c.struct_size = ctypes.sizeof(c)
        error = _capi.Error_()
        _check(_lib.siflow_model_get_info(handle, ctypes.byref(c), ctypes.byref(error)), error)
        metadata = {}
        key, value = ctypes.c_char_p(), ctypes.c_char_p()
        i = 0
        while _lib.siflow_model_metadata(handle, i, ctypes.byref(key), ctypes.byref(value)):
            metadata[key.value.decode("utf-8", "replace")] = value.value.decode("utf-8",
                                                                                "replace")
            i += 1
        nodes = []
        op, width_in, width = ctypes.c_char_p(), ctypes.c_uint32(), ctypes.c_uint32()
        while _lib.siflow_model_node(handle, len(nodes), ctypes.byref(op), ctypes.byref(width_in),
                                     ctypes.byref(width)):
            nodes.append((op.value.decode(), width_in.value, width.value))
        solvers = []
        name, nfe, error_value = ctypes.c_char_p(), ctypes.c_uint32(), ctypes.c_double()
        while _lib.siflow_model_solver(handle, len(solvers), ctypes.byref(name),
                                       ctypes.byref(nfe), ctypes.byref(error_value)):
            solvers.append((name.value.decode(), nfe.value, error_value.value))
        return ModelInfo(
            name=c.name.decode("utf-8", "replace") if c.name else "",
            format_version=(c.format_major, c.format_minor), dim=c.dim,
            sample_shape=tuple(c.sample_shape[k] for k in range(min(c.sample_rank, 3))) or (c.dim,),
            node_count=c.node_count, parameter_count=c.parameter_count,
            f16_parameter_count=c.f16_parameter_count, weight_bytes=c.weight_bytes,
            expanded_bytes=c.expanded_bytes, held_bytes=c.held_bytes,
            packed_bytes=c.packed_bytes,
            interpolant=_INTERPOLANTS.get(c.interpolant, str(c.interpolant)),
            fourier_terms=c.fourier_terms, base=_BASES.get(c.base, str(c.base)),
            normalized=bool(c.normalized), score_available=bool(c.score_available),
            time_start=c.time_start, time_end=c.time_end,
            test_vector_count=c.test_vector_count,
            test_trajectory_count=c.test_trajectory_count, metadata=metadata,
            nodes=tuple(nodes), solvers=tuple(solvers), takes_labels=bool(c.takes_labels),
            label_classes=c.label_classes, null_label=c.null_label, cond_width=c.cond_width,
            has_null_cond=bool(c.has_null_cond))

    def arena_bytes(self, **options):
        """Bytes a plan for these options takes (siflow_arena_bytes). Options: max_batch,
        threads, backend, tune, precision ("fp32", "bf16", "fp16", "int8"), divergence ("none",
        "exact", "hutchinson"), probes."""
        _options.check_names("arena_bytes", options)
        po = _options.plan_options(options, options.get("divergence", "exact"),
                                   options.get("probes", 1))
        out = ctypes.c_size_t()
        error = _capi.Error_()
        handle = self._enter()
        try:
            status = _lib.siflow_arena_bytes(handle, ctypes.byref(po), ctypes.byref(out),
                                             ctypes.byref(error))
        finally:
            self._leave()
        _check(status, error)
        return out.value

    def kernels(self, **options):
        """The kernel each graph node runs on in a plan for these options
        (siflow_plan_node_kernel): "reference", "simd/avx2+silu", "fused", "xnnpack", ..."""
        _options.check_names("kernels", options)
        po = _options.plan_options(options)
        names = []

        def call(plan, error):
            for i in range(self.info.node_count):
                names.append(_lib.siflow_plan_node_kernel(plan, i).decode())
            return 0

        self._run(po, call)
        return names

    # ---- runs ------------------------------------------------------------------------------

    def _log_prob_plan(self, options):
        divergence, probes = _options.divergence_of(options)
        return _options.plan_options(
            options, divergence, probes if divergence == "hutchinson" else 1)

    @staticmethod
    def _check_combinations(options, log_prob):
        _options.require_with(options, ("divergence", "probes", "probe"), "log_prob=True",
                              log_prob)
        _options.require_with(options, ("probes", "probe"), "divergence='hutchinson'",
                              options.get("divergence") == "hutchinson")

    def sample(self, n, *, seed=0, log_prob=False, **options):
        """n samples, float32 [n, dim] in data space; with log_prob=True also log p of each
        sample, float64 [n] (ODE only). SDE sampling: sde_epsilon > 0 (Gaussian base).
        temperature=T scales the base draws (Gaussian base). Conditional models, here and in
        decode/encode/log_prob/velocity: label=K (every row) or labels=[n] integers, cond=[n,
        cond_width]; guidance=w (a plan option) gives v(null) + w (v(label) - v(null))."""
        _options.check_names("sample", options)
        self._check_combinations(options, log_prob)
        _options.require_with(options, ("sde_schedule", "sde_stop_delta", "sde_method"),
                              "sde_epsilon", "sde_epsilon" in options)
        n = _options._integer("n", n, 0, _options.SIZE)
        ro, keep = _options.run_options(dict(options, seed=seed))
        _options.conditioning(options, ro, keep, n, self.info.cond_width)
        po = self._log_prob_plan(options) if log_prob else _options.plan_options(options)
        dim = self.dim
        x = np.empty((n, dim), np.float32)
        logp = np.empty(n, np.float64) if log_prob else None
        self._run(po, lambda plan, error: _lib.siflow_sample(
            plan, n, ctypes.byref(ro), _f32(x), _f64(logp) if log_prob else None,
            ctypes.byref(error)), options.get("progress"), ro)
        return (x, logp) if log_prob else x

    def decode(self, x0, *, log_prob=False, **options):
        """Maps base points x0 [n, dim] (flow coordinates of the base) to data-space points,
        float32 [n, dim]; with log_prob=True also log p of each output, float64 [n]."""
        _options.check_names("decode", options)
        self._check_combinations(options, log_prob)
        _options.require_with(options, ("seed",), "log_prob=True", log_prob)
        x0 = _points(x0, self.dim, "x0")
        ro, keep = _options.run_options(options)
        _options.conditioning(options, ro, keep, x0.shape[0], self.info.cond_width)
        po = self._log_prob_plan(options) if log_prob else _options.plan_options(options)
        n = x0.shape[0]
        x1 = np.empty_like(x0)
        logp = np.empty(n, np.float64) if log_prob else None
        self._run(po, lambda plan, error: _lib.siflow_decode(
            plan, n, _f32(x0), ctypes.byref(ro), _f32(x1), _f64(logp) if log_prob else None,
            ctypes.byref(error)), options.get("progress"), ro)
        return (x1, logp) if log_prob else x1

    def encode(self, x, **options):
        """Maps data-space points x [n, dim] to base points (the reverse ODE), float32."""
        _options.check_names("encode", options)
        x = _points(x, self.dim, "x")
        ro, keep = _options.run_options(options)
        _options.conditioning(options, ro, keep, x.shape[0], self.info.cond_width)
        po = _options.plan_options(options)
        n = x.shape[0]
        x0 = np.empty_like(x)
        self._run(po, lambda plan, error: _lib.siflow_encode(
            plan, n, _f32(x), ctypes.byref(ro), _f32(x0), ctypes.byref(error)),
            options.get("progress"), ro)
        return x0

    def log_prob(self, x, **options):
        """log p(x) of data-space points x [n, dim], float64 [n]: exact divergence by default,
        divergence="hutchinson" with probes=K and probe="rademacher"/"gaussian"; time=s gives
        log rho_s."""
        _options.check_names("log_prob", options)
        _options.require_with(options, ("probes", "probe"), "divergence='hutchinson'",
                              options.get("divergence") == "hutchinson")
        x = _points(x, self.dim, "x")
        ro, keep = _options.run_options(options)
        _options.conditioning(options, ro, keep, x.shape[0], self.info.cond_width)
        po = self._log_prob_plan(options)
        n = x.shape[0]
        logp = np.empty(n, np.float64)
        self._run(po, lambda plan, error: _lib.siflow_log_prob(
            plan, n, _f32(x), ctypes.byref(ro), _f64(logp), ctypes.byref(error)),
            options.get("progress"), ro)
        return logp

    def velocity(self, x, t, **options):
        """The network's v(t, x) in flow (normalised) coordinates, float32 [n, dim]; t is a
        number or one time per row ([n] or [n, 1]). Conditional models: label/labels/cond, and
        guidance=w for the guided velocity."""
        _options.check_names("velocity", options)
        x = _points(x, self.dim, "x")
        n = x.shape[0]
        ta = np.asarray(t)
        if ta.dtype.kind not in "fiu":
            raise InvalidArgument(f"t: dtype {ta.dtype} is not a number type")
        if ta.ndim == 0:
            ta = np.full(n, ta, np.float32)
        elif ta.shape not in ((n,), (n, 1)):
            raise InvalidArgument(f"t: shape {ta.shape}, expected a number, [{n}] or [{n}, 1]")
        ta = np.require(ta.reshape(n), dtype=np.float32, requirements=["C_CONTIGUOUS", "ALIGNED"])
        po = _options.plan_options(options)
        ro = _capi.RunOptions()
        _lib.siflow_run_options_init(ctypes.byref(ro))
        keep = []
        _options.conditioning(options, ro, keep, n, self.info.cond_width)
        v = np.empty_like(x)
        self._run(po, lambda plan, error: _lib.siflow_velocity_conditioned(
            plan, n, _f32(ta), _f32(x), ctypes.byref(ro), _f32(v), ctypes.byref(error)))
        return v

    def validate(self, **options):
        """Re-runs the embedded test vectors (siflow_validate) and returns a ValidationReport;
        raises siflow.InvalidArgument when the model has none. Options: threads, backend, tune,
        precision ("fp32", "bf16", "fp16", "int8"; the tolerance follows it),
        progress (a callable (done, total) counting network evaluations of one row, called after
        the velocity check and after every RK4 step; returning False cancels with
        siflow.Cancelled). Ctrl-C stops it after the current step and raises KeyboardInterrupt."""
        _options.check_names("validate", options)
        progress = options.pop("progress", None)
        po = _options.plan_options(options)
        report = _capi.ValidationReport()
        report.struct_size = ctypes.sizeof(report)
        error = _capi.Error_()
        handle = self._enter()
        try:
            with _Interrupt(progress) as interrupt:
                function = interrupt.function or _capi.PROGRESS_FN()  # NULL: no callback
                status = _lib.siflow_validate(handle, ctypes.byref(po), function, None,
                                              ctypes.byref(report), ctypes.byref(error))
            interrupt.finish(status, error)
        finally:
            self._leave()
        def value(name):
            v = getattr(report, name)
            if name.endswith("_ok"):
                return bool(v)
            if isinstance(v, bytes) or name == "solver_worst":
                return (v or b"").decode("utf-8", "replace")
            return v
        return ValidationReport(**{name: value(name) for name, _ in _capi.ValidationReport._fields_
                                   if name != "struct_size"})
