"""Label Ambiguity Purification (LAP), streamed: O(r) sufficient statistics.

The LAP refit of tail singular values separates per component (see
:func:`lip_agnostic.lip_refine` for the closed form), so it needs only
per-component sums over the data, never ``X`` itself. This module owns those
sums and the closed form built on them.
"""

from __future__ import annotations

from typing import Any, Literal

from ._arrays import (
    device_of,
    as_features,
    as_targets,
    check_finite,
    check_product_finite,
    namespace,
    stats_dtype,
    to_float,
)
from .errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from .options import UNSET, BiasMode, bias_mode_from_fit_bias, parse_rank
from .principal import SVD, reduced_svd, resolve_rank

__all__ = ["LIPAccumulator", "TargetScale"]

TargetScale = float | Literal["logits"]


class LIPAccumulator:
    """Streaming LIP for a ``(q, l)`` classifier weight.

    Feed ``(X, Y)`` batches with :meth:`update`; :meth:`result` returns
    ``W*``. Equal to :func:`lip_agnostic.lip_refine` on the concatenated data.

    Steps
    -----
    1. At construction: ``W = U diag(s) V^T``; track components ``i >= k0``
       (``k0 = k``, or ``0`` when ``k`` is left open so that any rank can be
       chosen after the pass, or when ``target_scale="logits"``).
    2. Per batch, with ``A = X U_T`` and ``B = Y V_T`` (``n_b x r``; integer
       labels make ``B`` a row gather of ``V_T``, no one-hot is formed), add
       up per component ``i``:
       ``xy_i += <A_i, B_i>``, ``xx_i += ||A_i||^2``, ``xs_i += 1^T A_i``;
       and the scalars ``sum_n <Y_n, b>`` and ``||Y||_F^2``.
    3. Targets are ``T = c Y - 1 b^T`` (``c`` the target scale, ``b`` the
       bias, zero by default or with ``bias_mode="ignore"``). The refit value is
       ``sigma_i = (c xy_i - xs_i <b, v_i>) / xx_i``.
       ``target_scale="logits"`` picks ``c`` by least squares so that ``c Y``
       best matches the model's own logits:
       ``c = (sum_j s_j xy_j + sum_n <Y_n, b>) / ||Y||_F^2``.
    4. A degenerate component (``xx_i <= rtol * max_j xx_j``, the data never
       excite ``u_i``) has no information to refit: ``degenerate="zero"``
       (default) gives it ``sigma_i = 0``, the minimum-norm least-squares
       solution; ``"keep"`` keeps its original ``s_i``.
    5. ``W* = W + U_t diag(sigma_t - s_t) V_t^T`` over the tail ``i >= k``,
       which is exactly ``W_k + U_t diag(sigma_t) V_t^T``.

    The sums live in float64 where the device has it; they are exposed as
    one flat array (:attr:`partial_sums`) so workers can all-reduce them and
    load the total back (:meth:`load_partial_sums`).

    Parameters
    ----------
    W : array, shape (q, l)
        Trained classifier weight (PyTorch ``Linear.weight`` is ``(l, q)``:
        pass its transpose).
    k : int, float or None
        Components to keep untouched (a float in ``(0, 1]`` is an energy
        fraction). ``None`` tracks all of them so that ``result(k)`` works
        for every ``k``.
    bias : array, shape (l,), optional
        The layer's bias. The fit then targets ``Y - 1 b^T`` and the
        held-out scoring (:class:`lip_agnostic.RankScorer`) uses the logits
        ``X W + 1 b^T`` the layer really produces.
    bias_mode : {"fit", "ignore"}
        ``"ignore"`` keeps the bias out of the fit (targets ``Y``: the paper's
        reference code) while the scoring still uses it. (``fit_bias=True`` /
        ``False``, the old spelling, still works with a ``FutureWarning``.)
    target_scale : float or "logits"
        ``1.0`` is the paper's raw targets.
    degenerate : {"zero", "keep"}
    rtol : float, optional
        Degeneracy threshold on ``xx_i / max_j xx_j``; default: the working
        dtype's machine epsilon.
    svd : SVD, optional
        The full reduced SVD of ``W`` (:func:`lip_agnostic.reduced_svd`) when
        the caller already has it: a large head's SVD is the costly step.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import LIPAccumulator, lip_refine
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.normal(size=(8, 4)), rng.normal(size=(50, 8))
    >>> y = rng.integers(0, 4, 50)
    >>> acc = LIPAccumulator(W, 2)
    >>> _ = acc.update(X[:20], y[:20]).update(X[20:], y[20:])
    >>> bool(np.allclose(acc.result(), lip_refine(W, X, y, 2)))
    True
    """

    def __init__(
        self,
        W: Any,
        /,
        k: int | float | None = None,
        *,
        bias: Any = None,
        bias_mode: BiasMode = "fit",
        target_scale: TargetScale = 1.0,
        degenerate: Literal["zero", "keep"] = "zero",
        rtol: float | None = None,
        svd: SVD | None = None,
        xp: Any = None,
        fit_bias: bool = UNSET,
    ) -> None:
        bias_mode = bias_mode_from_fit_bias(bias_mode, fit_bias, stacklevel=3)
        xp = namespace(W, bias, xp=xp)
        self._xp = xp
        if svd is None:
            svd = reduced_svd(W, xp=xp)
        else:
            if not isinstance(svd, SVD):
                raise OptionTypeError(f"svd must be a lip_agnostic.SVD (from reduced_svd); got {type(svd).__name__}")
            m_ = min(int(W.shape[0]), int(W.shape[1]))
            want = ((int(W.shape[0]), m_), (m_,), (int(W.shape[1]), m_))
            got = (tuple(svd.U.shape), tuple(svd.s.shape), tuple(svd.V.shape))
            if got != want:
                raise DataError(f"svd factors (U, s, V) must have shapes {want} for W of shape {tuple(W.shape)}; got {got}")
        self.svd: SVD = svd
        self.shape = (int(W.shape[0]), int(W.shape[1]))
        self.dtype = W.dtype
        self._W = W
        self._device = device_of(W)
        m = self.svd.rank_max
        if isinstance(target_scale, str):
            if target_scale != "logits":
                raise OptionError(f"target_scale must be a positive number or 'logits'; got {target_scale!r}")
        else:
            target_scale = float(target_scale)
            if not target_scale > 0.0:
                raise OptionError(f"target_scale must be a positive number or 'logits'; got {target_scale}")
        if degenerate not in ("zero", "keep"):
            raise OptionError(f"degenerate must be 'zero' or 'keep'; got {degenerate!r}")
        self.k = None if k is None else resolve_rank(k, self.svd.s, name="k", xp=xp)
        self.bias_mode: BiasMode = bias_mode
        fit_bias = bias_mode == "fit"
        self.target_scale = target_scale
        self.degenerate = degenerate
        wdt = self.svd.s.dtype
        self.rtol = float(xp.finfo(wdt).eps) if rtol is None else float(rtol)
        self.k0 = 0 if (self.k is None or target_scale == "logits") else self.k

        l = self.shape[1]
        if bias is not None:
            if getattr(bias, "ndim", None) != 1 or bias.shape[0] != l:
                raise DataError(f"bias must have shape ({l},) for W of shape {self.shape}; got {tuple(bias.shape)}")
            if not xp.isdtype(bias.dtype, "real floating"):
                raise DataTypeError(f"bias must have a real floating dtype; got {bias.dtype}")
            check_finite(xp, bias, "bias")
            bias = to_float(xp, bias, wdt)
        self.bias = bias
        self._fit_b = bias if fit_bias else None

        self._U_t = self.svd.U[:, self.k0:]
        self._V_t = self.svd.V[:, self.k0:]
        r = m - self.k0
        self._sdt = stats_dtype(xp, self._device)
        # Layout of the flat partial sums: xy (r) | xx (r) | xs (r) | sum<Y_n,b> | ||Y||^2 | n
        self._sizes = (r, r, r, 1, 1, 1)
        self._sums = xp.zeros((3 * r + 3,), dtype=self._sdt, device=self._device)

    # ------------------------------------------------------------------ data
    @property
    def fit_bias(self) -> bool:
        """``bias_mode == "fit"`` (the old attribute name, kept for one release)."""
        return self.bias_mode == "fit"

    @property
    def n_samples(self) -> int:
        """How many samples the sums hold."""
        return int(self._sums[-1])

    @property
    def tracked(self) -> tuple[int, int]:
        """``(k0, m)``: the components whose statistics are kept."""
        return self.k0, self.svd.rank_max

    def update(self, X: Any, Y: Any, /) -> "LIPAccumulator":
        """Add a batch: features ``X (n_b, q)``, labels ``(n_b,)`` or targets ``(n_b, l)``."""
        xp = self._xp
        namespace(self._W, X, Y)  # TypeError on mixed array libraries
        q, l = self.shape
        wdt = self.svd.s.dtype
        X = as_features(xp, X, q, wdt, finite=False)
        Y, is_labels = as_targets(xp, Y, int(X.shape[0]), l, wdt, finite=False)
        A = X @ self._U_t
        check_product_finite(xp, A, X, "X")
        sdt = self._sdt
        zero = xp.zeros((1,), dtype=sdt, device=self._device)
        if is_labels:
            B = xp.take(self._V_t, Y, axis=0)
            yb = zero if self._fit_b is None else xp.reshape(xp.astype(xp.sum(xp.take(self._fit_b, Y)), sdt), (1,))
            ysq = xp.asarray([float(Y.shape[0])], dtype=sdt, device=self._device)
        else:
            B = Y @ self._V_t
            check_product_finite(xp, B, Y, "Y")
            yb = zero if self._fit_b is None else xp.reshape(xp.astype(xp.sum(Y @ self._fit_b), sdt), (1,))
            ysq = xp.reshape(xp.astype(xp.sum(Y * Y), sdt), (1,))
        parts = [
            xp.astype(xp.sum(A * B, axis=0), sdt),
            xp.astype(xp.sum(A * A, axis=0), sdt),
            xp.astype(xp.sum(A, axis=0), sdt),
            yb,
            ysq,
            xp.asarray([float(X.shape[0])], dtype=sdt, device=self._device),
        ]
        batch = xp.concat(parts)
        if not bool(xp.all(xp.isfinite(batch))):
            raise NonFiniteError(
                f"the LIP statistics of this batch overflowed the working dtype ({wdt}); "
                "rescale the features or pass float64 arrays"
            )
        self._sums = self._sums + batch
        return self

    @property
    def partial_sums(self) -> Any:
        """The sufficient statistics as one flat array (sum-reducible)."""
        return self._sums

    def load_partial_sums(self, sums: Any, /) -> "LIPAccumulator":
        """Replace the statistics, e.g. with their all-reduced total."""
        xp = self._xp
        if getattr(sums, "shape", None) != tuple(self._sums.shape):
            raise DataError(
                f"partial sums must have shape {tuple(self._sums.shape)}; got {tuple(getattr(sums, 'shape', ()))}"
            )
        self._sums = xp.astype(sums, self._sdt)
        return self

    def merge(self, other: "LIPAccumulator", /) -> "LIPAccumulator":
        """Add another accumulator's statistics (same weight and settings)."""
        if not isinstance(other, LIPAccumulator):
            raise DataTypeError(f"can only merge a LIPAccumulator; got {type(other).__name__}")
        mine = (self.shape, self.k0, self.target_scale, self.degenerate, self._fit_b is None)
        theirs = (other.shape, other.k0, other.target_scale, other.degenerate, other._fit_b is None)
        if mine != theirs:
            raise DataError(
                "cannot merge accumulators with different (shape, k0, target_scale, degenerate, no fit bias): "
                f"{mine} vs {theirs}"
            )
        xp = self._xp
        if not bool(xp.all(xp.abs(self.svd.s - other.svd.s) <= 1e-5 * (xp.abs(self.svd.s) + 1e-30))):
            raise DataError("cannot merge accumulators built from different weights (spectra differ)")
        self._sums = self._sums + xp.asarray(other._sums, device=self._device)
        return self

    # ----------------------------------------------------------------- results
    def _split(self) -> tuple[Any, ...]:
        out, start = [], 0
        for size in self._sizes:
            out.append(self._sums[start:start + size])
            start += size
        return tuple(out)

    def scale(self) -> float:
        """The target scale ``c`` in use (computed for ``"logits"``)."""
        if self.target_scale != "logits":
            return float(self.target_scale)
        xp = self._xp
        xy, _, _, yb, ysq, _ = self._split()
        s = xp.astype(self.svd.s, self._sdt)
        num = xp.sum(s * xy) + yb[0]
        den = float(ysq[0])
        if den == 0.0:
            return 1.0
        return float(num) / den

    def sigmas(self) -> Any:
        """Refit singular values ``sigma_i`` for the tracked components ``i >= k0``."""
        if self.n_samples == 0:
            raise DataError("the accumulator has seen no data: call update(X, Y) first")
        xp = self._xp
        xy, xx, xs, _, _, _ = self._split()
        num = self.scale() * xy
        if self._fit_b is not None:
            bv = xp.astype(self._fit_b, self._sdt) @ xp.astype(self._V_t, self._sdt)
            num = num - xs * bv
        ref = float(xp.max(xx)) if xx.shape[0] else 0.0
        bad = xx <= self.rtol * ref
        safe = xp.where(bad, xp.ones_like(xx), xx)
        sig = num / safe
        fallback = (
            xp.zeros_like(sig) if self.degenerate == "zero"
            else xp.astype(self.svd.s[self.k0:], self._sdt)
        )
        sig = xp.where(bad, fallback, sig)
        sig = xp.astype(sig, self.svd.s.dtype)
        if not bool(xp.all(xp.isfinite(sig))):
            raise NonFiniteError(
                "the refit singular values overflowed the working dtype "
                f"({self.svd.s.dtype}); rescale the features or pass float64 arrays"
            )
        return sig

    def degenerate_mask(self) -> Any:
        """Boolean mask over tracked components whose data energy is ~0."""
        xp = self._xp
        _, xx, _, _, _, _ = self._split()
        ref = float(xp.max(xx)) if xx.shape[0] else 0.0
        return xx <= self.rtol * ref

    def refit_spectrum(self, k: int | None = None) -> Any:
        """``d`` with ``W*(k) = U diag(d) V^T``: ``s`` on the head, ``sigma`` on the tail."""
        xp = self._xp
        k = self._resolve_k(k)
        sig = self.sigmas()
        head = self.svd.s[:k]
        return xp.concat([head, sig[k - self.k0:]])

    def _resolve_k(self, k: int | None) -> int:
        m = self.svd.rank_max
        if k is None:
            if self.k is None:
                raise OptionError("k was left open at construction: pass result(k) or use select_rank")
            return self.k
        k = parse_rank(k, m, name="k", allow_auto=False, allow_fraction=False)
        if k < self.k0:
            raise OptionError(
                f"k={k} needs components below the tracked range [{self.k0}, {m}); "
                f"build the accumulator with k=None (or k<={k})"
            )
        return k

    def result(self, k: int | None = None) -> Any:
        """``W*`` for rank ``k`` (default: the constructor's ``k``), in ``W``'s dtype.

        ``k = min(q, l)`` returns ``W`` unchanged (a copy).
        """
        xp = self._xp
        k = self._resolve_k(k)
        m = self.svd.rank_max
        if k == m:
            return xp.asarray(self._W, copy=True)
        sig = self.sigmas()[k - self.k0:]
        delta = sig - self.svd.s[k:]
        U_t, V_t = self.svd.U[:, k:], self.svd.V[:, k:]
        W = to_float(xp, self._W, self.svd.s.dtype)
        W_new = W + (U_t * delta) @ xp.linalg.matrix_transpose(V_t)
        return to_float(xp, W_new, self.dtype)

