"""Which labels of the fit stream look wrong, in one call (beyond the paper).

:func:`find_label_issues` chains the pieces: out-of-fold scores without
retraining (:mod:`lip_agnostic.out_of_fold`), one temperature
(:mod:`lip_agnostic.temperature`) and confident learning
(:mod:`lip_agnostic.confident_learning`, Northcutt et al. 2021) — or the
feature-space neighbour vote (:mod:`lip_agnostic.neighbours`). It needs only
the penultimate features and the given labels, on any array-API library and
device; the result does not depend on whether cleanlab is installed.

What to do with the result: review the flagged rows (most suspect first,
:meth:`LabelIssues.rows`), relabel or drop them in *your training data* and
retrain, or keep them as a list to audit. Never relabel a test set with it:
the point of a test set is labels nobody fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ._arrays import namespace
from .confident_learning import confident_learning
from .errors import DataError, DataTypeError, OptionError, OptionTypeError
from .neighbours import DEFAULT_NEIGHBOURS, neighbour_disagreement
from .out_of_fold import DEFAULT_FOLDS, DEFAULT_OOF_RIDGE, out_of_fold_scores, require_reiterable
from .suspects import SuspectLabels
from .temperature import TemperatureFit, fit_temperature

__all__ = ["LabelIssues", "find_label_issues", "METHODS"]

#: The finders :func:`find_label_issues` knows.
METHODS = ("confident", "neighbours")


@dataclass(frozen=True)
class LabelIssues:
    """The suspect labels of a fit stream, and how they were found.

    Attributes
    ----------
    suspects : SuspectLabels
        Per row (position in the stream): flag, score (lower is more suspect),
        suggested label, given label.
    method : {"confident", "neighbours"}
    temperature : TemperatureFit or None
        ``"confident"``: the temperature fit on the out-of-fold logits (their
        NLL and calibration error before and after).
    held_out_period : int
        ``p >= 2`` when :func:`lip_agnostic.refine_batches` held every ``p``-th
        row of the stream out of the fit (no validation data): :attr:`suspects`
        has one entry per fit row, and :meth:`rows` maps them back to positions
        in the stream as the caller passed it (held-out rows are never flagged).
    """

    suspects: SuspectLabels
    method: str
    temperature: TemperatureFit | None = None
    held_out_period: int = 0

    def positions(self) -> list[int]:
        """Stream positions of the flagged rows, most suspect first (as in :meth:`rows`)."""
        return [r["position"] for r in self.rows()]

    def stream_position(self, j: int, /) -> int:
        """Suspect entry (fit row) ``j`` -> its position in the stream as passed: with a hold-out every
        ``p``-th row (positions ``p - 1, 2p - 1, ...``) was never a fit row."""
        p = self.held_out_period
        return j if p < 2 else j + j // (p - 1)

    @property
    def n_flagged(self) -> int:
        """How many rows are flagged."""
        return self.suspects.n_flagged

    def entries(self) -> list[int]:
        """The flagged rows' suspect entries (fit rows, before :meth:`stream_position`), most suspect first,
        as host integers, in the order of :meth:`rows`."""
        return [int(j) for j in _host(self.suspects.ranked())]

    def rows(self) -> list[dict]:
        """The flagged rows, most suspect first: ``position`` (0-based index in the stream as passed),
        ``given`` label, ``suggested`` label, ``score`` (label quality, lower is more suspect)."""
        s = self.suspects
        xp = namespace(s.labels)
        idx = s.ranked()
        order = self.entries()
        given, sugg, score = (_host(xp.take(a, idx, axis=0)) for a in (s.labels, s.suggested, s.score))
        return [{"position": self.stream_position(int(i)), "given": int(g), "suggested": int(t), "score": float(c)}
                for i, g, t, c in zip(order, given, sugg, score)]

    def __str__(self) -> str:
        return str(self.suspects)


def _host(a: Any) -> list:
    """A 1-D array as a Python list, from any library and device (NumPy's, DLPack's, a GPU copy)."""
    for move in (lambda v: v, lambda v: v.cpu(), lambda v: v.get()):  # as is, torch on a GPU, CuPy
        try:
            return np.asarray(move(a)).tolist()
        except (TypeError, AttributeError, RuntimeError, ValueError):
            continue
    raise DataTypeError(f"cannot copy a {type(a).__name__} to the host")


def find_label_issues(batches: Iterable[tuple[Any, Any]], n_classes: int, /, *, method: str = "confident",
                      folds: int = DEFAULT_FOLDS, ridge: float = DEFAULT_OOF_RIDGE,
                      neighbours: int = DEFAULT_NEIGHBOURS) -> LabelIssues:
    """Find the rows whose given label looks wrong (beyond the paper).

    Steps (``method="confident"``)
    ------------------------------
    1. First pass: per-fold ridge statistics (row ``i`` in fold ``i mod K``).
    2. Second pass: every row's logits from the fold head that did not see it
       (out of sample, no retraining).
    3. One temperature ``T`` fit on those out-of-fold logits against the given
       labels (they are out of sample, so no held-out split is needed).
    4. Confident learning on ``softmax(T z)``: per-class thresholds, the
       confident joint, and the flags of cleanlab's default
       (``prune_by_noise_rate``); score = self-confidence, suggestion = argmax.

    ``method="neighbours"``: the label vote of each row's ``neighbours``
    nearest rows (cosine) in the feature space; it keeps the features in
    memory (``O(n q)``).

    Parameters
    ----------
    batches : re-iterable of (X (n_b, q), y (n_b,) integer labels)
        Read twice in the same order (a list, a DataLoader without shuffling);
        a one-shot generator is refused before anything is read.
    n_classes : int
    method : {"confident", "neighbours"}
    folds, ridge : int, float
        The out-of-fold heads (``"confident"``).
    neighbours : int
        ``k`` of the neighbour vote (``"neighbours"``).

    Returns
    -------
    LabelIssues

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic.label_issues import find_label_issues
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 8)); y = np.argmax(X[:, :3], 1)
    >>> y_noisy = y.copy(); y_noisy[:60] = (y[:60] + 1) % 3
    >>> found = find_label_issues([(X, y_noisy)], 3)
    >>> hits = sum(r["position"] < 60 for r in found.rows())
    >>> bool(hits >= 50 and found.n_flagged <= 80)
    True
    """
    if method not in METHODS:
        cls = OptionError if isinstance(method, str) else OptionTypeError
        raise cls(f"method must be 'confident' (out-of-fold confident learning) or 'neighbours' "
                  f"(feature-space vote); got {method!r}")
    if method == "neighbours":
        Xs, ys = [], []
        for X, y in batches:
            Xs.append(X)
            ys.append(y)
        if not Xs:
            raise DataError("no rows to check: the batches were empty")
        xp = namespace(*Xs)
        votes = neighbour_disagreement(xp.concat(Xs, axis=0), xp.concat(ys), n_classes, k=neighbours)
        return LabelIssues(suspects=votes, method=method)
    require_reiterable(batches)
    oof = out_of_fold_scores(batches, n_classes, folds=folds, ridge=ridge)
    if oof.labels is None:
        raise DataError("finding label issues needs integer labels (n,), not a target matrix")
    temp = fit_temperature(oof.logits, oof.labels)
    return LabelIssues(suspects=confident_learning(temp.probabilities(oof.logits), oof.labels),
                       method=method, temperature=temp)
