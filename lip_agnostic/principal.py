"""Principal Subspace Preservation (PSP): the reduced SVD and rank-k truncation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._arrays import as_weight, check_fraction, count_true, device_of, namespace, to_float, working_dtype
from ._gram import gram_dtype, gram_svd
from .errors import DataError, OptionError, OptionTypeError
from .options import parse_rank

__all__ = ["SVD", "reduced_svd", "svd_route", "check_factors", "GRAM_MIN_WORK", "energy_rank", "resolve_rank", "project_principal"]


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
    float64 reference (both ~1e-8 relative; ``tests/test_core_principal.py``
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
    >>> from lip_agnostic.principal import reduced_svd
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
    :func:`lip_agnostic.lowrank.truncate_top` (randomized subspace iteration)
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
        from .lowrank import truncate_top  # lowrank builds on this module

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
