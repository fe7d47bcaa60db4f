"""The paper's repair: Label Ambiguity Purification (LAP), streamed with O(r) statistics.

The LAP refit of tail singular values separates per component (see
:func:`lip_agnostic.lip_refine` for the closed form), so it needs only
per-component sums over the data, never ``X`` itself. This module owns those
sums, the closed form built on them, and the rank-one fast path that scores
every rank in one held-out pass (:class:`RankScorer`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

from .._arrays import as_features, as_targets, check_product_finite, count_true, namespace, stats_dtype, to_float
from ..errors import DataError, DataTypeError, NonFiniteError, OptionError
from ..options import CONSTRAINTS, BiasMode, LIPOptions, Plan, TargetScale, parse_rank
from ..progress import Progress
from ..report import summarize_refit
from ..selection import HeldOutScorer, Selection, candidate_ranks
from ..svd import SVD
from .base import HeadRepair, Refit

__all__ = ["LIPAccumulator", "RankScorer"]


class LIPAccumulator(HeadRepair):
    """The paper's LIP (the ``"diagonal"`` repair), streamed, for a ``(q, l)`` classifier weight.

    Feed ``(X, Y)`` batches with :meth:`update`; :meth:`result` returns
    ``W*``. Equal to :func:`lip_agnostic.lip_refine` on the concatenated data.

    Steps
    -----
    1. At construction: ``W = U diag(s) V^T``; track components ``i >= k0``
       (``k0 = rank``, or ``0`` when the rank is left open so that any rank can be
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
    rank : int, float or None
        Components to keep untouched (a float in ``(0, 1]`` is an energy
        fraction). ``None`` tracks all of them so that ``result(rank)`` works
        for every rank.
    bias : array, shape (l,), optional
        The layer's bias. The fit then targets ``Y - 1 b^T`` and the
        held-out scoring (:class:`RankScorer`) uses the logits
        ``X W + 1 b^T`` the layer really produces.
    bias_mode : {"fit", "ignore"}
        ``"ignore"`` keeps the bias out of the fit (targets ``Y``: the paper's
        reference code) while the scoring still uses it.
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

    name: ClassVar[str] = "diagonal"
    beyond_paper: ClassVar[bool] = False

    def __init__(
        self,
        W: Any,
        /,
        rank: int | float | None = None,
        *,
        bias: Any = None,
        bias_mode: BiasMode = "fit",
        target_scale: TargetScale = 1.0,
        degenerate: Literal["zero", "keep"] = "zero",
        rtol: float | None = None,
        svd: SVD | None = None,
        xp: Any = None,
    ) -> None:
        self._set_head(W, rank, bias=bias, bias_mode=bias_mode, target_scale=target_scale, rtol=rtol, svd=svd,
                       xp=xp)
        xp = self._xp
        m = self.svd.rank_max
        self.degenerate = CONSTRAINTS["degenerate"](degenerate)
        self.rtol = float(xp.finfo(self.svd.s.dtype).eps) if self._rtol is None else self._rtol
        self.k0 = 0 if (self.rank is None or self.target_scale == "logits") else self.rank
        self._fit_b = self.bias if self.bias_mode == "fit" else None

        self._U_t = self.svd.U[:, self.k0:]
        self._V_t = self.svd.V[:, self.k0:]
        r = m - self.k0
        self._sdt = stats_dtype(xp, self._device)
        # Layout of the flat partial sums: xy (r) | xx (r) | xs (r) | sum<Y_n,b> | ||Y||^2 | n
        self._sizes = (r, r, r, 1, 1, 1)
        self._sums = xp.zeros((3 * r + 3,), dtype=self._sdt, device=self._device)

    @classmethod
    def from_options(cls, W: Any, rank: int | float | None, /, *, bias: Any, options: LIPOptions,
                     svd: SVD | None, xp: Any) -> "LIPAccumulator":
        """The accumulator a :class:`lip_agnostic.options.LIPOptions` asks for."""
        return cls(W, rank, bias=bias, bias_mode=options.bias_mode, target_scale=options.target_scale,
                   degenerate=options.degenerate, rtol=options.rtol, svd=svd, xp=xp)

    # ------------------------------------------------------------------ data
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
        self._add_sums(batch)
        return self

    def _settings(self) -> tuple:
        return (self.shape, self.k0, self.target_scale, self.degenerate, self._fit_b is None)

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

    def refit_spectrum(self, rank: int | None = None) -> Any:
        """``d`` with ``W*(k) = U diag(d) V^T``: ``s`` on the head, ``sigma`` on the tail."""
        xp = self._xp
        k = self._resolve_k(rank)
        sig = self.sigmas()
        head = self.svd.s[:k]
        return xp.concat([head, sig[k - self.k0:]])

    def _resolve_k(self, rank: int | None) -> int:
        m = self.svd.rank_max
        if rank is None:
            if self.rank is None:
                raise OptionError("the rank was left open at construction: pass result(rank) or use select_rank")
            return self.rank
        k = parse_rank(rank, m, name="rank", allow_auto=False, allow_fraction=False)
        if k < self.k0:
            raise OptionError(
                f"rank={k} needs components below the tracked range [{self.k0}, {m}); "
                f"build the accumulator with rank=None (or rank<={k})"
            )
        return k

    def result(self, rank: int | None = None) -> Any:
        """``W*`` for rank ``k`` (default: the constructor's ``rank``), in ``W``'s dtype.

        ``k = min(q, l)`` returns ``W`` unchanged (a copy).
        """
        xp = self._xp
        k = self._resolve_k(rank)
        m = self.svd.rank_max
        if k == m:
            return xp.asarray(self._W, copy=True)
        sig = self.sigmas()[k - self.k0:]
        delta = sig - self.svd.s[k:]
        U_t, V_t = self.svd.U[:, k:], self.svd.V[:, k:]
        W = to_float(xp, self._W, self.svd.s.dtype)
        W_new = W + (U_t * delta) @ xp.linalg.matrix_transpose(V_t)
        return to_float(xp, W_new, self.dtype)

    # ------------------------------------------------------- the repair protocol
    def scorer(self, plan: Plan | None = None, options: LIPOptions | None = None, /,
               ranks: Sequence[int] | None = None, *, progress: Progress | None = None) -> "RankScorer":
        """A :class:`RankScorer` over the tracked ranks (or ``ranks``)."""
        return RankScorer(self, ranks=ranks)

    def fixed_selection(self, options: LIPOptions, /) -> Selection:
        """The selection of the constructor's rank (an int, or an energy fraction resolved on ``s``)."""
        m = self.svd.rank_max
        if isinstance(options.rank, float):
            xp = self._xp
            e = self.svd.s * self.svd.s
            cum = xp.cumulative_sum(e) / xp.sum(e) if float(xp.sum(e)) > 0 else xp.zeros_like(e)
            return Selection(k=self.rank, m=m, strategy="energy", ks=tuple(range(1, m + 1)),
                             scores=tuple(float(c) for c in cum), extra={"fraction": options.rank})
        return Selection(k=self.rank, m=m, strategy="fixed")

    def refit(self, selection: Selection, /) -> Refit:
        """``W*`` at the selected rank, its degenerate count and summary (no second SVD)."""
        xp = self._xp
        k = selection.k
        W_new = self.result(k)
        n_deg = count_true(xp, self.degenerate_mask()[k - self.k0:]) if k < self.svd.rank_max else 0
        summary = summarize_refit(self.svd.s, self.refit_spectrum(k), k, shape=self.shape, V=self.svd.V,
                                  W_before=self._W, W_after=W_new, xp=xp)
        return Refit(weight=W_new, bias=None, n_degenerate=n_deg, summary=summary)


class RankScorer(HeldOutScorer):
    """The paper's refit at many ranks, scored in one held-out pass (the rank-one fast path).

    ``W*(k)`` and ``W*(k+1)`` differ by the rank-one term
    ``(sigma_k - s_k) u_k v_k^T`` (the refit ``sigma_i`` do not depend on
    ``k``), so one pass over the held-out data scores every rank.

    Steps
    -----
    1. Per batch: base logits ``Z = X W + 1 b^T`` (the layer as it is, ``k = m``)
       and ``P = X U`` on the tracked components.
    2. Walk the candidate ranks from ``m`` down, adding the block
       ``P[:, k:k'] diag(sigma - s)[k:k'] V[:, k:k']^T`` to ``Z``; the ``argmax``
       at each rank is that candidate's prediction.
    3. Hits, wins, losses and the guard: :class:`lip_agnostic.selection.HeldOutScorer`.

    Held-out labels may be noisy: under label noise that does not depend on
    the model, a model that agrees more often with the noisy labels is, in
    expectation, the more accurate one on clean labels, and the test keeps the
    choice from chasing noise. That premise fails for class-dependent
    (asymmetric) noise in the held-out labels (see docs/EVIDENCE.md); use clean
    or symmetric-noise validation data there.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import LIPAccumulator
    >>> rng = np.random.default_rng(0)
    >>> W, X, y = rng.normal(size=(6, 3)), rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    >>> sel = LIPAccumulator(W).update(X, y).scorer().update(X, y).best()
    >>> 0 <= sel.k <= 3
    True
    """

    def __init__(self, accumulator: LIPAccumulator, /, ranks: Sequence[int] | None = None) -> None:
        if not isinstance(accumulator, LIPAccumulator):
            raise DataTypeError(f"RankScorer needs a LIPAccumulator; got {type(accumulator).__name__}")
        acc = self._acc = accumulator
        xp = acc._xp
        k0, m = acc.tracked
        if ranks is None:
            ranks = candidate_ranks(k0, m)
        if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__"):
            raise OptionError(f"ranks must be a sequence of integers in [{k0}, {m}]; got {ranks!r}")
        ks = sorted({parse_rank(k, m, name="candidate rank", allow_auto=False, allow_fraction=False)
                     for k in ranks} - {m})
        if ks and ks[0] < k0:
            raise OptionError(f"candidate ranks below {k0} are not tracked by the accumulator; got {ks[0]}")
        wdt = acc.svd.s.dtype
        super().__init__(acc._W, acc.bias, m, "diagonal", [(k, None) for k in ks], xp=xp, work=wdt,
                         sdt=acc._sdt, device=acc._device)
        self._sig = acc.sigmas()
        delta = self._sig - acc.svd.s[k0:]
        # Rows of V_t^T scaled by the refit change, contiguous: each candidate's block update is then a
        # product with whole rows (a strided (l, 1) column of V made NumPy's matmul ~10x slower).
        self._dVt = xp.asarray(xp.linalg.matrix_transpose(acc.svd.V[:, k0:]) * delta[:, None], copy=True)

    def _candidate_predictions(self, X: Any, Z: Any) -> Any:
        xp, acc = self._xp, self._acc
        k0, m = acc.tracked
        P = X @ acc.svd.U[:, k0:]
        Z = xp.asarray(Z, copy=True)
        preds: list[Any] = []
        upper = m
        for k, _ in reversed(self.candidates):
            # Z is this batch's own array: added to in place (out of place where arrays are immutable).
            if upper - k == 1:  # one component: an outer product, no matmul
                Z += P[:, k - k0:upper - k0] * self._dVt[k - k0, :]
            else:
                Z += P[:, k - k0:upper - k0] @ self._dVt[k - k0:upper - k0, :]
            upper = k
            preds.append(xp.argmax(Z, axis=1))
        preds.reverse()
        if preds:
            yield xp.stack(preds, axis=1)
