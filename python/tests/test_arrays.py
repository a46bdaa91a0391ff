# SPDX-License-Identifier: Apache-2.0
# numpy in and out: float64, non-contiguous, byte-swapped and unaligned inputs give the bits of
# their float32 C-contiguous copy and are never modified; outputs have the documented dtypes and
# shapes; max_batch chunking does not change the bits; plans are cached per options set.
import numpy as np

import siflow
from conftest import MIXTURE8D, TWO_MOONS, bits


def points(n=40, d=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_outputs_have_the_documented_types(model):
    x = model.sample(7, seed=1)
    assert x.dtype == np.float32 and x.shape == (7, 2) and x.flags.c_contiguous
    y, lp = model.sample(7, seed=1, log_prob=True)
    assert lp.dtype == np.float64 and lp.shape == (7,)
    assert model.log_prob(x).dtype == np.float64
    assert model.encode(x).dtype == np.float32 and model.decode(x).shape == (7, 2)
    assert model.velocity(x, 0.5).dtype == np.float32
    assert model.info.sample_shape == (2,)


def test_float64_input_is_rounded_to_float32_once(model):
    x64 = points()
    x32 = x64.astype(np.float32)
    np.testing.assert_array_equal(bits(model.log_prob(x64)), bits(model.log_prob(x32)))
    np.testing.assert_array_equal(bits(model.encode(x64)), bits(model.encode(x32)))
    np.testing.assert_array_equal(bits(model.velocity(x64, np.full(40, 0.25))),
                                  bits(model.velocity(x32, np.float32(0.25))))


def test_non_contiguous_inputs_are_copied(model):
    base = points(80).astype(np.float32)
    views = [base[::2], np.asfortranarray(base[:40]), base[:40, ::-1], base.T.copy().T[:40]]
    for view in views:
        copy = np.ascontiguousarray(view)
        before = view.copy()
        np.testing.assert_array_equal(bits(model.log_prob(view)), bits(model.log_prob(copy)))
        np.testing.assert_array_equal(bits(model.encode(view)), bits(model.encode(copy)))
        np.testing.assert_array_equal(bits(model.decode(view)), bits(model.decode(copy)))
        np.testing.assert_array_equal(view, before)  # inputs are read only
    t = np.linspace(0, 1, 80)[::2]
    np.testing.assert_array_equal(bits(model.velocity(views[0], t)),
                                  bits(model.velocity(np.ascontiguousarray(views[0]),
                                                      np.ascontiguousarray(t))))


def test_byte_swapped_unaligned_and_list_inputs(model):
    x = points(10).astype(np.float32)
    raw = bytearray(x.nbytes + 1)
    raw[1:] = x.tobytes()
    unaligned = np.frombuffer(raw, np.float32, count=20, offset=1).reshape(10, 2)
    assert not unaligned.flags.aligned
    reference = bits(model.log_prob(x))
    # A list holds Python floats (float64), rounded to the same float32 values.
    for variant in (x.astype(">f4"), unaligned, x.tolist()):
        np.testing.assert_array_equal(bits(model.log_prob(variant)), reference)


def test_max_batch_chunks_give_the_same_bits():
    with siflow.load(MIXTURE8D) as m:
        x = points(50, 8)
        reference = m.log_prob(x, steps=5)
        samples = m.sample(50, seed=3, steps=5)
        for batch in (1, 7, 64):
            np.testing.assert_array_equal(bits(m.log_prob(x, steps=5, max_batch=batch)),
                                          bits(reference))
            np.testing.assert_array_equal(bits(m.sample(50, seed=3, steps=5, max_batch=batch)),
                                          bits(samples))
        assert m.arena_bytes(max_batch=8) < m.arena_bytes(max_batch=512)
        assert m.arena_bytes(divergence="none") < m.arena_bytes(divergence="exact")


def test_plans_are_cached_per_options_set(model):
    model.sample(3)
    model.sample(5, seed=9)
    assert len(model._idle) == 1  # the same plan options: one plan, reused
    model.sample(3, max_batch=8)
    model.log_prob(np.zeros((2, 2)))
    model.log_prob(np.zeros((2, 2)), divergence="hutchinson", probes=3)
    assert len(model._idle) == 4
    assert all(len(plans) == 1 for plans in model._idle.values())
    for batch in range(1, 13):  # plans of the 8 most recent options sets are kept
        model.sample(2, max_batch=batch)
    assert len(model._idle) == 8
    assert model.sample(3, seed=4).shape == (3, 2)


def test_grid_as_a_list_and_every_backend_that_exists(model):
    grid = [0.0, 0.3, 0.7, 1.0]
    np.testing.assert_array_equal(bits(model.sample(6, seed=2, grid=grid)),
                                  bits(model.sample(6, seed=2, grid=np.array(grid))))
    for backend in ("auto", "reference", "simd"):
        assert model.sample(4, backend=backend).shape == (4, 2)
    assert set(model.kernels(backend="reference")) == {"reference"}


def test_memory_bytes_from_a_path_and_from_bytes():
    by_path = siflow.memory_bytes(TWO_MOONS)
    assert by_path > 0 and by_path == siflow.memory_bytes(TWO_MOONS.read_bytes())
