"""The rows whose given label looks wrong: one result type for every finder (beyond the paper).

:func:`lip_agnostic.confident_learning.confident_learning` (from out-of-fold probabilities)
and :func:`lip_agnostic.neighbours.neighbour_disagreement` (from the feature space) both
return a :class:`SuspectLabels`: per row of the fit stream, a flag, a score (lower is more
suspect) and a suggested label, in the caller's array library and on its device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._arrays import count_true, namespace

__all__ = ["SuspectLabels"]


@dataclass(frozen=True)
class SuspectLabels:
    """Suspect labels of ``n`` rows (positions in the fit stream) (beyond the paper).

    Attributes
    ----------
    flags : array of bool, shape (n,)
        True where the given label is judged wrong.
    score : array, shape (n,)
        Label quality in ``[0, 1]``: lower is more suspect (the method says what it measures).
    suggested : array of int, shape (n,)
        The label the method would give each row (the given label where it has no other).
    labels : array of int, shape (n,)
        The given labels.
    method : str
        Which finder produced this, and what ``score`` is.

    Examples
    --------
    >>> import numpy as np
    >>> s = SuspectLabels(np.array([False, True]), np.array([0.9, 0.1]), np.array([0, 0]),
    ...                   np.array([0, 1]), "example")
    >>> s.n_flagged, s.ranked().tolist()
    (1, [1])
    """

    flags: Any
    score: Any
    suggested: Any
    labels: Any
    method: str

    @property
    def n_flagged(self) -> int:
        """How many rows are flagged."""
        return count_true(namespace(self.flags), self.flags)

    def ranked(self) -> Any:
        """Positions of the flagged rows, most suspect (lowest score) first."""
        xp = namespace(self.flags, self.score)
        idx = xp.nonzero(self.flags)[0]
        return xp.take(idx, xp.argsort(xp.take(self.score, idx, axis=0), stable=True), axis=0)

    def __str__(self) -> str:
        n = int(self.flags.shape[0])
        k = self.n_flagged
        return f"{k} of {n} labels flagged ({100.0 * k / max(n, 1):.1f}%) by {self.method}"
