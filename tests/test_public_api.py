"""The public names of ``lip_agnostic``: pinned, so adding or removing one is a decision.

The top level holds the method (at most 25 names, sorted); metrics, noise
generators, scorers and parsers stay importable from their own modules.
"""

from __future__ import annotations

import ast
import inspect
import pathlib

import lip_agnostic

PUBLIC = [
    # the method: the driver, the paper's LIP, the full tail (beyond the paper), the repairs, options
    "refine_batches", "LIPResult", "lip_refine", "full_tail_refine", "select_rank", "Selection",
    "LIPAccumulator", "FullTailAccumulator", "Repair", "LIPOptions",
    # principal subspace preservation, the SVD, the report
    "project_principal", "reduced_svd", "SVD", "ChangeSummary", "summarize_change",
    # errors
    "LIPError", "OptionError", "OptionTypeError", "RankOutOfRangeError", "DataError", "DataTypeError",
    "NonFiniteError",
]

#: Where the names that left the top level live (importable, documented there).
SUBMODULE_NAMES = {
    "lip_agnostic.metrics": ["principal_angles", "principal_subspace_angle", "grassmann_distance",
                             "subspace_similarity", "subspace_similarity_matrix", "singular_spectrum",
                             "effective_rank", "stable_rank", "davis_kahan_bound", "orthonormal_basis"],
    "lip_agnostic.noise": ["symmetric_noise", "asymmetric_noise", "pairflip_noise", "instance_dependent_noise",
                           "partial_labels", "NoisyLabels", "PartialLabels", "ASYMMETRIC_MAPS"],
    "lip_agnostic.svd": ["top_svd", "truncate_top", "TopSVD", "energy_rank", "low_rank_blocks"],
    "lip_agnostic.selection": ["candidate_ranks", "sign_test_p", "HeldOutScorer", "StackedScorer"],
    "lip_agnostic.options": ["parse_rank", "parse_bias_mode", "DEFAULT_CONFIDENCE", "Plan", "CONSTRAINTS"],
    "lip_agnostic.repairs": ["REPAIRS", "RankScorer", "Refit"],
    "lip_agnostic.report": ["summarize_refit"],
}


def test_all_is_sorted_small_and_pinned():
    assert lip_agnostic.__all__ == sorted(lip_agnostic.__all__)
    assert len(set(lip_agnostic.__all__)) == len(lip_agnostic.__all__) <= 25
    assert sorted(lip_agnostic.__all__) == sorted(PUBLIC)


def test_every_public_name_resolves_and_star_import_is_the_list():
    for name in lip_agnostic.__all__:
        assert getattr(lip_agnostic, name) is not None, name
    star: dict = {}
    exec("from lip_agnostic import *", star)
    assert set(star) - {"__builtins__"} == set(PUBLIC)


def test_names_that_left_the_top_level_live_in_their_modules():
    import importlib

    for module, names in SUBMODULE_NAMES.items():
        mod = importlib.import_module(module)
        for name in names:
            assert name in mod.__all__ and getattr(mod, name) is not None, (module, name)


def test_the_error_classes_are_the_modules_own():
    from lip_agnostic import errors

    for name in errors.__all__:
        assert getattr(lip_agnostic, name) is getattr(errors, name)
    assert all(issubclass(getattr(errors, n), lip_agnostic.LIPError) for n in errors.__all__)


def test_the_method_is_positional_arrays_keyword_options():
    for fn in (lip_agnostic.lip_refine, lip_agnostic.full_tail_refine):
        sig = inspect.signature(fn)
        kinds = [p.kind for p in sig.parameters.values()]
        assert list(sig.parameters)[:4] == ["W", "X", "Y", "rank"]
        assert all(k is inspect.Parameter.POSITIONAL_ONLY for k in kinds[:4])
        assert all(k is inspect.Parameter.KEYWORD_ONLY for k in kinds[4:])
        assert sig.parameters["bias_mode"].default == "fit", fn
    assert lip_agnostic.LIPOptions().bias_mode == "fit"


def test_no_deprecation_shim_remains_in_the_package():
    """Nothing was ever released: no FutureWarning, no 'deprecated' alias, no UNSET sentinel."""
    root = pathlib.Path(lip_agnostic.__file__).resolve().parent.parent
    for folder in ("lip_agnostic", "adapters", "tools"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            assert "FutureWarning" not in text, path
            assert "UNSET" not in text, path
            tree = ast.parse(text)
            lazy = any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body)
            assert not lazy or path.as_posix().endswith("tools/__init__.py"), f"module __getattr__ in {path}"
    # lip_agnostic.tools loads its own API lazily (a fast --version); it serves its __all__ and nothing else
    import lip_agnostic.tools as tools

    assert all(getattr(tools, name) is not None for name in tools.__all__)
    for old in ("testing", "denoise_model", "principal_angle"):
        assert not hasattr(tools, old), old


def test_dataset_specific_class_maps_are_not_in_the_core():
    from lip_agnostic import noise

    assert not hasattr(noise, "FONT_CHARACTERS")
    assert "fonts" not in noise.ASYMMETRIC_MAPS
    assert sorted(noise.ASYMMETRIC_MAPS) == ["cifar10", "digits", "fashion-mnist"]
    from experiments.fonts import FONT_CHARACTERS, FONT_CLASS_MAP

    assert len(FONT_CHARACTERS) == 62 and FONT_CLASS_MAP
