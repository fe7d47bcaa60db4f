"""The one vocabulary: typed errors and the option parsers every entry point uses."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import lip_agnostic as lip
from lip_agnostic.errors import (
    DataError,
    LIPError,
    NonFiniteError,
    OptionError,
    OptionTypeError,
    RankOutOfRangeError,
)
from lip_agnostic.options import LIPOptions, check_option_names, face_reserved, parse_bias_mode, parse_rank


def test_the_error_classes_keep_old_except_clauses_working():
    assert issubclass(OptionError, LIPError) and issubclass(OptionError, ValueError)
    assert issubclass(OptionTypeError, OptionError) and issubclass(OptionTypeError, TypeError)
    assert issubclass(RankOutOfRangeError, OptionError)
    assert issubclass(DataError, LIPError) and issubclass(DataError, ValueError)
    assert issubclass(NonFiniteError, DataError)
    assert not issubclass(DataError, OptionError) and not issubclass(OptionError, DataError)


def test_rank_out_of_range_carries_rank_and_m_through_pickling():
    e = RankOutOfRangeError("rank must lie in [0, min(q, l)=3]; got 7", 7, 3)
    e2 = pickle.loads(pickle.dumps(e))
    assert (type(e2), str(e2), e2.rank, e2.m) == (RankOutOfRangeError, str(e), 7, 3)


@pytest.mark.parametrize(
    "value, m, expected",
    [
        (3, 5, 3), (0, 5, 0), (5, 5, 5), (np.int64(2), 5, 2), (np.int32(4), None, 4), (np.uint8(1), 5, 1),
        (np.array(2), 5, 2), (np.array(3, dtype=np.int16), 5, 3),
        (0.5, None, 0.5), (1.0, 3, 1.0), (np.float64(0.25), None, 0.25), (np.array(0.75), None, 0.75),
        ("auto", 5, "auto"),
    ],
)
def test_parse_rank_accepts_ints_fractions_numpy_scalars_and_auto(value, m, expected):
    got = parse_rank(value, m)
    assert got == expected and type(got) is type(expected)


def test_parse_rank_accepts_float32_fractions_and_0d_tensors():
    torch = pytest.importorskip("torch")
    assert parse_rank(np.float32(0.9)) == pytest.approx(0.9) and isinstance(parse_rank(np.float32(0.9)), float)
    assert parse_rank(torch.tensor(3), 4) == 3 and type(parse_rank(torch.tensor(3), 4)) is int
    assert parse_rank(torch.tensor(0.5)) == 0.5
    with pytest.raises(OptionTypeError, match=r"rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got tensor\(True\)"):
        parse_rank(torch.tensor(True))


@pytest.mark.parametrize(
    "value, kwargs, exc, msg",
    [
        (True, {}, OptionTypeError, r"^rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got True \(bool\)$"),
        (np.True_, {}, OptionTypeError, r"^rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got (np\.)?True_? \(bool_?\)$"),
        (np.array(False), {}, OptionTypeError, r"got array\(False\) \(ndarray\)$"),
        ([2], {}, OptionTypeError, r"^rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got \[2\] \(list\)$"),
        (np.array([2]), {}, OptionTypeError, r"got array\(\[2\]\) \(ndarray\)$"),
        (None, {}, OptionTypeError, r"got None \(NoneType\)$"),
        ("best", {}, OptionError, r"^rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got 'best'$"),
        ("auto", {"allow_auto": False}, OptionTypeError, r"^rank must be an int or an energy fraction in \(0, 1\]; got 'auto' \(str\)$"),
        (6, {"m": 5}, RankOutOfRangeError, r"^rank must lie in \[0, min\(q, l\)=5\]; got 6$"),
        (-1, {}, RankOutOfRangeError, r"^rank must lie in \[0, min\(q, l\)\]; got -1$"),
        (np.int64(-2), {"m": 3, "name": "k"}, RankOutOfRangeError, r"^k must lie in \[0, min\(q, l\)=3\]; got -2$"),
        (1.5, {}, OptionError, r"^rank as an energy fraction must lie in \(0, 1\]; got 1.5$"),
        (0.0, {}, OptionError, r"^rank as an energy fraction must lie in \(0, 1\]; got 0.0$"),
        (float("nan"), {}, OptionError, r"^rank as an energy fraction must lie in \(0, 1\]; got nan$"),
        (np.float32(-0.5), {}, OptionError, r"got -0.5$"),
        (0.5, {"allow_fraction": False, "allow_auto": False, "m": 4, "name": "k"}, OptionTypeError,
         r"^k must be an integer in \[0, 4\]; got 0.5 \(float\)$"),
    ],
)
def test_parse_rank_refuses_bad_values_with_a_typed_one_line_error(value, kwargs, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        parse_rank(value, **kwargs)
    assert "\n" not in str(info.value)
    if exc is RankOutOfRangeError:
        assert info.value.rank == int(value) and info.value.m == kwargs.get("m")


def test_parse_bias_mode():
    assert parse_bias_mode("fit") == "fit" and parse_bias_mode("ignore") == "ignore"
    with pytest.raises(OptionError, match=r"got 'subtract'$"):
        parse_bias_mode("subtract")  # an old spelling, never released: refused, not aliased
    with pytest.raises(OptionError, match=r"^bias_mode must be 'fit' \(targets Y - 1 b\^T\) or 'ignore' \(the paper's fit, targets Y\); got 'none'$"):
        parse_bias_mode("none")
    with pytest.raises(OptionTypeError, match=r"^bias must be 'fit'.*got True \(bool\)$"):
        parse_bias_mode(True, name="bias")


def test_options_parse_every_field_once_and_are_frozen():
    o = LIPOptions(rank=np.int64(3), tail="diagonal", target_scale=np.float32(2.0), rtol=np.float64(1e-6))
    assert (o.rank, o.target_scale, o.rtol) == (3, 2.0, 1e-6)
    assert type(o.rank) is int and type(o.target_scale) is float
    with pytest.raises(AttributeError):
        o.rank = 2  # frozen: parsed once, never changed behind the caller's back
    assert LIPOptions().to_dict()["tail"] == "auto"


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"tail": "paper"}, OptionError, r"^tail must be 'auto', 'diagonal' \(the paper\) or 'full' \(beyond the paper\); got 'paper'$"),
    ({"tail": 1}, OptionTypeError, r"^tail must be 'auto', .*; got 1 \(int\)$"),
    ({"ridge": -1.0}, OptionError, r"^ridge must be a finite number >= 0; got -1.0$"),
    ({"ridge": True}, OptionTypeError, r"^ridge must be a number >= 0 or 'auto'; got True \(bool\)$"),
    ({"target_scale": True}, OptionTypeError, r"^target_scale must be a positive number or 'logits'; got True \(bool\)$"),
    ({"target_scale": 0}, OptionError, r"^target_scale must be a positive number or 'logits'; got 0$"),
    ({"rtol": float("nan")}, OptionError, r"^rtol must be a finite number >= 0 or None; got nan$"),
    ({"min_gain": float("inf")}, OptionError, r"^min_gain must be a finite number >= 0 \(the held-out gain a change must exceed\); got inf$"),
    ({"min_gain": -0.1}, OptionError, r"^min_gain must be a finite number >= 0 .*; got -0.1$"),
    ({"confidence": 1.0}, OptionError, r"^confidence must lie in \(0, 1\) or be None; got 1.0$"),
    ({"holdout": 0.9}, OptionError, r"^holdout must lie in \(0, 0.5\]; got 0.9$"),
    ({"degenerate": "drop"}, OptionError, r"^degenerate must be 'zero' or 'keep'; got 'drop'$"),
    ({"tail": "diagonal", "ridge": 1.0}, OptionError, r"^ridge=1.0 applies to tail='full' only"),
    ({"tail": "full", "degenerate": "keep"}, OptionError, r"^degenerate='keep' applies to tail='diagonal' only$"),
    ({"rank": 3, "confidence": 0.9}, OptionError,
     r"^confidence=0.9 has no effect with rank=3: the significance guard runs only for rank='auto'"),
    ({"rank": 0.5, "min_gain": 0.01}, OptionError, r"^min_gain=0.01 has no effect with rank=0.5"),
])
def test_options_refuse_bad_values_and_combinations_in_one_line(kwargs, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        LIPOptions(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_option_names_are_typed_errors_everywhere(rng):
    W, X, y = rng.normal(size=(12, 6)), rng.normal(size=(80, 12)), rng.integers(0, 6, 80)
    with pytest.raises(OptionTypeError, match=r"^unknown LIP option 'fit_bias' for refine_batches"):
        lip.refine_batches(W, [(X, y)], fit_bias=True)  # never released: no alias
    with pytest.raises(OptionTypeError, match=r"pass options=LIPOptions\(...\) or option keywords, not both"):
        lip.refine_batches(W, [(X, y)], options=LIPOptions(), rank=2)
    with pytest.raises(OptionTypeError, match=r"^'xp' is set by the my face; it is chosen for you$"):
        check_option_names({"xp": None}, reserved=face_reserved(), face="my face")
    with pytest.raises(OptionError, match=r"^holdout must lie"):
        check_option_names({"holdout": 0.7}, reserved=face_reserved(), face="my face")


@pytest.mark.parametrize("kwargs, shape, repair, choose_rank, choose_ridge", [
    ({}, (64, 10), "full", True, True),
    ({"rank": 3}, (64, 10), "diagonal", False, False),
    ({"rank": 0.9}, (64, 10), "diagonal", False, False),
    ({"tail": "diagonal"}, (64, 10), "diagonal", True, False),
    ({"tail": "full", "rank": 2}, (64, 10), "full", False, True),
    ({"tail": "full", "rank": 2, "ridge": 0.5}, (64, 10), "full", False, False),
    ({"rank": 2, "ridge": "auto"}, (64, 10), "full", False, True),
    ({"degenerate": "keep"}, (64, 10), "diagonal", True, False),
    ({}, (4096, 32000), "diagonal", True, False),
])
def test_the_plan_is_the_one_policy_for_which_repair_runs(kwargs, shape, repair, choose_rank, choose_ridge):
    plan = LIPOptions(**kwargs).plan(shape)
    assert (plan.repair, plan.choose_rank, plan.choose_ridge) == (repair, choose_rank, choose_ridge)
    assert plan.beyond_paper == (repair == "full") and plan.reason


@pytest.mark.parametrize("rank", [np.int64(2), np.array(2), np.float32(0.9), np.float64(0.9), 0.9, 2])
def test_the_core_entry_points_accept_numpy_rank_scalars(rank, rng):
    W = rng.normal(size=(12, 6))
    X, y = rng.normal(size=(80, 12)), rng.integers(0, 6, 80)
    ref_rank = float(rank) if isinstance(parse_rank(rank), float) else int(rank)
    np.testing.assert_array_equal(lip.lip_refine(W, X, y, rank), lip.lip_refine(W, X, y, ref_rank))
    assert lip.refine_batches(W, [(X, y)], rank=rank).selection.k == lip.select_rank(W, ref_rank).k
    np.testing.assert_array_equal(lip.project_principal(W, rank), lip.project_principal(W, ref_rank))
    assert lip.LIPAccumulator(W, rank).rank == lip.LIPAccumulator(W, ref_rank).rank


@pytest.mark.parametrize("bad", [True, np.True_, "best", [1]])
def test_the_core_entry_points_refuse_the_same_bad_ranks(bad, rng):
    W = rng.normal(size=(12, 6))
    X, y = rng.normal(size=(80, 12)), rng.integers(0, 6, 80)
    calls = [lambda: lip.lip_refine(W, X, y, bad), lambda: lip.refine_batches(W, [(X, y)], rank=bad),
             lambda: lip.select_rank(W, bad), lambda: lip.LIPAccumulator(W, bad)]
    for call in calls:
        with pytest.raises(OptionError, match=r"must be an int"):
            call()


def test_the_core_raises_typed_errors(rng):
    W = rng.normal(size=(12, 6))
    X, y = rng.normal(size=(80, 12)), rng.integers(0, 6, 80)
    with pytest.raises(RankOutOfRangeError, match=r"k must lie in \[0, min\(q, l\)=6\]; got 7") as info:
        lip.lip_refine(W, X, y, 7)
    assert (info.value.rank, info.value.m) == (7, 6)
    Xn = X.copy()
    Xn[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"X contains 1 NaN/Inf value\(s\)"):
        lip.lip_refine(W, Xn, y, 2)
    with pytest.raises(DataError, match=r"X has 11 features"):
        lip.lip_refine(W, X[:, :11], y, 2)
    with pytest.raises(OptionError, match=r"holdout must lie in \(0, 0.5\]; got 0.9"):
        lip.refine_batches(W, [(X, y)], rank="auto", holdout=0.9)
    with pytest.raises(OptionError, match=r"degenerate must be 'zero' or 'keep'; got 'drop'"):
        lip.lip_refine(W, X, y, 2, degenerate="drop")
    with pytest.raises(OptionTypeError, match=r"validation must be a pair \(X_val, Y_val\) of arrays; got ndarray"):
        lip.lip_refine(W, X, y, "auto", validation=X)


def test_holdout_is_refused_where_nothing_is_chosen_on_held_out_data():
    with pytest.raises(OptionError, match=r"^holdout=0.3 has no effect with rank=2: nothing is chosen on held-out data"):
        LIPOptions(rank=2, holdout=0.3)
    assert LIPOptions(rank=2, tail="full", holdout=0.3).holdout == 0.3  # the ridge is chosen on it
