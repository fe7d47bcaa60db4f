"""The scikit-learn face against cleanlab's ``CleanLearning`` on the same estimator (issue 18; beyond the paper).

For scikit-learn's bundled multi-class data sets (``load_digits``, ``load_wine``), a
stratified 70/30 split; the training labels are corrupted (``sym20``, ``sym40``,
``asym40``: digits by Patrini et al.'s map, wine by the cycle 0 -> 1 -> 2 -> 0), the
test labels stay clean. The estimator is ``StandardScaler`` + ``LogisticRegression``
(``max_iter=2000``) for every method:

* ``plain`` — the estimator fit on every noisy training row;
* ``lip`` — ``LIPClassifier(estimator)`` as committed (the guarded full tail on a 20 %
  stratified hold-out of the training rows);
* ``lip_labels`` — ``LIPClassifier(estimator, label_repair="auto")``;
* ``cleanlab`` — ``cleanlab.classification.CleanLearning(estimator, cv_n_folds=5)``: it finds
  the issues from cross-validated probabilities, drops them, refits the estimator;
* ``oracle`` — the estimator fit on the clean training labels (a ceiling).

Also the precision / recall of the flagged rows against the true flips (``lip_labels``'s
``label_issues_`` and cleanlab's ``label_issues_df``). Ten seeds per (data set, noise);
one run takes about a minute on one core.

Run: ``OMP_NUM_THREADS=1 python -m experiments.label_study_sklearn`` (writes
``experiments/results/label_study_sklearn.json``; ``--report`` prints the table).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "label_study_sklearn.json"
DATASETS = ("digits", "wine")
NOISES = ("sym20", "sym40", "asym40")
SEEDS = tuple(range(10))
METHODS = ("plain", "lip", "lip_labels", "cleanlab", "oracle")
LABEL = {"plain": "LogisticRegression", "lip": "LIPClassifier (default)",
         "lip_labels": "LIPClassifier(label_repair='auto')", "cleanlab": "CleanLearning (5 folds)",
         "oracle": "clean-label oracle"}
WINE_MAP = {0: 1, 1: 2, 2: 0}


def _data(name: str):
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "wine": datasets.load_wine}[name]
    return loader(return_X_y=True)


def _noisy(name: str, y: np.ndarray, noise: str, seed: int) -> np.ndarray:
    from lip_agnostic import noise as nz

    rate, l = int(noise[-2:]) / 100, int(y.max()) + 1
    if noise.startswith("sym"):
        return np.asarray(nz.symmetric_noise(y, rate, l, seed=seed).labels)
    cmap = "digits" if name == "digits" else WINE_MAP
    return np.asarray(nz.asymmetric_noise(y, rate, cmap, n_classes=l, seed=seed).labels)


def _estimator():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _precision_recall(found: np.ndarray, flipped: np.ndarray) -> tuple[float, float, int]:
    found = np.asarray(found, dtype=int)
    hits = int(flipped[found].sum()) if found.size else 0
    return (hits / found.size if found.size else float("nan"), hits / max(int(flipped.sum()), 1), int(found.size))


def run_one(name: str, noise: str, seed: int) -> dict:
    from cleanlab.classification import CleanLearning
    from sklearn.model_selection import train_test_split

    from lip_agnostic.adapters.sklearn import LIPClassifier

    X, y = _data(name)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    yn = _noisy(name, ytr, noise, seed)
    flipped = yn != ytr
    acc, flags, sec = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in METHODS:
            t = time.process_time()
            if method == "plain":
                model = _estimator().fit(Xtr, yn)
            elif method == "oracle":
                model = _estimator().fit(Xtr, ytr)
            elif method == "lip":
                model = LIPClassifier(_estimator(), random_state=seed).fit(Xtr, yn)
            elif method == "lip_labels":
                model = LIPClassifier(_estimator(), label_repair="auto", random_state=seed).fit(Xtr, yn)
                flags[method] = _precision_recall(model.label_issues_.indices, flipped)
                acc["lip_labels_chosen"] = model.lip_result_.selection.labels
            else:
                model = CleanLearning(_estimator(), cv_n_folds=5, seed=seed, verbose=False).fit(Xtr, yn)
                flags[method] = _precision_recall(np.flatnonzero(model.label_issues_df["is_label_issue"]), flipped)
            sec[method] = time.process_time() - t
            acc[method] = float(np.mean(model.predict(Xte) == yte))
    return {"dataset": name, "noise": noise, "seed": seed, "n_train": int(ytr.size), "n_test": int(yte.size),
            "noise_rate": float(flipped.mean()), "acc": acc, "flags": flags, "seconds": sec}


def _key(name: str, noise: str, seed: int) -> str:
    return f"{name}/{noise}/{seed}"


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"records": {}}


def run(log=print) -> dict:
    res = _load()
    for name in DATASETS:
        for noise in NOISES:
            for seed in SEEDS:
                k = _key(name, noise, seed)
                if k in res["records"]:
                    continue
                res["records"][k] = run_one(name, noise, seed)
                RESULTS.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
                a = res["records"][k]["acc"]
                log(f"{k}: " + ", ".join(f"{m} {a[m]:.3f}" for m in METHODS))
    return res


def report_markdown(res: dict) -> str:
    """The EVIDENCE.md table: clean-test accuracy, mean [min, max] over seeds, and the flags' precision/recall."""
    groups: dict[tuple, list[dict]] = {}
    for r in res["records"].values():
        groups.setdefault((r["dataset"], r["noise"]), []).append(r)
    lines = ["| data, noise (seeds, train / test rows) | " + " | ".join(LABEL[m] for m in METHODS)
             + " | flags, precision / recall: label_repair | CleanLearning |", "|" + "---|" * (len(METHODS) + 3)]
    for (name, noise), recs in sorted(groups.items(), key=lambda kv: (DATASETS.index(kv[0][0]),
                                                                       NOISES.index(kv[0][1]))):
        cells = []
        for m in METHODS:
            v = np.array([r["acc"][m] for r in recs])
            cells.append(f"{100 * v.mean():.1f} [{100 * v.min():.1f}, {100 * v.max():.1f}]")
        pr = []
        for m in ("lip_labels", "cleanlab"):
            p = np.nanmean([r["flags"][m][0] for r in recs])
            rc = np.mean([r["flags"][m][1] for r in recs])
            pr.append(f"{p:.2f} / {rc:.2f}")
        r0 = recs[0]
        lines.append(f"| {name}, {noise} ({len(recs)}, {r0['n_train']} / {r0['n_test']}) | " + " | ".join(cells)
                     + " | " + " | ".join(pr) + " |")
    chosen: dict[str, int] = {}
    for r in res["records"].values():
        chosen[r["acc"]["lip_labels_chosen"]] = chosen.get(r["acc"]["lip_labels_chosen"], 0) + 1
    n = len(res["records"])
    lines += ["", "Labels the guard chose for `label_repair='auto'` over all "
              f"{n} runs: " + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="print the table from the saved records")
    a = ap.parse_args(argv)
    res = _load() if a.report else run()
    print(report_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
