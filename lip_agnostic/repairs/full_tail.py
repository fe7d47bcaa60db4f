"""The full-tail refit (``tail="full"``): a ridge least-squares refit of the whole complement.

**Beyond the paper.** The paper's Label Ambiguity Purification refits only the
tail's singular values along the tail's own directions (``tail="diagonal"``,
:func:`lip_agnostic.lip_refine`'s default). This variant keeps the same
Principal Subspace Preservation (the top-``k`` components of ``W`` stay exactly
as they are) but lets the refit choose its own directions in the complement:

    ``min over C of ||X (W_k + U_perp C V_perp^T) - T||_F^2 + lam ||C||_F^2``

with ``U_perp`` (``q x (q - k)``) and ``V_perp`` (``l x (l - k)``) orthonormal
complements of the kept ``U_k``, ``V_k`` in feature and class space. ``k = 0``
is a ridge-regression head on the features; ``k = min(q, l)`` leaves the layer
as it is.

How the closed form and the one-pass choice work
------------------------------------------------
1. ``W = U diag(s) V^T``; the full bases ``Uf = [U, U_0]`` (``q x q``) and
   ``Vf = [V, V_0]`` (``l x l``) add orthonormal complements of the reduced
   factors. For every ``k``, ``U_perp = Uf[:, k:]`` and ``V_perp = Vf[:, k:]``.
2. The data enter only through the sufficient statistics ``X^T X``,
   ``X^T Y``, the column sums ``1^T X``, ``1^T Y``, ``||Y||_F^2`` and ``n``
   (state ``O(q^2 + q l)``); batches, workers and accumulators simply add them.
3. Targets ``T = c Y`` (``c`` the target scale, as on the paper path). When
   the layer has a bias and ``bias_mode="fit"``, ``X`` and ``T`` are centred
   (``X^T X - sx sx^T / n``, ``X^T T - sx st^T / n``) and the bias is refit as
   ``b* = mean(T) - mean(X) W*``; otherwise nothing is centred and the bias
   is left as it is.
4. Because ``W_k V_perp = 0``, the residual splits into a ``V_k`` part that
   does not depend on ``C`` and a ``V_perp`` part, so
   ``C = (G + lam I)^-1 R`` with ``G = U_perp^T Xc^T Xc U_perp`` and
   ``R = U_perp^T Xc^T (Tc - Xc W_k) V_perp = U_perp^T Xc^T Tc V_perp``.
5. Rank grid: the statistics are rotated once, ``Gf = Uf^T Xc^T Xc Uf`` and
   ``Rf = Uf^T Xc^T Tc Vf``; for each candidate ``k``, ``G = Gf[k:, k:]`` and
   ``R = Rf[k:, k:]`` are trailing blocks (no pass over the data).
6. Ridge grid: one eigendecomposition ``G = Q diag(e) Q^T`` per ``k`` serves
   every ``lam``: ``C(lam) = Q diag(1 / (e + lam)) Q^T R`` (``lam = 0`` is the
   minimum-norm least-squares solution: eigenvalues below ``rtol * max(e)``
   are dropped).
7. ``W* = W + U_perp (C - S_perp) V_perp^T`` with ``S_perp = U_perp^T W V_perp``
   (``diag(s[k:])`` padded with zeros), i.e. exactly ``W_k + U_perp C V_perp^T``
   while the kept components' products ``W* V_k`` and ``U_k^T W*`` differ from
   ``W``'s only by rounding of the orthogonality ``V_perp^T V_k = 0``.
8. ``ridge="auto"`` / ``rank="auto"``: every ``(k, lam)`` on the grid is scored on
   held-out data in one pass (:meth:`FullTailAccumulator.scorer`), and the choice goes
   through the same significance guard (sign test, ``confidence``,
   ``min_gain``) as the paper path's :class:`lip_agnostic.RankScorer`, with
   Bonferroni over all the candidates; when none qualifies the layer is left
   as it is (``k = m``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from .._arrays import (
    as_features,
    as_targets,
    check_product_finite,
    count_true,
    device_of,
    namespace,
    stats_dtype,
    to_float,
)
from ..errors import DataError, NonFiniteError, OptionError
from ..options import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RIDGE_FACTORS,
    FULL_TAIL_RANK_LIMIT,
    LIPOptions,
    Plan,
    TargetScale,
    check_ridge,
    parse_rank,
)
from ..progress import Progress
from ..report import summarize_change
from ..selection import Selection, StackedScorer, candidate_ranks, check_candidates
from ..svd import SVD, resolve_rank
from .base import HeadRepair, Refit

__all__ = ["FullTailAccumulator"]


class FullTailAccumulator(HeadRepair):
    """Streaming statistics for the full-tail ridge refit of a ``(q, l)`` weight (beyond the paper).

    Feed ``(X, Y)`` batches with :meth:`update`; :meth:`result` returns
    ``W*`` (and the refit bias); :meth:`scores` chooses ``(k, lam)`` on
    held-out data. The module docstring (:mod:`lip_agnostic.repairs.full_tail`) gives
    the math as numbered steps.

    Parameters
    ----------
    W : array, shape (q, l)
        Trained classifier weight (PyTorch ``Linear.weight`` is ``(l, q)``: pass its transpose).
    rank : int, float or None
        Components kept (a float in ``(0, 1]`` is an energy fraction); ``None``
        leaves it open for :meth:`result` / :meth:`scores`.
    bias : array, shape (l,), optional
        The layer's bias. With ``bias_mode="fit"`` the fit centres ``X`` and
        ``T`` and refits the bias; with ``"ignore"`` the bias is kept and used
        for held-out scoring only.
    bias_mode : {"fit", "ignore"}
    target_scale : float or "logits"
        Targets ``T = c Y``; ``"logits"`` fits ``c`` so that ``c Y`` best
        matches the model's own logits ``X W + 1 b^T`` (as on the paper path).
    rtol : float, optional
        For ``ridge=0``: eigenvalues of ``G`` below ``rtol * max`` are treated
        as zero (minimum-norm solution). Default ``q`` times the working
        dtype's machine epsilon.
    svd : SVD, optional
        The reduced SVD of ``W`` when the caller already has it.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import FullTailAccumulator
    >>> rng = np.random.default_rng(0)
    >>> W, X, y = rng.normal(size=(8, 4)), rng.normal(size=(60, 8)), rng.integers(0, 4, 60)
    >>> acc = FullTailAccumulator(W, 2).update(X[:30], y[:30]).update(X[30:], y[30:])
    >>> acc.result(ridge=0.1)[0].shape
    (8, 4)
    """

    name: ClassVar[str] = "full"
    beyond_paper: ClassVar[bool] = True

    def __init__(
        self,
        W: Any,
        /,
        rank: int | float | None = None,
        *,
        bias: Any = None,
        bias_mode: str = "fit",
        target_scale: TargetScale = 1.0,
        rtol: float | None = None,
        svd: SVD | None = None,
        xp: Any = None,
    ) -> None:
        self._set_head(W, rank, bias=bias, bias_mode=bias_mode, target_scale=target_scale, rtol=rtol, svd=svd,
                       xp=xp)
        xp = self._xp
        q, l = self.shape
        wdt = self.svd.s.dtype
        self.fits_bias = self.bias is not None and self.bias_mode == "fit"
        self._wdt = wdt
        self._sdt = sdt = stats_dtype(xp, self._device)
        self.rtol = float(q * xp.finfo(sdt).eps) if self._rtol is None else self._rtol
        # Layout of the flat sums: X^T X (q q) | X^T Y (q l) | 1^T X (q) | 1^T Y (l) | ||Y||^2 | n
        self._sizes = (q * q, q * l, q, l, 1, 1)
        self._sums = xp.zeros((sum(self._sizes),), dtype=sdt, device=self._device)
        self._bases: tuple[Any, Any] | None = None
        self._rotated: tuple[Any, Any, float] | None = None
        self._solver_cache: tuple[int, Any, Any, Any] | None = None

    @classmethod
    def from_options(cls, W: Any, rank: int | float | None, /, *, bias: Any, options: LIPOptions,
                     svd: SVD | None, xp: Any) -> "FullTailAccumulator":
        """The accumulator a :class:`lip_agnostic.options.LIPOptions` asks for."""
        return cls(W, rank, bias=bias, bias_mode=options.bias_mode, target_scale=options.target_scale,
                   rtol=options.rtol, svd=svd, xp=xp)

    # ------------------------------------------------------------------ data
    def update(self, X: Any, Y: Any, /) -> "FullTailAccumulator":
        """Add a batch: features ``X (n_b, q)``, labels ``(n_b,)`` or targets ``(n_b, l)``."""
        xp = self._xp
        namespace(self._W, X, Y)  # TypeError on mixed array libraries
        q, l = self.shape
        sdt = self._sdt
        X = as_features(xp, X, q, self._wdt, finite=False)
        Y, is_labels = as_targets(xp, Y, int(X.shape[0]), l, self._wdt, finite=False)
        n_b = int(X.shape[0])
        Xs = to_float(xp, X, sdt)
        if is_labels:
            classes = xp.astype(xp.arange(l, device=self._device), Y.dtype)
            Ys = xp.astype(Y[:, None] == classes[None, :], sdt)
            ysq = xp.asarray([float(n_b)], dtype=sdt, device=self._device)
        else:
            Ys = to_float(xp, Y, sdt)
            ysq = xp.reshape(xp.sum(Ys * Ys), (1,))
        Xt = xp.linalg.matrix_transpose(Xs)
        xx = Xt @ Xs
        check_product_finite(xp, xx, X, "X")
        xy = Xt @ Ys
        if not is_labels:
            check_product_finite(xp, xy, Y, "Y")
        batch = xp.concat([
            xp.reshape(xx, (-1,)),
            xp.reshape(xy, (-1,)),
            xp.sum(Xs, axis=0),
            xp.sum(Ys, axis=0),
            ysq,
            xp.asarray([float(n_b)], dtype=sdt, device=self._device),
        ])
        if not bool(xp.all(xp.isfinite(batch))):
            raise NonFiniteError(
                f"the full-tail statistics of this batch overflowed {sdt}; rescale the features"
            )
        self._add_sums(batch)
        return self

    def _sums_changed(self) -> None:
        self._rotated = None
        self._solver_cache = None

    def _settings(self) -> tuple:
        return (self.shape, self.fits_bias, self.target_scale)

    # ------------------------------------------------------------ statistics
    def _split(self) -> tuple[Any, Any, Any, Any, float, int]:
        xp = self._xp
        q, l = self.shape
        out, start = [], 0
        for size in self._sizes:
            out.append(self._sums[start:start + size])
            start += size
        xx, xy, sx, sy, ysq, n = out
        return xp.reshape(xx, (q, q)), xp.reshape(xy, (q, l)), sx, sy, float(ysq[0]), int(n[0])

    def _need_data(self) -> None:
        if self.n_samples == 0:
            raise DataError("the accumulator has seen no data: call update(X, Y) first")

    def scale(self) -> float:
        """The target scale ``c`` in use (computed for ``"logits"``: ``argmin_c ||c Y - (X W + 1 b^T)||``,
        with ``b`` the bias when it is in the fit, else 0, as on the paper path)."""
        if self.target_scale != "logits":
            return float(self.target_scale)
        self._need_data()
        xp = self._xp
        _, xy, _, sy, ysq, _ = self._split()
        num = float(xp.sum(to_float(xp, self._W, self._sdt) * xy))
        if self.fits_bias:  # as on the paper path: the bias counts where it is in the fit
            num += float(xp.sum(to_float(xp, self.bias, self._sdt) * sy))
        return 1.0 if ysq == 0.0 else num / ysq

    def bases(self) -> tuple[Any, Any]:
        """``(Uf, Vf)``: ``U``, ``V`` completed to orthonormal bases of the feature and class spaces."""
        if self._bases is None:
            xp = self._xp
            self._bases = (_complete(xp, to_float(xp, self.svd.U, self._sdt)),
                           _complete(xp, to_float(xp, self.svd.V, self._sdt)))
        return self._bases

    def _rotate(self) -> tuple[Any, Any, float]:
        """``(Gf, Rf, c)``: centred (when fitting the bias) Gram and cross moments in the full bases."""
        self._need_data()
        if self._rotated is None:
            xp = self._xp
            xx, xy, sx, sy, _, n = self._split()
            c = self.scale()
            if self.fits_bias:
                xx = xx - (sx[:, None] * sx[None, :]) / n
                xy = xy - (sx[:, None] * sy[None, :]) / n
            Uf, Vf = self.bases()
            Ut = xp.linalg.matrix_transpose(Uf)
            G = Ut @ xx @ Uf
            G = (G + xp.linalg.matrix_transpose(G)) / 2.0
            R = c * (Ut @ xy @ Vf)
            self._rotated = (G, R, c)
        return self._rotated

    def ridge_grid(self, factors: Sequence[float] = DEFAULT_RIDGE_FACTORS) -> tuple[float, ...]:
        """``ridge="auto"``'s absolute ``lam`` values: ``factors * trace(Xc^T Xc) / q``."""
        xp = self._xp
        G, _, _ = self._rotate()
        mean_eig = float(xp.sum(xp.linalg.diagonal(G))) / self.shape[0]
        scale = mean_eig if mean_eig > 0.0 else 1.0
        return tuple(float(f) * scale for f in factors)

    def _solver(self, k: int) -> tuple[Any, Any, Any]:
        """``(e, Q, Q^T R)`` for rank ``k``: one eigendecomposition serves every ``lam``."""
        if self._solver_cache is not None and self._solver_cache[0] == k:
            return self._solver_cache[1:]
        xp = self._xp
        G, R, _ = self._rotate()
        e, Q = xp.linalg.eigh(G[k:, k:])
        e = xp.where(e > 0.0, e, xp.zeros_like(e))
        QtR = xp.linalg.matrix_transpose(Q) @ R[k:, k:]
        self._solver_cache = (k, e, Q, QtR)
        return e, Q, QtR

    def coefficients(self, rank: int, ridge: float, /) -> Any:
        """The ridge solution ``C`` (``(q - k) x (l - k)``, stats dtype) for rank ``k`` and ``lam``."""
        k = parse_rank(rank, self.svd.rank_max, name="rank", allow_auto=False, allow_fraction=False)
        lam = check_ridge(ridge, allow_auto=False)
        e, Q, QtR = self._solver(k)
        return Q @ (QtR * _inverse(self._xp, e, lam, self.rtol)[:, None])

    def _weight(self, k: int, C: Any) -> tuple[Any, Any]:
        """``(W*, b*)`` in the stats dtype: ``W + U_perp (C - S_perp) V_perp^T`` and the refit bias."""
        xp = self._xp
        q, l = self.shape
        m = self.svd.rank_max
        Uf, Vf = self.bases()
        s_t = to_float(xp, self.svd.s[k:], self._sdt)
        S = xp.eye(m - k, dtype=self._sdt, device=self._device) * s_t[None, :]
        S = _pad(xp, S, q - k, l - k)
        U_p, V_p = Uf[:, k:], Vf[:, k:]
        W = to_float(xp, self._W, self._sdt)
        W_new = W + (U_p @ (C - S)) @ xp.linalg.matrix_transpose(V_p)
        b_new = None
        if self.fits_bias:
            _, _, sx, sy, _, n = self._split()
            b_new = (self.scale() * sy - sx @ W_new) / n
        return W_new, b_new

    def _resolve_rank(self, rank: Any) -> int:
        if rank is None:
            if self.rank is None:
                raise OptionError("rank was left open at construction: pass result(rank=...) or use scores()")
            return self.rank
        if isinstance(rank, str):
            raise OptionError(f"result() needs a fixed rank (int or energy fraction); got {rank!r} "
                                "(choose it with scores())")
        return resolve_rank(rank, self.svd.s, xp=self._xp)

    def result(self, rank: int | float | None = None, ridge: float = 0.0) -> tuple[Any, Any]:
        """``(W*, b*)`` for rank ``k`` and ridge ``lam``, ``W*`` in ``W``'s dtype.

        ``b*`` is the refit bias when the layer has a bias and ``bias_mode="fit"``,
        else None (the bias is not part of the fit). ``k = min(q, l)`` returns
        ``W`` (and the bias) unchanged (copies).
        """
        xp = self._xp
        k = self._resolve_rank(rank)
        lam = check_ridge(ridge, allow_auto=False)
        if k == self.svd.rank_max:
            W_new = xp.asarray(self._W, copy=True)
            return W_new, (xp.asarray(self.bias, copy=True) if self.fits_bias else None)
        self._need_data()
        W_new, b_new = self._weight(k, self.coefficients(k, lam))
        return self._finish(W_new, b_new)

    def _finish(self, W_new: Any, b_new: Any) -> tuple[Any, Any]:
        xp = self._xp
        if not bool(xp.all(xp.isfinite(W_new))):
            raise NonFiniteError("the full-tail refit overflowed; rescale the features or pass a larger ridge")
        W_out = to_float(xp, W_new, self.dtype)
        return W_out, (None if b_new is None else to_float(xp, b_new, self.bias.dtype))

    # ------------------------------------------------------- the repair protocol
    def scorer(self, plan: Plan | None = None, options: LIPOptions | None = None, /,
               ranks: Sequence[int] | None = None, ridges: Sequence[float] | None = None, *,
               progress: Progress | None = None) -> StackedScorer:
        """A :class:`lip_agnostic.selection.StackedScorer` over ``ranks x ridges``.

        Defaults: this accumulator's rank, or :data:`FULL_TAIL_RANK_LIMIT` ranks
        spread over ``[0, m]``; the options' numeric ridge, or :meth:`ridge_grid`.
        For each rank one eigendecomposition serves every ridge; the candidate
        weights are stacked as they are built (``K L q l`` numbers in all).
        """
        candidates = self.candidates(options, ranks, ridges)
        prog = progress if progress is not None else Progress(False)
        with prog.step("full-tail candidates", len(candidates), unit="candidate") as step:
            return StackedScorer(self._W, self.bias, self.svd.rank_max, self.name, candidates,
                                 self.builder(candidates), xp=self._xp, work=self._wdt, sdt=self._sdt,
                                 device=self._device, on_build=step.advance)

    def candidates(self, options: LIPOptions | None = None, /, ranks: Sequence[int] | None = None,
                   ridges: Sequence[float] | None = None) -> list[tuple[int, float]]:
        """The ``(k, lam)`` grid :meth:`scorer` scores (its defaults), the unchanged layer left out."""
        self._need_data()
        m = self.svd.rank_max
        if ranks is None:
            ranks = [self.rank] if self.rank is not None else candidate_ranks(0, m, FULL_TAIL_RANK_LIMIT)
        ks = check_candidates(ranks, "ranks", lambda k: parse_rank(k, m, name="candidate rank", allow_auto=False,
                                                                     allow_fraction=False))
        if ridges is None and options is not None and options.ridge not in (None, "auto"):
            ridges = [options.ridge]
        if ridges is None:
            ridges = self.ridge_grid()
        lams = check_candidates(ridges, "ridges", lambda r: check_ridge(r, allow_auto=False))
        return [(k, lam) for k in ks if k < m for lam in lams]

    def builder(self, candidates: Sequence[tuple[int, float]], /) -> Any:
        """``build(j) -> (W_j, b_j)`` for :class:`StackedScorer`, in the stats dtype: one
        eigendecomposition per rank serves every ridge (call in order)."""
        xp = self._xp
        solved: dict[int, Any] = {}

        def build(j: int) -> tuple[Any, Any]:
            k, lam = candidates[j][:2]
            if k not in solved:
                solved.clear()
                solved[k] = self._solver(k)
            e, Q, QtR = solved[k]
            return self._weight(k, Q @ (QtR * _inverse(xp, e, lam, self.rtol)[:, None]))

        return build

    def scores(
        self,
        X_val: Any,
        Y_val: Any,
        /,
        ranks: Sequence[int] | None = None,
        ridges: Sequence[float] | None = None,
        *,
        min_gain: float = 0.0,
        confidence: float | None = DEFAULT_CONFIDENCE,
    ) -> Selection:
        """Score every ``(k, lam)`` on held-out ``(X_val, Y_val)`` (one pass) and choose behind the guard."""
        return self.scorer(None, None, ranks, ridges).update(X_val, Y_val).best(min_gain, confidence)

    def fixed_selection(self, options: LIPOptions, /) -> Selection:
        """The selection of the constructor's rank with the options' numeric ridge."""
        lam = options.ridge
        return Selection(k=self.rank, m=self.svd.rank_max, strategy="fixed", ridge=lam, ridges=(lam,),
                         tail=self.name)

    def refit(self, selection: Selection, /) -> Refit:
        """``(W*, b*)`` at the selected ``(k, lam)``, the directions the data never excite, the summary."""
        xp = self._xp
        k, m = selection.k, self.svd.rank_max
        lam = 0.0 if selection.ridge is None else selection.ridge
        W_new, b_new = self.result(k, lam)
        n_deg = 0
        if k < m:
            e = self._solver(k)[0]
            ref = float(xp.max(e)) if int(e.shape[0]) else 0.0
            n_deg = count_true(xp, e <= self.rtol * ref)
        return Refit(weight=W_new, bias=None if k == m else b_new, n_degenerate=n_deg,
                     summary=summarize_change(self._W, W_new, k, svd=self.svd, xp=xp))


def _inverse(xp: Any, e: Any, lam: float, rtol: float) -> Any:
    """``1 / (e + lam)``; for ``lam = 0`` the pseudo-inverse (eigenvalues ``<= rtol max(e)`` give 0)."""
    if lam > 0.0:
        return 1.0 / (e + lam)
    ref = float(xp.max(e)) if int(e.shape[0]) else 0.0
    bad = e <= rtol * ref
    return xp.where(bad, xp.zeros_like(e), 1.0 / xp.where(bad, xp.ones_like(e), e))


def _pad(xp: Any, A: Any, rows: int, cols: int) -> Any:
    """``A`` padded with zeros to ``(rows, cols)``."""
    r, c = int(A.shape[0]), int(A.shape[1])
    dev = device_of(A)
    if cols > c:
        A = xp.concat([A, xp.zeros((r, cols - c), dtype=A.dtype, device=dev)], axis=1)
    if rows > r:
        A = xp.concat([A, xp.zeros((rows - r, cols), dtype=A.dtype, device=dev)], axis=0)
    return A


def _complete(xp: Any, U: Any) -> Any:
    """``[U, U_0]``: orthonormal columns ``U`` (``d x m``) completed to an orthonormal basis of ``R^d``.

    ``U_0`` is the trailing block of ``Q`` from the QR of ``[U, I_d]``, whose
    first ``m`` columns span ``U``'s range (``U`` has full column rank).
    """
    d, m = int(U.shape[0]), int(U.shape[1])
    if m == d:
        return U
    eye = xp.eye(d, dtype=U.dtype, device=device_of(U))
    Q, _ = xp.linalg.qr(xp.concat([U, eye], axis=1))
    U0 = Q[:, m:d]
    # One re-orthogonalisation pass against U keeps U_0 orthogonal to the kept vectors to rounding.
    U0 = U0 - U @ (xp.linalg.matrix_transpose(U) @ U0)
    Q0, _ = xp.linalg.qr(U0)
    return xp.concat([U, Q0], axis=1)
