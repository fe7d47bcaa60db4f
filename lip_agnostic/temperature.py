"""One temperature for a classifier's logits, fit on held-out data (beyond the paper).

A ridge or relabelled head scores the classes on an arbitrary scale (a ridge head fit
to one-hot targets flattens its softmax), so its probabilities are not usable as they
are. One scalar ``T`` multiplies the logits, ``p = softmax(T z)``, and is chosen to
minimise the negative log-likelihood of held-out labels (Guo et al., 2017, with the
temperature written as a multiplier). ``T`` never changes the argmax, so accuracy is
untouched; only the confidence moves.

How the fit works
-----------------
1. ``NLL(T) = mean_i [ logsumexp_j(T z_ij) - T z_i,y_i ]`` is convex in ``T`` (a
   log-sum-exp of functions linear in ``T``, minus a linear term).
2. Its derivative ``g(T) = mean_i [ E_p[z_i] - z_i,y_i ]`` (``p = softmax(T z_i)``)
   is non-decreasing and its second derivative is ``mean_i Var_p[z_i] >= 0``.
3. ``g`` is bracketed on ``[T_lo, T_hi]``: if ``g(T_lo) >= 0`` the minimum is at
   ``T_lo``, if ``g(T_hi) <= 0`` at ``T_hi``; otherwise safeguarded Newton steps
   (a step leaving the bracket is replaced by a bisection in ``log T``) shrink the
   bracket until ``|g| * T`` or its width falls below the tolerance.
4. The expected calibration error (15 equal-width bins of the top probability,
   ``sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|``) and the NLL are
   reported for ``T = 1`` and the fitted ``T``.

Every quantity is a sum over rows divided by ``n``, so rows split across processes
fit the same ``T`` as one process would: pass ``reduce`` (an all-reduce of a vector
of sums), called once per evaluation, in the same order on every process.

Every function takes arrays positional-only and ``*, xp=None``; sums run in float64
where the device has it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._arrays import count_true, device_of, namespace, stats_dtype, to_float
from .errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError

__all__ = [
    "HeadCalibration",
    "calibrate_head",
    "TemperatureFit",
    "fit_temperature",
    "negative_log_likelihood",
    "expected_calibration_error",
    "softmax",
]

#: Bins of :func:`expected_calibration_error` (Guo et al., 2017).
ECE_BINS = 15
#: Adds a 1-D vector of sums across processes (``torch.distributed.all_reduce`` and the like); every
#: process calls it the same number of times, in the same order.
Reduce = Callable[[Any], Any]


def _check_logits_labels(xp: Any, logits: Any, labels: Any, what: str = "logits", *,
                         allow_empty: bool = False) -> tuple[Any, Any]:
    if getattr(logits, "ndim", None) != 2:
        raise DataError(f"{what} must be 2-D (n samples, l classes); got shape "
                        f"{tuple(getattr(logits, 'shape', ()))}")
    if not xp.isdtype(logits.dtype, "real floating"):
        raise DataTypeError(f"{what} must have a real floating dtype; got {logits.dtype}")
    n, l = int(logits.shape[0]), int(logits.shape[1])
    if (n == 0 and not allow_empty) or l < 2:
        raise DataError(f"{what} must have at least one row and two classes; got shape {(n, l)}")
    if getattr(labels, "ndim", None) != 1 or not xp.isdtype(labels.dtype, "integral"):
        raise DataTypeError(f"labels must be 1-D integer class labels; got shape "
                            f"{tuple(getattr(labels, 'shape', ()))}, dtype {getattr(labels, 'dtype', None)}")
    if int(labels.shape[0]) != n:
        raise DataError(f"{what} has {n} rows but labels has {int(labels.shape[0])}")
    if n == 0:
        return logits, labels
    lo, hi = int(xp.min(labels)), int(xp.max(labels))
    if lo < 0 or hi >= l:
        raise DataError(f"labels must lie in [0, {l}) for {l} classes; got min {lo}, max {hi}")
    if not bool(xp.all(xp.isfinite(logits))):
        raise NonFiniteError(f"{what} contains {count_true(xp, ~xp.isfinite(logits))} NaN/Inf value(s)")
    return logits, labels


def _picked(xp: Any, Z: Any, labels: Any) -> Any:
    """``Z[i, labels[i]]`` without fancy indexing (a one-hot mask works in every namespace)."""
    classes = xp.astype(xp.arange(int(Z.shape[1]), device=device_of(Z)), labels.dtype)
    return xp.sum(xp.where(labels[:, None] == classes[None, :], Z, xp.zeros_like(Z)), axis=1)


def softmax(logits: Any, /, *, scale: float = 1.0, xp: Any = None) -> Any:
    """Row-wise ``softmax(scale * logits)``, computed stably (the row maximum is subtracted).

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    xp = namespace(logits, xp=xp)
    Z = logits * scale
    Z = Z - xp.max(Z, axis=1, keepdims=True)
    E = xp.exp(Z)
    return E / xp.sum(E, axis=1, keepdims=True)


def _sums(xp: Any, Z: Any, labels: Any, T: float) -> Any:
    """``[sum_i NLL_i, sum_i g_i, sum_i h_i]`` at ``T`` (steps 1-2), a vector a reduction can add across processes."""
    A = Z * T
    mx = xp.max(A, axis=1, keepdims=True)
    E = xp.exp(A - mx)
    s = xp.sum(E, axis=1, keepdims=True)
    P = E / s
    lse = xp.log(s[:, 0]) + mx[:, 0]
    zy = _picked(xp, Z, labels)
    ez = xp.sum(P * Z, axis=1)
    ez2 = xp.sum(P * Z * Z, axis=1)
    return xp.stack([xp.sum(lse - T * zy), xp.sum(ez - zy), xp.sum(ez2 - ez * ez)])


class _Objective:
    """``NLL(T)`` and its first two derivatives, means over every row (of every process, with ``reduce``)."""

    def __init__(self, xp: Any, Z: Any, labels: Any, reduce: Reduce | None) -> None:
        self.xp, self.Z, self.labels = xp, Z, labels
        self.reduce = reduce if reduce is not None else (lambda sums: sums)
        count = xp.asarray([float(Z.shape[0])], dtype=Z.dtype, device=device_of(Z))
        self.n = int(round(float(self.reduce(count)[0])))
        if self.n == 0:
            raise DataError("no held-out rows to fit a temperature on (in any process)")

    def __call__(self, T: float) -> tuple[float, float, float]:
        s = self.reduce(_sums(self.xp, self.Z, self.labels, T))
        nll, g, h = (float(s[i]) / self.n for i in range(3))
        return nll, g, max(h, 0.0)

    def ece(self, T: float, bins: int = ECE_BINS) -> float:
        return float(self.xp.sum(_ece_gaps(self.xp, softmax(self.Z, scale=T, xp=self.xp), self.labels, bins,
                                           self.reduce))) / self.n


def _ece_gaps(xp: Any, P: Any, labels: Any, bins: int, reduce: Reduce | None = None) -> Any:
    """Per-bin ``|sum hits - sum confidences|`` (:func:`expected_calibration_error`, steps 1-3)."""
    sdt = P.dtype
    conf = xp.max(P, axis=1)
    hit = xp.astype(xp.astype(xp.argmax(P, axis=1), labels.dtype) == labels, sdt)
    # bin b holds (b / bins, (b + 1) / bins]; the first bin also takes c = 0
    upper = xp.astype(xp.arange(1, bins + 1, device=device_of(P)), sdt) / bins
    lower = upper - 1.0 / bins
    M = xp.astype((conf[:, None] > lower[None, :]) & (conf[:, None] <= upper[None, :]), sdt)
    M = xp.concat([xp.maximum(M[:, :1], xp.astype(conf[:, None] <= 0.0, sdt)), M[:, 1:]], axis=1)
    sums = xp.concat([xp.sum(M * hit[:, None], axis=0), xp.sum(M * conf[:, None], axis=0)])
    if reduce is not None:
        sums = reduce(sums)
    return xp.abs(sums[:bins] - sums[bins:])


def negative_log_likelihood(logits: Any, labels: Any, /, *, scale: float = 1.0, xp: Any = None) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` under ``softmax(scale * logits)``.

    Examples
    --------
    >>> import numpy as np
    >>> round(negative_log_likelihood(np.zeros((4, 2)), np.array([0, 1, 0, 1])), 4)
    0.6931
    """
    xp = namespace(logits, labels, xp=xp)
    _check_logits_labels(xp, logits, labels)
    Z = to_float(xp, logits, stats_dtype(xp, device_of(logits)))
    return _Objective(xp, Z, labels, None)(float(scale))[0]


def expected_calibration_error(probs: Any, labels: Any, /, *, bins: int = ECE_BINS, xp: Any = None) -> float:
    """Expected calibration error of the top probability, ``bins`` equal-width bins on ``(0, 1]``.

    Steps
    -----
    1. ``c_i = max_j p_ij`` (confidence), ``a_i = [argmax_j p_ij == y_i]`` (hit).
    2. Row ``i`` falls in bin ``b = ceil(bins * c_i) - 1`` (clipped to ``[0, bins)``).
    3. ``ECE = sum_b (|B_b| / n) |mean_{B_b} a - mean_{B_b} c|``.

    Examples
    --------
    >>> import numpy as np
    >>> expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    0.0
    """
    xp = namespace(probs, labels, xp=xp)
    if isinstance(bins, bool) or not isinstance(bins, int):
        raise OptionTypeError(f"bins must be a positive int; got {bins!r}")
    if bins < 1:
        raise OptionError(f"bins must be a positive int; got {bins!r}")
    _check_logits_labels(xp, probs, labels, "probs")
    P = to_float(xp, probs, stats_dtype(xp, device_of(probs)))
    return float(xp.sum(_ece_gaps(xp, P, labels, bins))) / int(P.shape[0])


@dataclass(frozen=True)
class TemperatureFit:
    """A temperature fit on held-out data (beyond the paper): probabilities are ``softmax(scale * logits)``.

    Attributes
    ----------
    scale : float
        ``T``, the multiplier of the logits (the inverse of the usual divisor temperature).
    nll_before, nll_after : float
        Held-out mean negative log-likelihood (nats) at ``T = 1`` and at ``scale``.
    ece_before, ece_after : float
        Held-out expected calibration error (15 bins) at ``T = 1`` and at ``scale``.
    n_samples : int
        Held-out rows the fit saw.
    at_bound : bool
        Whether ``scale`` sits at an end of the search interval (the optimum may lie beyond it).
    """

    scale: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    n_samples: int
    at_bound: bool = False

    def probabilities(self, logits: Any, /, *, xp: Any = None) -> Any:
        """``softmax(scale * logits)``."""
        return softmax(logits, scale=self.scale, xp=xp)

    def __str__(self) -> str:
        return (f"temperature: logits x {self.scale:.4g} (fit on {self.n_samples} held-out rows); "
                f"held-out NLL {self.nll_before:.4f} -> {self.nll_after:.4f} nats, "
                f"ECE (15 bins) {self.ece_before:.4f} -> {self.ece_after:.4f}"
                + (" [at the search bound]" if self.at_bound else ""))


def fit_temperature(logits: Any, labels: Any, /, *, bounds: tuple[float, float] = (1e-3, 1e3),
                    tol: float = 1e-7, max_iter: int = 100, reduce: Reduce | None = None,
                    xp: Any = None) -> TemperatureFit:
    """Fit ``T > 0`` minimising the held-out NLL of ``softmax(T * logits)`` (module docstring, steps 1-4).

    Parameters
    ----------
    logits : array, shape (n, l)
        Held-out scores of the classifier (any real scale).
    labels : array, shape (n,)
        Held-out integer labels.
    bounds : (float, float)
        The search interval for ``T``, ``0 < lo < hi``.
    tol : float
        Stop when ``|dNLL/dT| * T`` or the relative bracket width falls below ``tol``.
    max_iter : int
        At most this many Newton/bisection steps.
    reduce : callable, optional
        With data split across processes: adds a 1-D vector of sums over every process
        (an all-reduce). Each NLL evaluation is one call, so every process takes the same
        steps and ends with the same ``T``; a process may hold no rows (``logits`` of
        shape ``(0, l)``).

    Returns
    -------
    TemperatureFit

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 500)
    >>> z = 0.1 * (np.eye(3)[y] + 0.5 * rng.normal(size=(500, 3)))   # flat but informative logits
    >>> fit = fit_temperature(z, y)
    >>> fit.scale > 1 and fit.nll_after < fit.nll_before
    True
    """
    xp = namespace(logits, labels, xp=xp)
    _check_logits_labels(xp, logits, labels, allow_empty=reduce is not None)
    try:
        lo, hi = (float(bounds[0]), float(bounds[1]))
    except (TypeError, ValueError, IndexError):
        raise OptionTypeError(f"bounds must be two numbers (lo, hi); got {bounds!r}") from None
    if not (0.0 < lo < hi and math.isfinite(hi)):
        raise OptionError(f"bounds must satisfy 0 < lo < hi < inf; got {bounds!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise OptionError(f"max_iter must be a positive int; got {max_iter!r}")
    Z = to_float(xp, logits, stats_dtype(xp, device_of(logits)))
    objective = _Objective(xp, Z, labels, reduce)
    nll0 = objective(1.0)[0]
    g_lo = objective(lo)[1]
    g_hi = objective(hi)[1]
    at_bound = False
    if g_lo >= 0.0:
        T, at_bound = lo, True
    elif g_hi <= 0.0:
        T, at_bound = hi, True
    else:
        T = min(max(1.0, lo), hi)
        for _ in range(max_iter):
            _, g, h = objective(T)
            if abs(g) * T <= tol or (hi - lo) <= tol * T:
                break
            if g > 0.0:
                hi = T
            else:
                lo = T
            step = T - g / h if h > 0.0 else float("nan")
            # a Newton step that leaves the bracket (or a flat curvature) falls back to bisection in log T
            T = step if (lo < step < hi) else math.sqrt(lo * hi)
    nll1 = objective(T)[0]
    return TemperatureFit(scale=float(T), nll_before=nll0, nll_after=nll1, ece_before=objective.ece(1.0, ECE_BINS),
                          ece_after=objective.ece(T, ECE_BINS), n_samples=objective.n, at_bound=at_bound)


@dataclass(frozen=True)
class HeadCalibration:
    """The temperature of a new head, fit on held-out data (beyond the paper).

    Attributes
    ----------
    fit : TemperatureFit
        On the new head's held-out logits: NLL and ECE at ``T = 1`` (the head as
        refit) and at the fitted ``T``.
    unchanged_nll, unchanged_ece : float
        The same held-out rows under the unchanged layer, for comparison.
    applied : bool
        Whether ``T`` was written into the new weight and bias (``W* T``, ``b* T``).
    note : str
        Why it was not applied, when it was not.
    """

    fit: TemperatureFit
    unchanged_nll: float
    unchanged_ece: float
    applied: bool
    note: str = ""

    def __str__(self) -> str:
        f = self.fit
        head = (f"logits x {f.scale:.4g} written into the head" if self.applied
                else f"logits x {f.scale:.4g} fit, not written ({self.note})")
        return (f"temperature: {head}; held-out NLL unchanged layer {self.unchanged_nll:.4f}, new head "
                f"{f.nll_before:.4f} -> {f.nll_after:.4f} nats; ECE (15 bins) {self.unchanged_ece:.4f}, "
                f"{f.ece_before:.4f} -> {f.ece_after:.4f} ({f.n_samples} held-out rows)")

    def to_dict(self) -> dict:
        f = self.fit
        return {"scale": f.scale, "applied": self.applied, "note": self.note, "n_samples": f.n_samples,
                "nll_unchanged": self.unchanged_nll, "nll_before": f.nll_before, "nll_after": f.nll_after,
                "ece_unchanged": self.unchanged_ece, "ece_before": f.ece_before, "ece_after": f.ece_after,
                "at_bound": f.at_bound}


def calibrate_head(batches: Any, W_new: Any, b_new: Any, W: Any, b: Any, /, *, reduce: Reduce | None = None,
                   xp: Any = None) -> HeadCalibration:
    """Fit one temperature for a new head ``(W_new, b_new)`` on held-out ``(X, y)`` batches.

    Steps
    -----
    1. One pass: the held-out logits of the new head, ``X W_new + b_new``
       (``b_new`` None: the layer's own ``b``), and of the unchanged layer
       ``X W + b`` (``O(n l)`` each).
    2. :func:`fit_temperature` on the new head's logits; NLL and ECE of the
       unchanged layer for comparison. ``applied`` is left False: the caller
       decides whether the layer can take ``T`` (:attr:`HeadCalibration.applied`).

    With ``reduce`` (rows split across processes, :func:`fit_temperature`) every process
    calls this with its own rows, possibly none, and all end with the same fit.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 5)); y = np.argmax(X[:, :3], 1); W = np.eye(5)[:, :3]
    >>> cal = calibrate_head([(X, y)], 0.05 * W, None, W, None)
    >>> cal.fit.scale > 1.0
    True
    """
    xp = namespace(W_new, xp=xp)
    dt = W_new.dtype
    Zn, Z0, ys = [], [], []
    for X, y in batches:
        Xw = to_float(xp, X, dt)
        zn = Xw @ W_new
        z0 = Xw @ to_float(xp, W, dt)
        if b_new is not None:
            zn = zn + to_float(xp, b_new, dt)
        elif b is not None:
            zn = zn + to_float(xp, b, dt)
        if b is not None:
            z0 = z0 + to_float(xp, b, dt)
        Zn.append(zn)
        Z0.append(z0)
        ys.append(y)
    if not Zn:
        if reduce is None:
            raise DataError("no held-out rows to fit a temperature on")
        # this process holds none; it still takes part in every reduction
        empty = xp.zeros((0, int(W_new.shape[1])), dtype=dt, device=device_of(W_new))
        Zn, Z0, ys = [empty], [empty], [xp.zeros((0,), dtype=xp.int64, device=device_of(W_new))]
    Zn, Z0, y = xp.concat(Zn, axis=0), xp.concat(Z0, axis=0), xp.concat(ys)
    fit = fit_temperature(Zn, y, reduce=reduce, xp=xp)
    unchanged = _Objective(xp, to_float(xp, Z0, stats_dtype(xp, device_of(Z0))), y, reduce)
    return HeadCalibration(fit=fit, unchanged_nll=unchanged(1.0)[0], unchanged_ece=unchanged.ece(1.0, ECE_BINS),
                           applied=False)
