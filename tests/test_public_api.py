"""The public names of ``lip_agnostic``: pinned, so adding or removing one is a decision."""

from __future__ import annotations

import inspect
import types

import lip_agnostic

PUBLIC = [
    # the method
    "lip_refine", "refine_batches", "LIPResult", "LIPAccumulator", "full_tail_refine", "FullTailAccumulator",
    "FullTailScorer", "FullTailSelection", "SVD", "reduced_svd", "energy_rank", "project_principal", "TopSVD",
    "top_svd", "truncate_top", "DEFAULT_CONFIDENCE", "RankScorer", "RankSelection", "candidate_ranks",
    "select_rank", "sign_test_p",
    # the report and the metrics
    "ChangeSummary", "summarize_change", "summarize_refit", "davis_kahan_bound", "effective_rank",
    "grassmann_distance", "orthonormal_basis", "principal_angles", "principal_subspace_angle",
    "singular_spectrum", "stable_rank", "subspace_similarity", "subspace_similarity_matrix",
    # errors and options
    "errors", "options", "LIPError", "OptionError", "OptionTypeError", "RankOutOfRangeError", "DataError",
    "DataTypeError", "NonFiniteError", "parse_rank", "parse_bias_mode",
    # label noise for evaluation
    "noise", "ASYMMETRIC_MAPS", "NoisyLabels", "PartialLabels", "asymmetric_noise", "instance_dependent_noise",
    "pairflip_noise", "partial_labels", "symmetric_noise",
]


def test_all_is_sorted_and_pinned():
    assert lip_agnostic.__all__ == sorted(lip_agnostic.__all__)
    assert len(set(lip_agnostic.__all__)) == len(lip_agnostic.__all__)
    assert sorted(lip_agnostic.__all__) == sorted(PUBLIC)


def test_every_public_name_resolves_and_nothing_public_is_left_out():
    for name in lip_agnostic.__all__:
        assert getattr(lip_agnostic, name) is not None, name
    star: dict = {}
    exec("from lip_agnostic import *", star)
    assert set(star) - {"__builtins__"} == set(PUBLIC)
    # every other non-underscore attribute is one of the package's own submodules
    extra = {n for n in dir(lip_agnostic) if not n.startswith("_")} - set(PUBLIC)
    for name in extra:
        mod = getattr(lip_agnostic, name)
        assert isinstance(mod, types.ModuleType) and mod.__name__ == f"lip_agnostic.{name}", name


def test_the_error_classes_and_parsers_are_the_modules_own():
    from lip_agnostic import errors, options

    for name in errors.__all__:
        assert getattr(lip_agnostic, name) is getattr(errors, name)
    assert lip_agnostic.parse_rank is options.parse_rank and lip_agnostic.parse_bias_mode is options.parse_bias_mode
    assert all(issubclass(getattr(errors, n), lip_agnostic.LIPError) for n in errors.__all__)


def test_the_method_is_positional_arrays_keyword_options():
    sig = inspect.signature(lip_agnostic.lip_refine)
    kinds = [p.kind for p in sig.parameters.values()]
    assert list(sig.parameters)[:4] == ["W", "X", "Y", "rank"]
    assert all(k is inspect.Parameter.POSITIONAL_ONLY for k in kinds[:4])
    assert all(k is inspect.Parameter.KEYWORD_ONLY for k in kinds[4:])
    for fn in (lip_agnostic.lip_refine, lip_agnostic.refine_batches, lip_agnostic.LIPAccumulator):
        params = inspect.signature(fn).parameters
        assert params["bias_mode"].default == "fit", fn


def test_dataset_specific_class_maps_are_not_in_the_core():
    assert not hasattr(lip_agnostic.noise, "FONT_CHARACTERS")
    assert "fonts" not in lip_agnostic.ASYMMETRIC_MAPS
    assert sorted(lip_agnostic.ASYMMETRIC_MAPS) == ["cifar10", "digits", "fashion-mnist"]
    from experiments.fonts import FONT_CHARACTERS, FONT_CLASS_MAP

    assert len(FONT_CHARACTERS) == 62 and FONT_CLASS_MAP
