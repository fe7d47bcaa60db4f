"""The accuracy study: base learners with and without LIP, under label noise, on real data.

For every dataset x noise setting x seed:

1. Corrupt the training labels with ``lip_agnostic.noise`` (seeded); record the
   ACTUAL noise rate.
2. Split the noisy training pool into a fit split and a held-out split
   (``val_fraction``; its labels stay noisy — nobody has clean labels).
3. Train every learner of :data:`LEARNERS` on the fit split (cached under
   ``experiments/_cache/``), snapshot its final layer early and late.
4. Evaluate every LIP variant of :data:`experiments.methods.VARIANTS` on every
   snapshot (:func:`experiments.methods.evaluate_variant`): clean-test accuracy
   for each fixed ``k`` and for ``rank="auto"``.

The raw per-seed records go to ``experiments/results/accuracy_<mode>.json``;
:func:`aggregate` turns them into mean/std rows.

Example
-------
>>> from experiments.accuracy import study_plan
>>> plan = study_plan(quick=True)
>>> plan.datasets, len(plan.seeds)
(('digits',), 1)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .methods import VARIANTS, accuracy, evaluate_variant
from .train import HeadSnapshot, TrainConfig, train_linear, train_mlp

__all__ = ["Setting", "StudyPlan", "SETTINGS", "LEARNERS", "study_plan", "run_study", "aggregate",
           "load_dataset", "CACHE_DIR", "RESULTS_DIR"]

ROOT = Path(__file__).resolve().parent
CACHE_DIR = ROOT / "_cache"
RESULTS_DIR = ROOT / "results"

#: Rank used by the periodic principal-subspace projection during training
#: (an energy fraction, see ``lip_agnostic.energy_rank``).
PROJECTION_ENERGY = 0.9
#: Ridge coefficient of the linear least-squares learner, per training row.
RIDGE_LAMBDA_PER_ROW = 1e-2


@dataclass(frozen=True)
class Setting:
    """A label-corruption setting: ``kind`` in {"symmetric", "asymmetric", "partial"} and its rate/q."""

    kind: str
    rate: float

    @property
    def name(self) -> str:
        short = {"symmetric": "sym", "asymmetric": "asym", "partial": "pl"}[self.kind]
        return f"{short}{round(100 * self.rate)}"


#: The noise settings of the study (partial labels: q per dataset, see :data:`PARTIAL_Q`).
SETTINGS: tuple[Setting, ...] = (
    Setting("symmetric", 0.2), Setting("symmetric", 0.4), Setting("symmetric", 0.6),
    Setting("asymmetric", 0.4), Setting("partial", 0.3),
)
#: Partial-label q per dataset: 0.3 for ten classes; 0.1 for 62 classes (0.3 would give ~19 candidates).
PARTIAL_Q = {"digits": 0.3, "fashion-mnist": 0.3, "fonts": 0.1}

#: Learners: name -> (kind, loss, periodic projection).
LEARNERS: dict[str, tuple[str, str, bool]] = {
    "mlp_ce": ("mlp", "ce", False),
    "mlp_gce": ("mlp", "gce", False),
    "mlp_ce_psp": ("mlp", "ce", True),
    "logreg": ("linear", "ce", False),
    "ridge": ("ridge", "-", False),
    "mlp_ce_long": ("mlp", "ce", False),
}
#: ``mlp_ce_long`` trains this many epochs, long enough to memorize the noisy labels; only on
#: these datasets (CPU budget: the larger sets would need ~10x the training time).
LONG_EPOCHS = {"digits": 200}


@dataclass(frozen=True)
class DataSpec:
    """How much of a dataset is used and how long its learners train."""

    limit_train: int | None
    limit_test: int | None
    mlp_epochs: int
    linear_epochs: int
    hidden: tuple[int, ...] = (256, 128)


@dataclass(frozen=True)
class StudyPlan:
    """What :func:`run_study` runs."""

    mode: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: tuple[Setting, ...]
    learners: tuple[str, ...]
    data: dict[str, DataSpec] = field(default_factory=dict)
    val_fraction: float = 0.2


def study_plan(quick: bool = False, datasets: tuple[str, ...] | None = None) -> StudyPlan:
    """The quick plan (digits, one seed) or the full plan (all datasets available, three seeds)."""
    if quick:
        data = {"digits": DataSpec(None, None, mlp_epochs=30, linear_epochs=30)}
        settings = tuple(s for s in SETTINGS if s.name in ("sym40", "asym40", "pl30"))
        learners = tuple(n for n in LEARNERS if n != "mlp_ce_long")
        return StudyPlan("quick", ("digits",), (0,), settings, learners, data)
    data = {
        "digits": DataSpec(None, None, mlp_epochs=40, linear_epochs=40),
        "fashion-mnist": DataSpec(6000, 3000, mlp_epochs=16, linear_epochs=16),
        "fonts": DataSpec(6000, 3000, mlp_epochs=16, linear_epochs=16),
    }
    names = tuple(n for n in (datasets or tuple(data)) if dataset_available(n))
    return StudyPlan("full", names, (0, 1, 2), SETTINGS, tuple(LEARNERS), data)


def dataset_available(name: str) -> bool:
    """Whether the dataset can be loaded here (Fashion-MNIST needs the Debian package, fonts part A's loader)."""
    try:
        load_dataset(name, DataSpec(64, 64, 1, 1))
    except (FileNotFoundError, ImportError, RuntimeError, OSError):
        return False
    return True


def load_dataset(name: str, spec: DataSpec):
    """Load ``name`` (digits / fashion-mnist / fonts) with the spec's subset sizes."""
    from . import datasets as ds

    if name == "digits":
        d = ds.load_digits()
    elif name == "fashion-mnist":
        d = ds.load_fashion_mnist(limit_train=spec.limit_train, limit_test=spec.limit_test)
    elif name == "fonts":
        if not hasattr(ds, "load_fonts"):
            raise ImportError("experiments.datasets.load_fonts is not available yet")
        d = ds.load_fonts()
    else:
        raise ValueError(f"unknown dataset {name!r}; expected digits, fashion-mnist or fonts")
    return _subset(d, spec)


def _subset(d, spec: DataSpec):
    """First ``limit`` rows of a seeded permutation (the loaders' own order may be sorted by class)."""
    from dataclasses import replace as dc_replace

    out = {}
    for split, limit in (("train", spec.limit_train), ("test", spec.limit_test)):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        if limit is not None and limit < x.shape[0]:
            idx = np.random.default_rng(1234).permutation(x.shape[0])[:limit]
            x, y = x[idx], y[idx]
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return dc_replace(d, **out)


# ----------------------------------------------------------------- corruption
def corrupt(name: str, y: np.ndarray, n_classes: int, setting: Setting, seed: int) -> tuple[np.ndarray, dict]:
    """Candidate masks ``(n, l)`` bool for the setting, plus facts about the corruption."""
    from lip_agnostic import noise

    if setting.kind == "symmetric":
        r = noise.symmetric_noise(y, setting.rate, n_classes, seed=seed)
    elif setting.kind == "asymmetric":
        if name == "fonts":  # the font map lives with the dataset, not in the core
            from .fonts import FONT_CLASS_MAP

            r = noise.asymmetric_noise(y, setting.rate, FONT_CLASS_MAP, n_classes=n_classes, seed=seed)
        else:
            r = noise.asymmetric_noise(y, setting.rate, name, seed=seed)
    elif setting.kind == "partial":
        q = PARTIAL_Q.get(name, setting.rate)
        p = noise.partial_labels(y, q, n_classes, seed=seed)
        wrong_only = float(np.mean(p.candidates.sum(axis=1) > 1))
        return p.candidates.copy(), {"summary": p.summary(), "rate_actual": p.rate_actual, "q": q,
                                     "avg_candidates": p.avg_candidates, "ambiguous_fraction": wrong_only}
    else:
        raise ValueError(f"unknown setting kind {setting.kind!r}")
    C = np.zeros((y.shape[0], n_classes), dtype=bool)
    C[np.arange(y.shape[0]), r.labels] = True
    return C, {"summary": r.summary(), "rate_actual": r.rate_actual, "rate_nominal": r.rate_nominal}


# ------------------------------------------------------------------- training
def train_ridge(x: np.ndarray, candidates: np.ndarray, extra: dict[str, np.ndarray]) -> dict[str, HeadSnapshot]:
    """Ridge regression on the inputs to the candidate-normalised targets (the paper's analysis model).

    Steps: centre ``X`` and ``T``; ``W = (Xc^T Xc + lambda n I)^{-1} Xc^T Tc``;
    ``b = mean(T) - mean(X) W``. One snapshot (``"late"``), no epochs.
    """
    X = x.astype(np.float64)
    T = candidates.astype(np.float64)
    T /= T.sum(axis=1, keepdims=True)
    mx, mt = X.mean(axis=0), T.mean(axis=0)
    Xc, Tc = X - mx, T - mt
    lam = RIDGE_LAMBDA_PER_ROW * X.shape[0]
    W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ Tc)
    b = mt - mx @ W
    feats = {"train": x, **extra}
    return {"late": HeadSnapshot(0, W, b, {k: np.asarray(v, np.float32) for k, v in feats.items()})}


def _cache_key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_learner(learner: str, x: np.ndarray, C: np.ndarray, extra: dict[str, np.ndarray],
                  spec: DataSpec, seed: int, cache_tag: object,
                  cache_dir: Path | None = CACHE_DIR,
                  epochs: int | None = None) -> tuple[dict[str, HeadSnapshot], float, bool]:
    """Train (or load from ``cache_dir``; ``None``: no cache) one learner.

    ``epochs`` overrides the spec's epoch count. Returns its snapshots, the seconds the training took (when it was first
    run, for a cached model) and whether it came from the cache.
    """
    kind, loss, psp = LEARNERS[learner]
    cfg = None
    if kind != "ridge":
        if epochs is None:
            epochs = spec.mlp_epochs if kind == "mlp" else spec.linear_epochs
        cfg = TrainConfig(loss=loss, hidden=spec.hidden, epochs=epochs, seed=seed,
                          project_every_epoch=PROJECTION_ENERGY if psp else None)
    key = _cache_key(cache_tag, learner, asdict(cfg) if cfg else RIDGE_LAMBDA_PER_ROW, x.shape,
                     float(x.sum()), int(C.sum()), int((C * np.arange(C.shape[1])).sum()))
    path = None if cache_dir is None else Path(cache_dir) / f"{learner}-{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            arrays = dict(z)
        snaps = {p: HeadSnapshot.from_arrays(arrays, p) for p in ("early", "late") if f"{p}/W" in arrays}
        return snaps, float(arrays.get("meta/train_s", np.nan)), True
    t0 = time.perf_counter()
    if kind == "ridge":
        snaps = train_ridge(x, C, extra)
    elif kind == "mlp":
        snaps = train_mlp(x, C, extra, cfg)
    else:
        snaps = train_linear(x, C, extra, cfg)
    train_s = time.perf_counter() - t0
    if path is None:
        return snaps, train_s, False
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"meta/train_s": np.asarray(train_s)}
    for p, s in snaps.items():
        arrays.update(s.to_arrays(p))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return snaps, train_s, False


# ---------------------------------------------------------------------- study
def run_study(plan: StudyPlan, cache_dir: Path | None = CACHE_DIR, log: Callable[[str], None] = print) -> dict:
    """Run the plan; return ``{"plan": ..., "records": [...], "wall_s": ...}``.

    Each record: dataset, setting, seed, learner, snapshot, noise facts,
    ``base_acc`` and per variant the output of ``evaluate_variant``.
    """
    t0 = time.perf_counter()
    records = []
    for name in plan.datasets:
        spec = plan.data[name]
        d = load_dataset(name, spec)
        l = d.n_classes
        for setting in plan.settings:
            for seed in plan.seeds:
                C, facts = corrupt(name, d.y_train, l, setting, seed)
                perm = np.random.default_rng(seed + 100).permutation(d.x_train.shape[0])
                n_val = int(round(plan.val_fraction * perm.shape[0]))
                vi, fi = perm[:n_val], perm[n_val:]
                extra = {"val": d.x_train[vi], "test": d.x_test}
                for learner in plan.learners:
                    if learner == "mlp_ce_long" and name not in LONG_EPOCHS:
                        continue
                    t1 = time.perf_counter()
                    tag = (name, setting.name, seed, plan.mode, spec)
                    snaps, train_s, cached = train_learner(learner, d.x_train[fi], C[fi], extra, spec, seed, tag, cache_dir,
                                                           LONG_EPOCHS.get(name) if learner == "mlp_ce_long" else None)
                    for sname, snap in snaps.items():
                        rec = {
                            "dataset": name, "setting": setting.name, "seed": seed, "learner": learner,
                            "snapshot": sname, "epoch": snap.epoch, "noise": facts,
                            "train_s": train_s, "cached": cached,
                            "n_fit": int(fi.shape[0]), "n_val": int(n_val), "n_test": int(d.x_test.shape[0]),
                            "shape": list(snap.W.shape),
                            "base_acc": accuracy(snap.logits("test"), d.y_test),
                            "train_fit_acc": accuracy(snap.logits("train"), np.argmax(C[fi] * 1.0, axis=1))
                            if not (C.sum(axis=1) > 1).any() else None,
                            "variants": {},
                        }
                        for vname, variant in VARIANTS.items():
                            if vname == "cand_norm" and setting.kind != "partial":
                                continue
                            out = evaluate_variant(snap, variant, C[fi], C[vi], d.y_test)
                            out["acc_by_k"] = [round(a, 4) for a in out["acc_by_k"]]
                            rec["variants"][vname] = out
                        records.append(rec)
                    log(f"[{time.perf_counter() - t0:7.1f}s] {name} {setting.name} seed={seed} {learner} "
                        f"({time.perf_counter() - t1:.1f}s) base={records[-1]['base_acc']:.1f} "
                        f"auto(bias)={records[-1]['variants']['bias']['auto_acc']:.1f}")
    plan_d = asdict(plan)
    plan_d["settings"] = [asdict(s) | {"name": s.name} for s in plan.settings]
    return {"plan": plan_d, "records": records, "wall_s": time.perf_counter() - t0,
            "variants": {k: asdict(v) for k, v in VARIANTS.items()},
            "projection_energy": PROJECTION_ENERGY, "long_epochs": LONG_EPOCHS, "ridge_lambda_per_row": RIDGE_LAMBDA_PER_ROW,
            "partial_q": PARTIAL_Q, "core_auto_defaults": _core_auto_defaults()}


def _core_auto_defaults() -> dict:
    """The defaults of ``refine_batches(rank="auto")`` in the core that ran (they are being tuned)."""
    import inspect

    import lip_agnostic
    from lip_agnostic import refine_batches

    sig = inspect.signature(refine_batches)
    return {"version": lip_agnostic.__version__,
            **{k: repr(p.default) for k, p in sig.parameters.items()
               if k in ("rank", "holdout", "target_scale", "degenerate", "min_gain", "confidence")}}


# ------------------------------------------------------------------ aggregate
def _ms(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def aggregate(records: list[dict]) -> list[dict]:
    """Mean/std over seeds per (dataset, setting, learner, snapshot).

    Per variant: ``auto`` accuracy and its paired gain over the base
    (mean, std over seeds, ddof=1), the worst per-seed gain, how often ``k``
    changed, and the fixed-``k`` curve's mean gain per ``k`` (the paper's sweep)
    with the best fixed ``k`` in hindsight (an oracle, chosen on the test set).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["setting"], r["learner"], r["snapshot"]), []).append(r)
    rows = []
    for (ds, st, ln, sn), rs in groups.items():
        base = [r["base_acc"] for r in rs]
        row = {"dataset": ds, "setting": st, "learner": ln, "snapshot": sn, "n_seeds": len(rs),
               "epoch": rs[0]["epoch"], "shape": rs[0]["shape"],
               "noise_actual": _ms([r["noise"]["rate_actual"] for r in rs]),
               "base": _ms(base), "variants": {}}
        for v in rs[0]["variants"]:
            outs = [r["variants"][v] for r in rs]
            auto = [o["auto_acc"] for o in outs]
            gain = [a - b for a, b in zip(auto, base)]
            curves = np.asarray([o["acc_by_k"] for o in outs]) - np.asarray(base)[:, None]
            mean_curve = curves.mean(axis=0)
            k_best = int(np.argmax(mean_curve[:-1])) if mean_curve.shape[0] > 1 else 0
            ung = [o.get("unguarded_acc", np.nan) - b for o, b in zip(outs, base)]
            row["variants"][v] = {
                "auto": _ms(auto), "auto_gain": _ms(gain), "auto_worst_gain": float(min(gain)),
                "unguarded_gain": _ms(ung), "unguarded_worst_gain": float(min(ung)),
                "unguarded_changed": int(sum(o.get("unguarded_k", o["m"]) < o["m"] for o in outs)),
                "auto_changed": int(sum(o["auto_changed"] for o in outs)),
                "auto_k": [o["auto_k"] for o in outs],
                "gain_by_k": [float(g) for g in mean_curve],
                "oracle_k": k_best, "oracle_gain": _ms(curves[:, k_best]),
            }
        rows.append(row)
    return rows


def save_results(result: dict, path: Path) -> Path:
    """Write the study's JSON (records + aggregated rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = dict(result, rows=aggregate(result["records"]))
    path.write_text(json.dumps(out, default=float))
    return path
