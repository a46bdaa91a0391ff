# SPDX-License-Identifier: Apache-2.0
# Keyword options -> siflow_plan_options and siflow_run_options. SPELLINGS names the Python
# keyword of every field of the C option structs (tests/test_options.py fails when siflow.h has a
# field this table lacks); the checks here only guard what ctypes would silently wrap (negative
# or too large integers, unknown names); the runtime checks the values and names the cause.
import ctypes
import numbers
import operator

import numpy as np

from . import _capi
from ._errors import InvalidArgument


class Internal:
    """A C field the module fills itself, with the reason."""

    def __init__(self, why):
        self.why = why

    def __repr__(self):
        return f"Internal({self.why!r})"


# (C struct, C field) -> the Python keyword that sets it, or Internal(reason).
SPELLINGS = {
    ("siflow_plan_options", "struct_size"): Internal("sizeof(siflow_plan_options)"),
    ("siflow_plan_options", "max_batch"): "max_batch",
    # The plan serves the run: it plans tangents for the run's divergence when log-likelihoods
    # are asked for and none otherwise (as the CLI does), and max_probes = probes.
    ("siflow_plan_options", "divergence"): "divergence",
    ("siflow_plan_options", "max_probes"): "probes",
    ("siflow_plan_options", "threads"): "threads",
    ("siflow_plan_options", "backend"): "backend",
    ("siflow_plan_options", "tune"): "tune",
    ("siflow_plan_options", "precision"): "precision",
    ("siflow_plan_options", "tangent_block"): "tangent_block",
    ("siflow_plan_options", "guidance"): "guidance",
    ("siflow_plan_options", "block_rows"): "block_rows",
    ("siflow_run_options", "struct_size"): Internal("sizeof(siflow_run_options)"),
    ("siflow_run_options", "method"): "method",
    ("siflow_run_options", "steps"): "steps",
    ("siflow_run_options", "grid"): "grid",
    ("siflow_run_options", "grid_size"): "grid",  # len(grid)
    ("siflow_run_options", "seed"): "seed",
    ("siflow_run_options", "divergence"): "divergence",
    ("siflow_run_options", "probes"): "probes",
    ("siflow_run_options", "probe"): "probe",
    ("siflow_run_options", "time"): "time",
    ("siflow_run_options", "sde_epsilon"): "sde_epsilon",
    ("siflow_run_options", "sde_schedule"): "sde_schedule",
    ("siflow_run_options", "sde_stop_delta"): "sde_stop_delta",
    ("siflow_run_options", "sde_method"): "sde_method",
    ("siflow_run_options", "progress"): "progress",
    ("siflow_run_options", "progress_user"): Internal("the module's callback state"),
    ("siflow_run_options", "grid_kind"): "grid_kind",  # "uniform", "shift:A", "power:R", "cosine"
    ("siflow_run_options", "grid_param"): "grid_kind",  # the A or R of grid_kind
    ("siflow_run_options", "rtol"): "rtol",
    ("siflow_run_options", "atol"): "atol",
    ("siflow_run_options", "max_steps"): "max_steps",
    ("siflow_run_options", "solver"): "solver",
    ("siflow_run_options", "labels"): "labels",  # one integer label per row
    ("siflow_run_options", "label"): "label",  # the label of every row
    ("siflow_run_options", "cond"): "cond",  # [n, cond_width] condition vectors
    ("siflow_run_options", "temperature"): "temperature",
}

# Enum spellings (the CLI's) -> C values.
METHODS = {"euler": 0, "heun": 1, "midpoint": 2, "rk4": 3, "rk4-38": 4, "ab2": 5, "ab3": 6,
           "ab4": 7, "dopri5": 8}
GRID_KINDS = {"uniform": 0, "shift": 1, "power": 2, "cosine": 3}
DIVERGENCES = {"none": 0, "exact": 1, "hutchinson": 2}
PROBES = {"rademacher": 0, "gaussian": 1}
SDE_SCHEDULES = {"constant": 0, "a": 1}
SDE_METHODS = {"em": 0, "heun": 1}
BACKENDS = {"auto": 0, "reference": 1, "simd": 2, "xnnpack": 3}
PRECISIONS = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}
ENUMS = {"method": METHODS, "divergence": DIVERGENCES, "probe": PROBES,
         "sde_schedule": SDE_SCHEDULES, "sde_method": SDE_METHODS, "backend": BACKENDS,
         "precision": PRECISIONS}

PLAN = ("max_batch", "threads", "backend", "tune", "precision", "tangent_block", "guidance",
        "block_rows")
ODE = ("method", "steps", "grid", "progress", "grid_kind", "rtol", "atol", "max_steps", "solver")
DIVERGENCE = ("divergence", "probes", "probe")
SDE = ("sde_epsilon", "sde_schedule", "sde_stop_delta", "sde_method")
# Conditional models: a class label per row (label=K for all, labels=array) or condition vectors.
CONDITIONING = ("label", "labels", "cond")

# The keywords each Model method takes (besides its positional arguments).
ACCEPTED = {
    "sample": PLAN + ODE + DIVERGENCE + SDE + CONDITIONING + ("seed", "log_prob", "temperature"),
    "decode": PLAN + ODE + DIVERGENCE + CONDITIONING + ("seed", "log_prob"),
    "encode": PLAN + ODE + CONDITIONING,
    "log_prob": PLAN + ODE + DIVERGENCE + CONDITIONING + ("seed", "time"),
    "velocity": PLAN + CONDITIONING,
    "validate": ("threads", "backend", "tune", "precision", "progress"),
    "arena_bytes": PLAN + ("divergence", "probes"),
    "kernels": PLAN,
}


def check_names(method, options):
    accepted = ACCEPTED[method]
    for name in options:
        if name not in accepted:
            raise TypeError(f"{method}() got an unexpected option '{name}' (it takes: "
                            f"{', '.join(sorted(accepted))})")


def require_with(options, names, needed, condition):
    for name in names:
        if name in options and not condition:
            raise InvalidArgument(f"{name} applies only with {needed}")


def _integer(name, value, low, high):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(f"{name}: expected an integer, not {value!r}")
    value = operator.index(value)
    if not low <= value <= high:
        raise InvalidArgument(f"{name}: {value} is outside [{low}, {high}]")
    return value


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name}: expected a number, not {value!r}")
    return float(value)


def _enum(name, value):
    table = ENUMS[name]
    if not isinstance(value, str) or value not in table:
        raise InvalidArgument(f"{name}: unknown value {value!r} (expected "
                              f"{', '.join(table)})")
    return table[value]


U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
SIZE = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1


def plan_options(options, divergence="none", probes=1):
    """siflow_plan_options from PLAN keywords; divergence and probes come from the run."""
    po = _capi.PlanOptions()
    _capi.lib.siflow_plan_options_init(ctypes.byref(po))
    if "max_batch" in options:
        po.max_batch = _integer("max_batch", options["max_batch"], 0, SIZE)
    if "threads" in options:
        po.threads = _integer("threads", options["threads"], 0, U32)
    if "backend" in options:
        po.backend = _enum("backend", options["backend"])
    if "precision" in options:
        po.precision = _enum("precision", options["precision"])
    if "tune" in options:
        if not isinstance(options["tune"], (bool, np.bool_)):
            raise InvalidArgument(f"tune: expected True or False, not {options['tune']!r}")
        po.tune = 1 if options["tune"] else 0
    if "tangent_block" in options:
        po.tangent_block = _integer("tangent_block", options["tangent_block"], 0, U32)
    if "guidance" in options:
        po.guidance = _real("guidance", options["guidance"])
    if "block_rows" in options:
        po.block_rows = _integer("block_rows", options["block_rows"], 0, SIZE)
    po.divergence = _enum("divergence", divergence)
    po.max_probes = _integer("probes", probes, 0, U32)
    return po


def plan_key(po):
    return tuple(getattr(po, name) for name, _ in _capi.PlanOptions._fields_)


def grid_array(grid):
    try:
        g = np.asarray(grid)
    except Exception as e:  # an object numpy cannot read
        raise InvalidArgument(f"grid: not an array of times ({e})") from e
    if g.dtype.kind not in "fiu" or g.ndim != 1:
        raise InvalidArgument(f"grid: expected a 1-D array of times, got shape {g.shape} and "
                              f"dtype {g.dtype}")
    return np.require(g, dtype=np.float64, requirements=["C_CONTIGUOUS", "ALIGNED"])


def run_options(options):
    """siflow_run_options from ODE, DIVERGENCE, SDE, seed and time keywords. Returns the struct
    and the objects it points into (kept alive for the call). progress is set by the caller."""
    ro = _capi.RunOptions()
    _capi.lib.siflow_run_options_init(ctypes.byref(ro))
    keep = []
    if "steps" in options and "grid" in options:
        raise InvalidArgument("steps and grid are mutually exclusive")
    if "method" in options:
        ro.method = _enum("method", options["method"])
    if "steps" in options:
        ro.steps = _integer("steps", options["steps"], 0, U32)
    if "grid" in options:
        g = grid_array(options["grid"])
        keep.append(g)
        ro.grid = g.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        ro.grid_size = g.shape[0]
    if "grid_kind" in options:
        if "grid" in options:
            raise InvalidArgument("grid_kind and grid are mutually exclusive")
        text = options["grid_kind"]
        if not isinstance(text, str):
            raise InvalidArgument(f"grid_kind: expected a string like 'power:2', not {text!r}")
        name, _, param = text.partition(":")
        if name not in GRID_KINDS:
            raise InvalidArgument(f"grid_kind: unknown kind {name!r} (expected uniform, shift:A, "
                                  f"power:R or cosine)")
        ro.grid_kind = GRID_KINDS[name]
        if param:
            try:
                ro.grid_param = float(param)
            except ValueError:
                raise InvalidArgument(f"grid_kind: {param!r} is not a number") from None
    if "rtol" in options:
        ro.rtol = _real("rtol", options["rtol"])
    if "atol" in options:
        ro.atol = _real("atol", options["atol"])
    if "max_steps" in options:
        ro.max_steps = _integer("max_steps", options["max_steps"], 0, U32)
    if "solver" in options:
        if not isinstance(options["solver"], str):
            raise InvalidArgument(f"solver: expected a name, not {options['solver']!r}")
        name = options["solver"].encode()
        keep.append(name)
        ro.solver = name
    if "seed" in options:
        ro.seed = _integer("seed", options["seed"], 0, U64)
    if "divergence" in options:
        ro.divergence = _enum("divergence", options["divergence"])
    if "probes" in options:
        ro.probes = _integer("probes", options["probes"], 0, U32)
    if "probe" in options:
        ro.probe = _enum("probe", options["probe"])
    if "time" in options and options["time"] is not None:
        ro.time = _real("time", options["time"])
        if ro.time < 0:
            raise InvalidArgument(f"time: {options['time']} is negative; expected a time in the "
                                  f"model's range (start, end]")
    if "sde_epsilon" in options:
        ro.sde_epsilon = _real("sde_epsilon", options["sde_epsilon"])
    if "sde_schedule" in options:
        ro.sde_schedule = _enum("sde_schedule", options["sde_schedule"])
    if "sde_stop_delta" in options:
        ro.sde_stop_delta = _real("sde_stop_delta", options["sde_stop_delta"])
    if "sde_method" in options:
        ro.sde_method = _enum("sde_method", options["sde_method"])
    if "temperature" in options:
        ro.temperature = _real("temperature", options["temperature"])
    return ro, keep


I32 = (1 << 31) - 1


def label_array(labels, n):
    """The labels keyword: n integer labels as a C-contiguous int32 array. Refuses other dtypes
    (a float label is more likely a mistake than a class), other counts and values int32 cannot
    hold; the runtime checks them against the model's classes."""
    try:
        a = np.asarray(labels)
    except Exception as e:  # an object numpy cannot read
        raise InvalidArgument(f"labels: not an array of integers ({e})") from e
    if a.dtype.kind not in "iu":
        raise InvalidArgument(f"labels: dtype {a.dtype} is not an integer type (one class label "
                              f"per row)")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a.reshape(a.shape[0])
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidArgument(f"labels: shape {a.shape}, expected [{n}] (one label per row)")
    if a.size and a.min() < 0:
        row = int(np.argmax(a < 0))
        raise InvalidArgument(f"labels: label {a[row]} of row {row} is not a class label (labels "
                              f"run from 0)")
    if a.size and a.max() > I32:
        row = int(np.argmax(a > I32))
        raise InvalidArgument(f"labels: label {a[row]} of row {row} is too large for a class "
                              f"label")
    return np.require(a, dtype=np.int32, requirements=["C_CONTIGUOUS", "ALIGNED"])


def conditioning(options, ro, keep, n, cond_width):
    """Sets the run options' labels / label / cond from the CONDITIONING keywords of a call with
    n rows on a model whose condition vectors have cond_width values (0: none)."""
    if "label" in options and "labels" in options:
        raise InvalidArgument("label and labels are mutually exclusive (label gives every row "
                              "the same class)")
    if "label" in options:
        ro.label = _integer("label", options["label"], 0, I32)
    if "labels" in options:
        a = label_array(options["labels"], n)
        keep.append(a)
        ro.labels = a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
    if "cond" in options:
        if cond_width == 0:
            raise InvalidArgument("cond: this model takes no condition vector")
        try:
            c = np.asarray(options["cond"])
        except Exception as e:
            raise InvalidArgument(f"cond: not an array of numbers ({e})") from e
        if c.dtype.kind not in "fiu" or c.ndim != 2 or c.shape != (n, cond_width):
            raise InvalidArgument(f"cond: shape {c.shape} and dtype {c.dtype}, expected numbers "
                                  f"of shape [{n}, {cond_width}] (one condition vector per row)")
        if c.dtype.itemsize == 8 or c.dtype.kind in "iu":
            big = np.abs(c[np.isfinite(c)]) if c.dtype.kind == "f" else np.abs(c)
            if big.size and big.max() > np.finfo(np.float32).max:
                raise InvalidArgument(f"cond: {big.max():g} does not fit in float32")
        c = np.require(c, dtype=np.float32, requirements=["C_CONTIGUOUS", "ALIGNED"])
        keep.append(c)
        ro.cond = c.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def divergence_of(options):
    """The run's divergence spelling and probe count (C defaults when not given)."""
    ro = _capi.RunOptions()
    _capi.lib.siflow_run_options_init(ctypes.byref(ro))
    name = options.get("divergence")
    if name is None:
        name = {v: k for k, v in DIVERGENCES.items()}[ro.divergence]
    else:
        _enum("divergence", name)
    probes = _integer("probes", options.get("probes", ro.probes), 0, U32)
    return name, probes
