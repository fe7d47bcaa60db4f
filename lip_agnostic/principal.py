"""Principal Subspace Preservation (PSP): the best rank-``k`` approximation of a weight."""

from __future__ import annotations

from typing import Any

from ._arrays import as_weight, namespace, to_float
from .errors import OptionError
from .options import parse_rank
from .svd import SVD, check_factors, reduced_svd, resolve_rank, truncate_top

__all__ = ["project_principal"]


def project_principal(
    W: Any, k: int | float, /, *, method: str = "full", svd: SVD | None = None, xp: Any = None
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
    :func:`lip_agnostic.svd.truncate_top` (randomized subspace iteration)
    instead of a full SVD: much faster for a small ``k`` of a large weight;
    an energy fraction is resolved from the top of the spectrum only.
    ``svd``: the reduced SVD of ``W`` when the caller already has it
    (:func:`reduced_svd`); no factorization is then done.

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
        raise OptionError(f"method must be 'full' or 'randomized'; got {method!r}")
    if method == "randomized":
        W = as_weight(xp, W)
        m = min(int(W.shape[0]), int(W.shape[1]))
        k = parse_rank(k, m, name="k", allow_auto=False)
        if k == m and not isinstance(k, float):
            return xp.asarray(W, copy=True)
        f = truncate_top(W, k, xp=xp).svd
        return to_float(xp, (f.U * f.s) @ xp.linalg.matrix_transpose(f.V), W.dtype)
    if svd is not None:
        W = as_weight(xp, W)
        f = check_factors(svd, tuple(W.shape))
    else:
        f = reduced_svd(W, xp=xp)
    k = resolve_rank(k, f.s, xp=xp)
    if k == f.rank_max:
        return xp.asarray(W, copy=True)
    Wk = (f.U[:, :k] * f.s[:k]) @ xp.linalg.matrix_transpose(f.V[:, :k])
    return to_float(xp, Wk, W.dtype)
