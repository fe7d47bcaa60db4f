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

from .._arrays import check_finite, device_of, namespace, to_float
from .._sums import FlatSums
from ..errors import DataError, DataTypeError
from ..options import BiasMode, LIPOptions, Plan, TargetScale, check_rtol, check_target_scale, parse_bias_mode
from ..progress import Progress
from ..report import ChangeSummary
from ..selection import HeldOutScorer, Selection
from ..svd import SVD, check_factors, reduced_svd, resolve_rank

__all__ = ["Repair", "Refit", "HeadRepair", "factors_of", "checked_bias"]


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


class HeadRepair(FlatSums):
    """What every repair of a ``(q, l)`` head shares: the set-up of the weight, its SVD, its
    bias and the options every repair reads (parsed by :mod:`lip_agnostic.options`), the flat
    statistics (:class:`lip_agnostic._sums.FlatSums`) and :meth:`merge`."""

    def _set_head(self, W: Any, rank: int | float | None, *, bias: Any, bias_mode: BiasMode,
                  target_scale: TargetScale, rtol: float | None, svd: SVD | None, xp: Any) -> None:
        xp = namespace(W, bias, xp=xp)
        self._xp = xp
        self.svd: SVD = factors_of(xp, W, svd)
        self.shape = (int(W.shape[0]), int(W.shape[1]))
        self.dtype = W.dtype
        self._W = W
        self._device = device_of(W)
        self.bias_mode: BiasMode = parse_bias_mode(bias_mode)
        self.target_scale = check_target_scale(target_scale)
        self._rtol = check_rtol(rtol)
        self.rank = None if rank is None else resolve_rank(rank, self.svd.s, name="rank", xp=xp)
        self.bias = checked_bias(xp, bias, self.shape[1], self.shape, self.svd.s.dtype)

    def _settings(self) -> tuple:
        """What two accumulators must share to be merged (besides the weight)."""
        raise NotImplementedError

    def merge(self, other: Any, /) -> Any:
        """Add another accumulator's statistics (same kind, weight and settings)."""
        xp = self._xp
        if type(other) is not type(self):
            raise DataTypeError(f"can only merge a {type(self).__name__}; got {type(other).__name__}")
        mine, theirs = self._settings(), other._settings()
        if mine != theirs:
            raise DataError(f"cannot merge {type(self).__name__}s with different settings: {mine} vs {theirs}")
        s0, s1 = self.svd.s, xp.asarray(other.svd.s, device=self._device)
        if not bool(xp.all(xp.abs(s0 - s1) <= 1e-5 * (xp.abs(s0) + 1e-30))):
            raise DataError(f"cannot merge {type(self).__name__}s built from different weights (spectra differ)")
        return self.load_partial_sums(self._sums + xp.asarray(other._sums, device=self._device))
