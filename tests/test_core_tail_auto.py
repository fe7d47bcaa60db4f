"""tail="auto": the faces' default follows the committed evidence (docs/EVIDENCE.md)."""

import numpy as np
import pytest

from lip_agnostic import refine_batches
from lip_agnostic.errors import OptionError
from lip_agnostic.full_tail import AUTO_TAIL_MEMORY_BYTES, chooses_on_validation, resolve_tail


def _data(seed=0, n=600, q=12, l=4):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(q, l))
    X = rng.normal(size=(n, q))
    y = np.argmax(X @ W + rng.normal(scale=2.0, size=(n, l)), axis=1)
    return W, X, y


@pytest.mark.parametrize("rank, ridge, expect", [
    ("auto", None, "full"), (3, None, "diagonal"), (0.9, None, "diagonal"), (3, 0.1, "full"), ("auto", "auto", "full"),
])
def test_resolve_tail_rules(rank, ridge, expect):
    assert resolve_tail("auto", rank, (64, 10), ridge=ridge)[0] == expect


def test_a_diagonal_only_option_keeps_the_paper():
    assert resolve_tail("auto", "auto", (64, 10), degenerate="keep")[0] == "diagonal"
    W, X, y = _data(2)
    res = refine_batches(W, [(X, y)], rank="auto", degenerate="keep", tail="auto")
    assert res.tail == "diagonal" and "degenerate='keep'" in res.to_dict()["tail_reason"]


def test_explicit_tails_stand_for_themselves():
    assert resolve_tail("diagonal", "auto", (64, 10)) == ("diagonal", "requested")
    assert resolve_tail("full", 3, (64, 10)) == ("full", "requested")


def test_a_head_too_big_for_the_full_search_gets_the_paper():
    tail, why = resolve_tail("auto", "auto", (4096, 32000))
    assert tail == "diagonal" and "GiB" in why and "diagonal" in why
    assert resolve_tail("auto", "auto", (512, 10))[0] == "full"
    assert AUTO_TAIL_MEMORY_BYTES > 0


def test_unknown_tail_is_refused_with_its_value():
    with pytest.raises(OptionError, match="tail must be 'auto', 'diagonal'.*'sideways'"):
        resolve_tail("sideways", "auto", (4, 3))
    W, X, y = _data()
    with pytest.raises(OptionError, match="'sideways'"):
        refine_batches(W, [(X, y)], rank="auto", tail="sideways")


def test_auto_runs_the_full_tail_for_rank_auto_and_the_report_says_why():
    W, X, y = _data()
    auto = refine_batches(W, [(X[:400], y[:400])], rank="auto", validation=[(X[400:], y[400:])], tail="auto")
    full = refine_batches(W, [(X[:400], y[:400])], rank="auto", validation=[(X[400:], y[400:])], tail="full")
    assert auto.tail == "full" and auto.to_dict()["beyond_paper"] is True
    assert "rank='auto'" in auto.to_dict()["tail_reason"]
    np.testing.assert_array_equal(auto.weight, full.weight)
    assert "tail_reason" not in full.to_dict()  # set only when "auto" chose


def test_auto_with_a_fixed_rank_is_the_paper_bit_for_bit():
    W, X, y = _data(1)
    auto = refine_batches(W, [(X, y)], rank=2, tail="auto")
    paper = refine_batches(W, [(X, y)], rank=2, tail="diagonal")
    assert auto.tail == "diagonal" and auto.to_dict()["beyond_paper"] is False
    np.testing.assert_array_equal(auto.weight, paper.weight)


def test_chooses_on_validation_with_auto_tail():
    assert chooses_on_validation("auto", "auto")
    assert not chooses_on_validation(3, "auto")
    assert chooses_on_validation(3, "auto", "auto")
    assert not chooses_on_validation(3, "auto", 0.5)


def test_the_default_stays_the_paper():
    W, X, y = _data(3)
    res = refine_batches(W, [(X, y)], rank="auto")
    assert res.tail == "diagonal" and "tail_reason" not in res.to_dict()


def test_lip_onnx_tail_auto_on_the_demo(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from lip_agnostic.tools import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--save-inputs", "."]) == 0
    assert cli.main(["denoise", "model.onnx", "--calib", "calib.npz", "--tail", "auto", "-o", "a.onnx"]) == 0
    out = capsys.readouterr().out
    assert "full-tail ridge refit (beyond the paper" in out
