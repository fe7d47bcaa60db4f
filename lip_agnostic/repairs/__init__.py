"""The repairs of a trained head, one module each, all behind one protocol
(:class:`lip_agnostic.repairs.base.Repair`) and one guard
(:mod:`lip_agnostic.selection`).

========  ==========================================  ==============================
name      module                                      what it refits
========  ==========================================  ==============================
diagonal  :mod:`lip_agnostic.repairs.diagonal`        the paper's LIP: the tail's
                                                      singular values
full      :mod:`lip_agnostic.repairs.full_tail`       beyond the paper: the whole
                                                      complement by ridge (and the bias)
labels    :mod:`lip_agnostic.repairs.label_aware`     beyond the paper: the full tail's
                                                      candidates plus ridge heads on
                                                      filtered or relabelled labels
========  ==========================================  ==============================
"""

from .base import Refit, Repair
from .diagonal import LIPAccumulator, RankScorer
from .full_tail import FullTailAccumulator
from .label_aware import LabelAwareRepair

__all__ = ["REPAIRS", "Refit", "Repair", "LIPAccumulator", "RankScorer", "FullTailAccumulator", "LabelAwareRepair"]

#: Every repair by the name :class:`lip_agnostic.options.Plan` gives it.
REPAIRS: dict[str, type] = {cls.name: cls for cls in (LIPAccumulator, FullTailAccumulator, LabelAwareRepair)}
