# SPDX-License-Identifier: Apache-2.0
"""`siflow-convert INPUT -o OUT.sif [options]`: the command line and the `convert` function.

Exit status: 0 on success, 2 on usage errors (argparse), 1 when the model cannot be converted.
Errors are printed as `siflow-convert: error: <cause>`, never as a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from .ir import Base, ConversionError, FlowModel, Graph, Interpolant, Normalization
from .transforms import apply_time_options

PROG = "siflow-convert"


# ------------------------------------------------------------------------------ model pieces

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Prints each option's default, except for options without one (default None), whose help
    text says what happens when they are absent."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_vector(text, dim: int, what: str) -> np.ndarray:
    """A scalar or a comma list of `dim` numbers (str, float or sequence) → float64 [dim]."""
    if isinstance(text, str):
        try:
            vals = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConversionError(f"{what}: {text!r} is not a number or a comma list of "
                                  f"numbers") from None
    else:
        vals = list(np.atleast_1d(np.asarray(text, dtype=np.float64)))
    if len(vals) == 1:
        vals = vals * dim
    if len(vals) != dim:
        raise ConversionError(f"{what}: {len(vals)} values given, the model has dim {dim}")
    arr = np.asarray(vals, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConversionError(f"{what}: values must be finite")
    return arr


def make_base(dim: int, kind: str = "normal", mean=None, std=None, low=None,
              high=None) -> Base:
    """The base distribution from the --base options, checked like the loader does."""
    if kind == "normal":
        if low is not None or high is not None:
            raise ConversionError("--low/--high apply to --base uniform only")
        m = None if mean is None else parse_vector(mean, dim, "--base-mean")
        s = None if std is None else parse_vector(std, dim, "--base-std")
        if s is not None and np.any(s <= 0):
            raise ConversionError("--base-std: every standard deviation must be > 0")
        return Base("normal", mean=m, std=s)
    if kind == "uniform":
        if mean is not None or std is not None:
            raise ConversionError("--base-mean/--base-std apply to --base normal only")
        if low is None or high is None:
            raise ConversionError("--base uniform needs --low and --high")
        lo, hi = parse_vector(low, dim, "--low"), parse_vector(high, dim, "--high")
        if np.any(hi <= lo):
            raise ConversionError("--high must exceed --low in every coordinate")
        return Base("uniform", low=lo, high=hi)
    raise ConversionError(f"unknown base {kind!r}; supported: normal, uniform")


def load_interpolant(kind: str = "trig", coeffs_path: Optional[str] = None) -> Interpolant:
    """linear/trig, or learned_fourier from a JSON {"alpha": [..], "beta": [..]} or an npz."""
    if coeffs_path is None:
        if kind not in ("linear", "trig"):
            raise ConversionError(f"unknown interpolant {kind!r}; supported: linear, trig (or "
                                  f"--interpolant-coeffs FILE)")
        return Interpolant(kind)
    try:
        if _is_zip(coeffs_path):
            with np.load(coeffs_path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        else:
            with open(coeffs_path, encoding="utf-8") as f:
                data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{coeffs_path}: cannot read interpolant coefficients ({e})") \
            from None
    if not isinstance(data, dict) or "alpha" not in data or "beta" not in data:
        raise ConversionError(f"{coeffs_path}: needs 'alpha' and 'beta' arrays")
    a = np.asarray(data["alpha"], dtype=np.float64).reshape(-1)
    b = np.asarray(data["beta"], dtype=np.float64).reshape(-1)
    if a.size != b.size or not 1 <= a.size <= 64:
        raise ConversionError(f"{coeffs_path}: alpha and beta need equally many values (1 to "
                              f"64); got {a.size} and {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ConversionError(f"{coeffs_path}: coefficients must be finite")
    return Interpolant("learned_fourier", alpha=a.tolist(), beta=b.tolist())


def _read_data(path: str) -> np.ndarray:
    """A .npy (any numeric dtype, no pickles) or a .csv of numbers (comma-separated, one sample
    a line; blank lines and lines starting with '#' skipped, one header line of names allowed),
    told apart by content."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise ConversionError(f"{path}: cannot read the data ({e.strerror})") from None
    if head == b"\x93NUMPY":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConversionError(f"{path}: cannot read the .npy data ({e})") from None
        if data.dtype.kind not in "fiub":
            raise ConversionError(f"{path}: the .npy holds {data.dtype}, not numbers")
        return np.asarray(data, dtype=np.float64)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: neither a .npy file nor a text .csv ({e})") from None
    rows = []
    seen_header = False
    for k, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [v.strip() for v in text.split(",")]
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            if rows or seen_header:
                raise ConversionError(f"{path}: line {k} holds a field that is not a number "
                                      f"({text[:60]!r})") from None
            seen_header = True       # a header line of column names
            continue
        if len(rows[-1]) != len(rows[0]):
            raise ConversionError(f"{path}: line {k} has {len(rows[-1])} values, the first row "
                                  f"{len(rows[0])}")
    if not rows:
        raise ConversionError(f"{path}: the .csv holds no rows of numbers")
    return np.asarray(rows, dtype=np.float64)


def normalization_from_data(path: str, dim: int) -> Normalization:
    """Per-feature mean and (population) std of [N, dim] data (.npy or .csv; an .npy of an image
    model may be [N, C, H, W]); refuses a constant feature."""
    data = _read_data(path)
    if data.ndim > 2 and data.shape[0] >= 1 and int(np.prod(data.shape[1:])) == dim:
        data = data.reshape(data.shape[0], dim)
    if data.ndim != 2 or data.shape[1] != dim or data.shape[0] < 2:
        raise ConversionError(f"{path}: data has shape {list(data.shape)}; expected [N >= 2, "
                              f"{dim}]")
    if not np.all(np.isfinite(data)):
        raise ConversionError(f"{path}: data holds NaN or Inf values")
    mean, std = data.mean(axis=0), data.std(axis=0)
    zero = [int(i) for i in np.flatnonzero(~(std > 0))]
    if zero:
        raise ConversionError(f"{path}: feature(s) {zero[:10]} are constant (std = 0); cannot "
                              f"normalise")
    return Normalization(mean=mean, std=std)


def _floats(text: str, what: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConversionError(f"{what}: {text!r} is not a comma list of numbers") from None


def parse_meta(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConversionError(f"--meta {item!r}: expected key=value")
        out[key] = value
    return out


def _is_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


# ------------------------------------------------------------------------------ conversion

def load_graph(input, arch=None, x_input=None, time_input=None, time_column=None, dim=None,
               opset: int = 17, time_shape: str = "column", conditioning=None,
               argument_order: str = "xt", self_check: bool = True) -> Graph:
    """The velocity graph from an ir.Graph, an ONNX ModelProto/bytes or a file of any supported
    kind (ONNX, TorchScript, torch.save'd module, .npz + arch), detected by content.
    `conditioning`: from_onnx's label_input, cond_input, num_classes, null_label, null_cond.
    With `self_check`, an ONNX or PyTorch source is evaluated at seeded points and compared with
    the converted graph (source_check); the result is kept as `graph.self_check`."""
    if isinstance(input, Graph):
        return input
    conditioning = {k: v for k, v in (conditioning or {}).items() if v is not None}
    if not isinstance(input, (str, os.PathLike)):
        return _from_onnx_checked(input, x_input, time_input, time_column, dim, conditioning,
                                  self_check)
    from .torch_import import detect_format
    path = os.fspath(input)
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    kind = detect_format(path)
    if kind == "npz":
        if arch is None:
            raise ConversionError(f"{path}: an .npz of weights needs --arch FILE.json")
        from .npz_import import from_npz
        return from_npz(path, arch)
    if arch is not None:
        raise ConversionError(f"--arch applies to .npz input only; {path} is {kind}")
    if kind == "onnx":
        return _from_onnx_checked(path, x_input, time_input, time_column, dim, conditioning,
                                  self_check)
    from .torch_import import from_torch, load_torch_file
    if dim is None:
        raise ConversionError(f"{path}: a PyTorch module needs --dim D (the width of x)")
    if x_input is not None or time_input is not None:
        raise ConversionError(f"{path}: --x-input/--time-input name ONNX inputs; a PyTorch "
                              f"module is called as module(x, t) (or --argument-order tx)")
    cond_width = None
    if "cond_input" in conditioning:
        if conditioning.get("null_cond") is None:
            raise ConversionError(f"{path}: a PyTorch module with a condition vector needs its "
                                  f"width: give --null-cond V (a comma list of that width), or "
                                  f"call from_torch(module, dim, cond=W) from Python")
        cond_width = len(conditioning["null_cond"])
    module = load_torch_file(path, kind)
    return from_torch(module, dim, time_column=time_column, opset=opset, time_shape=time_shape,
                      argument_order=argument_order,
                      label=conditioning.get("label_input", False), cond=cond_width,
                      num_classes=conditioning.get("num_classes"),
                      null_label=conditioning.get("null_label"),
                      null_cond=conditioning.get("null_cond"), self_check=self_check)


def _from_onnx_checked(source, x_input, time_input, time_column, dim, conditioning,
                       self_check: bool) -> Graph:
    from .onnx_import import _load, from_onnx
    model = _load(source)
    graph = from_onnx(model, x_input, time_input, time_column, dim, **conditioning)
    if self_check:
        from . import onnx_conditioning
        from .source_check import check_onnx
        settings = onnx_conditioning.Settings(
            conditioning.get("label_input"), conditioning.get("cond_input"),
            conditioning.get("num_classes"), conditioning.get("null_label"),
            conditioning.get("null_cond"))
        graph.self_check = check_onnx(model, graph, x_input, time_input, time_column, dim,
                                      settings)
    return graph


def parse_normalization(normalize=None, mean=None, std=None, dim: int = 0) -> \
        Optional[Normalization]:
    """The stored normalisation: from data (`normalize`: a .npy or .csv of [N, d] samples, or
    [N, C, H, W] for an image model), or from explicit `mean`/`std` (a scalar or a comma list of
    d values; a missing one is 0 / 1). The two ways exclude each other."""
    if normalize is not None and (mean is not None or std is not None):
        raise ConversionError("--normalize DATA and --mean/--std exclude each other: give the "
                              "data or the values")
    if normalize is not None:
        return normalization_from_data(normalize, dim)
    if mean is None and std is None:
        return None
    m = np.zeros(dim) if mean is None else parse_vector(mean, dim, "--mean")
    s = np.ones(dim) if std is None else parse_vector(std, dim, "--std")
    bad = [int(i) for i in np.flatnonzero(~(s > 0))]
    if bad:
        raise ConversionError(f"--std: every standard deviation must be > 0 (coordinate(s) "
                              f"{bad[:10]})")
    return Normalization(mean=m, std=s)


def convert(input, output=None, *, arch=None, x_input=None, time_input=None, time_column=None,
            dim=None, opset: int = 17, time_shape: str = "column", interpolant: str = "trig",
            interpolant_coeffs=None, base: str = "normal", base_mean=None, base_std=None,
            low=None, high=None, normalize=None, negate_velocity: bool = False,
            time_scale: float = 1.0, reverse_time: bool = False, name: str = "",
            meta: Optional[Dict[str, str]] = None, fp16: bool = False, test_vectors: int = 64,
            seed: int = 0, quantize: Optional[str] = None, label_input=None, cond_input=None,
            num_classes=None, null_label=None, null_cond=None,
            guidance: float = 1.0, argument_order: str = "xt", mean=None, std=None,
            self_check: bool = True) -> FlowModel:
    """Builds the FlowModel (with test vectors computed after storage rounding) and, when
    `output` is given, writes it atomically. Raises ConversionError naming the cause.

    `normalize` (a .npy/.csv of data) or `mean`/`std` (scalar or comma list) set the stored
    normalisation. With `self_check` (default) an ONNX or PyTorch source is evaluated at seeded
    points and the conversion refused if the converted graph disagrees beyond float32 rounding;
    the result is `model.self_check` (None for sources without one, e.g. .npz)."""
    cond_options = dict(label_input=label_input, cond_input=cond_input, num_classes=num_classes,
                        null_label=null_label, null_cond=null_cond)
    graph = load_graph(input, arch, x_input, time_input, time_column, dim, opset, time_shape,
                       cond_options, argument_order, self_check)
    check = getattr(graph, "self_check", None)
    if dim is not None and graph.dim != dim:
        raise ConversionError(f"the model has dim {graph.dim} but --dim {dim} was given")
    graph = apply_time_options(graph, negate_velocity, time_scale, reverse_time)
    graph.widths()
    d = graph.dim
    metadata = {"converter": PROG}
    if isinstance(input, (str, os.PathLike)):
        metadata["source"] = os.path.basename(os.fspath(input))
    for flag, on in (("negate_velocity", negate_velocity), ("reverse_time", reverse_time)):
        if on:
            metadata[flag] = "true"
    if time_scale != 1.0:
        metadata["time_scale"] = repr(float(time_scale))
    metadata.update(meta or {})
    model = FlowModel(
        graph=graph, name=name,
        interpolant=load_interpolant(interpolant, interpolant_coeffs),
        base=make_base(d, base, base_mean, base_std, low, high),
        normalization=parse_normalization(normalize, mean, std, d),
        metadata=metadata)
    model.self_check = check
    if test_vectors < 0:
        raise ConversionError("--test-vectors must be >= 0")
    if test_vectors:
        from . import reference, sif_io
        stored = sif_io.stored(model, fp16=fp16, quantize=quantize)
        model.test_vectors = reference.make_test_vectors(stored, count=test_vectors, seed=seed,
                                                         fp16=fp16, quantize=quantize,
                                                         guidance=guidance)
    if output is not None:
        from . import sif_io
        sif_io.write_sif(model, output, fp16=fp16, quantize=quantize)
    return model


def summary(model: FlowModel, output: Optional[str], fp16: bool,
            quantize: Optional[str] = None) -> str:
    """One-paragraph description of the converted model for the terminal; for stored formats
    other than fp32, the velocity error they cause against the float32 weights."""
    storage = quantize or ("fp16" if fp16 else "fp32")
    g = model.graph
    params = sum(a.size for n in g.nodes for a in (n.weight, n.bias, n.constant, n.gamma, n.beta)
                 if a is not None)
    ops: Dict[str, int] = {}
    for n in g.nodes:
        k = n.unary if n.op == "unary" else n.op
        ops[k] = ops.get(k, 0) + 1
    lines = [f"{output or '(not written)'}: dim {g.dim}, {len(g.nodes)} nodes "
             f"({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}), {params} parameters "
             f"({storage})",
             f"interpolant {model.interpolant.kind}, base {model.base.kind}"
             f"{', normalised' if model.normalization is not None else ''}"]
    tv = model.test_vectors
    if tv is not None:
        lines.append(f"test vectors: {len(tv.t)} velocities (tolerance {tv.velocity_tolerance:.3g})"
                     + (f", {0 if tv.trajectory_start is None else len(tv.trajectory_start)} "
                        f"trajectories of {tv.trajectory_steps} RK4 steps (tolerance "
                        f"{tv.trajectory_tolerance:.3g})" if tv.trajectory_steps else ""))
    else:
        lines.append("test vectors: none")
    check = getattr(model, "self_check", None)
    if check is not None:
        lines.append(check.line())
    if storage != "fp32":
        from . import reference
        error = reference.quantization_error(model, storage)
        lines.append(f"weights stored as {storage}: velocity error {error:.3g} against the fp32 "
                     f"weights (max |dv| / max(1, max |v|) over 256 random (t, y))")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ argparse

def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= 65536:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 65536]")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter,
        description="Convert a trained velocity net v(t, x) (ONNX, TorchScript, torch.save'd "
                    "nn.Module, or .npz weights with a JSON architecture) into a .sif model.")
    p.add_argument("input", metavar="INPUT", help="model file; its type is detected by content")
    p.add_argument("-o", "--output", metavar="OUT.sif", required=True, help="output .sif file")
    g = p.add_argument_group("inputs of the net")
    g.add_argument("--arch", metavar="FILE.json", help="architecture for .npz input")
    g.add_argument("--x-input", metavar="NAME", help="ONNX input holding x [B, d] (default: 'x')")
    g.add_argument("--time-input", metavar="NAME", help="ONNX input holding t (default: 't')")
    g.add_argument("--time-column", choices=("first", "last"),
                   help="the net has one input [B, d+1] with t in this column")
    g.add_argument("--dim", type=_positive_int, metavar="D",
                   help="width of x (needed for PyTorch modules)")
    g.add_argument("--time-shape", choices=("column", "batch", "scalar", "one"),
                   default="column", help="shape of t when exporting a PyTorch module with two "
                                          "inputs: [B, 1], [B], [] or [1]")
    g.add_argument("--argument-order", choices=("xt", "tx"), default="xt",
                   help="argument order of a PyTorch module with two inputs: forward(x, t) or "
                        "forward(t, x) (torchdyn/torchdiffeq style)")
    g.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset for PyTorch export")
    f = p.add_argument_group("the flow")
    f.add_argument("--interpolant", choices=("linear", "trig"), default="trig",
                   help="interpolant x_t = a(t) x0 + b(t) x1")
    f.add_argument("--interpolant-coeffs", metavar="FILE",
                   help="learned Fourier interpolant: JSON or .npz with alpha, beta")
    f.add_argument("--base", choices=("normal", "uniform"), default="normal",
                   help="base distribution at t = 0")
    f.add_argument("--base-mean", metavar="M", help="normal base mean: scalar or comma list "
                                                     "(default 0)")
    f.add_argument("--base-std", metavar="S", help="normal base std: scalar or comma list "
                                                    "(default 1)")
    f.add_argument("--low", metavar="L", help="uniform base lower corner: scalar or comma list")
    f.add_argument("--high", metavar="H", help="uniform base upper corner: scalar or comma list")
    f.add_argument("--normalize", metavar="DATA",
                   help="store per-feature mean and population std of this data: .npy of "
                        "[N, d] (or [N, C, H, W]) or .csv of [N, d]; excludes --mean/--std")
    f.add_argument("--mean", metavar="M",
                   help="stored normalisation mean: scalar or comma list of d values (default 0 "
                        "when --std is given); excludes --normalize")
    f.add_argument("--std", metavar="S",
                   help="stored normalisation std (> 0): scalar or comma list of d values "
                        "(default 1 when --mean is given); excludes --normalize")
    t = p.add_argument_group("conventions of the trained net")
    t.add_argument("--negate-velocity", action="store_true", help="v = -net(t, x)")
    t.add_argument("--time-scale", type=_finite, default=1.0, metavar="S",
                   help="net trained on tau = S*t: feed S*t, v = S*net")
    t.add_argument("--reverse-time", action="store_true",
                   help="net trained with data at tau = 0 and noise at tau = S: "
                        "tau = S*(1 - t), v = -S*net")
    c = p.add_argument_group("class labels and conditions")
    c.add_argument("--label-input", metavar="NAME",
                   help="ONNX input holding the class label (default: one named y, label, labels "
                        "or class_labels); for a PyTorch module: the module takes the label "
                        "(int64 [B]) as the argument after x and t")
    c.add_argument("--cond-input", metavar="NAME",
                   help="ONNX input holding a condition vector [B, w] (default: one named c or "
                        "cond); for a PyTorch module: it takes the condition as its last "
                        "argument, of the width of --null-cond")
    c.add_argument("--num-classes", type=_positive_int, metavar="K",
                   help="number of classes (checked against the embedding table)")
    c.add_argument("--null-label", type=int, metavar="K",
                   help="the unconditional label (classifier-free guidance needs it)")
    c.add_argument("--null-cond", metavar="V", help="the null condition vector: comma list")
    c.add_argument("--guidance", type=_finite, default=1.0, metavar="W",
                   help="guidance weight of the embedded test vectors (default 1)")
    o = p.add_argument_group("output")
    o.add_argument("--name", default="", help="model name")
    o.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata entry (repeatable)")
    o.add_argument("--quantize", choices=("fp32", "fp16", "bf16", "int8"), default=None,
                   help="weight storage: fp32 (default), fp16 (IEEE half), bf16 (bfloat16), "
                        "int8 (per-output-row symmetric int8 with float32 scales; biases and "
                        "other 1-D operands stay fp32); bf16 and int8 need format 1.3")
    o.add_argument("--fp16", action="store_true", help="alias of --quantize fp16")
    o.add_argument("--test-vectors", type=_count, default=64, metavar="N",
                   help="embedded reference velocities (0 = none)")
    o.add_argument("--seed", type=int, default=0, help="seed for the test-vector points")
    o.add_argument("--no-self-check", action="store_true",
                   help="do not evaluate the source (ONNX or PyTorch) against the converted graph "
                        "(by default a disagreement beyond float32 rounding refuses the "
                        "conversion)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.time_column and args.time_input:
        parser.error("--time-column and --time-input exclude each other")
    if args.interpolant_coeffs and "--interpolant" in (argv if argv is not None else sys.argv):
        parser.error("--interpolant and --interpolant-coeffs exclude each other")
    if args.base == "normal" and (args.low is not None or args.high is not None):
        parser.error("--low/--high need --base uniform")
    if args.base == "uniform" and (args.low is None or args.high is None):
        parser.error("--base uniform needs --low and --high")
    if args.base == "uniform" and (args.base_mean is not None or args.base_std is not None):
        parser.error("--base-mean/--base-std need --base normal")
    if args.time_scale <= 0:
        parser.error("--time-scale must be > 0")
    if args.normalize is not None and (args.mean is not None or args.std is not None):
        parser.error("--normalize DATA and --mean/--std exclude each other")
    if args.fp16 and args.quantize not in (None, "fp16"):
        parser.error("--fp16 is --quantize fp16; it excludes --quantize " + args.quantize)
    try:
        model = convert(
            args.input, args.output, arch=args.arch, x_input=args.x_input,
            time_input=args.time_input, time_column=args.time_column, dim=args.dim,
            opset=args.opset, time_shape=args.time_shape, interpolant=args.interpolant,
            interpolant_coeffs=args.interpolant_coeffs, base=args.base,
            base_mean=args.base_mean, base_std=args.base_std, low=args.low, high=args.high,
            normalize=args.normalize, negate_velocity=args.negate_velocity,
            time_scale=args.time_scale, reverse_time=args.reverse_time, name=args.name,
            meta=parse_meta(args.meta), fp16=args.fp16, test_vectors=args.test_vectors,
            seed=args.seed, quantize=args.quantize,
            label_input=args.label_input, cond_input=args.cond_input,
            num_classes=args.num_classes, null_label=args.null_label,
            null_cond=None if args.null_cond is None else
            _floats(args.null_cond, "--null-cond"), guidance=args.guidance,
            argument_order=args.argument_order, mean=args.mean, std=args.std,
            self_check=not args.no_self_check)
    except ConversionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except (OSError, MemoryError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(summary(model, args.output, args.fp16, args.quantize))
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
