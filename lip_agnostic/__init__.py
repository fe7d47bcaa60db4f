"""lip-agnostic: the LIP plug-in for classifiers trained on noisy labels.

LIP (Si et al., *Why Can Accurate Models Be Learned from Inaccurate
Annotations?*, arXiv 2505.16159) keeps the principal singular subspace of a
trained classifier's weight (Principal Subspace Preservation) and refits the
singular values of the tail, where label noise accumulates, by least squares
against the labels (Label Ambiguity Purification).

The top level holds the method: the driver every face calls
(:func:`refine_batches`, returning a :class:`LIPResult`), the paper's LIP on
arrays (:func:`lip_refine`), the full-tail variant beyond the paper
(:func:`full_tail_refine`), the repairs' streaming accumulators, the options
(:class:`LIPOptions`), the SVD and the report. Submodules hold the rest:
:mod:`lip_agnostic.metrics` (subspace angles, spectra), :mod:`lip_agnostic.noise`
(seeded label noise), :mod:`lip_agnostic.errors`, :mod:`lip_agnostic.options`,
:mod:`lip_agnostic.svd`, :mod:`lip_agnostic.selection`, :mod:`lip_agnostic.repairs`.

The core works on any array-API array (NumPy, PyTorch, array-api-strict,
CuPy, JAX) and imports no deep-learning framework. Faces:
``lip_agnostic.adapters`` (torch, keras, sklearn, transformers, lightning)
and the ``lip-onnx`` command (``lip_agnostic.tools``).
"""

from .driver import LIPResult, refine_batches
from .errors import (
    DataError,
    DataTypeError,
    LIPError,
    NonFiniteError,
    OptionError,
    OptionTypeError,
    RankOutOfRangeError,
)
from .options import LIPOptions
from .principal import project_principal
from .refine import full_tail_refine, lip_refine, select_rank
from .repairs import FullTailAccumulator, LIPAccumulator, Repair
from .report import ChangeSummary, summarize_change
from .selection import Selection
from .svd import SVD, reduced_svd

__version__ = "0.1.0"

__all__ = [
    "ChangeSummary",
    "DataError",
    "DataTypeError",
    "FullTailAccumulator",
    "LIPAccumulator",
    "LIPError",
    "LIPOptions",
    "LIPResult",
    "NonFiniteError",
    "OptionError",
    "OptionTypeError",
    "RankOutOfRangeError",
    "Repair",
    "SVD",
    "Selection",
    "full_tail_refine",
    "lip_refine",
    "project_principal",
    "reduced_svd",
    "refine_batches",
    "select_rank",
    "summarize_change",
]
