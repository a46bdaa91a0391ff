# SPDX-License-Identifier: Apache-2.0
"""siflow_convert: converts trained velocity nets (ONNX, PyTorch, npz + JSON) into .sif files.

Importing this package does not import torch; only the PyTorch entry points do.
"""
from .ir import (BASES, INTERPOLANTS, OPS, UNARY_KINDS, Base, ConversionError, FlowModel, Graph,
                 Interpolant, Node, Normalization, TestVectors)
from .onnx_import import from_onnx, onnx_input_dim
from .npz_import import from_arch, from_npz
from .torch_import import detect_format, export_onnx, from_torch, load_torch_file
from .transforms import apply_time_options, retime
from .cli import convert

__version__ = "0.1.0"


def write_sif(model, path, fp16=False):
    """Writes `model` to `path` atomically (see sif_io.write_sif)."""
    from .sif_io import write_sif as _write
    return _write(model, path, fp16=fp16)


def read_sif(path):
    """Reads a .sif file into a FlowModel (see sif_io.read_sif)."""
    from .sif_io import read_sif as _read
    return _read(path)


__all__ = ["BASES", "INTERPOLANTS", "OPS", "UNARY_KINDS", "Base", "ConversionError", "FlowModel",
           "Graph", "Interpolant", "Node", "Normalization", "TestVectors", "from_onnx",
           "onnx_input_dim", "from_arch", "from_npz", "detect_format", "export_onnx",
           "from_torch", "load_torch_file", "apply_time_options", "retime", "convert",
           "write_sif", "read_sif", "__version__"]
