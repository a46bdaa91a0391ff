# SPDX-License-Identifier: Apache-2.0
# Progress, cancellation and threads: the progress callback runs after every integrator step of
# every chunk, False cancels (siflow.Cancelled), an exception in it stops the run and comes back
# out, Ctrl-C (SIGINT) during a run raises KeyboardInterrupt within a step and leaves the model
# usable, runs release the GIL, and threads sharing a model get identical results.
import os
import signal
import threading
import time

import numpy as np
import pytest

import siflow
from conftest import TWO_MOONS, bits


class Recorder:
    def __init__(self, stop_at=None):
        self.done, self.total, self.stop_at = [], set(), stop_at

    def __call__(self, done, total):
        self.done.append(done)
        self.total.add(total)
        return self.stop_at is None or len(self.done) < self.stop_at


@pytest.mark.parametrize("run", ["sample", "sample_threads", "sde", "sde_stop", "decode",
                                 "encode", "log_prob", "log_prob_hutchinson"])
def test_progress_is_called_after_every_step_of_every_chunk(model, run):
    n, steps, batch = 10, 12, 4  # 3 chunks
    x = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    p = Recorder()
    common = dict(steps=steps, max_batch=batch, progress=p)
    {"sample": lambda: model.sample(n, **common),
     "sample_threads": lambda: model.sample(n, threads=2, **common),
     "sde": lambda: model.sample(n, sde_epsilon=0.5, **common),
     "sde_stop": lambda: model.sample(n, sde_epsilon=0.5, sde_stop_delta=0.2, **common),
     "decode": lambda: model.decode(x, log_prob=True, **common),
     "encode": lambda: model.encode(x, **common),
     "log_prob": lambda: model.log_prob(x, **common),
     "log_prob_hutchinson": lambda: model.log_prob(x, divergence="hutchinson", probes=2,
                                                   **common)}[run]()
    assert len(p.done) == 3 * steps
    assert p.total == {n * steps}
    assert p.done == sorted(p.done) and p.done[-1] == n * steps
    # done grows by the chunk's rows at every step: 4, 8, ..., then 2 per step in the last.
    steps_done = np.diff([0] + p.done)
    assert list(steps_done) == [4] * steps + [4] * steps + [2] * steps


def test_returning_false_cancels_every_run(model):
    x = np.zeros((10, 2), np.float32)
    runs = [lambda p: model.sample(10, progress=p), lambda p: model.decode(x, progress=p),
            lambda p: model.encode(x, progress=p), lambda p: model.log_prob(x, progress=p),
            lambda p: model.sample(10, sde_epsilon=0.5, progress=p)]
    for run in runs:
        p = Recorder(stop_at=5)
        with pytest.raises(siflow.Cancelled, match="cancelled by the progress callback") as e:
            run(p)
        assert len(p.done) == 5 and e.value.code == 8
    # The model and its cached plans still work, with the same bits as before.
    np.testing.assert_array_equal(bits(model.sample(10, seed=1)), bits(model.sample(10, seed=1)))


def test_an_exception_in_the_progress_callback_stops_the_run_and_is_raised(model):
    calls = []

    def boom(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        model.sample(100, steps=50, progress=boom)
    assert len(calls) == 2
    with pytest.raises(siflow.InvalidArgument, match="callable"):
        model.sample(3, progress=42)


def test_ctrl_c_from_the_progress_callback_raises_keyboard_interrupt(model):
    calls = []

    def interrupt_at_third(done, total):
        calls.append(done)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    reference = model.sample(20, seed=4)
    with pytest.raises(KeyboardInterrupt):
        model.sample(1000, steps=100, progress=interrupt_at_third)
    assert 3 <= len(calls) <= 4  # the step after the signal at the latest
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    np.testing.assert_array_equal(bits(model.sample(20, seed=4)), bits(reference))


def test_ctrl_c_from_a_timer_thread_stops_a_long_run_quickly(model):
    # 200 000 samples x 400 RK4 steps would take minutes; SIGINT after 0.3 s must stop it within
    # a step of one chunk (milliseconds).
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.sample(200_000, steps=400)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    assert elapsed < 10.0, f"the run went on for {elapsed:.1f} s after the interrupt"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    x = model.sample(5, seed=0)
    assert x.shape == (5, 2) and np.isfinite(x).all()


def test_ctrl_c_during_a_call_without_steps_is_raised_after_it(model):
    # velocity has no steps to cancel: the interrupt comes when it returns.
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in range(100_000):  # until the interrupt arrives (~1 ms per call)
                model.velocity(np.zeros((2000, 2), np.float32), 0.5)
    finally:
        timer.cancel()


def test_a_custom_sigint_handler_is_left_alone(model):
    seen = []
    previous = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
    try:
        calls = []

        def interrupt_once(done, total):
            calls.append(done)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGINT)

        x = model.sample(8, steps=5, max_batch=4, progress=interrupt_once)
        assert x.shape == (8, 2) and len(calls) == 10 and seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_runs_release_the_gil():
    # While a thread samples for a while, the main thread keeps running Python code.
    with siflow.load(TWO_MOONS) as m:
        ticks = 0
        worker = threading.Thread(target=lambda: m.sample(20_000, steps=40))
        worker.start()
        while worker.is_alive():
            ticks += 1
            time.sleep(0.001)
        worker.join()
    assert ticks > 20


def test_threads_sharing_a_model_get_the_same_bits():
    with siflow.load(TWO_MOONS) as m:
        reference = m.sample(300, seed=7, steps=10)
        results = [None] * 4

        def work(i):
            results[i] = m.sample(300, seed=7, steps=10)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            np.testing.assert_array_equal(bits(r), bits(reference))


def test_validate_reports_progress_and_is_cancelled_by_false_or_ctrl_c(model):
    # two_moons embeds 64 velocity points and 8 trajectories of 16 RK4 steps: progress counts
    # network evaluations, 64 after the velocity check, then 4 x 8 more after every step.
    p = Recorder()
    report = model.validate(progress=p)
    assert report.velocity_ok and report.trajectory_ok
    assert p.done == [64 + 32 * k for k in range(17)] and p.total == {64 + 4 * 8 * 16}

    p = Recorder(stop_at=3)
    with pytest.raises(siflow.Cancelled, match="cancelled by the progress callback"):
        model.validate(progress=p)
    assert len(p.done) == 3

    calls = []

    def interrupt_at_second(done, total):
        calls.append(done)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        model.validate(progress=interrupt_at_second)
    assert 2 <= len(calls) <= 3  # the step after the signal at the latest
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert model.validate() == report
