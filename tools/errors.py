"""User-facing errors of ``lip-onnx`` and the exit code each one maps to.

Every mistake a user can make (a bad file, a model the tool cannot handle,
calibration data that does not fit, an output that would be overwritten)
raises a subclass of :class:`LipOnnxError`; the CLI prints its message and
exits with :attr:`LipOnnxError.exit_code`, never with a traceback.

Exit codes
----------
====  ==============================================================
0     success
1     internal error (a bug: the traceback is printed, please report it)
2     usage error: bad option or value (e.g. ``k`` out of range)
3     the input model cannot be read (missing, not ONNX, truncated,
      external data missing or outside the model's folder)
4     no classifier layer found, or several (pick one with ``--layer``)
5     unsupported classifier weight (quantized, shared, NaN/Inf, dtype)
6     calibration data do not match the model
7     an output was refused (exists without ``--force``; is, or links
      to, the input model, one of its external data files, the
      calibration file, or another output of the same run)
8     the output model failed validation (nothing was written)
9     the output could not be written (read-only folder, disk full,
      permission denied; nothing partial is left)
10    ``denoise --exit-code`` only: the weights were left unchanged
      (the output is written, as with exit 0)
130   interrupted (Ctrl-C)
====  ==============================================================
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "UNCHANGED_EXIT",
    "LipOnnxError",
    "UsageError",
    "ModelReadError",
    "ClassifierNotFoundError",
    "UnsupportedWeightError",
    "CalibrationError",
    "OutputRefusedError",
    "ValidationFailedError",
    "WriteFailedError",
]

from lip_agnostic.errors import LIPError


class LipOnnxError(LIPError):
    """Base class: a user-facing error with a message and an exit code (a :class:`LIPError`)."""

    exit_code: int = 1


class UsageError(LipOnnxError, ValueError):
    """A bad option or option value (exit 2)."""

    exit_code = 2


class ModelReadError(LipOnnxError, ValueError):
    """The input model cannot be read (exit 3)."""

    exit_code = 3


class ClassifierNotFoundError(LipOnnxError, ValueError):
    """No classifier layer, or an ambiguous choice (exit 4)."""

    exit_code = 4


class UnsupportedWeightError(LipOnnxError, ValueError):
    """The classifier weight cannot be refined (exit 5)."""

    exit_code = 5


class CalibrationError(LipOnnxError, ValueError):
    """Calibration data that do not match the model (exit 6)."""

    exit_code = 6


class OutputRefusedError(LipOnnxError, ValueError):
    """The output path is refused (exit 7)."""

    exit_code = 7


class ValidationFailedError(LipOnnxError, RuntimeError):
    """The refined model failed validation (exit 8)."""

    exit_code = 8


class WriteFailedError(LipOnnxError, OSError):
    """The output could not be written: read-only folder, full disk, no permission (exit 9)."""

    exit_code = 9


#: Exit status of ``denoise --exit-code`` when the weights were left unchanged (not an error).
UNCHANGED_EXIT = 10

#: Exit code -> meaning (the table above, for ``--help`` and the docs).
EXIT_CODES = {
    0: "success",
    1: "internal error (a bug; please report it)",
    2: "usage error (bad option or value, e.g. k out of range)",
    3: "input model unreadable (missing, not ONNX, truncated, bad external data)",
    4: "no classifier found, or several (choose one with --layer)",
    5: "unsupported classifier weight (quantized, shared, NaN/Inf, dtype)",
    6: "calibration data do not match the model",
    7: "output refused (exists without --force; is the input, its data, the calibration file, or another output "
       "of the run)",
    8: "output model failed validation (nothing written)",
    9: "output could not be written (read-only folder, disk full; nothing partial left)",
    10: "denoise --exit-code only: the weights were left unchanged (the output is still written)",
    130: "interrupted",
}
