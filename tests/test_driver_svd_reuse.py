"""One factorization per refinement, none at construction: counted by patching linalg."""

from __future__ import annotations

import numpy as np
import pytest

import lip_agnostic as lip


@pytest.fixture
def factorizations(monkeypatch):
    """Every call of ``svd`` / ``eigh`` (NumPy, and torch when installed), as ``(name, shape)``."""
    calls: list[tuple[str, tuple[int, ...]]] = []

    def counting(name, fn):
        def wrapped(a, *args, **kwargs):
            calls.append((name, tuple(a.shape)))
            return fn(a, *args, **kwargs)
        return wrapped

    for name in ("svd", "eigh", "svdvals"):
        if hasattr(np.linalg, name):
            monkeypatch.setattr(np.linalg, name, counting("numpy." + name, getattr(np.linalg, name)))
    try:
        import torch
        import array_api_compat.torch as compat_torch
    except ImportError:
        return calls
    for name in ("svd", "eigh", "svdvals"):
        fn = getattr(torch.linalg, name)
        monkeypatch.setattr(torch.linalg, name, counting("torch." + name, fn))
        if hasattr(compat_torch.linalg, name):
            monkeypatch.setattr(compat_torch.linalg, name,
                                counting("torch." + name, getattr(compat_torch.linalg, name)))
    return calls


def _problem(dtype, seed=0, q=128, l=100, n=600):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(q, l)).astype(dtype)
    X = rng.normal(size=(n, q)).astype(dtype)
    y = np.argmax(X @ W + rng.normal(scale=3.0, size=(n, l)), axis=1)
    b = rng.normal(size=(l,)).astype(dtype)
    return W, X, y, b


@pytest.mark.parametrize("dtype", ["float32", "float64"])   # Gram route (eigh) / LAPACK (svd)
@pytest.mark.parametrize("rank", ["auto", 5, 0.9])
def test_refine_batches_factorizes_the_weight_once(factorizations, dtype, rank):
    W, X, y, b = _problem(dtype)
    batches = [(X[i:i + 100], y[i:i + 100]) for i in range(0, 400, 100)]
    validation = [(X[400:], y[400:])] if rank == "auto" else None
    guard = {"confidence": None} if rank == "auto" else {}
    res = lip.refine_batches(W, batches, rank=rank, validation=validation, bias=b, tail="diagonal", **guard)
    assert res.weight.shape == W.shape
    assert len(factorizations) == 1, factorizations
    name, shape = factorizations[0]
    if dtype == "float32":
        assert name == "numpy.eigh" and shape == (100, 100)   # the Gram matrix of the small side
    else:
        assert name == "numpy.svd" and shape == (128, 100)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_full_tail_factorizes_the_weight_once_and_each_gram_block_once(factorizations, dtype):
    """rank="auto" with the default tail (the full tail, beyond the paper): one factorization of
    ``W``, then one ``eigh`` of the feature Gram block ``G[k:, k:]`` per candidate ``k < m`` (it
    serves every ridge of the grid), one more for the chosen ``k``'s refit, and the report's one SVD
    of ``W*`` (spectrum and top-k angle; the angle's own factorizations are of ``(l, k)`` bases)."""
    W, X, y, b = _problem(dtype)
    batches = [(X[i:i + 100], y[i:i + 100]) for i in range(0, 400, 100)]
    res = lip.refine_batches(W, batches, rank="auto", validation=[(X[400:], y[400:])], bias=b, confidence=None)
    assert res.tail == "full"
    first, rest = factorizations[0], factorizations[1:]
    assert first in ((("numpy.eigh", (100, 100))) if dtype == "float32" else (("numpy.svd", (128, 100))),)
    q, m = W.shape[0], min(W.shape)
    k = res.selection.k
    assert res.selection.changed and 0 < k < m   # the case that exercises every step
    expected = [("numpy.eigh", (q - j, q - j)) for j in res.selection.ks if j < m] + [("numpy.eigh", (q - k, q - k))]
    assert rest[:len(expected)] == expected, rest
    report = rest[len(expected):]
    assert report[0] == ("numpy.svd", W.shape), report
    assert all(shape in ((W.shape[1], k), (k, k)) for _, shape in report[1:]), report


def test_lip_refine_auto_factorizes_the_weight_once(factorizations):
    W, X, y, b = _problem("float32")
    lip.lip_refine(W, X[:400], y[:400], "auto", bias=b, validation=(X[400:], y[400:]), confidence=None)
    assert len(factorizations) == 1, factorizations


def test_given_factors_mean_no_factorization(factorizations):
    W, X, y, _ = _problem("float64")
    f = lip.reduced_svd(W)
    factorizations.clear()
    res = lip.refine_batches(W, [(X, y)], rank=0.8, svd=f)
    assert factorizations == []
    np.testing.assert_allclose(res.weight, lip.refine_batches(W, [(X, y)], rank=0.8).weight, atol=1e-12)
    assert lip.select_rank(W, 7).k == 7 and lip.select_rank(W, 0.8, svd=f).k == res.selection.k
    np.testing.assert_array_equal(lip.project_principal(W, 3, svd=f), lip.project_principal(W, 3))
    factorizations.clear()
    lip.select_rank(W, 7)
    assert factorizations == []  # a fixed rank needs only min(q, l)


def test_factors_of_the_wrong_shape_are_refused():
    W, X, y, _ = _problem("float64")
    f = lip.reduced_svd(W[:, :90])
    with pytest.raises(ValueError, match=r"svd factors \(U, s, V\) must have shapes \(\(128, 100\), \(100,\), \(100, 100\)\)"):
        lip.select_rank(W, 0.8, svd=f)
    with pytest.raises(ValueError, match=r"svd factors \(U, s, V\) must have shapes"):
        lip.project_principal(W, 3, svd=f)
    with pytest.raises(TypeError, match="svd must be a lip_agnostic.SVD"):
        lip.select_rank(W, 0.8, svd=(f.U, f.s, f.V))


@pytest.mark.parametrize("k", ["auto", 3])
def test_torch_face_construction_runs_no_factorization(factorizations, k):
    torch = pytest.importorskip("torch")
    from lip_agnostic.adapters.torch import LIPOptimizer, attach

    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 50))
    selection = {"holdout": 0.25} if k == "auto" else {}  # a fixed rank chooses nothing on held-out data
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[2], rank=k,
                       target_scale="logits", degenerate="keep", project_rank=4, **selection)
    handle = attach(torch.optim.SGD(model.parameters(), lr=0.1), model[2], rank=k,
                    **({"min_gain": 0.01} if k == "auto" else {}))
    # The options are parsed by the core's LIPOptions at construction: nothing runs, nothing is factorized.
    assert factorizations == [], factorizations
    # ... and a bad one fails at construction.
    with pytest.raises(ValueError, match="degenerate must be 'zero' or 'keep'"):
        LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[2], rank=k, degenerate="drop")
    assert factorizations == []
    # ... and the real pass factorizes the real weight exactly once.
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(40, 20, generator=g), torch.randint(0, 50, (40,), generator=g)) for _ in range(5)]
    opt.finalize(data, progress=False)
    assert len(factorizations) == 1 and factorizations[0][1] in ((50, 50), (64, 50)), factorizations
    del handle


def test_keras_callback_construction_runs_no_factorization(factorizations):
    keras = pytest.importorskip("keras")
    from lip_agnostic.adapters.keras import LIPCallback

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 5, 64)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(5)])
    cb = LIPCallback(data=(x, y), rank=2, project_every=1, project_rank=3)
    cb.set_model(model)
    cb.on_train_begin()
    assert factorizations == [], factorizations
