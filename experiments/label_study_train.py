"""Train and cache the networks of the label-aware study (issue 18; beyond the paper).

One training run per (data set, model, noise, seed) gives every snapshot the
study evaluates, so the CPU pays for each network once:

* Fashion-MNIST (the Debian package; 60k training images, 10k test): the 60k pool
  is corrupted, then split into 50k noisy fit rows and 10k noisy held-out rows
  (a seeded permutation); the 10k test images keep their clean labels.
  - MLP 784-512-256-10 (ReLU, Adam 1e-3, batch 128, CE): snapshot ``converged``
    after 20 epochs and ``long`` after :data:`MLP_LONG_EPOCHS` epochs of the same run
    (the memorizing regime; its fit of the noisy labels is recorded).
  - CNN (two 5x5 convolutions 8/16 channels, q = 256): snapshot ``converged``
    after 10 epochs.
* Fonts (62 classes rendered from the installed fonts, split by family; 4
  renderings per font): the training pool split 80/20 into fit and held-out
  rows; MLP 784-512-256-62, 20 epochs.

Noise: ``sym20``, ``sym40`` (symmetric), ``asym40`` (class map of the data set)
and ``inst40`` (instance-dependent, Xia et al. 2020, on the pixels), on the fit
and held-out labels alike. Seeds 0, 1 and 2 (seed-major: a cut run still covers every group).

Every run is cached as one ``.npz`` under ``experiments/_cache/label_study/``
(git-ignored): snapshots (W, b, float32 features of the fit, held-out and test
rows), clean and noisy labels, the forward-pass CPU seconds and the training
seconds. A cached run is never retrained.

Run: ``OMP_NUM_THREADS=1 python -m experiments.label_study_train`` (start it twice
to use two cores: each process claims the next untrained run with a lock file).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .accuracy import Setting, corrupt
from .datasets import load_fashion_mnist, load_fonts
from .train import TrainConfig, train_cnn, train_mlp

__all__ = ["Run", "RUNS", "CACHE_DIR", "run_path", "load_run", "train_run", "NOISES", "SEEDS"]

CACHE_DIR = Path(__file__).resolve().parent / "_cache" / "label_study"
NOISES = ("sym20", "sym40", "asym40", "inst40")
SEEDS = (0, 1, 2)
MLP_EPOCHS, MLP_LONG_EPOCHS, CNN_EPOCHS, FONT_EPOCHS = 20, 100, 10, 20
HIDDEN = (512, 256)


@dataclass(frozen=True)
class Run:
    dataset: str  # "fashion-mnist" | "fonts"
    model: str  # "mlp" | "cnn"
    noise: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.noise}-s{self.seed}"


def _runs() -> tuple[Run, ...]:
    out = []
    for seed in SEEDS:  # seed-major: a cut run still covers every group once
        for noise in ("sym40", "asym40", "sym20", "inst40"):
            out.append(Run("fashion-mnist", "mlp", noise, seed))
            out.append(Run("fashion-mnist", "cnn", noise, seed))
        for noise in ("sym40", "asym40", "sym20", "inst40"):
            out.append(Run("fonts", "mlp", noise, seed))
    return tuple(out)


RUNS = _runs()


def run_path(run: Run) -> Path:
    return CACHE_DIR / f"{run.name}.npz"


def _noisy(dataset: str, y: np.ndarray, x: np.ndarray, l: int, noise: str, seed: int) -> np.ndarray:
    from lip_agnostic import noise as nz

    rate = int(noise[-2:]) / 100
    if noise.startswith("inst"):
        return nz.instance_dependent_noise(y, rate, x, l, seed=seed).labels
    kind = "symmetric" if noise.startswith("sym") else "asymmetric"
    C, _ = corrupt(dataset, y, l, Setting(kind, rate), seed)
    return np.argmax(C, axis=1)


def _data(dataset: str):
    if dataset == "fashion-mnist":
        return load_fashion_mnist()
    return load_fonts()


def train_run(run: Run) -> Path:
    """Train one run (or find it cached); returns the cache file."""
    path = run_path(run)
    if path.exists():
        return path
    d = _data(run.dataset)
    l = d.n_classes
    noisy = _noisy(run.dataset, d.y_train, d.x_train, l, run.noise, 1000 + run.seed)
    perm = np.random.default_rng(run.seed).permutation(d.x_train.shape[0])
    n_val = 10_000 if run.dataset == "fashion-mnist" else d.x_train.shape[0] // 5
    vi, fi = perm[:n_val], perm[n_val:]
    extra = {"val": d.x_train[vi], "test": d.x_test}
    C = np.eye(l, dtype=bool)[noisy[fi]]
    t0 = time.process_time()
    if run.model == "cnn":
        cfg = TrainConfig(hidden=HIDDEN, epochs=CNN_EPOCHS, early_epoch=CNN_EPOCHS, seed=run.seed)
        snaps = {"converged": train_cnn(d.x_train[fi], C, extra, cfg, image_shape=d.image_shape)["late"]}
    elif run.dataset == "fashion-mnist":
        cfg = TrainConfig(hidden=HIDDEN, epochs=MLP_LONG_EPOCHS, early_epoch=MLP_EPOCHS, seed=run.seed)
        s = train_mlp(d.x_train[fi], C, extra, cfg)
        snaps = {"converged": s["early"], "long": s["late"]}
    else:
        cfg = TrainConfig(hidden=HIDDEN, epochs=FONT_EPOCHS, early_epoch=FONT_EPOCHS, seed=run.seed)
        snaps = {"converged": train_mlp(d.x_train[fi], C, extra, cfg)["late"]}
    train_s = time.process_time() - t0
    arrays: dict[str, np.ndarray] = {}
    for tag, s in snaps.items():
        arrays.update(s.to_arrays(tag))
    meta = {"run": run.name, "train_s": train_s, "snapshots": sorted(snaps), "n_classes": l,
            "epochs": {tag: s.epoch for tag, s in snaps.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.asarray(json.dumps(meta)), y_fit=noisy[fi], y_fit_clean=d.y_train[fi],
             y_val=noisy[vi], y_val_clean=d.y_train[vi], y_test=d.y_test, **arrays)
    tmp.replace(path)
    return path


def load_run(run: Run) -> dict:
    """The cached arrays of one run: ``meta``, labels, and per snapshot tag a ``HeadSnapshot``."""
    from .train import HeadSnapshot

    z = np.load(run_path(run), allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    out = {"meta": meta, **{k: z[k] for k in ("y_fit", "y_fit_clean", "y_val", "y_val_clean", "y_test")}}
    out["snapshots"] = {tag: HeadSnapshot.from_arrays(z, tag) for tag in meta["snapshots"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="substring of the run names to train")
    a = ap.parse_args(argv)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for run in RUNS:
        if (a.only and a.only not in run.name) or run_path(run).exists():
            continue
        lock = run_path(run).with_suffix(".lock")
        try:  # another process trains it
            lock.touch(exist_ok=False)
        except FileExistsError:
            continue
        t = time.time()
        try:
            train_run(run)
        except FileNotFoundError as e:  # a data set that is not installed
            print(f"skip {run.name}: {e}", flush=True)
            continue
        finally:
            lock.unlink()
        print(f"{run.name}: {time.time() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
