"""find_label_issues: the one call that chains out-of-fold scores, a temperature and confident
learning (or the neighbour vote), on every backend; checked against cleanlab on the same scores."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic.errors import DataError, DataTypeError, OptionError
from lip_agnostic.label_issues import find_label_issues
from lip_agnostic.noise import symmetric_noise
from lip_agnostic.out_of_fold import out_of_fold_scores
from lip_agnostic.temperature import fit_temperature


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1500, 10))
    y = np.argmax(X[:, :4] + 0.3 * rng.normal(size=(1500, 4)), 1)
    n = symmetric_noise(y, 0.3, 4, seed=1)
    return X, y, n.labels


def test_flags_find_the_flips_and_rows_are_ranked_positions(backend, noisy):
    X, y, yn = noisy
    xb = backend.asarray
    batches = [(xb(X[i:i + 500]), xb(yn[i:i + 500])) for i in range(0, 1500, 500)]
    found = find_label_issues(batches, 4)
    rows = found.rows()
    assert len(rows) == found.n_flagged > 0
    flips = yn != y
    pos = np.array([r["position"] for r in rows])
    precision, recall = flips[pos].mean(), flips[pos].sum() / flips.sum()
    assert precision > 0.8 and recall > 0.6, (precision, recall)
    assert all(r["given"] == yn[r["position"]] and r["suggested"] != r["given"] for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores)  # most suspect first
    assert found.temperature.nll_after <= found.temperature.nll_before
    assert str(found).startswith(f"{found.n_flagged} of 1500 labels flagged")
    # no hold-out: the suspect entries are the positions, host ints in the order of the rows
    assert found.entries() == pos.tolist() and all(type(j) is int for j in found.entries())


def test_the_flags_agree_with_cleanlab_on_the_same_probabilities(noisy):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    X, _, yn = noisy
    found = find_label_issues([(X, yn)], 4)
    oof = out_of_fold_scores([(X, yn)], 4)
    probs = fit_temperature(oof.logits, oof.labels).probabilities(oof.logits)
    theirs = cleanlab_filter.find_label_issues(yn, probs)
    agree = np.mean(np.asarray(found.suspects.flags) == theirs)
    assert agree >= 0.995, agree  # exact but for cleanlab's unstable sort on tied values (see test_confident_learning)


def test_the_neighbour_vote_is_the_other_finder(noisy):
    X, y, yn = noisy
    found = find_label_issues(iter([(X, yn)]), 4, method="neighbours", neighbours=15)
    pos = np.array([r["position"] for r in found.rows()])
    assert found.method == "neighbours" and found.temperature is None
    flips = yn != y
    assert flips[pos].mean() > 2 * flips.mean()  # far above chance (the vote is weaker than out-of-fold scores here)


def test_bad_inputs_get_one_typed_line(noisy):
    X, _, yn = noisy
    with pytest.raises(OptionError, match=r"^method must be 'confident' .* or 'neighbours' .*; got 'cleanlab'$"):
        find_label_issues([(X, yn)], 4, method="cleanlab")
    with pytest.raises(DataTypeError, match=r"one-shot"):
        find_label_issues(((X, yn) for _ in range(1)), 4)
    with pytest.raises(DataError, match=r"^no rows to check: the batches were empty$"):
        find_label_issues([], 4, method="neighbours")
