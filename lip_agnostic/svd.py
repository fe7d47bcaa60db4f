"""Singular value decompositions of a classifier weight: the one home of the SVD code.

* :func:`reduced_svd` — the reduced SVD ``W = U diag(s) V^T`` (LAPACK, or the
  Gram route for large float32 weights: the eigendecomposition of the small
  Gram side in float64, with an accuracy guard).
* :func:`top_svd` / :func:`truncate_top` — the top ``k`` triplets of a large
  weight by randomized subspace iteration, without a full SVD.
* :func:`energy_rank` / :func:`resolve_rank` — a rank from an energy fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ._arrays import (
    as_weight,
    check_fraction,
    count_true,
    device_of,
    has_float64,
    namespace,
    stats_dtype,
    to_float,
    working_dtype,
)
from .errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from .options import parse_rank

__all__ = [
    "SVD",
    "TopSVD",
    "reduced_svd",
    "top_svd",
    "truncate_top",
    "low_rank_blocks",
    "energy_rank",
    "resolve_rank",
    "check_factors",
    "svd_route",
    "gram_svd",
    "GRAM_MIN_WORK",
]


# ---------------------------------------------------------------- the Gram route

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


# ------------------------------------------------------------ the reduced SVD

#: Below this many multiply-adds (``q * l * min(q, l)``) the LAPACK SVD answers: it takes well
#: under a millisecond there and the Gram route has nothing to win.
GRAM_MIN_WORK = 1 << 20

SVD_METHODS = ("auto", "gram", "lapack")


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
    method : {"lapack", "gram", "given"}
        How the factors were computed (:func:`reduced_svd`); ``"given"`` for
        factors built by hand. Not part of equality.
    """

    U: Any
    s: Any
    V: Any
    method: str = field(default="given", compare=False)

    @property
    def rank_max(self) -> int:
        """``m = min(q, l)``, the number of components."""
        return int(self.s.shape[0])


def check_factors(svd: Any, shape: tuple[int, int], /) -> SVD:
    """Check that ``svd`` is an :class:`SVD` whose factors fit a weight of ``shape``; return it."""
    if not isinstance(svd, SVD):
        raise OptionTypeError(f"svd must be a lip_agnostic.SVD (from reduced_svd); got {type(svd).__name__}")
    q, l = int(shape[0]), int(shape[1])
    m = min(q, l)
    want = ((q, m), (m,), (l, m))
    got = (tuple(svd.U.shape), tuple(svd.s.shape), tuple(svd.V.shape))
    if got != want:
        raise DataError(f"svd factors (U, s, V) must have shapes {want} for W of shape {(q, l)}; got {got}")
    return svd


def svd_route(shape: tuple[int, int], dtype: Any, /, *, xp: Any, device: Any = None) -> str:
    """Which route :func:`reduced_svd` takes by default for a weight of this shape and dtype.

    ``"gram"`` when ``q * l * min(q, l) >= GRAM_MIN_WORK`` and the namespace has a float
    wider than the working dtype on ``device`` (float32 weights with float64 available),
    else ``"lapack"``. (The Gram route may still hand over to LAPACK once it has seen the
    spectrum, see :func:`reduced_svd`.)
    """
    q, l = int(shape[0]), int(shape[1])
    if q * l * min(q, l) < GRAM_MIN_WORK:
        return "lapack"
    work = working_dtype(xp, dtype)
    return "lapack" if gram_dtype(xp, work, device) is None else "gram"


def reduced_svd(W: Any, /, *, method: str = "auto", xp: Any = None) -> SVD:
    """Reduced SVD of a weight in its working dtype (float32 or float64).

    Steps
    -----
    1. Validate ``W`` (2-D, real floating, finite); promote half precision
       to float32 (the working dtype).
    2. Route (``method="auto"``): the **Gram route** when ``W`` is not tiny
       (``q * l * min(q, l) >= 2**20`` multiply-adds) and the namespace has a
       float wider than the working dtype (float64 for float32 weights);
       otherwise the LAPACK SVD, ``svd(W, full_matrices=False)``.
       ``method="lapack"`` forces LAPACK; ``method="gram"`` skips the size rule.
    3. Gram route: ``m = min(q, l)``; ``G`` = the ``m x m`` Gram matrix of the
       small side (``W W^T`` or ``W^T W``) in float64, built block by block;
       ``G = E diag(s^2) E^T`` (symmetric eigendecomposition); the other factor
       is ``W^T E diag(1/s)`` (or ``W E diag(1/s)``), in float64; all cast back
       to the working dtype.
    4. Accuracy guard: the Gram route squares the condition number. Its
       recovered factor loses orthonormality by about
       ``eps64 * (s_max / s_min)^2``, so it answers only when
       ``s_min >= sqrt(eps64 / eps32) * s_max`` (``4.3e-5``: condition number
       up to ~23,000), where that loss stays below float32's own rounding;
       below it (rank-deficient or nearly so: the tail LIP refits would get
       unreliable vectors) the LAPACK SVD answers. Float64 weights, and
       namespaces without float64 (Apple MPS, JAX without x64), always get
       LAPACK: there is no wider dtype to square the condition number in.

    Accuracy and cost: for float32 weights the Gram route's singular values,
    orthonormality and reconstruction match float32 LAPACK's against a
    float64 reference (both ~1e-8 relative; ``tests/test_principal.py``
    checks it). It costs two products of ``W`` with ``m`` columns in float64
    plus an ``m x m`` ``eigh``: 1.4-1.9x faster than LAPACK for square
    weights, 3-7x for aspect ratios 5-20 (one thread), and for a
    4096 x 32,000 head minutes instead of a quarter of an hour (see
    docs/BENCHMARKS.md). Singular vectors of (nearly) repeated singular
    values are, as with any SVD, only determined up to a rotation within
    their subspace; signs are arbitrary.

    Parameters
    ----------
    W : array, shape (q, l)
    method : {"auto", "gram", "lapack"}

    Returns
    -------
    SVD
        ``U (q, m)``, ``s (m,)`` descending, ``V (l, m)`` in the working dtype;
        ``.method`` says which route answered.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic.svd import reduced_svd
    >>> f = reduced_svd(np.diag([3.0, 2.0, 1.0]))
    >>> [round(float(v), 6) for v in f.s]
    [3.0, 2.0, 1.0]
    >>> rng = np.random.default_rng(0)
    >>> reduced_svd(rng.normal(size=(64, 512)).astype(np.float32)).method
    'gram'
    """
    xp = namespace(W, xp=xp)
    if method not in SVD_METHODS:
        raise OptionError(f"method must be one of {list(SVD_METHODS)}; got {method!r}")
    W = as_weight(xp, W)
    work = working_dtype(xp, W.dtype)
    route = method
    if method == "auto":
        route = svd_route(tuple(W.shape), W.dtype, xp=xp, device=device_of(W))
    if route == "gram":
        wide = gram_dtype(xp, work, device_of(W))
        if wide is not None:
            got = gram_svd(W, work=work, wide=wide, xp=xp)
            if got is not None:
                return SVD(U=got[0], s=got[1], V=got[2], method="gram")
    Wf = to_float(xp, W, work)
    U, s, Vh = xp.linalg.svd(Wf, full_matrices=False)
    return SVD(U=U, s=s, V=xp.linalg.matrix_transpose(Vh), method="lapack")


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
    return int(s.shape[0]) - count_true(xp, cum >= fraction - 1e-6) + 1


def resolve_rank(rank: Any, s: Any, /, *, name: str = "k", xp: Any = None) -> int:
    """Turn a fixed rank (int) or an energy fraction (float in (0, 1]) into ``k``.

    ``rank`` is read by :func:`lip_agnostic.options.parse_rank` (NumPy and
    0-d array scalars accepted, bools refused, integers checked against
    ``m = len(s)``); a fraction is resolved on the spectrum ``s`` by
    :func:`energy_rank`.
    """
    m = int(s.shape[0])
    rank = parse_rank(rank, m, name=name, allow_auto=False)
    if isinstance(rank, float):
        return energy_rank(s, rank, xp=xp)
    return rank


# ----------------------------------------------------- top-k, randomized

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
    >>> from lip_agnostic.svd import top_svd
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
    >>> from lip_agnostic.svd import truncate_top
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
    >>> from lip_agnostic.svd import reduced_svd
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
