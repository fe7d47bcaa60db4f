"""What a refinement changed, in numbers a person can read (shared by every face)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ._arrays import as_weight, namespace, to_float, working_dtype
from .metrics import effective_rank, principal_subspace_angle, singular_spectrum, stable_rank

__all__ = ["ChangeSummary", "summarize_change", "summarize_refit"]


@dataclass(frozen=True)
class ChangeSummary:
    """Before/after facts about a weight ``(q, l)``; plain Python values (JSON-ready).

    Attributes
    ----------
    shape : (q, l)
    k : int
        Components kept untouched.
    spectrum_before, spectrum_after : list of float
        Singular values, descending.
    effective_rank_before, effective_rank_after : float
        Roy–Vetterli entropy effective rank.
    stable_rank_before, stable_rank_after : float
    principal_angle : float
        Largest principal angle (radians) between the top-``k`` right
        (class-side) singular subspaces before and after; 0 for ``k = 0``.
    relative_change : float
        ``||W_after - W_before||_F / ||W_before||_F``.
    """

    shape: tuple[int, int]
    k: int
    spectrum_before: list[float]
    spectrum_after: list[float]
    effective_rank_before: float
    effective_rank_after: float
    stable_rank_before: float
    stable_rank_after: float
    principal_angle: float
    relative_change: float

    def to_dict(self) -> dict:
        """JSON-friendly view."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def summarize_change(W_before: Any, W_after: Any, /, k: int, *, xp: Any = None) -> ChangeSummary:
    """Summarize how ``W_after`` differs from ``W_before`` (both ``(q, l)``).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> summarize_change(W, W, 2).relative_change
    0.0
    """
    xp = namespace(W_before, W_after, xp=xp)
    W0, W1 = as_weight(xp, W_before, "W_before"), as_weight(xp, W_after, "W_after")
    if tuple(W0.shape) != tuple(W1.shape):
        raise ValueError(f"W_before and W_after must have the same shape; got {tuple(W0.shape)} and {tuple(W1.shape)}")
    dt = working_dtype(xp, W0.dtype, W1.dtype)
    W0, W1 = to_float(xp, W0, dt), to_float(xp, W1, dt)
    s0, s1 = singular_spectrum(W0, xp=xp), singular_spectrum(W1, xp=xp)
    norm0 = float(xp.linalg.vector_norm(W0))
    diff = float(xp.linalg.vector_norm(W1 - W0))
    # An unchanged weight has angle 0 exactly (two SVDs of one matrix can differ by rounding).
    angle = 0.0 if diff == 0.0 else float(principal_subspace_angle(W0, W1, int(k), xp=xp))
    return _summary(xp, (int(W0.shape[0]), int(W0.shape[1])), k, s0, s1, angle, diff / norm0 if norm0 > 0 else 0.0)


def _summary(xp: Any, shape: tuple[int, int], k: int, s0: Any, s1: Any, angle: float, rel: float) -> ChangeSummary:
    return ChangeSummary(
        shape=(int(shape[0]), int(shape[1])),
        k=int(k),
        spectrum_before=[float(v) for v in s0],
        spectrum_after=[float(v) for v in s1],
        effective_rank_before=float(effective_rank(s0, xp=xp)),
        effective_rank_after=float(effective_rank(s1, xp=xp)),
        stable_rank_before=float(stable_rank(s0, xp=xp)),
        stable_rank_after=float(stable_rank(s1, xp=xp)),
        principal_angle=float(angle),
        relative_change=float(rel),
    )


def summarize_refit(s: Any, d: Any, /, k: int, *, shape: tuple[int, int], xp: Any = None) -> ChangeSummary:
    """The same summary as :func:`summarize_change` for ``W = U diag(s) V^T`` and
    ``W* = U diag(d) V^T`` (what LIP produces), from the two spectra alone: no SVD.

    Steps
    -----
    1. The singular values of ``W*`` are ``|d|`` sorted descending (``U``, ``V``
       are orthonormal; signs go into ``U``).
    2. ``||W* - W||_F = ||d - s||_2``.
    3. The top-``k`` right subspace of ``W*`` is spanned by the ``V`` columns of
       its ``k`` largest ``|d_i|``: its largest principal angle to ``V[:, :k]``
       is 0 when those are the first ``k`` columns and ``pi / 2`` otherwise (a
       refit tail value overtook a kept one).

    Examples
    --------
    >>> import numpy as np
    >>> summarize_refit(np.asarray([3.0, 2.0, 1.0]), np.asarray([3.0, 2.0, 0.5]), 2, shape=(4, 3)).relative_change
    0.1336306209562122
    """
    xp = namespace(s, d, xp=xp)
    dt = working_dtype(xp, s.dtype, d.dtype)
    s, d = to_float(xp, s, dt), to_float(xp, d, dt)
    after = xp.flip(xp.sort(xp.abs(d)))
    k = int(k)
    angle = 0.0
    if 0 < k < int(d.shape[0]):
        order = xp.argsort(-xp.abs(d), stable=True)
        if int(xp.max(order[:k])) >= k:
            angle = math.pi / 2
    norm0 = float(xp.linalg.vector_norm(s))
    diff = float(xp.linalg.vector_norm(d - s))
    return _summary(xp, shape, k, s, after, angle, diff / norm0 if norm0 > 0 else 0.0)
