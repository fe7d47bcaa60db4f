"""Command-line tools over the lip_agnostic core (``lip-onnx``).

The Python API mirrors the commands (see :mod:`lip_agnostic.tools.api`)::

    from lip_agnostic.tools import denoise, denoise_file, inspect, compare
    model = denoise("model.onnx", rank=8)                       # onnx.ModelProto
    report = denoise_file("model.onnx", calib="calib.npz")      # writes model.lip.onnx

Modules: ``model_io`` (safe loading, external data), ``graph`` (finding the
classifier), ``calibrate`` (calibration data -> features for the core),
``runtime`` (onnxruntime sessions), ``writer`` (atomic output), ``validate``,
``api``, ``cli``, ``demo``, ``errors`` (exit codes).
"""

__all__ = ["denoise", "denoise_file", "inspect", "compare"]


def __getattr__(name: str):
    # Lazy (PEP 562): importing the package must not import onnx/onnxruntime, so that
    # ``lip-onnx --version`` and ``-h`` start fast; the API loads on first use.
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
