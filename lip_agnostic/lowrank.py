"""Top-``k`` SVD of a large weight without a full SVD (randomized subspace iteration).

Principal Subspace Preservation only needs the top ``k`` singular triplets.
For a ``4096 x 32000`` classifier a full SVD costs minutes; a few passes of
subspace iteration over ``W`` cost about as much as a few matrix products
with ``k + p`` columns. Used by faces that handle very large classifiers
(``lip-onnx``); small weights should keep using
:func:`lip_agnostic.project_principal` (exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ._arrays import device_of, has_float64, namespace, stats_dtype, to_float, working_dtype
from .errors import DataError, DataTypeError, NonFiniteError, OptionError
from .options import parse_rank
from .principal import SVD, reduced_svd

__all__ = ["TopSVD", "top_svd", "truncate_top", "low_rank_blocks"]


@dataclass(frozen=True)
class TopSVD:
    """Outcome of :func:`top_svd` / :func:`truncate_top`.

    Attributes
    ----------
    svd : SVD
        ``U (q, k)``, ``s (k,)``, ``V (l, k)``: the top-``k`` triplets.
    k : int
    total_energy : float
        ``||W||_F^2``.
    iterations : int
        Power iterations run (0 when the exact SVD was used).
    converged : bool
        Whether the top-``k`` singular values changed by less than ``tol``.
    method : {"randomized", "exact"}
    """

    svd: SVD
    k: int
    total_energy: float
    iterations: int
    converged: bool
    method: str

    def energy_kept(self) -> float:
        """``sum_{i<k} s_i^2 / ||W||_F^2``."""
        if self.total_energy == 0.0:
            return 1.0
        s = np.asarray([float(v) for v in self.svd.s[: self.k]])
        return float(np.sum(s * s) / self.total_energy)

    def to_dict(self) -> dict:
        """JSON-friendly view (without the factors)."""
        return {"k": self.k, "method": self.method, "iterations": self.iterations,
                "converged": self.converged, "total_energy": self.total_energy,
                "energy_kept": self.energy_kept(),
                "top_singular_values": [float(v) for v in self.svd.s]}


def _qr(xp: Any, A: Any) -> Any:
    """Orthonormal basis of a tall ``A (n, p)`` by CholeskyQR2, Householder QR as fallback.

    CholeskyQR2 (``R = chol(A^T A)``, ``Q = A R^{-1}``, twice) costs two
    matrix products and a ``p x p`` factorization: on a shared or
    oversubscribed machine it is far faster than LAPACK's Householder QR of
    a ``32000 x 74`` matrix, and as accurate for the well-conditioned
    sketches met here (one product with ``W`` between orthonormalizations).
    A failed or non-finite factorization (rank-deficient sketch) falls back
    to ``linalg.qr``.
    """
    Q = A
    try:
        for _ in range(2):
            G = xp.linalg.matrix_transpose(Q) @ Q
            R = xp.linalg.matrix_transpose(xp.linalg.cholesky(G))     # upper: G = R^T R
            Q = Q @ xp.linalg.inv(R)
        if bool(xp.all(xp.isfinite(Q))):
            eye = xp.eye(int(Q.shape[1]), dtype=Q.dtype, device=device_of(Q))
            err = float(xp.max(xp.abs(xp.linalg.matrix_transpose(Q) @ Q - eye)))
            if err < 100 * float(xp.finfo(Q.dtype).eps) * int(Q.shape[1]):
                return Q
    except Exception:  # not positive definite: the sketch is rank-deficient
        pass
    return xp.linalg.qr(A)[0]


def _small_svd(xp: Any, B: Any) -> tuple[Any, Any, Any]:
    """SVD of a wide ``B (p, l)`` through the ``p x p`` Gram matrix (float64), LAPACK SVD as fallback.

    ``B B^T = Ub diag(s^2) Ub^T``, ``Vb = B^T Ub / s``: two products and a
    small symmetric eigenproblem. Components with ``s`` below ``1e-6 s_max``
    are ill-determined that way, so then the plain SVD answers.
    """
    dt = B.dtype
    B64 = to_float(xp, B, stats_dtype(xp, device_of(B)))
    w, Ub = xp.linalg.eigh(B64 @ xp.linalg.matrix_transpose(B64))
    w, Ub = xp.flip(w), xp.flip(Ub, axis=1)
    if not float(w[0]) > 0.0 or float(w[-1]) < 1e-12 * float(w[0]):
        U, s, Vh = xp.linalg.svd(B, full_matrices=False)
        return U, s, xp.linalg.matrix_transpose(Vh)
    s = xp.sqrt(w)
    V = (xp.linalg.matrix_transpose(B64) @ Ub) / s
    return to_float(xp, Ub, dt), to_float(xp, s, dt), to_float(xp, V, dt)


def top_svd(
    W: Any,
    k: int,
    /,
    *,
    oversample: int = 10,
    max_iter: int = 10,
    tol: float = 1e-4,
    seed: int = 0,
    xp: Any = None,
) -> TopSVD:
    """The top-``k`` singular triplets of ``W (q, l)`` by randomized subspace iteration.

    Steps (Halko, Martinsson & Tropp 2011, Alg. 4.4)
    -----
    1. ``p = k + oversample``; if ``p >= min(q, l) / 2`` the exact reduced SVD
       is cheaper: use it.
    2. ``Q = orth(W G)`` for a Gaussian ``G (l, p)`` (seeded: reproducible).
    3. Repeat: ``B = Q^T W`` (``p x l``); ``s`` = singular values of ``B``;
       stop when the top ``k`` moved by less than ``tol`` (relative) or after
       ``max_iter``; else ``Q = orth(W orth(B^T))``.
    4. ``B = Ub diag(s) Vb^T``: ``U = Q Ub[:, :k]``, ``V = Vb[:, :k]``.

    Orthonormalization is CholeskyQR2 and the small SVDs go through the
    ``p x p`` Gram matrix (both with LAPACK fallbacks): only matrix products
    touch ``W``-sized data.

    Cost: ``2 (iterations + 1)`` products of ``W`` with ``p`` columns, memory
    ``O((q + l) p)``.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic.lowrank import top_svd
    >>> W = np.diag(np.r_[[100.0, 50.0, 20.0], np.ones(97)])
    >>> [round(float(v), 3) for v in top_svd(W, 3).svd.s]
    [100.0, 50.0, 20.0]
    """
    xp = namespace(W, xp=xp)
    W = _as_big_weight(xp, W)
    q, l = int(W.shape[0]), int(W.shape[1])
    m = min(q, l)
    k = parse_rank(k, m, name="k", allow_auto=False, allow_fraction=False)
    for name, val in (("oversample", oversample), ("max_iter", max_iter)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 0:
            raise OptionError(f"{name} must be a non-negative integer; got {val!r}")
    if not float(tol) > 0.0:
        raise OptionError(f"tol must be positive; got {tol}")
    dt = working_dtype(xp, W.dtype)
    Wf = to_float(xp, W, dt)
    total = _blocked_energy(xp, Wf)
    if not math.isfinite(total):
        raise NonFiniteError(f"W contains NaN/Inf value(s) (shape {tuple(W.shape)})")
    p = min(m, k + oversample)
    if 2 * p >= m or k == 0:
        f = reduced_svd(Wf, xp=xp)
        return TopSVD(SVD(f.U[:, :k], f.s[:k], f.V[:, :k]), k, total, 0, True, "exact")
    rng = np.random.default_rng(seed)
    G = xp.asarray(rng.standard_normal((l, p)), dtype=dt, device=device_of(W))
    Q = _qr(xp, Wf @ G)
    prev = None
    it = 0
    converged = False
    while True:
        B = xp.linalg.matrix_transpose(Q) @ Wf
        _, s, _ = _small_svd(xp, B)
        s = s[:k]
        if prev is not None:
            change = float(xp.max(xp.abs(s - prev))) / max(float(s[0]), 1e-300)
            if change < tol:
                converged = True
                break
        if it >= max_iter:
            break
        prev = s
        Q = _qr(xp, Wf @ _qr(xp, xp.linalg.matrix_transpose(B)))
        it += 1
    Ub, s, Vb = _small_svd(xp, B)
    U = Q @ Ub[:, :k]
    V = Vb[:, :k]
    return TopSVD(SVD(U, s[:k], V), k, total, it, converged, "randomized")


def _as_big_weight(xp: Any, W: Any) -> Any:
    """Like the core's weight check, minus the finiteness pass (the energy pass does it)."""
    if getattr(W, "ndim", None) != 2:
        raise DataError(f"W must be a 2-D weight matrix of shape (q features, l classes); got shape {tuple(getattr(W, 'shape', ()))}")
    if not xp.isdtype(W.dtype, "real floating"):
        raise DataTypeError(f"W must have a real floating dtype; got {W.dtype}")
    if 0 in tuple(W.shape):
        raise DataError(f"W must be non-empty; got shape {tuple(W.shape)}")
    return W


def _blocked_energy(xp: Any, W: Any, rows: int = 256) -> float:
    """``||W||_F^2`` block by block, summed in float64 (NaN/Inf anywhere make it non-finite)."""
    wide = xp.float64 if has_float64(xp, device_of(W)) else None
    total = 0.0
    n = int(W.shape[0])
    for start in range(0, n, rows):
        blk = W[start:min(start + rows, n), :]
        part = float(xp.sum(blk * blk, dtype=wide)) if wide is not None else float(xp.sum(blk * blk))
        if not math.isfinite(part) and wide is not None:  # squares overflowing float32: redo wide
            b64 = to_float(xp, blk, wide)
            part = float(xp.sum(b64 * b64))
        total += part
    return total


def truncate_top(W: Any, rank: int | float, /, *, seed: int = 0, xp: Any = None, **kwargs: Any) -> TopSVD:
    """Top triplets for a fixed rank (int) or an energy fraction (float in ``(0, 1]``).

    Steps
    -----
    1. Integer ``rank``: :func:`top_svd` with ``k = rank``.
    2. Fraction ``f``: :func:`top_svd` with a trial ``k`` (16, doubling);
       ``k`` = the smallest count whose ``sum s_i^2 >= f ||W||_F^2``
       (relative slack ``1e-6``, as :func:`lip_agnostic.energy_rank`); when the
       trial ``k`` reaches ``min(q, l) / 2`` the exact SVD answers.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic.lowrank import truncate_top
    >>> truncate_top(np.diag([3.0, 1.0, 0.0]), 0.9).k
    1
    """
    xp = namespace(W, xp=xp)
    W = _as_big_weight(xp, W)
    m = min(int(W.shape[0]), int(W.shape[1]))
    rank = parse_rank(rank, m, name="rank", allow_auto=False)
    if not isinstance(rank, float):
        return top_svd(W, rank, seed=seed, xp=xp, **kwargs)
    f = rank
    trial = min(m, 16)
    while True:
        res = top_svd(W, trial, seed=seed, xp=xp, **kwargs)
        if res.total_energy == 0.0:
            return TopSVD(SVD(res.svd.U[:, :0], res.svd.s[:0], res.svd.V[:, :0]), 0, 0.0, res.iterations, True, res.method)
        e = np.cumsum(np.asarray([float(v) ** 2 for v in res.svd.s])) / res.total_energy
        hit = np.nonzero(e >= f - 1e-6)[0]
        if hit.size or trial == m:
            k = int(hit[0]) + 1 if hit.size else m
            f_svd = res.svd
            return TopSVD(SVD(f_svd.U[:, :k], f_svd.s[:k], f_svd.V[:, :k]), k, res.total_energy,
                          res.iterations, res.converged, res.method)
        trial = min(m, 2 * trial)


def low_rank_blocks(svd: SVD, /, *, block_rows: int = 2048, transpose: bool = False,
                    xp: Any = None) -> Iterator[Any]:
    """Row blocks of ``U diag(s) V^T`` (or, ``transpose=True``, of ``V diag(s) U^T``).

    Lets a caller stream a rank-``k`` reconstruction to disk with
    ``O(block_rows * l)`` memory.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic.principal import reduced_svd
    >>> f = reduced_svd(np.diag([2.0, 1.0]))
    >>> np.vstack(list(low_rank_blocks(f, block_rows=1))).tolist()
    [[2.0, 0.0], [0.0, 1.0]]
    """
    xp = namespace(svd.U, xp=xp)
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise OptionError(f"block_rows must be a positive integer; got {block_rows!r}")
    left, right = (svd.V, svd.U) if transpose else (svd.U, svd.V)
    left = left * svd.s
    right_t = xp.linalg.matrix_transpose(right)
    for start in range(0, int(left.shape[0]), block_rows):
        yield left[start:min(start + block_rows, int(left.shape[0])), :] @ right_t
