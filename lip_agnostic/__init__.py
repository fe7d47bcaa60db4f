"""lip-agnostic: the LIP plug-in for classifiers trained on noisy labels.

LIP (Si et al., *Why Can Accurate Models Be Learned from Inaccurate
Annotations?*, arXiv 2505.16159) keeps the principal singular subspace of a
trained classifier's weight (Principal Subspace Preservation) and refits the
singular values of the tail, where label noise accumulates, by least squares
against the labels (Label Ambiguity Purification).

The core works on any array-API array (NumPy, PyTorch, array-api-strict,
CuPy, JAX) and imports no deep-learning framework. Faces:
``lip_agnostic.adapters.torch``, ``lip_agnostic.adapters.keras`` and the
``lip-onnx`` command (``lip_agnostic.tools``).
"""

# The method: LIP on arrays and on batch streams, its streaming state, the full-tail variant
# (beyond the paper), principal-subspace projection and rank choice.
from .refine import lip_refine
from .stream import LIPResult, refine_batches
from .accumulator import LIPAccumulator
from .full_tail import FullTailAccumulator, FullTailScorer, FullTailSelection, full_tail_refine
from .principal import SVD, energy_rank, project_principal, reduced_svd
from .lowrank import TopSVD, top_svd, truncate_top
from .rank import DEFAULT_CONFIDENCE, RankScorer, RankSelection, candidate_ranks, select_rank, sign_test_p

# What changed: the report, and the subspace metrics.
from .report import ChangeSummary, summarize_change, summarize_refit
from .metrics import (
    davis_kahan_bound,
    effective_rank,
    grassmann_distance,
    orthonormal_basis,
    principal_angles,
    principal_subspace_angle,
    singular_spectrum,
    stable_rank,
    subspace_similarity,
    subspace_similarity_matrix,
)

# One vocabulary: typed errors and the option parsers every face uses.
from . import errors, options
from .errors import DataError, DataTypeError, LIPError, NonFiniteError, OptionError, OptionTypeError, RankOutOfRangeError
from .options import parse_bias_mode, parse_rank

# Seeded label noise for evaluation (dataset-independent; dataset class maps live with the datasets).
from . import noise
from .noise import (
    ASYMMETRIC_MAPS,
    NoisyLabels,
    PartialLabels,
    asymmetric_noise,
    instance_dependent_noise,
    pairflip_noise,
    partial_labels,
    symmetric_noise,
)

__version__ = "0.1.0"

__all__ = [
    "ASYMMETRIC_MAPS",
    "ChangeSummary",
    "DEFAULT_CONFIDENCE",
    "DataError",
    "DataTypeError",
    "FullTailAccumulator",
    "FullTailScorer",
    "FullTailSelection",
    "LIPAccumulator",
    "LIPError",
    "LIPResult",
    "NoisyLabels",
    "NonFiniteError",
    "OptionError",
    "OptionTypeError",
    "PartialLabels",
    "RankOutOfRangeError",
    "RankScorer",
    "RankSelection",
    "SVD",
    "TopSVD",
    "asymmetric_noise",
    "candidate_ranks",
    "davis_kahan_bound",
    "effective_rank",
    "energy_rank",
    "errors",
    "full_tail_refine",
    "grassmann_distance",
    "instance_dependent_noise",
    "lip_refine",
    "noise",
    "options",
    "orthonormal_basis",
    "pairflip_noise",
    "parse_bias_mode",
    "parse_rank",
    "partial_labels",
    "principal_angles",
    "principal_subspace_angle",
    "project_principal",
    "reduced_svd",
    "refine_batches",
    "select_rank",
    "sign_test_p",
    "singular_spectrum",
    "stable_rank",
    "subspace_similarity",
    "subspace_similarity_matrix",
    "summarize_change",
    "summarize_refit",
    "symmetric_noise",
    "top_svd",
    "truncate_top",
]
