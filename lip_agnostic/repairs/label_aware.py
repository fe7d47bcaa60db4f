"""Label-aware heads (``label_repair``): refit the head without, or with corrected, suspect labels.

**Beyond the paper.** The full tail (:mod:`lip_agnostic.repairs.full_tail`)
refits the head against every noisy label alike, so it still learns the flips.
This repair adds candidates that first find the labels that look wrong, from
out-of-fold scores of the same features (no retraining), and then refit a
ridge head (``k = 0``, the bias refit) on

* ``"filter"``: the rows not flagged;
* ``"relabel"``: every row, the flagged ones with the suggested label;
* ``"neighbours"``: every row, relabelled where the labels of its ``k = 10``
  nearest reference rows (cosine, on the same features) out-vote its own;

next to the full tail's own candidates (labels as given). The one guard
(:meth:`lip_agnostic.selection.HeldOutScorer.best`) picks among all of them on
held-out data, or leaves the layer unchanged.

How it works (two passes over the fit rows, then the held-out pass)
-------------------------------------------------------------------
1. First pass: the full tail's statistics (``X^T X``, ``X^T Y``, sums) and,
   per fold ``i mod K`` of the stream position, the same statistics
   (:class:`lip_agnostic.out_of_fold.OutOfFoldAccumulator`). Integer labels only.
2. ``K`` fold heads, each a ridge fit on "total minus fold" (closed form).
3. Second pass (the same rows in the same order; a one-shot generator is refused
   before the first): every row's out-of-fold logits ``z_i``. The pass keeps
   ``z`` (``O(n l)``) and the features of the rows whose out-of-fold argmax is
   not their given label (``O(n_d q)``, ``n_d`` about the noise rate times ``n``):
   confident learning never flags a row whose given label is its argmax.
4. One temperature ``T`` fit on ``z`` against the given labels, then confident
   learning (Northcutt et al. 2021, cleanlab's default rule) on
   ``softmax(T z)``: the flags ``F``, each with a suggested label ``s_i``.
5. The flagged rows' statistics come off the totals: for ``"filter"``
   ``X^T X - X_F^T X_F``, ``X^T Y - X_F^T Y_F``, ``1^T X - 1^T X_F``, ...;
   for ``"relabel"`` only the cross moments change,
   ``X^T Y - X_F^T (Y_F - S_F)`` (``S_F`` the one-hot suggestions).
6. ``"neighbours"``: the first pass also keeps up to ``m`` reference rows
   (deterministically: every ``s``-th fit row, ``s`` doubling whenever ``m``
   are held); in the second pass every row's vote among its ``k`` nearest
   references (:class:`lip_agnostic.neighbours.ReferenceVote`) relabels it
   where another class has more votes, and ``X^T (S - Y)`` of those rows is
   added to the cross moments as it streams (no per-row state).
7. Each variant's head is the full tail's ``k = 0`` estimator on its
   statistics (centred when the bias is refit, target scale ``c``):
   ``W = (Gc + lam I)^-1 c Rc``, ``b = (c sy - sx^T W) / n``, on the full
   tail's ridge grid (one eigendecomposition per variant serves every ``lam``).

Memory: the full tail's ``O(q^2 + q l)`` plus ``K`` times that for the folds,
``O(n l)`` out-of-fold logits, ``O(n_d q)`` kept features and ``O(m q)``
reference rows. The statistics of
step 1 are mergeable (:meth:`LabelAwareRepair.merge`); steps 3-5 need every fit
row in one process (confident learning ranks rows across the whole set), so the
driver refuses an ``all_reduce`` with this repair.

Examples
--------
>>> import numpy as np
>>> from lip_agnostic import refine_batches
>>> rng = np.random.default_rng(0)
>>> M = rng.normal(size=(16, 4)); X = rng.normal(size=(3000, 16)); y = np.argmax(X @ M, 1)
>>> noisy = np.where(rng.random(3000) < 0.3, (y + 1) % 4, y)
>>> Xv = rng.normal(size=(800, 16)); yv = np.argmax(Xv @ M, 1)
>>> W = rng.normal(size=(16, 4)) * 0.1
>>> res = refine_batches(W, [(X, noisy)], validation=(Xv, yv), label_repair="auto", progress=False)
>>> res.selection.labels in ("filter", "relabel"), res.label_issues.n_flagged > 500
(True, True)
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

from .._arrays import as_features, count_true, device_of, namespace, to_float
from ..confident_learning import confident_learning
from ..errors import DataError, DataTypeError, OptionError
from ..label_issues import LabelIssues
from ..neighbours import DEFAULT_NEIGHBOURS, ReferenceVote, vote_flags
from ..options import LIPOptions, Plan, TargetScale
from ..out_of_fold import DEFAULT_FOLDS, DEFAULT_OOF_RIDGE, OutOfFoldAccumulator
from ..progress import Progress
from ..report import summarize_change
from ..selection import Selection, StackedScorer
from ..svd import SVD
from ..temperature import fit_temperature
from .base import Refit
from .full_tail import FullTailAccumulator, _inverse

__all__ = ["LabelAwareRepair", "LABEL_REPAIRS"]

#: ``label_repair`` values and the label variants each adds to the candidates.
LABEL_REPAIRS: dict[str, tuple[str, ...]] = {"filter": ("filter",), "relabel": ("relabel",),
                                             "neighbours": ("neighbours",),
                                             "auto": ("filter", "relabel", "neighbours")}
#: Reference rows of the ``"neighbours"`` vote (kept in the first pass: ``O(m q)``).
DEFAULT_REFERENCE_ROWS = 4096


class LabelAwareRepair:
    """The full tail's candidates plus ridge heads fit without, or with corrected, suspect labels.

    Beyond the paper; the module docstring (:mod:`lip_agnostic.repairs.label_aware`)
    gives the math as numbered steps. The driver runs its two passes
    (:meth:`update`, then :meth:`second_pass` over the same rows).

    Parameters
    ----------
    W, rank, bias, bias_mode, target_scale, rtol, svd, xp
        As :class:`lip_agnostic.FullTailAccumulator`.
    variants : {"auto", "filter", "relabel"}
        The ``label_repair`` option: which label variants become candidates.
    folds, oof_ridge : int, float
        The out-of-fold heads (:mod:`lip_agnostic.out_of_fold`).
    """

    name: ClassVar[str] = "labels"
    beyond_paper: ClassVar[bool] = True
    passes: ClassVar[int] = 2

    def __init__(self, W: Any, /, rank: int | float | None = None, *, bias: Any = None, bias_mode: str = "fit",
                 target_scale: TargetScale = 1.0, rtol: float | None = None, svd: SVD | None = None,
                 xp: Any = None, variants: str = "auto", folds: int = DEFAULT_FOLDS,
                 oof_ridge: float = DEFAULT_OOF_RIDGE) -> None:
        if variants not in LABEL_REPAIRS:
            raise OptionError(f"variants must be one of {sorted(LABEL_REPAIRS)}; got {variants!r}")
        self.full = FullTailAccumulator(W, rank, bias=bias, bias_mode=bias_mode, target_scale=target_scale,
                                        rtol=rtol, svd=svd, xp=xp)
        self.svd, self.shape = self.full.svd, self.full.shape
        self.variants = LABEL_REPAIRS[variants]
        self._oof = OutOfFoldAccumulator(self.shape[1], folds=folds)
        self._oof_ridge = oof_ridge
        self._refs = _Reservoir(DEFAULT_REFERENCE_ROWS) if "neighbours" in self.variants else None
        self.n_neighbour_relabels = 0
        self.label_issues: LabelIssues | None = None
        self._stats: dict[str, tuple] = {}
        self._n_fit_labels = 0

    @classmethod
    def from_options(cls, W: Any, rank: int | float | None, /, *, bias: Any, options: LIPOptions,
                     svd: SVD | None, xp: Any) -> "LabelAwareRepair":
        """The repair a :class:`lip_agnostic.options.LIPOptions` with ``label_repair`` asks for."""
        return cls(W, rank, bias=bias, bias_mode=options.bias_mode, target_scale=options.target_scale,
                   rtol=options.rtol, svd=svd, xp=xp, variants=options.label_repair)

    # ------------------------------------------------------------------ pass 1
    @property
    def n_samples(self) -> int:
        return self.full.n_samples

    def update(self, X: Any, Y: Any, /) -> "LabelAwareRepair":
        """First pass: add a batch of features ``(n_b, q)`` and integer labels ``(n_b,)``."""
        if getattr(Y, "ndim", None) != 1:
            raise DataError("label_repair needs integer labels (n,) in the fit stream, not a target matrix "
                            f"(got Y of shape {tuple(getattr(Y, 'shape', ()))})")
        self.full.update(X, Y)
        self._oof.update(X, Y)
        if self._refs is not None:
            self._refs.update(X, Y)
        self._stats = {}
        return self

    @property
    def partial_sums(self) -> Any:
        """The first pass's statistics as one flat array (the full tail's, then the folds')."""
        mine = self.full.partial_sums
        if self._oof.n_features is None:  # no data yet: the folds' size is not known
            return mine
        xp = namespace(mine)
        return xp.concat([mine, xp.astype(self._oof.partial_sums, mine.dtype)])

    def load_partial_sums(self, sums: Any, /) -> "LabelAwareRepair":
        n_full = int(self.full.partial_sums.shape[0])
        self.full.load_partial_sums(sums[:n_full])
        if self._oof.n_features is not None:
            self._oof.load_partial_sums(sums[n_full:])
        self._stats = {}
        return self

    def merge(self, other: "LabelAwareRepair", /) -> "LabelAwareRepair":
        """Add another repair's first-pass statistics (a worker that held rows further down the stream
        must have been built for them: the folds follow stream positions)."""
        if type(other) is not type(self):
            raise DataTypeError(f"can only merge a {type(self).__name__}; got {type(other).__name__}")
        self.full.merge(other.full)
        self._oof.merge(other._oof)
        self._stats = {}
        return self

    # ------------------------------------------------------------------ pass 2
    def second_pass(self, batches: Iterable[tuple[Any, Any]], /) -> LabelIssues:
        """Steps 2-5: out-of-fold logits of the same rows, the suspect labels, the variants' statistics."""
        heads = self._oof.heads(ridge=self._oof_ridge)
        Zs, ys, kept_X, kept_pos = [], [], [], []
        position = 0
        xp = None
        vote = self._refs.index(self.shape[1]) if self._refs is not None else None
        dR = dsy = None
        n_relabel = 0
        for Z, y, X in heads.stream(batches, features=True):
            xp = namespace(Z)
            disagree = xp.nonzero(xp.argmax(Z, axis=1) != xp.astype(y, xp.int64))[0]
            kept_X.append(xp.take(X, disagree, axis=0))
            kept_pos.append(disagree + position)
            if vote is not None:
                flags, _, sugg = vote_flags(vote.votes(X, xp.arange(position, position + int(X.shape[0]),
                                                                    device=self.full._device)), y)
                d_R, d_sy = self._relabel_moments(X, y, sugg, flags)
                dR, dsy = (d_R, d_sy) if dR is None else (dR + d_R, dsy + d_sy)
                n_relabel += count_true(xp, flags)
            Zs.append(Z)
            ys.append(y)
            position += int(Z.shape[0])
        self._neighbour_moments = (dR, dsy)
        self.n_neighbour_relabels = n_relabel
        if xp is None:
            raise DataError("the second pass over the fit rows saw no rows")
        logits, labels = xp.concat(Zs, axis=0), xp.concat(ys)
        temp = fit_temperature(logits, labels)
        found = confident_learning(temp.probabilities(logits), labels)
        self.label_issues = LabelIssues(suspects=found, method="confident", temperature=temp)
        pos = xp.concat(kept_pos)
        flagged = xp.take(found.flags, pos, axis=0)
        if count_true(xp, flagged) != found.n_flagged:  # step 3's premise; a broken finder must not pass silently
            raise DataError("internal: a flagged row agreed with its out-of-fold argmax")
        where = xp.nonzero(flagged)[0]
        XF = xp.take(xp.concat(kept_X, axis=0), where, axis=0)
        rows = xp.take(pos, where, axis=0)
        self._flagged = (XF, xp.take(labels, rows, axis=0), xp.take(found.suggested, rows, axis=0))
        self._stats = {}
        return self.label_issues

    def _variant_stats(self, variant: str) -> tuple[Any, Any, Any, Any, int]:
        """Step 5: ``(X^T X, X^T Y, 1^T X, 1^T Y, n)`` of one label variant."""
        if variant in self._stats:
            return self._stats[variant]
        if self.label_issues is None:
            raise DataError("the label variants need the second pass: call second_pass(batches) first")
        full, xp = self.full, self.full._xp
        xx, xy, sx, sy, _, n = full._split()
        XF, yF, sF = self._flagged
        l = self.shape[1]
        sdt = full._sdt
        Xs = to_float(xp, as_features(xp, XF, self.shape[0], full._wdt, finite=False), sdt)
        classes = xp.arange(l, device=full._device)
        given = xp.astype(xp.astype(yF, xp.int64)[:, None] == classes[None, :], sdt)
        sugg = xp.astype(xp.astype(sF, xp.int64)[:, None] == classes[None, :], sdt)
        Xt = xp.linalg.matrix_transpose(Xs)
        if variant == "neighbours":
            dR, dsy = self._neighbour_moments
            out = (xx, xy + dR, sx, sy + dsy, n)
        elif variant == "filter":
            out = (xx - Xt @ Xs, xy - Xt @ given, sx - xp.sum(Xs, axis=0), sy - xp.sum(given, axis=0),
                   n - int(Xs.shape[0]))
        else:
            out = (xx, xy - Xt @ (given - sugg), sx, sy - xp.sum(given, axis=0) + xp.sum(sugg, axis=0), n)
        if out[4] < 1:
            raise DataError("every fit row was flagged: nothing is left to refit on")
        self._stats[variant] = out
        return out

    def _relabel_moments(self, X: Any, y: Any, suggested: Any, flags: Any) -> tuple[Any, Any]:
        """``X^T (S - Y)`` and ``1^T (S - Y)`` over the flagged rows of a batch (step 6)."""
        full, xp = self.full, self.full._xp
        sdt, l = full._sdt, self.shape[1]
        Xs = to_float(xp, as_features(xp, X, self.shape[0], full._wdt, finite=False), sdt)
        classes = xp.arange(l, device=full._device)
        onehot = lambda v: xp.astype(xp.astype(v, xp.int64)[:, None] == classes[None, :], sdt)  # noqa: E731
        D = (onehot(suggested) - onehot(y)) * xp.astype(flags, sdt)[:, None]
        return xp.linalg.matrix_transpose(Xs) @ D, xp.sum(D, axis=0)

    def _solver(self, variant: str) -> tuple[Any, Any, Any, Any, Any, int]:
        """Step 6's ``(e, Q, Q^T c Rc, sx, sy, n)`` for one variant."""
        full, xp = self.full, self.full._xp
        xx, xy, sx, sy, n = self._variant_stats(variant)
        c = full.scale()
        if full.fits_bias:
            xx = xx - (sx[:, None] * sx[None, :]) / n
            xy = xy - (sx[:, None] * sy[None, :]) / n
        xx = (xx + xp.linalg.matrix_transpose(xx)) / 2.0
        e, Q = xp.linalg.eigh(xx)
        e = xp.where(e > 0.0, e, xp.zeros_like(e))
        return e, Q, xp.linalg.matrix_transpose(Q) @ (c * xy), sx, sy, n

    def _head(self, solved: tuple, lam: float) -> tuple[Any, Any]:
        full, xp = self.full, self.full._xp
        e, Q, QtR, sx, sy, n = solved
        W_new = Q @ (QtR * _inverse(xp, e, lam, full.rtol)[:, None])
        b_new = (full.scale() * sy - sx @ W_new) / n if full.fits_bias else None
        return W_new, b_new

    def flagged_counts(self) -> dict[str, int]:
        """Rows each variant dropped (``"filter"``) or relabelled (``"relabel"``, ``"neighbours"``)."""
        n_f = 0 if self.label_issues is None else self.label_issues.n_flagged
        return {v: self.n_neighbour_relabels if v == "neighbours" else n_f for v in self.variants}

    # ------------------------------------------------------- the repair protocol
    def scorer(self, plan: Plan, options: LIPOptions, /, *, progress: Progress | None = None) -> StackedScorer:
        """The full tail's ``(k, lam)`` candidates plus ``(0, lam, variant)`` for every label variant."""
        full = self.full
        given = full.candidates(options)
        lams = sorted({lam for _, lam in given})
        candidates = list(given) + [(0, lam, v) for v in self.variants for lam in lams]
        build_given = full.builder(given)
        solved: dict[str, Any] = {}

        def build(j: int) -> tuple[Any, Any]:
            if j < len(given):
                return build_given(j)
            _, lam, variant = candidates[j]
            if variant not in solved:
                solved.clear()
                solved[variant] = self._solver(variant)
            return self._head(solved[variant], lam)

        prog = progress if progress is not None else Progress(False)
        with prog.step("label-aware candidates", len(candidates), unit="candidate") as step:
            return StackedScorer(full._W, full.bias, self.svd.rank_max, self.name, candidates, build,
                                 xp=full._xp, work=full._wdt, sdt=full._sdt, device=full._device,
                                 on_build=step.advance)

    def fixed_selection(self, options: LIPOptions, /) -> Selection:
        raise OptionError("label_repair chooses on held-out data: it needs rank='auto'")

    def refit(self, selection: Selection, /) -> Refit:
        """The chosen candidate: a full-tail head (labels as given) or a label variant's ridge head."""
        if selection.labels == "given":
            return self.full.refit(selection)
        full, xp = self.full, self.full._xp
        solved = self._solver(selection.labels)
        W_new, b_new = full._finish(*self._head(solved, selection.ridge))
        e = solved[0]
        n_deg = count_true(xp, e <= full.rtol * float(xp.max(e))) if selection.ridge == 0.0 else 0
        return Refit(weight=W_new, bias=b_new, n_degenerate=n_deg,
                     summary=summarize_change(full._W, W_new, 0, svd=self.svd, xp=xp))


class _Reservoir:
    """Up to ``capacity`` fit rows kept deterministically as they stream: every ``stride``-th
    position, the stride doubling (and every other kept row dropped) whenever ``capacity`` are held."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.stride, self.position = capacity, 1, 0
        self._X: list = []
        self._y: list = []
        self._pos: list = []

    def update(self, X: Any, y: Any) -> None:
        xp = namespace(X, y)
        n_b = int(X.shape[0])
        pos = xp.arange(self.position, self.position + n_b, device=device_of(X))
        keep = xp.nonzero(pos % self.stride == 0)[0]
        self._X.append(xp.take(X, keep, axis=0))
        self._y.append(xp.take(y, keep, axis=0))
        self._pos.append(xp.take(pos, keep, axis=0))
        self.position += n_b
        while sum(int(a.shape[0]) for a in self._pos) > self.capacity:
            self.stride *= 2
            X, y, pos = (xp.concat(v, axis=0) for v in (self._X, self._y, self._pos))
            keep = xp.nonzero(pos % self.stride == 0)[0]
            self._X, self._y, self._pos = ([xp.take(v, keep, axis=0)] for v in (X, y, pos))

    def index(self, n_classes: int) -> ReferenceVote:
        xp = namespace(self._X[0])
        X, y, pos = (xp.concat(v, axis=0) for v in (self._X, self._y, self._pos))
        X = xp.astype(X, xp.float32) if not xp.isdtype(X.dtype, "real floating") else X
        k = min(DEFAULT_NEIGHBOURS, int(X.shape[0]) - 1)
        if k < 1:
            raise DataError("the neighbour vote needs at least two fit rows")
        return ReferenceVote(X, y, pos, n_classes, k=k)
