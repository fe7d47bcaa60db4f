"""Shared fixtures: the array backends every core test runs on, and a clean home for frameworks."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Frameworks write caches under $HOME (Keras: ~/.keras, onnxruntime: ~/.cache); keep them out of it.
_TMP_HOME = tempfile.mkdtemp(prefix="lip-agnostic-tests-")
os.environ.setdefault("KERAS_HOME", os.path.join(_TMP_HOME, "keras"))
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_TMP_HOME, "cache"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")


#: Every backend id the ``backend`` fixture knows; ``torch-cuda`` and ``cupy`` need a GPU.
BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "torch-cuda", "cupy")


def _default_backends() -> list[str]:
    names = ["numpy", "array_api_strict", "torch"]
    for module, name in (("cupy", "cupy"), ("jax.numpy", "jax")):
        try:
            __import__(module)
        except Exception:
            continue
        names.append(name)
    return names


def _backends() -> list:
    """The backends to run: ``LIP_TEST_BACKENDS`` (comma-separated ids of :data:`BACKENDS`, e.g.
    ``torch-cuda,cupy`` on a GPU machine: benchmarks/gpu_check.sh) or, unset, the CPU ones that
    are installed (cupy too where it imports). A selected backend that is not available here
    skips its tests with the reason, it does not fail them."""
    chosen = os.environ.get("LIP_TEST_BACKENDS", "").strip()
    names = [n.strip() for n in chosen.split(",") if n.strip()] if chosen else _default_backends()
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        raise pytest.UsageError(f"LIP_TEST_BACKENDS: unknown backend(s) {', '.join(unknown)}; "
                                f"choose from {', '.join(BACKENDS)}")
    return [pytest.param(n, id=n) for n in names]


def _require_cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch-cuda: torch sees no CUDA device here")
    return torch


def _require_cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:  # CUDA driver or device missing
        pytest.skip(f"cupy: no usable CUDA device ({type(exc).__name__}: {exc})")
    return cupy


class Backend:
    """An array namespace plus helpers to move test data in and out of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp
        elif name == "array_api_strict":
            xp = pytest.importorskip("array_api_strict")
        elif name == "torch":
            pytest.importorskip("torch")
            import array_api_compat.torch as xp
        elif name == "torch-cuda":
            _require_cuda_torch()
            import array_api_compat.torch as xp
        elif name == "cupy":
            _require_cupy()
            import array_api_compat.cupy as xp
        else:
            # The backend-parametrized tests compare against float64 references, so this backend
            # runs JAX with x64 on; the core without x64 (float32 only) is checked, warnings as
            # errors, in a fresh interpreter by tests/test_core_jax.py.
            jax = pytest.importorskip("jax")
            jax.config.update("jax_enable_x64", True)
            import jax.numpy as xp
        self.xp = xp

    def asarray(self, a, dtype=None):
        """Array of this backend from a NumPy array (``dtype``: a NumPy dtype name)."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        if self.name in ("torch", "torch-cuda"):
            import torch
            t = torch.from_numpy(np.ascontiguousarray(a))
            return t.to("cuda") if self.name == "torch-cuda" else t
        return self.xp.asarray(a)

    def dtype(self, name: str):
        return getattr(self.xp, name)

    @staticmethod
    def to_numpy(a) -> np.ndarray:
        """NumPy copy of any backend's array (or a Python scalar)."""
        if hasattr(a, "detach"):
            return a.detach().cpu().numpy()
        if type(a).__module__.startswith("cupy"):
            return a.get()
        if hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray):
            return np.from_dlpack(a).copy()
        return np.asarray(a)

    def __repr__(self) -> str:
        return f"Backend({self.name})"


@pytest.fixture(params=_backends())
def backend(request) -> Backend:
    """One array backend (numpy, array-api-strict, torch, jax (a dev dependency); cupy when installed;
    ``LIP_TEST_BACKENDS`` chooses, e.g. ``torch-cuda``)."""
    return Backend(request.param)


@pytest.fixture
def xp(backend):
    """The array namespace of :func:`backend`."""
    return backend.xp


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
