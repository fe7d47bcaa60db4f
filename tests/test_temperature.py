"""The temperature fit (beyond the paper): it minimises the held-out NLL over T (checked against a dense
grid), never changes the argmax, NLL and ECE equal their NumPy definitions on every backend, the search
bounds, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lip_agnostic.errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from lip_agnostic.temperature import (expected_calibration_error, fit_temperature, negative_log_likelihood,
                                      softmax)


def np_nll(Z, y, T=1.0):
    A = T * Z
    A = A - A.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(A).sum(1)) - A[np.arange(y.size), y]))


def np_ece(P, y, bins=15):
    conf, pred = P.max(1), P.argmax(1)
    total = 0.0
    for b in range(bins):
        inside = (conf > b / bins) & (conf <= (b + 1) / bins)
        if inside.any():
            total += inside.mean() * abs(np.mean(pred[inside] == y[inside]) - conf[inside].mean())
    return total


@pytest.fixture
def held_out(rng):
    n, l = 600, 6
    y = rng.integers(0, l, n)
    Z = 0.05 * (2.0 * np.eye(l)[y] + rng.normal(size=(n, l)))  # flat logits, as a ridge head gives
    return Z, y


def test_fit_minimises_nll_over_a_dense_grid(backend, held_out):
    Z, y = held_out
    fit = fit_temperature(backend.asarray(Z), backend.asarray(y))
    grid = np.exp(np.linspace(np.log(1e-2), np.log(1e3), 4001))
    best = grid[np.argmin([np_nll(Z, y, T) for T in grid])]
    assert abs(math.log(fit.scale) - math.log(best)) < 2 * (grid[1] / grid[0] - 1)
    assert fit.nll_after <= min(np_nll(Z, y, T) for T in grid) + 1e-9
    assert fit.nll_before == pytest.approx(np_nll(Z, y))
    assert fit.nll_after == pytest.approx(np_nll(Z, y, fit.scale))
    assert fit.ece_before == pytest.approx(np_ece(softmax(Z), y))
    assert fit.ece_after == pytest.approx(np_ece(softmax(Z, scale=fit.scale), y))
    assert fit.scale > 1 and fit.ece_after < fit.ece_before and not fit.at_bound
    assert fit.n_samples == y.size and "held-out NLL" in str(fit)


def test_scaling_keeps_the_argmax(backend, held_out):
    Z, y = held_out
    fit = fit_temperature(Z, y)
    P = backend.to_numpy(fit.probabilities(backend.asarray(Z)))
    np.testing.assert_array_equal(P.argmax(1), Z.argmax(1))
    np.testing.assert_allclose(P.sum(1), 1.0)


def test_separable_labels_hit_the_upper_bound(rng):
    y = rng.integers(0, 3, 90)
    Z = np.eye(3)[y]  # every argmax right: the NLL falls as T grows
    fit = fit_temperature(Z, y, bounds=(0.5, 40.0))
    assert fit.scale == 40.0 and fit.at_bound and "[at the search bound]" in str(fit)


def test_nll_and_ece_on_every_backend(backend, held_out):
    Z, y = held_out
    assert negative_log_likelihood(backend.asarray(Z), backend.asarray(y), scale=3.0) == pytest.approx(np_nll(Z, y, 3.0))
    P = softmax(Z, scale=20.0)
    assert expected_calibration_error(backend.asarray(P), backend.asarray(y)) == pytest.approx(np_ece(P, y))
    assert expected_calibration_error(P, y, bins=4) == pytest.approx(np_ece(P, y, bins=4))


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"bounds": (2.0, 1.0)}, OptionError, r"bounds must satisfy 0 < lo < hi < inf; got \(2.0, 1.0\)"),
    ({"bounds": (0.0, 1.0)}, OptionError, r"bounds must satisfy 0 < lo < hi < inf; got \(0.0, 1.0\)"),
    ({"bounds": 3}, OptionTypeError, r"bounds must be two numbers \(lo, hi\); got 3"),
    ({"max_iter": 0}, OptionError, r"max_iter must be a positive int; got 0"),
])
def test_bad_options(held_out, kwargs, err, msg):
    Z, y = held_out
    with pytest.raises(err, match=msg):
        fit_temperature(Z, y, **kwargs)


def test_bad_bins(held_out):
    Z, y = held_out
    with pytest.raises(OptionError, match=r"bins must be a positive int; got 0"):
        expected_calibration_error(softmax(Z), y, bins=0)
    with pytest.raises(OptionTypeError, match=r"bins must be a positive int; got 1.5"):
        expected_calibration_error(softmax(Z), y, bins=1.5)


def test_bad_arrays(held_out):
    Z, y = held_out
    with pytest.raises(DataError, match=r"logits must be 2-D \(n samples, l classes\); got shape \(600,\)"):
        fit_temperature(Z[:, 0], y)
    with pytest.raises(DataTypeError, match=r"logits must have a real floating dtype; got int64"):
        fit_temperature(np.ones((4, 2), dtype=np.int64), np.zeros(4, int))
    with pytest.raises(DataError, match=r"logits must have at least one row and two classes; got shape \(0, 6\)"):
        fit_temperature(Z[:0], y[:0])
    with pytest.raises(DataTypeError, match=r"labels must be 1-D integer class labels; got shape \(600,\), dtype float64"):
        fit_temperature(Z, y.astype(float))
    with pytest.raises(DataError, match=r"logits has 600 rows but labels has 599"):
        fit_temperature(Z, y[:-1])
    with pytest.raises(DataError, match=r"labels must lie in \[0, 6\) for 6 classes; got min 1, max 6"):
        fit_temperature(Z, np.where(y == 0, 6, y))
    bad = Z.copy()
    bad[1, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"logits contains 1 NaN/Inf value"):
        fit_temperature(bad, y)
    with pytest.raises(DataError, match=r"probs must be 2-D"):
        expected_calibration_error(Z[:, 0], y)


def _in_processes(shards, work):
    """Run ``work(shard, reduce)`` on one thread per shard with a summing all-reduce between them."""
    import threading

    barrier = threading.Barrier(len(shards))
    slots = [None] * len(shards)
    out = [None] * len(shards)

    def reduce_for(i):
        def reduce(sums):
            slots[i] = np.asarray(sums, dtype=np.float64)
            barrier.wait()
            total = np.sum(slots, axis=0)
            barrier.wait()  # every thread has read the slots before the next call overwrites them
            return total
        return reduce

    def run(i):
        out[i] = work(shards[i], reduce_for(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_rows_split_across_processes_fit_the_temperature_of_their_union(held_out):
    Z, y = held_out
    whole = fit_temperature(Z, y)
    shards = [(Z[:250], y[:250]), (Z[250:], y[250:]), (Z[:0], y[:0])]  # one process holds no rows
    fits = _in_processes(shards, lambda s, reduce: fit_temperature(*s, reduce=reduce))
    for fit in fits:
        assert fit.scale == pytest.approx(whole.scale, rel=1e-9) and fit.n_samples == y.size
        assert (fit.nll_before, fit.nll_after) == pytest.approx((whole.nll_before, whole.nll_after), rel=1e-9)
        assert (fit.ece_before, fit.ece_after) == pytest.approx((whole.ece_before, whole.ece_after), abs=1e-12)


def test_calibrate_head_across_processes_equals_one_process(rng):
    from lip_agnostic.temperature import calibrate_head

    X = rng.normal(size=(500, 5))
    y = np.argmax(X[:, :3] + 0.5 * rng.normal(size=(500, 3)), 1)
    W, W_new, b = np.eye(5)[:, :3], 0.05 * np.eye(5)[:, :3], np.array([0.1, 0.0, -0.1])
    whole = calibrate_head([(X, y)], W_new, None, W, b)
    shards = [[(X[:200], y[:200]), (X[200:300], y[200:300])], [(X[300:], y[300:])], []]
    cals = _in_processes(shards, lambda s, reduce: calibrate_head(s, W_new, None, W, b, reduce=reduce))
    for cal in cals:
        assert cal.fit.scale == pytest.approx(whole.fit.scale, rel=1e-9)
        assert (cal.unchanged_nll, cal.unchanged_ece) == pytest.approx((whole.unchanged_nll, whole.unchanged_ece))
    with pytest.raises(DataError, match="no held-out rows to fit a temperature on"):
        calibrate_head([], W_new, None, W, b)
    with pytest.raises(DataError, match=r"no held-out rows to fit a temperature on \(in any process\)"):
        calibrate_head([], W_new, None, W, b, reduce=lambda sums: sums)
