# SPDX-License-Identifier: Apache-2.0
"""Graph edits for nets trained with another sign or time convention than siflow's.

siflow integrates dx/dt = v(t, x) from the base at t = 0 to the data at t = 1. A net trained on
its own time axis τ is related to siflow's t by an affine map τ = τ0 + s·t; by the chain rule
the siflow velocity is v(t, x) = s·net(τ0 + s·t, x) (the net returning dx/dτ). The options map to

* time_scale S        (net trained on τ = S·t, data at τ = S):           τ = S·t,       v = S·net
* reverse_time        (net trained with data at τ = 0, noise at τ = 1):  τ = 1 − t,     v = −net
* both                (data at τ = 0, noise at τ = S):                   τ = S·(1 − t), v = −S·net
* negate_velocity     (net returns −dx/dτ): the result is multiplied by −1 as well.

So the combination is always: τ = S·(1 − t) if reversed else S·t, and v = σ·S·net with σ = −1
for each of reverse_time and negate_velocity that is set (they cancel when both are).
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .ir import ConversionError, Graph, Node


def retime(graph: Graph, offset: float, scale: float, factor: float) -> Graph:
    """A new graph computing factor·net(offset + scale·t, x) for the net `graph`."""
    for what, v in (("offset", offset), ("scale", scale), ("factor", factor)):
        if not math.isfinite(v):
            raise ConversionError(f"time transform {what} must be finite, not {v}")
    if scale == 0.0 or factor == 0.0:
        raise ConversionError("time scale and velocity factor must be non-zero")
    g = Graph(dim=graph.dim)
    tau = 1
    if scale != 1.0:
        tau = g.add(Node("mul", [tau], name="time scale", constant=np.array([scale])))
    if offset != 0.0:
        tau = g.add(Node("add", [tau], name="time offset", constant=np.array([offset])))
    shift = len(g.nodes)

    def remap(i: int) -> int:
        return {0: 0, 1: tau}.get(i, i + shift)

    for n in graph.nodes:
        m = copy.deepcopy(n)
        m.inputs = [remap(i) for i in n.inputs]
        g.add(m)
    g.output = remap(graph.output)
    if factor != 1.0:
        g.output = g.add(Node("mul", [g.output], name="velocity factor",
                              constant=np.full(graph.dim, factor)))
    g.widths()
    return g


def apply_time_options(graph: Graph, negate_velocity: bool = False, time_scale: float = 1.0,
                       reverse_time: bool = False) -> Graph:
    """Applies --negate-velocity, --time-scale and --reverse-time (see the module docstring)."""
    if not math.isfinite(time_scale) or time_scale <= 0:
        raise ConversionError(f"time scale must be a positive finite number, not {time_scale}")
    if not (negate_velocity or reverse_time or time_scale != 1.0):
        return graph
    sign = (-1.0 if reverse_time else 1.0) * (-1.0 if negate_velocity else 1.0)
    if reverse_time:
        return retime(graph, offset=time_scale, scale=-time_scale, factor=sign * time_scale)
    return retime(graph, offset=0.0, scale=time_scale, factor=sign * time_scale)
