"""The label-aware repair (``label_repair``; beyond the paper): its heads equal explicit ridge refits
on the filtered / relabelled rows, streaming = one batch, merge = one pass, the flags are the
standalone finder's, the guard picks among all candidates, the temperature written into a ridge
head, and one typed line per bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic import FullTailAccumulator, LIPOptions, refine_batches
from lip_agnostic.errors import DataError, DataTypeError, OptionError
from lip_agnostic.label_issues import find_label_issues
from lip_agnostic.repairs.label_aware import LabelAwareRepair


@pytest.fixture
def noisy(rng):
    """A linear 4-class problem, 35 % of the fit labels flipped to the next class (a ridge fit on
    them learns the flips); clean held-out labels."""
    n, q, l = 1200, 10, 4
    M = rng.normal(size=(q, l))
    X = rng.normal(size=(n, q)) + 0.3
    y = np.argmax(X @ M, 1)
    flip = rng.random(n) < 0.35
    noisy = np.where(flip, (y + 1) % l, y)
    Xv = rng.normal(size=(500, q)) + 0.3
    yv = np.argmax(Xv @ M, 1)
    W = 0.2 * rng.normal(size=(q, l))
    b = 0.1 * rng.normal(size=l)
    return W, b, X, noisy, y, Xv, yv


def _batches(X, y, size):
    return [(X[i:i + size], y[i:i + size]) for i in range(0, X.shape[0], size)]


def test_the_variant_heads_are_ridge_refits_on_the_filtered_and_relabelled_rows(noisy):
    W, b, X, y, _, _, _ = noisy
    rep = LabelAwareRepair(W, bias=b).update(X, y)
    issues = rep.second_pass([(X, y)])
    flags = np.asarray(issues.suspects.flags)
    sugg = np.asarray(issues.suspects.suggested)
    assert 0 < flags.sum() < X.shape[0]
    lam = 3.0
    for variant, (Xr, yr) in {"filter": (X[~flags], y[~flags]),
                              "relabel": (X, np.where(flags, sugg, y))}.items():
        ref_W, ref_b = FullTailAccumulator(W, bias=b).update(Xr, yr).result(0, lam)
        got_W, got_b = rep._head(rep._solver(variant), lam)
        np.testing.assert_allclose(got_W, ref_W, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(got_b, ref_b, rtol=1e-8, atol=1e-10)


def test_the_flags_are_the_standalone_finders(noisy):
    W, b, X, y, _, _, _ = noisy
    rep = LabelAwareRepair(W, bias=b).update(X, y)
    mine = rep.second_pass(_batches(X, y, 100))
    theirs = find_label_issues(_batches(X, y, 100), W.shape[1])
    np.testing.assert_array_equal(np.asarray(mine.suspects.flags), np.asarray(theirs.suspects.flags))
    key = lambda rows: [(r["position"], r["given"], r["suggested"]) for r in rows]  # noqa: E731
    assert key(mine.rows()) == key(theirs.rows())
    np.testing.assert_allclose([r["score"] for r in mine.rows()], [r["score"] for r in theirs.rows()], rtol=1e-9)


def test_streaming_equals_one_batch_and_the_guard_picks_a_label_variant(backend, noisy):
    W, b, X, y, y_clean, Xv, yv = noisy
    T = backend.asarray
    one = refine_batches(T(W), [(T(X), T(y))], validation=(T(Xv), T(yv)), bias=T(b), label_repair="auto",
                         progress=False)
    many = refine_batches(T(W), [(T(Xa), T(ya)) for Xa, ya in _batches(X, y, 128)], validation=(T(Xv), T(yv)),
                          bias=T(b), label_repair="auto", progress=False)
    assert one.selection.labels == many.selection.labels != "given"
    np.testing.assert_allclose(backend.to_numpy(one.weight), backend.to_numpy(many.weight), rtol=1e-5, atol=1e-6)
    assert type(one.weight) is type(T(W))
    flags = backend.to_numpy(one.label_issues.suspects.flags)
    flipped = y != y_clean
    # far above chance (precision 0.35, the flip rate)
    assert (flags & flipped).sum() / flags.sum() > 0.6 and (flags & flipped).sum() / flipped.sum() > 0.6
    assert one.tail == "labels" and one.beyond_paper and "flagged as mislabelled" in one.outcome
    assert one.to_dict()["selection"]["labels"] == one.selection.labels


def test_labels_as_given_keep_the_full_tails_choice(noisy):
    """Without label noise the label variants have nothing to win: the full tail's own choice stands."""
    W, b, X, _, y_clean, Xv, yv = noisy
    full = refine_batches(W, [(X, y_clean)], validation=(Xv, yv), bias=b, progress=False, temperature=False)
    labels = refine_batches(W, [(X, y_clean)], validation=(Xv, yv), bias=b, label_repair="auto", progress=False,
                            temperature=False)
    if labels.selection.labels == "given":
        np.testing.assert_allclose(labels.weight, full.weight)
    assert labels.selection.best_score >= full.selection.best_score


def test_merge_of_two_workers_is_one_pass(noisy):
    W, b, X, y, _, _, _ = noisy
    n1 = 600  # a multiple of the 5 folds: the second worker's rows start a fresh fold cycle
    one = LabelAwareRepair(W, bias=b).update(X, y)
    a = LabelAwareRepair(W, bias=b).update(X[:n1], y[:n1])
    a.merge(LabelAwareRepair(W, bias=b).update(X[n1:], y[n1:]))
    np.testing.assert_allclose(a.partial_sums, one.partial_sums, rtol=1e-12)
    fa, fo = a.second_pass([(X, y)]), one.second_pass([(X, y)])
    np.testing.assert_array_equal(np.asarray(fa.suspects.flags), np.asarray(fo.suspects.flags))


def test_the_temperature_is_written_into_a_ridge_head(noisy):
    W, b, X, y, _, Xv, yv = noisy
    on = refine_batches(W, [(X, y)], validation=(Xv, yv), bias=b, label_repair="auto", progress=False)
    off = refine_batches(W, [(X, y)], validation=(Xv, yv), bias=b, label_repair="auto", progress=False,
                         temperature=False)
    assert off.calibration is None and on.calibration.applied and on.k == 0
    T = on.calibration.fit.scale
    np.testing.assert_allclose(on.weight, T * off.weight, rtol=1e-10)
    np.testing.assert_allclose(on.bias, T * off.bias, rtol=1e-10)
    assert on.calibration.fit.nll_after <= on.calibration.fit.nll_before
    np.testing.assert_array_equal(np.argmax(Xv @ on.weight + on.bias, 1), np.argmax(Xv @ off.weight + off.bias, 1))
    assert "temperature" in str(on) and on.to_dict()["calibration"]["applied"] is True


def test_the_temperature_is_not_written_where_it_would_change_kept_components_or_a_kept_bias(noisy):
    W, b, X, y, _, Xv, yv = noisy
    kept = refine_batches(W, [(X, y)], validation=(Xv, yv), bias=b, rank=2, tail="full", progress=False)
    assert kept.k == 2 and kept.calibration is not None and not kept.calibration.applied
    assert "components are kept exactly" in kept.calibration.note and kept.summary.kept_unchanged
    ignore = refine_batches(W, [(X, y)], validation=(Xv, yv), bias=b, rank=0, tail="full", bias_mode="ignore",
                            progress=False)
    assert ignore.calibration is not None and not ignore.calibration.applied
    assert "bias is not refit" in ignore.calibration.note
    paper = refine_batches(W, [(X, y)], validation=(Xv, yv), bias=b, tail="diagonal", progress=False)
    assert paper.calibration is None  # the paper's repair stays the paper's


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(label_repair="auto", rank=2), OptionError,
     r"^label_repair='auto' needs rank='auto' and the full tail \(tail='auto' or 'full'\)"),
    (dict(label_repair="filter", tail="diagonal"), OptionError, r"^label_repair='filter' needs rank='auto'"),
    (dict(label_repair="yes"), OptionError, r"^label_repair must be 'none', 'filter' \(beyond the paper\)"),
    (dict(temperature=False, rank=2), OptionError, r"^temperature=False has no effect with rank=2, tail='auto'"),
    (dict(temperature="yes"), OptionError, r"^temperature must be True or False; got 'yes'$"),
])
def test_bad_options_get_one_typed_line(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        LIPOptions(**kwargs)


def test_bad_sources_get_one_typed_line(noisy, monkeypatch):
    import lip_agnostic.driver as driver

    W, b, X, y, _, Xv, yv = noisy
    with pytest.raises(DataTypeError, match=r"one-shot generator"):
        refine_batches(W, ((X, y) for _ in range(1)), validation=(Xv, yv), label_repair="auto", progress=False)

    class Shuffled:
        def __init__(self):
            self.calls = 0

        def __iter__(self):
            self.calls += 1
            order = np.random.default_rng(self.calls).permutation(X.shape[0])
            yield X[order], y[order]

    with monkeypatch.context() as m:
        m.setattr(driver, "FIT_ROW_CACHE_BYTES", 0)  # rows past the in-memory copy: the source is read again
        with pytest.raises(DataError, match=r"same rows in the same order"):
            refine_batches(W, Shuffled(), validation=(Xv, yv), label_repair="auto", progress=False)
    with pytest.raises(DataError, match=r"^label_repair needs integer labels \(n,\)"):
        refine_batches(W, [(X, np.eye(4)[y])], validation=(Xv, yv), label_repair="auto", progress=False)
    with pytest.raises(OptionError, match=r"^label_repair='auto' needs every fit row in one process"):
        refine_batches(W, [(X, y)], validation=(Xv, yv), label_repair="auto", all_reduce=lambda a: a, progress=False)
    rep = LabelAwareRepair(W).update(X, y)
    with pytest.raises(DataError, match=r"^the label variants need the second pass"):
        rep._variant_stats("filter")
    with pytest.raises(DataTypeError, match=r"^can only merge a LabelAwareRepair; got FullTailAccumulator$"):
        rep.merge(FullTailAccumulator(W))


def test_positions_index_the_stream_as_passed_when_rows_are_held_out(noisy):
    """Without validation data every 5th row is held out of the fit; flagged positions still index the stream."""
    W, b, X, y, y_clean, _, _ = noisy
    res = refine_batches(W, _batches(X, y, 97), bias=b, label_repair="auto", progress=False)
    rows = res.label_issues.rows()
    pos = np.array([r["position"] for r in rows])
    assert res.label_issues.held_out_period == 5 and rows and not np.any(pos % 5 == 4)
    np.testing.assert_array_equal([r["given"] for r in rows], y[pos])
    assert np.mean(y[pos] != y_clean[pos]) > 0.6  # the flip rate is 0.35
    only = refine_batches(W, _batches(X, y, 97), bias=b, label_issues=True, progress=False)
    assert only.label_issues.held_out_period == 5
    np.testing.assert_array_equal([r["given"] for r in only.label_issues.rows()],
                                  y[only.label_issues.positions()])


def test_the_neighbours_head_is_a_ridge_refit_on_the_vote_relabelled_rows(noisy):
    from lip_agnostic.neighbours import ReferenceVote, vote_flags
    from lip_agnostic.repairs import label_aware

    W, b, X, y, _, _, _ = noisy
    rep = LabelAwareRepair(W, bias=b, variants="neighbours")
    for Xa, ya in _batches(X, y, 100):
        rep.update(Xa, ya)
    rep.second_pass(_batches(X, y, 100))
    # the references: every stride-th fit row, the stride doubling until at most DEFAULT_REFERENCE_ROWS are held
    stride = 1
    while len(range(0, X.shape[0], stride)) > label_aware.DEFAULT_REFERENCE_ROWS:
        stride *= 2
    refs = np.arange(0, X.shape[0], stride)
    vote = ReferenceVote(X[refs], y[refs], refs, 4, k=10)
    flags, _, sugg = vote_flags(vote.votes(X, np.arange(X.shape[0])), y)
    assert rep.n_neighbour_relabels == int(flags.sum()) > 0
    ref_W, ref_b = FullTailAccumulator(W, bias=b).update(X, np.where(flags, sugg, y)).result(0, 2.0)
    got_W, got_b = rep._head(rep._solver("neighbours"), 2.0)
    np.testing.assert_allclose(got_W, ref_W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got_b, ref_b, rtol=1e-8, atol=1e-10)


def test_the_reference_rows_stay_bounded_and_spread_over_the_stream():
    from lip_agnostic.repairs.label_aware import _Reservoir

    res = _Reservoir(100)
    rng = np.random.default_rng(0)
    for _ in range(37):
        X = rng.normal(size=(29, 3))
        res.update(X, rng.integers(0, 3, 29))
    pos = np.concatenate([np.asarray(p) for p in res._pos])
    assert 50 <= pos.size <= 100 and res.position == 37 * 29
    assert np.all(pos % res.stride == 0) and pos.max() >= 37 * 29 - res.stride
