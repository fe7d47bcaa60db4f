"""Label-noise generators: actual rates, transition matrices, determinism, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lip_agnostic.noise import (
    ASYMMETRIC_MAP_CLASSES,
    ASYMMETRIC_MAPS,
    NoisyLabels,
    PartialLabels,
    asymmetric_noise,
    instance_dependent_noise,
    pairflip_noise,
    partial_labels,
    symmetric_noise,
    transition_matrix,
)

N = 20_000
L = 10


def _labels(n: int = N, l: int = L, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, l, size=n)


def _tol(p: float, n: int, z: float = 5.0) -> float:
    """``z`` binomial standard deviations of a proportion (plus a hair for p = 0)."""
    return z * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


def _check_common(r: NoisyLabels, y: np.ndarray, l: int) -> None:
    assert r.labels.dtype == np.int64 and r.clean.dtype == np.int64
    assert r.labels.shape == y.shape
    np.testing.assert_array_equal(r.clean, y)
    assert r.rate_actual == pytest.approx(np.mean(r.labels != y))
    assert r.transition.shape == (l, l)
    np.testing.assert_allclose(r.transition.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(r.transition >= 0)
    # the diagonal of T is the per-class keep rate
    for c in range(l):
        m = y == c
        if m.any():
            assert r.transition[c, c] == pytest.approx(np.mean(r.labels[m] == c))


# ---------------------------------------------------------------- symmetric
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6])
def test_symmetric_exclusive_rate_matches_nominal(rate):
    y = _labels()
    r = symmetric_noise(y, rate, L, seed=1)
    _check_common(r, y, L)
    assert r.kind == "symmetric" and r.rate_nominal == rate
    assert abs(r.rate_actual - rate) < _tol(rate, N)
    # wrong labels are spread uniformly over the other classes
    off = r.transition[~np.eye(L, dtype=bool)].reshape(L, L - 1)
    np.testing.assert_allclose(off, rate / (L - 1), atol=_tol(rate / (L - 1), N // L))


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_include_true_flips_less(rate):
    y = _labels()
    incl = symmetric_noise(y, rate, L, include_true=True, seed=1)
    excl = symmetric_noise(y, rate, L, include_true=False, seed=1)
    _check_common(incl, y, L)
    expected = rate * (L - 1) / L
    assert abs(incl.rate_actual - expected) < _tol(expected, N)
    assert incl.rate_actual < excl.rate_actual


def test_summary_reports_nominal_and_actual():
    y = _labels(1257)
    r = symmetric_noise(y, 0.4, L, include_true=True, seed=0)
    s = r.summary()
    assert s.startswith("symmetric 40% nominal, ")
    assert f"{100 * r.rate_actual:.1f}% actual" in s
    assert "(n=1257, l=10)" in s
    assert pairflip_noise(y, 0.125, L).summary().startswith("pairflip 12.5% nominal, ")


def test_two_classes_exclusive_always_moves_to_the_other():
    y = _labels(5000, 2)
    r = symmetric_noise(y, 0.3, 2, seed=3)
    moved = r.labels != y
    np.testing.assert_array_equal(r.labels[moved], 1 - y[moved])


# ---------------------------------------------------------------- asymmetric
@pytest.mark.parametrize("name", sorted(ASYMMETRIC_MAPS))
def test_asymmetric_named_maps_only_move_mapped_classes(name):
    l = ASYMMETRIC_MAP_CLASSES[name]
    y = _labels(N, l)
    r = asymmetric_noise(y, 0.4, name, seed=2)
    _check_common(r, y, l)
    mapping = ASYMMETRIC_MAPS[name]
    for c in range(l):
        row = r.transition[c]
        if c in mapping:
            n_c = int(np.sum(y == c))
            assert abs(row[mapping[c]] - 0.4) < _tol(0.4, n_c)
            assert row[c] + row[mapping[c]] == pytest.approx(1.0)
        else:
            assert row[c] == 1.0
    expected = 0.4 * np.isin(y, list(mapping)).mean()
    assert abs(r.rate_actual - expected) < _tol(expected, N)


def test_asymmetric_dict_map_and_inferred_classes():
    y = np.repeat(np.arange(4), 2000)
    r = asymmetric_noise(y, 0.3, {0: 3}, seed=0)
    assert r.transition.shape == (4, 4)
    assert set(np.unique(r.labels[y != 0])) == {1, 2, 3}
    np.testing.assert_array_equal(r.labels[y != 0], y[y != 0])
    assert set(np.unique(r.labels[y == 0])) == {0, 3}
    # a map that names a class beyond the labels widens the matrix
    assert asymmetric_noise(np.array([0, 1]), 0.5, {1: 5}).transition.shape == (6, 6)
    assert asymmetric_noise(y, 0.3, {0: 3}, n_classes=7).transition.shape == (7, 7)


def test_cifar10_map_is_patrini():
    assert ASYMMETRIC_MAPS["cifar10"] == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


# ---------------------------------------------------------------- pairflip
@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_pairflip_targets_next_class(rate):
    y = _labels()
    r = pairflip_noise(y, rate, L, seed=4)
    _check_common(r, y, L)
    moved = r.labels != y
    np.testing.assert_array_equal(r.labels[moved], (y[moved] + 1) % L)
    assert abs(r.rate_actual - rate) < _tol(rate, N)
    for c in range(L):
        assert r.transition[c, (c + 1) % L] == pytest.approx(1 - r.transition[c, c])


# ---------------------------------------------------------------- instance
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_instance_mean_rate_near_nominal(rate):
    rng = np.random.default_rng(0)
    x = rng.random((8000, 32))
    y = rng.integers(0, L, 8000)
    r = instance_dependent_noise(y, rate, x, L, seed=5)
    _check_common(r, y, L)
    assert r.kind == "instance"
    # truncation to [0, 1] biases the mean upwards by < 0.01 for these rates
    assert abs(r.rate_actual - rate) < _tol(rate, 8000) + 0.01


def test_instance_zero_rate_is_clean():
    rng = np.random.default_rng(0)
    x = rng.random((500, 8))
    y = rng.integers(0, 5, 500)
    r = instance_dependent_noise(y, 0.0, x, 5)
    np.testing.assert_array_equal(r.labels, y)
    assert r.rate_actual == 0.0


def test_instance_noise_depends_on_features():
    """Copies of one image share a wrong-class distribution; their errors concentrate on its top class."""
    rng = np.random.default_rng(1)
    base = rng.random((20, 64))
    x = np.repeat(base, 400, axis=0)          # 20 distinct images, 400 copies each
    y = np.repeat(rng.integers(0, L, 20), 400)

    def top_share(labels):
        shares = []
        for i in range(20):
            block = labels[i * 400:(i + 1) * 400]
            wrong = block[block != y[i * 400]]
            shares.append(np.bincount(wrong, minlength=L).max() / max(len(wrong), 1))
        return float(np.mean(shares))

    idn = instance_dependent_noise(y, 0.4, x, L, seed=0)
    sym = symmetric_noise(y, 0.4, L, seed=0)
    assert top_share(idn.labels) > 0.5
    assert top_share(sym.labels) < 0.25


# ---------------------------------------------------------------- partial
@pytest.mark.parametrize("q", [0.0, 0.1, 0.3, 0.7])
def test_partial_candidates_contain_truth_and_size(q):
    y = _labels()
    p = partial_labels(y, q, L, seed=6)
    assert isinstance(p, PartialLabels)
    assert p.candidates.dtype == np.bool_ and p.candidates.shape == (N, L)
    assert p.candidates[np.arange(N), y].all()
    np.testing.assert_array_equal(p.clean, y)
    sizes = p.candidates.sum(axis=1)
    assert p.avg_candidates == pytest.approx(sizes.mean())
    expected = 1 + q * (L - 1)
    sd = math.sqrt((L - 1) * q * (1 - q) / N)
    assert abs(p.avg_candidates - expected) < 5 * sd + 1e-9
    assert p.rate_actual == pytest.approx((p.avg_candidates - 1) / (L - 1))
    assert abs(p.rate_actual - q) < _tol(q, N * (L - 1))
    t = p.targets()
    assert t.dtype == np.float64 and t.sum() == pytest.approx(sizes.sum())
    assert f"q={q:.2f}" in p.summary() and "n=20000, l=10" in p.summary()


def test_partial_q_one_gives_every_class():
    p = partial_labels(np.array([0, 1, 2]), 1.0, 3)
    assert p.candidates.all() and p.rate_actual == 1.0


# ---------------------------------------------------------------- determinism
GENERATORS = {
    "symmetric": lambda y, x, s: symmetric_noise(y, 0.3, L, seed=s).labels,
    "symmetric_incl": lambda y, x, s: symmetric_noise(y, 0.3, L, include_true=True, seed=s).labels,
    "asymmetric": lambda y, x, s: asymmetric_noise(y, 0.3, "digits", seed=s).labels,
    "pairflip": lambda y, x, s: pairflip_noise(y, 0.3, L, seed=s).labels,
    "instance": lambda y, x, s: instance_dependent_noise(y, 0.3, x, L, seed=s).labels,
    "partial": lambda y, x, s: partial_labels(y, 0.3, L, seed=s).candidates,
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_per_seed(name):
    rng = np.random.default_rng(0)
    y = rng.integers(0, L, 3000)
    x = rng.random((3000, 12))
    f = GENERATORS[name]
    np.testing.assert_array_equal(f(y, x, 11), f(y, x, 11))
    np.testing.assert_array_equal(f(y, x, 11), f(y, x, np.random.default_rng(11)))
    assert not np.array_equal(f(y, x, 11), f(y, x, 12))


def test_input_is_not_modified_and_clean_is_a_copy():
    y = _labels(1000)
    keep = y.copy()
    r = symmetric_noise(y, 0.5, L, seed=0)
    np.testing.assert_array_equal(y, keep)
    r.clean[0] = (r.clean[0] + 1) % L
    np.testing.assert_array_equal(y, keep)


def test_accepts_lists_and_other_int_dtypes():
    r = pairflip_noise([0, 1, 2, 2], 0.0, 3)
    np.testing.assert_array_equal(r.labels, [0, 1, 2, 2])
    r = symmetric_noise(np.array([0, 1, 2], dtype=np.uint8), 0.0, 3)
    assert r.labels.dtype == np.int64


def test_transition_matrix_absent_class_is_identity():
    T = transition_matrix(np.array([0, 0, 2]), np.array([2, 0, 2]), 4)
    np.testing.assert_allclose(T, [[0.5, 0, 0.5, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


# ---------------------------------------------------------------- validation
Y = np.array([0, 1, 2, 1])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: symmetric_noise(Y, 1.0, 3), ValueError, r"rate must lie in \[0, 1\); got 1.0"),
        (lambda: symmetric_noise(Y, -0.1, 3), ValueError, r"rate must lie in \[0, 1\); got -0.1"),
        (lambda: symmetric_noise(Y, float("nan"), 3), ValueError, r"rate must lie in \[0, 1\); got nan"),
        (lambda: symmetric_noise(Y, "0.2", 3), TypeError, r"rate must be a real number; got str"),
        (lambda: symmetric_noise(Y, True, 3), TypeError, r"rate must be a real number; got bool"),
        (lambda: symmetric_noise(Y, 0.2, 2), ValueError, r"labels must lie in \[0, 1\] for n_classes=2; got values in \[0, 2\]"),
        (lambda: symmetric_noise(np.array([-1, 0]), 0.2, 3), ValueError, r"labels must lie in \[0, 2\] for n_classes=3; got values in \[-1, 0\]"),
        (lambda: symmetric_noise(Y.reshape(2, 2), 0.2, 3), ValueError, r"y must be 1-D \(n,\) integer labels; got shape \(2, 2\)"),
        (lambda: symmetric_noise(Y.astype(float), 0.2, 3), TypeError, r"y must hold integer labels; got dtype float64"),
        (lambda: symmetric_noise(Y > 0, 0.2, 3), TypeError, r"y must hold integer labels; got dtype bool"),
        (lambda: symmetric_noise(np.array([], dtype=int), 0.2, 3), ValueError, r"at least one label"),
        (lambda: symmetric_noise(Y, 0.2, 1), ValueError, r"n_classes must be at least 2; got 1"),
        (lambda: symmetric_noise(Y, 0.2, 3.0), TypeError, r"n_classes must be an int; got float"),
        (lambda: symmetric_noise(Y, 0.2, 3, seed=1.5), TypeError, r"seed must be an int or a numpy.random.Generator; got float"),
        (lambda: symmetric_noise(Y, 0.2, 3, seed=-1), ValueError, r"seed must be non-negative; got -1"),
        (lambda: pairflip_noise(Y, 1.2, 3), ValueError, r"rate must lie in \[0, 1\); got 1.2"),
        (lambda: pairflip_noise(Y, 0.2, 2), ValueError, r"labels must lie in \[0, 1\]"),
        (lambda: asymmetric_noise(Y, 0.2, "cifar100"), ValueError, r"unknown class map 'cifar100'; known: \['cifar10', 'digits', 'fashion-mnist'\]"),
        (lambda: asymmetric_noise(Y, 0.2, [(0, 1)]), TypeError, r"class_map must be a dict \{source: target\} or a name in .*; got list"),
        (lambda: asymmetric_noise(Y, 0.2, {}), ValueError, r"class_map must map at least one class; got an empty mapping"),
        (lambda: asymmetric_noise(Y, 0.2, {1: 1}), ValueError, r"class_map must move each source to another class; got 1: 1"),
        (lambda: asymmetric_noise(Y, 0.2, {1: -2}), ValueError, r"class_map classes must be non-negative; got 1: -2"),
        (lambda: asymmetric_noise(Y, 0.2, {"a": 1}), TypeError, r"class_map keys and values must be ints; got 'a': 1"),
        (lambda: asymmetric_noise(Y, 0.2, {0: 1.0}), TypeError, r"class_map keys and values must be ints; got 0: 1.0"),
        (lambda: asymmetric_noise(Y, 0.2, {0: 5}, n_classes=3), ValueError, r"class_map refers to class 5, outside \[0, 2\] for n_classes=3"),
        (lambda: asymmetric_noise(Y, 0.2, "cifar10", n_classes=12), ValueError, r"class map 'cifar10' is for 10 classes; got n_classes=12"),
        (lambda: asymmetric_noise(np.array([0, 12]), 0.2, "digits"), ValueError, r"labels must lie in \[0, 9\] for n_classes=10; got values in \[0, 12\]"),
        (lambda: asymmetric_noise(np.array([-1, 2]), 0.2, {0: 1}), ValueError, r"labels must be non-negative; got values in \[-1, 2\]"),
        (lambda: asymmetric_noise(Y, 1.0, "digits"), ValueError, r"rate must lie in \[0, 1\); got 1.0"),
        (lambda: instance_dependent_noise(Y, 0.2, np.zeros((3, 2)), 3), ValueError, r"features must have one row per label: got 3 rows for 4 labels"),
        (lambda: instance_dependent_noise(Y, 0.2, np.zeros(4), 3), ValueError, r"features must be 2-D \(n, d\); got shape \(4,\)"),
        (lambda: instance_dependent_noise(Y, 0.2, np.full((4, 2), np.nan), 3), ValueError, r"features must be finite"),
        (lambda: instance_dependent_noise(Y, 0.2, np.zeros((4, 2), dtype=bool), 3), TypeError, r"features must be real numbers; got dtype bool"),
        (lambda: instance_dependent_noise(Y, 1.0, np.zeros((4, 2)), 3), ValueError, r"rate must lie in \[0, 1\); got 1.0"),
        (lambda: instance_dependent_noise(Y, 0.2, np.zeros((4, 2)), 2), ValueError, r"labels must lie in \[0, 1\]"),
        (lambda: partial_labels(Y, 1.5, 3), ValueError, r"q must lie in \[0, 1\]; got 1.5"),
        (lambda: partial_labels(Y, -0.5, 3), ValueError, r"q must lie in \[0, 1\]; got -0.5"),
        (lambda: partial_labels(Y, 0.2, 2), ValueError, r"labels must lie in \[0, 1\]"),
        (lambda: partial_labels(Y.astype(np.float32), 0.2, 3), TypeError, r"y must hold integer labels; got dtype float32"),
        (lambda: transition_matrix(np.array([0, 1]), np.array([0, 1, 1]), 2), ValueError, r"clean and noisy must have the same shape; got \(2,\) and \(3,\)"),
    ],
)
def test_bad_inputs_raise_with_message(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_docstring_examples_run():
    import doctest

    import lip_agnostic.noise as mod

    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0
