"""Array-namespace plumbing and input validation shared by the core.

Everything here works on any array-API array through ``array_api_compat``;
nothing imports a framework.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from .errors import DataError, DataTypeError, NonFiniteError, OptionError

__all__ = [
    "namespace",
    "device_of",
    "as_weight",
    "as_features",
    "as_targets",
    "check_finite",
    "check_product_finite",
    "working_dtype",
    "stats_dtype",
    "has_float64",
    "count_true",
    "to_float",
]


def namespace(*arrays: Any, xp: Any = None) -> Any:
    """Return the array namespace shared by ``arrays`` (or ``xp`` if given).

    Raises
    ------
    TypeError
        If the arrays come from different libraries, are not arrays, or the
        library has no ``linalg`` extension (SVD is needed everywhere here).
    """
    present = [a for a in arrays if a is not None]
    if xp is None:
        try:
            xp = array_api_compat.array_namespace(*present)
        except TypeError:
            kinds = sorted({type(a).__module__ + "." + type(a).__name__ for a in present})
            raise DataTypeError(
                "inputs must all be arrays of one array-API library; got " + ", ".join(kinds)
            ) from None
    linalg = getattr(xp, "linalg", None)
    if linalg is None or not hasattr(linalg, "svd"):
        raise DataTypeError(
            f"array library {getattr(xp, '__name__', xp)!r} has no 'linalg' extension "
            "(linalg.svd is required)"
        )
    return xp


def device_of(a: Any) -> Any:
    """The device an array lives on."""
    return array_api_compat.device(a)


def working_dtype(xp: Any, *dtypes: Any) -> Any:
    """The floating dtype computations run in: float64 if any input is
    float64, else float32 (float16/bfloat16/integers are promoted to float32)."""
    for dt in dtypes:
        if dt == xp.float64:
            return xp.float64
    return xp.float32


def has_float64(xp: Any, device: Any = None) -> bool:
    """Whether ``xp`` offers float64 on ``device``, asked without requesting it.

    Steps
    -----
    1. The namespace's own inventory, ``xp.__array_namespace_info__().dtypes()``
       (JAX without x64 lists no float64; asking it does not warn).
    2. Where it lists float64, a one-element float64 array is made with
       warnings recorded: a library that would silently hand back another
       dtype, warn, or raise (Apple MPS) has no usable float64.
    """
    import warnings

    if not hasattr(xp, "float64"):
        return False
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        try:
            kinds = info().dtypes(device=device, kind="real floating")
        except Exception:  # an inventory that does not know this device: fall through to the probe
            kinds = None
        if kinds is not None and "float64" not in kinds:
            return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            probe = xp.zeros((1,), dtype=xp.float64, device=device)
        except Exception:  # e.g. Apple MPS has no float64
            return False
    return not caught and probe.dtype == xp.float64


def count_true(xp: Any, mask: Any) -> int:
    """How many entries of a boolean array are true (summed in the namespace's default integer
    dtype: int64 where it has it, int32 for JAX without x64; no dtype is requested)."""
    return int(xp.sum(xp.astype(mask, _index_dtype(xp))))


def _index_dtype(xp: Any) -> Any:
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        try:
            return info().default_dtypes()["indexing"]
        except Exception:
            pass
    return xp.int64


def kth_smallest(xp: Any, D: Any, k: int) -> Any:
    """``(n, 1)``: the ``k``-th smallest entry of each row of ``D`` (1-based, counted with multiplicity).

    A selection, ``O(m)`` per row, where the library has one (NumPy/CuPy ``partition``,
    ``torch.kthvalue``, ``jax.lax.top_k``); otherwise a sort (the array API has no selection).
    """
    if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp):
        import importlib

        lib = importlib.import_module("cupy" if array_api_compat.is_cupy_namespace(xp) else "numpy")
        return lib.partition(D, k - 1, axis=1)[:, k - 1:k]
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.kthvalue(D, k, dim=1, keepdim=True).values
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return -jax.lax.top_k(-D, k)[0][:, k - 1:k]
    return xp.sort(D, axis=1)[:, k - 1:k]


def stats_dtype(xp: Any, device: Any) -> Any:
    """float64 for accumulated sums where the namespace and device have it (:func:`has_float64`), else float32."""
    return xp.float64 if has_float64(xp, device) else xp.float32


def to_float(xp: Any, a: Any, dtype: Any) -> Any:
    """Cast ``a`` to ``dtype`` (no copy when it already has it)."""
    if a.dtype == dtype:
        return a
    return xp.astype(a, dtype)


def check_finite(xp: Any, a: Any, name: str) -> None:
    """Raise :class:`~lip_agnostic.errors.NonFiniteError` if ``a`` holds NaN or Inf."""
    if not bool(xp.all(xp.isfinite(a))):
        n_bad = count_true(xp, ~xp.isfinite(a))
        raise NonFiniteError(f"{name} contains {n_bad} NaN/Inf value(s) (shape {tuple(a.shape)})")


def check_product_finite(xp: Any, P: Any, A: Any, name: str) -> None:
    """Raise :class:`~lip_agnostic.errors.NonFiniteError` if ``A`` holds NaN/Inf, checking ``P = A @ M`` first.

    A NaN or Inf anywhere in a row of ``A`` makes that row of ``A @ M``
    non-finite whenever ``M`` has at least one column (``inf * 0`` is NaN), so
    one pass over the smaller product stands in for a pass over ``A``; only
    when the product is non-finite is ``A`` itself scanned, for the message.
    """
    if int(P.shape[-1]) == 0:
        check_finite(xp, A, name)
        return
    if bool(xp.all(xp.isfinite(P))):
        return
    check_finite(xp, A, name)
    raise NonFiniteError(
        f"{name} (shape {tuple(A.shape)}) is finite but its product with the singular vectors "
        "overflowed the working dtype; rescale the features or pass float64"
    )


def as_weight(xp: Any, W: Any, name: str = "W") -> Any:
    """Validate a classifier weight ``(q, l)``: 2-D, real floating, finite."""
    if getattr(W, "ndim", None) != 2:
        raise DataError(
            f"{name} must be a 2-D weight matrix of shape (q features, l classes); "
            f"got shape {tuple(getattr(W, 'shape', ()))}"
        )
    if not xp.isdtype(W.dtype, "real floating"):
        raise DataTypeError(f"{name} must have a real floating dtype; got {W.dtype}")
    if 0 in tuple(W.shape):
        raise DataError(f"{name} must be non-empty; got shape {tuple(W.shape)}")
    check_finite(xp, W, name)
    return W


def as_features(xp: Any, X: Any, q: int, dtype: Any, name: str = "X", *, finite: bool = True) -> Any:
    """Validate features ``(n, q)`` against the weight's ``q``; cast to ``dtype``.

    ``finite=False`` skips the NaN/Inf pass: the caller then checks a product
    of ``X`` instead (:func:`check_product_finite`), which is cheaper.
    """
    if getattr(X, "ndim", None) != 2:
        raise DataError(f"{name} must be 2-D (n samples, q={q} features); got shape {tuple(X.shape)}")
    if X.shape[1] != q:
        raise DataError(
            f"{name} has {X.shape[1]} features (shape {tuple(X.shape)}) but the weight "
            f"expects q={q}"
        )
    if not (xp.isdtype(X.dtype, "real floating") or xp.isdtype(X.dtype, "integral")
            or X.dtype == xp.bool):
        raise DataTypeError(f"{name} must be real-valued; got dtype {X.dtype}")
    X = to_float(xp, X, dtype)
    if finite:
        check_finite(xp, X, name)
    return X


def as_targets(xp: Any, Y: Any, n: int, l: int, dtype: Any, name: str = "Y", *,
               finite: bool = True) -> tuple[Any, bool]:
    """Validate targets against ``n`` rows and ``l`` classes.

    Returns ``(Y, is_labels)``: integer labels ``(n,)`` are range-checked and
    returned as they are (``is_labels=True``); a target matrix ``(n, l)``
    (one-hot, soft, candidate sets, boolean) is cast to ``dtype``.
    """
    ndim = getattr(Y, "ndim", None)
    if ndim == 1:
        if not xp.isdtype(Y.dtype, "integral"):
            raise DataTypeError(
                f"1-D {name} must hold integer class labels; got dtype {Y.dtype} "
                f"(pass a (n, l) matrix for soft targets)"
            )
        if Y.shape[0] != n:
            raise DataError(f"X has {n} rows but {name} has {Y.shape[0]} labels (shape {tuple(Y.shape)})")
        if n:
            lo, hi = int(xp.min(Y)), int(xp.max(Y))
            if lo < 0 or hi >= l:
                raise DataError(
                    f"{name} labels must lie in [0, {l}) for a classifier with l={l} classes; "
                    f"got min {lo}, max {hi}"
                )
        return Y, True
    if ndim == 2:
        if Y.shape[0] != n:
            raise DataError(f"X has {n} rows but {name} has {Y.shape[0]} rows (shape {tuple(Y.shape)})")
        if Y.shape[1] != l:
            raise DataError(
                f"{name} has {Y.shape[1]} columns (shape {tuple(Y.shape)}) but the classifier has "
                f"l={l} classes"
            )
        if not (xp.isdtype(Y.dtype, "real floating") or xp.isdtype(Y.dtype, "integral")
                or Y.dtype == xp.bool):
            raise DataTypeError(f"{name} must be real-valued; got dtype {Y.dtype}")
        Y = to_float(xp, Y, dtype)
        if finite:
            check_finite(xp, Y, name)
        return Y, False
    raise DataError(
        f"{name} must be integer labels (n,) or a target matrix (n, l={l}); got shape "
        f"{tuple(getattr(Y, 'shape', ()))}"
    )


def check_fraction(f: Any, name: str = "energy") -> float:
    """Validate an energy fraction in ``(0, 1]``."""
    f = float(f)
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise OptionError(f"{name} fraction must lie in (0, 1]; got {f}")
    return f
