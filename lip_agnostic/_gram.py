"""The reduced SVD of a large weight through the eigendecomposition of its small Gram side.

:func:`lip_agnostic.reduced_svd` calls :func:`gram_svd` when the switch-over
rule there says so; this module holds the arithmetic and the accuracy guard.
"""

from __future__ import annotations

import math
from typing import Any

from ._arrays import device_of, stats_dtype, to_float

__all__ = ["gram_svd", "gram_tolerance", "gram_dtype", "BLOCK_ELEMENTS"]

#: Entries of ``W`` cast to the Gram dtype at a time (bounds the extra memory to ~32 MiB of float64).
BLOCK_ELEMENTS = 1 << 22


def gram_dtype(xp: Any, work: Any, device: Any) -> Any | None:
    """The dtype the Gram route computes in, or ``None`` when the namespace has nothing wider than ``work``.

    float64 where the namespace/device has it (``stats_dtype``); the route is
    only worth taking when that is wider than the working dtype.
    """
    wide = stats_dtype(xp, device)
    if wide == work:
        return None
    return wide


def gram_tolerance(xp: Any, work: Any, wide: Any) -> float:
    """Smallest ``s_min / s_max`` the Gram route answers for: ``sqrt(eps_wide / eps_work)``.

    The eigendecomposition of ``G = W W^T`` in ``wide`` has a backward error of
    about ``eps_wide * s_max^2`` on ``G``; the recovered factor
    ``V = W^T U diag(1/s)`` then loses orthonormality by about
    ``eps_wide * (s_max / s_min)^2``. Requiring that to stay below
    ``eps_work`` (the working dtype's own rounding, which the LAPACK SVD in
    that dtype has anyway) gives the bound: ``4.3e-5`` for float32 weights
    with a float64 Gram, i.e. condition numbers up to about 23,000.
    """
    return math.sqrt(float(xp.finfo(wide).eps) / float(xp.finfo(work).eps))


def gram_svd(W: Any, /, *, work: Any, wide: Any, xp: Any) -> tuple[Any, Any, Any] | None:
    """``(U, s, V)`` of ``W (q, l)`` from the eigendecomposition of its ``m x m`` Gram matrix,
    or ``None`` when ``W`` is too ill-conditioned for it (the caller then uses LAPACK).

    Steps
    -----
    1. ``m = min(q, l)``. For ``q <= l``: ``G = W W^T`` (``q x q``), summed over
       column blocks of ``W`` cast to ``wide``; else ``G = W^T W`` over row blocks.
    2. ``G = E diag(w) E^T`` (``eigh`` in ``wide``), reordered descending;
       ``s = sqrt(max(w, 0))``.
    3. Guard: if ``s_min < tol * s_max`` (:func:`gram_tolerance`) or ``s_max = 0``,
       return ``None``.
    4. The other factor block by block in ``wide``: for ``q <= l``, ``U = E`` and
       ``V = W^T U diag(1/s)``; for ``q > l``, ``V = E`` and ``U = W V diag(1/s)``.
    5. Cast ``U, s, V`` to ``work``.

    Cost: two products of ``W`` with ``m`` columns (``2 q l m`` multiply-adds in
    ``wide``; the first is a symmetric rank update) and one ``m x m``
    symmetric eigenproblem; extra memory ``O(m^2 + BLOCK_ELEMENTS)`` beyond the factors.
    """
    q, l = int(W.shape[0]), int(W.shape[1])
    wide_side = q <= l
    m = q if wide_side else l
    big = l if wide_side else q
    step = max(1, BLOCK_ELEMENTS // max(m, 1))
    dev = device_of(W)
    G = xp.zeros((m, m), dtype=wide, device=dev)
    for start in range(0, big, step):
        stop = min(start + step, big)
        if wide_side:
            B = to_float(xp, W[:, start:stop], wide)            # (m, b)
            G = G + B @ xp.linalg.matrix_transpose(B)
        else:
            B = to_float(xp, W[start:stop, :], wide)            # (b, m)
            G = G + xp.linalg.matrix_transpose(B) @ B
    w, E = xp.linalg.eigh(G)
    del G
    w, E = xp.flip(w), xp.flip(E, axis=1)
    w = xp.where(w > 0, w, xp.zeros_like(w))
    s = xp.sqrt(w)
    s_max, s_min = float(s[0]), float(s[-1])
    if not s_max > 0.0 or s_min < gram_tolerance(xp, work, wide) * s_max:
        return None
    parts = []
    for start in range(0, big, step):
        stop = min(start + step, big)
        if wide_side:
            B = to_float(xp, W[:, start:stop], wide)            # rows start:stop of V = (W^T E) / s
            parts.append(to_float(xp, (xp.linalg.matrix_transpose(B) @ E) / s, work))
        else:
            B = to_float(xp, W[start:stop, :], wide)            # rows start:stop of U = (W E) / s
            parts.append(to_float(xp, (B @ E) / s, work))
    other = xp.concat(parts, axis=0)
    E, s = to_float(xp, E, work), to_float(xp, s, work)
    return (E, s, other) if wide_side else (other, s, E)
