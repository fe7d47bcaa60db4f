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
   held-out data in one pass (:class:`FullTailScorer`), and the choice goes
   through the same significance guard (sign test, ``confidence``,
   ``min_gain``) as the paper path's :class:`lip_agnostic.RankScorer`, with
   Bonferroni over all the candidates; when none qualifies the layer is left
   as it is (``k = m``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from ._arrays import (
    as_features,
    as_targets,
    check_finite,
    check_product_finite,
    device_of,
    namespace,
    stats_dtype,
    to_float,
)
from .accumulator import TargetScale
from .errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from .options import parse_bias_mode, parse_rank
from .principal import SVD, reduced_svd, resolve_rank
from .rank import DEFAULT_CONFIDENCE, RankSelection, _hits, _onehot_mask, _p_values, _row_max, _significant, candidate_ranks

__all__ = [
    "FullTailAccumulator",
    "FullTailScorer",
    "FullTailSelection",
    "full_tail_refine",
    "DEFAULT_RIDGE_FACTORS",
    "FULL_TAIL_RANK_LIMIT",
    "AUTO_TAIL_MEMORY_BYTES",
    "check_tail",
    "chooses_on_validation",
    "resolve_tail",
]

#: ``ridge="auto"`` scores ``lam = f * trace(Xc^T Xc) / q`` for each factor ``f``
#: (the mean eigenvalue of the centred Gram sets the scale, so the grid means
#: the same for any feature scale or sample count).
DEFAULT_RIDGE_FACTORS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)

#: ``rank="auto"`` scores at most this many ranks (one eigendecomposition of a
#: ``(q - k) x (q - k)`` matrix each), spread as :func:`lip_agnostic.candidate_ranks` does.
FULL_TAIL_RANK_LIMIT = 16

#: ``tail="auto"`` runs the full tail's ``rank="auto"`` search only when its candidate
#: weights and statistics fit in this many bytes (about ``80 q l`` weight copies plus
#: ``q^2 + 2 q l`` float64 statistics); a larger head gets the paper's diagonal refit.
AUTO_TAIL_MEMORY_BYTES = 1 << 30


def _auto_tail_bytes(q: int, l: int, itemsize: int) -> int:
    m = min(q, l)
    n_candidates = min(FULL_TAIL_RANK_LIMIT, m + 1) * len(DEFAULT_RIDGE_FACTORS) + 1
    return n_candidates * q * l * int(itemsize) + 8 * (q * q + 2 * q * l)


def resolve_tail(tail: Any, rank: Any, shape: tuple[int, int], /, *, ridge: Any = None,
                 degenerate: Any = "zero", itemsize: int = 4) -> tuple[str, str]:
    """The refit ``tail="auto"`` stands for, and why (the faces' default).

    Steps
    -----
    1. ``"diagonal"`` (the paper) and ``"full"`` (beyond the paper) stand for
       themselves.
    2. ``"auto"`` with an explicit ``ridge``: ``"full"`` (only it has a ridge);
       with ``degenerate="keep"``: ``"diagonal"`` (only it has that option).
    3. ``"auto"`` with a fixed or energy ``rank``: ``"diagonal"`` (in the
       committed study, docs/EVIDENCE.md, the full tail at a fixed ``k`` lost
       in every row).
    4. ``"auto"`` with ``rank="auto"``: ``"full"`` (the guarded choice of
       ``(k, lam)`` on held-out data met the study's adoption rule; it leaves
       the layer unchanged when the guard does not pass), unless its search
       would need more than :data:`AUTO_TAIL_MEMORY_BYTES` for a ``(q, l)``
       head, then ``"diagonal"``.

    Parameters
    ----------
    tail : {"auto", "diagonal", "full"}
    rank : int, float or "auto" (already parsed)
    shape : (q, l)
    ridge : float or "auto", optional
    degenerate : {"zero", "keep"}
    itemsize : int
        Bytes per element of the weight.

    Returns
    -------
    (str, str)
        ``"diagonal"`` or ``"full"``, and a one-line reason.

    Examples
    --------
    >>> resolve_tail("auto", "auto", (64, 10))[0]
    'full'
    >>> resolve_tail("auto", 5, (64, 10))[0]
    'diagonal'
    """
    if tail in ("diagonal", "full"):
        return tail, "requested"
    if tail != "auto":
        raise OptionError(f"tail must be 'auto', 'diagonal' (the paper) or 'full' (beyond the paper); got {tail!r}")
    if ridge is not None:
        return "full", "tail='auto' with a ridge: the full-tail refit (beyond the paper)"
    if degenerate != "zero":
        return "diagonal", f"tail='auto' with degenerate={degenerate!r}: the paper's diagonal refit"
    if not (isinstance(rank, str) and rank == "auto"):
        return "diagonal", "tail='auto' with a fixed rank: the paper's diagonal refit"
    q, l = int(shape[0]), int(shape[1])
    need = _auto_tail_bytes(q, l, itemsize)
    if need > AUTO_TAIL_MEMORY_BYTES:
        return "diagonal", (f"tail='auto': the full-tail search for a {q} x {l} head needs ~{need / 2**30:.1f} GiB "
                            f"(limit {AUTO_TAIL_MEMORY_BYTES / 2**30:.1f} GiB): the paper's diagonal refit")
    return "full", "tail='auto' with rank='auto': the guarded full-tail choice (beyond the paper)"


def _check_ridge(ridge: Any, *, allow_auto: bool = True) -> float | str:
    what = "a number >= 0 or 'auto'" if allow_auto else "a number >= 0"
    if isinstance(ridge, str):
        if allow_auto and ridge == "auto":
            return "auto"
        raise OptionError(f"ridge must be {what}; got {ridge!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real):
        raise OptionTypeError(f"ridge must be {what}; got {ridge!r}")
    lam = float(ridge)
    if not (lam >= 0.0 and math.isfinite(lam)):
        raise OptionError(f"ridge must be a finite number >= 0; got {ridge!r}")
    return lam




def _check_target_scale(target_scale: Any) -> TargetScale:
    if isinstance(target_scale, str):
        if target_scale != "logits":
            raise OptionError(f"target_scale must be a positive number or 'logits'; got {target_scale!r}")
        return target_scale
    if isinstance(target_scale, bool) or not isinstance(target_scale, numbers.Real):
        raise OptionTypeError(f"target_scale must be a positive number or 'logits'; got {target_scale!r}")
    c = float(target_scale)
    if not (c > 0.0 and math.isfinite(c)):
        raise OptionError(f"target_scale must be a positive number or 'logits'; got {target_scale!r}")
    return c


def check_tail(tail: Any, ridge: Any, degenerate: Any) -> bool:
    """Validate ``tail`` (and the options that belong to one tail only); True for ``"full"``."""
    if tail == "full":
        if degenerate != "zero":
            raise OptionError(f"degenerate={degenerate!r} applies to tail='diagonal' only")
        return True
    if tail != "diagonal":
        raise OptionError(f"tail must be 'diagonal' (the paper) or 'full' (beyond the paper); got {tail!r}")
    if ridge is not None:
        raise OptionError(f"ridge={ridge!r} applies to tail='full' only (the paper's diagonal refit has no ridge)")
    return False


def chooses_on_validation(rank: Any, tail: Any = "auto", ridge: Any = None) -> bool:
    """Whether these options choose something on held-out data: ``rank="auto"``, or
    ``tail="full"`` with ``ridge="auto"`` (its default). Faces use it to accept or refuse
    validation data; ``tail=None`` stands for the default, ``"auto"``."""
    if isinstance(rank, str) and rank == "auto":
        return True
    if tail is None:
        tail = "auto"
    if tail == "auto":  # with a fixed rank: the full tail only when a ridge is given
        tail = "full" if ridge is not None else "diagonal"
    return tail == "full" and (ridge is None or (isinstance(ridge, str) and ridge == "auto"))

@dataclass(frozen=True)
class FullTailSelection(RankSelection):
    """The ``(k, lam)`` a held-out pass chose for the full-tail refit (beyond the paper).

    Attributes (besides :class:`lip_agnostic.RankSelection`'s)
    ----------
    ks : tuple of int
        The candidate ranks scored (``m``, the unchanged layer, last).
    scores : tuple of float
        Per entry of ``ks``: the best held-out score over the ridge grid
        (``base_score`` for ``k = m``).
    ridge : float or None
        The chosen ``lam`` (None when the layer is left unchanged).
    ridges : tuple of float
        The ridge grid (absolute values of ``lam``).
    table : tuple of tuple of float
        ``table[i][j]``: held-out score of ``(ks[i], ridges[j])`` for every ``ks[i] < m``.
    tail : str
        ``"full"``.
    """

    ridge: float | None = None
    ridges: tuple[float, ...] = ()
    table: tuple[tuple[float, ...], ...] = ()
    tail: str = "full"

    @property
    def best_score(self) -> float | None:
        """Held-out score at the chosen ``(k, lam)`` (the unchanged model's when ``k = m``)."""
        if self.strategy != "auto":
            return None
        if self.k == self.m or self.ridge is None:
            return self.base_score
        return self.table[self.ks.index(self.k)][self.ridges.index(self.ridge)]

    def to_dict(self) -> dict:
        """JSON-friendly view."""
        d = super().to_dict()
        d["ridges"] = list(self.ridges)
        d["table"] = [list(r) for r in self.table]
        d["beyond_paper"] = True
        return d


class FullTailAccumulator:
    """Streaming statistics for the full-tail ridge refit of a ``(q, l)`` weight (beyond the paper).

    Feed ``(X, Y)`` batches with :meth:`update`; :meth:`result` returns
    ``W*`` (and the refit bias); :meth:`scores` chooses ``(k, lam)`` on
    held-out data. The module docstring (:mod:`lip_agnostic.full_tail`) gives
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
    >>> acc.result(ridge=0.1).shape
    (8, 4)
    """

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
        xp = namespace(W, bias, xp=xp)
        self._xp = xp
        if svd is None:
            svd = reduced_svd(W, xp=xp)
        elif not isinstance(svd, SVD):
            raise OptionTypeError(f"svd must be a lip_agnostic.SVD (from reduced_svd); got {type(svd).__name__}")
        q, l = int(W.shape[0]), int(W.shape[1])
        m = min(q, l)
        want = ((q, m), (m,), (l, m))
        got = (tuple(svd.U.shape), tuple(svd.s.shape), tuple(svd.V.shape))
        if got != want:
            raise DataError(f"svd factors (U, s, V) must have shapes {want} for W of shape {(q, l)}; got {got}")
        self.svd: SVD = svd
        self.shape = (q, l)
        self.dtype = W.dtype
        self._W = W
        self._device = device_of(W)
        self.bias_mode = parse_bias_mode(bias_mode)
        self.target_scale = _check_target_scale(target_scale)
        if isinstance(rank, str):
            raise OptionError(f"rank must be an int, an energy fraction in (0, 1], or None here; got {rank!r} "
                                "(choose it with scores())")
        self.rank = None if rank is None else resolve_rank(rank, svd.s, xp=xp)
        wdt = svd.s.dtype
        if bias is not None:
            if getattr(bias, "ndim", None) != 1 or int(bias.shape[0]) != l:
                raise DataError(f"bias must have shape ({l},) for W of shape {(q, l)}; "
                                  f"got {tuple(getattr(bias, 'shape', ()))}")
            if not xp.isdtype(bias.dtype, "real floating"):
                raise DataTypeError(f"bias must have a real floating dtype; got {bias.dtype}")
            check_finite(xp, bias, "bias")
            bias = to_float(xp, bias, wdt)
        self.bias = bias
        self.fits_bias = bias is not None and self.bias_mode == "fit"
        self._wdt = wdt
        self._sdt = sdt = stats_dtype(xp, self._device)
        self.rtol = float(q * xp.finfo(sdt).eps) if rtol is None else float(rtol)
        if not (self.rtol >= 0.0 and math.isfinite(self.rtol)):
            raise OptionError(f"rtol must be a finite number >= 0; got {rtol!r}")
        # Layout of the flat sums: X^T X (q q) | X^T Y (q l) | 1^T X (q) | 1^T Y (l) | ||Y||^2 | n
        self._sizes = (q * q, q * l, q, l, 1, 1)
        self._sums = xp.zeros((sum(self._sizes),), dtype=sdt, device=self._device)
        self._bases: tuple[Any, Any] | None = None
        self._rotated: tuple[Any, Any, float] | None = None
        self._solver_cache: tuple[int, Any, Any, Any] | None = None

    # ------------------------------------------------------------------ data
    @property
    def n_samples(self) -> int:
        """How many samples the sums hold."""
        return int(self._sums[-1])

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
        self._sums = self._sums + batch
        self._rotated = None
        self._solver_cache = None
        return self

    @property
    def partial_sums(self) -> Any:
        """The sufficient statistics as one flat array (sum-reducible across workers)."""
        return self._sums

    def load_partial_sums(self, sums: Any, /) -> "FullTailAccumulator":
        """Replace the statistics, e.g. with their all-reduced total."""
        xp = self._xp
        if getattr(sums, "shape", None) is None or tuple(sums.shape) != tuple(self._sums.shape):
            raise DataError(
                f"partial sums must have shape {tuple(self._sums.shape)}; got {tuple(getattr(sums, 'shape', ()))}"
            )
        sums = xp.astype(xp.asarray(sums, device=self._device), self._sdt)
        if not bool(xp.all(xp.isfinite(sums))):
            raise NonFiniteError("partial sums contain NaN/Inf")
        self._sums = sums
        self._rotated = None
        self._solver_cache = None
        return self

    def merge(self, other: "FullTailAccumulator", /) -> "FullTailAccumulator":
        """Add another accumulator's statistics (same weight and settings)."""
        if not isinstance(other, FullTailAccumulator):
            raise DataTypeError(f"can only merge a FullTailAccumulator; got {type(other).__name__}")
        mine = (self.shape, self.fits_bias)
        theirs = (other.shape, other.fits_bias)
        if mine != theirs:
            raise OptionError(f"cannot merge accumulators with different (shape, fits bias): {mine} vs {theirs}")
        xp = self._xp
        s0, s1 = self.svd.s, xp.asarray(other.svd.s, device=self._device)
        if not bool(xp.all(xp.abs(s0 - s1) <= 1e-5 * (xp.abs(s0) + 1e-30))):
            raise OptionError("cannot merge accumulators built from different weights (spectra differ)")
        return self.load_partial_sums(self._sums + xp.asarray(other._sums, device=self._device))

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
        lam = _check_ridge(ridge, allow_auto=False)
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

    def result(self, rank: int | float | None = None, ridge: float = 0.0) -> Any:
        """``W*`` for rank ``k`` and ridge ``lam`` in ``W``'s dtype — with the refit bias as
        ``(W*, b*)`` when the layer has a bias and ``bias_mode="fit"``.

        ``k = min(q, l)`` returns ``W`` (and the bias) unchanged (copies).
        """
        xp = self._xp
        k = self._resolve_rank(rank)
        lam = _check_ridge(ridge, allow_auto=False)
        if k == self.svd.rank_max:
            W_new = xp.asarray(self._W, copy=True)
            return (W_new, xp.asarray(self.bias, copy=True)) if self.fits_bias else W_new
        self._need_data()
        W_new, b_new = self._weight(k, self.coefficients(k, lam))
        return self._finish(W_new, b_new)

    def _finish(self, W_new: Any, b_new: Any) -> Any:
        xp = self._xp
        if not bool(xp.all(xp.isfinite(W_new))):
            raise NonFiniteError("the full-tail refit overflowed; rescale the features or pass a larger ridge")
        W_out = to_float(xp, W_new, self.dtype)
        if b_new is None:
            return W_out
        return W_out, to_float(xp, b_new, self.bias.dtype)

    # --------------------------------------------------------------- choice
    def scorer(self, ranks: Sequence[int] | None = None, ridges: Sequence[float] | None = None) -> "FullTailScorer":
        """A :class:`FullTailScorer` over ``ranks`` x ``ridges`` (defaults: this accumulator's
        rank, or a grid over ``[0, m]``; :meth:`ridge_grid`)."""
        return FullTailScorer(self, ranks=ranks, ridges=ridges)

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
    ) -> FullTailSelection:
        """Score every ``(k, lam)`` on held-out ``(X_val, Y_val)`` (one pass) and choose,
        behind the paper path's significance guard (see :class:`FullTailScorer`)."""
        return self.scorer(ranks, ridges).update(X_val, Y_val).best(min_gain, confidence)


class FullTailScorer:
    """Held-out score of the full-tail ``W*(k, lam)`` for a grid of ``(k, lam)`` in one
    streaming pass, with a paired test against the unchanged model (beyond the paper).

    Steps
    -----
    1. At construction: for each candidate ``k < m``, one eigendecomposition of
       ``G_k`` gives ``C(lam)`` for every ``lam`` (see :mod:`lip_agnostic.full_tail`);
       the ``W*(k, lam)`` and biases are stacked (``K L q l`` numbers).
    2. Per held-out batch: the logits of the unchanged layer ``X W + 1 b^T`` and
       of every candidate; the per-sample hit of ``argmax`` (as
       :class:`lip_agnostic.RankScorer`: 1 for the right label, ``Y[i, pred] /
       max_j Y[i, j]`` for a target matrix); per candidate the hits and the
       paired wins and losses against the unchanged model.
    3. :meth:`best`: the guard of :meth:`lip_agnostic.RankScorer.best` —
       a candidate qualifies if its score beats the unchanged model by more
       than ``min_gain`` and a one-sided sign test passes at ``confidence``,
       Bonferroni over all ``K L`` candidates; the best qualifying score wins
       (ties: larger ``k``, then larger ``lam``); none: the layer is left as it is.

    The sums are one flat array (:attr:`partial_sums`) that workers can all-reduce.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import FullTailAccumulator
    >>> rng = np.random.default_rng(0)
    >>> W, X, y = rng.normal(size=(6, 3)), rng.normal(size=(80, 6)), rng.integers(0, 3, 80)
    >>> sel = FullTailAccumulator(W).update(X, y).scorer().update(X, y).best()
    >>> 0 <= sel.k <= 3
    True
    """

    def __init__(self, accumulator: FullTailAccumulator, /, ranks: Sequence[int] | None = None,
                 ridges: Sequence[float] | None = None) -> None:
        if not isinstance(accumulator, FullTailAccumulator):
            raise OptionTypeError(f"FullTailScorer needs a FullTailAccumulator; got {type(accumulator).__name__}")
        acc = self._acc = accumulator
        xp = self._xp = acc._xp
        acc._need_data()
        m = acc.svd.rank_max
        if ranks is None:
            ranks = [acc.rank] if acc.rank is not None else candidate_ranks(0, m, FULL_TAIL_RANK_LIMIT)
        if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__"):
            raise OptionError(f"ranks must be a sequence of integers in [0, {m}]; got {ranks!r}")
        ks = sorted({parse_rank(k, m, name="candidate rank", allow_auto=False, allow_fraction=False)
                     for k in ranks} | {m})
        if ridges is None:
            ridges = acc.ridge_grid()
        if isinstance(ridges, (str, bytes)) or not hasattr(ridges, "__iter__"):
            raise OptionError(f"ridges must be a sequence of numbers >= 0; got {ridges!r}")
        lams = sorted({_check_ridge(r, allow_auto=False) for r in ridges})
        if not lams:
            raise OptionError("ridges must hold at least one number >= 0")
        self.ks = tuple(ks)
        self.ridges = tuple(lams)
        self.candidates: tuple[tuple[int, float], ...] = tuple((k, lam) for k in ks if k < m for lam in lams)
        # Candidates are scored in groups: one (q, g l) matmul per group and batch instead of g small
        # ones (the per-call overhead dominated on small heads); g l <= SCORE_GROUP_COLUMNS bounds the
        # (n_b, g l) logits of a batch. Each group is stacked as it is built (no second full copy).
        l = int(acc.shape[1])
        group = max(1, SCORE_GROUP_COLUMNS // max(l, 1))
        self._groups: list[tuple[Any, Any, int]] = []
        Ws, bs = [], []

        def flush() -> None:
            if Ws:
                Wg = xp.concat(Ws, axis=1)
                Bg = None
                if acc.bias is not None:
                    Bg = xp.stack(bs, axis=0) if acc.fits_bias else xp.stack([to_float(xp, acc.bias, acc._wdt)] * len(Ws))
                self._groups.append((Wg, Bg, len(Ws)))
                Ws.clear()
                bs.clear()

        for k in ks[:-1]:
            e, Q, QtR = acc._solver(k)
            for lam in lams:
                W_new, b_new = acc._weight(k, Q @ (QtR * _inverse(xp, e, lam, acc.rtol)[:, None]))
                Ws.append(to_float(xp, W_new, acc._wdt))
                if b_new is not None:
                    bs.append(to_float(xp, b_new, acc._wdt))
                if len(Ws) == group:
                    flush()
        flush()
        self._W = to_float(xp, acc._W, acc._wdt)
        self._J = len(self.candidates) + 1  # + the unchanged layer, last
        # Layout: hits (J) | wins (J) | losses (J) | n
        self._sums = xp.zeros((3 * self._J + 1,), dtype=acc._sdt, device=acc._device)

    @property
    def partial_sums(self) -> Any:
        """Hits, wins and losses per candidate (unchanged layer last), then the sample count."""
        return self._sums

    def load_partial_sums(self, sums: Any, /) -> "FullTailScorer":
        """Replace the sums, e.g. with their all-reduced total."""
        if getattr(sums, "shape", None) is None or tuple(sums.shape) != tuple(self._sums.shape):
            raise DataError(
                f"partial sums must have shape {tuple(self._sums.shape)}; got {tuple(getattr(sums, 'shape', ()))}"
            )
        self._sums = self._xp.astype(sums, self._sums.dtype)
        return self

    @property
    def n_samples(self) -> int:
        """Held-out samples scored so far."""
        return int(self._sums[-1])

    def update(self, X: Any, Y: Any, /) -> "FullTailScorer":
        """Score a held-out batch: features ``(n_b, q)``, labels ``(n_b,)`` or targets ``(n_b, l)``."""
        xp, acc = self._xp, self._acc
        namespace(acc._W, X, Y)
        q, l = acc.shape
        X = as_features(xp, X, q, acc._wdt, "X_val", finite=False)
        Y, is_labels = as_targets(xp, Y, int(X.shape[0]), l, acc._wdt, "Y_val")
        sdt = acc._sdt
        rowmax = None if is_labels else _row_max(xp, Y)
        Z = X @ self._W
        check_product_finite(xp, Z, X, "X_val")
        if acc.bias is not None:
            Z = Z + acc.bias
        n_b = int(X.shape[0])
        # Wins and losses compare what the hit is made of (the label match; for a target matrix the
        # picked entry ``Y[i, pred]``, exact), not the quotient by the row maximum, whose rounding a
        # fused kernel (XLA) may compute differently for the stacked candidates and the base.
        if is_labels:
            base = ref = _hits(xp, Z, Y, is_labels, rowmax, sdt)
        else:
            picked0 = xp.sum(xp.where(_onehot_mask(xp, xp.argmax(Z, axis=1), l, device_of(Y)), Y,
                                      xp.zeros_like(Y)), axis=1)
            base, ref = xp.astype(picked0 / rowmax, sdt), xp.astype(picked0, sdt)
        hits, wins, losses = [], [], []
        classes = xp.arange(l, device=acc._device)
        for Wg, Bg, g in self._groups:
            Zg = xp.reshape(X @ Wg, (n_b, g, l))
            if Bg is not None:
                Zg = Zg + Bg[None, :, :]
            pred = xp.argmax(Zg, axis=2)  # (n_b, g), the platform's index dtype
            if is_labels:
                h = xp.astype(pred == xp.astype(Y, pred.dtype)[:, None], sdt)
                cmp = h
            else:
                mask = pred[:, :, None] == xp.astype(classes, pred.dtype)[None, None, :]
                picked = xp.sum(xp.where(mask, Y[:, None, :], xp.zeros_like(Y[:, None, :])), axis=2)
                h = xp.astype(picked / rowmax[:, None], sdt)
                cmp = xp.astype(picked, sdt)
            hits.append(xp.sum(h, axis=0))
            wins.append(xp.sum(xp.astype(cmp > ref[:, None], sdt), axis=0))
            losses.append(xp.sum(xp.astype(cmp < ref[:, None], sdt), axis=0))
        zero = xp.zeros((1,), dtype=sdt, device=acc._device)
        count = xp.asarray([float(n_b)], dtype=sdt, device=acc._device)
        self._sums = self._sums + xp.concat(
            hits + [xp.reshape(xp.sum(base), (1,))] + wins + [zero] + losses + [zero] + [count])
        return self

    @property
    def _Ws(self) -> list[Any]:
        """The candidate weights ``W*(k, lam)`` (order of :attr:`candidates`), as views of the groups."""
        l = int(self._acc.shape[1])
        return [Wg[:, i * l:(i + 1) * l] for Wg, _, g in self._groups for i in range(g)]

    def _block(self, j: int) -> tuple[float, ...]:
        J = self._J
        return tuple(float(v) for v in self._sums[j * J:(j + 1) * J])

    def scores(self) -> tuple[float, ...]:
        """Mean hit score per candidate (order of :attr:`candidates`, then the unchanged layer)."""
        n = self.n_samples
        if n == 0:
            raise DataError("the scorer has seen no held-out data: call update(X_val, Y_val) first")
        return tuple(h / n for h in self._block(0))

    def best(self, min_gain: float = 0.0, confidence: float | None = DEFAULT_CONFIDENCE) -> FullTailSelection:
        """The best-scoring ``(k, lam)`` among the candidates that significantly beat the unchanged layer."""
        if isinstance(min_gain, bool) or not isinstance(min_gain, numbers.Real) or not math.isfinite(min_gain):
            raise OptionError(f"min_gain must be a finite number; got {min_gain!r}")
        scores = self.scores()
        wins, losses = self._block(1), self._block(2)
        pvals = _p_values(wins, losses)
        base = scores[-1]
        ok = _significant(scores, pvals, base, min_gain, confidence, tests=self._J - 1)
        m = self._acc.svd.rank_max
        k, lam = m, None
        if ok:
            i = max(ok, key=lambda i: (scores[i], self.candidates[i][0], self.candidates[i][1]))
            k, lam = self.candidates[i]
        L = len(self.ridges)
        table = tuple(tuple(scores[i * L:(i + 1) * L]) for i in range(len(self.ks) - 1))
        per_rank = tuple(max(row) for row in table) + (base,)
        return FullTailSelection(
            k=k, m=m, strategy="auto", ks=self.ks, scores=per_rank, base_score=base, n_val=self.n_samples,
            extra={"min_gain": float(min_gain), "confidence": confidence, "candidates": [list(c) for c in self.candidates],
                   "p_values": list(pvals[:-1]), "wins": list(wins[:-1]), "losses": list(losses[:-1])},
            ridge=lam, ridges=self.ridges, table=table,
        )


#: Columns of the stacked candidate logits a :class:`FullTailScorer` computes per matmul (``g l``
#: for a group of ``g`` candidates of an ``l``-class head).
SCORE_GROUP_COLUMNS = 8192


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


def full_tail_refine(
    W: Any,
    X: Any,
    Y: Any,
    rank: int | float | str,
    /,
    *,
    bias: Any = None,
    bias_mode: str = "fit",
    ridge: float | str = "auto",
    target_scale: TargetScale = 1.0,
    validation: tuple[Any, Any] | None = None,
    min_gain: float = 0.0,
    confidence: float | None = DEFAULT_CONFIDENCE,
    rtol: float | None = None,
    batch_rows: int = 16384,
    xp: Any = None,
) -> Any:
    """Full-tail LIP (beyond the paper): keep the top-``k`` components, ridge-refit the whole complement.

    Steps
    -----
    1. ``W = U diag(s) V^T``; keep ``W_k = U_k diag(s_k) V_k^T`` exactly (PSP, as the paper).
    2. Stream ``(X, Y)`` in chunks of ``batch_rows`` rows into the sufficient
       statistics ``X^T X``, ``X^T Y``, column sums, ``||Y||^2``, ``n``.
    3. Targets ``T = c Y`` (``target_scale``); with a bias and ``bias_mode="fit"``,
       ``X`` and ``T`` are centred and the bias is refit as
       ``b* = mean(T) - mean(X) W*``.
    4. ``C = (U_perp^T Xc^T Xc U_perp + lam I)^-1 U_perp^T Xc^T Tc V_perp``
       (one eigendecomposition per ``k`` serves every ``lam``), the minimizer of
       ``||Xc (W_k + U_perp C V_perp^T) - Tc||^2 + lam ||C||^2``.
    5. ``W* = W_k + U_perp C V_perp^T``. ``rank="auto"`` and/or ``ridge="auto"``
       score every ``(k, lam)`` on ``validation`` in one pass behind the paper
       path's significance guard; when no candidate passes it, ``W`` is returned
       unchanged.

    Parameters
    ----------
    W : array, shape (q, l)
    X : array, shape (n, q)
    Y : array, shape (n,) of int, or (n, l)
    rank : int, float in (0, 1], or "auto"
        Components kept; ``0`` is a ridge head, ``min(q, l)`` returns ``W``.
    bias : array, shape (l,), optional
    bias_mode : {"fit", "ignore"}
        ``"fit"`` (with a bias): centre and refit the bias; ``"ignore"``: fit
        ``T`` with no intercept and keep the bias (used for scoring only).
    ridge : float >= 0 or "auto"
        ``lam`` (absolute, in the units of ``||X C||^2``); ``"auto"`` scores
        ``DEFAULT_RIDGE_FACTORS * trace(Xc^T Xc) / q``.
    target_scale : float or "logits"
    validation : tuple (X_val, Y_val), optional
        Held-out data (noisy labels are fine), needed when ``rank`` or
        ``ridge`` is ``"auto"``.
    min_gain, confidence
        The significance guard, as in :func:`lip_agnostic.lip_refine`.
    rtol : float, optional
        Eigenvalue cut-off for ``ridge=0`` (minimum-norm solution).
    batch_rows : int

    Returns
    -------
    array (q, l), or tuple (W*, b*)
        ``W*`` in ``W``'s library, device and dtype; when a ``bias`` is given
        and ``bias_mode="fit"``, the pair ``(W*, b*)`` (the refit bias; the
        given one when the layer is left unchanged).

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import full_tail_refine
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(16, 5))
    >>> X = rng.normal(size=(200, 16)); y = rng.integers(0, 5, 200)
    >>> full_tail_refine(W, X, y, 2, ridge=1.0).shape
    (16, 5)
    """
    xp = namespace(W, X, Y, bias, xp=xp)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, numbers.Integral) or batch_rows < 1:
        raise OptionError(f"batch_rows must be a positive integer; got {batch_rows!r}")
    auto_rank = isinstance(rank, str)
    if auto_rank and rank != "auto":
        raise OptionError(f"rank must be an int, an energy fraction in (0, 1], or 'auto'; got {rank!r}")
    if isinstance(rank, bool):
        raise OptionError(f"rank must be an int, an energy fraction in (0, 1], or 'auto'; got {rank!r}")
    lam = _check_ridge(ridge)
    if validation is not None and (not isinstance(validation, (tuple, list)) or len(validation) != 2):
        raise OptionError("validation must be a tuple (X_val, Y_val)")
    if (auto_rank or lam == "auto") and validation is None:
        raise OptionError(
            "rank='auto' / ridge='auto' choose on held-out data: pass validation=(X_val, Y_val), "
            "or a fixed rank and a number ridge=..."
        )
    n_x = int(X.shape[0]) if getattr(X, "ndim", 0) >= 1 else -1
    n_y = int(Y.shape[0]) if getattr(Y, "ndim", 0) >= 1 else -1
    if n_x != n_y:
        raise DataError(f"X and Y must have the same number of rows; got X {tuple(getattr(X, 'shape', ()))} "
                          f"and Y {tuple(getattr(Y, 'shape', ()))}")
    if n_x == 0:
        raise DataError("X and Y are empty: the full-tail refit needs at least one sample")
    acc = FullTailAccumulator(W, None if auto_rank else rank, bias=bias, bias_mode=bias_mode,
                              target_scale=target_scale, rtol=rtol, xp=xp)
    for start in range(0, n_x, batch_rows):
        stop = min(start + batch_rows, n_x)
        acc.update(X[start:stop, ...], Y[start:stop, ...])
    if not auto_rank and lam != "auto":
        return acc.result(acc.rank, lam)
    X_val, Y_val = validation
    sel = acc.scores(X_val, Y_val, None, None if lam == "auto" else [lam], min_gain=min_gain, confidence=confidence)
    return acc.result(sel.k, 0.0 if sel.ridge is None else sel.ridge)
