# SPDX-License-Identifier: Apache-2.0
# The module covers the C API: every field of every option struct in siflow.h has a Python
# spelling that the methods accept, every enumerator of the option enums is reachable, every
# status code has its exception class, and the ctypes structs match the header field by field.
import ctypes
import re

import pytest

import siflow
from siflow import _capi, _errors, _model, _options
from conftest import ROOT

HEADER = (ROOT / "runtime" / "include" / "siflow" / "siflow.h").read_text()


def structs():
    """{struct name: [field names]} for every typedef struct with a body in siflow.h."""
    out = {}
    for name, body in re.findall(r"typedef struct (siflow_\w+) \{(.*?)\} \1;", HEADER, re.S):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        fields = []
        for declaration in body.split(";"):
            declaration = declaration.strip()
            if declaration:
                # "uint16_t format_major" or "char message[256]" or "int a, b"
                for part in declaration.split(","):
                    fields.append(re.search(r"(\w+)\s*(\[\w*\])?\s*$", part.strip()).group(1))
        out[name] = fields
    return out


def enums():
    """{enum name: {enumerator: value}} from siflow.h."""
    out = {}
    for name, body in re.findall(r"typedef enum (siflow_\w+) \{(.*?)\} \1;", HEADER, re.S):
        out[name] = {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}
    return out


def test_the_header_parser_sees_the_structs():
    s = structs()
    assert "siflow_run_options" in s and "siflow_plan_options" in s
    assert s["siflow_run_options"][0] == "struct_size"
    assert "sde_method" in s["siflow_run_options"]
    assert s["siflow_error"] == ["code", "message"]


def test_every_option_struct_field_has_a_python_spelling():
    accepted = set().union(*_options.ACCEPTED.values())
    option_structs = {n: f for n, f in structs().items() if n.endswith("_options")}
    assert len(option_structs) >= 2
    missing = [(s, f) for s, fields in option_structs.items() for f in fields
               if (s, f) not in _options.SPELLINGS]
    assert not missing, f"C option fields without a Python spelling: {missing}"
    stale = [k for k in _options.SPELLINGS if k[0] not in option_structs
             or k[1] not in option_structs[k[0]]]
    assert not stale, f"spellings of fields siflow.h no longer has: {stale}"
    for key, spelling in _options.SPELLINGS.items():
        if isinstance(spelling, _options.Internal):
            assert key[1] in ("struct_size", "progress_user"), key
        else:
            assert spelling in accepted, (key, spelling)


def test_info_and_report_structs_have_python_fields():
    s = structs()
    info_fields = {f.name for f in _model.ModelInfo.__dataclass_fields__.values()}
    for field in s["siflow_model_info"]:
        assert field in _model.INFO_SPELLINGS, f"siflow_model_info.{field} has no Python field"
        spelling = _model.INFO_SPELLINGS[field]
        assert spelling is None and field == "struct_size" or spelling in info_fields
    report_fields = set(_model.ValidationReport.__dataclass_fields__)
    assert set(s["siflow_validation_report"]) - {"struct_size"} == report_fields


def declarations(struct):
    """[(C type, field name)] of a struct in siflow.h, e.g. ("const double*", "grid")."""
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct), HEADER, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    out = []
    for declaration in filter(None, (d.strip() for d in body.split(";"))):
        first, *rest = [p.strip() for p in declaration.split(",")]
        kind, name = re.match(r"(.*?[\s*])(\w+(?:\[\w+\])?)$", first).groups()
        kind = re.sub(r"\s+\*", "*", kind.strip())
        out += [(kind, name)] + [(kind, r) for r in rest]
    return out


# C type in siflow.h -> the ctypes type the module must declare for it.
C_TYPES = {"uint16_t": ctypes.c_uint16, "uint32_t": ctypes.c_uint32,
           "uint64_t": ctypes.c_uint64, "size_t": ctypes.c_size_t, "int": ctypes.c_int,
           "double": ctypes.c_double, "const char*": ctypes.c_char_p,
           "const double*": ctypes.POINTER(ctypes.c_double), "void*": ctypes.c_void_p,
           "siflow_progress_fn": _capi.PROGRESS_FN, "int32_t": ctypes.c_int32,
           "const int32_t*": ctypes.POINTER(ctypes.c_int32),
           "const float*": ctypes.POINTER(ctypes.c_float)}


def ctypes_of(kind, name):
    if kind in C_TYPES:
        return C_TYPES[kind]
    if kind in enums():
        return ctypes.c_int
    raise AssertionError(f"no ctypes mapping for the C type {kind!r} of {name}")


@pytest.mark.parametrize("name,cls", [
    ("siflow_plan_options", _capi.PlanOptions), ("siflow_run_options", _capi.RunOptions),
    ("siflow_model_info", _capi.ModelInfo),
    ("siflow_validation_report", _capi.ValidationReport), ("siflow_error", _capi.Error_)])
def test_ctypes_structs_follow_the_header(name, cls):
    assert [f for f, _ in cls._fields_] == structs()[name]
    for (kind, field), (py_name, py_type) in zip(declarations(name), cls._fields_):
        array = re.fullmatch(r"(\w+)\[(\d+)\]", field)
        if array:  # "char message[256]", "uint32_t sample_shape[3]"
            assert py_name == array.group(1) and py_type._length_ == int(array.group(2))
            element = ctypes.c_char if kind == "char" else ctypes_of(kind, field)
            assert py_type._type_ is element, (name, field, kind, py_type)
            continue
        assert field == py_name
        assert py_type is ctypes_of(kind, field), (name, field, kind, py_type)


def test_option_structs_have_the_library_size():
    # siflow_*_init writes sizeof into struct_size.
    for init, cls in (("siflow_plan_options_init", _capi.PlanOptions),
                      ("siflow_run_options_init", _capi.RunOptions)):
        o = cls()
        getattr(_capi.lib, init)(ctypes.byref(o))
        assert o.struct_size == ctypes.sizeof(cls)


@pytest.mark.parametrize("c_enum,table", [
    ("siflow_method", _options.METHODS), ("siflow_divergence", _options.DIVERGENCES),
    ("siflow_probe", _options.PROBES), ("siflow_eps_schedule", _options.SDE_SCHEDULES),
    ("siflow_backend", _options.BACKENDS), ("siflow_sde_method", _options.SDE_METHODS),
    ("siflow_grid_kind", _options.GRID_KINDS),
    ("siflow_precision", _options.PRECISIONS)])
def test_every_enumerator_of_the_option_enums_has_a_spelling(c_enum, table):
    assert sorted(enums()[c_enum].values()) == sorted(table.values())


def test_the_option_enums_are_all_mapped():
    mapped = {"siflow_method", "siflow_divergence", "siflow_probe", "siflow_eps_schedule",
              "siflow_backend", "siflow_sde_method", "siflow_grid_kind",
              "siflow_precision"}
    info_enums = {"siflow_interpolant", "siflow_base", "siflow_status"}
    assert set(enums()) == mapped | info_enums
    assert sorted(enums()["siflow_interpolant"].values()) == sorted(_model._INTERPOLANTS)
    assert sorted(enums()["siflow_base"].values()) == sorted(_model._BASES)


def test_every_status_code_has_its_exception_class():
    codes = enums()["siflow_status"]
    for name, value in codes.items():
        if value == 0:
            continue
        cls = _errors.ERRORS[value]
        assert issubclass(cls, siflow.Error)
        assert cls.status == name and cls.code == value
        assert getattr(siflow, cls.__name__) is cls
    assert len(_errors.ERRORS) == len(codes) - 1


def test_the_module_reports_the_library_version():
    version = re.search(r'#define SIFLOW_VERSION_STRING "([^"]+)"', HEADER).group(1)
    assert siflow.__version__ == version


def test_precision_sets_the_plan_option_and_refuses_unknown_names():
    assert _options.plan_options({}).precision == 0
    for name, value in _options.PRECISIONS.items():
        assert _options.plan_options({"precision": name}).precision == value
    with pytest.raises(siflow.InvalidArgument, match="precision: unknown value 'fp8'"):
        _options.plan_options({"precision": "fp8"})


def test_block_rows_gives_the_same_bits(model):
    import numpy as np
    x = np.array([[0.5, -0.25], [1.0, 0.75], [-1.5, 0.1]], dtype=np.float32)
    whole = model.log_prob(x, steps=4)
    blocked = model.log_prob(x, steps=4, block_rows=1)
    assert np.array_equal(whole, blocked)
    with pytest.raises(siflow.InvalidArgument, match="block_rows"):
        model.log_prob(x, block_rows=(1 << 20) + 1)
    with pytest.raises(siflow.InvalidArgument, match="block_rows"):
        model.log_prob(x, block_rows=-1)


def test_tangent_block_gives_the_same_log_likelihood_bits_in_a_smaller_arena(model):
    import numpy as np
    x = np.array([[0.5, -0.25], [1.0, 0.75], [-1.5, 0.1]], dtype=np.float32)
    whole = model.log_prob(x, steps=4)
    blocked = model.log_prob(x, steps=4, tangent_block=1)
    assert np.array_equal(whole, blocked)
    assert model.arena_bytes(divergence="exact", tangent_block=1) < \
        model.arena_bytes(divergence="exact")
    with pytest.raises(siflow.InvalidArgument, match="tangent_block"):
        model.log_prob(x, tangent_block=-1)
