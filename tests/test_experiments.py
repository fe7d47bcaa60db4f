"""The evidence harness: learners, LIP variants, the study, the report, and ``run_all --quick`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments import accuracy as acc  # noqa: E402
from experiments.evidence import fmt_ms, harms, helps, summary_table, verdict  # noqa: E402
from experiments.methods import VARIANTS, Variant, accuracy, evaluate_variant, make_targets  # noqa: E402
from experiments.train import GCE_Q, HeadSnapshot, TrainConfig, candidate_loss, softmax, train_linear, train_mlp  # noqa: E402
from lip_agnostic import lip_refine  # noqa: E402


# ------------------------------------------------------------------ learners
def _blobs(n=300, d=10, l=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(l, d))
    y = rng.integers(0, l, n)
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return x, y, np.eye(l, dtype=bool)[y]


def test_candidate_loss_is_cross_entropy_on_one_hot_rows():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 5, generator=g)
    y = torch.randint(0, 5, (20,), generator=g)
    C = torch.nn.functional.one_hot(y, 5).bool()
    assert torch.allclose(candidate_loss(z, C, "ce"), torch.nn.functional.cross_entropy(z, y), atol=1e-6)
    p = torch.softmax(z, 1)[torch.arange(20), y]
    assert torch.allclose(candidate_loss(z, C, "gce"), ((1 - p ** GCE_Q) / GCE_Q).mean(), atol=1e-6)


def test_candidate_loss_on_sets_uses_the_candidate_mass():
    z = torch.tensor([[2.0, 0.0, -1.0]])
    C = torch.tensor([[True, True, False]])
    ps = torch.softmax(z, 1)[0, :2].sum()
    assert torch.allclose(candidate_loss(z, C, "ce"), -torch.log(ps))
    # all classes candidates: no information, zero loss
    assert float(candidate_loss(z, torch.ones_like(C), "ce")) == pytest.approx(0.0, abs=1e-6)


def test_candidate_loss_rejects_unknown_loss():
    with pytest.raises(ValueError, match="'ce' or 'gce'; got 'mse'"):
        candidate_loss(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), "mse")


@pytest.mark.parametrize("kwargs, message", [
    ({"loss": "mae"}, "loss must be 'ce' or 'gce'; got 'mae'"),
    ({"epochs": 0}, "epochs must be a positive integer; got 0"),
    ({"epochs": 4, "early_epoch": 5}, r"early_epoch must lie in \[1, 4\]; got 5"),
    ({"hidden": ()}, r"hidden must be a non-empty tuple of positive ints; got \(\)"),
    ({"hidden": (8, 0)}, r"hidden must be a non-empty tuple of positive ints; got \(8, 0\)"),
    ({"threads": 4}, "threads must be 1 or 2 on this shared machine; got 4"),
])
def test_train_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_train_mlp_snapshots_match_the_network_and_learn():
    x, y, C = _blobs()
    snaps = train_mlp(x, C, {"test": x[:50]}, TrainConfig(hidden=(16, 12), epochs=8, early_epoch=2, lr=1e-2, seed=3))
    assert sorted(snaps) == ["early", "late"]
    e, s = snaps["early"], snaps["late"]
    assert (e.epoch, s.epoch) == (2, 8)
    assert s.W.shape == (12, 4) and s.b.shape == (4,)
    assert s.features["train"].shape == (300, 12) and s.features["test"].shape == (50, 12)
    np.testing.assert_array_equal(s.features["test"], s.features["train"][:50])
    assert not np.allclose(e.W, s.W)
    assert accuracy(s.logits("train"), y) > 90.0


def test_train_is_deterministic_per_seed():
    x, _, C = _blobs()
    cfg = TrainConfig(hidden=(8,), epochs=2, seed=5)
    a, b = train_mlp(x, C, {}, cfg)["late"], train_mlp(x, C, {}, cfg)["late"]
    np.testing.assert_array_equal(a.W, b.W)
    c = train_mlp(x, C, {}, TrainConfig(hidden=(8,), epochs=2, seed=6))["late"]
    assert not np.allclose(a.W, c.W)


def test_periodic_projection_leaves_a_low_rank_head():
    x, _, C = _blobs(l=6)
    snap = train_mlp(x, C, {}, TrainConfig(hidden=(16,), epochs=3, project_every_epoch=2))["late"]
    s = np.linalg.svd(snap.W, compute_uv=False)
    assert s[1] > 1e-3 and np.all(s[2:] < 1e-5 * s[0])


def test_train_linear_is_logistic_regression_on_the_inputs():
    x, y, C = _blobs()
    snap = train_linear(x, C, {"val": x[:10]}, TrainConfig(epochs=10, lr=5e-2))["late"]
    assert snap.W.shape == (10, 4)
    np.testing.assert_array_equal(snap.features["train"], x)
    assert accuracy(snap.logits("train"), y) > 90.0


@pytest.mark.parametrize("bad, message", [
    (lambda x, C: (x[:, :, None], C, {}), r"x must be 2-D \(n, d\); got shape \(300, 10, 1\)"),
    (lambda x, C: (x, C[:10], {}), r"candidates must be bool \(n, l\) with n = 300; got bool \(10, 4\)"),
    (lambda x, C: (x, C.astype(int), {}), r"candidates must be bool .* got int64"),
    (lambda x, C: (x, np.zeros_like(C), {}), "every row of candidates needs at least one candidate class"),
    (lambda x, C: (x, C, {"val": x[:, :3]}), r"split 'val' must be \(n, 10\); got \(300, 3\)"),
])
def test_learners_reject_bad_inputs(bad, message):
    x, _, C = _blobs()
    for train in (train_mlp, train_linear):
        with pytest.raises(ValueError, match=message):
            train(*bad(x, C), TrainConfig(hidden=(4,), epochs=1))


def test_snapshot_round_trips_through_arrays():
    rng = np.random.default_rng(0)
    s = HeadSnapshot(7, rng.normal(size=(5, 3)), rng.normal(size=3), {"train": rng.random((4, 5), dtype=np.float32)})
    t = HeadSnapshot.from_arrays(s.to_arrays("late"), "late")
    assert t.epoch == 7
    np.testing.assert_array_equal(t.W, s.W)
    np.testing.assert_array_equal(t.features["train"], s.features["train"])


def test_ridge_learner_is_the_closed_form_ridge_solution():
    x, y, C = _blobs()
    snap = acc.train_ridge(x, C, {})["late"]
    X = x.astype(np.float64)
    Xc, Tc = X - X.mean(0), C - C.mean(0)
    lam = acc.RIDGE_LAMBDA_PER_ROW * X.shape[0]
    grad = Xc.T @ (Xc @ snap.W - Tc) + lam * snap.W  # stationarity of the ridge objective
    assert np.abs(grad).max() < 1e-8 * max(1.0, np.abs(Xc.T @ Tc).max())
    np.testing.assert_allclose((X @ snap.W + snap.b).mean(0), C.mean(0), atol=1e-10)


# ------------------------------------------------------------------ variants
def _snapshot(seed=0, n=120, q=8, l=4):
    rng = np.random.default_rng(seed)
    f = {s: rng.normal(size=(n, q)).astype(np.float32) for s in ("train", "val", "test")}
    return HeadSnapshot(1, rng.normal(size=(q, l)), rng.normal(size=l), f), rng


def test_make_targets_kinds():
    rng = np.random.default_rng(0)
    C = rng.random((30, 5)) < 0.4
    C[np.arange(30), rng.integers(0, 5, 30)] = True
    z = rng.normal(size=(30, 5))
    np.testing.assert_array_equal(make_targets("raw", C), C.astype(float))
    cn = make_targets("cand_norm", C)
    np.testing.assert_allclose(cn.sum(1), 1.0)
    assert np.all(cn[~C] == 0)
    p = make_targets("purified", C, z)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.all(p[~C] == 0)
    onehot = np.eye(5, dtype=bool)[rng.integers(0, 5, 30)]
    np.testing.assert_allclose(make_targets("purified", onehot, z), softmax(z))  # noisy labels: the model's estimate


def test_make_targets_errors():
    C = np.eye(3, dtype=bool)
    with pytest.raises(ValueError, match="purified targets need the model's logits"):
        make_targets("purified", C)
    with pytest.raises(ValueError, match="target kind must be 'raw', 'cand_norm' or 'purified'; got 'soft'"):
        make_targets("soft", C)


def test_accuracy_checks_rows():
    assert accuracy(np.eye(3), np.array([0, 1, 0])) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match=r"logits \(3, 3\) and labels \(2,\) disagree"):
        accuracy(np.eye(3), np.array([0, 1]))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_evaluate_variant_matches_the_core(name):
    snap, rng = _snapshot()
    v = VARIANTS[name]
    C = np.eye(4, dtype=bool)[rng.integers(0, 4, 120)]
    Cv = np.eye(4, dtype=bool)[rng.integers(0, 4, 120)]
    y_test = rng.integers(0, 4, 120)
    out = evaluate_variant(snap, v, C, Cv, y_test)
    m = out["m"]
    assert m == 4 and len(out["acc_by_k"]) == m + 1
    assert out["acc_by_k"][m] == pytest.approx(accuracy(snap.logits("test"), y_test))  # k = m: unchanged
    assert out["auto_acc"] == pytest.approx(out["acc_by_k"][out["auto_k"]])
    assert out["auto_changed"] == (out["auto_k"] < m)
    assert out["unguarded_acc"] == pytest.approx(out["acc_by_k"][out["unguarded_k"]])
    if out["auto_changed"]:  # the guard only ever vetoes a change
        assert out["unguarded_k"] < m
    # one fixed k against lip_refine on the same fit rows and targets
    Xfit = snap.features["train" if v.fit_on == "train" else "val"].astype(np.float64)
    Cfit = C if v.fit_on == "train" else Cv
    if v.fit_on == "heldout":
        Xfit, Cfit = Xfit[:60], Cfit[:60]
    T = make_targets(v.targets, Cfit, Xfit @ snap.W + snap.b)
    W2 = lip_refine(snap.W, Xfit, T, 2, bias=snap.b if v.bias else None, target_scale=v.scale)
    assert out["acc_by_k"][2] == pytest.approx(accuracy(snap.features["test"] @ W2 + snap.b, y_test))


def test_evaluate_variant_needs_all_splits():
    snap, rng = _snapshot()
    del snap.features["val"]
    C = np.eye(4, dtype=bool)[rng.integers(0, 4, 120)]
    with pytest.raises(ValueError, match=r"snapshot lacks features of split 'val'; has \['test', 'train'\]"):
        evaluate_variant(snap, VARIANTS["paper"], C, C, rng.integers(0, 4, 120))


def test_partial_labels_are_scored_by_candidate_hits():
    snap, rng = _snapshot()
    C = rng.random((120, 4)) < 0.5
    C[np.arange(120), rng.integers(0, 4, 120)] = True
    out = evaluate_variant(snap, VARIANTS["cand_norm"], C, C, rng.integers(0, 4, 120))
    assert 0 <= out["auto_k"] <= 4


# --------------------------------------------------------------- corruption
def test_corrupt_reports_actual_rates():
    y = np.repeat(np.arange(10), 50)
    C, f = acc.corrupt("digits", y, 10, acc.Setting("symmetric", 0.4), seed=0)
    assert C.shape == (500, 10) and np.all(C.sum(1) == 1)
    assert f["rate_actual"] == pytest.approx(np.mean(C.argmax(1) != y))
    C, f = acc.corrupt("digits", y, 10, acc.Setting("asymmetric", 0.4), seed=0)
    flipped = C.argmax(1) != y
    assert set(np.unique(y[flipped])) <= {2, 3, 5, 6, 7}  # the documented digits map
    C, f = acc.corrupt("digits", y, 10, acc.Setting("partial", 0.3), seed=0)
    assert np.all(C[np.arange(500), y]) and f["q"] == 0.3
    assert f["avg_candidates"] == pytest.approx(C.sum(1).mean())


def test_corrupt_and_loader_errors():
    with pytest.raises(ValueError, match="unknown setting kind 'pairs'"):
        acc.corrupt("digits", np.arange(4), 4, acc.Setting("pairs", 0.1), 0)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; expected digits, fashion-mnist or fonts"):
        acc.load_dataset("cifar", acc.DataSpec(None, None, 1, 1))


def test_setting_names():
    assert [s.name for s in acc.SETTINGS] == ["sym20", "sym40", "sym60", "asym40", "pl30"]


# ------------------------------------------------------------------ report
def test_fmt_and_criteria():
    assert fmt_ms((91.234, 0.5)) == "91.2 ± 0.5"
    assert fmt_ms((-0.04, 0.1), signed=True) == "-0.0 ± 0.1"
    assert helps((1.2, 0.5)) and not helps((1.2, 1.5)) and not helps((0.9, 0.1))
    assert harms((-0.3, 0.0)) and not harms((-0.2, 5.0))


def _evidence_row(gain, oracle=0.0, v="bias"):
    o = {"auto": (90.0 + gain, 0.1), "auto_gain": (gain, 0.1), "auto_worst_gain": gain, "auto_changed": int(gain != 0),
         "auto_k": [3], "gain_by_k": [oracle, 0.0], "oracle_k": 0, "oracle_gain": (oracle, 0.1)}
    return {"dataset": "d", "setting": "sym40", "learner": "mlp_ce", "snapshot": "late", "n_seeds": 3, "epoch": 4,
            "shape": [8, 2], "noise_actual": (0.4, 0.0), "base": (90.0, 0.1), "variants": {v: o, "paper": o}}


def test_verdict_reflects_the_numbers():
    ok = verdict([_evidence_row(0.0), _evidence_row(0.1)])
    assert "MET" in ok and "NOT MET" not in ok and "**No row**" in ok
    bad = verdict([_evidence_row(-0.5), _evidence_row(1.5, oracle=2.0)])
    assert "NOT MET" in bad and "1 row(s) below" in bad and "+1.5 ± 0.1" in bad
    assert "| `bias` | 2 |" in summary_table([_evidence_row(-0.5), _evidence_row(1.5)])


def test_aggregate_pairs_gains_by_seed():
    recs = []
    for seed, (b, a) in enumerate([(80.0, 81.0), (70.0, 72.0), (90.0, 90.0)]):
        recs.append({"dataset": "d", "setting": "sym40", "learner": "mlp_ce", "snapshot": "late", "seed": seed,
                     "epoch": 4, "shape": [8, 2], "noise": {"rate_actual": 0.4}, "base_acc": b,
                     "variants": {"bias": {"auto_acc": a, "auto_changed": a != b, "auto_k": 1,
                                           "acc_by_k": [a - 1, a, b], "m": 2}}})
    (row,) = acc.aggregate(recs)
    v = row["variants"]["bias"]
    assert v["auto_gain"][0] == pytest.approx(1.0) and v["auto_gain"][1] == pytest.approx(1.0)
    assert v["auto_worst_gain"] == 0.0 and v["auto_changed"] == 2
    assert v["oracle_k"] == 1 and v["gain_by_k"] == pytest.approx([0.0, 1.0, 0.0])
    assert row["base"][0] == pytest.approx(80.0)


# ------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from experiments.run_all import main

    out = tmp_path_factory.mktemp("evidence")
    assert main(["--quick", "--out", str(out), "--cache", str(out / "cache")]) == 0
    return out


@pytest.mark.slow
def test_run_all_quick_writes_the_evidence(quick_run):
    md = (quick_run / "EVIDENCE.md").read_text()
    for needle in ("## Verdict", "## Summary over every row", "## digits", "QUICK mode",
                   "figures/accuracy_auto_gain.png", "## The paper's analysis, reproduced",
                   "## Beyond the diagonal: the full-tail refit"):
        assert needle in md
    for png in ("accuracy_auto_gain.png", "accuracy_gain_vs_k_digits.png"):
        assert (quick_run / "figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (quick_run / "ANALYSIS.md").exists()


@pytest.mark.slow
def test_run_all_quick_results_hold_their_invariants(quick_run):
    res = json.loads((quick_run / "accuracy_quick.json").read_text())
    plan = acc.study_plan(quick=True)
    n_snap = sum(1 if acc.LEARNERS[ln][0] == "ridge" else 2 for ln in plan.learners)
    assert len(res["records"]) == len(plan.settings) * len(plan.seeds) * n_snap
    for r in res["records"]:
        assert 0.0 <= r["noise"]["rate_actual"] <= 1.0
        if r["setting"].startswith("sym"):
            nominal = int(r["setting"][3:]) / 100
            assert abs(r["noise"]["rate_actual"] - nominal) < 0.05
        for v, o in r["variants"].items():
            assert o["acc_by_k"][-1] == pytest.approx(r["base_acc"], abs=1e-3)  # k = m is the base model
            assert o["auto_acc"] == pytest.approx(o["acc_by_k"][o["auto_k"]], abs=1e-3)
            assert o["unguarded_acc"] == pytest.approx(o["acc_by_k"][o["unguarded_k"]], abs=1e-3)
            assert all(0.0 <= a <= 100.0 for a in o["acc_by_k"])
        assert ("cand_norm" in r["variants"]) == r["setting"].startswith("pl")
        assert not math.isnan(r["train_s"])
    assert len(res["rows"]) == len(plan.settings) * n_snap


# ------------------------------------------------------ full-tail study (issue 10)
from experiments import fulltail_study as fts  # noqa: E402
from experiments.fulltail_ref import FullTailStats, choose, default_ks, hits, predictions  # noqa: E402
from experiments.train import train_cnn  # noqa: E402


def _ls_problem(n=200, q=9, l=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, q)) + rng.normal(size=q)
    y = np.argmax(X @ rng.normal(size=(q, l)) + 0.5 * rng.normal(size=(n, l)), axis=1)  # learnable labels
    T = np.eye(l)[y]
    W = rng.normal(size=(q, l))
    b = rng.normal(size=l)
    return X, T, W, b, y


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("scale", [1.0, "logits"])
def test_full_tail_ref_is_the_ridge_least_squares_optimum(k, scale):
    X, T, W, b, _ = _ls_problem()
    st = FullTailStats(*W.shape).update(X, T)
    (k_, rho, c, Ws, bs), = st.candidates(W, b, [k], [1e-2], [scale])
    U, s, Vt = np.linalg.svd(W, full_matrices=True)
    Up, Vp, Vk = U[:, k:], Vt.T[:, k:], Vt.T[:, :k]
    Xc, Tc = X - X.mean(0), T - T.mean(0)
    lam = 1e-2 * np.trace(Xc.T @ Xc) / X.shape[1]
    C = Up.T @ Ws @ Vp
    # stationarity of min_C ||Xc Up C - c Tc Vp||^2 + lam ||C||^2
    grad = Up.T @ Xc.T @ (Xc @ Up @ C - c * Tc @ Vp) + lam * C
    assert np.abs(grad).max() < 1e-9 * max(1.0, np.abs(Xc.T @ Tc).max())
    np.testing.assert_allclose(Ws @ Vk, W @ Vk, atol=1e-12)       # kept components untouched
    np.testing.assert_allclose(Ws, U[:, :k] @ (U[:, :k].T @ Ws) + Up @ C @ Vp.T, atol=1e-12)
    np.testing.assert_allclose(bs @ Vk, b @ Vk, atol=1e-12)       # kept bias untouched
    np.testing.assert_allclose(((X @ Ws + bs) @ Vp).mean(0), c * (T @ Vp).mean(0), atol=1e-10)  # refit intercept
    if scale == "logits":
        assert c == pytest.approx(np.sum((Xc @ W) * Tc) / np.sum(Tc * Tc))
    else:
        assert c == 1.0


def test_full_tail_ref_k_equal_m_is_the_layer_itself_and_zero_is_a_ridge_head():
    X, T, W, b, _ = _ls_problem()
    st = FullTailStats(*W.shape).update(X, T)
    c = st.candidates(W, b, [4, 0], [1e-3])
    assert c[0][3] is W and c[0][4] is b
    Xc, Tc = X - X.mean(0), T - T.mean(0)
    lam = 1e-3 * np.trace(Xc.T @ Xc) / X.shape[1]
    ridge = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ Tc)
    np.testing.assert_allclose(c[1][3], ridge, atol=1e-10)
    np.testing.assert_allclose(c[1][4], T.mean(0) - X.mean(0) @ ridge, atol=1e-10)


def test_full_tail_stats_stream_and_merge_equal_one_batch():
    X, T, W, b, _ = _ls_problem()
    one = FullTailStats(*W.shape).update(X, T)
    streamed = FullTailStats(*W.shape).update(X[:70], T[:70]).update(X[70:], T[70:])
    merged = FullTailStats(*W.shape).update(X[:50], T[:50]).merge(FullTailStats(*W.shape).update(X[50:], T[50:]))
    for other in (streamed, merged):
        assert other.n == one.n
        for a, c in zip(one.candidates(W, b, [2], [1e-2]), other.candidates(W, b, [2], [1e-2])):
            np.testing.assert_allclose(a[3], c[3], atol=1e-10)


@pytest.mark.parametrize("call, message", [
    (lambda st, W, b: FullTailStats(0, 3), "q must be a positive integer; got 0"),
    (lambda st, W, b: st.update(np.zeros((3, 5)), np.zeros((3, 4))), r"X must be \(n, 9\); got \(3, 5\)"),
    (lambda st, W, b: st.update(np.zeros((3, 9)), np.zeros((2, 4))), r"T must be \(3, 4\); got \(2, 4\)"),
    (lambda st, W, b: st.update(np.full((3, 9), np.nan), np.zeros((3, 4))), "X and T must be finite"),
    (lambda st, W, b: st.merge(FullTailStats(3, 4)), r"cannot merge statistics of shape \(3, 4\) into \(9, 4\)"),
    (lambda st, W, b: st.candidates(W, b, [5], [1.0]), r"every k must be an integer in \[0, 4\]; got 5"),
    (lambda st, W, b: st.candidates(W, b, [1], [0.0]), "every rho must be a positive finite number; got 0.0"),
    (lambda st, W, b: st.candidates(W.T, b, [1], [1.0]), r"W must be \(9, 4\); got \(4, 9\)"),
    (lambda st, W, b: FullTailStats(9, 4).candidates(W, b, [1], [1.0]), "need at least 2 fit rows; have 0"),
    (lambda st, W, b: default_ks(0), "m must be a positive integer; got 0"),
])
def test_full_tail_ref_rejects_bad_input(call, message):
    X, T, W, b, _ = _ls_problem()
    st = FullTailStats(*W.shape).update(X, T)
    with pytest.raises(ValueError, match=message):
        call(st, W, b)


def test_default_ks_covers_both_ends():
    assert default_ks(10) == list(range(11))
    ks = default_ks(62)
    assert ks[0] == 0 and ks[-1] == 62 and len(ks) == 17


def test_choose_guard_keeps_the_model_without_significant_evidence():
    X, T, W, b, y = _ls_problem(n=400)
    st = FullTailStats(*W.shape).update(X[:300], T[:300])
    cands = st.candidates(W, b, default_ks(4), [1e-3, 1e-1])
    Xv, yv = X[300:], y[300:]
    base = Xv @ W + b
    free = choose(cands, 4, Xv, yv, base, confidence=None)
    guarded = choose(cands, 4, Xv, yv, base, confidence=0.95)
    # the random W is near chance; the least-squares refit on real labels beats it clearly
    assert free.changed and free.score > free.base_score
    scores = [hits(Xv @ c[3] + c[4], yv).mean() for c in cands if c[0] != 4]
    assert free.score == pytest.approx(max(scores))
    assert guarded.changed and guarded.p_value < 0.05 / guarded.n_candidates
    # with only 8 held-out rows nothing can pass a Bonferroni-corrected sign test over 10 candidates
    tiny = choose(cands, 4, Xv[:8], yv[:8], base[:8], confidence=0.95)
    assert not tiny.changed and tiny.score == tiny.base_score
    P = predictions(cands, Xv)
    again = choose(cands, 4, None, yv, base, confidence=0.95, preds=P)
    assert again.index == guarded.index
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\) or be None; got 1.5"):
        choose(cands, 4, Xv, yv, base, confidence=1.5)
    with pytest.raises(ValueError, match="held-out rows disagree: 100 labels"):
        choose(cands, 4, None, yv, base, preds=P[:, :5])


def test_hits_counts_candidate_sets():
    z = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    np.testing.assert_array_equal(hits(z, np.array([1, 2])), [1.0, 0.0])
    np.testing.assert_array_equal(hits(z, np.array([[False, True, True], [False, True, True]])), [1.0, 0.0])


def test_train_cnn_snapshots_its_head_and_rejects_bad_shapes():
    rng = np.random.default_rng(0)
    x = rng.random((64, 16 * 16), dtype=np.float32)
    C = np.eye(3, dtype=bool)[rng.integers(0, 3, 64)]
    snaps = train_cnn(x, C, {"val": x[:8], "test": x[:8]}, TrainConfig(epochs=1, batch_size=32), (16, 16), (2, 4))
    s = snaps["late"]
    assert s.W.shape == (4 * 1 * 1, 3) and s.features["val"].shape == (8, 4)
    assert set(s.forward_s) == {"train", "val", "test"} and all(v >= 0 for v in s.forward_s.values())
    t = HeadSnapshot.from_arrays(s.to_arrays("late"), "late")
    assert t.forward_s == s.forward_s
    with pytest.raises(ValueError, match=r"image_shape must be \(h, w\) with h \* w = 256 and h, w >= 16; got \(8, 32\)"):
        train_cnn(x, C, {}, TrainConfig(epochs=1), (8, 32))
    with pytest.raises(ValueError, match=r"channels must be two positive ints; got \(2, 0\)"):
        train_cnn(x, C, {}, TrainConfig(epochs=1), (16, 16), (2, 0))


def test_logreg_head_fits_separable_blobs_and_checks_inputs():
    x, y, C = _blobs()
    W, b = fts.logreg_head(x.astype(np.float64), C)
    assert accuracy(x @ W + b, y) > 95.0
    with pytest.raises(ValueError, match="need X"):
        fts.logreg_head(x, C.astype(int))


def test_evaluate_snapshot_is_consistent_with_its_candidates():
    x, y, C = _blobs(n=600, d=12, l=4)
    snap = train_mlp(x[:400], C[:400], {"val": x[400:500], "test": x[500:]}, TrainConfig(hidden=(16, 8), epochs=3))["late"]
    out = fts.evaluate_snapshot(snap, C[:400], C[400:500], y[400:500], y[500:], seed=0, clean_ns=(50, 1000))
    assert out["m"] == 4 and out["base_acc"] == pytest.approx(accuracy(snap.logits("test"), y[500:]))
    assert out["ft_oracle"]["acc"] >= max(out["base_acc"], out["ft_fixed"]["acc"], out["ridge_head"]["acc"],
                                          out["ft_auto"]["acc"], out["ft_unguarded"]["acc"]) - 1e-9
    for key in ("ft_auto", "ft_unguarded"):
        if not out[key]["changed"]:
            assert out[key]["acc"] == out["base_acc"] and out[key]["k"] == 4
    assert set(out["clean"]) == {"50"}  # 1000 > 100 held-out rows: left out
    assert out["curve_k"] == [0, 1, 2, 3, 4] and out["curve_acc"][-1] == pytest.approx(out["base_acc"])
    assert set(out["cost_s"]) == {"forward_fit", "paper_auto", "ft_stats", "ft_candidates", "ft_select", "logreg_head"}
    with pytest.raises(ValueError, match="snapshot lacks features of split 'val'"):
        fts.evaluate_snapshot(HeadSnapshot(1, snap.W, snap.b, {"train": snap.features["train"]}),
                              C[:400], C[400:500], y[400:500], y[500:], seed=0)


def _ft_row(gain, std, n=3, ds="d", st="sym40"):
    return {"dataset": ds, "setting": st, "learner": "mlp_ce", "snapshot": "late", "n_seeds": n,
            "methods": {"ft_auto": {"gain": (gain, std)}}}


def test_decide_applies_the_issues_rule():
    assert fts.decide([_ft_row(1.5, 0.4), _ft_row(0.0, 0.1)])["ft_auto"]["adopt"]
    assert not fts.decide([_ft_row(1.5, 0.4), _ft_row(-0.3, 0.1)])["ft_auto"]["adopt"]   # one harm vetoes
    assert not fts.decide([_ft_row(1.5, 1.6), _ft_row(0.0, 0.1)])["ft_auto"]["adopt"]    # not beyond one std
    assert not fts.decide([_ft_row(0.9, 0.1)])["ft_auto"]["adopt"]                     # under +1
    d = fts.decide([_ft_row(2.0, 0.1, n=2), _ft_row(0.2, 0.1)])["ft_auto"]                # two seeds do not count
    assert not d["adopt"] and d["rows"] == 1


def test_study_plans():
    full = fts.study_plan("full")
    assert full.seeds == (0, 1, 2) and [s.name for s in full.settings] == ["sym20", "sym40", "asym40", "pl30"]
    assert {(j.dataset, j.kind) for j in full.jobs} >= {("fashion-mnist", "cnn"), ("fonts", "mlp"), ("digits", "mlp")}
    assert full.cuts
    with pytest.raises(ValueError, match="mode must be 'full', 'quick' or 'tiny'; got 'big'"):
        fts.study_plan("big")


def test_fulltail_tiny_study_end_to_end(tmp_path):
    plan = fts.study_plan("tiny")
    path = tmp_path / "fulltail_tiny.json"
    res = fts.run_study(plan, cache_dir=tmp_path / "cache", log=lambda s: None, results_path=path)
    assert len(res["records"]) == len(plan.settings) * len(plan.seeds) * len(plan.jobs)
    r = res["records"][0]
    assert abs(r["noise"]["rate_actual"] - 0.4) < 0.06 and not r["cached"]
    again = fts.run_study(plan, cache_dir=tmp_path / "cache", log=lambda s: None)
    assert again["records"][0]["cached"] and again["records"][0]["base_acc"] == r["base_acc"]
    saved = json.loads(path.read_text())
    assert len(saved["rows"]) == 1 and saved["rows"][0]["methods"]["ft_auto"]["gain"][1] == 0.0
    # a re-run with the same results file reuses the evaluated records (the trained model is cached)
    resumed = fts.run_study(plan, cache_dir=tmp_path / "cache", log=lambda s: None, results_path=path)
    assert resumed["records"] == saved["records"]
    assert fts.run_study(plan, cache_dir=None, log=lambda s: None, results_path=path)["records"][0]["eval_s"] >= 0
    md = fts.report_markdown(saved, tmp_path / "figures")
    for needle in ("### Decision", "KEEP the paper-faithful default", "### Is the guard misled?",
                   "### How many clean validation labels suffice?", "### Cost", "Not run"):
        assert needle in md or needle == "Not run"
    for png in ("fulltail_gain.png", "fulltail_clean_labels.png", "fulltail_gain_vs_k.png"):
        assert (tmp_path / "figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("k", [0, 2])
def test_core_full_tail_matches_the_study_reference(k):
    from lip_agnostic import FullTailAccumulator

    X, T, W, b, _ = _ls_problem()
    core = FullTailAccumulator(W, None, bias=b, bias_mode="fit").update(X, T)
    lam = core.ridge_grid((1e-2,))[0]
    Wc, bc = core.result(k, lam)
    (_, _, _, Wr, br), = FullTailStats(*W.shape).update(X, T).candidates(W, b, [k], [1e-2])
    np.testing.assert_allclose(Wc, Wr, atol=1e-9)
    # the complement's intercept agrees; the core also recentres the kept directions' bias (by design)
    Vp = np.linalg.svd(W, full_matrices=True)[2].T[:, k:]
    np.testing.assert_allclose(bc @ Vp, br @ Vp, atol=1e-9)


def test_run_all_full_tail_stage_writes_its_section(tmp_path, monkeypatch):
    import shutil

    from experiments import run_all

    shutil.copy(acc.RESULTS_DIR / "accuracy_full.json", tmp_path / "accuracy_full.json")
    tiny = fts.study_plan("tiny")
    monkeypatch.setattr(fts, "study_plan", lambda mode: tiny)
    assert run_all.main(["--only", "full-tail", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    md = (tmp_path / "EVIDENCE.md").read_text()
    for needle in ("**Full-tail refit (issue 10, beyond the paper):**", "## Beyond the diagonal: the full-tail refit",
                   "### Decision", "Decision by the rule", "## Verdict"):
        assert needle in md
    assert json.loads((tmp_path / "fulltail_tiny.json").read_text())["records"]
    assert (tmp_path / "figures" / "fulltail_gain.png").exists()
    with pytest.raises(SystemExit, match="--only full-tail needs the accuracy study's"):
        run_all.main(["--only", "full-tail", "--out", str(tmp_path / "empty")])


def test_a_partial_run_never_replaces_the_committed_results_unless_asked(tmp_path, monkeypatch, capsys):
    import hashlib
    import shutil

    from experiments import run_all

    repo, results = tmp_path / "repo", tmp_path / "repo" / "results"
    (repo / "docs").mkdir(parents=True)
    results.mkdir()
    shutil.copy(acc.RESULTS_DIR / "accuracy_full.json", results / "accuracy_full.json")
    (repo / "docs" / "EVIDENCE.md").write_text("the committed evidence\n")
    monkeypatch.setattr(run_all, "REPO", repo)
    monkeypatch.setattr(acc, "RESULTS_DIR", results)
    monkeypatch.setattr(run_all, "PARTIAL_DIR", tmp_path / "partial")
    tiny = fts.study_plan("tiny")
    monkeypatch.setattr(fts, "study_plan", lambda mode: tiny)

    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(repo.rglob("*")) if p.is_file()}

    before = digest()
    assert run_all.main(["--only", "full-tail", "--cache", str(tmp_path / "cache")]) == 0
    assert digest() == before  # the committed files are bit-identical
    said = capsys.readouterr().out
    assert f"writes under {tmp_path / 'partial'}, not over the committed docs/" in said
    assert "## Verdict" in (tmp_path / "partial" / "EVIDENCE.md").read_text()  # read the committed accuracy JSON
    assert run_all.main(["--only", "full-tail", "--cache", str(tmp_path / "cache"), "--overwrite-committed"]) == 0
    assert "## Verdict" in (repo / "docs" / "EVIDENCE.md").read_text()  # asked in so many words: replaced
