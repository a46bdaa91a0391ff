# SPDX-License-Identifier: Apache-2.0
"""siflow from Python: the device runtime itself (libsiflow_c.so, through its stable C API and
ctypes), with numpy arrays in and out and the same bits as the siflow CLI.

    import siflow
    model = siflow.load("model.sif")          # or bytes
    x = model.sample(1000, seed=0, method="rk4", steps=50)
    logp = model.log_prob(x, divergence="hutchinson", probes=4, seed=1)

See docs/python.md for every option and the design choices (ctypes, plan caching, Ctrl-C).
"""
from ._capi import lib as _lib, library_path
from ._errors import (ArenaTooSmall, Cancelled, Error, InvalidArgument, InvalidModel, IoError,
                      NumericalError, OutOfMemory, Unsupported)
from ._model import Model, ModelInfo, ValidationReport, load, memory_bytes
from ._options import ACCEPTED as OPTIONS

__version__ = _lib.siflow_version().decode()

__all__ = ["load", "memory_bytes", "Model", "ModelInfo", "ValidationReport", "Error",
           "InvalidArgument", "InvalidModel", "Unsupported", "ArenaTooSmall", "OutOfMemory",
           "NumericalError", "IoError", "Cancelled", "OPTIONS", "library_path", "__version__"]
