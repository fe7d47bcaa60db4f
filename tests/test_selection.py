"""The one guarded selection: the rank-one fast path of the paper's refit and the stacked scorer
of whole candidate weights give the same evidence, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic import LIPAccumulator
from lip_agnostic.errors import DataError, NonFiniteError
from lip_agnostic.selection import StackedScorer


@pytest.mark.parametrize("targets", ["labels", "matrix"])
def test_the_rank_one_fast_path_equals_scoring_every_candidate_weight(backend, targets):
    rng = np.random.default_rng(5)
    q, l = 10, 5
    W, b = rng.normal(size=(q, l)), rng.normal(size=l)
    X, y = rng.normal(size=(300, q)), rng.integers(0, l, 300)
    Xv = rng.normal(size=(120, q))
    Yv = rng.integers(0, l, 120) if targets == "labels" else rng.random((120, l)) * (rng.random((120, l)) < 0.5)
    xb = backend.asarray
    acc = LIPAccumulator(xb(W), bias=xb(b)).update(xb(X), xb(y))
    fast = acc.scorer().update(xb(Xv), xb(Yv))
    cands = fast.candidates
    stacked = StackedScorer(acc._W, acc.bias, acc.svd.rank_max, "diagonal", cands,
                            lambda j: (acc.result(cands[j][0]), None), xp=acc._xp, work=acc.svd.s.dtype,
                            sdt=acc._sdt, device=acc._device).update(xb(Xv), xb(Yv))
    np.testing.assert_allclose(backend.to_numpy(fast.partial_sums), backend.to_numpy(stacked.partial_sums),
                               rtol=1e-12, atol=1e-9)
    assert fast.best(confidence=None) == stacked.best(confidence=None)


def test_the_guard_keeps_the_layer_unless_a_gain_is_significant():
    rng = np.random.default_rng(0)
    W, X = rng.normal(size=(8, 4)), rng.normal(size=(400, 8))
    y = rng.integers(0, 4, 400)
    scorer = LIPAccumulator(W).update(X, y).scorer().update(X, rng.integers(0, 4, 400))
    sel = scorer.best()
    assert sel.k == sel.m and not sel.changed and sel.best_score == sel.base_score
    assert len(sel.extra["p_values"]) == len(scorer.candidates) == len(sel.ks) - 1
    forced = scorer.best(guarded=False)
    assert forced.k < forced.m  # unguarded: the best candidate, whatever the unchanged layer scores


def test_scorer_sums_are_checked_when_loaded():
    rng = np.random.default_rng(1)
    W, X, y = rng.normal(size=(6, 3)), rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
    scorer = LIPAccumulator(W).update(X, y).scorer()
    with pytest.raises(DataError, match=r"^partial sums must have shape"):
        scorer.load_partial_sums(np.zeros(2))
    with pytest.raises(NonFiniteError, match=r"the partial sums contain NaN/Inf \(an all_reduce that returned NaN\?\)$"):
        scorer.load_partial_sums(np.full(scorer.partial_sums.shape, np.nan))
    acc = LIPAccumulator(W).update(X, y)
    with pytest.raises(NonFiniteError, match=r"partial sums contain NaN/Inf"):
        acc.load_partial_sums(np.full(acc.partial_sums.shape, np.inf))
