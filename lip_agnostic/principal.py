"""Principal Subspace Preservation (PSP): the reduced SVD and rank-k truncation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._arrays import as_weight, check_fraction, check_rank, device_of, namespace, to_float, working_dtype

__all__ = ["SVD", "reduced_svd", "top_svd", "energy_rank", "resolve_rank", "project_principal"]


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


def top_svd(
    W: Any,
    k: int,
    /,
    *,
    oversample: int = 10,
    power_iters: int = 4,
    seed: int = 0,
    xp: Any = None,
) -> SVD:
    """The top ``k`` singular triplets by the randomized range finder (Halko,
    Martinsson & Tropp, 2011), for large weights where a full SVD is costly.

    Cost ``O(q l (k + p) (2 t + 2))`` for ``p = oversample`` and ``t =
    power_iters``, against ``O(q l m)`` for the full SVD.

    Steps
    -----
    1. ``Omega`` ``(l, k + p)`` standard normal (NumPy's seeded generator,
       moved to ``W``'s device: the array API has no random module).
    2. ``Q = orth(W Omega)``; ``t`` times: ``Q = orth(W orth(W^T Q))`` (QR
       re-orthonormalization keeps the power iterations stable).
    3. ``B = Q^T W`` ``(k + p, l)``; ``B = U_b diag(s) V^T``; ``U = Q U_b``.
    4. Keep the first ``k`` triplets.

    The error decays like ``(s_{k+p+1} / s_k)^(2t+1)``: exact when the rank
    of ``W`` is at most ``k + p``, loose when the spectrum is flat around
    ``k``; compare with :func:`reduced_svd` when it matters.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag(2.0 ** -np.arange(20))
    >>> [round(float(v), 6) for v in top_svd(W, 3).s]
    [1.0, 0.5, 0.25]
    """
    import numpy as np

    xp = namespace(W, xp=xp)
    W = as_weight(xp, W)
    m = min(int(W.shape[0]), int(W.shape[1]))
    k = check_rank(k, m)
    for name, val in (("oversample", oversample), ("power_iters", power_iters)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 0:
            raise ValueError(f"{name} must be a non-negative integer; got {val!r}")
    dt = working_dtype(xp, W.dtype)
    Wf = to_float(xp, W, dt)
    width = min(m, k + oversample)
    if width == m:
        f = reduced_svd(Wf, xp=xp)
        return SVD(U=f.U[:, :k], s=f.s[:k], V=f.V[:, :k])
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((int(W.shape[1]), width)).astype("float64" if dt == xp.float64 else "float32")
    omega = xp.asarray(omega, device=device_of(W))
    Wt = xp.linalg.matrix_transpose(Wf)
    Q, _ = xp.linalg.qr(Wf @ omega)
    for _ in range(power_iters):
        Z, _ = xp.linalg.qr(Wt @ Q)
        Q, _ = xp.linalg.qr(Wf @ Z)
    B = xp.linalg.matrix_transpose(Q) @ Wf
    Ub, sb, Vh = xp.linalg.svd(B, full_matrices=False)
    U = Q @ Ub
    return SVD(U=U[:, :k], s=sb[:k], V=xp.linalg.matrix_transpose(Vh[:k, :]))


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

    ``method="randomized"`` finds the top ``k`` triplets with :func:`top_svd`
    instead of a full SVD (much faster for a small ``k`` of a large weight;
    an integer ``k`` only, since an energy fraction needs the whole spectrum).

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
        if isinstance(k, float):
            raise ValueError("method='randomized' needs an integer k (an energy fraction needs the full spectrum)")
        W = as_weight(xp, W)
        k = check_rank(k, min(int(W.shape[0]), int(W.shape[1])))
        if k == min(int(W.shape[0]), int(W.shape[1])):
            return xp.asarray(W, copy=True)
        f = top_svd(W, k, xp=xp)
        return to_float(xp, (f.U * f.s) @ xp.linalg.matrix_transpose(f.V), W.dtype)
    f = reduced_svd(W, xp=xp)
    k = resolve_rank(k, f.s, xp=xp)
    if k == f.rank_max:
        return xp.asarray(W, copy=True)
    Wk = (f.U[:, :k] * f.s[:k]) @ xp.linalg.matrix_transpose(f.V[:, :k])
    return to_float(xp, Wk, W.dtype)
