# SPDX-License-Identifier: Apache-2.0
"""--quantize bf16|fp16|int8: the stored values follow the runtime's rules (bfloat16 round to
nearest even; int8 per row with scale max|w|/127), files that use BF16 or I8 record format 1.3
and others keep their lowest minor, the bundled checkerboard stored as int8 is at most 30 % of
its fp32 size, the CLI reports the velocity error, and the C++ runtime loads and validates the
files when it is built."""
import os
import subprocess

import numpy as np
import pytest

from conftest import REPO, siflow_cli
from siflow_convert import cli, ir, reference, sif_io
from siflow_convert._generated import Model as fb_model

CHECKERBOARD = os.path.join(REPO, "examples", "models", "checkerboard.sif")


def mlp(seed=3, dim=2, width=32):
    rng = np.random.default_rng(seed)
    g = ir.Graph(dim=dim)
    h = g.add(ir.Node("concat", [0, 1]))
    h = g.add(ir.Node("fc", [h], weight=rng.normal(size=(width, dim + 1)),
                      bias=rng.normal(size=width)))
    h = g.add(ir.Node("unary", [h], unary="silu"))
    h = g.add(ir.Node("fc", [h], weight=rng.normal(size=(width, width)) / 6,
                      bias=rng.normal(size=width)))
    h = g.add(ir.Node("unary", [h], unary="silu"))
    g.output = g.add(ir.Node("fc", [h], weight=rng.normal(size=(dim, width)) / 6))
    return ir.FlowModel(graph=g, name="mlp")


def minor(data):
    return fb_model.Model.GetRootAs(data, 0).FormatMinor()


def test_int8_rows_are_scale_times_q_within_half_a_step():
    m = mlp()
    back = sif_io.from_bytes(sif_io.to_bytes(m, quantize="int8"))
    for node, stored in zip(m.graph.nodes, back.graph.nodes):
        if node.weight is None:
            continue
        w = node.weight.astype(np.float32).astype(np.float64)
        scale = np.max(np.abs(w), axis=1) / 127
        assert np.all(np.abs(stored.weight - w) <= 0.5 * scale[:, None] * (1 + 1e-6))
        q = stored.weight / scale[:, None]
        assert np.allclose(q, np.rint(q), atol=1e-3)   # integers up to the scale's rounding
        assert np.max(np.abs(q)) <= 127 + 1e-3
        if node.bias is not None:   # 1-D operands stay float32
            assert np.array_equal(stored.bias, node.bias.astype(np.float32))


def test_int8_stores_conv2d_weights_per_output_channel_and_keeps_conv_transpose_f32():
    rng = np.random.default_rng(5)
    g = ir.Graph(dim=2 * 5 * 5)
    g.x_shape = [2, 5, 5]
    h = g.add(ir.Node("conv2d", [0], weight=rng.normal(size=(3, 2, 3, 3)), bias=rng.normal(size=3),
                      kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]))
    g.output = g.add(ir.Node("conv_transpose2d", [h], weight=rng.normal(size=(3, 2, 3, 3)),
                             kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                             dilations=[1, 1], output_padding=[0, 0]))
    m = ir.FlowModel(graph=g, name="conv")
    data = sif_io.to_bytes(m, quantize="int8")
    nodes = fb_model.Model.GetRootAs(data, 0).Graph().Nodes
    assert nodes(0).Weight().Dtype() == sif_io.DTYPE_I8
    assert nodes(0).Weight().ScaleLength() == 3
    assert nodes(1).Weight().Dtype() == sif_io.DTYPE_F32
    back = sif_io.from_bytes(data)
    w = m.graph.nodes[0].weight.astype(np.float32).astype(np.float64).reshape(3, -1)
    scale = np.max(np.abs(w), axis=1) / 127
    stored = back.graph.nodes[0].weight.reshape(3, -1)
    assert np.all(np.abs(stored - w) <= 0.5 * scale[:, None] * (1 + 1e-6))


def test_bf16_rounds_to_nearest_even():
    values = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5])
    bits = sif_io._bf16_bits(values.astype(np.float32))
    assert list(bits) == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020]


def test_bf16_and_int8_files_record_format_1_3_and_others_their_lowest_minor():
    m = mlp()
    assert minor(sif_io.to_bytes(m)) == 0
    assert minor(sif_io.to_bytes(m, fp16=True)) == 0
    assert minor(sif_io.to_bytes(m, quantize="bf16")) == 3
    assert minor(sif_io.to_bytes(m, quantize="int8")) == 3


def test_checkerboard_stored_as_int8_is_at_most_30_percent_of_fp32():
    m = sif_io.from_bytes(open(CHECKERBOARD, "rb").read())
    f32 = len(sif_io.to_bytes(m))
    i8 = len(sif_io.to_bytes(m, quantize="int8"))
    assert i8 <= 0.30 * f32, (i8, f32)


def test_cli_prints_the_velocity_error_and_fp16_is_an_alias(tmp_path, capsys):
    examples = os.path.join(REPO, "converter", "examples")
    npz = os.path.join(examples, "fourier_mlp.npz")
    arch = os.path.join(examples, "fourier_mlp.json")
    out = tmp_path / "q.sif"
    assert cli.main([npz, "--arch", arch, "-o", str(out), "--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    assert "(int8)" in text and "velocity error" in text
    assert minor(out.read_bytes()) == 3
    assert cli.main([npz, "--arch", arch, "-o", str(out), "--fp16"]) == 0
    assert "(fp16)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main([npz, "--arch", arch, "-o", str(out), "--fp16", "--quantize", "bf16"])


def test_quantization_error_grows_with_coarser_storage():
    m = mlp()
    errors = {q: reference.quantization_error(m, q) for q in ("fp16", "bf16", "int8")}
    assert 0 < errors["fp16"] < errors["bf16"]
    assert 0 < errors["int8"] < 0.1


@pytest.mark.parametrize("quantize", ["fp16", "bf16", "int8"])
def test_runtime_loads_and_validates_quantized_files(tmp_path, quantize):
    exe = siflow_cli()
    m = mlp()
    m.test_vectors = reference.make_test_vectors(sif_io.stored(m, quantize=quantize), count=16,
                                                 quantize=quantize)
    path = tmp_path / f"m_{quantize}.sif"
    sif_io.write_sif(m, str(path), quantize=quantize)
    out = subprocess.run([exe, "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
