# SPDX-License-Identifier: Apache-2.0
# The exceptions: siflow.Error and one subclass per siflow_status code, each carrying the
# runtime's message. Argument errors are also ValueError, I/O errors OSError, and so on, so
# callers can catch them either way.


class Error(Exception):
    """A siflow call failed. `code` is the C API's siflow_status value, `status` its name and
    `message` the runtime's message naming the cause."""

    code = None
    status = None

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class InvalidArgument(Error, ValueError):
    """SIFLOW_INVALID_ARGUMENT: an argument or option is wrong (shape, NaN input, batch 0, ...)."""
    code, status = 1, "SIFLOW_INVALID_ARGUMENT"


class InvalidModel(Error):
    """SIFLOW_INVALID_MODEL: the model bytes fail verification."""
    code, status = 2, "SIFLOW_INVALID_MODEL"


class Unsupported(Error):
    """SIFLOW_UNSUPPORTED: a valid request this runtime or model cannot serve."""
    code, status = 3, "SIFLOW_UNSUPPORTED"


class ArenaTooSmall(Error):
    """SIFLOW_ARENA_TOO_SMALL: a caller arena is too small."""
    code, status = 4, "SIFLOW_ARENA_TOO_SMALL"


class OutOfMemory(Error, MemoryError):
    """SIFLOW_OUT_OF_MEMORY: an allocation failed."""
    code, status = 5, "SIFLOW_OUT_OF_MEMORY"


class NumericalError(Error, ArithmeticError):
    """SIFLOW_NUMERICAL_ERROR: the integration produced a non-finite state."""
    code, status = 6, "SIFLOW_NUMERICAL_ERROR"


class IoError(Error, OSError):
    """SIFLOW_IO_ERROR: reading a file failed."""
    code, status = 7, "SIFLOW_IO_ERROR"


class Cancelled(Error):
    """SIFLOW_CANCELLED: a progress callback returned False. (Ctrl-C raises KeyboardInterrupt
    instead.)"""
    code, status = 8, "SIFLOW_CANCELLED"


ERRORS = {cls.code: cls for cls in (InvalidArgument, InvalidModel, Unsupported, ArenaTooSmall,
                                    OutOfMemory, NumericalError, IoError, Cancelled)}


def from_status(code, message):
    cls = ERRORS.get(code)
    if cls is None:
        error = Error(f"siflow status {code}: {message}")
        error.code = code
        return error
    return cls(message)
