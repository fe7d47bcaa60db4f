"""The full LIP refinement on in-memory arrays."""

from __future__ import annotations

from typing import Any, Literal

from ._arrays import namespace
from .accumulator import LIPAccumulator, TargetScale
from .errors import DataError, OptionError, OptionTypeError
from .full_tail import check_tail, full_tail_refine
from .options import UNSET, BiasMode, bias_mode_from_fit_bias, parse_rank, validation_pair
from .rank import DEFAULT_CONFIDENCE, select_rank

__all__ = ["lip_refine", "DEFAULT_BATCH_ROWS"]

#: Rows per internal chunk: bounds temporary memory to ``O(chunk * r)``.
DEFAULT_BATCH_ROWS = 16384


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
    batch_rows: int = DEFAULT_BATCH_ROWS,
    tail: Literal["diagonal", "full"] = "diagonal",
    ridge: float | str | None = None,
    xp: Any = None,
    X_val: Any = UNSET,
    Y_val: Any = UNSET,
    fit_bias: bool = UNSET,
) -> Any:
    """LIP: keep the top-``rank`` principal components, refit the tail's singular values.

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

    ``X`` is streamed in chunks of ``batch_rows`` rows, so the extra memory is
    ``O(batch_rows * r)`` whatever ``n`` is; only ``X U_t`` and ``Y V_t`` are
    ever formed (integer labels gather rows of ``V_t`` instead of a matmul).

    Parameters
    ----------
    W : array, shape (q, l)
        Trained classifier weight: ``q`` features in, ``l`` classes out
        (PyTorch ``nn.Linear.weight.T``, Keras ``Dense.kernel``).
    X : array, shape (n, q)
        Penultimate features of the training samples (the layer's input).
    Y : array, shape (n,) of int, or (n, l)
        Class labels, or any target matrix: one-hot, soft labels (e.g. a
        noisy-label method's corrected labels), candidate sets.
    rank : int, float or "auto"
        ``k``, the components kept; a float in ``(0, 1]`` is an energy
        fraction; ``"auto"`` scores every ``k`` on ``validation`` (see
        :func:`lip_agnostic.select_rank`). ``k = min(q, l)`` returns ``W``.
        Read by :func:`lip_agnostic.options.parse_rank` (NumPy scalars and
        0-d arrays accepted, bools refused).
    bias : array, shape (l,), optional
        The layer's bias; with ``bias_mode="fit"`` the fit targets
        ``Y - 1 b^T``; ``rank="auto"`` scores the logits ``X W* + 1 b^T``.
    bias_mode : {"fit", "ignore"}
        ``"ignore"``: the paper's fit (targets ``Y``) even when ``bias`` is
        given (it is then used for scoring only). The old ``fit_bias=True``
        / ``False`` still works, with a ``FutureWarning``.
    target_scale : float or "logits"
        Multiply the targets by this (``1.0``: paper). ``"logits"`` fits the
        scale so that the targets best match the model's own logits.
    degenerate : {"zero", "keep"}
        What a tail component the data never excite (``||X u_i|| ~ 0``) gets:
        ``0`` (the minimum-norm least-squares solution) or its old ``s_i``.
    rtol : float, optional
        Degeneracy threshold on ``||X u_i||^2 / max_j ||X u_j||^2``
        (default: machine epsilon of the working dtype).
    validation : tuple (X_val, Y_val), optional
        Held-out data for ``rank="auto"`` (noisy labels are fine). The old
        ``X_val=, Y_val=`` keywords still work, with a ``FutureWarning``.
    min_gain : float
        ``k="auto"`` changes the weight only if the held-out score improves by
        more than this.
    confidence : float or None
        ``k="auto"`` changes the weight only if a one-sided sign test of the
        held-out wins vs losses against the unchanged model passes at this
        level (Bonferroni over the ranks scored); ``None`` turns it off.
    batch_rows : int
        Chunk size for streaming ``X``.
    tail : {"diagonal", "full"}
        ``"diagonal"`` (default): the paper's refit, steps 1-4 above.
        ``"full"`` — **beyond the paper** — keeps the same top-``k`` components
        but ridge-refits the whole complement, ``C`` in
        ``W_k + U_perp C V_perp^T``, with the bias refit when ``bias`` is given
        and ``bias_mode="fit"``: :func:`lip_agnostic.full_tail_refine`
        (which then also returns the refit bias).
    ridge : float or "auto", optional
        ``tail="full"`` only: the ridge ``lam`` (default ``"auto"``: chosen
        with ``k`` on ``validation`` behind the same guard).

    Returns
    -------
    array, shape (q, l)
        ``W*``, same library, device and dtype as ``W``. ``tail="full"`` with a
        ``bias`` and ``bias_mode="fit"``: the pair ``(W*, b*)``.

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
    bias_mode = bias_mode_from_fit_bias(bias_mode, fit_bias)
    X_val, Y_val = validation_pair(validation, X_val, Y_val)
    if check_tail(tail, ridge, degenerate):
        validation = None if X_val is None and Y_val is None else (X_val, Y_val)
        return full_tail_refine(W, X, Y, rank, bias=bias, bias_mode=bias_mode,
                                ridge="auto" if ridge is None else ridge, target_scale=target_scale,
                                validation=validation, min_gain=min_gain, confidence=confidence, rtol=rtol,
                                batch_rows=batch_rows, xp=xp)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise OptionError(f"batch_rows must be a positive integer; got {batch_rows!r}")
    n_x = int(X.shape[0]) if getattr(X, "ndim", 0) >= 1 else -1
    n_y = int(Y.shape[0]) if getattr(Y, "ndim", 0) >= 1 else -1
    if n_x != n_y:
        raise DataError(f"X and Y must have the same number of rows; got X {tuple(X.shape)} and Y {tuple(Y.shape)}")
    if n_x == 0:
        raise DataError("X and Y are empty: LIP needs at least one sample")
    rank = parse_rank(rank, name="rank")
    auto = rank == "auto"
    acc = LIPAccumulator(W, None if auto else rank, bias=bias, bias_mode=bias_mode, target_scale=target_scale,
                         degenerate=degenerate, rtol=rtol, xp=xp)
    for start in range(0, n_x, batch_rows):
        stop = min(start + batch_rows, n_x)
        acc.update(X[start:stop, ...], Y[start:stop, ...])
    if not auto:
        return acc.result()
    sel = select_rank(W, "auto", accumulator=acc, validation=(X_val, Y_val), min_gain=min_gain,
                      confidence=confidence, xp=xp)
    return acc.result(sel.k)
