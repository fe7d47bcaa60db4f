"""LIP (PSP + LAP): the closed form against the paper's dense formula, optimality,
options, streaming and merging, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic import lip_refine, LIPAccumulator


def dense_reference(W, X, Y, k, bias=None, scale=1.0):
    """The reference code's matrix formula, written out in NumPy (float64).

    W* = W_k + U_t diag( diag(U_t^T X^T (T - X W_k) V_t) / diag(U_t^T X^T X U_t) ) V_t^T,
    with T = scale * Y - 1 b^T.
    """
    U, s, Vh = np.linalg.svd(W, full_matrices=False)
    V = Vh.T
    Wk = (U[:, :k] * s[:k]) @ V[:, :k].T
    Ut, Vt = U[:, k:], V[:, k:]
    T = scale * Y - (0.0 if bias is None else bias[None, :])
    num = np.diag(Ut.T @ X.T @ (T - X @ Wk) @ Vt)
    den = np.diag(Ut.T @ X.T @ X @ Ut)
    return Wk + (Ut * (num / den)) @ Vt.T


def onehot(y, l):
    out = np.zeros((y.size, l))
    out[np.arange(y.size), y] = 1.0
    return out


@pytest.fixture
def problem(rng):
    q, l, n = 20, 8, 300
    W = rng.normal(size=(q, l))
    X = rng.normal(size=(n, q))
    y = rng.integers(0, l, n)
    return W, X, y


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_lip_equals_the_papers_dense_formula(backend, problem, k):
    W, X, y = problem
    got = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y), k)
    assert type(got) is type(backend.asarray(W))
    np.testing.assert_allclose(backend.to_numpy(got), dense_reference(W, X, onehot(y, 8), k), rtol=1e-10, atol=1e-12)


def test_integer_labels_and_one_hot_targets_agree(backend, problem):
    W, X, y = problem
    a = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y), 2)
    b = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(onehot(y, 8)), 2)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-12, atol=1e-12)


def test_soft_and_candidate_set_targets_follow_the_formula(backend, problem, rng):
    W, X, _ = problem
    soft = rng.dirichlet(np.ones(8), size=300)
    cand = (rng.random((300, 8)) < 0.3).astype(np.float64)
    for T in (soft, cand):
        got = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(T), 3)
        np.testing.assert_allclose(backend.to_numpy(got), dense_reference(W, X, T, 3), rtol=1e-10, atol=1e-12)


def test_bias_and_target_scale_follow_the_formula(backend, problem, rng):
    W, X, y = problem
    b = rng.normal(size=8)
    got = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y), 2,
                     bias=backend.asarray(b), target_scale=4.0)
    np.testing.assert_allclose(backend.to_numpy(got), dense_reference(W, X, onehot(y, 8), 2, b, 4.0), rtol=1e-10)


def test_logit_target_scale_is_the_least_squares_scale(problem):
    W, X, y = problem
    acc = LIPAccumulator(W, 2, target_scale="logits").update(X, y)
    Y = onehot(y, 8)
    Z = X @ W
    c_ls = np.sum(Z * Y) / np.sum(Y * Y)  # argmin_c ||c Y - X W||_F
    assert acc.scale() == pytest.approx(c_ls, rel=1e-10)
    np.testing.assert_allclose(acc.result(), dense_reference(W, X, Y, 2, None, c_ls), rtol=1e-10)


def test_refit_is_the_least_squares_optimum(problem, rng):
    W, X, y = problem
    Y = onehot(y, 8)
    k = 3
    Ws = lip_refine(W, X, y, k)
    U, s, Vh = np.linalg.svd(W, full_matrices=False)

    def objective(M):
        return np.sum((X @ M - Y) ** 2)

    best = objective(Ws)
    for i in range(k, 8):
        for eps in (1e-3, -1e-3, 0.1, -0.1):
            moved = Ws + eps * np.outer(U[:, i], Vh[i])
            assert objective(moved) > best
    # ... and the head is untouched: the top-k components of W* are those of W.
    np.testing.assert_allclose(U[:, :k].T @ Ws @ Vh[:k].T, np.diag(s[:k]), atol=1e-10)


def test_full_rank_returns_w_unchanged(backend, problem):
    W, X, y = problem
    got = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y), 8)
    np.testing.assert_array_equal(backend.to_numpy(got), W)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_keeps_dtype_and_float32_is_accurate(backend, problem, dtype):
    W, X, y = problem
    got = lip_refine(backend.asarray(W, dtype), backend.asarray(X, dtype), backend.asarray(y), 2)
    assert got.dtype == backend.dtype(dtype)
    tol = 1e-3 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(backend.to_numpy(got), dense_reference(W, X, onehot(y, 8), 2), rtol=tol, atol=tol)


def test_degenerate_tail_gets_zero_or_keeps_its_value(rng):
    q, l, n = 6, 4, 50
    W = rng.normal(size=(q, l))
    U, s, Vh = np.linalg.svd(W, full_matrices=False)
    X = rng.normal(size=(n, q))
    X = X - np.outer(X @ U[:, 3], U[:, 3])  # the data never excite u_3
    y = rng.integers(0, l, n)
    zero = lip_refine(W, X, y, 1)
    keep = lip_refine(W, X, y, 1, degenerate="keep")
    assert np.all(np.isfinite(zero)) and np.all(np.isfinite(keep))
    assert abs(U[:, 3] @ zero @ Vh[3]) < 1e-9
    assert U[:, 3] @ keep @ Vh[3] == pytest.approx(s[3], rel=1e-9)
    # the non-degenerate tail components are unaffected by the choice
    for i in (1, 2):
        assert U[:, i] @ zero @ Vh[i] == pytest.approx(U[:, i] @ keep @ Vh[i], rel=1e-9)


def test_all_zero_features_do_not_divide_by_zero(rng):
    W = rng.normal(size=(5, 3))
    out = lip_refine(W, np.zeros((10, 5)), rng.integers(0, 3, 10), 1)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, lip_refine(W, np.zeros((10, 5)), rng.integers(0, 3, 10), 1))


def test_streaming_equals_batch_and_merge_equals_one_accumulator(backend, problem):
    W, X, y = problem
    xb = backend.asarray
    whole = backend.to_numpy(lip_refine(xb(W), xb(X), xb(y), 2))
    acc = LIPAccumulator(xb(W), 2)
    for a, b in ((0, 7), (7, 150), (150, 299), (299, 300)):
        acc.update(xb(X[a:b]), xb(y[a:b]))
    np.testing.assert_allclose(backend.to_numpy(acc.result()), whole, rtol=1e-10, atol=1e-12)
    left = LIPAccumulator(xb(W), 2).update(xb(X[:100]), xb(y[:100]))
    right = LIPAccumulator(xb(W), 2).update(xb(X[100:]), xb(y[100:]))
    np.testing.assert_allclose(backend.to_numpy(left.merge(right).result()), whole, rtol=1e-10, atol=1e-12)
    assert left.n_samples == 300


def test_partial_sums_all_reduce_like_workers(problem):
    W, X, y = problem
    workers = [LIPAccumulator(W, None).update(X[i::3], y[i::3]) for i in range(3)]
    total = sum(w.partial_sums for w in workers)
    for w in workers:
        w.load_partial_sums(total)
        np.testing.assert_allclose(w.result(4), lip_refine(W, X, y, 4), rtol=1e-10)
    assert workers[0].partial_sums.shape == (3 * 8 + 3,)  # O(r) state


def test_small_batch_rows_change_nothing(problem):
    W, X, y = problem
    np.testing.assert_allclose(lip_refine(W, X, y, 2, batch_rows=13), lip_refine(W, X, y, 2), rtol=1e-12)


def test_float32_statistics_accumulate_in_float64(rng):
    W = rng.normal(size=(8, 4)).astype(np.float32)
    acc = LIPAccumulator(W, 1)
    assert acc.partial_sums.dtype == np.float64


# ------------------------------------------------------------------ bad input
def test_row_count_mismatch_is_refused(backend, problem):
    W, X, y = problem
    with pytest.raises(ValueError, match=r"same number of rows; got X \(300, 20\) and Y \(299,\)"):
        lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y[:-1]), 2)
    with pytest.raises(ValueError, match=r"X has 300 rows but Y has 299 labels"):
        LIPAccumulator(backend.asarray(W), 2).update(backend.asarray(X), backend.asarray(y[:-1]))


def test_labels_outside_the_classes_are_refused(backend, problem):
    W, X, y = problem
    bad = y.copy()
    bad[5] = 8
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 8\) .* got min 0, max 8"):
        lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(bad), 2)
    bad[5] = -1
    with pytest.raises(ValueError, match=r"got min -1"):
        lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(bad), 2)


def test_feature_width_and_target_width_are_checked(backend, problem):
    W, X, y = problem
    with pytest.raises(ValueError, match=r"X has 19 features \(shape \(300, 19\)\) but the weight expects q=20"):
        lip_refine(backend.asarray(W), backend.asarray(X[:, :19]), backend.asarray(y), 2)
    with pytest.raises(ValueError, match=r"Y has 7 columns \(shape \(300, 7\)\) but the classifier has l=8"):
        lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(onehot(y, 8)[:, :7]), 2)
    with pytest.raises(TypeError, match=r"1-D Y must hold integer class labels; got dtype .*float64"):
        lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y.astype(np.float64)), 2)


def test_non_finite_features_and_targets_are_refused(backend, problem):
    W, X, y = problem
    Xb = X.copy()
    Xb[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN/Inf value\(s\) \(shape \(300, 20\)\)"):
        lip_refine(backend.asarray(W), backend.asarray(Xb), backend.asarray(y), 2)
    T = onehot(y, 8)
    T[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"Y contains 1 NaN/Inf"):
        lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(T), 2)


def test_rank_out_of_range_and_bad_options_are_refused(problem):
    W, X, y = problem
    with pytest.raises(ValueError, match=r"k must lie in \[0, min\(q, l\)=8\]; got 9"):
        lip_refine(W, X, y, 9)
    with pytest.raises(ValueError, match=r"rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got 'best'"):
        lip_refine(W, X, y, "best")
    with pytest.raises(ValueError, match=r"target_scale must be a positive number or 'logits'; got -1"):
        lip_refine(W, X, y, 2, target_scale=-1)
    with pytest.raises(ValueError, match=r"degenerate must be 'zero' or 'keep'; got 'drop'"):
        lip_refine(W, X, y, 2, degenerate="drop")
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\) for W of shape \(20, 8\); got \(7,\)"):
        lip_refine(W, X, y, 2, bias=np.zeros(7))
    with pytest.raises(ValueError, match=r"batch_rows must be a positive integer; got 0"):
        lip_refine(W, X, y, 2, batch_rows=0)
    with pytest.raises(ValueError, match="X and Y are empty"):
        lip_refine(W, X[:0], y[:0], 2)
    with pytest.raises(ValueError, match=r"non-2-D|must be 2-D \(n samples, q=20 features\); got shape \(300,\)"):
        lip_refine(W, X[:, 0], y, 2)


def test_mixed_array_libraries_are_refused(problem):
    torch = pytest.importorskip("torch")
    W, X, y = problem
    with pytest.raises(TypeError, match=r"one array-API library; got .*numpy.ndarray.*torch.Tensor"):
        lip_refine(W, torch.from_numpy(X), y, 2)


def test_a_library_without_linalg_is_refused(problem):
    W, X, y = problem

    class NoLinalg:
        __name__ = "nolinalg"

    with pytest.raises(TypeError, match=r"array library 'nolinalg' has no 'linalg' extension"):
        lip_refine(W, X, y, 2, xp=NoLinalg())


def test_accumulator_misuse_is_refused(problem):
    W, X, y = problem
    acc = LIPAccumulator(W, 3)
    with pytest.raises(ValueError, match="has seen no data"):
        acc.result()
    acc.update(X, y)
    with pytest.raises(ValueError, match=r"k=1 needs components below the tracked range \[3, 8\)"):
        acc.result(1)
    with pytest.raises(ValueError, match=r"cannot merge LIPAccumulators with different settings"):
        acc.merge(LIPAccumulator(W, 2))
    with pytest.raises(ValueError, match="built from different weights"):
        acc.merge(LIPAccumulator(2.0 * W, 3))
    with pytest.raises(TypeError, match="can only merge a LIPAccumulator; got int"):
        acc.merge(3)
    with pytest.raises(ValueError, match=r"partial sums must have shape \(18,\); got \(5,\)"):
        acc.load_partial_sums(np.zeros(5))
    with pytest.raises(ValueError, match="k was left open"):
        LIPAccumulator(W).update(X, y).result()


def test_bias_mode_ignore_is_the_papers_fit_even_with_a_bias(backend, problem, rng):
    W, X, y = problem
    b = backend.asarray(rng.normal(size=8))
    got = lip_refine(backend.asarray(W), backend.asarray(X), backend.asarray(y), 2, bias=b, bias_mode="ignore")
    np.testing.assert_allclose(backend.to_numpy(got), dense_reference(W, X, onehot(y, 8), 2), rtol=1e-10)
    with pytest.raises(ValueError, match=r"bias_mode must be 'fit' \(targets Y - 1 b\^T\) or 'ignore'.*got 'no'"):
        LIPAccumulator(backend.asarray(W), 2, bias_mode="no")


def test_the_old_fit_bias_keyword_is_gone_not_aliased(problem, rng):
    W, X, y = problem
    with pytest.raises(TypeError, match="unexpected keyword argument 'fit_bias'"):
        lip_refine(W, X, y, 2, fit_bias=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'fit_bias'"):
        LIPAccumulator(W, 2, fit_bias=True)


def test_a_precomputed_svd_gives_the_same_result_and_is_checked(problem):
    from lip_agnostic import reduced_svd

    W, X, y = problem
    f = reduced_svd(W)
    np.testing.assert_array_equal(LIPAccumulator(W, 2, svd=f).update(X, y).result(), LIPAccumulator(W, 2).update(X, y).result())
    with pytest.raises(ValueError, match=r"svd factors \(U, s, V\) must have shapes"):
        LIPAccumulator(W[:, :5], 2, svd=f)
    with pytest.raises(TypeError, match="svd must be a lip_agnostic.SVD"):
        LIPAccumulator(W, 2, svd=(f.U, f.s, f.V))


@pytest.mark.parametrize("k", [0, 2, 5, 8])
def test_summary_from_the_spectra_equals_the_one_from_the_weights(problem, k):
    from lip_agnostic import refine_batches, summarize_change

    W, X, y = problem
    res = refine_batches(W, [(X, y)], rank=k)
    direct = summarize_change(W, res.weight, k)
    fast = res.summary
    np.testing.assert_allclose(fast.spectrum_after, direct.spectrum_after, rtol=1e-9, atol=1e-12)
    assert fast.relative_change == pytest.approx(direct.relative_change, rel=1e-9)
    assert fast.effective_rank_after == pytest.approx(direct.effective_rank_after, rel=1e-9)
    assert fast.top_k_angle == pytest.approx(direct.top_k_angle, abs=1e-6)
    assert fast.kept_unchanged and direct.kept_unchanged
    assert fast.kept_relative_change == pytest.approx(direct.kept_relative_change, abs=1e-12)


def test_summary_angle_when_a_refit_tail_value_overtakes_the_head(problem):
    from lip_agnostic import refine_batches, summarize_change

    W, X, y = problem
    res = refine_batches(W, [(X, y)], rank=2, target_scale=1e3)  # refit tail >> kept head
    # The top-2 subspace of W* (ranked by W*'s own singular values) is a tail one ...
    assert res.summary.top_k_angle == pytest.approx(np.pi / 2)
    direct = summarize_change(W, res.weight, 2)
    assert direct.top_k_angle == pytest.approx(np.pi / 2, abs=1e-6)
    # ... but the kept components are intact, and the summary says so (measured on the arrays).
    assert res.summary.kept_unchanged and direct.kept_unchanged
    assert res.summary.kept_relative_change < 1e-12 and direct.kept_relative_change < 1e-12
    Vk = np.linalg.svd(W)[2][:2].T
    np.testing.assert_allclose(res.weight @ Vk, W @ Vk, atol=1e-12)
    d = res.summary.to_dict()
    assert "principal_angle" not in d and d["kept_unchanged"] is True


def test_kept_unchanged_is_measured_not_assumed(problem):
    from lip_agnostic import summarize_change
    from lip_agnostic.report import summarize_refit

    W, X, y = problem
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    moved = W + 1e-3 * np.outer(U[:, 0], Vt[0])             # nudge a kept component
    summary = summarize_change(W, moved, 2)
    assert not summary.kept_unchanged and summary.kept_relative_change == pytest.approx(1e-3 / np.linalg.norm(s[:2]))
    d = s.copy()
    fast = summarize_refit(s, d, 2, shape=W.shape, V=Vt.T, W_before=W, W_after=moved)
    assert not fast.kept_unchanged and fast.kept_relative_change == pytest.approx(summary.kept_relative_change)


def test_non_finite_values_are_found_through_the_products_on_every_path(backend, problem):
    from lip_agnostic import LIPAccumulator
    from lip_agnostic.repairs.diagonal import RankScorer

    W, X, y = problem
    xb = backend.asarray
    Xi = X.copy()
    Xi[7, 0] = np.inf
    for k in (0, 5, 8):  # 8 = m: no tail is tracked, X is scanned directly
        with pytest.raises(ValueError, match=r"X contains 1 NaN/Inf value\(s\)"):
            LIPAccumulator(xb(W), k).update(xb(Xi), xb(y))
    acc = LIPAccumulator(xb(W)).update(xb(X), xb(y))
    with pytest.raises(ValueError, match=r"X_val contains 1 NaN/Inf value\(s\)"):
        RankScorer(acc).update(xb(Xi), xb(y))
    T = onehot(y, 8)
    T[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"Y contains 1 NaN/Inf value\(s\)"):
        LIPAccumulator(xb(W), 8).update(xb(X), xb(T))


def test_an_overflowing_product_is_reported(problem):
    W, X, y = problem
    big = (X * 1e20).astype(np.float32)  # finite, but ||X u||^2 ~ 1e42 overflows float32
    with pytest.raises(ValueError, match="overflowed the working dtype"):
        lip_refine(W.astype(np.float32), big, y, 2)
    assert np.all(np.isfinite(lip_refine(W, X * 1e20, y, 2)))  # float64 copes
