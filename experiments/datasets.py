"""Offline datasets for the experiments and benchmarks (nothing is downloaded).

- ``load_digits()``: scikit-learn's 8x8 digits (1,797 images, 10 classes).
- ``load_fashion_mnist()``: Fashion-MNIST from Debian's ``dataset-fashion-mnist``
  package (IDX files under ``/usr/share/datasets/fashion-mnist/``, or
  ``$FASHION_MNIST_DIR``).
- ``load_fonts()``: 62 characters (0-9, A-Z, a-z) rendered from the installed
  Debian font packages (the Chars74K "Fnt" recipe, ``experiments/fonts.py``),
  28x28, split by font family; cached under ``experiments/_cache/``.

Every loader returns a :class:`Dataset` of float32 features in ``[0, 1]``,
flattened to ``(n, d)``, and int64 labels.
"""

from __future__ import annotations

import gzip
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["Dataset", "load_digits", "load_fashion_mnist", "load_fonts", "fashion_mnist_dir", "FASHION_MNIST_DIR", "CACHE_DIR"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(__file__).resolve().parent / "_cache"


@dataclass(frozen=True)
class Dataset:
    """A train/test split: ``x_*`` float32 ``(n, d)`` in ``[0, 1]``, ``y_*`` int64 ``(n,)``.

    ``info`` holds loader-specific facts (for fonts: the fonts on each side,
    the cache file, the class names).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, ...]
    info: Mapping[str, Any] = field(default_factory=dict)


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


def _render_side(fonts, index: Mapping[Path, int], samples_per_font: int, seed: int, image_size: int):
    from .fonts import render_font

    images, labels, used = [], [], []
    for f in fonts:  # uint8 glyphs; float conversion happens once, after caching
        # one child seed per font (its position in the full sorted list): reproducible, split-independent
        rng = np.random.default_rng([seed, index[f.path]])
        glyphs = render_font(f.path, samples_per_font, rng, image_size=image_size)
        if glyphs is None:
            continue
        images.append(glyphs)
        labels.append(np.tile(np.arange(62, dtype=np.int64), samples_per_font))
        used.append(f)
    if not images:
        return np.zeros((0, image_size * image_size), np.uint8), np.zeros(0, np.int64), used
    return np.concatenate(images).reshape(-1, image_size * image_size), np.concatenate(labels), used


def _to_unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(255.0)


def load_fonts(
    samples_per_font: int = 4,
    seed: int = 0,
    test_fraction: float = 0.25,
    *,
    image_size: int = 28,
    font_dirs: list[Path] | None = None,
    cache: bool = True,
    verbose: bool = False,
) -> Dataset:
    """62-class characters rendered from the installed fonts, split by font family.

    Steps
    -----
    1. :func:`experiments.fonts.discover_fonts`: every font covering
       ``0-9 A-Z a-z`` (``$LIP_FONT_DIRS`` or ``font_dirs`` overrides the
       folders).
    2. :func:`experiments.fonts.split_by_family`: seeded, test families
       (and their clones) disjoint from training families.
    3. :func:`experiments.fonts.render_font`: ``samples_per_font`` seeded,
       augmented renderings of each character per font.
    4. Cache the arrays in ``experiments/_cache/fonts-<hash>.npz``, keyed by
       the font list (paths, sizes), the generator version and the
       arguments; a later call with the same key loads the file.

    Labels follow ``experiments.fonts.FONT_CHARACTERS``
    (``"0123456789ABC...Zabc...z"``). ``info`` holds ``train_fonts``,
    ``test_fonts`` (file names), ``classes`` and ``cache``.

    Raises
    ------
    FileNotFoundError
        When no usable font is installed (with the apt command).
    """
    from .fonts import APT_HINT, discover_fonts, font_dirs as default_dirs, font_list_hash, split_by_family

    if isinstance(samples_per_font, bool) or not isinstance(samples_per_font, int) or samples_per_font < 1:
        raise ValueError(f"samples_per_font must be a positive integer; got {samples_per_font!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}")
    dirs = tuple(Path(p) for p in font_dirs) if font_dirs is not None else default_dirs()
    fonts = discover_fonts(dirs)
    if not fonts:
        raise FileNotFoundError(
            f"no font covering 0-9, A-Z, a-z found under {[str(d) for d in dirs]}; install Debian fonts: {APT_HINT}"
        )
    key = font_list_hash(fonts, samples_per_font, seed, float(test_fraction), image_size)
    path = CACHE_DIR / f"fonts-{key}.npz"
    from .fonts import FONT_CHARACTERS

    if cache and path.exists():
        z = np.load(path, allow_pickle=False)
        info = {"train_fonts": list(z["train_fonts"]), "test_fonts": list(z["test_fonts"]), "classes": FONT_CHARACTERS, "cache": str(path)}
        return Dataset("fonts", _to_unit(z["x_train"]), z["y_train"], _to_unit(z["x_test"]), z["y_test"], 62, (image_size, image_size), info)
    split = split_by_family(fonts, float(test_fraction), seed)
    index = {f.path: i for i, f in enumerate(fonts)}
    t0 = time.perf_counter()
    xtr, ytr, used_tr = _render_side(split.train, index, samples_per_font, seed, image_size)
    xte, yte, used_te = _render_side(split.test, index, samples_per_font, seed, image_size)
    if len(used_tr) == 0 or len(used_te) == 0:
        raise FileNotFoundError(f"fonts were found but none rendered usable glyphs on one side of the split; install Debian fonts: {APT_HINT}")
    if verbose:
        print(f"rendered {len(xtr) + len(xte)} glyphs from {len(used_tr) + len(used_te)} fonts in {time.perf_counter() - t0:.1f} s")
    train_names = np.array([f.path.name for f in used_tr])
    test_names = np.array([f.path.name for f in used_te])
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, train_fonts=train_names, test_fonts=test_names)
        os.replace(tmp, path)
    info = {"train_fonts": list(train_names), "test_fonts": list(test_names), "classes": FONT_CHARACTERS, "cache": str(path) if cache else None}
    return Dataset("fonts", _to_unit(xtr), ytr, _to_unit(xte), yte, 62, (image_size, image_size), info)
