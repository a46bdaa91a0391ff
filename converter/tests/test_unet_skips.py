# SPDX-License-Identifier: Apache-2.0
"""Two export patterns of a PyTorch U-Net that the plain image mappings refused: an embedding
added per channel ([B, C, 1, 1] + [B, C, H, W], as a time or label embedding) and the skip
connection's concat along the channels. Each against torch float64
(the converter's reference) and float32 (the runtime through the siflow CLI)."""
import io
import subprocess

import numpy as np
import pytest

from conftest import rel_err, siflow_cli
from siflow_convert import ir, reference as R, sif_io

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(14)


class SkipNet(torch.nn.Module):
    """conv → + time embedding per channel → stride-2 conv → nearest up → concat with the
    8x8 features along the channels → conv; the embedding also scales the 4x4 features."""

    def __init__(self):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.emb = torch.nn.Linear(1, 4)
        self.emb2 = torch.nn.Linear(1, 6)
        self.down = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.conv_out = torch.nn.Conv2d(10, 1, 3, padding=1)

    def forward(self, x, t):
        h0 = self.conv_in(x) + self.emb(t).reshape(-1, 4, 1, 1)
        h = self.down(torch.tanh(h0))
        h = self.emb2(t).reshape(-1, 6, 1, 1) * h
        h = torch.cat([self.up(h), h0], dim=1)
        return self.conv_out(torch.tanh(h))


def _export(net):
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(3, 1, 6, 6), torch.zeros(3, 1)), buf,
                      input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={n: {0: "B"} for n in ("x", "t", "v")}, opset_version=17)
    return buf.getvalue()


def _net():
    torch.manual_seed(3)
    return SkipNet().eval()


def _want(net, y, t):
    net64 = SkipNet().double().eval()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    with torch.no_grad():
        return net64(torch.from_numpy(y).reshape(-1, 1, 6, 6),
                     torch.from_numpy(t)[:, None]).reshape(len(y), -1).numpy()


def test_channel_broadcast_and_concat_convert():
    from siflow_convert import from_onnx
    graph = from_onnx(_export(_net()))
    ops = [n.op for n in graph.nodes]
    # Two per-channel operands [C, 1, 1] copied over H x W by a nearest resize, and one channel
    # concat read as the image [10, 6, 6] by the conv after it. Node i writes tensor i + 2.
    shapes = graph.shapes()
    widened = [n for n in graph.nodes
               if n.op == "resize" and shapes[n.inputs[0]][1:] == [1, 1]]
    assert len(widened) == 2, ops
    assert ops.count("concat") == 1, ops
    conv_out = graph.nodes[-1]
    assert conv_out.op == "conv2d" and shapes[conv_out.inputs[0]] == [10, 6, 6], ops


def test_channel_broadcast_and_concat_match_torch(tmp_path):
    from siflow_convert import from_onnx
    net = _net()
    model = ir.FlowModel(graph=from_onnx(_export(net)))
    model = sif_io.stored(model)   # weights rounded to float32, as the file holds them
    y = RNG.normal(size=(5, 36)).astype(np.float32).astype(np.float64)
    t = RNG.uniform(size=5).astype(np.float32).astype(np.float64)
    want = _want(net, y, t)
    got = np.stack([R.velocity(model, t[r], y[r:r + 1])[0] for r in range(5)])
    assert rel_err(got, want) <= 1e-6   # the float32 rounding of the weights only
    cli = siflow_cli()
    path = tmp_path / "m.sif"
    sif_io.write_sif(model, str(path))
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    np.save(tmp_path / "t.npy", t.astype(np.float32))
    out = subprocess.run([cli, "velocity", str(path), "-i", str(tmp_path / "y.npy"), "-t",
                          str(tmp_path / "t.npy"), "-o", str(tmp_path / "v.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    v = np.load(tmp_path / "v.npy").astype(np.float64).reshape(5, -1)
    assert rel_err(v, want) <= 1e-4


def test_concat_of_images_along_rows_is_refused():
    from siflow_convert import ConversionError, from_onnx

    class Rows(torch.nn.Module):
        def forward(self, x, t):
            return torch.cat([x, x * t.reshape(-1, 1, 1, 1)], dim=2)[:, :, ::2, :]

    with pytest.raises(ConversionError, match="Concat along axis 2"):
        from_onnx(_export(Rows()))
