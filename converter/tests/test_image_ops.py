# SPDX-License-Identifier: Apache-2.0
"""The image ops (conv2d, conv_transpose2d, pool2d, resize, groupnorm) against PyTorch in float64:
the converter's float64 reference, the JVP of the reference against torch's autograd, and the
runtime (the siflow CLI on a written .sif) against torch on the float32-rounded weights."""
import subprocess

import numpy as np
import pytest

from conftest import rel_err, siflow_cli
from siflow_convert import ir, sif_io
from siflow_convert import reference as R

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(14)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def conv_net(dtype_round=False):
    """x [2, 6, 6] → conv 3x3 stride 2, asymmetric pads, groups 2 → tanh → conv 3x3 dilation 2
    depthwise → transposed conv 4x4 stride 2 back to [2, 6, 6]; with the same net in torch."""
    r = _f32 if dtype_round else (lambda a: a)
    w1, b1 = r(RNG.normal(size=(4, 1, 3, 3)) * 0.5), r(RNG.normal(size=4) * 0.3)
    w2, b2 = r(RNG.normal(size=(4, 1, 3, 3)) * 0.5), r(RNG.normal(size=4) * 0.3)
    w3, b3 = r(RNG.normal(size=(4, 1, 4, 4)) * 0.5), r(RNG.normal(size=2) * 0.3)
    g = ir.Graph(dim=72, x_shape=(2, 6, 6))
    a = g.add(ir.Node("conv2d", [0], weight=w1, bias=b1, kernel=[3, 3], strides=[2, 2],
                      pads=[0, 1, 1, 0], groups=2))
    a = g.add(ir.Node("unary", [a], unary="tanh"))
    a = g.add(ir.Node("conv2d", [a], weight=w2, bias=b2, kernel=[3, 3], pads=[2, 2, 2, 2],
                      dilations=[2, 2], groups=4))
    g.output = g.add(ir.Node("conv_transpose2d", [a], weight=w3, bias=b3, kernel=[4, 4],
                             strides=[2, 2], pads=[1, 1, 1, 1], groups=2))

    def torch_net(x):
        h = F.conv2d(F.pad(x.reshape(-1, 2, 6, 6), (1, 0, 0, 1)), _t(w1), _t(b1), stride=2,
                     groups=2)
        h = F.conv2d(torch.tanh(h), _t(w2), _t(b2), padding=2, dilation=2, groups=4)
        return F.conv_transpose2d(h, _t(w3), _t(b3), stride=2, padding=1, groups=2).reshape(
            x.shape[0], -1)
    return g, torch_net


def pool_net(dtype_round=False):
    """x [3, 6, 6] → groupnorm (one channel per group) → max pool 3x3 pad 1 → average
    pool 3x3 pad 1 (count_include_pad) → bilinear ×2 → average 2x2 stride 2 → nearest ×2 → max
    pool 2x2 stride 2 (dilation 1) → [3, 6, 6]."""
    r = _f32 if dtype_round else (lambda a: a)
    gamma, beta = r(RNG.normal(size=3)), r(RNG.normal(size=3))
    g = ir.Graph(dim=108, x_shape=(3, 6, 6))
    a = g.add(ir.Node("groupnorm", [0], groups=3, gamma=gamma, beta=beta, epsilon=1e-5))
    a = g.add(ir.Node("pool2d", [a], pool="max", kernel=[3, 3], pads=[1, 1, 1, 1]))
    a = g.add(ir.Node("pool2d", [a], pool="average", kernel=[3, 3], pads=[1, 1, 1, 1],
                      count_include_pad=True))
    a = g.add(ir.Node("resize", [a], resize="bilinear", shape=[3, 12, 12]))
    a = g.add(ir.Node("pool2d", [a], pool="average", kernel=[2, 2], strides=[2, 2]))
    a = g.add(ir.Node("resize", [a], resize="nearest", shape=[3, 12, 12]))
    g.output = g.add(ir.Node("pool2d", [a], pool="max", kernel=[2, 2], strides=[2, 2]))

    def torch_net(x):
        h = F.group_norm(x.reshape(-1, 3, 6, 6), 3, _t(gamma), _t(beta), eps=float(
            np.float32(1e-5)))
        h = F.max_pool2d(h, 3, stride=1, padding=1)
        h = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=True)
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.avg_pool2d(h, 2, stride=2)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        return F.max_pool2d(h, 2, stride=2).reshape(x.shape[0], -1)
    return g, torch_net


def gn_net(dtype_round=False):
    """x [4, 3, 5] → groupnorm 2 groups → silu → conv 1x1 → groupnorm 4 groups, no affine →
    average pool 3x3 pad [1, 0, 1, 2] without padded cells → conv 3x3 back to [4, 3, 5]."""
    r = _f32 if dtype_round else (lambda a: a)
    gamma, beta = r(RNG.normal(size=4)), r(RNG.normal(size=4))
    w1 = r(RNG.normal(size=(4, 4, 1, 1)) * 0.5)
    w2, b2 = r(RNG.normal(size=(4, 4, 3, 3)) * 0.3), r(RNG.normal(size=4))
    g = ir.Graph(dim=60, x_shape=(4, 3, 5))
    a = g.add(ir.Node("groupnorm", [0], groups=2, gamma=gamma, beta=beta, epsilon=1e-3))
    a = g.add(ir.Node("unary", [a], unary="silu"))
    a = g.add(ir.Node("conv2d", [a], weight=w1, kernel=[1, 1]))
    a = g.add(ir.Node("groupnorm", [a], groups=4, epsilon=1e-5))
    a = g.add(ir.Node("pool2d", [a], pool="average", kernel=[3, 3], pads=[1, 0, 1, 2]))
    g.output = g.add(ir.Node("conv2d", [a], weight=w2, bias=b2, kernel=[3, 3],
                             pads=[1, 1, 1, 1]))

    def torch_net(x):
        h = F.group_norm(x.reshape(-1, 4, 3, 5), 2, _t(gamma), _t(beta),
                         eps=float(np.float32(1e-3)))
        h = F.conv2d(F.silu(h), _t(w1))
        h = F.group_norm(h, 4, eps=float(np.float32(1e-5)))
        # avg_pool2d pads symmetrically: pad explicitly with zeros and divide by the valid count.
        ones = torch.ones_like(h)
        pad = (0, 2, 1, 1)
        s = F.avg_pool2d(F.pad(h, pad), 3, stride=1, divisor_override=1)
        n = F.avg_pool2d(F.pad(ones, pad), 3, stride=1, divisor_override=1)
        return F.conv2d(s / n, _t(w2), _t(b2), padding=1).reshape(x.shape[0], -1)
    return g, torch_net


NETS = {"conv": conv_net, "pool": pool_net, "groupnorm": gn_net}


@pytest.mark.parametrize("name", sorted(NETS))
def test_reference_matches_torch_float64(name):
    graph, net = NETS[name]()
    model = ir.FlowModel(graph=graph)
    y = RNG.normal(size=(5, graph.dim))
    with torch.no_grad():
        want = net(_t(y)).numpy()
    assert rel_err(R.velocity(model, 0.3, y), want) <= 1e-12


@pytest.mark.parametrize("name", sorted(NETS))
def test_reference_jacobian_matches_torch_autograd(name):
    graph, net = NETS[name]()
    model = ir.FlowModel(graph=graph)
    y = RNG.normal(size=(2, graph.dim))
    _, jac = R.evaluate(model, 0.3, y, tangents=True)
    for r in range(2):
        want = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], _t(y[r])).numpy()
        # jac[r, p, k] = dv_k / dy_p
        assert rel_err(jac[r].T, want) <= 1e-10


@pytest.mark.parametrize("name", sorted(NETS))
def test_written_model_reads_back_with_its_shapes(name):
    graph, _ = NETS[name](dtype_round=True)
    model = ir.FlowModel(graph=graph)
    data = sif_io.to_bytes(model)
    back = sif_io.from_bytes(data)
    assert list(back.graph.x_shape) == list(graph.x_shape)
    assert back.graph.shapes() == graph.shapes()
    assert [n.op for n in back.graph.nodes] == [n.op for n in graph.nodes]
    y = RNG.normal(size=(3, graph.dim))
    assert rel_err(R.velocity(back, 0.5, y), R.velocity(model, 0.5, y)) <= 1e-12


def _runtime_velocity(cli, tmp_path, model, y, t):
    path = tmp_path / "m.sif"
    sif_io.write_sif(model, str(path))
    np.save(tmp_path / "y.npy", np.asarray(y, dtype=np.float32))
    np.save(tmp_path / "t.npy", np.asarray(t, dtype=np.float32))
    out = subprocess.run([cli, "velocity", str(path), "-i", str(tmp_path / "y.npy"), "-t",
                          str(tmp_path / "t.npy"), "-o", str(tmp_path / "v.npy"),
                          "--backend", "reference"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    v = np.load(tmp_path / "v.npy").astype(np.float64)
    # The CLI writes an image model's velocities in its shape [N, C, H, W].
    assert v.shape == (len(y),) + tuple(model.graph.x_shape)
    return v.reshape(len(y), -1)


@pytest.mark.parametrize("name", sorted(NETS))
def test_runtime_matches_torch_float64(tmp_path, name):
    cli = siflow_cli()
    graph, net = NETS[name](dtype_round=True)
    model = ir.FlowModel(graph=graph)
    y = _f32(RNG.normal(size=(7, graph.dim)))
    t = _f32(RNG.uniform(size=7))
    got = _runtime_velocity(cli, tmp_path, model, y, t)
    with torch.no_grad():
        want = net(_t(y)).numpy()
    # float32 arithmetic through a few layers: relative error a few 1e-7 of the output scale.
    assert rel_err(got, want) <= 1e-5


def test_format_minor_4_only_for_image_graphs():
    graph, _ = conv_net(dtype_round=True)
    data = sif_io.to_bytes(ir.FlowModel(graph=graph))
    from siflow_convert._generated import Model as fb_model
    assert fb_model.Model.GetRootAs(data, 0).FormatMinor() == 4
    plain = ir.Graph(dim=3)
    plain.output = plain.add(ir.Node("fc", [0], weight=np.eye(3)))
    assert fb_model.Model.GetRootAs(sif_io.to_bytes(ir.FlowModel(graph=plain)),
                                    0).FormatMinor() == 0


def test_bad_image_nodes_are_refused_by_name():
    g = ir.Graph(dim=72, x_shape=(2, 6, 6))
    g.output = g.add(ir.Node("conv2d", [0], weight=np.ones((2, 2, 3, 3)), kernel=[3, 3],
                             groups=2))
    with pytest.raises(ir.ConversionError, match="does not match"):
        g.widths()
    g = ir.Graph(dim=72)
    g.output = g.add(ir.Node("pool2d", [0], kernel=[2, 2]))
    with pytest.raises(ir.ConversionError, match="is not an image"):
        g.widths()
    g = ir.Graph(dim=72, x_shape=(2, 6, 6))
    g.output = g.add(ir.Node("resize", [0], shape=[3, 6, 4]))
    with pytest.raises(ir.ConversionError, match=r"must be \[2, OH, OW\]"):
        g.widths()


# ------------------------------------------------------------------------------ ONNX import

def _onnx_bytes(net, x_shape, opset):
    import io
    buf = io.BytesIO()
    x = torch.zeros((3,) + x_shape)
    t = torch.zeros(3, 1)
    torch.onnx.export(net, (x, t), buf, input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                      opset_version=opset)
    return buf.getvalue()


class UNetish(torch.nn.Module):
    """Conv (stride, pads, groups, dilation), nn.GroupNorm, SiLU, scaling by t, max and average
    pooling, a transposed conv, bilinear and nearest up-sampling and a skip connection."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 8, 3, stride=2, padding=1)
        self.norm = torch.nn.GroupNorm(4, 8)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.up = torch.nn.ConvTranspose2d(8, 2, 4, stride=2, padding=1)
        self.mix = torch.nn.Conv2d(2, 2, (1, 3), padding=(0, 1), bias=False)
        self.inorm = torch.nn.InstanceNorm2d(2, affine=True)

    def forward(self, x, t):
        h = F.silu(self.norm(self.conv1(x)))
        h = h * t.reshape(-1, 1, 1, 1)
        h = F.max_pool2d(self.depthwise(h), 3, stride=1, padding=1)
        h = F.avg_pool2d(h, 3, stride=1, padding=1)
        h = self.up(h) + x
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.avg_pool2d(h, 2)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = F.max_pool2d(h, 2)
        # GlobalAveragePool, summed over channels: one value per row scales the image.
        g = F.adaptive_avg_pool2d(h, 1).reshape(-1, 2).sum(-1).reshape(-1, 1, 1, 1)
        return self.mix(self.inorm(h)) * torch.tanh(g) + x


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torch_image_net_converts_and_matches_torch_float64(tmp_path, opset):
    from siflow_convert import from_onnx
    torch.manual_seed(opset)
    net = UNetish().eval()
    with torch.no_grad():  # non-trivial affine parameters
        for p in (net.norm.weight, net.norm.bias, net.inorm.weight, net.inorm.bias):
            p.copy_(torch.randn_like(p))
    graph = from_onnx(_onnx_bytes(net, (2, 6, 6), opset))
    ops = [n.op for n in graph.nodes]
    assert list(graph.x_shape) == [2, 6, 6]
    for op in ("conv2d", "conv_transpose2d", "pool2d", "resize", "groupnorm"):
        assert op in ops, ops
    assert ops.count("groupnorm") == 2   # nn.GroupNorm's pattern and InstanceNorm2d
    net64 = UNetish().double().eval()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    y = _f32(RNG.normal(size=(6, 72)))
    t = _f32(RNG.uniform(size=6))
    with torch.no_grad():
        want = net64(_t(y).reshape(-1, 2, 6, 6), _t(t)[:, None]).reshape(6, -1).numpy()
    model = ir.FlowModel(graph=graph)
    got_ref = np.stack([R.velocity(model, t[r], y[r:r + 1])[0] for r in range(6)])
    assert rel_err(got_ref, want) <= 1e-10
    cli = siflow_cli()
    got = _runtime_velocity(cli, tmp_path, model, y, t)
    assert rel_err(got, want) <= 1e-4


def test_unsupported_image_exports_are_refused_by_name():
    from siflow_convert import from_onnx

    class Corners(torch.nn.Module):
        def forward(self, x, t):
            return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear",
                                 align_corners=True) * t.reshape(-1, 1, 1, 1)

    with pytest.raises(ir.ConversionError, match="coordinate_transformation_mode 'align_corners'"):
        from_onnx(_onnx_bytes(Corners(), (1, 4, 4), 13))

    class Ceil(torch.nn.Module):
        def forward(self, x, t):
            return F.interpolate(F.max_pool2d(x, 2, ceil_mode=True), size=(5, 5)) * \
                t.reshape(-1, 1, 1, 1)

    with pytest.raises(ir.ConversionError, match="ceil_mode changes the output size"):
        from_onnx(_onnx_bytes(Ceil(), (1, 5, 5), 13))
