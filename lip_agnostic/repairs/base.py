"""The one protocol every repair implements, and what they share.

A repair turns a trained head ``W`` (and its bias) plus a stream of
``(features, labels)`` into candidate heads, and builds the one the guard
chooses. It must:

1. accumulate streamable statistics (:meth:`Repair.update`), mergeable
   (:meth:`Repair.merge`) and all-reducible as one flat array
   (:attr:`Repair.partial_sums`, :meth:`Repair.load_partial_sums`);
2. list and score its candidates on held-out data (:meth:`Repair.scorer`, a
   :class:`lip_agnostic.selection.HeldOutScorer`), or name the one a fixed
   rank asks for (:meth:`Repair.fixed_selection`);
3. build a candidate's weight, bias and report (:meth:`Repair.refit`).

The driver (:func:`lip_agnostic.refine_batches`) knows nothing else about a
repair, so a new repair is one new module in this folder, registered in
:data:`lip_agnostic.repairs.REPAIRS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._arrays import check_finite, to_float
from ..errors import DataError, DataTypeError
from ..options import LIPOptions, Plan
from ..progress import Progress
from ..report import ChangeSummary
from ..selection import HeldOutScorer, Selection
from ..svd import SVD, check_factors, reduced_svd

__all__ = ["Repair", "Refit", "factors_of", "checked_bias", "check_same_head"]


@dataclass(frozen=True)
class Refit:
    """A built candidate: the new weight (and bias) and what changed.

    Attributes
    ----------
    weight : array (q, l)
        ``W*`` in the input weight's library, device and dtype.
    bias : array (l,) or None
        The refit bias ``b*`` to write with the weight; None: the bias stays as it is.
    n_degenerate : int
        Refit directions the data never excite (handled as the repair documents).
    summary : ChangeSummary
    """

    weight: Any
    bias: Any
    n_degenerate: int
    summary: ChangeSummary


@runtime_checkable
class Repair(Protocol):
    """What the driver needs of a repair (see the module docstring)."""

    name: ClassVar[str]
    beyond_paper: ClassVar[bool]
    svd: SVD
    shape: tuple[int, int]

    @classmethod
    def from_options(cls, W: Any, rank: int | float | None, /, *, bias: Any, options: LIPOptions,
                     svd: SVD | None, xp: Any) -> "Repair": ...

    @property
    def n_samples(self) -> int: ...

    def update(self, X: Any, Y: Any, /) -> "Repair": ...

    @property
    def partial_sums(self) -> Any: ...

    def load_partial_sums(self, sums: Any, /) -> "Repair": ...

    def merge(self, other: "Repair", /) -> "Repair": ...

    def scorer(self, plan: Plan, options: LIPOptions, /, *, progress: Progress | None = None) -> HeldOutScorer: ...

    def fixed_selection(self, options: LIPOptions, /) -> Selection: ...

    def refit(self, selection: Selection, /) -> Refit: ...


def factors_of(xp: Any, W: Any, svd: Any) -> SVD:
    """The reduced SVD of ``W``: ``svd`` checked against ``W``'s shape, or computed once."""
    if svd is None:
        return reduced_svd(W, xp=xp)
    return check_factors(svd, (int(W.shape[0]), int(W.shape[1])))


def checked_bias(xp: Any, bias: Any, l: int, shape: tuple[int, int], work: Any) -> Any:
    """The layer's bias as a ``(l,)`` array of the working dtype (None stays None)."""
    if bias is None:
        return None
    if getattr(bias, "ndim", None) != 1 or int(bias.shape[0]) != l:
        raise DataError(f"bias must have shape ({l},) for W of shape {shape}; got {tuple(getattr(bias, 'shape', ()))}")
    if not xp.isdtype(bias.dtype, "real floating"):
        raise DataTypeError(f"bias must have a real floating dtype; got {bias.dtype}")
    check_finite(xp, bias, "bias")
    return to_float(xp, bias, work)


def check_same_head(mine: Repair, other: Any, settings: tuple, theirs: tuple) -> None:
    """Refuse to merge statistics of another kind of repair, another head or other settings."""
    xp = mine._xp  # type: ignore[attr-defined]
    if type(other) is not type(mine):
        raise DataTypeError(f"can only merge a {type(mine).__name__}; got {type(other).__name__}")
    if settings != theirs:
        raise DataError(f"cannot merge {type(mine).__name__}s with different settings: {settings} vs {theirs}")
    s0 = mine.svd.s
    s1 = xp.asarray(other.svd.s, device=mine._device)  # type: ignore[attr-defined]
    if not bool(xp.all(xp.abs(s0 - s1) <= 1e-5 * (xp.abs(s0) + 1e-30))):
        raise DataError(f"cannot merge {type(mine).__name__}s built from different weights (spectra differ)")
