"""Quick check of the label-issue finders (issue 18, items 1, 2, 5; beyond the paper).

On scikit-learn's digits (and a Fashion-MNIST subsample when the Debian package is present), with
40 % symmetric and 40 % asymmetric noise on the fit and validation labels, it flags suspect rows
with

* out-of-fold ridge heads (5 folds, one pass of statistics, lip_agnostic.out_of_fold) +
  a temperature fit on the noisy validation rows + confident learning (lip_agnostic.confident_learning);
* cleanlab's ``find_label_issues`` on the *same* probabilities (agreement with ours);
* the neighbour vote on the same features (lip_agnostic.neighbours, k = 10, cosine);
* for reference, cleanlab on 5-fold cross-validated LogisticRegression probabilities (it retrains 5 times);

and prints precision / recall of the flags against the true flips and the wall time of each.
Features: the raw pixels, and the hidden layer of a small scikit-learn MLP trained on the noisy
labels (penultimate-like). One core, a few minutes at most.

Run: ``OMP_NUM_THREADS=1 python experiments/label_issues_check.py [--no-fashion]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.datasets import load_digits, load_fashion_mnist  # noqa: E402
from lip_agnostic.confident_learning import confident_learning  # noqa: E402
from lip_agnostic.neighbours import neighbour_disagreement  # noqa: E402
from lip_agnostic.noise import asymmetric_noise, symmetric_noise  # noqa: E402
from lip_agnostic.out_of_fold import DEFAULT_OOF_RIDGE, out_of_fold_scores  # noqa: E402
from lip_agnostic.temperature import fit_temperature, softmax  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "label_issues_check.json"


@contextlib.contextmanager
def _stable_argsort():
    """cleanlab breaks ties (rounding the confident joint, ranking margins) with NumPy's default argsort,
    which is not stable on every CPU; with a stable one its rule is exactly ours."""
    orig = np.argsort
    np.argsort = lambda a, axis=-1, kind=None, order=None, **kw: orig(a, axis=axis, kind="stable", order=order, **kw)
    try:
        yield
    finally:
        np.argsort = orig


def pr(flags, flipped):
    flags, flipped = np.asarray(flags, bool), np.asarray(flipped, bool)
    tp = int(np.sum(flags & flipped))
    return (tp / max(int(flags.sum()), 1), tp / max(int(flipped.sum()), 1), float(flags.mean()))


def mlp_hidden(x_fit, y_fit, xs, seed):
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=seed).fit(x_fit, y_fit)
    fit_acc = float(np.mean(mlp.predict(x_fit) == y_fit))
    return [np.maximum(x @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0) for x in xs], fit_acc


def run_one(name, feats_fit, feats_val, noisy_fit, clean_fit, noisy_val, l, ridges):
    from cleanlab.filter import find_label_issues

    flipped = noisy_fit != clean_fit
    rows = {}
    for ridge in ridges:
        t0 = time.perf_counter()
        batches = [(feats_fit[a:a + 512], noisy_fit[a:a + 512]) for a in range(0, len(noisy_fit), 512)]
        oof = out_of_fold_scores(batches, l, folds=5, ridge=ridge)
        temp = fit_temperature(oof.heads.full_logits(feats_val), noisy_val)
        P = softmax(oof.logits, scale=temp.scale)
        ours = confident_learning(P, noisy_fit)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = find_label_issues(noisy_fit, P, n_jobs=1)
        t_theirs = time.perf_counter() - t0
        tag = f"oof ridge={ridge:g}"
        rows[f"{tag} + CL (ours)"] = (*pr(ours.flags, flipped), t_ours)
        rows[f"{tag} + cleanlab find_label_issues"] = (*pr(theirs, flipped), t_theirs)
        rows[f"{tag}: flags agreeing ours vs cleanlab"] = (float(np.mean(ours.flags == theirs)), None, None, None)
        with warnings.catch_warnings(), _stable_argsort():
            warnings.simplefilter("ignore")
            stable = find_label_issues(noisy_fit, P, n_jobs=1)
        rows[f"{tag}: flags agreeing ours vs cleanlab with a stable argsort"] = (
            float(np.mean(ours.flags == stable)), None, None, None)
        if ridge == DEFAULT_OOF_RIDGE:
            rows[f"{tag}: temperature T, val NLL before->after, ECE before->after"] = (
                temp.scale, f"{temp.nll_before:.3f}->{temp.nll_after:.3f}",
                f"{temp.ece_before:.3f}->{temp.ece_after:.3f}", None)
            rows[f"{tag}: suggested label right on flagged flips"] = (
                float(np.mean(ours.suggested[ours.flags & flipped] == clean_fit[ours.flags & flipped])), None, None,
                None)
    t0 = time.perf_counter()
    knn = neighbour_disagreement(feats_fit, noisy_fit, l, k=10, metric="cosine")
    rows["kNN vote (k=10, cosine)"] = (*pr(knn.flags, flipped), time.perf_counter() - t0)
    rows["kNN vote: suggested label right on flagged flips"] = (
        float(np.mean(knn.suggested[knn.flags & flipped] == clean_fit[knn.flags & flipped])), None, None, None)
    t0 = time.perf_counter()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Plr = cross_val_predict(LogisticRegression(max_iter=300), feats_fit, noisy_fit, cv=5, method="predict_proba")
        lr = find_label_issues(noisy_fit, Plr, n_jobs=1)
    rows["cleanlab on 5-fold LogisticRegression probs (5 refits)"] = (*pr(lr, flipped), time.perf_counter() - t0)
    print(f"\n### {name}  (true flips: {flipped.mean():.3f} of {len(flipped)} fit rows)")
    print("| method | precision | recall | flagged share | time (s) |")
    print("|---|---|---|---|---|")
    for k, v in rows.items():
        cells = [("" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))) for x in v]
        print(f"| {k} | " + " | ".join(cells) + " |")
    return rows


def noisy(kind, y, l, seed, dataset):
    if kind == "sym40":
        return symmetric_noise(y, 0.4, l, seed=seed).labels
    return asymmetric_noise(y, 0.4, dataset, n_classes=l, seed=seed).labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-fashion", action="store_true")
    ap.add_argument("--fashion-rows", type=int, default=10_000)
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    out = {}
    sets = []
    d = load_digits(test_fraction=0.3, seed=0)
    half = d.x_test.shape[0] // 2
    sets.append(("digits", d.x_train.astype(np.float64), d.y_train, d.x_test[:half].astype(np.float64),
                 d.y_test[:half], 10))
    if not args.no_fashion and Path("/usr/share/datasets/fashion-mnist").exists():
        f = load_fashion_mnist(limit_train=args.fashion_rows + 2000)
        sets.append(("fashion-mnist", f.x_train[:args.fashion_rows].astype(np.float64), f.y_train[:args.fashion_rows],
                     f.x_train[args.fashion_rows:].astype(np.float64), f.y_train[args.fashion_rows:], 10))
    for dname, xf, yf, xv, yv, l in sets:
        for kind in ("sym40", "asym40"):
            nf = noisy(kind, yf, l, 1, dname)
            nv = noisy(kind, yv, l, 2, dname)
            (hf, hv), fit_acc = mlp_hidden(xf, nf, [xf, xv], seed=0)
            feats = [("mlp hidden (64)", hf, hv, f"MLP fits {fit_acc:.2f} of its noisy labels")]
            feats.insert(0, ("pixels", xf, xv, ""))
            for fname, ff, fv, note in feats:
                name = f"{dname} {kind}, {fname} {note}".strip()
                ridges = (1e-3, 1e-2, 1e-1, 1.0)
                out[name] = run_one(name, ff, fv, nf, yf, nv, l, ridges)
    total = time.perf_counter() - t_all
    print(f"\ntotal wall time {total:.1f} s (threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"total_s": total, "rows": out}, indent=1, default=str))


if __name__ == "__main__":
    main()
