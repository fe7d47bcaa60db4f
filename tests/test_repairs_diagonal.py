"""Choosing k: fixed, energy, and the automatic one-pass scoring with its significance guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lip_agnostic import lip_refine, LIPAccumulator, refine_batches, select_rank

from lip_agnostic.repairs.diagonal import RankScorer

from lip_agnostic.selection import candidate_ranks, sign_test_p
from lip_agnostic.errors import OptionError


@pytest.fixture
def problem(rng):
    q, l, n = 16, 6, 400
    W = rng.normal(size=(q, l))
    X = rng.normal(size=(n, q))
    y = rng.integers(0, l, n)
    Xv = rng.normal(size=(200, q))
    yv = rng.integers(0, l, 200)
    return W, X, y, Xv, yv


def brute_force_scores(W, X, y, Xv, yv, bias=None):
    """Accuracy of W*(k) on the held-out data, refitting from scratch for every k."""
    out = []
    for k in range(0, 7):
        Wk = lip_refine(W, X, y, k, bias=bias)
        Z = Xv @ Wk + (0.0 if bias is None else bias)
        out.append(float(np.mean(np.argmax(Z, axis=1) == yv)))
    return out


def test_one_pass_scores_equal_refitting_every_k(backend, problem):
    W, X, y, Xv, yv = problem
    xb = backend.asarray
    acc = LIPAccumulator(xb(W)).update(xb(X), xb(y))
    scorer = RankScorer(acc).update(xb(Xv[:77]), xb(yv[:77])).update(xb(Xv[77:]), xb(yv[77:]))
    assert scorer.ks == tuple(range(7))
    np.testing.assert_allclose(scorer.scores(), brute_force_scores(W, X, y, Xv, yv), atol=1e-12)


def test_one_pass_scores_with_bias(problem, rng):
    W, X, y, Xv, yv = problem
    b = rng.normal(size=6)
    scorer = RankScorer(LIPAccumulator(W, bias=b).update(X, y)).update(Xv, yv)
    np.testing.assert_allclose(scorer.scores(), brute_force_scores(W, X, y, Xv, yv, b), atol=1e-12)


def test_wins_and_losses_are_paired_counts_against_the_unchanged_model(problem):
    W, X, y, Xv, yv = problem
    sel = RankScorer(LIPAccumulator(W).update(X, y)).update(Xv, yv).best(confidence=None)
    base_hit = np.argmax(Xv @ W, axis=1) == yv
    for k, w, ls in zip(sel.ks, sel.extra["wins"], sel.extra["losses"]):
        hit = np.argmax(Xv @ lip_refine(W, X, y, k), axis=1) == yv
        assert w == np.sum(hit & ~base_hit) and ls == np.sum(~hit & base_hit)


def test_auto_on_pure_noise_changes_nothing(problem):
    W, X, y, Xv, yv = problem  # labels independent of features: no rank can really help
    sel = select_rank(W, "auto", accumulator=LIPAccumulator(W).update(X, y), validation=(Xv, yv))
    assert sel.k == sel.m and not sel.changed
    assert sel.strategy == "auto" and len(sel.scores) == len(sel.ks) == 7


def test_auto_finds_a_real_gain_and_it_is_significant(rng):
    # A teacher with a clean rank-2 signal; the "trained" weight has a large junk tail.
    q, l, n = 30, 10, 3000
    U, _ = np.linalg.qr(rng.normal(size=(q, q)))
    V, _ = np.linalg.qr(rng.normal(size=(l, l)))
    teacher = (U[:, :2] * np.array([6.0, 5.0])) @ V[:, :2].T
    W = teacher + (U[:, 2:l] * 3.0) @ V[:, 2:].T
    X = rng.normal(size=(n, q))
    y = np.argmax(X @ teacher + rng.gumbel(size=(n, l)), axis=1)
    Xv = rng.normal(size=(n, q))
    yv = np.argmax(Xv @ teacher + rng.gumbel(size=(n, l)), axis=1)
    acc = LIPAccumulator(W).update(X, y)
    sel = select_rank(W, "auto", accumulator=acc, validation=(Xv, yv))
    assert sel.changed and sel.k <= 3
    assert sel.best_score > sel.base_score
    assert sel.extra["p_values"][sel.ks.index(sel.k)] < 0.05 / (len(sel.ks) - 1)


def test_min_gain_and_confidence_switches(problem):
    W, X, y, Xv, yv = problem
    scorer = RankScorer(LIPAccumulator(W).update(X, y)).update(Xv, yv)
    loose = scorer.best(confidence=None)
    best_i = int(np.argmax(scorer.scores()))
    if scorer.scores()[best_i] > scorer.scores()[-1]:
        assert loose.changed
    huge = scorer.best(min_gain=1.0, confidence=None)
    assert huge.k == huge.m
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\) or be None; got 1.5"):
        scorer.best(confidence=1.5)


def test_ties_go_to_the_smaller_change(rng):
    W = rng.normal(size=(4, 3))
    X = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, 30)
    acc = LIPAccumulator(W).update(X, y)
    scorer = RankScorer(acc).update(X, y)
    # Force a tie: identical scores everywhere means no change.
    scorer.load_partial_sums(np.concatenate([np.full(4, 10.0), np.zeros(8), [30.0]]))
    assert scorer.best(confidence=None).k == 3


def test_scorer_partial_sums_all_reduce(problem):
    W, X, y, Xv, yv = problem
    acc = LIPAccumulator(W).update(X, y)
    parts = [RankScorer(acc).update(Xv[i::2], yv[i::2]) for i in range(2)]
    total = parts[0].partial_sums + parts[1].partial_sums
    whole = RankScorer(acc).update(Xv, yv)
    parts[0].load_partial_sums(total)
    np.testing.assert_allclose(parts[0].scores(), whole.scores())
    assert parts[0].best() == whole.best()


def test_soft_and_candidate_targets_score_by_the_picked_weight(problem, rng):
    W, X, y, Xv, _ = problem
    cand = rng.random((200, 6)) < 0.5
    cand[np.arange(200), rng.integers(0, 6, 200)] = True
    scorer = RankScorer(LIPAccumulator(W).update(X, y)).update(Xv, cand.astype(np.float64))
    pred = np.argmax(Xv @ W, axis=1)
    assert scorer.scores()[-1] == pytest.approx(np.mean(cand[np.arange(200), pred]))


def test_fixed_and_energy_strategies(problem):
    W = np.diag([3.0, 1.0, 0.1])
    assert select_rank(W, 2).k == 2 and select_rank(W, 2).strategy == "fixed"
    assert select_rank(W, 0.9).k == 2  # 9 / 10.01 = 0.899 falls just short with one component
    sel = select_rank(W, 0.85)
    assert sel.k == 1 and sel.strategy == "energy"
    assert sel.scores[0] == pytest.approx(9.0 / 10.01)
    assert select_rank(W, 3).changed is False


def test_candidate_grid_is_dense_near_the_top_and_capped():
    assert candidate_ranks(0, 10) == list(range(11))
    ks = candidate_ranks(0, 1000, limit=50)
    assert ks[0] == 0 and ks[-1] == 1000 and len(ks) <= 51
    assert ks == sorted(set(ks))
    assert ks[1] - ks[0] < ks[-1] - ks[-2] or ks[1] - ks[0] <= 40  # denser at small k


def test_sign_test_p_values():
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(0, 9) == 1.0
    assert sign_test_p(3, 3) == pytest.approx(sum(math.comb(6, i) for i in range(3, 7)) / 64)
    # the normal approximation takes over smoothly past 2,000 discordant pairs
    assert abs(sign_test_p(1050, 950) - sign_test_p(1051, 951)) < 0.01
    assert sign_test_p(1100, 1000) < 0.02


def test_auto_lip_refine_uses_the_validation_data(problem):
    W, X, y, Xv, yv = problem
    out = lip_refine(W, X, y, "auto", validation=(Xv, yv))
    # refine_batches takes the same pair (one batch) as well as a stream of batches
    np.testing.assert_array_equal(refine_batches(W, [(X, y)], tail="diagonal", validation=(Xv, yv)).weight, out)
    acc = LIPAccumulator(W).update(X, y)
    sel = select_rank(W, "auto", accumulator=acc, validation=(Xv, yv))
    np.testing.assert_allclose(out, lip_refine(W, X, y, sel.k))
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'X_val'"):
        select_rank(W, "auto", accumulator=acc, X_val=Xv, Y_val=yv)  # never released: no old spelling
    with pytest.raises(OptionError, match=r"rank='auto' needs held-out data: pass validation=\(X_val, Y_val\)"):
        select_rank(W, "auto", accumulator=acc)
    with pytest.raises(TypeError, match="validation must be a pair"):
        select_rank(W, "auto", accumulator=acc, validation=Xv)


# ------------------------------------------------------------- refine_batches
def test_refine_batches_matches_lip_refine_and_reports(backend, problem):
    W, X, y, _, _ = problem
    xb = backend.asarray
    res = refine_batches(xb(W), [(xb(X[:150]), xb(y[:150])), (xb(X[150:]), xb(y[150:]))], rank=2)
    np.testing.assert_allclose(backend.to_numpy(res.weight), lip_refine(W, X, y, 2), rtol=1e-10)
    assert res.n_fit == 400 and res.selection.k == 2
    d = res.to_dict()
    assert d["summary"]["shape"] == [16, 6] and d["selection"]["strategy"] == "fixed"


def test_refine_batches_auto_holds_out_every_fifth_sample(problem):
    W, X, y, _, _ = problem
    res = refine_batches(W, iter([(X[:123], y[:123]), (X[123:], y[123:])]), rank="auto", tail="diagonal")
    assert res.n_fit == 320 and res.selection.n_val == 80
    held = np.arange(400) % 5 == 4
    acc = LIPAccumulator(W).update(X[~held], y[~held])
    sel = RankScorer(acc).update(X[held], y[held]).best()
    assert sel.k == res.selection.k and sel.scores == res.selection.scores
    assert res.selection.extra["source"] == "holdout 1/5"


def test_refine_batches_with_validation_and_all_reduce(problem):
    W, X, y, Xv, yv = problem
    calls = []

    def all_reduce(a):
        calls.append(a.shape)
        return 2 * a  # two identical workers

    res = refine_batches(W, [(X, y)], rank="auto", validation=[(Xv, yv)], all_reduce=all_reduce)
    single = refine_batches(W, [(X, y)], rank="auto", validation=[(Xv, yv)])
    assert len(calls) == 2 and res.n_fit == 800 and res.selection.n_val == 400
    np.testing.assert_allclose(res.selection.scores, single.selection.scores)
    assert res.selection.extra["source"] == "validation"


def test_refine_batches_bad_input(problem):
    W, X, y, _, _ = problem
    with pytest.raises(ValueError, match="no samples reached LIP: the batches were empty"):
        refine_batches(W, [], rank=2)
    with pytest.raises(ValueError, match=r"rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got 'max'"):
        refine_batches(W, [(X, y)], rank="max")
    with pytest.raises(ValueError, match=r"holdout must lie in \(0, 0.5\]; got 0.9"):
        refine_batches(W, [(X, y)], holdout=0.9)
    with pytest.raises(ValueError, match=r"^no held-out samples to score \(the validation data were empty\)$"):
        refine_batches(W, [(X, y)], validation=[])
    with pytest.raises(ValueError, match="needs held-out data"):
        select_rank(W, "auto", accumulator=LIPAccumulator(W).update(X, y))
    with pytest.raises(ValueError, match="needs a fitted accumulator"):
        select_rank(W, "auto")
    with pytest.raises(TypeError, match="RankScorer needs a LIPAccumulator; got dict"):
        RankScorer({})
    with pytest.raises(ValueError, match=r"candidate ranks below 3 are not tracked"):
        RankScorer(LIPAccumulator(W, 3).update(X, y), ranks=[1, 4])
    with pytest.raises(ValueError, match="scorer has seen no held-out data"):
        RankScorer(LIPAccumulator(W).update(X, y)).scores()


def test_refine_batches_passes_rtol_and_reports_unchanged_weights_with_zero_angle(problem):
    W, X, y, _, _ = problem
    loose = refine_batches(W, [(X, y)], rank=2, rtol=0.999)  # all but the best-excited one
    strict = refine_batches(W, [(X, y)], rank=2, rtol=0.0)
    assert loose.n_degenerate > 0 and strict.n_degenerate == 0
    same = refine_batches(W, [(X, y)], rank=6)
    assert same.summary.top_k_angle == 0.0 and same.summary.relative_change == 0.0
    assert same.summary.kept_unchanged and same.summary.kept_relative_change == 0.0


def test_scoring_uses_the_layers_bias_even_when_the_fit_ignores_it(problem, rng):
    W, X, y, Xv, yv = problem
    b = 3.0 * rng.normal(size=6)  # a large bias: the real model's predictions depend on it
    scorer = RankScorer(LIPAccumulator(W, bias=b, bias_mode="ignore").update(X, y)).update(Xv, yv)
    for k, score in zip(scorer.ks, scorer.scores()):
        Wk = lip_refine(W, X, y, k)  # the paper's fit
        assert score == pytest.approx(np.mean(np.argmax(Xv @ Wk + b, axis=1) == yv))
