"""LIPCallback under tf.distribute.MirroredStrategy on 2 logical CPU devices (run in a subprocess).

TensorFlow's logical devices must be configured before TF initializes, hence a
separate process. Prints one JSON line: how far the strategy run's kernel is
from (a) the core's ``refine_batches`` (the faces' defaults: ``tail="auto"``) on
features computed directly and (b) the same refinement done without a strategy;
the bias too (the full tail, ``rank="auto"``'s default, refits it).

Usage: ``KERAS_BACKEND=tensorflow python tests/keras_backends/mirrored_check.py``
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from experiments.datasets import load_digits  # noqa: E402
from lip_agnostic import refine_batches  # noqa: E402
from lip_agnostic.adapters.keras import LIPCallback, refine_model  # noqa: E402


def build() -> keras.Model:
    inp = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(10, name="classifier")(h))


class AtTrainEnd(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


def main() -> None:
    d = load_digits()
    rng = np.random.default_rng(3)
    y = d.y_train.copy()
    flip = rng.random(y.shape[0]) < 0.4
    y[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    x, xv, yv = d.x_train, d.x_test, d.y_test

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build()
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    out = {"replicas": int(strategy.num_replicas_in_sync)}
    for k in (4, "auto"):
        rec = AtTrainEnd()
        val = (xv, yv) if k == "auto" else None  # held-out data only where a rank is chosen (else refused)
        lip = LIPCallback(data=(x, y), rank=k, validation=val)
        model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[rec, lip])
        got = model.get_layer("classifier").kernel.numpy()
        W = rec.weights
        feats = lambda a: np.maximum(a @ W[0] + W[1], 0.0).astype(np.float32)  # noqa: E731
        ref = refine_batches(W[2], [(feats(x), y)], rank=k, validation=None if val is None else [(feats(xv), yv)],
                             bias=W[3])
        direct = ref.weight
        direct_b = W[3] if ref.bias is None else ref.bias
        plain = build()
        plain.set_weights(W)
        res = refine_model(plain, (x, y), rank=k, validation=val)
        out[str(k)] = {
            "k": lip.report["selection"]["k"],
            "k_plain": res.selection.k,
            "changed": bool(np.abs(got - W[2]).max() > 1e-4),
            "tail": lip.report["tail"],
            "vs_direct": float(np.abs(got - direct).max()),
            "bias_vs_direct": float(np.abs(model.get_layer("classifier").bias.numpy() - direct_b).max()),
            "vs_plain": float(np.abs(got - plain.get_layer("classifier").kernel.numpy()).max()),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
