"""The one driver, ``refine_batches``: what it accepts, what it refuses (one typed line each),
and the result a person reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lip_agnostic import (
    DataError,
    DataTypeError,
    LIPOptions,
    NonFiniteError,
    OptionTypeError,
    lip_refine,
    refine_batches,
)
from lip_agnostic.repairs import REPAIRS, Repair
from lip_agnostic.label_issues import find_label_issues


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    q, l = 12, 4
    W_true = rng.normal(size=(q, l)) * 2
    X = rng.normal(size=(900, q))
    y = np.argmax(X @ W_true, 1)
    W = W_true + rng.normal(size=(q, l))
    return W, X, y, rng


def test_every_registered_repair_implements_the_protocol(problem):
    W, X, y, _ = problem
    for name, cls in REPAIRS.items():
        opts = LIPOptions(label_repair="auto") if name == "labels" else LIPOptions()
        acc = cls.from_options(W, None, bias=None, options=opts, svd=None, xp=None)
        assert isinstance(acc, Repair) and cls.name == name
        assert cls.beyond_paper == (name != "diagonal")
    diag, full, labels = (cls(W) for cls in REPAIRS.values())
    with pytest.raises(DataTypeError, match=r"^can only merge a LabelAwareRepair; got FullTailAccumulator$"):
        labels.merge(full)
    with pytest.raises(DataTypeError, match=r"^can only merge a LIPAccumulator; got FullTailAccumulator$"):
        diag.merge(full)
    with pytest.raises(DataTypeError, match=r"^can only merge a FullTailAccumulator; got LIPAccumulator$"):
        full.merge(diag)


def test_a_validation_pair_is_one_batch_as_lip_refine_takes_it(problem):
    W, X, y, _ = problem
    pair = refine_batches(W, [(X[:600], y[:600])], tail="diagonal", validation=(X[600:], y[600:]))
    stream = refine_batches(W, [(X[:600], y[:600])], tail="diagonal", validation=[(X[600:], y[600:])])
    np.testing.assert_array_equal(pair.weight, stream.weight)
    assert pair.selection.n_val == 300 and pair.selection.extra["source"] == "validation"
    np.testing.assert_array_equal(lip_refine(W, X[:600], y[:600], "auto", validation=(X[600:], y[600:])), pair.weight)


@pytest.mark.parametrize("batches, exc, msg", [
    ([(np.zeros((3, 12)), np.zeros(3, int), np.zeros(3))], DataTypeError,
     r"^fit batch 0 must be a pair \(X, Y\) of arrays; got a tuple of length 3$"),
    ([[[0.0] * 12, [0]]], DataTypeError, r"^fit batch 0 must be a pair \(X, Y\) of arrays; got \(list, list\)$"),
    ([np.zeros((3, 12))], DataTypeError, r"^fit batch 0 must be a pair \(X, Y\) of arrays; got a ndarray$"),
    ([(np.zeros((3, 12)), np.zeros(2, int))], DataError,
     r"^fit batch 0 has 3 rows but Y has 2 labels: features and labels must pair up row by row$"),
])
def test_malformed_batches_get_one_typed_line(problem, batches, exc, msg):
    W, *_ = problem
    with pytest.raises(exc, match=msg):
        refine_batches(W, batches, rank=2)


def test_a_weight_and_batches_of_different_libraries_are_refused(problem):
    torch = pytest.importorskip("torch")
    W, X, y, _ = problem
    with pytest.raises(DataTypeError, match=r"^inputs must all be arrays of one array-API library"):
        refine_batches(W, [(torch.as_tensor(X), torch.as_tensor(y))])


def test_validation_data_for_a_fixed_rank_are_refused_not_ignored(problem):
    W, X, y, _ = problem
    with pytest.raises(DataError, match=r"^validation data are only used when something is chosen on held-out data"):
        refine_batches(W, [(X, y)], rank=2, validation=[(X, y)])
    # a fixed rank with the full tail's ridge="auto": the held-out data choose the ridge, the rank forces a change
    res = refine_batches(W, [(X[:600], y[:600])], rank=0, tail="full", validation=[(X[600:], y[600:])])
    assert res.changed and res.k == 0 and res.selection.ridge is not None
    assert res.selection.extra["guarded"] is False and "unchanged" not in res.outcome


def test_a_broken_all_reduce_is_named(problem):
    W, X, y, _ = problem
    with pytest.raises(NonFiniteError, match=r"^all_reduce returned NaN/Inf for the fit statistics"):
        refine_batches(W, [(X, y)], rank=2, all_reduce=lambda a: a * np.nan)
    with pytest.raises(DataError, match=r"^all_reduce must return an array of the shape it was given"):
        refine_batches(W, [(X, y)], rank=2, all_reduce=lambda a: a[:3])


def test_options_come_once_either_as_an_object_or_as_keywords(problem):
    W, X, y, _ = problem
    a = refine_batches(W, [(X, y)], options=LIPOptions(rank=2))
    b = refine_batches(W, [(X, y)], rank=2)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.options == b.options == LIPOptions(rank=2)
    with pytest.raises(OptionTypeError, match=r"^options must be a lip_agnostic.LIPOptions; got dict$"):
        refine_batches(W, [(X, y)], options={"rank": 2})


def test_the_result_reads_in_a_few_lines_and_its_dict_carries_the_outcome(problem):
    W, X, y, rng = problem
    changed = refine_batches(W, [(X[:600], y[:600])], validation=[(X[600:], y[600:])], confidence=None)
    text = str(changed)
    assert text.startswith("LIPResult: changed: ") and len(text.splitlines()) <= 6
    assert "beyond the paper" in text and "held-out score (validation, 300 samples)" in text
    assert "array(" not in text and len(text) < 800  # no weight dump
    d = changed.to_dict()
    assert d["outcome"] == changed.outcome and json.loads(json.dumps(d, default=str))["outcome"] == changed.outcome
    assert repr(changed).startswith("LIPResult(tail='full', k=") and "W=(q=12, l=4)" in repr(changed)

    noisy = rng.integers(0, 4, 900)
    same = refine_batches(W, [(X[:600], noisy[:600])], validation=[(X[600:], noisy[600:])])
    assert not same.changed
    assert same.outcome.startswith("unchanged: no (k, ridge) candidate beat the unchanged model's top-1 accuracy "
                                   "against the held-out labels")
    assert "sign test, confidence 0.95" in same.outcome and "on the validation data (300 samples)" in same.outcome
    paper = refine_batches(W, [(X, y)], rank=2)
    assert paper.outcome == ("changed: the top 2 of 4 components kept, the other 2 singular values refit "
                             "against the labels (the paper's LIP)")
    assert "diagonal (the paper's LIP)" in str(paper)


def test_progress_is_shown_on_a_terminal_only_by_default(problem):
    import io

    from lip_agnostic.progress import Progress

    W, X, y, _ = problem
    batches = [(X[i:i + 100], y[i:i + 100]) for i in range(0, 900, 100)]
    quiet = io.StringIO()  # not a terminal: nothing, even for long steps
    refine_batches(W, batches, progress=Progress(stream=quiet, delay=0.0, interval=0.0))
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    refine_batches(W, batches, progress=Progress(True, stream=shown, delay=0.0, interval=0.0))
    finals = [line.rsplit("\r", 1)[-1] for line in shown.getvalue().split("\n") if line]
    assert finals[0].startswith("lip: fit statistics: 9 batches, ")
    assert any(f.startswith("lip: full-tail candidates: 20/20 candidates, ") for f in finals)
    assert finals[-1].startswith("lip: held-out scoring: ")
    with pytest.raises(OptionTypeError, match=r"^progress must be None \(on a terminal only\), True, False or a Progress"):
        refine_batches(W, batches, progress="yes")


def test_label_issues_ride_along_when_asked(problem):
    W, X, y, rng = problem
    yn = y.copy()
    flip = rng.random(900) < 0.2
    yn[flip] = (y[flip] + 1) % 4
    batches = [(X[i:i + 300], yn[i:i + 300]) for i in range(0, 900, 300)]
    res = refine_batches(W, batches, label_issues=True)
    rows = res.label_issues.rows()
    pos = np.array([r["position"] for r in rows])
    # rank='auto' holds every 5th row out (positions 4, 9, ...): the issues are the standalone
    # finder's on the fit rows, mapped back to positions in the stream as passed
    assert res.label_issues.held_out_period == 5
    fit = np.arange(900) % 5 != 4
    alone = find_label_issues([(Xb[fit[i:i + 300]], yb[fit[i:i + 300]]) for i, (Xb, yb) in zip(range(0, 900, 300), batches)],
                              4).positions()
    assert pos.tolist() == np.flatnonzero(fit)[alone].tolist()
    assert flip[pos].mean() > 0.7 and res.to_dict()["label_issues"]["n_rows"] == 720  # the fit rows checked
    assert "label issues: " in str(res)
    assert refine_batches(W, batches).label_issues is None  # off by default: no extra passes
    with pytest.raises(DataTypeError, match=r"one-shot"):
        refine_batches(W, (b for b in batches), label_issues=True)


class _Counted:
    """A re-iterable list of batches that counts how often it is read through (batches handed out / batches)."""

    def __init__(self, batches):
        self.batches, self.handed = batches, 0

    @property
    def reads(self):
        return self.handed / len(self.batches)

    def __iter__(self):
        for b in self.batches:
            self.handed += 1
            yield b


@pytest.mark.parametrize("cache", [True, False], ids=["in-memory copy", "read again"])
def test_the_second_pass_replays_the_fit_rows_kept_in_memory(problem, monkeypatch, cache):
    import lip_agnostic.driver as driver

    W, X, y, rng = problem
    yn = np.where(rng.random(900) < 0.2, (y + 1) % 4, y)
    batches = [(X[i:i + 300], yn[i:i + 300]) for i in range(0, 900, 300)]
    reference = refine_batches(W, batches, label_repair="auto", progress=False)
    issues_ref = refine_batches(W, batches, label_issues=True, progress=False).label_issues.positions()
    if not cache:
        monkeypatch.setattr(driver, "FIT_ROW_CACHE_BYTES", 10 * 12 * 8)  # ten rows: the copy is dropped
    for kwargs in ({"label_repair": "auto"}, {"label_issues": True}):
        source = _Counted(batches)
        res = refine_batches(W, source, progress=False, **kwargs)
        # one pass and the copy (label_issues alone: its own two passes read the copy too), or the source again
        assert source.reads == (1 if cache else (2 if "label_repair" in kwargs else 3))
        if "label_repair" in kwargs:
            np.testing.assert_array_equal(res.weight, reference.weight)
            assert res.selection == reference.selection
        assert res.label_issues.positions() == (reference.label_issues.positions() if "label_repair" in kwargs
                                                else issues_ref)
