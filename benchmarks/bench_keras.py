"""Benchmark the Keras adapter: per-epoch overhead of LIPCallback, and the train-end pass vs predict.

Both numbers are ratios against a baseline timed in the same run, with the
repetitions interleaved (baseline, candidate, baseline, ...) and medians taken,
because absolute times on a shared machine drift.

1. **Per-epoch overhead** (default mode, ``when="train_end"``): epoch periods
   (``on_epoch_end`` to ``on_epoch_end``, measured by a timer callback placed
   *last*, so LIP's epoch hooks are inside the period) of ``fit`` with
   ``LIPCallback`` vs without. First epoch of each fit (tracing) dropped.
2. **Train-end pass vs predict**: ``refine_model`` (what ``on_train_end``
   runs: feature model, one streamed pass, core refit, assign) vs one
   ``model.predict`` over the same data with the same batch size, both cold
   (fresh model copy each time, so both pay their tf.function tracing), and
   warm (second call on the same objects).

Usage::

    python benchmarks/bench_keras.py [--quick] [--backend tensorflow|torch]

Prints a Markdown table (copied into docs/BENCHMARKS.md, section "Keras adapter").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    p.add_argument("--quick", action="store_true", help="fewer samples and repetitions (smoke run)")
    p.add_argument("--reps", type=int, default=None)
    return p.parse_args()


ARGS = _parse()
os.environ["KERAS_BACKEND"] = ARGS.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from experiments.datasets import load_digits, load_fashion_mnist  # noqa: E402
from lip_agnostic.adapters.keras import LIPCallback, refine_model  # noqa: E402

BATCH = 256


class EpochTimer(keras.callbacks.Callback):
    """Epoch periods: time between consecutive on_epoch_end calls (put it last)."""

    def on_train_begin(self, logs=None):
        self.marks = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs=None):
        self.marks.append(time.perf_counter())

    def periods(self) -> list[float]:
        return list(np.diff(self.marks))[1:]  # drop epoch 1 (tracing)


def load(quick: bool):
    try:
        d = load_fashion_mnist(limit_train=6000 if quick else 30000)
    except FileNotFoundError:
        d = load_digits()
    rng = np.random.default_rng(0)
    y = d.y_train.copy()
    flip = rng.random(y.shape[0]) < 0.4
    y[flip] = (y[flip] + rng.integers(1, d.n_classes, int(flip.sum()))) % d.n_classes
    return d, y


def build(d) -> keras.Model:
    inp = keras.Input((d.x_train.shape[1],))
    h = keras.layers.Dense(256, activation="relu")(inp)
    h = keras.layers.Dense(128, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(d.n_classes)(h))


def compiled(d, weights=None) -> keras.Model:
    m = build(d)
    if weights is not None:
        m.set_weights(weights)
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _timed(fn, bucket: list):
    def wrapper(*args, **kwargs):
        s = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - s)
    return wrapper


def epoch_overhead(d, y, reps: int, epochs: int) -> dict:
    """Median epoch period with and without LIPCallback (interleaved A/B), and the time
    spent inside LIP's own epoch-time hooks during those fits (contention-proof)."""
    keras.utils.set_random_seed(0)
    w0 = compiled(d).get_weights()
    base, lip, hook_time = [], [], []
    for r in range(reps):
        order = ("base", "lip") if r % 2 == 0 else ("lip", "base")
        for kind in order:
            m = compiled(d, w0)
            timer = EpochTimer()
            cbs = [timer]
            if kind == "lip":
                # default mode; its train-end pass runs after the last on_epoch_end, outside the periods
                cb = LIPCallback(data=(d.x_train, y))
                hooks: list = []
                # LIP overrides no batch hook (Keras keeps async batch dispatch); time the ones it has
                for name in ("on_train_begin", "on_epoch_begin", "on_epoch_end"):
                    setattr(cb, name, _timed(getattr(cb, name), hooks))
                cbs = [cb, timer]
            m.fit(d.x_train, y, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=cbs)
            (base if kind == "base" else lip).extend(timer.periods())
            if kind == "lip":
                hook_time.append(sum(hooks) / epochs)
    mb, ml = statistics.median(base), statistics.median(lip)
    return {"base": mb, "lip": ml, "ratio": ml / mb, "hook_per_epoch": statistics.median(hook_time)}


def train_end_vs_predict(d, y, reps: int) -> dict:
    keras.utils.set_random_seed(1)
    trained = compiled(d)
    trained.fit(d.x_train, y, epochs=1, batch_size=BATCH, verbose=0)
    w = trained.get_weights()
    t = {"predict cold": [], "predict warm": [], "LIP auto cold": [], "LIP auto warm": [],
         "LIP k=5 cold": []}
    for r in range(reps):
        jobs = ["predict", "auto", "fixed"]
        if r % 2:
            jobs.reverse()
        for job in jobs:
            m = compiled(d, w)
            if job == "predict":
                for label in ("predict cold", "predict warm"):
                    s = time.perf_counter()
                    m.predict(d.x_train, batch_size=BATCH, verbose=0)
                    t[label].append(time.perf_counter() - s)
            elif job == "auto":
                cb = LIPCallback(data=(d.x_train, y), batch_size=BATCH)
                cb.set_model(m)
                for label in ("LIP auto cold", "LIP auto warm"):
                    m.set_weights(w)
                    s = time.perf_counter()
                    cb.refine_now()
                    t[label].append(time.perf_counter() - s)
            else:
                s = time.perf_counter()
                refine_model(m, (d.x_train, y), rank=5, batch_size=BATCH)
                t["LIP k=5 cold"].append(time.perf_counter() - s)
    return {k: statistics.median(v) for k, v in t.items()}


def main() -> None:
    reps = ARGS.reps or (2 if ARGS.quick else 5)
    d, y = load(ARGS.quick)
    n, q = d.x_train.shape
    print(f"# Keras adapter benchmark: backend={keras.backend.backend()}, data={d.name} n={n} d={q}, "
          f"MLP {q}-256-128-{d.n_classes}, batch {BATCH}, reps {reps}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load avg {os.getloadavg()[0]:.1f}")
    eo = epoch_overhead(d, y, reps, epochs=4 if ARGS.quick else 6)
    print("\n| measurement | baseline | with LIP | ratio |\n|---|---|---|---|")
    print(f"| epoch period, fit vs fit + LIPCallback (default mode), A/B | {eo['base']:.3f} s | "
          f"{eo['lip']:.3f} s | {eo['ratio']:.3f} |")
    print(f"| LIPCallback's own hook time per epoch vs epoch period | {eo['base']:.3f} s | "
          f"{eo['hook_per_epoch'] * 1e6:.1f} us | {1 + eo['hook_per_epoch'] / eo['base']:.6f} |")
    tm = train_end_vs_predict(d, y, reps)
    for temp in ("cold", "warm"):
        p = tm[f"predict {temp}"]
        a = tm[f"LIP auto {temp}"]
        print(f"| train-end pass k='auto' vs one model.predict ({temp}) | {p:.3f} s | {a:.3f} s | {a / p:.3f} |")
    p, f = tm["predict cold"], tm["LIP k=5 cold"]
    print(f"| train-end pass k=5 vs one model.predict (cold) | {p:.3f} s | {f:.3f} s | {f / p:.3f} |")
    print(f"\nload avg at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
