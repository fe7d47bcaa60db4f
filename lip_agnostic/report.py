"""What a refinement changed, in numbers a person can read (shared by every face).

Two different questions get two different numbers:

- *Were the kept components left alone?* ``kept_relative_change`` measures
  ``||(W* - W) V_k||_F / ||W V_k||_F`` on the arrays (``V_k``: the top-``k``
  right singular vectors of ``W``), and ``kept_unchanged`` says whether that
  is zero up to the weights' floating-point precision. LIP keeps them
  exactly, so a true ``kept_unchanged`` is the check that it did.
- *How far did the top-``k`` subspace move?* ``top_k_angle`` is the largest
  principal angle between the top-``k`` right subspaces of ``W`` and of
  ``W*``, each ranked by its *own* singular values. When a refit tail value
  grows above a kept one, ``W*``'s top-``k`` contains a tail direction and
  this angle is ``pi / 2`` even though every kept component is intact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ._arrays import as_weight, namespace, to_float, working_dtype
from .metrics import effective_rank, principal_angles, stable_rank
from .svd import check_factors
from .errors import DataError, OptionError

__all__ = ["ChangeSummary", "summarize_change", "summarize_refit", "KEPT_TOLERANCE"]

#: ``kept_unchanged`` holds when ``kept_relative_change <= KEPT_TOLERANCE * sqrt(max(q, l)) * eps``
#: (``eps`` of the weights' dtype): rounding of one matrix product, not a change.
KEPT_TOLERANCE = 8.0


@dataclass(frozen=True)
class ChangeSummary:
    """Before/after facts about a weight ``(q, l)``; plain Python values (JSON-ready).

    Attributes
    ----------
    shape : (q, l)
    k : int
        Components meant to be kept untouched.
    spectrum_before, spectrum_after : list of float
        Singular values, descending.
    effective_rank_before, effective_rank_after : float
        Roy–Vetterli entropy effective rank.
    stable_rank_before, stable_rank_after : float
    kept_relative_change : float
        Measured ``||(W_after - W_before) V_k||_F / ||W_before V_k||_F``, with
        ``V_k`` the top-``k`` right (class-side) singular vectors of
        ``W_before``: how much the kept components moved (0 for ``k = 0``).
    kept_unchanged : bool
        ``kept_relative_change`` is within rounding of the weights' dtype
        (``KEPT_TOLERANCE * sqrt(max(q, l)) * eps``); true when bit-identical.
    top_k_angle : float
        Largest principal angle (radians) between the top-``k`` right
        singular subspaces of ``W_before`` and of ``W_after``, each ranked by
        its own singular values; 0 for ``k = 0``. ``pi / 2`` when a refit
        tail value overtook a kept one (the kept components can still be
        unchanged: see ``kept_unchanged``).
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
    kept_relative_change: float
    kept_unchanged: bool
    top_k_angle: float
    relative_change: float

    def to_dict(self) -> dict:
        """JSON-friendly view."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def _tolerance(xp: Any, dt: Any, shape: tuple[int, int]) -> float:
    return KEPT_TOLERANCE * math.sqrt(max(shape)) * float(xp.finfo(dt).eps)


def summarize_change(W_before: Any, W_after: Any, /, k: int, *, svd: Any = None, xp: Any = None) -> ChangeSummary:
    """Summarize how ``W_after`` differs from ``W_before`` (both ``(q, l)``).

    Steps
    -----
    1. Spectra, effective and stable ranks of both: ``W_before``'s from
       ``svd`` when given (:func:`lip_agnostic.reduced_svd`, no new
       factorization), ``W_after``'s from its one SVD.
    2. ``V_k``: the top-``k`` right singular vectors of ``W_before``;
       ``kept_relative_change = ||(W_after - W_before) V_k||_F / ||W_before V_k||_F``.
    3. ``top_k_angle``: largest principal angle between ``V_k`` and the
       top-``k`` right singular vectors of ``W_after`` (the same SVD as step
       1; 0 when the two weights are equal).
    4. ``relative_change = ||W_after - W_before||_F / ||W_before||_F``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> s = summarize_change(W, np.diag([3.0, 2.0, 0.0]), 2)
    >>> s.kept_unchanged, s.top_k_angle, round(s.relative_change, 4)
    (True, 0.0, 0.2673)
    """
    xp = namespace(W_before, W_after, xp=xp)
    W0, W1 = as_weight(xp, W_before, "W_before"), as_weight(xp, W_after, "W_after")
    if tuple(W0.shape) != tuple(W1.shape):
        raise DataError(f"W_before and W_after must have the same shape; got {tuple(W0.shape)} and {tuple(W1.shape)}")
    shape = (int(W0.shape[0]), int(W0.shape[1]))
    m = min(shape)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= m:
        raise OptionError(f"k must be an integer in [0, {m}]; got {k!r}")
    dt = working_dtype(xp, W0.dtype, W1.dtype)
    tol = _tolerance(xp, dt, shape)
    W0, W1 = to_float(xp, W0, dt), to_float(xp, W1, dt)
    if svd is None:
        _, s0, Vh0 = xp.linalg.svd(W0, full_matrices=False)
        V0 = xp.linalg.matrix_transpose(Vh0)
    else:
        f = check_factors(svd, shape)
        s0, V0 = to_float(xp, f.s, dt), to_float(xp, f.V, dt)
    norm0 = float(xp.linalg.vector_norm(W0))
    D = W1 - W0
    diff = float(xp.linalg.vector_norm(D))
    if diff == 0.0:
        # Unchanged: the same spectrum, angle 0 exactly (two SVDs of one matrix can differ by rounding).
        return _summary(xp, shape, k, s0, s0, 0.0, True, 0.0, 0.0)
    _, s1, Vh1 = xp.linalg.svd(W1, full_matrices=False)
    kept, angle = 0.0, 0.0
    if k > 0:
        V0k = V0[:, :k]
        base = float(xp.linalg.vector_norm(s0[:k]))
        kept = float(xp.linalg.vector_norm(D @ V0k)) / base if base > 0 else 0.0
        angle = float(xp.max(principal_angles(V0k, xp.linalg.matrix_transpose(Vh1[:k, :]), xp=xp)))
    return _summary(xp, shape, k, s0, s1, kept, kept <= tol, angle, diff / norm0 if norm0 > 0 else 0.0)


def _summary(xp: Any, shape: tuple[int, int], k: int, s0: Any, s1: Any, kept: float, kept_ok: bool,
             angle: float, rel: float) -> ChangeSummary:
    return ChangeSummary(
        shape=(int(shape[0]), int(shape[1])),
        k=int(k),
        spectrum_before=[float(v) for v in s0],
        spectrum_after=[float(v) for v in s1],
        effective_rank_before=float(effective_rank(s0, xp=xp)),
        effective_rank_after=float(effective_rank(s1, xp=xp)),
        stable_rank_before=float(stable_rank(s0, xp=xp)),
        stable_rank_after=float(stable_rank(s1, xp=xp)),
        kept_relative_change=float(kept),
        kept_unchanged=bool(kept_ok),
        top_k_angle=float(angle),
        relative_change=float(rel),
    )


def summarize_refit(s: Any, d: Any, /, k: int, *, shape: tuple[int, int], V: Any = None,
                    W_before: Any = None, W_after: Any = None, xp: Any = None) -> ChangeSummary:
    """The same summary as :func:`summarize_change` for ``W = U diag(s) V^T`` and
    ``W* = U diag(d) V^T`` (what LIP produces), without a new SVD.

    Steps
    -----
    1. The singular values of ``W*`` are ``|d|`` sorted descending (``U``, ``V``
       are orthonormal; signs go into ``U``).
    2. ``||W* - W||_F = ||d - s||_2``.
    3. ``kept_relative_change``: with ``V`` (the right singular vectors of
       ``W``), ``W_before`` and ``W_after`` given, measured on the arrays as
       ``||(W_after - W_before) V[:, :k]||_F / ||s[:k]||``; otherwise from the
       spectra, ``||d[:k] - s[:k]|| / ||s[:k]||``.
    4. The top-``k`` right subspace of ``W*`` is spanned by the ``V`` columns of
       its ``k`` largest ``|d_i|``: ``top_k_angle`` to ``V[:, :k]`` is 0 when
       those are the first ``k`` columns and ``pi / 2`` otherwise (a refit tail
       value overtook a kept one; the kept components are still unchanged).

    Examples
    --------
    >>> import numpy as np
    >>> r = summarize_refit(np.asarray([3.0, 2.0, 1.0]), np.asarray([3.0, 2.0, 0.5]), 2, shape=(4, 3))
    >>> round(r.relative_change, 4), r.kept_unchanged, r.top_k_angle
    (0.1336, True, 0.0)
    >>> summarize_refit(np.asarray([3.0, 2.0, 1.0]), np.asarray([3.0, 2.0, 5.0]), 2, shape=(4, 3)).top_k_angle
    1.5707963267948966
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
    base = float(xp.linalg.vector_norm(s[:k])) if k else 0.0
    tol_dt = dt
    if k == 0 or base == 0.0:
        kept = 0.0
    elif V is not None and W_before is not None and W_after is not None:
        wx = namespace(W_before, W_after, V, xp=xp)
        wdt = working_dtype(wx, W_before.dtype, W_after.dtype)
        tol_dt = wdt
        Vk = to_float(wx, V, wdt)[:, :k]
        D = to_float(wx, W_after, wdt) - to_float(wx, W_before, wdt)
        kept = float(wx.linalg.vector_norm(D @ Vk)) / base
    else:
        kept = float(xp.linalg.vector_norm(d[:k] - s[:k])) / base
    tol = _tolerance(xp, tol_dt, (int(shape[0]), int(shape[1])))
    return _summary(xp, shape, k, s, after, kept, kept <= tol, angle, diff / norm0 if norm0 > 0 else 0.0)
