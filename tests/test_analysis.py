"""The paper's analysis: its measurements' invariants, and the quick mode end to end."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from experiments.analysis import (  # noqa: E402
    AnalysisConfig,
    analyse_dataset,
    energy_profile,
    main,
    ridge_angles,
    ridge_fit,
    run_analysis,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- pieces (no training)
def test_ridge_fit_solves_the_normal_equations():
    rng = np.random.default_rng(0)
    X, Y = rng.random((80, 6)), np.eye(3)[rng.integers(0, 3, 80)]
    W = ridge_fit(X, Y, 2.5)
    np.testing.assert_allclose((X.T @ X + 2.5 * np.eye(6)) @ W, X.T @ Y, atol=1e-10)
    from sklearn.linear_model import Ridge

    ref = Ridge(alpha=2.5, fit_intercept=False).fit(X, Y).coef_.T
    np.testing.assert_allclose(W, ref, atol=1e-8)


def test_energy_profile_exact_cases():
    rng = np.random.default_rng(1)
    Wc = rng.standard_normal((20, 5))
    s = np.linalg.svd(Wc, compute_uv=False)
    # W_noisy = 2 W_clean: the change is W_clean itself, spread like its own energy, at noise-to-signal 1
    e, r = energy_profile(Wc, 2 * Wc)
    np.testing.assert_allclose(e, s**2 / np.sum(s**2), atol=1e-12)
    np.testing.assert_allclose(r, 1.0, atol=1e-12)
    # a change along one right singular direction only
    U, _, Vt = np.linalg.svd(Wc, full_matrices=False)
    e, r = energy_profile(Wc, Wc + 0.3 * np.outer(U[:, 3], Vt[3]))
    np.testing.assert_allclose(e, np.eye(5)[3], atol=1e-12)
    assert r[3] == pytest.approx(0.3 / s[3])
    # any change: the shares sum to 1 (V is a full basis of the class space)
    e, _ = energy_profile(Wc, Wc + rng.standard_normal(Wc.shape))
    assert e.sum() == pytest.approx(1.0) and np.all(e >= 0)
    # no change: all zero
    e, r = energy_profile(Wc, Wc)
    assert not e.any() and not r.any()


def test_ridge_angles_and_bound_shape():
    rng = np.random.default_rng(2)
    centers = rng.random((4, 12)) * 3
    y = rng.integers(0, 4, 600)
    X = centers[y] + 0.3 * rng.standard_normal((600, 12))
    out = ridge_angles(X, y, 4, (0.0, 0.1, 0.3), (1, 2), lam=1.0)
    for k in (1, 2):
        a = out["angles"][k]
        assert a[0] == pytest.approx(0.0, abs=1e-6) and all(0.0 <= v <= 90.0 for v in a)
        b = out["bound"][k]
        assert b[0] == 0.0 and b[1] < b[2]                      # the bound grows like sqrt(p)
        assert b[2] / b[1] == pytest.approx(math.sqrt(0.3 / 0.1), rel=0.15)
        assert out["measured_ratio"][k][0] == pytest.approx(0.0, abs=1e-9) and out["measured_ratio"][k][2] > 0
        assert out["gap"][k] == pytest.approx(out["spectrum"][k - 1] - out["spectrum"][k])
        # exactly the core's bound at the measured noise rate
        import lip_agnostic.metrics as lip_metrics

        ref = lip_metrics.davis_kahan_bound(X, out["p_actual"][2], n_classes=4, gap=out["gap"][k], ridge=1.0)
        assert b[2] == pytest.approx(ref, rel=1e-9)
    # the clean problem is well separated: its top subspace barely moves at 10 % noise
    assert out["angles"][1][1] < 20.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rates": (0.1, 0.2)}, r"rates must start with 0.0 \(the clean run\); got \(0.1, 0.2\)"),
        ({"rates": (0.0, 1.2)}, r"rates must lie in \[0, 1\); got \(0.0, 1.2\)"),
        ({"rates": ()}, r"rates must start with 0.0"),
    ],
)
def test_config_rejects_bad_rates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnalysisConfig("digits", **kwargs)


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match=r"dataset must be 'digits', 'fashion-mnist' or 'fonts'; got 'cifar100'"):
        analyse_dataset(AnalysisConfig("cifar100", epochs=1))


def test_missing_dataset_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    md = run_analysis(tmp_path / "fig", quick=False, log=lambda s: None,
                      configs=[AnalysisConfig("fashion-mnist", epochs=1)])
    assert re.search(r"Skipped: fashion-mnist skipped: Fashion-MNIST file .* not found", md)
    assert not list((tmp_path / "fig").glob("*.png"))


# ---------------------------------------------------------------- a small real run
@pytest.fixture(scope="module")
def digits_result():
    cfg = AnalysisConfig("digits", rates=(0.0, 0.2, 0.4), epochs=4, hidden=(32, 16), ks=(1, 3), head_epochs=3,
                         ridge_lambdas=(1.0,))
    return analyse_dataset(cfg)


def test_analysis_invariants(digits_result):
    r = digits_result
    l = r.n_classes
    assert (l, r.q) == (10, 16) and r.n_train == 1257
    # actual rates near nominal (binomial, 5 sd) and clean at 0
    for nominal, actual in zip(r.config.rates, r.actual_rates):
        assert abs(actual - nominal) <= 5 * math.sqrt(max(nominal * (1 - nominal), 1e-12) / r.n_train) + 1e-12
    for s in r.spectra + [r.spectrum_control]:
        assert s.shape == (l,) and np.all(np.diff(s) <= 1e-12) and s[-1] >= 0
    for k, a in r.angles.items():
        # rate 0 is the clean run itself
        assert a[0] == pytest.approx(0.0, abs=1e-6) and r.angles_early[k][0] == pytest.approx(0.0, abs=1e-6)
        assert all(0.0 <= v <= 90.0 + 1e-9 for v in a + r.angles_early[k] + [r.angles_control[k]])
    # phi: the clean run against itself is 1 everywhere; j = l holds every i-subspace
    np.testing.assert_allclose(r.phi[0.0], 1.0, atol=1e-9)
    for M in list(r.phi.values()) + [r.phi_control]:
        assert M.shape == (l, l) and M.min() >= -1e-12 and M.max() <= 1 + 1e-9
        np.testing.assert_allclose(M[:, -1], 1.0, atol=1e-9)
    for E in list(r.energy_ridge.values()) + list(r.energy_head.values()):
        assert E.shape == (l,) and E.sum() == pytest.approx(1.0) and np.all(E >= 0)
    assert set(r.energy_ridge) == set(r.energy_head) == {0.2, 0.4}
    assert all(0.0 <= a <= 1.0 for a in r.test_acc + r.train_acc_noisy + r.head_test_acc)
    # noisy labels are harder to fit than clean ones
    assert r.train_acc_noisy[-1] < r.train_acc_noisy[0]
    assert 1.0 <= r.effective_rank[0] <= l


def test_quick_mode_end_to_end(tmp_path):
    out, md_file = tmp_path / "docs" / "figures", tmp_path / "docs" / "ANALYSIS.md"
    assert main(["--quick", "--out", str(out), "--markdown", str(md_file)]) == 0
    md = md_file.read_text()
    assert md.startswith("### Label noise in the final layer: the paper's analysis on our data")
    assert "Mode: quick" in md and "#### digits (l = 10 classes" in md
    for rate in ("0", "0.05", "0.1", "0.2", "0.3", "0.4"):
        assert re.search(rf"^\| {re.escape(rate)} \(0\.\d{{3}}\) \| \d+\.\d \|", md, re.M), rate
    assert re.search(r"the paper's Davis–Kahan bound is (vacuous|informative)", md)
    assert "Where ΔW lands (p=0.4)" in md and "**Overall (1 setting).**" in md
    pngs = sorted(p.name for p in out.glob("analysis_*.png"))
    assert pngs == [f"analysis_{n}_digits.png" for n in ("angles", "energy", "phi", "ridge_bound", "samples", "spectra")]
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    # every figure link resolves relative to the Markdown file
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 6 and all((md_file.parent / link).exists() for link in links)
