"""The method on in-memory arrays: thin calls of the one driver (:func:`lip_agnostic.refine_batches`).

* :func:`lip_refine` — the paper's LIP, exactly (``tail="diagonal"``); returns ``W*``.
* :func:`full_tail_refine` — beyond the paper: the full-tail ridge refit; returns ``(W*, b*)``.
* :func:`select_rank` — which ``k`` a rank option stands for (and, for ``"auto"``, the
  paper's refit scored on held-out data behind the guard).
"""

from __future__ import annotations

from typing import Any, Iterator, Literal, Sequence

from ._arrays import namespace
from .driver import refine_batches
from .errors import DataError, OptionError, OptionTypeError
from .options import DEFAULT_CONFIDENCE, BiasMode, LIPOptions, TargetScale, parse_rank
from .repairs import LIPAccumulator
from .selection import Selection
from .svd import SVD, check_factors, reduced_svd

__all__ = ["lip_refine", "full_tail_refine", "select_rank", "DEFAULT_BATCH_ROWS"]

#: Rows per internal chunk: bounds temporary memory to ``O(chunk * r)``.
DEFAULT_BATCH_ROWS = 16384


def _rows(A: Any) -> int:
    return int(A.shape[0]) if getattr(A, "ndim", 0) >= 1 else -1


def _pair(X: Any, Y: Any, what: str) -> None:
    """``X`` and ``Y`` have the same (non-zero) number of rows, said with the shapes the caller passed."""
    if getattr(X, "ndim", None) is None or getattr(Y, "ndim", None) is None:
        raise DataError(f"{what} must be arrays; got {type(X).__name__} and {type(Y).__name__}")
    if _rows(X) != _rows(Y):
        raise DataError(f"{what}: X and Y must have the same number of rows; got X {tuple(X.shape)} "
                        f"and Y {tuple(Y.shape)}")
    if _rows(X) == 0:
        raise DataError(f"{what} are empty: the refit needs at least one sample")


def _chunks(X: Any, Y: Any, rows: int) -> Iterator[tuple[Any, Any]]:
    n = _rows(X)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        yield X[start:stop, ...], Y[start:stop, ...]


def _validation(validation: Any, rows: int) -> list[tuple[Any, Any]] | None:
    if validation is None:
        return None
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise OptionTypeError(f"validation must be a pair (X_val, Y_val) of arrays; got {type(validation).__name__}")
    X_val, Y_val = validation
    _pair(X_val, Y_val, "validation=(X_val, Y_val)")
    return list(_chunks(X_val, Y_val, rows))


def _batch_rows(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"batch_rows must be a positive integer; got {value!r}")
    return value


def lip_refine(
    W: Any,
    X: Any,
    Y: Any,
    rank: int | float | str,
    /,
    *,
    bias: Any = None,
    bias_mode: BiasMode = "fit",
    target_scale: TargetScale = 1.0,
    degenerate: Literal["zero", "keep"] = "zero",
    rtol: float | None = None,
    validation: tuple[Any, Any] | None = None,
    min_gain: float = 0.0,
    confidence: float | None = DEFAULT_CONFIDENCE,
    holdout: float = 0.2,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    xp: Any = None,
) -> Any:
    """The paper's LIP: keep the top-``rank`` principal components, refit the tail's singular values.

    Steps
    -----
    1. Reduced SVD ``W = U diag(s) V^T`` (``U`` ``(q, m)``, ``V`` ``(l, m)``).
    2. Principal Subspace Preservation: ``W_k = U[:, :k] diag(s[:k]) V[:, :k]^T``.
    3. Label Ambiguity Purification: for each tail component ``i >= k``,
       with targets ``T = c Y - 1 b^T`` (paper: ``c = 1``, ``b = 0``),
       ``sigma_i = <X u_i, T v_i> / ||X u_i||^2`` — the exact minimizer of
       ``|| X (W_k + U_t diag(sigma) V_t^T) - T ||_F^2`` over diagonal
       ``sigma``, because ``W_k v_i = 0`` for every tail ``i``.
    4. Return ``W* = W_k + sum_{i>=k} sigma_i u_i v_i^T`` in ``W``'s dtype.

    ``X`` is streamed in chunks of ``batch_rows`` rows through
    :func:`lip_agnostic.refine_batches` with ``tail="diagonal"``, so the extra
    memory is ``O(batch_rows * r)`` whatever ``n`` is.

    Parameters
    ----------
    W : array, shape (q, l)
        Trained classifier weight: ``q`` features in, ``l`` classes out
        (PyTorch ``nn.Linear.weight.T``, Keras ``Dense.kernel``).
    X : array, shape (n, q)
        Penultimate features of the training samples (the layer's input).
    Y : array, shape (n,) of int, or (n, l)
        Class labels, or any target matrix: one-hot, soft labels, candidate sets.
    rank : int, float or "auto"
        ``k``, the components kept; a float in ``(0, 1]`` is an energy
        fraction; ``"auto"`` scores every ``k`` on ``validation`` (or on a
        ``holdout`` share of the rows) behind the sign-test guard.
        ``k = min(q, l)`` returns ``W``.
    bias : array, shape (l,), optional
        The layer's bias; with ``bias_mode="fit"`` the fit targets ``Y - 1 b^T``;
        held-out scoring uses the logits ``X W* + 1 b^T``. It is never rewritten.
    bias_mode : {"fit", "ignore"}
        ``"ignore"``: the paper's fit (targets ``Y``) even when ``bias`` is given.
    target_scale : float or "logits"
        Multiply the targets by this (``1.0``: paper). ``"logits"`` fits the
        scale so that the targets best match the model's own logits.
    degenerate : {"zero", "keep"}
        What a tail component the data never excite gets: ``0`` (the
        minimum-norm least-squares solution) or its old ``s_i``.
    rtol : float, optional
        Degeneracy threshold on ``||X u_i||^2 / max_j ||X u_j||^2``.
    validation : tuple (X_val, Y_val), optional
        Held-out data for ``rank="auto"`` (noisy labels are fine).
    min_gain, confidence
        ``rank="auto"`` only: the held-out gain a change must exceed, and the
        sign test's level (Bonferroni over the ranks; ``None`` turns it off).
    holdout : float
        ``rank="auto"`` without ``validation``: the share of rows held out.
    batch_rows : int
        Chunk size for streaming ``X``.

    Returns
    -------
    array, shape (q, l)
        ``W*``, same library, device and dtype as ``W``.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import lip_refine
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(16, 5))
    >>> X = rng.normal(size=(200, 16)); y = rng.integers(0, 5, 200)
    >>> lip_refine(W, X, y, 2).shape
    (16, 5)
    """
    xp = namespace(W, X, Y, bias, xp=xp)
    rows = _batch_rows(batch_rows)
    options = LIPOptions(rank=rank, tail="diagonal", bias_mode=bias_mode, target_scale=target_scale,
                         degenerate=degenerate, rtol=rtol, min_gain=min_gain, confidence=confidence,
                         holdout=holdout)
    _pair(X, Y, "X and Y")
    return refine_batches(W, _chunks(X, Y, rows), validation=_validation(validation, rows), bias=bias,
                          options=options, xp=xp).weight


def full_tail_refine(
    W: Any,
    X: Any,
    Y: Any,
    rank: int | float | str,
    /,
    *,
    bias: Any = None,
    bias_mode: BiasMode = "fit",
    ridge: float | str = "auto",
    target_scale: TargetScale = 1.0,
    validation: tuple[Any, Any] | None = None,
    min_gain: float = 0.0,
    confidence: float | None = DEFAULT_CONFIDENCE,
    holdout: float = 0.2,
    rtol: float | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    xp: Any = None,
) -> tuple[Any, Any]:
    """Full-tail LIP (**beyond the paper**): keep the top-``k`` components, ridge-refit the whole complement.

    Steps
    -----
    1. ``W = U diag(s) V^T``; keep ``W_k = U_k diag(s_k) V_k^T`` exactly (PSP, as the paper).
    2. Stream ``(X, Y)`` into the sufficient statistics ``X^T X``, ``X^T Y``,
       column sums, ``||Y||^2``, ``n`` (:class:`lip_agnostic.FullTailAccumulator`).
    3. Targets ``T = c Y``; with a bias and ``bias_mode="fit"``, ``X`` and ``T``
       are centred and the bias is refit as ``b* = mean(T) - mean(X) W*``.
    4. ``C = (U_perp^T Xc^T Xc U_perp + lam I)^-1 U_perp^T Xc^T Tc V_perp``,
       the minimizer of ``||Xc (W_k + U_perp C V_perp^T) - Tc||^2 + lam ||C||^2``.
    5. ``W* = W_k + U_perp C V_perp^T``. ``rank="auto"`` scores every
       ``(k, lam)`` on held-out data behind the guard (unchanged when none
       passes); a fixed rank with ``ridge="auto"`` takes the best ridge.

    Parameters
    ----------
    W, X, Y, bias, bias_mode, target_scale, validation, min_gain, confidence, holdout, rtol, batch_rows
        As in :func:`lip_refine`.
    rank : int, float in (0, 1], or "auto"
        Components kept; ``0`` is a ridge head, ``min(q, l)`` returns ``W``.
    ridge : float >= 0 or "auto"
        ``lam`` (absolute, in the units of ``||X C||^2``); ``"auto"`` scores
        ``DEFAULT_RIDGE_FACTORS * trace(Xc^T Xc) / q`` on held-out data.

    Returns
    -------
    (W*, b*)
        ``W*`` in ``W``'s library, device and dtype; ``b*`` the refit bias
        (``bias`` given with ``bias_mode="fit"`` and the layer changed), else None.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import full_tail_refine
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(16, 5))
    >>> X = rng.normal(size=(200, 16)); y = rng.integers(0, 5, 200)
    >>> W_star, b_star = full_tail_refine(W, X, y, 2, ridge=1.0)
    >>> W_star.shape, b_star
    ((16, 5), None)
    """
    xp = namespace(W, X, Y, bias, xp=xp)
    rows = _batch_rows(batch_rows)
    options = LIPOptions(rank=rank, tail="full", ridge=ridge, bias_mode=bias_mode, target_scale=target_scale,
                         rtol=rtol, min_gain=min_gain, confidence=confidence, holdout=holdout)
    _pair(X, Y, "X and Y")
    res = refine_batches(W, _chunks(X, Y, rows), validation=_validation(validation, rows), bias=bias,
                         options=options, xp=xp)
    return res.weight, res.bias


def select_rank(
    W: Any,
    /,
    rank: int | float | str = "auto",
    *,
    accumulator: LIPAccumulator | None = None,
    validation: tuple[Any, Any] | None = None,
    min_gain: float = 0.0,
    confidence: float | None = DEFAULT_CONFIDENCE,
    ranks: Sequence[int] | None = None,
    svd: SVD | None = None,
    xp: Any = None,
) -> Selection:
    """Which ``k`` a rank option stands for, for the paper's refit.

    Strategies
    ----------
    1. ``rank`` an int: that ``k`` (validated to ``[0, min(q, l)]``).
    2. ``rank`` a float in ``(0, 1]``: the smallest ``k`` whose components hold
       that fraction of ``||W||_F^2`` (:func:`lip_agnostic.svd.energy_rank`).
    3. ``rank="auto"``: every candidate ``k`` (or ``ranks``) is scored on
       held-out ``validation=(X_val, Y_val)`` with the tail refit of a fitted
       ``accumulator`` (built with ``rank=None``); the guard of
       :meth:`lip_agnostic.selection.HeldOutScorer.best` picks one or keeps
       ``k = m``.

    Factors: an energy fraction needs the spectrum, taken from ``svd``, else
    from ``accumulator.svd``, else from one :func:`lip_agnostic.reduced_svd`.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import select_rank
    >>> select_rank(np.diag([3.0, 1.0, 0.1]), 0.85).k
    1
    """
    xp = namespace(W, xp=xp)
    options = LIPOptions(rank=rank, tail="diagonal", min_gain=min_gain, confidence=confidence)
    shape = (int(W.shape[0]), int(W.shape[1]))
    if options.rank == "auto":
        if accumulator is None:
            raise OptionError("rank='auto' needs a fitted accumulator (LIPAccumulator(W).update(X, Y))")
        if not isinstance(accumulator, LIPAccumulator):
            raise OptionTypeError(f"accumulator must be a LIPAccumulator; got {type(accumulator).__name__}")
        if accumulator.shape != shape:
            raise DataError(f"accumulator was built for a weight of shape {accumulator.shape}; W has shape {shape}")
        if validation is None:
            raise OptionError("rank='auto' needs held-out data: pass validation=(X_val, Y_val)")
        scorer = accumulator.scorer(None, None, ranks)
        for X_val, Y_val in _validation(validation, DEFAULT_BATCH_ROWS):
            scorer.update(X_val, Y_val)
        return scorer.best(options.min_gain, options.confidence)
    m = min(shape)
    if isinstance(options.rank, float):
        if svd is not None:
            f = check_factors(svd, shape)
        elif accumulator is not None and accumulator.shape == shape:
            f = accumulator.svd
        else:
            f = reduced_svd(W, xp=xp)
        probe = LIPAccumulator(W, options.rank, svd=f, xp=xp)
        return probe.fixed_selection(options)
    return Selection(k=parse_rank(options.rank, m, name="rank"), m=m, strategy="fixed")
