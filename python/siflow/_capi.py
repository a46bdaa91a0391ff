# SPDX-License-Identifier: Apache-2.0
# ctypes declarations of the C API (runtime/include/siflow/siflow.h) and the loading of
# libsiflow_c.so. Nothing else in the module touches ctypes prototypes; keep this file in step
# with siflow.h (tests/test_options.py compares the two).
import ctypes
import os

c_status = ctypes.c_int
c_enum = ctypes.c_int  # int-sized on the ABIs the module runs on; _check_struct would see otherwise


class Error_(ctypes.Structure):
    _fields_ = [("code", c_status), ("message", ctypes.c_char * 256)]


PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)


class PlanOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("max_batch", ctypes.c_size_t),
        ("divergence", c_enum),
        ("max_probes", ctypes.c_uint32),
        ("threads", ctypes.c_uint32),
        ("backend", c_enum),
        ("tune", ctypes.c_int),
        ("precision", c_enum),
        ("tangent_block", ctypes.c_uint32),
        ("guidance", ctypes.c_double),
        ("block_rows", ctypes.c_size_t),
    ]


class RunOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("method", c_enum),
        ("steps", ctypes.c_uint32),
        ("grid", ctypes.POINTER(ctypes.c_double)),
        ("grid_size", ctypes.c_size_t),
        ("seed", ctypes.c_uint64),
        ("divergence", c_enum),
        ("probes", ctypes.c_uint32),
        ("probe", c_enum),
        ("time", ctypes.c_double),
        ("sde_epsilon", ctypes.c_double),
        ("sde_schedule", c_enum),
        ("sde_stop_delta", ctypes.c_double),
        ("sde_method", c_enum),
        ("progress", PROGRESS_FN),
        ("progress_user", ctypes.c_void_p),
        ("grid_kind", c_enum),
        ("grid_param", ctypes.c_double),
        ("rtol", ctypes.c_double),
        ("atol", ctypes.c_double),
        ("max_steps", ctypes.c_uint32),
        ("solver", ctypes.c_char_p),
        ("labels", ctypes.POINTER(ctypes.c_int32)),
        ("label", ctypes.c_int32),
        ("cond", ctypes.POINTER(ctypes.c_float)),
        ("temperature", ctypes.c_double),
    ]


class ModelInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("dim", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("format_major", ctypes.c_uint16),
        ("format_minor", ctypes.c_uint16),
        ("node_count", ctypes.c_uint32),
        ("parameter_count", ctypes.c_uint64),
        ("f16_parameter_count", ctypes.c_uint64),
        ("weight_bytes", ctypes.c_size_t),
        ("expanded_bytes", ctypes.c_size_t),
        ("held_bytes", ctypes.c_size_t),
        ("packed_bytes", ctypes.c_size_t),
        ("interpolant", c_enum),
        ("fourier_terms", ctypes.c_uint32),
        ("base", c_enum),
        ("normalized", ctypes.c_int),
        ("score_available", ctypes.c_int),
        ("time_start", ctypes.c_double),
        ("time_end", ctypes.c_double),
        ("test_vector_count", ctypes.c_uint32),
        ("test_trajectory_count", ctypes.c_uint32),
        ("metadata_count", ctypes.c_uint32),
        ("solver_count", ctypes.c_uint32),
        ("takes_labels", ctypes.c_int),
        ("label_classes", ctypes.c_uint32),
        ("null_label", ctypes.c_int32),
        ("cond_width", ctypes.c_uint32),
        ("has_null_cond", ctypes.c_int),
        ("sample_rank", ctypes.c_uint32),
        ("sample_shape", ctypes.c_uint32 * 3),
    ]


class ValidationReport(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("velocity_count", ctypes.c_uint32),
        ("velocity_max_error", ctypes.c_double),
        ("velocity_tolerance", ctypes.c_double),
        ("velocity_ok", ctypes.c_int),
        ("trajectory_count", ctypes.c_uint32),
        ("trajectory_steps", ctypes.c_uint32),
        ("trajectory_max_error", ctypes.c_double),
        ("trajectory_tolerance", ctypes.c_double),
        ("trajectory_ok", ctypes.c_int),
        ("solver_count", ctypes.c_uint32),
        ("solver_max_error", ctypes.c_double),
        ("solver_tolerance", ctypes.c_double),
        ("solver_ok", ctypes.c_int),
        ("solver_worst", ctypes.c_char_p),
    ]


_model_p = ctypes.c_void_p
_plan_p = ctypes.c_void_p
_f32_p = ctypes.POINTER(ctypes.c_float)
_f64_p = ctypes.POINTER(ctypes.c_double)
_err_p = ctypes.POINTER(Error_)

# name: (restype, argtypes)
_PROTOTYPES = {
    "siflow_version": (ctypes.c_char_p, []),
    "siflow_plan_options_init": (None, [ctypes.POINTER(PlanOptions)]),
    "siflow_run_options_init": (None, [ctypes.POINTER(RunOptions)]),
    "siflow_model_load": (c_status, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                     ctypes.POINTER(_model_p), _err_p]),
    "siflow_model_load_file": (c_status, [ctypes.c_char_p, ctypes.POINTER(_model_p), _err_p]),
    "siflow_model_memory_bytes": (c_status, [ctypes.c_void_p, ctypes.c_size_t,
                                             ctypes.POINTER(ctypes.c_size_t), _err_p]),
    "siflow_model_free": (None, [_model_p]),
    "siflow_model_dim": (ctypes.c_uint32, [_model_p]),
    "siflow_model_get_info": (c_status, [_model_p, ctypes.POINTER(ModelInfo), _err_p]),
    "siflow_model_metadata": (ctypes.c_int, [_model_p, ctypes.c_uint32,
                                             ctypes.POINTER(ctypes.c_char_p),
                                             ctypes.POINTER(ctypes.c_char_p)]),
    "siflow_model_node": (ctypes.c_int, [_model_p, ctypes.c_uint32,
                                         ctypes.POINTER(ctypes.c_char_p),
                                         ctypes.POINTER(ctypes.c_uint32),
                                         ctypes.POINTER(ctypes.c_uint32)]),
    "siflow_arena_bytes": (c_status, [_model_p, ctypes.POINTER(PlanOptions),
                                      ctypes.POINTER(ctypes.c_size_t), _err_p]),
    "siflow_plan_create": (c_status, [_model_p, ctypes.POINTER(PlanOptions), ctypes.c_void_p,
                                      ctypes.c_size_t, ctypes.POINTER(_plan_p), _err_p]),
    "siflow_plan_free": (None, [_plan_p]),
    "siflow_plan_node_kernel": (ctypes.c_char_p, [_plan_p, ctypes.c_uint32]),
    "siflow_model_solver": (ctypes.c_int, [_model_p, ctypes.c_uint32,
                                           ctypes.POINTER(ctypes.c_char_p),
                                           ctypes.POINTER(ctypes.c_uint32),
                                           ctypes.POINTER(ctypes.c_double)]),
    "siflow_sample": (c_status, [_plan_p, ctypes.c_size_t, ctypes.POINTER(RunOptions), _f32_p,
                                 _f64_p, _err_p]),
    "siflow_decode": (c_status, [_plan_p, ctypes.c_size_t, _f32_p, ctypes.POINTER(RunOptions),
                                 _f32_p, _f64_p, _err_p]),
    "siflow_encode": (c_status, [_plan_p, ctypes.c_size_t, _f32_p, ctypes.POINTER(RunOptions),
                                 _f32_p, _err_p]),
    "siflow_log_prob": (c_status, [_plan_p, ctypes.c_size_t, _f32_p, ctypes.POINTER(RunOptions),
                                   _f64_p, _err_p]),
    "siflow_velocity": (c_status, [_plan_p, ctypes.c_size_t, _f32_p, _f32_p, _f32_p, _err_p]),
    "siflow_velocity_conditioned": (c_status, [_plan_p, ctypes.c_size_t, _f32_p, _f32_p,
                                               ctypes.POINTER(RunOptions), _f32_p, _err_p]),
    "siflow_validate": (c_status, [_model_p, ctypes.POINTER(PlanOptions), PROGRESS_FN,
                                   ctypes.c_void_p, ctypes.POINTER(ValidationReport), _err_p]),
}


def _library_path():
    """SIFLOW_LIBRARY, else the path the build recorded in _library.py (relative to this
    package), else libsiflow_c.so next to this file."""
    override = os.environ.get("SIFLOW_LIBRARY")
    if override:
        return override
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from . import _library
        relative = _library.LIBRARY
    except ImportError:
        relative = "libsiflow_c.so"
    return os.path.normpath(os.path.join(here, relative))


def _check_struct(lib, init, struct):
    """The library's *_init writes sizeof(struct) into struct_size: it must be ctypes' size,
    or the module and the library disagree about the layout."""
    buffer = (ctypes.c_uint8 * (ctypes.sizeof(struct) + 256))()
    getattr(lib, init)(ctypes.cast(buffer, ctypes.POINTER(struct)))
    size = ctypes.c_uint32.from_buffer(buffer).value
    if size != ctypes.sizeof(struct):
        raise ImportError(
            f"siflow: {init} in {lib._name} reports a {size}-byte struct, but this module "
            f"declares {ctypes.sizeof(struct)} bytes: the module and the library are from "
            f"different siflow versions")


def load_library():
    path = _library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(
            f"siflow: cannot load the runtime library '{path}' ({e}); build it with "
            f"cmake -DSIFLOW_BUILD_PYTHON=ON (docs/python.md) or point SIFLOW_LIBRARY at a "
            f"libsiflow_c.so") from e
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise ImportError(f"siflow: {path} has no {name}: the library is older than this "
                              f"module") from e
        fn.restype = restype
        fn.argtypes = argtypes
    _check_struct(lib, "siflow_plan_options_init", PlanOptions)
    _check_struct(lib, "siflow_run_options_init", RunOptions)
    return lib, path


lib, library_path = load_library()
