"""The full-tail study (issue 10, beyond the paper): does a ridge refit of the whole complement help?

For every dataset x learner x noise setting x seed of the plan:

1. Corrupt **all** training labels (``experiments.accuracy.corrupt``, seeded;
   the actual rate is recorded), carve a held-out split of ``n_val`` rows from
   the training pool (its labels stay noisy; their clean labels are kept aside
   only for the clean-label and "was the guard misled" measurements), train the
   learner on the rest, and snapshot its final layer and penultimate features
   (cached under ``experiments/_cache/fulltail/``, git-ignored).
2. :func:`evaluate_snapshot` compares, on the clean test set:

   - ``base``: the model unchanged;
   - ``paper_auto``: the paper's LIP with ``rank="auto"``, ``tail="diagonal"``
     and the significance guard (``lip_agnostic.refine_batches``);
   - ``ft_fixed``: the full-tail refit at one pre-declared setting
     (:data:`FIXED`: ``k = m // 2``, ``rho = 1e-2``, logit-matched targets);
   - ``ft_auto``: full tail with ``(k, rho, scale)`` chosen on the noisy
     held-out split with the guard; ``ft_unguarded``: the same without it;
   - controls: ``ridge_head`` (``k = 0``, ``rho`` chosen on the noisy
     held-out split) and ``logreg_head`` (multinomial logistic regression
     refit on the same features and noisy labels, from zero, L-BFGS);
   - ``ft_oracle``: the best candidate on the **test** set (an upper bound,
     not a method); ``ft_clean_<N>``: guarded choice on ``N`` **clean**
     held-out labels instead of the noisy split.

   Costs are CPU seconds (``time.process_time``, one thread) next to one
   forward pass of the whole network over the fit rows.
3. :func:`aggregate` pairs the gains per seed (mean, std with ddof=1);
   :func:`decide` applies the issue's rule; :func:`report_markdown` writes the
   EVIDENCE.md section and the figures.

Example
-------
>>> from experiments.fulltail_study import study_plan
>>> plan = study_plan("quick")
>>> [j.dataset for j in plan.jobs], plan.seeds
(['digits'], (0,))
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .accuracy import PARTIAL_Q, SETTINGS, Setting, corrupt, load_dataset, DataSpec
from .fulltail_ref import hits
from .methods import accuracy
from .train import CNN_CHANNELS, HeadSnapshot, TrainConfig, candidate_loss, train_cnn, train_mlp

__all__ = ["Job", "Plan", "study_plan", "run_study", "evaluate_snapshot", "logreg_head", "aggregate", "decide",
           "report_markdown", "FIXED", "CLEAN_NS", "METHODS", "CACHE_DIR", "RESULTS_DIR"]

ROOT = Path(__file__).resolve().parent
CACHE_DIR = ROOT / "_cache" / "fulltail"
RESULTS_DIR = ROOT / "results"

#: The pre-declared fixed setting of the full-tail refit (chosen before any result, not tuned).
FIXED = {"k": "m // 2", "rho": 1e-2, "scale": "logits"}
#: Clean held-out label budgets for the clean-validation measurement.
CLEAN_NS = (50, 100, 250, 500, 1000)
#: Guard confidence (the core's default).
CONFIDENCE = 0.95
#: L2 weight (on the mean loss) and iterations of the logistic-regression head control.
LOGREG_L2, LOGREG_ITERS = 1e-4, 50
#: Version of :func:`evaluate_snapshot`'s output; a re-run reuses saved records of the same version.
EVAL_VERSION = 1
#: Methods compared (paired gains over ``base``), in table order.
METHODS = ("paper_auto", "ft_fixed", "ft_auto", "ft_auto_logits", "ft_unguarded", "ridge_head", "logreg_head",
           "ft_oracle")
METHOD_LABEL = {
    "paper_auto": "paper LIP, auto + guard (tail=\"diagonal\")",
    "ft_fixed": "full tail, fixed (k = m/2, ρ = 1e-2, logit scale)",
    "ft_auto": "full tail, auto + guard (noisy held-out)",
    "ft_auto_logits": "full tail, auto + guard, logit-scaled targets",
    "ft_unguarded": "full tail, auto, no guard",
    "ridge_head": "ridge head (k = 0), ρ on held-out",
    "logreg_head": "logistic-regression head refit",
    "ft_oracle": "full tail, best on test (oracle)",
}
#: Methods whose setting is chosen without test labels (the decision looks only at these).
AUTOMATIC = ("ft_auto", "ft_auto_logits")
HELP_POINTS, HARM_POINTS = 1.0, 0.2


@dataclass(frozen=True)
class Job:
    """One learner on one dataset, trained for every setting x seed."""

    dataset: str
    learner: str          # mlp_ce, mlp_gce, cnn_ce, cnn_gce, mlp_ce_long
    epochs: int
    batch_size: int
    n_val: int | float    # rows (int) or a fraction of the training pool (float)
    snapshot: str = "late"  # "late" (the last epoch) or "memorizing" (long training)
    settings: tuple[str, ...] | None = None  # a subset of the plan's settings (None: all)

    @property
    def kind(self) -> str:
        return self.learner.split("_")[0]

    @property
    def loss(self) -> str:
        return self.learner.split("_")[1]


@dataclass(frozen=True)
class Plan:
    """What :func:`run_study` runs: jobs in order (cheap first), settings, seeds."""

    mode: str
    jobs: tuple[Job, ...]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    limit_train: int | None = None
    hidden: tuple[int, ...] = (256, 128)
    clean_ns: tuple[int, ...] = CLEAN_NS
    cuts: tuple[str, ...] = field(default_factory=tuple)


def _settings(names) -> tuple[Setting, ...]:
    by = {s.name: s for s in SETTINGS}
    return tuple(by[n] for n in names)


def study_plan(mode: str = "full") -> Plan:
    """``"full"`` (the evidence), ``"quick"`` (digits, one seed, minutes) or ``"tiny"`` (tests: seconds)."""
    if mode == "tiny":
        return Plan("tiny", (Job("digits", "mlp_ce", 3, 128, 0.2),), _settings(["sym40"]), (0,),
                    hidden=(32, 16), clean_ns=(50, 100))
    if mode == "quick":
        return Plan("quick", (Job("digits", "mlp_ce", 20, 128, 0.2),), _settings(["sym40", "asym40"]), (0,))
    if mode != "full":
        raise ValueError(f"mode must be 'full', 'quick' or 'tiny'; got {mode!r}")
    jobs = (
        Job("digits", "mlp_ce", 40, 128, 0.2), Job("digits", "mlp_gce", 40, 128, 0.2),
        Job("digits", "mlp_ce_long", 200, 128, 0.2, "memorizing"),
        Job("fashion-mnist", "mlp_ce", 4, 256, 5000), Job("fashion-mnist", "mlp_gce", 4, 256, 5000),
        Job("fonts", "mlp_ce", 4, 256, 5000, settings=("sym40", "asym40", "pl30")),
        Job("fashion-mnist", "cnn_ce", 2, 256, 5000, settings=("sym40", "asym40", "pl30")),
        Job("fonts", "mlp_gce", 4, 256, 5000, settings=("sym40", "asym40", "pl30")),
        Job("fashion-mnist", "cnn_gce", 2, 256, 5000, settings=("sym40", "asym40", "pl30")),
    )
    cuts = (
        "CNN on Fashion-MNIST only, 2 epochs, settings sym40/asym40/pl30 (sym20 and a CNN on the font set "
        "would add ~15 CPU-min)",
        "the font set: settings sym40/asym40/pl30",
        "MLPs on the 60k-row sets train 4 epochs (batch 256); digits 40 epochs (batch 128)",
        "memorizing snapshots on digits only (MLP CE, 200 epochs); on the 60k-row sets memorizing would need "
        "~10x the CPU budget",
        "no early snapshots (the earlier study has them for the paper's refit)",
    )
    return Plan("full", jobs, _settings(["sym20", "sym40", "asym40", "pl30"]), (0, 1, 2), cuts=cuts)


# ------------------------------------------------------------------ controls
def logreg_head(X: np.ndarray, candidates: np.ndarray, l2: float = LOGREG_L2,
                max_iter: int = LOGREG_ITERS) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (candidate-set CE for partial labels) on features; returns ``(W, b)``.

    Minimises ``-mean_i log sum_{j in S_i} softmax(x_i W + b)_j + l2/2 ||W||^2`` from zero with
    SciPy's L-BFGS-B (``max_iter`` iterations, analytic gradient: ``p - p 1_S / p_S``).
    """
    from scipy.optimize import minimize

    if X.ndim != 2 or candidates.ndim != 2 or candidates.shape[0] != X.shape[0] or candidates.dtype != bool:
        raise ValueError(f"need X (n, q) and bool candidates (n, l); got {X.shape} and "
                         f"{candidates.dtype} {candidates.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)  # the products in float32, the optimiser in float64
    n, q = X.shape
    l = candidates.shape[1]
    M = candidates.astype(np.float64)

    def f(theta):
        W, b = theta[:q * l].reshape(q, l), theta[q * l:]
        Z = (X @ W.astype(np.float32)).astype(np.float64) + b
        Z -= Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        tot = E.sum(axis=1)
        cand = (E * M).sum(axis=1)
        loss = float(np.mean(np.log(tot) - np.log(cand))) + 0.5 * l2 * float(np.sum(W * W))
        G = (E / tot[:, None] - E * M / cand[:, None]) / n
        gW = (X.T @ G.astype(np.float32)).astype(np.float64) + l2 * W
        return loss, np.concatenate([gW.ravel(), G.sum(axis=0)])

    r = minimize(f, np.zeros(q * l + l), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return r.x[:q * l].reshape(q, l), r.x[q * l:]


# ---------------------------------------------------------------- evaluation
def _val_labels(C: np.ndarray):
    return np.argmax(C, axis=1) if (C.sum(axis=1) == 1).all() else C


def evaluate_snapshot(snap: HeadSnapshot, C_fit: np.ndarray, C_val: np.ndarray, y_val_clean: np.ndarray,
                      y_test: np.ndarray, seed: int, clean_ns=CLEAN_NS) -> dict:
    """Every method of the module docstring on one trained head; accuracies in percent on the clean test set.

    Needs features ``"train"`` (the fit rows), ``"val"``, ``"test"``. The full
    tail runs through the core (``lip_agnostic.FullTailAccumulator``
    and its scorer: the rank grid and ``ridge="auto"``'s grid are the core's
    defaults), once with the core's default target scale 1 and once with
    logit-matched targets (``target_scale="logits"``).
    """
    from lip_agnostic import refine_batches
    from lip_agnostic import FullTailAccumulator
    from lip_agnostic.options import DEFAULT_RIDGE_FACTORS

    for s in ("train", "val", "test"):
        if s not in snap.features:
            raise ValueError(f"snapshot lacks features of split {s!r}; has {sorted(snap.features)}")
    pt = time.process_time
    W, b = snap.W, snap.b
    Xf, Xv, Xt = (snap.features[s].astype(np.float64) for s in ("train", "val", "test"))
    q, l = W.shape
    m = min(q, l)
    T = C_fit.astype(np.float64)
    yv = _val_labels(C_val)
    base_val = Xv @ W + b
    out: dict = {"m": m, "q": q, "l": l, "base_acc": accuracy(Xt @ W + b, y_test),
                 "train_fit_acc": 100.0 * float(hits(Xf @ W + b, C_fit).mean()),
                 "cost_s": {"forward_fit": float(snap.forward_s.get("train", np.nan))}}

    c0 = pt()
    res = refine_batches(W, [(Xf, T)], rank="auto", validation=[(Xv, yv)], bias=b, tail="diagonal")
    out["cost_s"]["paper_auto"] = pt() - c0
    out["paper_auto"] = {"acc": accuracy(Xt @ res.weight + b, y_test), "k": int(res.selection.k),
                         "changed": bool(res.selection.changed)}

    Xt32 = Xt.astype(np.float32)
    test_acc = lambda Wb: 100.0 * float(np.mean(np.argmax(Xt32 @ Wb[0].astype(np.float32)  # noqa: E731
                                                          + Wb[1].astype(np.float32), axis=1) == y_test))
    base_val_clean = accuracy(base_val, y_val_clean)
    grid: dict[str, dict] = {}
    for name, ts in (("1", 1.0), ("logits", "logits")):
        c0 = pt()
        acc = FullTailAccumulator(W, None, bias=b, bias_mode="fit", target_scale=ts).update(Xf, T)
        t_stats = pt() - c0
        c0 = pt()
        sc = acc.scorer()
        t_cands = pt() - c0
        c0 = pt()
        sel = sc.update(Xv, yv).best(0.0, CONFIDENCE)
        t_sel = pt() - c0
        sel_u = sc.best(0.0, None)
        lams = sc.ridges
        rho_of = dict(zip(acc.ridge_grid(DEFAULT_RIDGE_FACTORS), DEFAULT_RIDGE_FACTORS))
        weights = {(k, lam): acc.result(k, lam) for k, lam in sc.candidates}
        accs = {kl: test_acc(Wb) for kl, Wb in weights.items()}
        grid[name] = {"acc": acc, "scorer": sc, "weights": weights, "test": accs, "rho_of": rho_of, "lams": lams,
                      "scale": float(acc.scale())}

        def picked(sl, name=name):
            if sl.ridge is None:
                return {"acc": out["base_acc"], "changed": False, "k": m, "rho": None, "scale": None,
                        "score": float(sl.base_score), "base_score": float(sl.base_score)}
            kl = (int(sl.k), float(sl.ridge))
            Wb = grid[name]["weights"][kl]
            i = grid[name]["scorer"].candidates.index(kl)
            return {"acc": grid[name]["test"][kl], "changed": True, "k": kl[0],
                    "rho": grid[name]["rho_of"].get(kl[1]), "scale": grid[name]["scale"],
                    "score": float(sl.table[grid[name]["scorer"].ks.index(kl[0])][list(sc.ridges).index(kl[1])]),
                    "base_score": float(sl.base_score), "p": float(sl.extra["p_values"][i]),
                    "val_clean_gain": accuracy(Xv @ Wb[0] + Wb[1], y_val_clean) - base_val_clean}

        grid[name]["picked"] = picked
        if name == "1":
            out["cost_s"].update({"ft_stats": t_stats, "ft_candidates": t_cands, "ft_select": t_sel})
            out["n_candidates"] = len(sc.candidates)
            out["ft_auto"] = picked(sel)
            out["ft_unguarded"] = picked(sel_u)
            # ridge head: k = 0, the ridge with the best noisy held-out score (no guard)
            row0 = sel_u.table[sc.ks.index(0)]
            lam0 = sc.ridges[int(np.argmax(row0))]
            out["ridge_head"] = {"acc": accs[(0, lam0)], "rho": rho_of.get(lam0)}
        else:
            out["ft_auto_logits"] = picked(sel)
            kf = m // 2
            lamf = acc.ridge_grid((FIXED["rho"],))[0]
            out["ft_fixed"] = {"acc": accs[(kf, lamf)] if (kf, lamf) in accs else test_acc(acc.result(kf, lamf)),
                               "k": kf}
            # the fixed-rho / logit-scale curve over k, for the figure (k = m: the base model)
            out["curve_k"] = [k for k in sc.ks]
            out["curve_acc"] = [accs[(k, lamf)] if k < m else out["base_acc"] for k in sc.ks] \
                if all((k, lamf) in accs for k in sc.ks[:-1]) else []
    best = max(((grid[n]["test"][kl], n, kl) for n in grid for kl in grid[n]["test"]), key=lambda t: t[0])
    out["ft_oracle"] = {"acc": best[0], "k": best[2][0], "rho": grid[best[1]]["rho_of"].get(best[2][1]),
                        "scale": grid[best[1]]["scale"]}
    if out["base_acc"] >= best[0]:  # leaving the layer as it is (k = m) is on the grid too
        out["ft_oracle"] = {"acc": out["base_acc"], "k": m, "rho": None, "scale": None}

    c0 = pt()
    Wl, bl = logreg_head(Xf, C_fit)
    out["cost_s"]["logreg_head"] = pt() - c0
    out["logreg_head"] = {"acc": accuracy(Xt @ Wl + bl, y_test)}

    # a few clean held-out labels instead of the noisy split (core default scale 1, guarded)
    rng = np.random.default_rng(seed + 7)
    order = rng.permutation(Xv.shape[0])
    out["clean"] = {}
    sc = grid["1"]["scorer"]
    for n in clean_ns:
        if n > Xv.shape[0]:
            continue
        idx = order[:n]
        sc.load_partial_sums(np.zeros_like(sc.partial_sums))
        out["clean"][str(n)] = grid["1"]["picked"](sc.update(Xv[idx], y_val_clean[idx]).best(0.0, CONFIDENCE))
    return out


# --------------------------------------------------------------------- study
def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _config(job: Job, plan: Plan, seed: int) -> TrainConfig:
    return TrainConfig(loss=job.loss, hidden=plan.hidden, epochs=job.epochs, batch_size=job.batch_size, seed=seed)


def _model_path(job: Job, plan: Plan, x, C, seed, cache_dir: Path | None, tag) -> Path:
    """Cache file of one trained model (its name hashes the data, labels, config and architecture)."""
    if cache_dir is None:
        return Path("/nonexistent-cache")
    arch = CNN_CHANNELS if job.kind == "cnn" else plan.hidden
    key = _key(tag, job.learner, asdict(_config(job, plan, seed)), arch, x.shape, float(x[:, :50].sum()),
               int((C * np.arange(C.shape[1])).sum()))
    return Path(cache_dir) / f"{job.dataset}-{job.learner}-{key}.npz"


def _rec_key(r: dict) -> tuple:
    return (r["dataset"], r["setting"], r["seed"], r["learner"], r["snapshot"], r["epochs"], r["n_fit"], r["n_val"])


def _train(job: Job, plan: Plan, x, C, extra, seed, image_shape, cache_dir: Path | None, tag):
    cfg = _config(job, plan, seed)
    path = None if cache_dir is None else _model_path(job, plan, x, C, seed, cache_dir, tag)
    if path is not None and path.exists():
        with np.load(path) as z:
            arrays = dict(z)
        return HeadSnapshot.from_arrays(arrays, "late"), float(arrays["meta/train_s"]), True
    c0 = time.process_time()
    if job.kind == "cnn":
        snaps = train_cnn(x, C, extra, cfg, image_shape)
    else:
        snaps = train_mlp(x, C, extra, cfg)
    train_s = time.process_time() - c0
    snap = snaps["late"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{"meta/train_s": np.asarray(train_s)}, **snap.to_arrays("late"))
        tmp.replace(path)
    return snap, train_s, False


def run_study(plan: Plan, cache_dir: Path | None = CACHE_DIR, log: Callable[[str], None] = print,
              results_path: Path | None = None) -> dict:
    """Run the plan's jobs in order; return ``{"plan", "records", ...}``.

    With ``results_path``, the JSON (records + aggregated rows) is rewritten after
    every trained model, so an interrupted run keeps what it finished; and a
    record already there (same dataset, setting, seed, learner, epochs, split
    sizes, :data:`EVAL_VERSION`) whose trained model is in ``cache_dir`` is
    reused instead of re-evaluated (a re-run with more jobs only evaluates the new ones).
    """
    t0 = time.perf_counter()
    records: list[dict] = []
    data: dict[str, object] = {}
    previous: dict[tuple, dict] = {}
    if results_path is not None and Path(results_path).exists() and cache_dir is not None:
        try:
            old = json.loads(Path(results_path).read_text())
        except (OSError, ValueError):
            old = {"records": []}
        if old.get("plan", {}).get("mode") == plan.mode:
            previous = {_rec_key(r): r for r in old.get("records", []) if r.get("eval_version", 1) == EVAL_VERSION}

    def result() -> dict:
        pd = asdict(plan)
        pd["settings"] = [s.name for s in plan.settings]
        return {"plan": pd, "records": records, "wall_s": time.perf_counter() - t0, "fixed": FIXED,
                "rhos": list(_ridge_factors()), "scales": ["1", "logits"], "confidence": CONFIDENCE,
                "logreg": {"l2": LOGREG_L2, "iters": LOGREG_ITERS}, "partial_q": PARTIAL_Q}

    for job in plan.jobs:
        if job.dataset not in data:
            data[job.dataset] = load_dataset(job.dataset, DataSpec(plan.limit_train, None, 1, 1))
        d = data[job.dataset]
        for setting in plan.settings:
            if job.settings is not None and setting.name not in job.settings:
                continue
            for seed in plan.seeds:
                C, facts = corrupt(job.dataset, d.y_train, d.n_classes, setting, seed)
                n = d.x_train.shape[0]
                n_val = int(round(job.n_val * n)) if isinstance(job.n_val, float) else int(job.n_val)
                perm = np.random.default_rng(seed + 100).permutation(n)
                vi, fi = perm[:n_val], perm[n_val:]
                extra = {"val": d.x_train[vi], "test": d.x_test}
                t1 = time.perf_counter()
                tag = (job.dataset, setting.name, seed, plan.mode, plan.limit_train)
                prev = previous.get((job.dataset, setting.name, seed, job.learner, job.snapshot, job.epochs,
                                     int(fi.shape[0]), n_val))
                if prev is not None and _model_path(job, plan, d.x_train[fi], C[fi], seed, cache_dir, tag).exists():
                    records.append(prev)
                    continue
                snap, train_s, cached = _train(job, plan, d.x_train[fi], C[fi], extra, seed, d.image_shape, cache_dir, tag)
                c0 = time.process_time()
                ev = evaluate_snapshot(snap, C[fi], C[vi], d.y_train[vi], d.y_test, seed, plan.clean_ns)
                rec = {"eval_version": EVAL_VERSION,
                       "dataset": job.dataset, "setting": setting.name, "seed": seed, "learner": job.learner,
                       "snapshot": job.snapshot, "epochs": job.epochs, "noise": facts, "train_s": train_s,
                       "cached": cached, "eval_s": time.process_time() - c0, "n_fit": int(fi.shape[0]),
                       "n_val": n_val, "n_test": int(d.x_test.shape[0]), **ev}
                records.append(rec)
                log(f"[{time.perf_counter() - t0:7.1f}s] {job.dataset} {setting.name} s{seed} {job.learner} "
                    f"train {train_s:.0f}s{' (cache)' if cached else ''} eval {rec['eval_s']:.0f}s "
                    f"({time.perf_counter() - t1:.0f}s wall) base={ev['base_acc']:.2f} paper={ev['paper_auto']['acc']:.2f} "
                    f"ft_auto={ev['ft_auto']['acc']:.2f} (k={ev['ft_auto']['k']}) unguarded={ev['ft_unguarded']['acc']:.2f} "
                    f"ridge={ev['ridge_head']['acc']:.2f} logreg={ev['logreg_head']['acc']:.2f} oracle={ev['ft_oracle']['acc']:.2f}")
                if results_path is not None:
                    save_results(result(), results_path)
    return result()


def _ridge_factors() -> tuple[float, ...]:
    from lip_agnostic.options import DEFAULT_RIDGE_FACTORS

    return DEFAULT_RIDGE_FACTORS


def save_results(result: dict, path: Path) -> Path:
    """Write the study's JSON (records + aggregated rows), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = dict(result, rows=aggregate(result["records"]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=float))
    tmp.replace(path)
    return path


# ----------------------------------------------------------------- aggregate
def _ms(v) -> tuple[float, float]:
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def aggregate(records: list[dict]) -> list[dict]:
    """Mean/std over seeds per (dataset, setting, learner, snapshot) of every method's paired gain."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["setting"], r["learner"], r["snapshot"]), []).append(r)
    rows = []
    for (ds, st, ln, sn), rs in groups.items():
        base = np.array([r["base_acc"] for r in rs])
        row = {"dataset": ds, "setting": st, "learner": ln, "snapshot": sn, "n_seeds": len(rs),
               "seeds": [r["seed"] for r in rs], "epochs": rs[0]["epochs"], "m": rs[0]["m"], "q": rs[0]["q"],
               "noise_actual": _ms([r["noise"]["rate_actual"] for r in rs]), "base": _ms(base),
               "train_fit": _ms([r["train_fit_acc"] for r in rs]), "methods": {}, "clean": {}}
        for meth in METHODS:
            # the oracle may also leave the layer as it is (k = m)
            g = np.array([max(r[meth]["acc"], r["base_acc"]) if meth == "ft_oracle" else r[meth]["acc"]
                          for r in rs]) - base
            d = {"gain": _ms(g), "worst_seed": float(g.min())}
            if "changed" in rs[0][meth]:
                d["changed"] = int(sum(r[meth]["changed"] for r in rs))
                d["hurt_seeds"] = int(sum(r[meth]["changed"] and r[meth]["acc"] < r["base_acc"] for r in rs))
            row["methods"][meth] = d
        for n in rs[0]["clean"]:
            if all(n in r["clean"] for r in rs):
                g = np.array([r["clean"][n]["acc"] for r in rs]) - base
                row["clean"][n] = {"gain": _ms(g), "worst_seed": float(g.min()),
                                   "changed": int(sum(r["clean"][n]["changed"] for r in rs))}
        curves = [r["curve_acc"] for r in rs]
        if len({len(c) for c in curves}) == 1:
            row["curve_k"] = rs[0]["curve_k"]
            row["curve_gain"] = list((np.asarray(curves) - base[:, None]).mean(axis=0))
        row["cost_s"] = {k: float(np.nanmean([r["cost_s"][k] for r in rs])) for k in rs[0]["cost_s"]}
        rows.append(row)
    return rows


def helps(ms) -> bool:
    """Mean gain >= 1 point and above its std over seeds."""
    return ms[0] >= HELP_POINTS and ms[0] > ms[1]


def harms(ms) -> bool:
    """Mean gain below -0.2 points."""
    return ms[0] < -HARM_POINTS


def decide(rows: list[dict]) -> dict:
    """The issue's rule, applied to the automatic full-tail method(s) over every row.

    Adopt a method for the faces' automatic mode iff it **helps** (mean of the
    seeds >= +1 point and beyond one std) in at least one row and **harms**
    (mean < -0.2) in none. Rows need all of the plan's seeds (3) to count.
    """
    out = {}
    for meth in AUTOMATIC:
        rs = [r for r in rows if meth in r["methods"] and r["n_seeds"] >= 3]
        help_rows = [r for r in rs if helps(r["methods"][meth]["gain"])]
        harm_rows = [r for r in rs if harms(r["methods"][meth]["gain"])]
        out[meth] = {"rows": len(rs), "help": [_where(r) for r in help_rows], "harm": [_where(r) for r in harm_rows],
                     "adopt": bool(rs) and bool(help_rows) and not harm_rows,
                     "worst": min((r["methods"][meth]["gain"][0] for r in rs), default=float("nan")),
                     "mean": float(np.mean([r["methods"][meth]["gain"][0] for r in rs])) if rs else float("nan")}
    return out


def _where(r) -> str:
    return f"{r['dataset']} {r['setting']} {r['learner']} {r['snapshot']}"


# -------------------------------------------------------------------- report
LEARNER_LABEL = {"mlp_ce": "MLP CE", "mlp_gce": "MLP GCE", "cnn_ce": "CNN CE", "cnn_gce": "CNN GCE",
                 "mlp_ce_long": "MLP CE, long"}


def _fmt(ms, signed=True) -> str:
    m, s = ms
    return (f"{m:+.1f}" if signed else f"{m:.1f}") + f" ± {s:.1f}"


def _cell(ms) -> str:
    c = _fmt(ms)
    return f"**{c}**" if helps(ms) else f"_{c}_" if harms(ms) else c


def _noise(r) -> str:
    m, s = r["noise_actual"]
    return f"{100 * m:.1f}% of wrong classes" if r["setting"].startswith("pl") else f"{100 * m:.1f} ± {100 * s:.1f}%"


def summary_table(rows: list[dict]) -> str:
    """One line per method over every row: mean gain, worst row, worst seed, rows that help / harm."""
    out = ["| method | rows | mean gain | worst row (mean) | worst seed | helps (≥ +1, > std) | harms (< −0.2) "
           "| seeds changed / of them worse on test |", "|---|---|---|---|---|---|---|---|"]
    for meth in METHODS:
        rs = [r for r in rows if meth in r["methods"]]
        if not rs:
            continue
        g = [r["methods"][meth]["gain"] for r in rs]
        w = min(rs, key=lambda r: r["methods"][meth]["gain"][0])
        ch = (f"{sum(r['methods'][meth]['changed'] for r in rs)} / {sum(r['methods'][meth]['hurt_seeds'] for r in rs)}"
              if "changed" in rs[0]["methods"][meth] else "—")
        out.append(f"| {METHOD_LABEL[meth]} | {len(rs)} | {np.mean([x[0] for x in g]):+.2f} | "
                   f"{w['methods'][meth]['gain'][0]:+.2f} ({_where(w)}) | "
                   f"{min(r['methods'][meth]['worst_seed'] for r in rs):+.2f} | {sum(helps(x) for x in g)} | "
                   f"{sum(harms(x) for x in g)} | {ch} |")
    return "\n".join(out)


def dataset_table(rows: list[dict], dataset: str) -> str:
    """Per dataset: base accuracy and every method's paired gain (points; **bold** helps, _italic_ harms)."""
    rs = [r for r in rows if r["dataset"] == dataset]
    if not rs:
        return ""
    head = ("| setting | actual noise | learner | snapshot | seeds | fits noisy train labels | base acc | "
            + " | ".join(METHOD_LABEL[m] for m in METHODS) + " |")
    out = [head, "|" + "---|" * (7 + len(METHODS))]
    for r in sorted(rs, key=lambda r: (r["learner"], r["setting"])):
        out.append(f"| {r['setting']} | {_noise(r)} | {LEARNER_LABEL.get(r['learner'], r['learner'])} | "
                   f"{r['snapshot']} ({r['epochs']} ep) | {r['n_seeds']} | {r['train_fit'][0]:.0f}% | {_fmt(r['base'], False)} | "
                   + " | ".join(_cell(r["methods"][m]["gain"]) for m in METHODS) + " |")
    return "\n".join(out)


def guard_table(records: list[dict]) -> str:
    """Per setting: how often the guarded / unguarded automatic full tail changed the head and what it cost."""
    out = ["| setting | choice on | seeds | changed | changed & worse on test | changed & < −0.2 on test "
           "| changed & worse on the held-out rows' clean labels | mean test gain when changed |",
           "|---|---|---|---|---|---|---|---|"]
    for st in dict.fromkeys(r["setting"] for r in records):
        rs = [r for r in records if r["setting"] == st]
        for meth, label in (("ft_auto", "noisy held-out, guard"), ("ft_auto_logits", "noisy held-out, guard, logit scale"),
                            ("ft_unguarded", "noisy held-out, no guard")):
            ch = [r for r in rs if r[meth]["changed"]]
            g = [r[meth]["acc"] - r["base_acc"] for r in ch]
            out.append(f"| {st} | {label} | {len(rs)} | {len(ch)} | {sum(x < 0 for x in g)} | "
                       f"{sum(x < -HARM_POINTS for x in g)} | {sum(r[meth]['val_clean_gain'] < 0 for r in ch)} | "
                       + (f"{np.mean(g):+.2f}" if g else "—") + " |")
    return "\n".join(out)


def picks_table(records: list[dict]) -> str:
    """What the automatic full tail chose when it changed the head: the kept rank k and the ridge factor ρ."""
    out = ["| method | seeds | changed | of them k = 0 (a ridge head) | 0 < k < m | ρ chosen (count) |",
           "|---|---|---|---|---|---|"]
    for meth in ("ft_auto", "ft_auto_logits", "ft_unguarded"):
        ch = [r[meth] for r in records if r[meth]["changed"]]
        rhos: dict = {}
        for c in ch:
            rhos[c["rho"]] = rhos.get(c["rho"], 0) + 1
        out.append(f"| {METHOD_LABEL[meth]} | {len(records)} | {len(ch)} | {sum(c['k'] == 0 for c in ch)} | "
                   f"{sum(c['k'] > 0 for c in ch)} | "
                   + (", ".join(f"{k:g}: {v}" for k, v in sorted(rhos.items(), key=lambda t: t[0] or 0)) or "—") + " |")
    return "\n".join(out)


def clean_table(rows: list[dict], records: list[dict]) -> str:
    """Per clean-label budget N: guarded full tail chosen on N clean held-out labels, over the rows that have N."""
    ns = sorted({int(n) for r in rows for n in r["clean"]})
    out = ["| clean labels N | rows | mean gain | worst row (mean) | worst seed | helps | harms | seeds changed "
           "| asym40 rows: mean gain |", "|---|---|---|---|---|---|---|---|---|"]
    base = [r for r in rows if r["n_seeds"] >= 1]
    out.append("| (noisy held-out, for reference) | "
               f"{len(base)} | {np.mean([r['methods']['ft_auto']['gain'][0] for r in base]):+.2f} | "
               f"{min(r['methods']['ft_auto']['gain'][0] for r in base):+.2f} | "
               f"{min(r['methods']['ft_auto']['worst_seed'] for r in base):+.2f} | "
               f"{sum(helps(r['methods']['ft_auto']['gain']) for r in base)} | "
               f"{sum(harms(r['methods']['ft_auto']['gain']) for r in base)} | "
               f"{sum(r['methods']['ft_auto']['changed'] for r in base)} | "
               + _asym_mean([r['methods']['ft_auto']['gain'][0] for r in base if r['setting'] == 'asym40']) + " |")
    for n in ns:
        rs = [r for r in rows if str(n) in r["clean"]]
        g = [r["clean"][str(n)]["gain"] for r in rs]
        out.append(f"| {n} | {len(rs)} | {np.mean([x[0] for x in g]):+.2f} | {min(x[0] for x in g):+.2f} | "
                   f"{min(r['clean'][str(n)]['worst_seed'] for r in rs):+.2f} | {sum(helps(x) for x in g)} | "
                   f"{sum(harms(x) for x in g)} | {sum(r['clean'][str(n)]['changed'] for r in rs)} | "
                   + _asym_mean([r['clean'][str(n)]['gain'][0] for r in rs if r['setting'] == 'asym40']) + " |")
    return "\n".join(out)


def _asym_mean(v) -> str:
    return f"{np.mean(v):+.2f} ({len(v)} rows)" if v else "—"


def cost_table(records: list[dict]) -> str:
    """CPU seconds per (dataset, learner), mean over its records, next to one forward pass over the fit rows."""
    out = ["| dataset | learner | fit rows | q × l | forward pass, fit rows (s) | full tail: stats / candidates / choice (s) "
           "| full tail total (× forward) | paper LIP auto (s, × forward) | logistic-regression head (s, × forward) |",
           "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["learner"]), []).append(r)
    for (ds, ln), rs in groups.items():
        c = {k: float(np.nanmean([r["cost_s"][k] for r in rs])) for k in rs[0]["cost_s"]}
        f = c["forward_fit"]
        ft = c["ft_stats"] + c["ft_candidates"] + c["ft_select"]
        x = lambda v: f"{v / f:.1f}×" if f > 0 else "—"  # noqa: E731
        out.append(f"| {ds} | {LEARNER_LABEL.get(ln, ln)} | {rs[0]['n_fit']} | {rs[0]['q']} × {rs[0]['l']} | {f:.2f} | "
                   f"{c['ft_stats']:.2f} / {c['ft_candidates']:.2f} / {c['ft_select']:.2f} | {ft:.2f} ({x(ft)}) | "
                   f"{c['paper_auto']:.2f} ({x(c['paper_auto'])}) | {c['logreg_head']:.2f} ({x(c['logreg_head'])}) |")
    return "\n".join(out)


def make_figures(rows: list[dict], fig_dir: Path) -> list[Path]:
    """``fulltail_gain.png`` (every method's gain per row), ``fulltail_clean_labels.png``, ``fulltail_gain_vs_k.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    markers = {"digits": "o", "fashion-mnist": "s", "fonts": "^"}
    colors = {"digits": "C0", "fashion-mnist": "C1", "fonts": "C2"}
    fig, ax = plt.subplots(figsize=(13, 5))
    rng = np.random.default_rng(0)
    for i, meth in enumerate(METHODS):
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            g = [r["methods"][meth]["gain"][0] for r in rows if r["dataset"] == ds]
            ax.scatter(i + rng.uniform(-0.25, 0.25, len(g)), g, s=16, marker=markers.get(ds, "x"),
                       color=colors.get(ds, "C3"), alpha=0.75, label=ds if i == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(-HARM_POINTS, color="r", lw=0.6, ls="--", label="−0.2 budget")
    ax.axhline(HELP_POINTS, color="g", lw=0.6, ls="--", label="+1 target")
    ax.set_xticks(range(len(METHODS)), [METHOD_LABEL[m].replace(", ", ",\n", 1) for m in METHODS], fontsize=8)
    ax.set_ylabel("mean paired gain over the base (points)")
    ax.set_title("Clean-test gain per (dataset, setting, learner, snapshot), mean over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = fig_dir / "fulltail_gain.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)

    ns = sorted({int(n) for r in rows for n in r["clean"]})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for st in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == st]
        xs = [n for n in ns if any(str(n) in r["clean"] for r in rs)]
        ys = [np.mean([r["clean"][str(n)]["gain"][0] for r in rs if str(n) in r["clean"]]) for n in xs]
        ax.plot(xs, ys, marker="o", label=f"{st}: N clean labels")
        ax.axhline(np.mean([r["methods"]["ft_auto"]["gain"][0] for r in rs]), ls=":", lw=0.8,
                   color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("clean held-out labels used to choose (k, ρ, scale), guarded")
    ax.set_ylabel("mean gain over rows (points)")
    ax.set_title("Full tail chosen on N clean labels (dotted: on the noisy held-out split)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = fig_dir / "fulltail_clean_labels.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)

    combos = list(dict.fromkeys((r["dataset"], r["learner"]) for r in rows))
    ncol = 3
    nrow = max(1, -(-len(combos) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(13, 3.4 * nrow), squeeze=False)
    for ax, (ds, ln) in zip(axes.ravel(), combos):
        for r in rows:
            if (r["dataset"], r["learner"]) == (ds, ln) and "curve_gain" in r:
                ax.plot(np.asarray(r["curve_k"]) / r["m"], r["curve_gain"], marker=".", label=r["setting"])
        ax.axhline(0, color="k", lw=0.8)
        ax.axhline(HELP_POINTS, color="g", lw=0.6, ls="--")
        ax.set_title(f"{ds}, {LEARNER_LABEL.get(ln, ln)}", fontsize=9)
        ax.set_xlabel("k / m (k = m: unchanged)")
        ax.set_ylabel("gain (points)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(combos):]:
        ax.axis("off")
    fig.suptitle(f"Full tail at fixed ρ = {FIXED['rho']:g}, logit-matched targets: mean gain over seeds vs k")
    fig.tight_layout()
    p = fig_dir / "fulltail_gain_vs_k.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    return paths


def adopted(rows: list[dict]) -> list[str]:
    """The automatic full-tail methods that :func:`decide` adopts (empty: keep today's default)."""
    return [m for m, d in decide(rows).items() if d["adopt"]]


def decision_text(rows: list[dict]) -> str:
    """The decision, as sentences derived from :func:`decide` (the rule in its docstring)."""
    dd = decide(rows)
    lines = [f"- Rule (issue 10): adopt the full tail for the faces' automatic mode iff an automatic setting of it "
             f"gains ≥ {HELP_POINTS:g} point (mean of 3 seeds, beyond one std) in at least one row and costs more than "
             f"{HARM_POINTS:g} points in none. Automatic = (k, λ) chosen on the **noisy** held-out split with the "
             "significance guard: what a face has without clean labels."]
    for meth, d in dd.items():
        lines.append(f"- `{meth}` ({METHOD_LABEL[meth]}), over {d['rows']} rows with 3 seeds: mean gain {d['mean']:+.2f}, "
                     f"worst row {d['worst']:+.2f}; {len(d['help'])} row(s) help"
                     + (f" ({'; '.join(d['help'][:10])}{'; …' if len(d['help']) > 10 else ''})" if d["help"] else "")
                     + f"; {len(d['harm'])} row(s) harm" + (f" ({'; '.join(d['harm'])})" if d["harm"] else "")
                     + f" → {'meets' if d['adopt'] else 'does not meet'} the rule.")
    ad = adopted(rows)
    lines.append(f"- **Decision by the rule: {'ADOPT ' + ', '.join(f'`{a}`' for a in ad) if ad else 'KEEP the paper-faithful default'}.**"
                 + (" Shipped as `tail=\"auto\"`, the default of `refine_batches`, every face and `lip-onnx`: the guarded "
                    "full tail for `rank=\"auto\"`, the paper's refit for a fixed rank "
                    "(`lip_agnostic.options.LIPOptions.plan`)." if ad else ""))
    return "\n".join(lines)


def report_markdown(result: dict, fig_dir: Path, discussion: str | None = None, fig_prefix: str = "figures") -> str:
    """The EVIDENCE.md section of the full-tail study (tables, figures, decision)."""
    records = result["records"]
    rows = result.get("rows") or aggregate(records)
    plan = result["plan"]
    figs = make_figures(rows, fig_dir)
    done = {(r["dataset"], r["learner"]) for r in records}
    planned = [(j["dataset"], j["learner"]) for j in plan["jobs"]]
    missing = [f"{ds} {ln}" for ds, ln in planned if (ds, ln) not in done]
    train_min = sum(r["train_s"] for r in records) / 60
    eval_min = sum(r["eval_s"] for r in records) / 60
    L = ["## Beyond the diagonal: the full-tail refit (issue 10, beyond the paper)\n"]
    L.append(
        "The paper's LAP refits only the tail's singular values along the tail's own directions. The **full-tail** "
        "variant (beyond the paper) keeps the top-k principal components of the trained head exactly and refits the "
        "whole complement by ridge least squares against the labels: `C = (G + λI)⁻¹ R` in the `U⊥`/`V⊥` basis with "
        "centred features and targets and a refit bias on the complement; `k = 0` is a ridge head, `k = m` the "
        "unchanged layer. "
        f"Generated by `python -m experiments.run_all` (its full-tail stage, `experiments/fulltail_study.py`; "
        f"{plan['mode']} plan); {len(records)} trained models: training took {train_min:.1f} CPU-min and evaluating "
        f"every method {eval_min:.1f} CPU-min (one thread, `time.process_time`, on a 2-core machine shared with other "
        "jobs; a re-run reuses the cached models and the saved records). "
        f"Raw per-seed records: `experiments/results/fulltail_{plan['mode']}.json`.\n")
    L.append("### Decision\n")
    L.append(decision_text(rows) + "\n")
    if discussion:
        L.append(discussion.strip() + "\n")
    L.append("### Setup\n")
    sizes = []
    for ds in dict.fromkeys(r["dataset"] for r in records):
        r = next(r for r in records if r["dataset"] == ds)
        sizes.append(f"- **{ds}**: {r['n_fit']} training rows (noisy), {r['n_val']} held-out rows carved from the "
                     f"training pool (noisy), {r['n_test']} clean test rows; {r['l']} classes.")
    L.append("\n".join(sizes))
    jobs = "; ".join(f"{j['dataset']} {LEARNER_LABEL.get(j['learner'], j['learner'])} {j['epochs']} epochs "
                     f"(batch {j['batch_size']}, {j['snapshot']}"
                     + (f", {'/'.join(j['settings'])} only" if j.get("settings") else "") + ")" for j in plan["jobs"])
    L.append(
        f"- Jobs: {jobs}. MLP `{'-'.join(map(str, plan['hidden']))}` (ReLU); CNN: two 5×5 convolutions "
        f"({'/'.join(map(str, CNN_CHANNELS))} channels, ReLU, 2×2 max-pool each), flatten (q = {CNN_CHANNELS[1] * 16}), "
        "linear head. Adam lr 1e-3. CE, or GCE (q = 0.7); partial labels: the candidate-set forms.\n"
        f"- Noise: {', '.join(plan['settings'])}; partial labels: each wrong class a candidate with probability "
        f"q = {result['partial_q']} (per dataset). Actual rates in every table. Seeds {plan['seeds']} "
        "(noise draw, split, initialisation); mean ± std over seeds (ddof=1); every gain is **paired** (method minus "
        "the unchanged model, same seed), in points of clean-test accuracy.\n"
        f"- Full tail through the core (`lip_agnostic.FullTailAccumulator` and its scorer, bias_mode "
        f"\"fit\": centred X and T, refit bias): the core's rank grid (every k when m ≤ 15, else 15 ranks dense near "
        f"the top) × `ridge=\"auto\"`'s grid ρ ∈ {result['rhos']} (λ = ρ · tr(S)/q, S the centred Gram); targets the "
        "labels as given (scale 1, the core's default: `ft_auto`) or logit-matched (`target_scale=\"logits\"`: "
        f"`ft_auto_logits`). Guard: the core's sign test on paired wins/losses against the unchanged model at "
        f"confidence {result['confidence']}, Bonferroni over the candidates. Pre-declared fixed setting: {FIXED} "
        f"(chosen before any result). Controls: ridge head "
        f"(k = 0, ρ by noisy held-out score, no guard) and a logistic-regression head refit from zero on the same "
        f"features and noisy labels (L-BFGS, {result['logreg']['iters']} iterations, L2 {result['logreg']['l2']:g}).\n"
        "- `experiments/fulltail_ref.py` is the study's own closed form of the same refit; the tests check the "
        "core against it.\n")
    if plan.get("cuts"):
        L.append("**Cut from the issue's full grid to fit the CPU budget** (2 shared cores): "
                 + "; ".join(plan["cuts"]) + ".\n")
    if missing:
        L.append(f"**Not run** (the budget ran out before these jobs): {', '.join(missing)}.\n")
    L.append("### Summary over every row\n")
    L.append("Row = dataset × setting × learner × snapshot. *helps*: mean gain ≥ +1 and above its std; *harms*: mean "
             "gain < −0.2. *oracle*: best grid point on the **test** set (an upper bound, not a method).\n")
    L.append(summary_table(rows) + "\n")
    L.append(f"![gain per row]({fig_prefix}/fulltail_gain.png)\n")
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        L.append(f"### {ds}\n")
        L.append(dataset_table(rows, ds) + "\n")
    L.append(f"![full tail vs k]({fig_prefix}/fulltail_gain_vs_k.png)\n")
    L.append("### What the automatic choice picked\n")
    L.append(picks_table(records) + "\n")
    L.append("### Is the guard misled? (noisy held-out labels, per seed)\n")
    L.append("A change is *misled* when the noisy held-out labels passed it but the clean test set says it is worse. "
             "The last-but-one column checks the same choice against the held-out rows' own clean labels.\n")
    L.append(guard_table(records) + "\n")
    L.append("### How many clean validation labels suffice?\n")
    L.append("The guarded choice of (k, ρ, scale) made on N **clean** labels (a seeded subset of the held-out rows, "
             "true labels) instead of the noisy held-out split. Rows with fewer held-out rows than N are left out.\n")
    L.append(clean_table(rows, records) + "\n")
    L.append(f"![clean labels]({fig_prefix}/fulltail_clean_labels.png)\n")
    L.append("### Cost\n")
    L.append("CPU seconds (`time.process_time`, one thread), mean per model, next to **one forward pass of the whole "
             "network over the fit rows** (what extracting the features costs anyway). Full tail = accumulating "
             "XᵀX, XᵀT, sums over the fit rows + one eigendecomposition per k and every (k, ρ, scale) refit + scoring "
             "every candidate on the held-out split.\n")
    L.append(cost_table(records) + "\n")
    L.append("Figures: " + ", ".join(f"`figures/{p.name}`" for p in figs) + ".\n")
    return "\n".join(L)
