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


def _backends() -> list:
    params = [pytest.param("numpy", id="numpy")]
    params.append(pytest.param("array_api_strict", id="array_api_strict"))
    params.append(pytest.param("torch", id="torch"))
    for name in ("cupy", "jax.numpy"):
        try:
            __import__(name)
        except Exception:
            continue
        params.append(pytest.param(name, id=name.split(".")[0]))
    return params


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
        elif name == "cupy":
            import array_api_compat.cupy as xp
        else:
            # The backend-parametrized tests compare against float64 references, so this backend
            # runs JAX with x64 on; the core without x64 (float32 only) is checked, warnings as
            # errors, in a fresh interpreter by tests/test_core_jax.py.
            import jax
            jax.config.update("jax_enable_x64", True)
            import jax.numpy as xp
        self.xp = xp

    def asarray(self, a, dtype=None):
        """Array of this backend from a NumPy array (``dtype``: a NumPy dtype name)."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        if self.name == "torch":
            import torch
            return torch.from_numpy(np.ascontiguousarray(a))
        return self.xp.asarray(a)

    def dtype(self, name: str):
        return getattr(self.xp, name)

    @staticmethod
    def to_numpy(a) -> np.ndarray:
        """NumPy copy of any backend's array (or a Python scalar)."""
        if hasattr(a, "detach"):
            return a.detach().cpu().numpy()
        if hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray):
            return np.from_dlpack(a).copy()
        return np.asarray(a)

    def __repr__(self) -> str:
        return f"Backend({self.name})"


@pytest.fixture(params=_backends())
def backend(request) -> Backend:
    """One array backend (numpy, array-api-strict, torch, jax (a dev dependency); cupy when installed)."""
    return Backend(request.param)


@pytest.fixture
def xp(backend):
    """The array namespace of :func:`backend`."""
    return backend.xp


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
