# SPDX-License-Identifier: Apache-2.0
# Every error path reaches Python as the right siflow.Error subclass with the runtime's message
# naming the cause: bad files and bytes, wrong shapes and dtypes, NaN input, batch 0, unknown
# options and enum values, out-of-range integers, SDE limits, a closed model.
import dataclasses

import numpy as np
import pytest

import siflow
from conftest import ROOT, TWO_MOONS


def test_a_missing_file_is_an_io_error():
    with pytest.raises(siflow.IoError, match="cannot open model") as e:
        siflow.load(ROOT / "no" / "such.sif")
    assert isinstance(e.value, OSError) and e.value.code == 7


def test_a_corrupt_file_is_an_invalid_model(tmp_path):
    data = bytearray(TWO_MOONS.read_bytes())
    data[:4] = b"XXXX"
    path = tmp_path / "bad.sif"
    path.write_bytes(bytes(data))
    with pytest.raises(siflow.InvalidModel) as e:
        siflow.load(path)
    assert e.value.message and e.value.status == "SIFLOW_INVALID_MODEL"
    with pytest.raises(siflow.InvalidModel):
        siflow.load(bytes(data))
    with pytest.raises(siflow.InvalidModel, match="too small"):
        siflow.load(b"abc")
    with pytest.raises(siflow.InvalidModel):
        siflow.load(TWO_MOONS.read_bytes()[:1000])


def test_load_refuses_other_types():
    with pytest.raises(TypeError, match="path or bytes"):
        siflow.load(42)


def test_loading_from_bytes_copies_them(model):
    data = bytearray(TWO_MOONS.read_bytes())
    m = siflow.load(memoryview(data)[0:])
    data[:] = b"\0" * len(data)  # the model has its own copy
    np.testing.assert_array_equal(m.sample(5, seed=2), model.sample(5, seed=2))
    # Bytes are used in place; a file is read into memory the model holds.
    assert dataclasses.replace(m.info, held_bytes=0) == dataclasses.replace(model.info,
                                                                             held_bytes=0)
    m.close()


def test_wrong_dim_names_the_shape(model):
    for bad in (np.zeros((4, 3)), np.zeros(2), np.zeros((2, 2, 1))):
        with pytest.raises(siflow.InvalidArgument, match=r"expected \[n, 2\]"):
            model.log_prob(bad)
        with pytest.raises(siflow.InvalidArgument):
            model.encode(bad)
        with pytest.raises(siflow.InvalidArgument):
            model.decode(bad)
        with pytest.raises(siflow.InvalidArgument):
            model.velocity(bad, 0.5)


def test_other_dtypes_are_refused(model):
    for bad in (np.zeros((3, 2), np.int64), np.zeros((3, 2), np.float16), [["a", "b"]]):
        with pytest.raises(siflow.InvalidArgument, match="dtype"):
            model.log_prob(bad)


def test_nan_input_is_refused_by_the_runtime(model):
    x = np.zeros((5, 2))
    x[3, 1] = np.nan
    with pytest.raises(siflow.InvalidArgument, match="row 3 holds NaN or Inf") as e:
        model.log_prob(x)
    assert isinstance(e.value, ValueError)
    with pytest.raises(siflow.InvalidArgument, match="row 3"):
        model.encode(x)
    with pytest.raises(siflow.InvalidArgument, match="does not fit in float32"):
        model.encode(np.full((2, 2), 1e300))


def test_batch_zero_is_refused_by_the_runtime(model):
    with pytest.raises(siflow.InvalidArgument, match="n is 0"):
        model.sample(0)
    with pytest.raises(siflow.InvalidArgument, match="n is 0"):
        model.log_prob(np.zeros((0, 2), np.float32))
    with pytest.raises(siflow.InvalidArgument, match="n is 0"):
        model.velocity(np.zeros((0, 2), np.float32), 0.5)


def test_unknown_option_names_are_type_errors(model):
    with pytest.raises(TypeError, match="unexpected option 'stpes'"):
        model.sample(3, stpes=10)
    with pytest.raises(TypeError, match="unexpected option 'time'"):
        model.sample(3, time=0.5)
    with pytest.raises(TypeError, match="unexpected option 'sde_epsilon'"):
        model.log_prob(np.zeros((2, 2)), sde_epsilon=0.1)
    with pytest.raises(TypeError, match="unexpected option 'steps'"):
        model.velocity(np.zeros((2, 2)), 0.5, steps=3)
    with pytest.raises(TypeError, match="unexpected option 'max_batch'"):
        model.validate(max_batch=3)


@pytest.mark.parametrize("option,value", [
    ("method", "rk5"), ("method", 3), ("backend", "gpu"), ("divergence", "approx"),
    ("sde_schedule", "linear"), ("sde_method", "milstein")])
def test_bad_enum_values_name_the_choices(model, option, value):
    kwargs = {option: value}
    if option == "divergence":
        kwargs["log_prob"] = True
    if option.startswith("sde_") and option != "sde_epsilon":
        kwargs["sde_epsilon"] = 0.5
    with pytest.raises(siflow.InvalidArgument, match=f"{option}: unknown value"):
        model.sample(3, **kwargs)
    with pytest.raises(siflow.InvalidArgument, match="probe: unknown value"):
        model.log_prob(np.zeros((2, 2)), divergence="hutchinson", probe="uniform")


@pytest.mark.parametrize("option,value,match", [
    ("steps", -1, r"outside \[0, "), ("steps", 1 << 32, "outside"), ("steps", 2.5, "integer"),
    ("steps", True, "integer"), ("seed", -3, "outside"), ("seed", 1 << 64, "outside"),
    ("max_batch", -1, "outside"), ("threads", 1 << 40, "outside"), ("tune", 1, "True or False"),
    ("sde_epsilon", "big", "number")])
def test_values_ctypes_would_wrap_are_refused(model, option, value, match):
    with pytest.raises(siflow.InvalidArgument, match=match):
        model.sample(3, **{option: value})


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps 0 is outside"),
    (dict(threads=0), "threads is 0"),
    (dict(max_batch=0), "max_batch"),
    (dict(grid=[0.0, 0.5, 0.5, 1.0]), "grid"),
    (dict(grid=[0.0, 1.0], steps=4), "mutually exclusive"),
    (dict(sde_epsilon=0.5, log_prob=True), "SDE samples have no per-sample log-likelihood"),
    (dict(divergence="exact"), "applies only with log_prob=True"),
    (dict(log_prob=True, probes=3), "applies only with divergence='hutchinson'"),
    (dict(sde_method="em"), "applies only with sde_epsilon"),
    (dict(sde_epsilon=-1.0), "epsilon"),
])
def test_the_runtime_and_the_module_refuse_bad_combinations(model, kwargs, match):
    with pytest.raises(siflow.InvalidArgument, match=match):
        model.sample(4, **kwargs)


def test_sde_on_a_uniform_base_is_unsupported(uniform_model):
    with siflow.load(uniform_model) as m:
        assert m.info.base == "uniform" and not m.info.score_available
        with pytest.raises(siflow.Unsupported) as e:
            m.sample(3, sde_epsilon=0.5)
        assert e.value.code == 3 and "SDE" in e.value.message


def test_log_prob_time_outside_the_range_is_refused(model):
    with pytest.raises(siflow.InvalidArgument, match="negative"):
        model.log_prob(np.zeros((2, 2)), time=-0.5)
    with pytest.raises(siflow.InvalidArgument):
        model.log_prob(np.zeros((2, 2)), time=1.5)


def test_velocity_times_must_match_the_rows(model):
    with pytest.raises(siflow.InvalidArgument, match=r"expected a number, \[3\]"):
        model.velocity(np.zeros((3, 2)), [0.1, 0.2])
    with pytest.raises(siflow.InvalidArgument, match="dtype"):
        model.velocity(np.zeros((3, 2)), "0.5")


def test_validate_without_test_vectors_says_so(uniform_model):
    with siflow.load(uniform_model) as m:
        assert m.info.test_vector_count == m.info.test_trajectory_count == 0
        with pytest.raises(siflow.InvalidArgument, match="no test vectors"):
            m.validate()


def test_a_closed_model_refuses_every_call():
    m = siflow.load(TWO_MOONS)
    m.sample(2)
    m.close()
    assert m.closed and "closed" in repr(m)
    calls = [lambda: m.sample(2), lambda: m.log_prob(np.zeros((1, 2))),
             lambda: m.encode(np.zeros((1, 2))), lambda: m.decode(np.zeros((1, 2))),
             lambda: m.velocity(np.zeros((1, 2)), 0.0), lambda: m.validate(),
             lambda: m.info, lambda: m.arena_bytes(), lambda: m.kernels()]
    for call in calls:
        with pytest.raises(siflow.InvalidArgument, match="closed"):
            call()
    m.close()  # closing twice is fine


def test_errors_carry_code_status_and_message(model):
    with pytest.raises(siflow.Error) as e:
        model.sample(0)
    assert (e.value.code, e.value.status) == (1, "SIFLOW_INVALID_ARGUMENT")
    assert str(e.value) == e.value.message == "sample: n is 0 (empty batch)"
