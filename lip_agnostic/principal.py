"""Principal Subspace Preservation (PSP): the reduced SVD and rank-k truncation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._arrays import as_weight, check_fraction, check_rank, namespace, to_float, working_dtype

__all__ = ["SVD", "reduced_svd", "energy_rank", "resolve_rank", "project_principal"]


@dataclass(frozen=True)
class SVD:
    """Reduced SVD ``W = U diag(s) V^T`` of a ``(q, l)`` weight.

    Attributes
    ----------
    U : array, shape (q, m)
        Left singular vectors (feature side), orthonormal columns.
    s : array, shape (m,)
        Singular values, descending.
    V : array, shape (l, m)
        Right singular vectors (class side), orthonormal columns.
    """

    U: Any
    s: Any
    V: Any

    @property
    def rank_max(self) -> int:
        """``m = min(q, l)``, the number of components."""
        return int(self.s.shape[0])


def reduced_svd(W: Any, /, *, xp: Any = None) -> SVD:
    """Reduced SVD of a weight in its working dtype (float32 or float64).

    Steps
    -----
    1. Validate ``W`` (2-D, real floating, finite); promote half precision
       to float32.
    2. ``U, s, V^T = svd(W, full_matrices=False)``.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic.principal import reduced_svd
    >>> f = reduced_svd(np.diag([3.0, 2.0, 1.0]))
    >>> [round(float(v), 6) for v in f.s]
    [3.0, 2.0, 1.0]
    """
    xp = namespace(W, xp=xp)
    W = as_weight(xp, W)
    Wf = to_float(xp, W, working_dtype(xp, W.dtype))
    U, s, Vh = xp.linalg.svd(Wf, full_matrices=False)
    return SVD(U=U, s=s, V=xp.linalg.matrix_transpose(Vh))


def energy_rank(s: Any, fraction: float, /, *, xp: Any = None) -> int:
    """Smallest ``k`` whose top-``k`` components hold ``fraction`` of the energy.

    Steps
    -----
    1. ``e_i = s_i^2 / sum_j s_j^2`` (energy = squared Frobenius norm).
    2. ``k = min{k : sum_{i<k} e_i >= fraction}`` (a relative slack of
       ``1e-6`` absorbs rounding so that ``fraction=1`` gives the numerical
       rank, not always ``m``).

    Examples
    --------
    >>> import numpy as np
    >>> energy_rank(np.asarray([3.0, 1.0, 0.0]), 0.9)
    1
    """
    xp = namespace(s, xp=xp)
    fraction = check_fraction(fraction)
    s = to_float(xp, s, working_dtype(xp, s.dtype))
    e = s * s
    total = float(xp.sum(e))
    if total == 0.0:
        return 0
    cum = xp.cumulative_sum(e) / total
    reached = xp.astype(cum >= fraction - 1e-6, xp.int64)
    return int(s.shape[0] - xp.sum(reached)) + 1


def resolve_rank(rank: Any, s: Any, /, *, xp: Any = None) -> int:
    """Turn a fixed rank (int) or an energy fraction (float in (0, 1]) into ``k``."""
    m = int(s.shape[0])
    if isinstance(rank, float):
        return energy_rank(s, rank, xp=xp)
    return check_rank(rank, m)


def project_principal(
    W: Any, k: int | float, /, *, method: str = "full", xp: Any = None
) -> Any:
    """Principal Subspace Preservation: the best rank-``k`` approximation of ``W``.

    Steps
    -----
    1. ``W = U diag(s) V^T`` (reduced SVD).
    2. ``k`` is an integer in ``[0, min(q, l)]``, or a float in ``(0, 1]``
       read as an energy fraction (see :func:`energy_rank`).
    3. Return ``W_k = U[:, :k] diag(s[:k]) V[:, :k]^T`` in ``W``'s dtype.

    ``k = min(q, l)`` returns ``W`` itself (a copy, bit for bit); ``k = 0``
    returns zeros.

    ``method="randomized"`` finds the top ``k`` triplets with
    :func:`lip_agnostic.lowrank.truncate_top` (randomized subspace iteration)
    instead of a full SVD: much faster for a small ``k`` of a large weight;
    an energy fraction is resolved from the top of the spectrum only.

    Parameters
    ----------
    W : array, shape (q, l)
        Classifier weight (features in, classes out).
    k : int or float
        Rank to keep, or energy fraction.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import project_principal
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> np.round(project_principal(W, 2), 6).tolist()
    [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    """
    xp = namespace(W, xp=xp)
    if method not in ("full", "randomized"):
        raise ValueError(f"method must be 'full' or 'randomized'; got {method!r}")
    if method == "randomized":
        from .lowrank import truncate_top  # lowrank builds on this module

        W = as_weight(xp, W)
        m = min(int(W.shape[0]), int(W.shape[1]))
        if not isinstance(k, float) and check_rank(k, m) == m:
            return xp.asarray(W, copy=True)
        f = truncate_top(W, k, xp=xp).svd
        return to_float(xp, (f.U * f.s) @ xp.linalg.matrix_transpose(f.V), W.dtype)
    f = reduced_svd(W, xp=xp)
    k = resolve_rank(k, f.s, xp=xp)
    if k == f.rank_max:
        return xp.asarray(W, copy=True)
    Wk = (f.U[:, :k] * f.s[:k]) @ xp.linalg.matrix_transpose(f.V[:, :k])
    return to_float(xp, Wk, W.dtype)
