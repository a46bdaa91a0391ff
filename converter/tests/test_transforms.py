# SPDX-License-Identifier: Apache-2.0
"""--negate-velocity, --time-scale and --reverse-time as graph edits, checked numerically."""
import numpy as np
import pytest

from conftest import rel_err, velocity
from siflow_convert import ConversionError, Graph, Node
from siflow_convert.transforms import apply_time_options

D = 2
RNG = np.random.default_rng(11)
W = RNG.normal(size=(D, D + 1))


def net():
    """v_net(τ, x) = tanh(W [x, τ]): depends on τ nonlinearly so a wrong τ map shows."""
    g = Graph(dim=D)
    h = g.add(Node("concat", [0, 1]))
    h = g.add(Node("fc", [h], weight=W))
    g.output = g.add(Node("unary", [h], unary="tanh"))
    return g


def net_value(tau, y):
    return np.tanh(np.hstack([y, np.full((len(y), 1), tau)]) @ W.T)


Y = RNG.normal(size=(5, D))


@pytest.mark.parametrize("negate,scale,reverse,tau,factor", [
    (True, 1.0, False, lambda t: t, lambda s: -1.0),
    (False, 3.0, False, lambda t: 3 * t, lambda s: 3.0),
    (False, 1.0, True, lambda t: 1 - t, lambda s: -1.0),
    (False, 2.5, True, lambda t: 2.5 * (1 - t), lambda s: -2.5),
    (True, 2.5, True, lambda t: 2.5 * (1 - t), lambda s: 2.5),
    (True, 4.0, False, lambda t: 4 * t, lambda s: -4.0),
])
def test_combinations(negate, scale, reverse, tau, factor):
    g = apply_time_options(net(), negate, scale, reverse)
    g.widths()
    for t in (0.0, 0.3, 1.0):
        want = factor(scale) * net_value(tau(t), Y)
        assert rel_err(velocity(g, t, Y), want) <= 1e-6


def test_no_options_leave_the_graph_alone():
    g = net()
    assert apply_time_options(g) is g


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_time_scale(scale):
    with pytest.raises(ConversionError, match="time scale"):
        apply_time_options(net(), time_scale=scale)
