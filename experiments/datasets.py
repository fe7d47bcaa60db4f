"""Offline datasets for the experiments and benchmarks (nothing is downloaded).

- ``load_digits()``: scikit-learn's 8x8 digits (1,797 images, 10 classes).
- ``load_fashion_mnist()``: Fashion-MNIST from Debian's ``dataset-fashion-mnist``
  package (IDX files under ``/usr/share/datasets/fashion-mnist/``, or
  ``$FASHION_MNIST_DIR``).

Every loader returns a :class:`Dataset` of float32 features in ``[0, 1]``,
flattened to ``(n, d)``, and int64 labels.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load_digits", "load_fashion_mnist", "fashion_mnist_dir", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Dataset:
    """A train/test split: ``x_*`` float32 ``(n, d)`` in ``[0, 1]``, ``y_*`` int64 ``(n,)``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, ...]


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's digits, split by a seeded stratified shuffle."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    d = _load()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", xtr, ytr, xte, yte, 10, (8, 8))


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are (``$FASHION_MNIST_DIR`` overrides the Debian path)."""
    return Path(os.environ.get("FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found under {root}; install Debian's "
        "'dataset-fashion-mnist' package (apt-get install dataset-fashion-mnist) or set FASHION_MNIST_DIR"
    )


def load_fashion_mnist(limit_train: int | None = None, limit_test: int | None = None) -> Dataset:
    """Fashion-MNIST (60,000 train / 10,000 test, 28x28, 10 classes).

    Raises ``FileNotFoundError`` (with the install command) when the package is absent.
    """
    root = fashion_mnist_dir()
    xtr = _read_idx(_find(root, "train-images-idx3-ubyte"))
    ytr = _read_idx(_find(root, "train-labels-idx1-ubyte"))
    xte = _read_idx(_find(root, "t10k-images-idx3-ubyte"))
    yte = _read_idx(_find(root, "t10k-labels-idx1-ubyte"))
    if limit_train is not None:
        xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    if limit_test is not None:
        xte, yte = xte[:limit_test], yte[:limit_test]
    flat = lambda a: (a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset("fashion-mnist", flat(xtr), ytr.astype(np.int64), flat(xte), yte.astype(np.int64), 10, (28, 28))
