"""The paper's analysis of label noise in the final layer, reproduced on our data.

Si et al. (arXiv 2505.16159) argue, on ResNet-34 / CIFAR-100, that label noise
leaves the *principal* singular subspace of the classifier's weight nearly
intact and lands in the *lower* components. This module measures that claim
on digits, Fashion-MNIST and the 62-class rendered fonts:

1. **Spectra.** An MLP (``experiments.train.train_mlp``, CE, Adam, CPU) is
   trained on clean and on symmetric-noisy labels (rates 0, 0.05, 0.1, 0.2,
   0.3, 0.4; same initialisation and batch order); the singular values of
   each final-layer weight ``W (q, l)``.
2. **phi heatmaps.** ``lip_agnostic.subspace_similarity_matrix`` of the right
   (class-side) singular vectors, clean vs noisy — and, as a control, clean
   vs clean with another initialisation seed (how much alignment the seed
   alone destroys).
3. **Principal angle vs noise rate** (``principal_subspace_angle``, several
   ``k``), with the seed control as the reference line.
4. **Ridge and the Davis–Kahan bound.** A ridge model
   ``W = (X^T X + lambda I)^{-1} X^T Y`` on fixed features (the pixels):
   the measured top-``k`` angle clean vs noisy (mean of 3 noise draws)
   against ``lip_agnostic.davis_kahan_bound``.
5. **Where the noise energy lands.** For ``Delta = W_noisy - W_clean`` in a
   *shared* feature space (the ridge model; and a CE-trained linear head on
   the frozen features of the clean MLP), the share of ``||Delta||_F^2``
   along each right singular vector ``v_j`` of ``W_clean``,
   ``e_j = ||Delta v_j||^2 / ||Delta||_F^2`` (uniform spreading gives
   ``1/l`` each, so the top ``k`` get ``k/l``), and the noise-to-signal ratio
   ``||Delta v_j|| / s_j`` per component.

For the MLP, the feature spaces of two trained networks are not aligned, so
the energy analysis (5) is done on shared features only; the class-side
comparisons (2, 3) are meaningful for the MLP too.

Run ``python -m experiments.analysis [--quick] [--out docs/figures]
[--markdown docs/ANALYSIS.md]``; ``run_analysis(out_dir, quick)`` returns the
Markdown and writes PNGs ``analysis_*.png`` into ``out_dir``. Quick mode
(digits only, few epochs) takes well under a minute.

Example
-------
>>> from pathlib import Path
>>> from experiments.analysis import run_analysis
>>> md = run_analysis(Path("/tmp/lip-analysis"), quick=True)   # doctest: +SKIP
>>> md.splitlines()[0]                                           # doctest: +SKIP
'### Label noise in the final layer: the paper's analysis on our data'
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import lip_agnostic as lip
import lip_agnostic.metrics as lip_metrics
from lip_agnostic.noise import symmetric_noise

__all__ = [
    "RATES",
    "AnalysisConfig",
    "DatasetAnalysis",
    "analyse_dataset",
    "energy_profile",
    "ridge_fit",
    "ridge_angles",
    "run_analysis",
    "main",
]

RATES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class AnalysisConfig:
    """What one dataset's analysis trains and measures.

    Attributes
    ----------
    dataset : {"digits", "fashion-mnist", "fonts"}
    rates : noise rates (symmetric, to another class); must start with 0
    epochs : MLP epochs (the ``"late"`` snapshot); the ``"early"`` one is at ``epochs // 4``
    hidden : MLP hidden widths; the last is the head's ``q``
    limit_train : keep this many training rows (a seeded subset), or all
    ks : the ``k`` of the principal-angle curves
    ridge_lambdas : ridge coefficients ``lambda`` for the Davis–Kahan comparison
    head_epochs : epochs of the CE linear head on frozen clean features
    seed : noise / subset seed; the MLP initialisation is ``seed`` and the control ``seed + 1``
    threads : ``torch.set_num_threads``
    tag : distinguishes two settings of one dataset (figure names ``analysis_*_{dataset}-{tag}.png``)
    """

    dataset: str
    rates: tuple[float, ...] = RATES
    epochs: int = 20
    hidden: tuple[int, ...] = (256, 128)
    limit_train: int | None = None
    ks: tuple[int, ...] = (1, 2, 5)
    ridge_lambdas: tuple[float, ...] = (1.0, 100.0)
    head_epochs: int = 20
    seed: int = 0
    threads: int = 1
    tag: str = ""

    @property
    def name(self) -> str:
        """``dataset`` or ``dataset-tag``: names the figures and the section."""
        return f"{self.dataset}-{self.tag}" if self.tag else self.dataset

    def __post_init__(self) -> None:
        if not self.rates or self.rates[0] != 0.0:
            raise ValueError(f"rates must start with 0.0 (the clean run); got {self.rates}")
        if any(not 0.0 <= r < 1.0 for r in self.rates):
            raise ValueError(f"rates must lie in [0, 1); got {self.rates}")


@dataclass
class DatasetAnalysis:
    """Every number behind one dataset's figures and tables (plain NumPy / Python)."""

    config: AnalysisConfig
    n_train: int
    n_classes: int
    q: int
    actual_rates: list[float]
    test_acc: list[float]                    # MLP, per rate (late)
    train_acc_noisy: list[float]             # MLP accuracy on the labels it was trained on
    spectra: list[np.ndarray]                # singular values of W per rate (late)
    spectrum_control: np.ndarray             # clean run, other init seed
    effective_rank: list[float]
    angles: dict[int, list[float]]           # k -> angle (deg) clean vs rate, late
    angles_early: dict[int, list[float]]     # same at the early snapshot
    angles_control: dict[int, float]         # k -> angle (deg) clean seed vs clean other seed
    phi: dict[float, np.ndarray]             # rate -> phi matrix (l, l), clean vs noisy
    phi_control: np.ndarray
    ridge: dict[float, dict]                 # lambda -> {"angles": {k: [deg]}, "bound": {k: [sin bound]}, "gap": {k: float}, "spectrum": array}
    energy_ridge: dict[float, np.ndarray]    # rate -> e_j, ridge (first lambda)
    nsr_ridge: dict[float, np.ndarray]       # rate -> ||Delta v_j|| / s_j
    energy_head: dict[float, np.ndarray]     # rate -> e_j, CE head on frozen clean features
    nsr_head: dict[float, np.ndarray]
    head_test_acc: list[float]
    examples: tuple[np.ndarray, np.ndarray, tuple[int, ...]] | None = None  # a few test images, labels, image shape
    class_names: str | None = None
    data_note: str = ""
    facts: dict | None = None                 # booleans behind the written verdict (filled by the Markdown step)
    seconds: float = 0.0


# ---------------------------------------------------------------- pieces
def _right_vectors(W: np.ndarray) -> np.ndarray:
    f = lip.reduced_svd(np.asarray(W, dtype=np.float64))
    return np.asarray(f.V)


def _angle_deg(W1: np.ndarray, W2: np.ndarray, k: int) -> float:
    return math.degrees(float(lip_metrics.principal_subspace_angle(np.asarray(W1, np.float64), np.asarray(W2, np.float64), k)))


def ridge_fit(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """Closed-form ridge ``W = (X^T X + lambda I)^{-1} X^T Y``, shape ``(d, l)``.

    Steps
    -----
    1. ``G = X^T X + lambda I`` (float64).
    2. Solve ``G W = X^T Y``.
    """
    X = np.asarray(X, dtype=np.float64)
    G = X.T @ X + float(lam) * np.eye(X.shape[1])
    return np.linalg.solve(G, X.T @ np.asarray(Y, dtype=np.float64))


class _RidgeSolver:
    """Ridge fits for many label matrices and lambdas from one Gram eigendecomposition.

    ``X^T X = Q diag(e) Q^T`` once; then ``W(lambda) = Q diag(1 / (e + lambda)) Q^T X^T Y``
    for every ``Y`` and ``lambda`` (``X^T Y`` is a per-class sum of rows).
    """

    def __init__(self, X: np.ndarray) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.e, self.Q = np.linalg.eigh(self.X.T @ self.X)
        self.e = np.clip(self.e, 0.0, None)

    def fit(self, labels: np.ndarray, n_classes: int, lam: float) -> np.ndarray:
        XtY = (np.eye(n_classes)[labels].T @ self.X).T          # (d, l)
        return self.Q @ ((self.Q.T @ XtY) / (self.e + float(lam))[:, None])


def energy_profile(W_clean: np.ndarray, W_noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where ``Delta = W_noisy - W_clean`` lands in the right singular basis of ``W_clean``.

    Steps
    -----
    1. ``W_clean = U diag(s) V^T`` (reduced; ``V`` is ``(l, m)``).
    2. ``e_j = ||Delta v_j||^2 / ||Delta||_F^2`` — the share of the change's
       energy along class direction ``j`` (sums to 1 when ``m = l``).
    3. ``r_j = ||Delta v_j|| / s_j`` — the change relative to the component
       it perturbs (noise-to-signal).

    Returns ``(e, r)``, each of shape ``(m,)``.
    """
    Wc = np.asarray(W_clean, dtype=np.float64)
    D = np.asarray(W_noisy, dtype=np.float64) - Wc
    f = lip.reduced_svd(Wc)
    V, s = np.asarray(f.V), np.asarray(f.s)
    col = np.sum((D @ V) ** 2, axis=0)
    total = float(np.sum(D * D))
    e = col / total if total > 0 else np.zeros_like(col)
    r = np.sqrt(col) / np.where(s > 0, s, np.inf)
    return e, r


def ridge_angles(X: "np.ndarray | _RidgeSolver", y: np.ndarray, n_classes: int, rates: Sequence[float], ks: Sequence[int],
                 lam: float, seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """Ridge on fixed features: measured top-``k`` angle (clean vs noisy) and the paper's bound.

    Steps
    -----
    1. ``W_c`` = ridge on one-hot clean labels; ``W_p`` on symmetric-noisy
       labels (to another class), for each rate and noise seed.
    2. Measured: ``theta_k`` = largest principal angle between the top-``k``
       right singular subspaces of ``W_c`` and ``W_p`` (mean over seeds).
    3. Bound: ``davis_kahan_bound(X, p_actual, n_classes=l, gap=s_k - s_{k+1}, ridge=lambda)``,
       a bound on ``sin(theta_k)``; above 1 it is vacuous.
    4. The same Davis–Kahan/Wedin ratio with the *measured* perturbation,
       ``||W_p - W_c||_2 / (s_k - s_{k+1})`` (mean over seeds): what the bound
       would say if its worst-case constant were replaced by the actual noise.
    """
    solver = X if isinstance(X, _RidgeSolver) else _RidgeSolver(X)
    Wc = solver.fit(y, n_classes, lam)
    s = np.asarray(lip_metrics.singular_spectrum(Wc))
    out = {"angles": {k: [] for k in ks}, "bound": {k: [] for k in ks}, "measured_ratio": {k: [] for k in ks},
           "gap": {}, "spectrum": s, "p_actual": [], "W_clean": Wc, "W_noisy": {}}
    for k in ks:
        out["gap"][k] = float(s[k - 1] - s[k])
    # the bound is proportional to sqrt(p) / gap: one core call (one SVD of X) gives its constant
    unit = lip_metrics.davis_kahan_bound(solver.X, 1.0, n_classes=n_classes, gap=1.0, ridge=lam)
    for rate in rates:
        per_k = {k: [] for k in ks}
        p_actual, norms = [], []
        for sd in seeds:
            noisy = symmetric_noise(y, rate, n_classes, seed=sd)
            p_actual.append(noisy.rate_actual)
            Wp = solver.fit(noisy.labels, n_classes, lam)
            norms.append(float(np.linalg.norm(Wp - Wc, 2)))
            if sd == seeds[0]:
                out["W_noisy"][rate] = Wp
            for k in ks:
                per_k[k].append(_angle_deg(Wc, Wp, k))
        out["p_actual"].append(float(np.mean(p_actual)))
        for k in ks:
            out["angles"][k].append(float(np.mean(per_k[k])))
            gap = out["gap"][k]
            b = unit * math.sqrt(float(np.mean(p_actual))) / gap if gap > 0 else math.inf
            out["bound"][k].append(float(b))
            out["measured_ratio"][k].append(float(np.mean(norms)) / gap if gap > 0 else math.inf)
    return out


def _load(cfg: AnalysisConfig):
    from . import datasets

    if cfg.dataset == "digits":
        d = datasets.load_digits()
    elif cfg.dataset == "fashion-mnist":
        d = datasets.load_fashion_mnist()
    elif cfg.dataset == "fonts":
        d = datasets.load_fonts()
    else:
        raise ValueError(f"dataset must be 'digits', 'fashion-mnist' or 'fonts'; got {cfg.dataset!r}")
    x, y = d.x_train, d.y_train
    if cfg.limit_train is not None and cfg.limit_train < len(y):
        idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(y))[: cfg.limit_train])
        x, y = x[idx], y[idx]
    return x, y, d.x_test, d.y_test, d.n_classes, d


def analyse_dataset(cfg: AnalysisConfig, log: Callable[[str], None] = lambda s: None) -> DatasetAnalysis:
    """Train, measure and collect everything for one dataset (see the module docstring)."""
    import torch

    from .train import TrainConfig, train_linear, train_mlp

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    x, y, xte, yte, l, data = _load(cfg)
    ks = tuple(k for k in cfg.ks if k < l)
    eye = np.eye(l, dtype=bool)
    tc = lambda seed, epochs: TrainConfig(loss="ce", hidden=cfg.hidden, epochs=epochs, seed=seed, threads=cfg.threads)  # noqa: E731

    def acc(snap, split, labels):
        return float(np.mean(np.argmax(snap.logits(split), axis=1) == labels))

    runs, noisy_sets = [], []
    for rate in cfg.rates:
        noisy = symmetric_noise(y, rate, l, seed=cfg.seed) if rate > 0 else None
        labels = y if noisy is None else noisy.labels
        noisy_sets.append(labels)
        snaps = train_mlp(x, eye[labels], {"test": xte}, tc(cfg.seed, cfg.epochs))
        runs.append((noisy, snaps))
        log(f"  {cfg.name}: rate {rate:.2f} trained ({time.perf_counter() - t0:.0f}s), test acc {acc(snaps['late'], 'test', yte):.3f}")
    control = train_mlp(x, eye[y], {"test": xte}, tc(cfg.seed + 1, cfg.epochs))["late"]
    clean = runs[0][1]

    Wc, Wc_early = clean["late"].W, clean["early"].W
    Vc = _right_vectors(Wc)
    res = DatasetAnalysis(
        config=cfg, n_train=int(len(y)), n_classes=l, q=int(Wc.shape[0]),
        actual_rates=[0.0 if nz is None else nz.rate_actual for nz, _ in runs],
        test_acc=[acc(s["late"], "test", yte) for _, s in runs],
        train_acc_noisy=[acc(s["late"], "train", lab) for (_, s), lab in zip(runs, noisy_sets)],
        spectra=[np.asarray(lip_metrics.singular_spectrum(s["late"].W)) for _, s in runs],
        spectrum_control=np.asarray(lip_metrics.singular_spectrum(control.W)),
        effective_rank=[float(lip_metrics.effective_rank(s["late"].W)) for _, s in runs],
        angles={k: [_angle_deg(Wc, s["late"].W, k) for _, s in runs] for k in ks},
        angles_early={k: [_angle_deg(Wc_early, s["early"].W, k) for _, s in runs] for k in ks},
        angles_control={k: _angle_deg(Wc, control.W, k) for k in ks},
        phi={r: np.asarray(lip_metrics.subspace_similarity_matrix(Vc, _right_vectors(s["late"].W))) for r, (_, s) in zip(cfg.rates, runs)},
        phi_control=np.asarray(lip_metrics.subspace_similarity_matrix(Vc, _right_vectors(control.W))),
        ridge={}, energy_ridge={}, nsr_ridge={}, energy_head={}, nsr_head={}, head_test_acc=[],
    )

    # ridge on the pixels (shared, fixed features)
    solver = _RidgeSolver(x)
    for lam in cfg.ridge_lambdas:
        res.ridge[lam] = ridge_angles(solver, y, l, cfg.rates, ks, lam)
    first = res.ridge[cfg.ridge_lambdas[0]]
    for rate in cfg.rates[1:]:
        res.energy_ridge[rate], res.nsr_ridge[rate] = energy_profile(first["W_clean"], first["W_noisy"][rate])
    for lam in cfg.ridge_lambdas:
        res.ridge[lam].pop("W_clean")
        res.ridge[lam].pop("W_noisy")
    log(f"  {cfg.name}: ridge done ({time.perf_counter() - t0:.0f}s)")

    # a CE linear head on the frozen features of the clean MLP (shared features, deep representation)
    feats, feats_te = clean["late"].features["train"], clean["late"].features["test"]
    head_clean = None
    for rate, labels in zip(cfg.rates, noisy_sets):
        h = train_linear(feats, eye[labels], {"test": feats_te}, tc(cfg.seed, cfg.head_epochs))["late"]
        res.head_test_acc.append(acc(h, "test", yte))
        if head_clean is None:
            head_clean = h.W
        else:
            res.energy_head[rate], res.nsr_head[rate] = energy_profile(head_clean, h.W)
    pick = np.random.default_rng(cfg.seed).choice(len(yte), size=min(48, len(yte)), replace=False)
    res.examples = (xte[pick], yte[pick], tuple(data.image_shape))
    res.class_names = data.info.get("classes") if data.info else None
    notes = []
    if cfg.limit_train is not None and cfg.limit_train < len(data.y_train):
        notes.append(f"a seeded subset of {len(y)} of the {len(data.y_train)} training images")
    if data.info and "train_fonts" in data.info:
        notes.append(f"{len(data.info['train_fonts'])} training fonts, {len(data.info['test_fonts'])} test fonts of other families")
    notes.append(f"{len(yte)} test images")
    res.data_note = "; ".join(notes)
    res.seconds = time.perf_counter() - t0
    log(f"  {cfg.name}: done in {res.seconds:.0f}s")
    return res


# ---------------------------------------------------------------- figures
def _plots(res: DatasetAnalysis, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = res.config.name
    files: dict[str, Path] = {}
    rates = res.config.rates
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(rates)))

    # spectra
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r, s, c in zip(rates, res.spectra, colors):
        axes[0].plot(np.arange(1, len(s) + 1), s, marker=".", color=c, label=f"p={r:g}")
        axes[1].plot(np.arange(1, len(s) + 1), s / s[0], marker=".", color=c)
    axes[0].plot(np.arange(1, len(res.spectrum_control) + 1), res.spectrum_control, ls="--", color="gray", label="clean, other seed")
    axes[0].set(title=f"{name}: singular values of the head W (q={res.q}, l={res.n_classes})", xlabel="index i", ylabel="s_i")
    axes[1].set(title="normalized by s_1", xlabel="index i", ylabel="s_i / s_1")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    files["spectra"] = out_dir / f"analysis_spectra_{name}.png"
    fig.savefig(files["spectra"], dpi=110)
    plt.close(fig)

    # phi heatmaps: control + three rates
    show = [r for r in (0.1, 0.2, 0.4) if r in res.phi] or list(res.phi)[1:4]
    mats = [("clean vs clean (other seed)", res.phi_control)] + [(f"clean vs p={r:g}", res.phi[r]) for r in show]
    fig, axes = plt.subplots(1, len(mats), figsize=(3.3 * len(mats), 3.3))
    for ax, (title, M) in zip(np.atleast_1d(axes), mats):
        im = ax.imshow(M, vmin=0, vmax=1, cmap="magma", origin="lower", extent=(0.5, M.shape[1] + 0.5, 0.5, M.shape[0] + 0.5))
        ax.set(title=title, xlabel="j (noisy / other)", ylabel="i (clean)")
        ax.title.set_fontsize(9)
    fig.colorbar(im, ax=np.atleast_1d(axes).tolist(), shrink=0.8, label="phi(V, V', i, j)")
    files["phi"] = out_dir / f"analysis_phi_{name}.png"
    fig.savefig(files["phi"], dpi=110)
    plt.close(fig)

    # principal angle vs noise rate
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, k in enumerate(res.angles):
        c = plt.cm.tab10(i)
        ax.plot(rates, res.angles[k], marker="o", color=c, label=f"k={k}")
        ax.axhline(res.angles_control[k], color=c, ls=":", lw=1)
    ax.set(title=f"{name}: top-k class-subspace angle, clean vs noisy\n(dotted: clean vs clean, other init seed)", xlabel="noise rate p", ylabel="largest principal angle (deg)", ylim=(0, 92))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["angles"] = out_dir / f"analysis_angles_{name}.png"
    fig.savefig(files["angles"], dpi=110)
    plt.close(fig)

    # ridge: measured sin(theta) vs bound
    fig, axes = plt.subplots(1, len(res.ridge), figsize=(5 * len(res.ridge), 3.8), squeeze=False)
    for ax, (lam, rd) in zip(axes[0], res.ridge.items()):
        for i, k in enumerate(rd["angles"]):
            c = plt.cm.tab10(i)
            ax.plot(rates[1:], np.sin(np.radians(rd["angles"][k][1:])), marker="o", color=c, label=f"measured sin, k={k}")
            ax.plot(rates[1:], rd["bound"][k][1:], ls="--", color=c, label=f"paper's bound, k={k}")
            ax.plot(rates[1:], rd["measured_ratio"][k][1:], ls=":", color=c, label=f"||dW||_2 / gap, k={k}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set(title=f"{name}: ridge on pixels, lambda={lam:g}", xlabel="noise rate p", ylabel="sin(theta_k)  (log)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    files["ridge"] = out_dir / f"analysis_ridge_bound_{name}.png"
    fig.savefig(files["ridge"], dpi=110)
    plt.close(fig)

    # energy profile
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    lam0 = res.config.ridge_lambdas[0]
    for (label, E, R), ls in (((f"ridge λ={lam0:g}", res.energy_ridge, res.nsr_ridge), "-"), (("CE head, frozen features", res.energy_head, res.nsr_head), "--")):
        for r, c in zip(rates[1:], colors[1:]):
            if r not in (0.1, 0.4) and len(rates) > 3:
                continue
            j = np.arange(1, len(E[r]) + 1)
            axes[0].plot(j, E[r], ls=ls, marker=".", color=c, label=f"{label}, p={r:g}")
            axes[1].plot(j, R[r], ls=ls, marker=".", color=c, label=f"{label}, p={r:g}")
    axes[0].axhline(1.0 / res.n_classes, color="gray", lw=0.8, label="uniform 1/l")
    axes[0].set(title=f"{name}: share of ||W_noisy - W_clean||^2 along v_j", xlabel="j (singular direction of W_clean)", ylabel="e_j")
    axes[1].set(title="noise-to-signal ||Delta v_j|| / s_j", xlabel="j", ylabel="ratio", yscale="log")
    axes[0].legend(fontsize=6)
    for ax in axes:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    files["energy"] = out_dir / f"analysis_energy_{name}.png"
    fig.savefig(files["energy"], dpi=110)
    plt.close(fig)

    # what the data look like (test split)
    if res.examples is not None:
        xs, ys, shape = res.examples
        fig, axes = plt.subplots(3, 16, figsize=(12, 2.6))
        for ax, img, lab in zip(axes.flat, xs, ys):
            ax.imshow(img.reshape(shape), cmap="gray", vmin=0, vmax=1)
            ax.set_title(res.class_names[lab] if res.class_names else str(lab), fontsize=7)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"{name}: test samples", fontsize=9)
        fig.tight_layout()
        files["samples"] = out_dir / f"analysis_samples_{name}.png"
        fig.savefig(files["samples"], dpi=90)
        plt.close(fig)
    return files


# ---------------------------------------------------------------- markdown
def _f(v: float, nd: int = 1) -> str:
    return "∞" if not math.isfinite(v) else f"{v:.{nd}f}"


def _phikk(M: np.ndarray, k: int) -> float:
    return float(M[k - 1, k - 1])


def _top_share(E: np.ndarray, k: int) -> float:
    return float(np.sum(E[:k]))


def _markdown(res: DatasetAnalysis, files: dict[str, Path], md_dir: Path) -> tuple[str, list[str]]:
    cfg = res.config
    l, rates = res.n_classes, cfg.rates
    link = lambda p: os.path.relpath(p, md_dir).replace(os.sep, "/")  # noqa: E731
    ks = list(res.angles)
    L: list[str] = []
    L.append(f"#### {cfg.name} (l = {l} classes, head {res.q}×{l}, n_train = {res.n_train}, MLP {cfg.hidden}, {cfg.epochs} epochs; {res.seconds:.0f} s)\n")
    if res.data_note:
        L.append(f"Data: {res.data_note}.\n")
    L.append("Top-k cells: largest principal angle / φ(k, k) between the clean and the noisy head's top-k class subspaces "
             "(φ(k, k) = mean squared cosine of the k principal angles: 1 = same subspace, k/l = chance) and, in brackets, "
             "the angle at the early snapshot.\n")
    L.append("| noise p (actual) | MLP test acc | MLP train acc on its labels | CE head (frozen clean features) test acc | s_1 | s_l | eff. rank | "
             + " | ".join(f"top-{k}" for k in ks) + " |")
    L.append("|" + "---|" * (7 + len(ks)))
    for i, r in enumerate(rates):
        s = res.spectra[i]
        L.append(
            f"| {r:g} ({res.actual_rates[i]:.3f}) | {100 * res.test_acc[i]:.1f} | {100 * res.train_acc_noisy[i]:.1f} | {100 * res.head_test_acc[i]:.1f} | "
            f"{s[0]:.2f} | {s[-1]:.3f} | {res.effective_rank[i]:.2f} | "
            + " | ".join(f"{res.angles[k][i]:.0f}° / {_phikk(res.phi[r], k):.2f} ({res.angles_early[k][i]:.0f}°)" for k in ks) + " |"
        )
    L.append(f"| clean, other init seed | – | – | – | {res.spectrum_control[0]:.2f} | {res.spectrum_control[-1]:.3f} | "
             f"{float(lip_metrics.effective_rank(res.spectrum_control)):.2f} | "
             + " | ".join(f"{res.angles_control[k]:.0f}° / {_phikk(res.phi_control, k):.2f}" for k in ks) + " |")
    L.append("")
    if "samples" in files:
        L.append(f"![samples]({link(files['samples'])})\n")
    L.append(f"![spectra]({link(files['spectra'])})\n![phi]({link(files['phi'])})\n![angles]({link(files['angles'])})\n")

    L.append("Ridge on the pixels, clean vs noisy (mean of 3 noise draws). Each cell: measured sin θ_k ≤ the paper's bound "
             "[the same Davis–Kahan ratio with the measured ‖ΔW‖₂ / gap in its place].\n")
    L.append("| λ | k | gap s_k − s_{k+1} | " + " | ".join(f"p={r:g}" for r in rates[1:]) + " |")
    L.append("|" + "---|" * (3 + len(rates) - 1))
    vacuous_all, holds_all = True, True
    for lam, rd in res.ridge.items():
        for k in rd["angles"]:
            cells = []
            for i in range(1, len(rates)):
                m = math.sin(math.radians(rd["angles"][k][i]))
                b = rd["bound"][k][i]
                vacuous_all &= b > 1
                holds_all &= m <= b
                cells.append(f"{m:.3f} ≤ {_f(b, 1)}" + (" (vacuous)" if b > 1 else "") + f" [{_f(rd['measured_ratio'][k][i], 2)}]")
            L.append(f"| {lam:g} | {k} | {rd['gap'][k]:.3g} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(f"![ridge bound]({link(files['ridge'])})\n")

    L.append("Where `W_noisy − W_clean` lands, as the share of its energy in the top-k right singular directions of `W_clean` "
             "(uniform spreading: k/l), and the noise-to-signal ratio ‖Δv_j‖/s_j averaged over the top k vs the rest.\n")
    L.append("| model | p | " + " | ".join(f"share top-{k} (uniform {k / l:.2f})" for k in ks) + " | " + " | ".join(f"NSR top-{k} / rest" for k in ks) + " |")
    L.append("|" + "---|" * (2 + 2 * len(ks)))
    for label, E, R in ((f"ridge (pixels, λ={cfg.ridge_lambdas[0]:g})", res.energy_ridge, res.nsr_ridge), ("CE head (frozen features)", res.energy_head, res.nsr_head)):
        for r in rates[1:]:
            shares = [_top_share(E[r], k) for k in ks]
            nsr = [(float(np.mean(R[r][:k])), float(np.mean(R[r][k:]))) for k in ks]
            L.append(f"| {label} | {r:g} | " + " | ".join(f"{sh:.3f}" for sh in shares) + " | "
                     + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in nsr) + " |")
    L.append("")
    L.append(f"![energy]({link(files['energy'])})\n")

    # plain conclusions from the numbers
    i02 = rates.index(0.2) if 0.2 in rates else len(rates) // 2
    i_last = len(rates) - 1
    p_hi = rates[i_last]
    kk = ks[min(1, len(ks) - 1)]
    a_mod, a_ctl = res.angles[kk][i02], res.angles_control[kk]
    phi_mod, phi_ctl = _phikk(res.phi[rates[i02]], kk), _phikk(res.phi_control, kk)
    s0, sh = res.spectra[0], res.spectra[i_last]
    rel_gap = float((s0[kk - 1] - s0[kk]) / s0[0])
    clean_share = 1.0 - res.actual_rates[i_last]
    memorized = res.train_acc_noisy[i_last] > clean_share + 0.05
    facts = {"aligned": a_mod < 15.0 or phi_mod > 0.9, "beyond_seed": phi_mod < phi_ctl - 0.05 and a_mod > a_ctl,
             "memorized": memorized}
    parts = [
        f"**{cfg.name}** (l={l}, {cfg.epochs} epochs). Test accuracy {100 * res.test_acc[0]:.1f} % clean → "
        f"{100 * res.test_acc[i_last]:.1f} % at p={p_hi:g}. The MLP fits {100 * res.train_acc_noisy[i_last]:.0f} % of its noisy "
        f"labels where {100 * clean_share:.0f} % are correct: it has "
        + ("**memorized** part of the noise." if memorized else "**not memorized** the noise (it is still in the early-learning regime).")
    ]
    if facts["aligned"]:
        verdict = "stays aligned, as the paper reports"
    elif facts["beyond_seed"]:
        verdict = "moves further than a change of initialisation seed moves it: the paper's finding does not hold for this head"
    else:
        verdict = ("moves, but about as much as a change of initialisation seed moves it: with a spectrum this flat the top-k "
                   "subspace is barely defined, so noise cannot be blamed")
    parts.append(
        f"Class-side top-{kk} subspace of the MLP head (relative gap (s_k − s_(k+1))/s_1 = {rel_gap:.3f}): at p={rates[i02]:g} "
        f"angle {a_mod:.0f}°, φ = {phi_mod:.2f}, against {a_ctl:.0f}°, φ = {phi_ctl:.2f} for two clean runs with different seeds "
        f"(chance φ = {kk / l:.2f}): it {verdict}."
    )
    tail = max(1, l // 2)
    parts.append(
        f"Spectrum: s_1 {s0[0]:.2f} → {sh[0]:.2f}, lower half mean {np.mean(s0[tail:]):.3f} → {np.mean(sh[tail:]):.3f}, "
        f"effective rank {res.effective_rank[0]:.1f} → {res.effective_rank[i_last]:.1f} (p={p_hi:g}): "
        + ("the lower components are inflated" if np.mean(sh[tail:]) > 1.02 * np.mean(s0[tail:]) else "the lower components are not inflated")
        + (", the top one decays." if sh[0] < 0.98 * s0[0] else ", the top one does not decay.")
    )
    lam_hi = max(res.ridge)
    rd = res.ridge[lam_hi]
    k1 = ks[0]
    ridge_aligned = rd["angles"][k1][i02] < 15.0
    parts.append(
        f"Ridge on the pixels (λ={lam_hi:g}): top-{k1} angle {rd['angles'][k1][i02]:.1f}° at p={rates[i02]:g} and "
        f"{rd['angles'][k1][i_last]:.1f}° at p={p_hi:g}"
        + (" (aligned)" if ridge_aligned else "")
        + f"; the paper's Davis–Kahan bound is "
        + ("vacuous (> 1) at every rate, k and λ" if vacuous_all else "informative (< 1) somewhere")
        + ("" if holds_all else " and is VIOLATED somewhere")
        + f"; even with the measured ‖ΔW‖₂ in place of the worst case, ‖ΔW‖₂/gap = {rd['measured_ratio'][k1][i02]:.2f} "
        + ("> 1, so a Davis–Kahan argument cannot certify alignment here." if rd["measured_ratio"][k1][i02] > 1 else "< 1.")
    )
    facts["ridge_aligned"] = ridge_aligned
    kk2 = ks[-1]

    def piles(label: str, E: dict, R: dict) -> tuple[str, bool, bool]:
        share = _top_share(E[p_hi], kk2)
        nsr_top, nsr_rest = float(np.mean(R[p_hi][:kk2])), float(np.mean(R[p_hi][kk2:]))
        low_abs = share < kk2 / l
        low_rel = nsr_rest > 1.1 * nsr_top
        rel = ("hit harder" if low_rel else ("hit less" if nsr_top > 1.1 * nsr_rest else "hit about equally"))
        return (f"{label}: top-{kk2} share {share:.2f} (uniform {kk2 / l:.2f}), noise-to-signal top {nsr_top:.2f} vs rest {nsr_rest:.2f} "
                f"(lower components {rel})"), low_abs, low_rel

    t1, abs1, rel1 = piles(f"ridge (λ={cfg.ridge_lambdas[0]:g})", res.energy_ridge, res.nsr_ridge)
    t2, abs2, rel2 = piles("CE head on frozen features", res.energy_head, res.nsr_head)
    facts["energy_low_abs"] = abs1 or abs2
    facts["energy_low_rel"] = (rel1, rel2)
    parts.append(
        f"Where ΔW lands (p={p_hi:g}): {t1}; {t2}. In absolute energy "
        + ("the lower components take more than their uniform share of the noise" if abs1 and abs2
           else ("the TOP components take more than their uniform share of the noise, not the lower ones" if not (abs1 or abs2)
                 else "the two models disagree on where the noise energy lands"))
        + "; relative to each component's signal the lower components are "
        + ("hit harder in both models." if rel1 and rel2 else ("hit harder for one model only." if rel1 or rel2 else "not hit harder."))
    )
    C = [" ".join(parts)]
    res.facts = facts
    return "\n".join(L), C


def _overall(results: Sequence[DatasetAnalysis]) -> str:
    """One summary line across datasets, from the facts behind each dataset's verdict."""
    names = lambda pred: [r.config.name for r in results if pred(r.facts)] or ["none"]  # noqa: E731
    n = len(results)
    return (
        f"**Overall ({n} setting{'' if n == 1 else 's'}).** The MLP head's class-side principal subspace stays aligned at p=0.2 in: "
        f"{', '.join(names(lambda f: f['aligned']))}; it moves beyond the seed-to-seed variation in: "
        f"{', '.join(names(lambda f: f['beyond_seed']))}. The ridge model's top subspace stays aligned in: "
        f"{', '.join(names(lambda f: f['ridge_aligned']))}. Relative to their signal, the lower components take the noise harder "
        f"(ridge) in: {', '.join(names(lambda f: f['energy_low_rel'][0]))}; (CE head) in: "
        f"{', '.join(names(lambda f: f['energy_low_rel'][1]))}. In absolute energy the lower components take more than their "
        f"uniform share of the noise in: {', '.join(names(lambda f: f['energy_low_abs']))}. Settings where the MLP memorized noise: "
        f"{', '.join(names(lambda f: f['memorized']))}."
    )


# ---------------------------------------------------------------- entry points
def _configs(quick: bool) -> list[AnalysisConfig]:
    if quick:
        return [AnalysisConfig("digits", epochs=12, hidden=(128, 64), ks=(1, 2, 5), head_epochs=8)]
    return [
        AnalysisConfig("digits", epochs=40, hidden=(256, 128), ks=(1, 2, 5), head_epochs=30),
        AnalysisConfig("digits", epochs=150, hidden=(256, 128), ks=(1, 2, 5), head_epochs=30, tag="memorizing"),
        AnalysisConfig("fashion-mnist", epochs=12, hidden=(256, 128), limit_train=15000, ks=(1, 2, 5), head_epochs=10),
        AnalysisConfig("fonts", epochs=10, hidden=(256, 128), limit_train=24000, ks=(1, 5, 10, 30), head_epochs=10),
    ]


def run_analysis(out_dir: Path, quick: bool, *, md_dir: Path | None = None, log: Callable[[str], None] = print,
                 configs: Sequence[AnalysisConfig] | None = None) -> str:
    """Run the analysis, write ``analysis_*.png`` into ``out_dir`` and return a Markdown section.

    Parameters
    ----------
    out_dir : folder for the PNGs (created)
    quick : digits only, few epochs (< 1 minute); otherwise digits, Fashion-MNIST and fonts
    md_dir : folder the Markdown will live in (figure links are relative to it; default ``out_dir.parent``)
    log : progress printer
    configs : override the datasets / settings (default: by ``quick``)

    Datasets that are not installed (Fashion-MNIST, fonts) are skipped with a note.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_dir = Path(md_dir) if md_dir is not None else out_dir.parent
    t0 = time.perf_counter()
    sections, conclusions, skipped, results = [], [], [], []
    for cfg in (configs if configs is not None else _configs(quick)):
        log(f"analysis: {cfg.name}")
        try:
            res = analyse_dataset(cfg, log)
        except FileNotFoundError as e:
            skipped.append(f"{cfg.name} skipped: {str(e).splitlines()[0]}")
            log(f"  {skipped[-1]}")
            continue
        files = _plots(res, out_dir)
        md, c = _markdown(res, files, md_dir)
        sections.append(md)
        conclusions.extend(c)
        results.append(res)
    if results:
        conclusions.append(_overall(results))
    head = [
        "### Label noise in the final layer: the paper's analysis on our data\n",
        f"Mode: {'quick' if quick else 'full'}; regenerate with `python -m experiments.analysis{' --quick' if quick else ''} "
        f"--out {out_dir.as_posix()}`; total {time.perf_counter() - t0:.0f} s on a 2-core machine shared with other jobs. "
        "Symmetric noise moves each selected label to another class (`lip_agnostic.noise.symmetric_noise`, `include_true=False`); "
        "every network of a dataset starts from the same initialisation (seed 0) and sees the same batch order; "
        "'other init seed' is a clean run with seed 1, the yardstick for how much a subspace moves without any noise. "
        "Angles are the largest principal angle between the top-k **right (class-side)** singular subspaces of the final-layer weights "
        "(`lip_agnostic.principal_subspace_angle`); 'early' is the snapshot after a quarter of the epochs. "
        "The energy analysis needs a shared feature space, so it uses ridge on the pixels and a CE-trained linear head on the "
        "frozen features of the clean MLP (both noisy and clean heads see the same features).\n",
    ]
    if skipped:
        head.append("Skipped: " + "; ".join(skipped) + "\n")
    head.append("**Conclusions from the numbers below.**\n")
    head.extend(f"- {c}" for c in conclusions)
    head.append("")
    return "\n".join(head + sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.analysis [--quick] [--out DIR] [--markdown FILE]``."""
    ap = argparse.ArgumentParser(prog="python -m experiments.analysis", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only, few epochs (< 1 minute)")
    ap.add_argument("--out", type=Path, default=Path("docs/figures"), help="folder for the PNGs (default docs/figures)")
    ap.add_argument("--markdown", type=Path, default=None, help="write the Markdown here (default: print it)")
    a = ap.parse_args(argv)
    md_dir = a.markdown.parent if a.markdown is not None else a.out.parent
    md = run_analysis(a.out, a.quick, md_dir=md_dir, log=lambda s: print(s, flush=True))
    if a.markdown is not None:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(md)
        print(f"wrote {a.markdown}")
    else:
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
