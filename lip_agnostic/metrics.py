"""Subspace and spectrum metrics used by the paper's analysis."""

from __future__ import annotations

import math
from typing import Any

from ._arrays import as_weight, count_true, device_of, check_finite, namespace, to_float, working_dtype
from .errors import DataError, DataTypeError, OptionError

__all__ = [
    "orthonormal_basis",
    "principal_angles",
    "principal_subspace_angle",
    "subspace_similarity",
    "subspace_similarity_matrix",
    "grassmann_distance",
    "singular_spectrum",
    "effective_rank",
    "stable_rank",
    "davis_kahan_bound",
]


def _as_matrix(xp: Any, A: Any, name: str) -> Any:
    if getattr(A, "ndim", None) != 2:
        raise DataError(f"{name} must be 2-D (ambient dimension, columns); got shape {tuple(getattr(A, 'shape', ()))}")
    if not xp.isdtype(A.dtype, "real floating"):
        raise DataTypeError(f"{name} must have a real floating dtype; got {A.dtype}")
    check_finite(xp, A, name)
    return A


def orthonormal_basis(A: Any, /, *, rtol: float | None = None, xp: Any = None) -> Any:
    """Orthonormal basis of the column space of ``A`` (rank-revealing).

    Steps
    -----
    1. ``A = U diag(s) V^T``.
    2. Keep the columns of ``U`` with ``s_i > rtol * s_max`` (default
       ``rtol = max(shape) * eps``), so a raw, rank-deficient matrix gives
       a basis of its true column space.

    Examples
    --------
    >>> import numpy as np
    >>> orthonormal_basis(np.asarray([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]])).shape
    (3, 1)
    """
    xp = namespace(A, xp=xp)
    A = _as_matrix(xp, A, "A")
    A = to_float(xp, A, working_dtype(xp, A.dtype))
    if 0 in tuple(A.shape):
        return A[:, :0]
    U, s, _ = xp.linalg.svd(A, full_matrices=False)
    tol = (max(A.shape) * float(xp.finfo(A.dtype).eps)) if rtol is None else float(rtol)
    r = count_true(xp, s > tol * float(s[0])) if float(s[0]) > 0 else 0
    return U[:, :r]


def principal_angles(A: Any, B: Any, /, *, xp: Any = None) -> Any:
    """Principal angles between the column spaces of ``A`` and ``B``, ascending, in radians.

    Works for orthonormal bases and raw matrices alike (each is
    orthonormalized first), and is invariant to signs and rotations of the
    bases. Small angles are computed from sines (Knyazev & Argentati, 2002),
    so they are accurate even where ``arccos`` of a cosine near 1 is not.

    Steps
    -----
    1. ``Qa, Qb`` orthonormal bases (:func:`orthonormal_basis`); orient so
       ``Qb`` has the fewer columns ``p``.
    2. Cosines: singular values of ``Qa^T Qb``; sines: singular values of
       ``Qb - Qa (Qa^T Qb)``.
    3. ``theta_i = arcsin(sin_i)`` where ``cos_i^2 >= 1/2``, else ``arccos(cos_i)``.
    4. Return the ``p`` angles ascending, in ``[0, pi/2]``.

    Examples
    --------
    >>> import numpy as np
    >>> e = np.eye(3)
    >>> [round(float(t), 6) for t in principal_angles(e[:, :2], e[:, 1:])]
    [0.0, 1.570796]
    """
    xp = namespace(A, B, xp=xp)
    A = _as_matrix(xp, A, "A")
    B = _as_matrix(xp, B, "B")
    if A.shape[0] != B.shape[0]:
        raise DataError(f"A and B must live in the same space (same number of rows); got {tuple(A.shape)} and {tuple(B.shape)}")
    dt = working_dtype(xp, A.dtype, B.dtype)
    Qa = orthonormal_basis(to_float(xp, A, dt), xp=xp)
    Qb = orthonormal_basis(to_float(xp, B, dt), xp=xp)
    if Qa.shape[1] < Qb.shape[1]:
        Qa, Qb = Qb, Qa
    p = int(Qb.shape[1])
    if p == 0:
        return xp.zeros((0,), dtype=dt, device=device_of(A))
    C = xp.linalg.matrix_transpose(Qa) @ Qb
    cos = xp.linalg.svdvals(C)                      # descending -> angles ascending
    sin = xp.flip(xp.linalg.svdvals(Qb - Qa @ C))   # ascending -> angles ascending
    cos = xp.clip(cos, 0.0, 1.0)
    sin = xp.clip(sin, 0.0, 1.0)
    theta = xp.where(cos * cos >= 0.5, xp.asin(sin), xp.acos(cos))
    return theta


def principal_subspace_angle(W1: Any, W2: Any, /, k: int, *, side: str = "right", xp: Any = None) -> Any:
    """Largest principal angle between the top-``k`` singular subspaces of two weights.

    ``side="right"`` compares the class-side vectors ``V`` (the paper's
    choice for ``phi``), ``"left"`` the feature-side ``U``. Returns a 0-d
    array in radians; ``k = 0`` gives 0.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> float(principal_subspace_angle(W, 2 * W, 2))
    0.0
    """
    xp = namespace(W1, W2, xp=xp)
    W1, W2 = as_weight(xp, W1, "W1"), as_weight(xp, W2, "W2")
    if tuple(W1.shape) != tuple(W2.shape):
        raise DataError(f"W1 and W2 must have the same shape; got {tuple(W1.shape)} and {tuple(W2.shape)}")
    if side not in ("left", "right"):
        raise OptionError(f"side must be 'left' or 'right'; got {side!r}")
    m = min(W1.shape)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= m:
        raise OptionError(f"k must be an integer in [0, {m}]; got {k!r}")
    dt = working_dtype(xp, W1.dtype, W2.dtype)
    if k == 0:
        return xp.asarray(0.0, dtype=dt, device=device_of(W1))
    bases = []
    for W in (W1, W2):
        U, _, Vh = xp.linalg.svd(to_float(xp, W, dt), full_matrices=False)
        bases.append(U[:, :k] if side == "left" else xp.linalg.matrix_transpose(Vh[:k, :]))
    return xp.max(principal_angles(bases[0], bases[1], xp=xp))


def subspace_similarity(V1: Any, V2: Any, /, i: int, j: int, *, xp: Any = None) -> Any:
    """The paper's normalized subspace similarity ``phi``, in ``[0, 1]``.

    Steps
    -----
    1. ``phi(V1, V2, i, j) = ||V1[:, :i]^T V2[:, :j]||_F^2 / min(i, j)``.

    ``V1`` and ``V2`` are matrices with orthonormal columns (e.g. right
    singular vectors); 1 means the smaller subspace lies in the larger one.

    Examples
    --------
    >>> import numpy as np
    >>> e = np.eye(4)
    >>> float(subspace_similarity(e, e, 2, 3))
    1.0
    """
    xp = namespace(V1, V2, xp=xp)
    V1, V2 = _as_matrix(xp, V1, "V1"), _as_matrix(xp, V2, "V2")
    if V1.shape[0] != V2.shape[0]:
        raise DataError(f"V1 and V2 must have the same number of rows; got {tuple(V1.shape)} and {tuple(V2.shape)}")
    for name, val, lim in (("i", i, V1.shape[1]), ("j", j, V2.shape[1])):
        if isinstance(val, bool) or not isinstance(val, int) or not 1 <= val <= lim:
            raise OptionError(f"{name} must be an integer in [1, {lim}]; got {val!r}")
    dt = working_dtype(xp, V1.dtype, V2.dtype)
    C = xp.linalg.matrix_transpose(to_float(xp, V1[:, :i], dt)) @ to_float(xp, V2[:, :j], dt)
    return xp.sum(C * C) / min(i, j)


def subspace_similarity_matrix(V1: Any, V2: Any, /, *, xp: Any = None) -> Any:
    """``phi(V1, V2, i, j)`` for every ``i, j`` at once, shape ``(a, b)``.

    Entry ``[i-1, j-1]`` is ``phi(V1, V2, i, j)``: one product ``V1^T V2`` and
    two cumulative sums (the heatmaps of the paper).
    """
    xp = namespace(V1, V2, xp=xp)
    V1, V2 = _as_matrix(xp, V1, "V1"), _as_matrix(xp, V2, "V2")
    if V1.shape[0] != V2.shape[0]:
        raise DataError(f"V1 and V2 must have the same number of rows; got {tuple(V1.shape)} and {tuple(V2.shape)}")
    dt = working_dtype(xp, V1.dtype, V2.dtype)
    C = xp.linalg.matrix_transpose(to_float(xp, V1, dt)) @ to_float(xp, V2, dt)
    S = xp.cumulative_sum(xp.cumulative_sum(C * C, axis=0), axis=1)
    a, b = int(C.shape[0]), int(C.shape[1])
    ii = xp.reshape(xp.arange(1, a + 1, dtype=dt, device=device_of(C)), (a, 1))
    jj = xp.reshape(xp.arange(1, b + 1, dtype=dt, device=device_of(C)), (1, b))
    return S / xp.minimum(ii, jj)


def grassmann_distance(A: Any, B: Any, /, *, xp: Any = None) -> Any:
    """Geodesic distance on the Grassmannian: ``sqrt(sum_i theta_i^2)`` (radians).

    Examples
    --------
    >>> import numpy as np
    >>> e = np.eye(3)
    >>> round(float(grassmann_distance(e[:, :1], e[:, 1:2])), 6)
    1.570796
    """
    theta = principal_angles(A, B, xp=xp)
    xp = namespace(theta)
    return xp.sqrt(xp.sum(theta * theta))


def singular_spectrum(W: Any, /, *, xp: Any = None) -> Any:
    """Singular values of ``W``, descending, in its working dtype.

    Examples
    --------
    >>> import numpy as np
    >>> singular_spectrum(np.diag([1.0, 3.0])).tolist()
    [3.0, 1.0]
    """
    xp = namespace(W, xp=xp)
    W = as_weight(xp, W)
    return xp.linalg.svdvals(to_float(xp, W, working_dtype(xp, W.dtype)))


def _spectrum_of(xp: Any, W: Any) -> Any:
    if getattr(W, "ndim", None) == 1:
        if not xp.isdtype(W.dtype, "real floating"):
            raise DataTypeError(f"a spectrum must have a real floating dtype; got {W.dtype}")
        check_finite(xp, W, "spectrum")
        if bool(xp.any(W < 0)):
            raise DataError("a spectrum (1-D input) must be non-negative singular values")
        return W
    return singular_spectrum(W, xp=xp)


def effective_rank(W: Any, /, *, xp: Any = None) -> Any:
    """Entropy effective rank (Roy & Vetterli, 2007) of a matrix or a spectrum.

    The paper mentions effective rank without a definition; this is Roy and
    Vetterli's, in ``[1, m]`` (0 for a zero matrix).

    Steps
    -----
    1. ``s`` = singular values (a 1-D input is taken as the spectrum).
    2. ``p_i = s_i / sum_j s_j``.
    3. ``erank = exp(-sum_i p_i log p_i)``, with ``0 log 0 = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(effective_rank(np.eye(5))), 6)
    5.0
    """
    xp = namespace(W, xp=xp)
    s = _spectrum_of(xp, W)
    total = xp.sum(s)
    if float(total) == 0.0:
        return xp.asarray(0.0, dtype=s.dtype, device=device_of(s))
    p = s / total
    safe = xp.where(p > 0, p, xp.ones_like(p))
    return xp.exp(-xp.sum(p * xp.log(safe)))


def stable_rank(W: Any, /, *, xp: Any = None) -> Any:
    """Stable rank ``||W||_F^2 / ||W||_2^2 = sum_i s_i^2 / s_max^2`` (0 for a zero matrix).

    Examples
    --------
    >>> import numpy as np
    >>> float(stable_rank(np.diag([2.0, 2.0, 0.0])))
    2.0
    """
    xp = namespace(W, xp=xp)
    s = _spectrum_of(xp, W)
    top = xp.max(s)
    if float(top) == 0.0:
        return xp.asarray(0.0, dtype=s.dtype, device=device_of(s))
    return xp.sum(s * s) / (top * top)


def davis_kahan_bound(
    X: Any,
    /,
    noise_rate: float,
    *,
    n_classes: int,
    gap: float,
    ridge: float = 0.0,
    singular_values: Any = None,
    xp: Any = None,
) -> float:
    """The paper's bound on the principal-subspace angle under label noise.

    For a ridge-regularized linear model ``W = (X^T X + lambda I)^{-1} X^T Y``
    trained on one-hot labels of which a fraction ``p`` is flipped,

    ``sin(theta) <= sigma_max(X) sqrt(n l) / (delta (lambda_min(X^T X) + lambda)) * sqrt(p)``

    (Davis–Kahan / Wedin). Assumptions: the noise changes at most ``p n``
    rows of ``Y``, each by a vector of norm at most ``sqrt(2)`` (absorbed in
    the constant); ``delta`` is the singular-value gap of the clean weight at
    the subspace's boundary (``s_k - s_{k+1}``); the bound is vacuous when it
    exceeds 1. Returns the right-hand side as a float.

    Steps
    -----
    1. ``sigma_max(X)``, ``lambda_min(X^T X) = sigma_min(X)^2`` (0 when ``n < q``);
       pass ``singular_values`` (those of ``X``, e.g. from an earlier
       ``svdvals``) to skip the SVD when evaluating many rates or ridges.
    2. Evaluate the formula above.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(4)
    >>> round(davis_kahan_bound(X, 0.25, n_classes=2, gap=4.0, ridge=0.0), 6)
    0.353553
    """
    xp = namespace(X, xp=xp)
    X = _as_matrix(xp, X, "X")
    p = float(noise_rate)
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise OptionError(f"noise_rate must lie in [0, 1]; got {noise_rate}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise OptionError(f"n_classes must be a positive integer; got {n_classes!r}")
    if not float(gap) > 0.0:
        raise OptionError(f"gap (delta) must be positive; got {gap}")
    if not float(ridge) >= 0.0:
        raise OptionError(f"ridge (lambda) must be non-negative; got {ridge}")
    n, q = int(X.shape[0]), int(X.shape[1])
    if singular_values is None:
        s = xp.linalg.svdvals(to_float(xp, X, working_dtype(xp, X.dtype)))
    else:
        s = singular_values
        if getattr(s, "shape", None) != (min(n, q),):
            raise DataError(f"singular_values must have shape ({min(n, q)},) for X of shape {(n, q)}; "
                             f"got {tuple(getattr(s, 'shape', ()))}")
    lam_min = float(s[-1]) ** 2 if n >= q else 0.0
    denom = float(gap) * (lam_min + float(ridge))
    if denom == 0.0:
        return math.inf
    return float(s[0]) * math.sqrt(n * n_classes) / denom * math.sqrt(p)

