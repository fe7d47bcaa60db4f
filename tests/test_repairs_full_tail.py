"""The full-tail ridge refit (tail="full", beyond the paper): optimality against the explicit
problem, streaming, merging, the all-reduce round trip, the kept head, the ridge head at k = 0,
the one-eigendecomposition ridge grid, the guarded held-out choice, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic import full_tail_refine, FullTailAccumulator, lip_refine, Selection
from lip_agnostic.errors import DataError, NonFiniteError, OptionError, OptionTypeError, RankOutOfRangeError


def onehot(y, l):
    out = np.zeros((y.size, l))
    out[np.arange(y.size), y] = 1.0
    return out


def complements(W, k):
    """U_perp, V_perp: orthonormal complements of the top-k singular vectors (NumPy, full SVD)."""
    U, s, Vh = np.linalg.svd(W, full_matrices=True)
    return U[:, k:], Vh.T[:, k:], U[:, :k], s[:k], Vh.T[:, :k]


def explicit_solution(W, X, T, k, lam, intercept):
    """argmin_C ||Xc (W_k + U_perp C V_perp^T) - Tc||^2 + lam ||C||^2 solved as one vectorised
    least-squares problem (Kronecker form, numpy.linalg.lstsq), plus the bias refit."""
    Up, Vp, Uk, sk, Vk = complements(W, k)
    Wk = (Uk * sk) @ Vk.T
    Xc = X - X.mean(0) if intercept else X
    Tc = T - T.mean(0) if intercept else T
    # vec(A C B^T) = (B kron A) vec(C) for column-major vec
    A = Xc @ Up
    M = np.kron(Vp, A)
    rhs = (Tc - Xc @ Wk).reshape(-1, order="F")
    if lam > 0:
        p = M.shape[1]
        M = np.vstack([M, np.sqrt(lam) * np.eye(p)])
        rhs = np.concatenate([rhs, np.zeros(p)])
    c, *_ = np.linalg.lstsq(M, rhs, rcond=None)
    C = c.reshape(Up.shape[1], Vp.shape[1], order="F")
    Ws = Wk + Up @ C @ Vp.T
    bs = T.mean(0) - X.mean(0) @ Ws if intercept else None
    return Ws, bs


@pytest.fixture
def problem(rng):
    q, l, n = 9, 5, 240
    W = rng.normal(size=(q, l))
    X = rng.normal(size=(n, q)) + 0.5  # not centred: the bias refit matters
    y = rng.integers(0, l, n)
    b = rng.normal(size=l)
    return W, X, y, b


# ------------------------------------------------------------- optimality
@pytest.mark.parametrize("k", [0, 1, 3, 4])
@pytest.mark.parametrize("lam", [0.0, 7.5])
def test_refit_equals_lstsq_on_the_explicit_problem_with_bias(backend, problem, k, lam):
    W, X, y, b = problem
    xb = backend.asarray
    Ws, bs = full_tail_refine(xb(W), xb(X), xb(y), k, bias=xb(b), ridge=lam)
    assert type(Ws) is type(xb(W)) and type(bs) is type(xb(b))
    ref_W, ref_b = explicit_solution(W, X, onehot(y, 5), k, lam, intercept=True)
    np.testing.assert_allclose(backend.to_numpy(Ws), ref_W, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(backend.to_numpy(bs), ref_b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("k", [0, 2])
def test_refit_equals_lstsq_without_a_bias_and_with_bias_mode_ignore(backend, problem, k):
    W, X, y, b = problem
    xb = backend.asarray
    ref_W, _ = explicit_solution(W, X, 3.0 * onehot(y, 5), k, 1.5, intercept=False)
    got, _ = full_tail_refine(xb(W), xb(X), xb(y), k, ridge=1.5, target_scale=3.0)
    np.testing.assert_allclose(backend.to_numpy(got), ref_W, rtol=1e-9, atol=1e-11)
    ignored, _ = full_tail_refine(xb(W), xb(X), xb(y), k, bias=xb(b), bias_mode="ignore", ridge=1.5, target_scale=3.0)
    np.testing.assert_allclose(backend.to_numpy(ignored), ref_W, rtol=1e-9, atol=1e-11)


def test_gradient_of_the_objective_is_zero_at_the_refit(problem):
    W, X, y, b = problem
    T = onehot(y, 5)
    k, lam = 2, 4.0
    Ws, bs = full_tail_refine(W, X, y, k, bias=b, ridge=lam)
    Up, Vp, *_ = complements(W, k)
    C = Up.T @ Ws @ Vp
    resid = X @ Ws + bs - T
    grad_C = Up.T @ X.T @ resid @ Vp + lam * C
    grad_b = resid.sum(0)
    assert np.abs(grad_C).max() < 1e-9 * np.abs(X.T @ T).max()
    assert np.abs(grad_b).max() < 1e-9 * len(y)
    # and moving C in any direction costs: the objective is strictly convex in C
    def obj(M, bb):
        return np.sum((X @ M + bb - T) ** 2) + lam * np.sum((Up.T @ M @ Vp) ** 2)
    best = obj(Ws, bs)
    rng = np.random.default_rng(1)
    for _ in range(5):
        D = Up @ rng.normal(size=C.shape) @ Vp.T * 1e-3
        assert obj(Ws + D, bs) > best


def test_soft_targets_one_hot_and_labels_agree_and_logit_scale_is_least_squares(backend, problem):
    W, X, y, b = problem
    xb = backend.asarray
    a, _ = full_tail_refine(xb(W), xb(X), xb(y), 2, ridge=0.5)
    o, _ = full_tail_refine(xb(W), xb(X), xb(onehot(y, 5)), 2, ridge=0.5)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(o), rtol=1e-12, atol=1e-12)
    acc = FullTailAccumulator(W, 2, bias=b, target_scale="logits").update(X, y)
    Z, Y = X @ W + b, onehot(y, 5)
    c = np.sum(Z * Y) / np.sum(Y * Y)
    assert acc.scale() == pytest.approx(c, rel=1e-12)
    ref_W, ref_b = explicit_solution(W, X, c * Y, 2, 0.5, intercept=True)
    Ws, bs = acc.result(ridge=0.5)
    np.testing.assert_allclose(Ws, ref_W, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(bs, ref_b, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------- the head
def test_full_rank_returns_the_layer_unchanged(backend, problem):
    W, X, y, b = problem
    xb = backend.asarray
    Ws, bs = full_tail_refine(xb(W), xb(X), xb(y), 5, bias=xb(b), ridge=3.0)
    np.testing.assert_array_equal(backend.to_numpy(Ws), W)
    assert bs is None  # the layer is unchanged: there is no refit bias to write
    tall, _ = full_tail_refine(xb(W.T), xb(X[:, :5]), xb(y % 5), 5, ridge=0.0)  # q < l: U_perp is empty at k = m
    np.testing.assert_array_equal(backend.to_numpy(tall), W.T)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kept_components_are_unchanged_to_rounding(backend, problem, dtype):
    W, X, y, b = problem
    xb = backend.asarray
    k = 3
    Ws, _ = full_tail_refine(xb(W, dtype), xb(X, dtype), xb(y), k, bias=xb(b, dtype), ridge=2.0)
    assert Ws.dtype == backend.dtype(dtype)
    Ws = backend.to_numpy(Ws).astype(np.float64)
    W32 = W.astype(dtype).astype(np.float64)
    U, s, Vh = np.linalg.svd(W32, full_matrices=False)
    eps = np.finfo(dtype).eps
    scale = np.abs(W32).max() + np.abs(Ws).max()
    # W* V_k = W V_k and U_k^T W* = U_k^T W, up to rounding of the dtype
    assert np.abs((Ws - W32) @ Vh[:k].T).max() < 50 * eps * scale
    assert np.abs(U[:, :k].T @ (Ws - W32)).max() < 50 * eps * scale
    np.testing.assert_allclose(U[:, :k].T @ Ws @ Vh[:k].T, np.diag(s[:k]), atol=50 * eps * scale)


def test_rank_zero_is_a_ridge_head(backend, problem):
    W, X, y, b = problem
    xb = backend.asarray
    lam = 12.0
    T = 2.0 * onehot(y, 5)
    Xc, Tc = X - X.mean(0), T - T.mean(0)
    W_r = np.linalg.solve(Xc.T @ Xc + lam * np.eye(9), Xc.T @ Tc)
    b_r = T.mean(0) - X.mean(0) @ W_r
    Ws, bs = full_tail_refine(xb(W), xb(X), xb(y), 0, bias=xb(b), ridge=lam, target_scale=2.0)
    np.testing.assert_allclose(backend.to_numpy(Ws), W_r, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bs), b_r, rtol=1e-9, atol=1e-12)
    no_bias, _ = full_tail_refine(xb(W), xb(X), xb(y), 0, ridge=lam, target_scale=2.0)
    np.testing.assert_allclose(backend.to_numpy(no_bias), np.linalg.solve(X.T @ X + lam * np.eye(9), X.T @ T),
                               rtol=1e-9, atol=1e-12)


def test_ridge_zero_on_rank_deficient_features_is_the_minimum_norm_solution(problem):
    W, X, y, _ = problem
    X = X.copy()
    X[:, 8] = X[:, 0] + X[:, 1]  # G is singular
    got, _ = full_tail_refine(W, X, y, 1, ridge=0.0)
    ref, _ = explicit_solution(W, X, onehot(y, 5), 1, 0.0, intercept=False)  # lstsq: minimum norm
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------- streaming & merging
def test_streaming_equals_batch_and_merge_equals_one_pass(backend, problem):
    W, X, y, b = problem
    xb = backend.asarray
    whole_W, whole_b = full_tail_refine(xb(W), xb(X), xb(y), 2, bias=xb(b), ridge=1.0)
    acc = FullTailAccumulator(xb(W), 2, bias=xb(b))
    for lo, hi in ((0, 1), (1, 77), (77, 239), (239, 240)):
        acc.update(xb(X[lo:hi]), xb(y[lo:hi]))
    got_W, got_b = acc.result(ridge=1.0)
    np.testing.assert_allclose(backend.to_numpy(got_W), backend.to_numpy(whole_W), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(got_b), backend.to_numpy(whole_b), rtol=1e-11, atol=1e-13)
    left = FullTailAccumulator(xb(W), 2, bias=xb(b)).update(xb(X[:100]), xb(y[:100]))
    right = FullTailAccumulator(xb(W), 2, bias=xb(b)).update(xb(X[100:]), xb(y[100:]))
    merged_W, _ = left.merge(right).result(ridge=1.0)
    np.testing.assert_allclose(backend.to_numpy(merged_W), backend.to_numpy(whole_W), rtol=1e-11, atol=1e-13)
    assert left.n_samples == 240
    small = full_tail_refine(xb(W), xb(X), xb(y), 2, bias=xb(b), ridge=1.0, batch_rows=7)
    np.testing.assert_allclose(backend.to_numpy(small[0]), backend.to_numpy(whole_W), rtol=1e-11, atol=1e-13)


def test_partial_sums_round_trip_like_workers(problem):
    W, X, y, b = problem
    workers = [FullTailAccumulator(W, bias=b).update(X[i::3], y[i::3]) for i in range(3)]
    total = sum(w.partial_sums for w in workers)
    assert total.shape == (9 * 9 + 9 * 5 + 9 + 5 + 2,) and total.dtype == np.float64  # O(q^2 + q l)
    ref = full_tail_refine(W, X, y, 1, bias=b, ridge=0.3)
    for w in workers:
        w.load_partial_sums(total)
        Ws, bs = w.result(1, ridge=0.3)
        np.testing.assert_allclose(Ws, ref[0], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(bs, ref[1], rtol=1e-11, atol=1e-13)
    fresh = FullTailAccumulator(W, bias=b).load_partial_sums(workers[0].partial_sums)
    np.testing.assert_array_equal(fresh.result(1, 0.3)[0], workers[0].result(1, 0.3)[0])


# -------------------------------------------------------- the ridge grid
def test_ridge_grid_from_one_eigendecomposition_equals_direct_solves(backend, problem):
    W, X, y, b = problem
    xb = backend.asarray
    acc = FullTailAccumulator(xb(W), bias=xb(b)).update(xb(X), xb(y))
    lams = acc.ridge_grid()
    assert len(lams) == 5 and all(lo < hi for lo, hi in zip(lams, lams[1:]))
    Xc = X - X.mean(0)
    assert lams[3] == pytest.approx(0.1 * np.trace(Xc.T @ Xc) / 9, rel=1e-10)
    scorer = acc.scorer(ranks=[0, 2, 4], ridges=lams)
    T = onehot(y, 5)
    j = 0
    for k in (0, 2, 4):
        Up, Vp, Uk, sk, Vk = complements(W, k)
        G = Up.T @ Xc.T @ Xc @ Up
        R = Up.T @ Xc.T @ (T - T.mean(0)) @ Vp
        for lam in lams:
            C = np.linalg.solve(G + lam * np.eye(G.shape[0]), R)  # a direct solve per (k, lam)
            ref = (Uk * sk) @ Vk.T + Up @ C @ Vp.T
            np.testing.assert_allclose(backend.to_numpy(scorer.weights[j]), ref, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(backend.to_numpy(acc.result(k, lam)[0]), ref, rtol=1e-9, atol=1e-11)
            j += 1
    assert j == len(scorer.candidates)


def test_held_out_scores_equal_brute_force_accuracies(backend, problem, rng):
    W, X, y, b = problem
    xb = backend.asarray
    Xv, yv = rng.normal(size=(150, 9)) + 0.5, rng.integers(0, 5, 150)
    acc = FullTailAccumulator(xb(W), bias=xb(b)).update(xb(X), xb(y))
    sel = acc.scores(xb(Xv), xb(yv), ranks=[0, 3], ridges=[0.0, 10.0], confidence=None)
    assert isinstance(sel, Selection) and sel.ks == (0, 3, 5) and sel.ridges == (0.0, 10.0)
    base = float(np.mean(np.argmax(Xv @ W + b, 1) == yv))
    assert sel.base_score == pytest.approx(base)
    for i, k in enumerate((0, 3)):
        for j, lam in enumerate((0.0, 10.0)):
            Ws, bs = full_tail_refine(W, X, y, k, bias=b, ridge=lam)
            assert sel.table[i][j] == pytest.approx(float(np.mean(np.argmax(Xv @ Ws + bs, 1) == yv)))
    assert sel.scores[:2] == tuple(max(r) for r in sel.table)
    # confidence=None: the best score wins if it beats the unchanged layer at all
    best = max((sel.table[i][j], k, lam) for i, k in enumerate((0, 3)) for j, lam in enumerate((0.0, 10.0)))
    if best[0] > base:
        assert (sel.k, sel.ridge) == (best[1], best[2]) and sel.best_score == best[0]
    else:
        assert sel.k == 5 and sel.ridge is None


@pytest.mark.parametrize("targets", ["labels", "matrix"])
@pytest.mark.parametrize("columns", [5, 10, 15, 10 ** 6])   # groups of 1, 2 (and a remainder), 3, all
def test_grouped_scoring_equals_one_candidate_at_a_time(backend, problem, rng, monkeypatch, targets, columns):
    """The scorer stacks candidates into groups of g (g l <= SCORE_GROUP_COLUMNS); every grouping
    gives the same sums, and they equal a per-candidate brute force (hits, wins, losses)."""
    import lip_agnostic.selection as ft

    W, X, y, b = problem
    xb = backend.asarray
    Xv, yv = rng.normal(size=(90, 9)) + 0.5, rng.integers(0, 5, 90)
    Yv = rng.random((90, 5)) * (rng.random((90, 5)) < 0.6)   # a target matrix, some rows all zero
    Yv_in = yv if targets == "labels" else Yv
    monkeypatch.setattr(ft, "SCORE_GROUP_COLUMNS", columns)
    acc = FullTailAccumulator(xb(W), bias=xb(b)).update(xb(X), xb(y))
    scorer = acc.scorer(ranks=[0, 2, 3], ridges=[0.0, 1.0, 10.0]).update(xb(Xv[:40]), xb(Yv_in[:40]))
    scorer.update(xb(Xv[40:]), xb(Yv_in[40:]))
    g = max(1, columns // 5)
    assert [n for *_, n in scorer._groups] == [min(g, 9 - i) for i in range(0, 9, g)]

    def hit(Z):
        pred = np.argmax(Z, 1)
        if targets == "labels":
            return (pred == yv).astype(float)
        rowmax = np.where(Yv.max(1) > 0, Yv.max(1), 1.0)
        return Yv[np.arange(len(pred)), pred] / rowmax

    base = hit(Xv @ W + b)
    sums = backend.to_numpy(scorer.partial_sums)
    J = len(scorer.candidates) + 1
    for j, (k, lam) in enumerate(scorer.candidates):
        Ws, bs = full_tail_refine(W, X, y, k, bias=b, ridge=lam)
        h = hit(Xv @ Ws + bs)
        assert sums[j] == pytest.approx(h.sum(), abs=1e-9)
        assert (sums[J + j], sums[2 * J + j]) == ((h > base).sum(), (h < base).sum())
    assert sums[J - 1] == pytest.approx(base.sum()) and sums[2 * J - 1] == sums[3 * J - 1] == 0 and sums[-1] == 90


def test_auto_choice_helps_when_the_tail_is_wrong_and_is_guarded_on_noise(rng):
    q, l = 10, 4
    W_true = rng.normal(size=(q, l)) * 3
    def data(n):
        X = rng.normal(size=(n, q))
        return X, np.argmax(X @ W_true, 1)
    X, y = data(2000)
    Xv, yv = data(800)
    W = W_true.copy()
    U, s, Vh = np.linalg.svd(W, full_matrices=False)
    W = W - 2.0 * s[3] * np.outer(U[:, 3], Vh[3]) + 1.5 * np.outer(np.ones(q), Vh[2])  # a damaged tail
    Ws, _ = full_tail_refine(W, X, y, "auto", ridge="auto", validation=(Xv, yv))
    acc_before = np.mean(np.argmax(Xv @ W, 1) == yv)
    acc_after = np.mean(np.argmax(Xv @ Ws, 1) == yv)
    assert acc_after > acc_before + 0.02
    # random held-out labels: nothing passes the sign test, the layer is returned unchanged
    noise = rng.integers(0, l, 800)
    same, _ = full_tail_refine(W, X, rng.integers(0, l, 2000), "auto", validation=(Xv, noise))
    np.testing.assert_array_equal(same, W)
    sel = FullTailAccumulator(W).update(X, rng.integers(0, l, 2000)).scores(Xv, noise)
    assert sel.k == sel.m and sel.ridge is None and not sel.changed
    d = sel.to_dict()
    assert d["beyond_paper"] is True and d["tail"] == "full" and len(d["table"]) == len(sel.ks) - 1


def test_scorer_sums_all_reduce(problem, rng):
    W, X, y, b = problem
    Xv, yv = rng.normal(size=(90, 9)), rng.integers(0, 5, 90)
    acc = FullTailAccumulator(W, bias=b).update(X, y)
    one = acc.scorer(ranks=[1, 2], ridges=[1.0]).update(Xv, yv)
    parts = [acc.scorer(ranks=[1, 2], ridges=[1.0]).update(Xv[i::2], yv[i::2]) for i in range(2)]
    total = parts[0].partial_sums + parts[1].partial_sums
    np.testing.assert_array_equal(parts[0].load_partial_sums(total).partial_sums, one.partial_sums)
    assert parts[0].best() == one.best()


def test_lip_refine_dispatches_the_full_tail_and_stays_the_paper_by_default(backend, problem, rng):
    W, X, y, b = problem
    xb = backend.asarray
    paper = lip_refine(xb(W), xb(X), xb(y), 2)
    assert not np.allclose(backend.to_numpy(paper), backend.to_numpy(full_tail_refine(xb(W), xb(X), xb(y), 2, ridge=0.0)[0]))
    from lip_agnostic import refine_batches

    res = refine_batches(xb(W), [(xb(X), xb(y))], rank=2, tail="full", ridge=0.5, bias=xb(b))
    ref = full_tail_refine(xb(W), xb(X), xb(y), 2, ridge=0.5, bias=xb(b))
    for g, r in zip((res.weight, res.bias), ref):
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(r))


# ------------------------------------------------------------ bad inputs
def test_bad_options_are_refused_with_messages(problem):
    W, X, y, b = problem
    with pytest.raises(OptionError, match=r"ridge must be a number >= 0 or 'auto'; got 'big'"):
        full_tail_refine(W, X, y, 2, ridge="big")
    with pytest.raises(ValueError, match=r"ridge must be a finite number >= 0; got -1.0"):
        full_tail_refine(W, X, y, 2, ridge=-1.0)
    with pytest.raises(OptionTypeError, match=r"ridge must be a number >= 0 or 'auto'; got True"):
        full_tail_refine(W, X, y, 2, ridge=True)
    with pytest.raises(OptionError, match=r"bias_mode must be 'fit' .* or 'ignore' .*; got 'none'"):
        full_tail_refine(W, X, y, 2, ridge=1.0, bias_mode="none")
    with pytest.raises(ValueError, match=r"target_scale must be a positive number or 'logits'; got 0"):
        full_tail_refine(W, X, y, 2, ridge=1.0, target_scale=0)
    with pytest.raises(ValueError, match=r"rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got 'best'"):
        full_tail_refine(W, X, y, "best", ridge=1.0)
    with pytest.raises(RankOutOfRangeError, match=r"got 6") as info:
        full_tail_refine(W, X, y, 6, ridge=1.0)
    assert (info.value.rank, info.value.m) == (6, 5)
    with pytest.raises(ValueError, match=r"validation must be a pair \(X_val, Y_val\) of arrays; got ndarray"):
        full_tail_refine(W, X, y, 2, validation=X)
    with pytest.raises(ValueError, match=r"batch_rows must be a positive integer; got 0"):
        full_tail_refine(W, X, y, 2, ridge=1.0, batch_rows=0)
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\) or be None; got 1.5"):
        full_tail_refine(W, X, y, "auto", ridge=1.0, validation=(X, y), confidence=1.5)


def test_bad_data_is_refused_with_messages(backend, problem):
    W, X, y, b = problem
    xb = backend.asarray
    with pytest.raises(DataError, match=r"same number of rows; got X \(240, 9\) and Y \(239,\)"):
        full_tail_refine(xb(W), xb(X), xb(y[:-1]), 2, ridge=1.0)
    with pytest.raises(ValueError, match="X and Y are empty"):
        full_tail_refine(xb(W), xb(X[:0]), xb(y[:0]), 2, ridge=1.0)
    bad = y.copy()
    bad[3] = 5
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\) .* got min 0, max 5"):
        full_tail_refine(xb(W), xb(X), xb(bad), 2, ridge=1.0)
    Xn = X.copy()
    Xn[4, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"X contains 1 NaN/Inf value\(s\) \(shape \(240, 9\)\)"):
        full_tail_refine(xb(W), xb(Xn), xb(y), 2, ridge=1.0)
    T = onehot(y, 5)
    T[0, 1] = np.inf
    with pytest.raises(ValueError, match=r"Y contains 1 NaN/Inf"):
        full_tail_refine(xb(W), xb(X), xb(T), 2, ridge=1.0)
    with pytest.raises(ValueError, match=r"X has 8 features \(shape \(240, 8\)\) but the weight expects q=9"):
        full_tail_refine(xb(W), xb(X[:, :8]), xb(y), 2, ridge=1.0)
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\) for W of shape \(9, 5\); got \(4,\)"):
        full_tail_refine(xb(W), xb(X), xb(y), 2, ridge=1.0, bias=xb(b[:4]))


def test_accumulator_misuse_is_refused_with_messages(problem):
    W, X, y, b = problem
    acc = FullTailAccumulator(W, 2)
    with pytest.raises(ValueError, match="has seen no data"):
        acc.result(ridge=1.0)
    with pytest.raises(ValueError, match="has seen no data"):
        acc.scorer()
    acc.update(X, y)
    with pytest.raises(ValueError, match="rank was left open at construction"):
        FullTailAccumulator(W).update(X, y).result(ridge=1.0)
    with pytest.raises(ValueError, match=r"result\(\) needs a fixed rank .* got 'auto'"):
        acc.result("auto", ridge=1.0)
    with pytest.raises(ValueError, match=r"ridge must be a number >= 0; got 'auto'"):
        acc.result(ridge="auto")
    with pytest.raises(ValueError, match=r"partial sums must have shape \(142,\); got \(5,\)"):
        acc.load_partial_sums(np.zeros(5))
    with pytest.raises(ValueError, match=r"cannot merge FullTailAccumulators with different settings"):
        acc.merge(FullTailAccumulator(W, 2, bias=b))
    with pytest.raises(ValueError, match="built from different weights"):
        acc.merge(FullTailAccumulator(2.0 * W, 2))
    with pytest.raises(TypeError, match="can only merge a FullTailAccumulator; got int"):
        acc.merge(3)
    with pytest.raises(ValueError, match=r"candidate rank must lie in \[0, min\(q, l\)=5\]; got 7"):
        acc.scorer(ranks=[7])
    with pytest.raises(ValueError, match="ridges must hold at least one value"):
        acc.scorer(ridges=[])
    with pytest.raises(ValueError, match="the scorer has seen no held-out data"):
        acc.scorer().best()
    with pytest.raises(ValueError, match=r"min_gain must be a number; got 'x' \(str\)"):
        acc.scorer().update(X, y).best(min_gain="x")


# ------------------------------------------------------- the stream entry point
def test_refine_batches_full_tail_equals_the_function_and_reports_it(backend, problem, rng):
    from lip_agnostic import refine_batches

    W, X, y, b = problem
    xb = backend.asarray
    batches = [(xb(X[i:i + 50]), xb(y[i:i + 50])) for i in range(0, 240, 50)]
    res = refine_batches(xb(W), batches, rank=2, bias=xb(b), tail="full", ridge=0.7)
    ref_W, ref_b = full_tail_refine(xb(W), xb(X), xb(y), 2, bias=xb(b), ridge=0.7)
    np.testing.assert_allclose(backend.to_numpy(res.weight), backend.to_numpy(ref_W), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(res.bias), backend.to_numpy(ref_b), rtol=1e-11, atol=1e-13)
    d = res.to_dict()
    assert (d["tail"], d["beyond_paper"], d["bias_refit"]) == ("full", True, True)
    assert d["selection"]["ridge"] == 0.7 and d["selection"]["k"] == 2 and res.n_fit == 240
    paper = refine_batches(xb(W), batches, rank=2, bias=xb(b)).to_dict()
    assert (paper["tail"], paper["beyond_paper"], paper["bias_refit"]) == ("diagonal", False, False)


def test_refine_batches_full_tail_auto_on_validation_and_on_a_holdout(problem, rng):
    from lip_agnostic import refine_batches

    W, X, y, b = problem
    Xv, yv = rng.normal(size=(120, 9)) + 0.5, rng.integers(0, 5, 120)
    res = refine_batches(W, [(X, y)], rank="auto", validation=[(Xv, yv)], bias=b, tail="full", confidence=None)
    sel = FullTailAccumulator(W, bias=b).update(X, y).scores(Xv, yv, confidence=None)
    assert (res.selection.k, res.selection.ridge) == (sel.k, sel.ridge)
    assert res.selection.extra["source"] == "validation" and res.selection.table == sel.table
    held = refine_batches(W, [(X, y)], rank="auto", bias=b, tail="full", holdout=0.25)
    assert held.selection.extra["source"] == "holdout 1/4" and held.n_fit == 180
    # all-reduce: two "workers" each with half the stream reach the one-process answer
    halves = [(X[i::2], y[i::2]) for i in range(2)]
    other = FullTailAccumulator(W, 1, bias=b).update(*halves[1]).partial_sums  # the second worker's sums
    res2 = refine_batches(W, [halves[0]], rank=1, bias=b, tail="full", ridge=2.0, all_reduce=lambda a: a + other)
    one = refine_batches(W, [(X, y)], rank=1, bias=b, tail="full", ridge=2.0)
    np.testing.assert_allclose(res2.weight, one.weight, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(res2.bias, one.bias, rtol=1e-11, atol=1e-13)
    assert res2.n_fit == 240


def test_tail_options_are_checked_with_messages(problem):
    from lip_agnostic import refine_batches

    W, X, y, b = problem
    with pytest.raises(ValueError, match=r"tail must be 'auto', 'diagonal' \(the paper\) or 'full' \(beyond the paper\); got 'dense'"):
        refine_batches(W, [(X, y)], rank=2, tail="dense")
    with pytest.raises(ValueError, match=r"ridge=1.0 applies to tail='full' only"):
        refine_batches(W, [(X, y)], rank=2, tail="diagonal", ridge=1.0)
    with pytest.raises(ValueError, match=r"degenerate='keep' applies to tail='diagonal' only"):
        refine_batches(W, [(X, y)], rank=2, tail="full", degenerate="keep")
    with pytest.raises(ValueError, match=r"ridge must be a finite number >= 0; got -2"):
        refine_batches(W, [(X, y)], rank=2, tail="full", ridge=-2)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'tail'"):
        lip_refine(W, X, y, 2, tail="full")  # lip_refine is the paper's method: no other tail
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'ridge'"):
        lip_refine(W, X, y, 2, ridge=0.5)


def test_logit_scale_counts_the_bias_only_when_it_is_in_the_fit(problem):
    W, X, y, b = problem
    Y = onehot(y, 5)
    fit = FullTailAccumulator(W, 2, bias=b, target_scale="logits").update(X, y).scale()
    ignore = FullTailAccumulator(W, 2, bias=b, bias_mode="ignore", target_scale="logits").update(X, y).scale()
    assert fit == pytest.approx(np.sum((X @ W + b) * Y) / np.sum(Y * Y), rel=1e-12)
    assert ignore == pytest.approx(np.sum((X @ W) * Y) / np.sum(Y * Y), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_report_measures_the_kept_components_unchanged(backend, problem, dtype):
    from lip_agnostic import refine_batches

    W, X, y, b = problem
    xb = backend.asarray
    res = refine_batches(xb(W, dtype), [(xb(X, dtype), xb(y))], rank=3, bias=xb(b, dtype), tail="full", ridge=1.0)
    s = res.summary
    assert s.kept_unchanged is True and s.kept_relative_change < 50 * np.finfo(dtype).eps
    assert s.relative_change > 0.01  # while the complement did change
