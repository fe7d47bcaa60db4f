"""tail="auto": the faces' default follows the committed evidence (docs/EVIDENCE.md)."""

import numpy as np
import pytest

from lip_agnostic import refine_batches
from lip_agnostic.errors import OptionError
from lip_agnostic.options import AUTO_TAIL_MEMORY_BYTES, LIPOptions


def resolve_tail(tail, rank, shape, **kw):
    plan = LIPOptions(tail=tail, rank=rank, **kw).plan(shape)
    return plan.repair, plan.reason


def chooses_on_validation(rank, tail="auto", ridge=None):
    return LIPOptions(rank=rank, tail=tail, ridge=ridge).uses_validation


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


def test_the_default_follows_the_evidence():
    W, X, y = _data(3)
    res = refine_batches(W, [(X, y)], rank="auto")
    assert res.tail == "full" and "rank='auto'" in res.to_dict()["tail_reason"]
    fixed = refine_batches(W, [(X, y)], rank=2)
    assert fixed.tail == "diagonal" and fixed.to_dict()["beyond_paper"] is False
    paper = refine_batches(W, [(X, y)], rank="auto", tail="diagonal")
    assert paper.tail == "diagonal" and "tail_reason" not in paper.to_dict()


def test_lip_refine_stays_the_paper_by_default():
    import inspect

    from lip_agnostic import lip_refine

    assert "tail" not in inspect.signature(lip_refine).parameters  # the paper's method, nothing else
    W, X, y = _data(4)
    np.testing.assert_array_equal(lip_refine(W, X, y, 2), refine_batches(W, [(X, y)], rank=2, tail="diagonal").weight)


def test_lip_onnx_tail_auto_on_the_demo(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from lip_agnostic.tools import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--save-inputs", "."]) == 0
    assert cli.main(["denoise", "model.onnx", "--calib", "calib.npz", "--tail", "auto", "-o", "a.onnx"]) == 0
    out = capsys.readouterr().out
    assert "full-tail ridge refit (beyond the paper" in out
    assert "k=0: no component kept, the whole layer refit" in out and "changed: a ridge head (k=0" in out
    # The default is "auto": the same model bit for bit.
    assert cli.main(["denoise", "model.onnx", "--calib", "calib.npz", "-o", "d.onnx"]) == 0
    assert open("a.onnx", "rb").read() == open("d.onnx", "rb").read()


def test_lip_onnx_demo_tail_settings(capsys):
    pytest.importorskip("onnxruntime")
    from lip_agnostic.tools import demo

    auto = demo.run(verbose=True)
    out = capsys.readouterr().out
    assert auto["tail"] == "full" and auto["tail_setting"] == "auto"
    assert "the default for --rank auto by the" in out and "committed evidence" in out
    paper = demo.run(tail="diagonal")
    out = capsys.readouterr().out
    assert paper["tail"] == "diagonal" and "refit: the paper's LIP (diagonal tail refit)" in out
    # Every printed number is the returned one: accuracy before is the same model either way.
    assert paper["test_accuracy_before"] == auto["test_accuracy_before"]
    if paper["k"] == paper["m"]:
        assert paper["test_accuracy_after"] == paper["test_accuracy_before"]
        assert "no rank beat the unchanged model's held-out top-1 accuracy significantly" in out
    full = demo.run(tail="full")
    assert "as requested (--tail full)" in capsys.readouterr().out
    assert full["k"] == auto["k"] and full["test_accuracy_after"] == auto["test_accuracy_after"]
    fixed = demo.run(rank=9)
    assert fixed["tail"] == "diagonal" and "what --tail auto runs for a fixed rank" in capsys.readouterr().out


def test_lip_onnx_demo_tail_is_checked(capsys):
    pytest.importorskip("onnxruntime")
    from lip_agnostic.tools import cli

    assert cli.main(["demo", "--save-inputs", "x", "--tail", "full"]) == 2
    assert "--save-inputs only copies the demo's files; run the demo without it to use --rank/--tail/-o" in (
        capsys.readouterr().err)
    assert cli.main(["demo", "--tail", "wide"]) == 2
    assert "argument --tail: invalid choice: 'wide'" in capsys.readouterr().err


def test_ridge_without_calibration_is_refused_before_any_file_is_read(tmp_path):
    pytest.importorskip("onnxruntime")
    from lip_agnostic.tools import api
    from lip_agnostic.tools.errors import UsageError

    with pytest.raises(UsageError, match=r"--ridge sets the full-tail refit, .*it needs --calib DATA.npz"):
        api.denoise_file(str(tmp_path / "missing.onnx"), rank=3, ridge=0.5)
    assert list(tmp_path.iterdir()) == []
