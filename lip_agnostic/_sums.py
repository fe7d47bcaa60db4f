"""Statistics kept as one flat, sum-reducible array (the last entry the sample count): what every
repair's accumulator and every held-out scorer share, so workers can all-reduce any of them."""

from __future__ import annotations

from typing import Any

from .errors import DataError, NonFiniteError

__all__ = ["FlatSums"]


class FlatSums:
    """Mixin: ``self._sums`` (1-D, last entry ``n``), with ``self._xp`` and ``self._device`` set.

    Subclasses that cache results derived from the sums override :meth:`_sums_changed`.
    """

    _sums: Any
    _xp: Any
    _device: Any

    @property
    def partial_sums(self) -> Any:
        """The statistics as one flat array (sum-reducible across workers)."""
        return self._sums

    @property
    def n_samples(self) -> int:
        """How many samples the sums hold."""
        return int(self._sums[-1])

    def load_partial_sums(self, sums: Any, /) -> Any:
        """Replace the statistics, e.g. with their all-reduced total (checked: shape, finite)."""
        xp = self._xp
        if getattr(sums, "shape", None) is None or tuple(sums.shape) != tuple(self._sums.shape):
            raise DataError(
                f"partial sums must have shape {tuple(self._sums.shape)}; got {tuple(getattr(sums, 'shape', ()))}"
            )
        sums = xp.astype(xp.asarray(sums, device=self._device), self._sums.dtype)
        if not bool(xp.all(xp.isfinite(sums))):
            raise NonFiniteError("the partial sums contain NaN/Inf (an all_reduce that returned NaN?)")
        self._sums = sums
        self._sums_changed()
        return self

    def _add_sums(self, batch: Any) -> None:
        self._sums = self._sums + batch
        self._sums_changed()

    def _sums_changed(self) -> None:
        """Hook: drop whatever was derived from the old sums."""
