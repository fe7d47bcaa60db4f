"""Typed errors of lip-agnostic: one hierarchy shared by the core and every face.

Catch :class:`LIPError` for anything the package refuses. Each class also
subclasses the builtin it replaces (``ValueError``, or ``TypeError`` for a
wrong kind of value), so ``except ValueError`` / ``except TypeError`` code
written against earlier releases keeps working.

====================  ==========================  ===================================
class                 also a                      raised for
====================  ==========================  ===================================
LIPError              Exception                   base class
OptionError           ValueError                  a bad option value (``rank="best"``,
                                                  ``bias_mode="x"``, ``holdout=0.9``)
OptionTypeError       OptionError, TypeError      an option of the wrong kind
                                                  (``rank=True``, ``rank=[2]``)
RankOutOfRangeError   OptionError                 an integer rank outside ``[0, m]``
                                                  (``.rank``, ``.m``)
DataError             ValueError                  arrays that cannot be used (shapes,
                                                  labels out of range, empty data)
DataTypeError         DataError, TypeError        arrays of the wrong kind (integer
                                                  weight, float labels, mixed libraries)
NonFiniteError        DataError                   NaN/Inf in a weight, features,
                                                  targets, or an overflowing product
====================  ==========================  ===================================

Examples
--------
>>> import numpy as np
>>> from lip_agnostic import lip_refine, RankOutOfRangeError
>>> try:
...     lip_refine(np.eye(3), np.eye(3), np.arange(3), 7)
... except RankOutOfRangeError as e:
...     (e.rank, e.m)
(7, 3)
"""

from __future__ import annotations

__all__ = [
    "LIPError",
    "OptionError",
    "OptionTypeError",
    "RankOutOfRangeError",
    "DataError",
    "DataTypeError",
    "NonFiniteError",
]


class LIPError(Exception):
    """Base class of every error lip-agnostic raises on purpose."""


class OptionError(LIPError, ValueError):
    """An option has a value the method cannot use."""


class OptionTypeError(OptionError, TypeError):
    """An option is of the wrong kind (e.g. a bool or a list where a rank goes)."""


class RankOutOfRangeError(OptionError):
    """An integer rank outside ``[0, m]`` (``m = min(q, l)``; ``m`` is None when unknown).

    Attributes
    ----------
    rank : int
        The rank asked for.
    m : int or None
        The number of components of the weight, when known.
    """

    def __init__(self, message: str, rank: int, m: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.m = m

    def __reduce__(self):  # keep .rank and .m through pickling (multiprocessing, DDP workers)
        return (type(self), (str(self), self.rank, self.m))


class DataError(LIPError, ValueError):
    """Arrays (weight, features, targets, bias) that the method cannot use."""


class DataTypeError(DataError, TypeError):
    """Arrays of the wrong kind: a dtype the method cannot use, or arrays of different libraries."""


class NonFiniteError(DataError):
    """NaN or Inf where finite numbers are needed (or a product that overflowed)."""
