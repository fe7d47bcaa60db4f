"""Seeded label-noise generators that report what they actually did.

Every generator returns the noisy labels together with the clean ones, the
*actual* noise rate and the empirical transition matrix, because a nominal
rate misleads: "40 % symmetric" noise that may redraw the true class flips
only ``0.4 * (l - 1) / l`` of the labels (36 % for ten classes).

- :func:`symmetric_noise` — uniform flips, with or without the true class
  among the targets.
- :func:`asymmetric_noise` — class-conditional flips along a documented map
  (:data:`ASYMMETRIC_MAPS`, Patrini et al. 2017 style).
- :func:`pairflip_noise` — ``i -> (i + 1) mod l`` (Han et al. 2018).
- :func:`instance_dependent_noise` — the part-/instance-dependent recipe of
  Xia et al. (2020).
- :func:`partial_labels` — candidate sets for partial-label learning.

NumPy only; ``seed`` is an ``int`` or a :class:`numpy.random.Generator`, and
the same seed always gives the same labels.

Examples
--------
>>> import numpy as np

from .errors import DataError, DataTypeError, OptionError, OptionTypeError
>>> from lip_agnostic.noise import symmetric_noise
>>> y = np.repeat(np.arange(10), 100)
>>> noisy = symmetric_noise(y, 0.4, 10, include_true=True, seed=0)
>>> noisy.labels.shape, noisy.kind
((1000,), 'symmetric')
>>> 0.30 < noisy.rate_actual < 0.42
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from .errors import DataError, DataTypeError, OptionError, OptionTypeError

__all__ = [
    "NoisyLabels",
    "PartialLabels",
    "ASYMMETRIC_MAPS",
    "ASYMMETRIC_MAP_CLASSES",
    "symmetric_noise",
    "asymmetric_noise",
    "pairflip_noise",
    "instance_dependent_noise",
    "partial_labels",
    "transition_matrix",
]

Seed = Union[int, np.random.Generator]

#: Class maps for :func:`asymmetric_noise`, ``{source class: target class}``.
#:
#: - ``"cifar10"``: Patrini et al. (2017), *Making deep neural networks robust
#:   to label noise: a loss correction approach*: truck -> automobile,
#:   bird -> airplane, deer -> horse, cat <-> dog.
#: - ``"digits"`` (also MNIST): Patrini et al. (2017): 2 -> 7, 3 -> 8,
#:   5 <-> 6, 7 -> 1.
#: - ``"fashion-mnist"``: this project's choice of visually similar classes in
#:   the same spirit: T-shirt/top -> Shirt, Pullover <-> Coat,
#:   Sandal -> Sneaker, Ankle boot -> Sneaker (0 -> 6, 2 <-> 4, 5 -> 7, 9 -> 7).
#:
#: Any other dataset passes its own ``{source: target}`` dict (the rendered-font
#: study's map lives with that dataset, in ``experiments/fonts.py``).
ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    "fashion-mnist": {0: 6, 2: 4, 4: 2, 5: 7, 9: 7},
}

#: Number of classes of each dataset in :data:`ASYMMETRIC_MAPS`.
ASYMMETRIC_MAP_CLASSES: dict[str, int] = {"cifar10": 10, "digits": 10, "fashion-mnist": 10}


@dataclass(frozen=True)
class NoisyLabels:
    """Noisy labels and the facts about the noise that produced them.

    Attributes
    ----------
    labels : ndarray of int64, shape (n,)
        The noisy labels.
    clean : ndarray of int64, shape (n,)
        A copy of the input (clean) labels.
    kind : str
        ``"symmetric"``, ``"asymmetric"``, ``"pairflip"`` or ``"instance"``.
    rate_nominal : float
        The rate that was asked for.
    rate_actual : float
        Fraction of labels that differ from ``clean``.
    transition : ndarray of float64, shape (l, l)
        Empirical ``T[i, j] = P(noisy = j | clean = i)``; rows sum to 1, the
        rows of classes absent from ``clean`` are those of the identity.
    """

    labels: np.ndarray
    clean: np.ndarray
    kind: str
    rate_nominal: float
    rate_actual: float
    transition: np.ndarray

    @property
    def n_classes(self) -> int:
        """``l``, the number of classes."""
        return int(self.transition.shape[0])

    def summary(self) -> str:
        """One line, e.g. ``"symmetric 40% nominal, 36.1% actual (n=1257, l=10)"``."""
        return (
            f"{self.kind} {100 * self.rate_nominal:g}% nominal, {100 * self.rate_actual:.1f}% actual "
            f"(n={self.labels.shape[0]}, l={self.n_classes})"
        )


@dataclass(frozen=True)
class PartialLabels:
    """Candidate label sets for partial-label learning.

    Attributes
    ----------
    candidates : ndarray of bool, shape (n, l)
        ``candidates[i, j]`` is True when class ``j`` is a candidate of
        sample ``i``; the true class always is.
    clean : ndarray of int64, shape (n,)
        A copy of the true labels.
    q : float
        Probability with which each wrong class was added.
    avg_candidates : float
        Mean candidate-set size.
    rate_actual : float
        Mean fraction of the wrong classes that were added,
        ``(avg_candidates - 1) / (l - 1)``.
    """

    candidates: np.ndarray
    clean: np.ndarray
    q: float
    avg_candidates: float
    rate_actual: float

    @property
    def n_classes(self) -> int:
        """``l``, the number of classes."""
        return int(self.candidates.shape[1])

    def targets(self) -> np.ndarray:
        """The candidate sets as a float64 ``(n, l)`` target matrix (ones on candidates)."""
        return self.candidates.astype(np.float64)

    def summary(self) -> str:
        """One line, e.g. ``"partial q=0.30, 3.70 candidates on average (30.0% of wrong classes; n=1257, l=10)"``."""
        return (
            f"partial q={self.q:.2f}, {self.avg_candidates:.2f} candidates on average "
            f"({100 * self.rate_actual:.1f}% of wrong classes; n={self.candidates.shape[0]}, l={self.n_classes})"
        )


# ---------------------------------------------------------------- validation
def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise OptionTypeError(f"seed must be an int or a numpy.random.Generator; got {type(seed).__name__}")
    if seed < 0:
        raise OptionError(f"seed must be non-negative; got {seed}")
    return np.random.default_rng(int(seed))


def _n_classes(n_classes: object, minimum: int = 2) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise OptionTypeError(f"n_classes must be an int; got {type(n_classes).__name__}")
    if n_classes < minimum:
        raise OptionError(f"n_classes must be at least {minimum}; got {n_classes}")
    return int(n_classes)


def _labels(y: object, n_classes: int | None) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise DataError(f"y must be 1-D (n,) integer labels; got shape {a.shape}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise DataTypeError(f"y must hold integer labels; got dtype {a.dtype}")
    if a.shape[0] == 0:
        raise DataError("y must hold at least one label; got an empty array")
    lo, hi = int(a.min()), int(a.max())
    if n_classes is None:
        if lo < 0:
            raise DataError(f"labels must be non-negative; got values in [{lo}, {hi}]")
    elif lo < 0 or hi >= n_classes:
        raise DataError(f"labels must lie in [0, {n_classes - 1}] for n_classes={n_classes}; got values in [{lo}, {hi}]")
    return a.astype(np.int64, copy=True)


def _rate(rate: object, name: str = "rate", closed: bool = False) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise OptionTypeError(f"{name} must be a real number; got {type(rate).__name__}")
    r = float(rate)
    ok = 0.0 <= r <= 1.0 if closed else 0.0 <= r < 1.0
    if not ok:
        raise OptionError(f"{name} must lie in [0, 1{']' if closed else ')'}; got {rate}")
    return r


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, n_classes: int) -> np.ndarray:
    """Empirical transition matrix ``T[i, j] = P(noisy = j | clean = i)``.

    Steps
    -----
    1. ``C[i, j]`` = number of samples with clean label ``i`` and noisy ``j``.
    2. ``T[i] = C[i] / sum_j C[i, j]``; a class absent from ``clean`` gets
       the identity row (nothing observed, nothing flipped).

    Examples
    --------
    >>> import numpy as np
    >>> transition_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3).tolist()
    [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    l = _n_classes(n_classes, minimum=1)
    c = _labels(clean, l)
    y = _labels(noisy, l)
    if c.shape != y.shape:
        raise DataError(f"clean and noisy must have the same shape; got {c.shape} and {y.shape}")
    counts = np.zeros((l, l), dtype=np.float64)
    np.add.at(counts, (c, y), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    T = np.divide(counts, totals, out=np.eye(l), where=totals > 0)
    return T


def _result(kind: str, clean: np.ndarray, noisy: np.ndarray, rate: float, l: int) -> NoisyLabels:
    return NoisyLabels(
        labels=noisy,
        clean=clean,
        kind=kind,
        rate_nominal=rate,
        rate_actual=float(np.mean(noisy != clean)),
        transition=transition_matrix(clean, noisy, l),
    )


# ---------------------------------------------------------------- generators
def symmetric_noise(y: object, rate: float, n_classes: int, *, include_true: bool = False, seed: Seed = 0) -> NoisyLabels:
    """Symmetric (uniform) label noise.

    Steps
    -----
    1. Select each sample independently with probability ``rate``.
    2. ``include_true=False``: move each selected label to a class drawn
       uniformly from the ``l - 1`` *other* classes, so the actual rate is
       ``rate`` in expectation.
       ``include_true=True``: redraw each selected label uniformly from all
       ``l`` classes (the common "symmetric" recipe), so a fraction ``1/l``
       of the selected labels stays put and the actual rate is
       ``rate * (l - 1) / l`` in expectation (40 % nominal flips 36 % of a
       10-class set).

    Parameters
    ----------
    y : array-like of int, shape (n,)
        Clean labels in ``[0, n_classes)``.
    rate : float in [0, 1)
    n_classes : int, at least 2
    include_true : bool
    seed : int or numpy.random.Generator

    Examples
    --------
    >>> import numpy as np
    >>> r = symmetric_noise(np.zeros(1000, dtype=int), 0.2, 5, seed=1)
    >>> r.summary()
    'symmetric 20% nominal, 18.8% actual (n=1000, l=5)'
    >>> round(float(r.transition[0].sum()), 6)
    1.0
    """
    l = _n_classes(n_classes)
    clean = _labels(y, l)
    rate = _rate(rate)
    rng = _rng(seed)
    n = clean.shape[0]
    selected = rng.random(n) < rate
    noisy = clean.copy()
    if include_true:
        noisy[selected] = rng.integers(0, l, size=int(selected.sum()))
    else:
        shift = rng.integers(1, l, size=int(selected.sum()))
        noisy[selected] = (clean[selected] + shift) % l
    return _result("symmetric", clean, noisy, rate, l)


def _class_map(class_map: object, n_classes: int | None) -> tuple[dict[int, int], int]:
    if isinstance(class_map, str):
        if class_map not in ASYMMETRIC_MAPS:
            raise OptionError(f"unknown class map {class_map!r}; known: {sorted(ASYMMETRIC_MAPS)}")
        default_l = ASYMMETRIC_MAP_CLASSES[class_map]
        l = default_l if n_classes is None else _n_classes(n_classes)
        if l != default_l:
            raise OptionError(f"class map {class_map!r} is for {default_l} classes; got n_classes={l}")
        return dict(ASYMMETRIC_MAPS[class_map]), l
    if not isinstance(class_map, Mapping):
        raise OptionTypeError(f"class_map must be a dict {{source: target}} or a name in {sorted(ASYMMETRIC_MAPS)}; got {type(class_map).__name__}")
    if len(class_map) == 0:
        raise OptionError("class_map must map at least one class; got an empty mapping")
    out: dict[int, int] = {}
    for src, dst in class_map.items():
        for v in (src, dst):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise OptionTypeError(f"class_map keys and values must be ints; got {src!r}: {dst!r}")
        if src == dst:
            raise OptionError(f"class_map must move each source to another class; got {src}: {dst}")
        if src < 0 or dst < 0:
            raise OptionError(f"class_map classes must be non-negative; got {src}: {dst}")
        out[int(src)] = int(dst)
    top = max(max(out), max(out.values()))
    if n_classes is None:
        return out, top + 1
    l = _n_classes(n_classes)
    if top >= l:
        raise OptionError(f"class_map refers to class {top}, outside [0, {l - 1}] for n_classes={l}")
    return out, l


def asymmetric_noise(
    y: object,
    rate: float,
    class_map: Mapping[int, int] | str,
    *,
    n_classes: int | None = None,
    seed: Seed = 0,
) -> NoisyLabels:
    """Class-conditional (asymmetric) label noise along a class map.

    Steps
    -----
    1. For each sample whose clean class ``c`` is a source of ``class_map``,
       flip it with probability ``rate`` to ``class_map[c]``.
    2. Samples of the other classes never change, so the actual rate is
       ``rate`` times the fraction of samples in mapped classes.

    Parameters
    ----------
    y : array-like of int, shape (n,)
    rate : float in [0, 1)
    class_map : dict {source: target} or a name in :data:`ASYMMETRIC_MAPS`
        (``"cifar10"``, ``"digits"``, ``"fashion-mnist"``).
    n_classes : int, optional
        Defaults to the named map's dataset, or for a dict to
        ``max(labels, map classes) + 1``.
    seed : int or numpy.random.Generator

    Examples
    --------
    >>> import numpy as np
    >>> r = asymmetric_noise(np.repeat(np.arange(10), 50), 0.4, "digits", seed=0)
    >>> sorted(set(np.flatnonzero(r.transition.diagonal() < 1).tolist()))
    [2, 3, 5, 6, 7]
    """
    mapping, l = _class_map(class_map, n_classes)
    if n_classes is None and not isinstance(class_map, str):
        clean = _labels(y, None)
        l = max(l, int(clean.max()) + 1)
    else:
        clean = _labels(y, l)
    rate = _rate(rate)
    rng = _rng(seed)
    target = np.arange(l, dtype=np.int64)
    for src, dst in mapping.items():
        target[src] = dst
    movable = target[clean] != clean
    flip = movable & (rng.random(clean.shape[0]) < rate)
    noisy = np.where(flip, target[clean], clean)
    return _result("asymmetric", clean, noisy, rate, l)


def pairflip_noise(y: object, rate: float, n_classes: int, *, seed: Seed = 0) -> NoisyLabels:
    """Pair-flip noise (Han et al., 2018, *Co-teaching*): ``i -> (i + 1) mod l``.

    Steps
    -----
    1. Flip each sample independently with probability ``rate`` to the next
       class, ``(y + 1) mod l``.

    Examples
    --------
    >>> import numpy as np
    >>> r = pairflip_noise(np.arange(4).repeat(10), 0.5, 4, seed=0)
    >>> bool(np.all((r.labels == r.clean) | (r.labels == (r.clean + 1) % 4)))
    True
    """
    l = _n_classes(n_classes)
    clean = _labels(y, l)
    rate = _rate(rate)
    rng = _rng(seed)
    flip = rng.random(clean.shape[0]) < rate
    noisy = np.where(flip, (clean + 1) % l, clean)
    return _result("pairflip", clean, noisy, rate, l)


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float, n: int) -> np.ndarray:
    """Normal(mean, sd) truncated to ``[0, 1]`` by rejection (accepts >= ~50 % for mean in [0, 1])."""
    out = rng.normal(mean, sd, size=n)
    bad = (out < 0.0) | (out > 1.0)
    while bad.any():
        out[bad] = rng.normal(mean, sd, size=int(bad.sum()))
        bad = (out < 0.0) | (out > 1.0)
    return out


def instance_dependent_noise(
    y: object,
    rate: float,
    features: object,
    n_classes: int,
    *,
    seed: Seed = 0,
) -> NoisyLabels:
    """Instance-dependent label noise, the recipe of Xia et al. (2020).

    Xia, Liu, Han, Wang, Gong, Liu, Niu, Tao, Sugiyama, *Part-dependent Label
    Noise: Towards Instance-dependent Label Noise*, NeurIPS 2020 — the
    generator of their reference code, widely reused as "IDN".

    Steps
    -----
    1. Per-sample flip rate ``r_i ~ N(rate, 0.1^2)`` truncated to ``[0, 1]``
       (``rate = 0`` gives ``r_i = 0``: no noise).
    2. One random projection per class, ``W[c] ~ N(0, 1)`` of shape ``(d, l)``.
    3. Scores ``a_i = x_i @ W[y_i]``; ``p_i = r_i * softmax(a_i)`` over the
       wrong classes (the true class's score set to ``-inf``), and
       ``p_i[y_i] = 1 - r_i``.
    4. Draw the noisy label from ``p_i``.

    The mean actual rate is the mean of the truncated normal: ``rate`` up to
    the truncation (e.g. about 0.108 for ``rate = 0.1``, 0.4 for 0.4).
    Which wrong class a sample lands in depends on its features, so samples
    that look alike are mislabeled alike.

    Parameters
    ----------
    y : array-like of int, shape (n,)
    rate : float in [0, 1)
    features : array-like of real numbers, shape (n, d)
        E.g. the flattened images (or any fixed representation).
    n_classes : int, at least 2
    seed : int or numpy.random.Generator

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((2000, 16))
    >>> r = instance_dependent_noise(rng.integers(0, 5, 2000), 0.3, x, 5, seed=0)
    >>> 0.25 < r.rate_actual < 0.35
    True
    """
    l = _n_classes(n_classes)
    clean = _labels(y, l)
    rate = _rate(rate)
    x = np.asarray(features)
    if x.ndim != 2:
        raise DataError(f"features must be 2-D (n, d); got shape {x.shape}")
    if x.shape[0] != clean.shape[0]:
        raise DataError(f"features must have one row per label: got {x.shape[0]} rows for {clean.shape[0]} labels")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataTypeError(f"features must be real numbers; got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError("features must be finite; got NaN or infinity")
    rng = _rng(seed)
    n, d = x.shape
    flip_rate = np.zeros(n) if rate == 0.0 else _truncated_normal(rng, rate, 0.1, n)
    W = rng.standard_normal((l, d, l))
    noisy = clean.copy()
    u = rng.random(n)
    for c in range(l):
        idx = np.flatnonzero(clean == c)
        if idx.size == 0:
            continue
        a = x[idx] @ W[c]                       # (n_c, l)
        a[:, c] = -np.inf
        a -= a.max(axis=1, keepdims=True)
        p = np.exp(a)
        p /= p.sum(axis=1, keepdims=True)
        p *= flip_rate[idx, None]
        p[:, c] = 1.0 - flip_rate[idx]
        cdf = np.cumsum(p, axis=1)
        draw = (u[idx, None] > cdf).sum(axis=1)
        noisy[idx] = np.minimum(draw, l - 1)
    return _result("instance", clean, noisy, rate, l)


def partial_labels(y: object, q: float, n_classes: int, *, seed: Seed = 0) -> PartialLabels:
    """Partial-label candidate sets: the true class plus each wrong class with probability ``q``.

    Steps
    -----
    1. ``candidates[i, j] ~ Bernoulli(q)`` independently for every wrong
       class ``j != y_i``; ``candidates[i, y_i] = True``.
    2. The expected set size is ``1 + q (l - 1)``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
    q : float in [0, 1]
    n_classes : int, at least 2
    seed : int or numpy.random.Generator

    Examples
    --------
    >>> import numpy as np
    >>> p = partial_labels(np.arange(10).repeat(100), 0.3, 10, seed=0)
    >>> bool(p.candidates[np.arange(1000), p.clean].all()), 3.4 < p.avg_candidates < 4.0
    (True, True)
    """
    l = _n_classes(n_classes)
    clean = _labels(y, l)
    q = _rate(q, "q", closed=True)
    rng = _rng(seed)
    n = clean.shape[0]
    cand = rng.random((n, l)) < q
    cand[np.arange(n), clean] = True
    avg = float(cand.sum(axis=1).mean())
    return PartialLabels(candidates=cand, clean=clean, q=q, avg_candidates=avg, rate_actual=(avg - 1.0) / (l - 1))
