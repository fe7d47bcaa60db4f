"""Keras 3 adapter: LIPCallback / refine_model against the core, on a real digits MLP with noisy labels.

The module runs on the backend in ``KERAS_BACKEND`` (TensorFlow by default);
``test_keras_backends.py`` runs it again under the torch backend in a subprocess.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("sklearn")

from experiments.datasets import load_digits  # noqa: E402
from lip_agnostic import lip_refine, project_principal, refine_batches, summarize_change  # noqa: E402
from lip_agnostic.adapters.keras import LIPCallback, LIP_OPTIONS, refine_model  # noqa: E402
from lip_agnostic.errors import NonFiniteError, OptionError  # noqa: E402

# Keras' own TF code converts variables with np.array(...) (NumPy 2 copy= deprecation): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

N_CLASSES = 10
HIDDEN = 32
NOISE = 0.4


# --------------------------------------------------------------------------- data and models
@pytest.fixture(scope="module")
def digits():
    """Digits with 40 % symmetric label noise on the training split (seeded)."""
    d = load_digits()
    rng = np.random.default_rng(7)
    flip = rng.random(d.y_train.shape[0]) < NOISE
    noisy = d.y_train.copy()
    noisy[flip] = (noisy[flip] + rng.integers(1, N_CLASSES, int(flip.sum()))) % N_CLASSES
    return d.x_train, noisy, d.x_test, d.y_test


def _functional():
    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(HIDDEN, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(N_CLASSES, name="classifier")(h)
    return keras.Model(inp, out, name="mlp")


def _sequential():
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(HIDDEN, activation="relu", name="hidden"),
         keras.layers.Dense(N_CLASSES, name="classifier")], name="seq_mlp")


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="sub_mlp")
        self.hidden = keras.layers.Dense(HIDDEN, activation="relu", name="hidden")
        self.classifier = keras.layers.Dense(N_CLASSES, name="classifier")

    def call(self, x):
        return self.classifier(self.hidden(x))


BUILDERS = {"functional": _functional, "sequential": _sequential, "subclassed": _Subclassed}


def _built(builder, weights):
    model = builder()
    model(np.zeros((1, 64), np.float32))
    model.set_weights(weights)
    return model


def _compiled(builder, weights, lr=1e-2):
    model = _built(builder, weights)
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def trained(digits):
    """Weights of an MLP trained on the noisy digits (the 'real model')."""
    x, y, _, _ = digits
    keras.utils.set_random_seed(0)
    model = _functional()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model.get_weights()


@pytest.fixture
def model(trained):
    return _compiled(_functional, trained)


def _features(weights, x):
    """The classifier's input, computed directly in NumPy (independent of the adapter)."""
    W1, b1 = weights[0], weights[1]
    return np.maximum(x @ W1 + b1, 0.0).astype(np.float32)


class _Recorder(keras.callbacks.Callback):
    """Snapshots the weights at every epoch end and at train end (put it before LIP)."""

    def __init__(self):
        super().__init__()
        self.epochs, self.at_end = [], None

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([np.array(w) for w in self.model.get_weights()])

    def on_train_end(self, logs=None):
        self.at_end = [np.array(w) for w in self.model.get_weights()]


def _kernel(model, name="classifier"):
    return np.asarray(_layer(model, name).kernel.numpy())


def _layer(model, name="classifier"):
    return getattr(model, name) if isinstance(model, _Subclassed) else model.get_layer(name)


def _fit_with(model, digits, lip, *, epochs=1, before=()):
    x, y, _, _ = digits
    rec = _Recorder()
    hist = model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[*before, rec, lip])
    return rec, hist


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


# --------------------------------------------------------------------------- the backend itself
def test_runs_on_the_requested_backend():
    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")


# --------------------------------------------------------------------------- against the core
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_callback_kernel_equals_core_on_direct_features(kind, digits, trained):
    x, y, _, _ = digits
    model = _compiled(BUILDERS[kind], trained)
    lip = LIPCallback(data=(x, y), rank=4)
    rec, hist = _fit_with(model, digits, lip)
    W, b = rec.at_end[2], rec.at_end[3]
    expected = lip_refine(W, _features(rec.at_end, x), y, 4, bias=b)
    _close(_kernel(model), expected)
    assert not np.allclose(_kernel(model), W)  # LIP did change the kernel
    np.testing.assert_array_equal(np.asarray(_layer(model).bias), b)  # bias kept
    assert lip.report["layer"] == "classifier"
    assert hist.history["lip_rank"] == [4]
    assert hist.history["lip_n_fit"] == [x.shape[0]]


@pytest.mark.parametrize("tail", [None, "diagonal"])   # the default ("auto": the full tail here) and the paper
def test_auto_k_with_validation_equals_core(model, digits, tail):
    x, y, xv, yv = digits
    options = {} if tail is None else {"tail": tail}
    lip = LIPCallback(data=(x, y), rank="auto", validation=(xv, yv), **options)
    rec, hist = _fit_with(model, digits, lip)
    W, b = rec.at_end[2], rec.at_end[3]
    F, Fv = _features(rec.at_end, x), _features(rec.at_end, xv)
    if tail == "diagonal":
        expected, expected_b = lip_refine(W, F, y, "auto", bias=b, validation=(Fv, yv)), b
    else:
        ref = refine_batches(W, [(F, y)], rank="auto", validation=[(Fv, yv)], bias=b)
        expected, expected_b = ref.weight, (b if ref.bias is None else ref.bias)
        assert lip.report["tail"] == "full"
    _close(_kernel(model), expected)
    _close(np.asarray(_layer(model, "classifier").bias.numpy()), expected_b)
    sel = lip.report["selection"]
    assert sel["strategy"] == "auto" and sel["n_val"] == xv.shape[0]
    assert sel["extra"]["source"] == "validation"
    assert hist.history["lip_rank"] == [sel["k"]]


def test_auto_k_without_validation_uses_a_holdout(model, digits):
    x, y, _, _ = digits
    lip = LIPCallback(data=(x, y))
    _fit_with(model, digits, lip)
    sel = lip.report["selection"]
    assert sel["extra"]["source"].startswith("holdout")
    assert sel["n_val"] + lip.report["n_fit"] == x.shape[0]


def test_logs_report_the_core_summary(model, digits):
    x, y, _, _ = digits
    lip = LIPCallback(data=(x, y), rank=3)
    rec, hist = _fit_with(model, digits, lip, epochs=2)
    summary = summarize_change(rec.at_end[2], _kernel(model), 3)
    assert len(hist.history["loss"]) == 2
    assert hist.history["lip_top_k_angle"] == [pytest.approx(summary.top_k_angle, abs=1e-4)]
    assert hist.history["lip_kept_relative_change"] == [pytest.approx(summary.kept_relative_change, abs=1e-5)]
    assert hist.history["lip_relative_change"] == [pytest.approx(summary.relative_change, rel=1e-4)]
    assert lip.report["summary"]["k"] == 3 and lip.result.selection.k == 3
    assert set(lip.report) >= {"selection", "summary", "n_fit", "n_degenerate", "layer", "bias_mode"}


def test_bias_modes(model, digits, trained):
    x, y, _, _ = digits
    F = _features(trained, x)
    W, b = trained[2], trained[3]
    assert np.abs(b).max() > 1e-3  # the trained bias is not trivial
    res_sub = refine_model(model, (x, y), rank=5)
    _close(_kernel(model), lip_refine(W, F, y, 5, bias=b))
    fresh = _compiled(_functional, trained)
    res_ign = refine_model(fresh, (x, y), rank=5, bias_mode="ignore")
    _close(_kernel(fresh), lip_refine(W, F, y, 5))  # paper-faithful: bias disregarded
    assert not np.allclose(res_sub.weight, res_ign.weight, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(fresh.get_layer("classifier").bias), b)


def test_one_hot_labels_equal_sparse(model, digits, trained):
    x, y, _, _ = digits
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y]
    refine_model(model, (x, onehot), rank=2)
    _close(_kernel(model), lip_refine(trained[2], _features(trained, x), y, 2, bias=trained[3]))
    col = _compiled(_functional, trained)
    refine_model(col, (x, y[:, None].astype(np.float32)), rank=2)  # (n, 1) float class ids
    _close(_kernel(col), _kernel(model))


@pytest.mark.parametrize("option", [
    {"target_scale": "logits"}, {"degenerate": "keep"}, {"target_scale": 3.0},
])
def test_core_keywords_pass_through(option, model, digits, trained):
    x, y, _, _ = digits
    refine_model(model, (x, y), rank=3, **option)
    _close(_kernel(model), lip_refine(trained[2], _features(trained, x), y, 3, bias=trained[3], **option))


def test_min_gain_passes_through(model, digits, trained):
    x, y, xv, yv = digits
    res = refine_model(model, (x, y), rank="auto", validation=(xv, yv), min_gain=1.0)
    assert res.selection.k == res.selection.m  # no gain can exceed 1: nothing changes
    np.testing.assert_array_equal(_kernel(model), trained[2])
    assert set(LIP_OPTIONS) >= {"holdout", "target_scale", "degenerate", "min_gain", "all_reduce"}


def test_energy_fraction_k(model, digits, trained):
    x, y, _, _ = digits
    res = refine_model(model, (x, y), rank=0.9)
    assert res.selection.strategy == "energy"
    _close(_kernel(model), lip_refine(trained[2], _features(trained, x), y, 0.9, bias=trained[3]))


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_model_features_are_the_inputs(use_bias, digits):
    """The paper's stand-alone linear learner: the classifier's input is the data itself."""
    x, y, _, _ = digits
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(N_CLASSES, use_bias=use_bias)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lip = LIPCallback(data=(x, y), rank=6)
    rec, _ = _fit_with(model, digits, lip, epochs=2)
    W = rec.at_end[0]
    expected = lip_refine(W, x, y, 6, bias=rec.at_end[1] if use_bias else None)
    _close(model.layers[-1].kernel.numpy(), expected)


# --------------------------------------------------------------------------- data kinds
def _tf():
    return pytest.importorskip("tensorflow")


def test_tf_data_pydataset_and_iterables_equal_arrays(digits, trained):
    tf = _tf()
    x, y, _, _ = digits
    ref = refine_model(_compiled(_functional, trained), (x, y), rank=4).weight

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return int(np.ceil(len(x) / 100))

        def __getitem__(self, i):
            return x[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100]

    sources = {
        "tf.data": tf.data.Dataset.from_tensor_slices((x, y)).batch(128),
        "PyDataset": Batches(),
        "generator": ((x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50)),
    }
    for name, source in sources.items():
        m = _compiled(_functional, trained)
        res = refine_model(m, source, rank=4)
        assert res.n_fit == x.shape[0], name
        _close(_kernel(m), ref)


def test_infinite_tf_data_needs_steps(digits, trained):
    tf = _tf()
    x, y, _, _ = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(100).repeat()
    m = _compiled(_functional, trained)
    with pytest.raises(ValueError, match=r"infinite tf.data.Dataset.*steps="):
        refine_model(m, ds, rank=3)
    np.testing.assert_array_equal(_kernel(m), trained[2])
    res = refine_model(m, ds, rank=3, steps=5)
    assert res.n_fit == 500


def test_layer_by_name_object_and_default(digits, trained):
    x, y, _, _ = digits
    kernels = []
    for layer in (None, "classifier"):
        m = _compiled(_functional, trained)
        refine_model(m, (x, y), rank=2, layer=layer)
        kernels.append(_kernel(m))
    m = _compiled(_functional, trained)
    refine_model(m, (x, y), rank=2, layer=m.get_layer("classifier"))
    kernels.append(_kernel(m))
    for kern in kernels[1:]:
        np.testing.assert_array_equal(kern, kernels[0])


def test_nested_model_default_targets_inner_final_dense(digits, trained):
    x, y, _, _ = digits
    inner = _compiled(_functional, trained)
    inp = keras.Input((64,))
    outer = keras.Model(inp, keras.layers.Softmax()(inner(inp)), name="outer")
    res = refine_model(outer, (x, y), rank=3)
    expected = lip_refine(trained[2], _features(trained, x), y, 3, bias=trained[3])
    _close(_kernel(inner), expected)
    assert res.selection.k == 3
    again = _compiled(_functional, trained)
    inp2 = keras.Input((64,))
    outer2 = keras.Model(inp2, again(inp2), name="outer2")
    lip = LIPCallback(data=(x, y), rank=3, layer="mlp/classifier")
    lip.set_model(outer2)
    lip.refine_now()
    assert lip.report["layer"] == "mlp/classifier"
    _close(_kernel(again), expected)


# --------------------------------------------------------------------------- callback ordering
class _FakeMetric(keras.callbacks.Callback):
    """Writes a scripted 'score' into the epoch logs, so EarlyStopping acts deterministically."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]


def test_early_stopping_restores_then_lip_refines(digits, trained):
    x, y, _, _ = digits
    script = [1.0, 0.2, 0.9, 0.9, 0.9, 0.9]  # best at epoch 2 (index 1); stops after epoch 4
    model = _compiled(_functional, trained, lr=5e-2)
    es = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=2, restore_best_weights=True)
    lip = LIPCallback(data=(x, y), rank=3)
    rec, hist = _fit_with(model, digits, lip, epochs=6, before=(_FakeMetric(script), es))
    assert len(hist.history["loss"]) == 4
    best = rec.epochs[1]
    assert not np.allclose(best[2], rec.epochs[-1][2])  # restoring does matter here
    _close(_kernel(model), lip_refine(best[2], _features(best, x), y, 3, bias=best[3]))
    # the documented pitfall: LIP listed before EarlyStopping gets overwritten by the restore
    model2 = _compiled(_functional, trained, lr=5e-2)
    es2 = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=2, restore_best_weights=True)
    rec2 = _Recorder()
    model2.fit(x, y, epochs=6, batch_size=64, verbose=0,
               callbacks=[_FakeMetric(script), rec2, LIPCallback(data=(x, y), rank=3), es2])
    np.testing.assert_array_equal(_kernel(model2), rec2.epochs[1][2])


def test_model_checkpoint_after_lip_holds_refined_weights(digits, trained, tmp_path):
    x, y, _, _ = digits
    model = _compiled(_functional, trained)
    path = str(tmp_path / "after.weights.h5")
    lip = LIPCallback(data=(x, y), rank=3, when="epoch_end")
    ckpt = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    rec = _Recorder()
    hist = model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[rec, lip, ckpt])
    assert hist.history["lip_rank"] == [3, 3] and len(lip.reports) == 2
    last = rec.epochs[-1]
    expected = lip_refine(last[2], _features(last, x), y, 3, bias=last[3])
    saved = _built(_functional, trained)
    saved.load_weights(path)
    _close(_kernel(saved), expected)
    _close(_kernel(model), expected)


def test_periodic_projection_before_checkpoint(digits, trained, tmp_path):
    x, y, _, _ = digits
    model = _compiled(_functional, trained)
    path = str(tmp_path / "proj.weights.h5")
    lip = LIPCallback(data=None, when="never", project_every=1, project_rank=4)
    rec = _Recorder()
    hist = model.fit(x, y, epochs=2, batch_size=64, verbose=0,
                     callbacks=[rec, lip, keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
    assert hist.history["lip_projected_rank"] == [4, 4]
    expected = project_principal(rec.epochs[-1][2], 4)
    saved = _built(_functional, trained)
    saved.load_weights(path)
    _close(_kernel(saved), expected)
    assert np.linalg.matrix_rank(_kernel(saved), tol=1e-4) == 4
    assert lip.report is None  # no LIP refit was asked for


def test_projection_is_off_by_default(model, digits):
    x, y, _, _ = digits
    lip = LIPCallback(data=(x, y), rank=3, when="never")
    rec, hist = _fit_with(model, digits, lip, epochs=1)
    np.testing.assert_array_equal(_kernel(model), rec.at_end[2])
    assert "lip_projected_rank" not in hist.history and "lip_rank" not in hist.history


# --------------------------------------------------------------------------- bad input
def _untouched_after(fn, model, expected, exc, match):
    with pytest.raises(exc, match=match):
        fn()
    np.testing.assert_array_equal(_kernel(model), expected)


@pytest.mark.parametrize("data, exc, match", [
    ("none", ValueError, r"data is required: LIP refits against labels"),
    ("x_only", ValueError, r"data must provide labels.*single array of shape \(1257, 64\)"),
    ("x_none", ValueError, r"must provide labels.*\(x, None\)"),
    ("weighted", ValueError, r"sample_weight.*unweighted"),
    ("short_y", ValueError, r"x has 1257 rows but y has 100"),
    ("dict", TypeError, r"data must be \(x, y\).*got dict"),
])
def test_bad_data_structure(data, exc, match, digits):
    x, y, _, _ = digits
    bad = {"none": None, "x_only": x, "x_none": (x, None), "weighted": (x, y, np.ones(len(y))),
           "short_y": (x, y[:100]), "dict": {"x": x}}[data]
    with pytest.raises(exc, match=match):
        LIPCallback(data=bad, rank=2)


def test_tf_data_without_labels_or_with_weights(digits):
    tf = _tf()
    x, y, _, _ = digits
    with pytest.raises(ValueError, match=r"must provide labels.*tf.data.Dataset of single elements"):
        LIPCallback(data=tf.data.Dataset.from_tensor_slices(x).batch(10))
    with pytest.raises(ValueError, match=r"sample_weight"):
        LIPCallback(data=tf.data.Dataset.from_tensor_slices((x, y, y)).batch(10))


@pytest.mark.parametrize("labels, match", [
    ("too_big", r"labels must lie in \[0, 10\).*max 10"),
    ("negative", r"labels must lie in \[0, 10\).*min -1"),
    ("fractional", r"non-integer class ids"),
    ("wrong_width", r"has 9 columns .* 10 units"),
    ("nan_onehot", r"NaN/Inf"),
])
def test_bad_labels_fail_before_training(labels, match, model, digits, trained):
    x, y, _, _ = digits
    bad = {
        "too_big": np.where(np.arange(len(y)) == 5, 10, y),
        "negative": np.where(np.arange(len(y)) == 5, -1, y),
        "fractional": y + 0.5,
        "wrong_width": np.eye(9, dtype=np.float32)[y % 9],
        "nan_onehot": np.where(np.arange(len(y))[:, None] == 3, np.nan, np.eye(10)[y]),
    }[labels]
    lip = LIPCallback(data=(x, bad), rank=2)
    _untouched_after(lambda: model.fit(x, y, epochs=1, verbose=0, callbacks=[lip]),
                     model, trained[2], ValueError, match)
    assert model.optimizer.iterations.numpy() == 0  # refused before the first step


def test_bad_stream_labels_leave_kernel_untouched(model, digits):
    tf = _tf()
    x, y, _, _ = digits
    bad = tf.data.Dataset.from_tensor_slices((x, np.where(np.arange(len(y)) == 700, 12, y))).batch(100)
    lip = LIPCallback(data=bad, rank=2)
    rec = _Recorder()
    with pytest.raises(ValueError, match=r"LIP on layer 'classifier': data labels must lie in \[0, 10\).*max 12.*left unchanged"):
        model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[rec, lip])
    np.testing.assert_array_equal(_kernel(model), rec.at_end[2])


def _linear_hidden():
    """A hidden layer without an activation: a NaN input reaches the classifier's features on every
    CPU (oneDNN's ReLU can map NaN to 0, so with ``relu`` whether it does depends on the machine)."""
    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(HIDDEN, name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(N_CLASSES, name="classifier")(h), name="mlp_linear")


@pytest.mark.parametrize("tail", ["diagonal", "full"])
@pytest.mark.parametrize("where", ["data", "validation"])
def test_nan_features_leave_kernel_untouched(where, tail, digits):
    x, y, xv, yv = digits
    keras.utils.set_random_seed(0)
    model = _linear_hidden()
    before = _kernel(model).copy()
    x_bad = x.copy()
    x_bad[10, 3] = np.nan
    kwargs = {"data": (x_bad, y)} if where == "data" else {"data": (x, y), "validation": (x_bad, y)}
    _untouched_after(lambda: refine_model(model, rank="auto", tail=tail, **kwargs), model, before,
                     ValueError, r"LIP on layer 'classifier': .*NaN/Inf.*left unchanged")


def test_nan_kernel_is_refused(model, digits, trained):
    x, y, _, _ = digits
    bad = trained[2].copy()
    bad[0, 0] = np.inf
    model.get_layer("classifier").kernel.assign(bad)
    _untouched_after(lambda: refine_model(model, (x, y), rank=2), model, bad,
                     ValueError, r"W contains 1 NaN/Inf.*left unchanged")


def test_lora_layer_is_refused_before_training(model, digits, trained):
    x, y, _, _ = digits
    model.get_layer("classifier").enable_lora(2)
    lip = LIPCallback(data=(x, y), rank=2)
    with pytest.raises(ValueError, match=r"'classifier' has LoRA enabled.*cannot be assigned"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[lip])
    assert model.optimizer.iterations.numpy() == 0


def test_quantized_layer_is_refused(model, digits):
    x, y, _, _ = digits
    model.get_layer("classifier").quantize("int8")
    with pytest.raises(ValueError, match=r"'classifier' is quantized \('int8'\).*cannot be assigned"):
        refine_model(model, (x, y), rank=2)


def test_non_dense_targets_are_refused(digits):
    x, y, _, _ = digits
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.Dense(10, name="head")(keras.layers.Flatten(name="flat")(h))
    model = keras.Model(inp, out)
    with pytest.raises(TypeError, match=r"refines a Dense layer.*'conv' is a Conv2D"):
        refine_model(model, (x.reshape(-1, 8, 8, 1), y), layer="conv", rank=1)
    seq = keras.Sequential([keras.Input((4, 64)), keras.layers.Dense(10, name="per_step")])
    with pytest.raises(ValueError, match=r"'per_step' receives inputs of shape \(256, 4, 64\).*\(batch, 64\)"):
        refine_model(seq, (np.repeat(x[:, None, :], 4, axis=1), y), rank=1)
    no_dense = keras.Sequential([keras.Input((64,)), keras.layers.Activation("relu")])
    with pytest.raises(ValueError, match=r"has no keras.layers.Dense layer.*pass layer="):
        refine_model(no_dense, (x, y))


def test_layer_lookup_errors(model, digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match=r"no layer named 'nope'; its layers: \[.*'classifier'"):
        refine_model(model, (x, y), layer="nope")
    with pytest.raises(ValueError, match=r"layer 'stray' is not part of model 'mlp'"):
        refine_model(model, (x, y), layer=keras.layers.Dense(3, name="stray"))
    with pytest.raises(TypeError, match=r"layer must be None, a layer name or a keras layer; got int"):
        refine_model(model, (x, y), layer=3)
    with pytest.raises(TypeError, match=r"needs a keras.Model; got str"):
        refine_model("model", (x, y))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"rank": "best"}, ValueError, r"rank must be an int, an energy fraction.*'best'"),
    ({"rank": 1.5}, ValueError, r"rank as an energy fraction must lie in \(0, 1\]; got 1.5"),
    ({"rank": -1}, ValueError, r"rank must lie in \[0, min\(q, l\)\]; got -1"),
    ({"rank": True}, TypeError, r"rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got True \(bool\)"),
    ({"bias_mode": "refit"}, ValueError, r"bias_mode must be 'fit' \(targets Y - 1 b\^T\) or 'ignore'.*got 'refit'"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer; got 0"),
    ({"steps": 0}, ValueError, r"steps must be a positive integer or None; got 0"),
    ({"when": "batch_end"}, ValueError, r"when must be 'train_end', 'epoch_end' or 'never'; got 'batch_end'"),
    ({"every": 0}, ValueError, r"every must be a positive integer; got 0"),
    ({"project_every": 2}, ValueError, r"project_every needs a numeric project_rank when rank='auto'"),
    ({"project_every": 1, "project_rank": "auto", "rank": 2}, ValueError, r"project_rank must be an int"),
    ({"rank": 3, "k": 2}, TypeError, r"unknown LIP option 'k'"),
    ({"fit_bias": True}, TypeError, r"unknown LIP option 'fit_bias'"),
    ({"bias": np.zeros(10)}, TypeError, r"'bias' is set by the Keras adapter; pass bias_mode=\.\.\. instead"),
    ({"xp": np}, TypeError, r"'xp' is set by the Keras adapter; it is chosen for you"),
    ({"holdot": 0.1}, TypeError, r"unknown LIP option 'holdot'; the Keras adapter accepts \[.*'holdout'"),
])
def test_bad_options(kwargs, exc, match, digits):
    x, y, _, _ = digits
    with pytest.raises(exc, match=match):
        LIPCallback(data=(x, y), **kwargs)


def test_rank_too_large_fails_before_training(model, digits):
    x, y, _, _ = digits
    lip = LIPCallback(data=(x, y), rank=11)
    with pytest.raises(ValueError, match=r"rank=11 exceeds min\(q, l\)=10 for layer 'classifier' \(kernel 32x10\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[lip])
    assert model.optimizer.iterations.numpy() == 0


def test_core_option_errors_keep_the_kernel(model, digits, trained):
    x, y, _, _ = digits
    _untouched_after(lambda: refine_model(model, (x, y), rank="auto", holdout=0.9), model, trained[2],
                     ValueError, r"^holdout must lie in \(0, 0.5\]; got 0.9$")  # checked before any pass
    _untouched_after(lambda: refine_model(model, (x, y), rank=2, target_scale=-1.0), model, trained[2],
                     ValueError, r"^target_scale must be a positive number or 'logits'; got -1.0$")  # parsed before any pass


def test_shared_layer_called_twice_is_refused(digits):
    x, y, _, _ = digits

    class Twice(keras.Model):
        def __init__(self):
            super().__init__()
            self.square = keras.layers.Dense(64, name="square")
            self.head = keras.layers.Dense(10, name="head")

        def call(self, v):
            return self.head(self.square(self.square(v)))

    model = Twice()
    model(x[:2])
    with pytest.raises(ValueError, match=r"'square' was called 2 times in one forward pass"):
        refine_model(model, (x, y), layer="square", rank=2)


def test_old_keras_spellings_are_refused_not_translated(digits, trained):
    x, y, xv, yv = digits
    model = _compiled(_functional, trained)
    before = _kernel(model).copy()
    with pytest.raises(TypeError, match=r"unknown LIP option 'k'"):
        refine_model(model, (x, y), k="auto")
    with pytest.raises(TypeError, match=r"unknown LIP option 'validation_data'"):
        LIPCallback(data=(x, y), validation_data=(xv, yv))
    import lip_agnostic.adapters.keras as face
    assert not hasattr(face, "REFINE_KEYWORDS") and not hasattr(LIPCallback(data=(x, y)), "refine_kwargs")
    np.testing.assert_array_equal(_kernel(model), before)


# ----------------------------------------------------------------------------- only the output layer; the user's data checked
def _weights_of(model):
    return [np.asarray(w).copy() for w in model.get_weights()]


def _same(model, before):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


def test_a_hidden_layer_named_is_refused_and_nothing_changes(digits, model):
    x, y, _, _ = digits
    before = _weights_of(model)
    with pytest.raises(ValueError, match=r"layer 'hidden' does not produce the model's output \(the output comes "
                                         r"from 'classifier'\)"):
        refine_model(model, (x, y), layer="hidden", rank=2)
    assert _same(model, before)


def test_the_default_is_the_output_layer_through_a_softmax_not_the_last_dense_tracked(digits):
    x, y, _, _ = digits
    inp = keras.Input((64,))
    head = keras.layers.Dense(N_CLASSES, name="head")  # created first: tracked before the body
    body = keras.layers.Dense(HIDDEN, activation="relu", name="body")
    out = keras.layers.Softmax(name="probs")(head(body(inp)))
    model = keras.Model(inp, out)
    res = refine_model(model, (x, y), rank=2)
    assert res.context["layer"] == "head"


def test_a_subclassed_model_with_its_head_defined_first_is_refused_by_the_output_check(digits):
    x, y, _, _ = digits

    class HeadFirst(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(N_CLASSES, name="head")
            self.body = keras.layers.Dense(HIDDEN, activation="relu", name="body")

        def call(self, inputs):
            return self.head(self.body(inputs))

    keras.utils.set_random_seed(0)
    model = HeadFirst()
    model(x[:2])
    before = _weights_of(model)
    with pytest.raises(ValueError, match=r"layer 'body' does not produce the model's output \(the output comes "
                                         r"from 'head'\)"):
        refine_model(model, (x, y), rank=2)  # the last Dense tracked is the body: refused, not rewritten
    assert _same(model, before)
    assert refine_model(model, (x, y), layer="head", rank=2).context["layer"] == "head"


def test_a_dense_called_twice_in_a_functional_model_is_refused(digits):
    x, y, _, _ = digits
    a, b = keras.Input((64,)), keras.Input((64,))
    shared = keras.layers.Dense(N_CLASSES, name="shared")
    model = keras.Model([a, b], keras.layers.Add()([shared(a), shared(b)]))
    with pytest.raises(ValueError, match=r"layer 'shared' is called 2 times in the model"):
        refine_model(model, ((x, x), y), layer="shared", rank=2)


def test_a_nan_input_row_a_relu_would_hide_is_refused(digits, model):
    x, y, _, _ = digits
    bad = x.copy()
    bad[3, :] = np.nan
    before = _weights_of(model)
    with pytest.raises(NonFiniteError, match=r"data: a batch of inputs holds 64 NaN/Inf value\(s\)"):
        refine_model(model, (bad, y), rank=2)
    assert _same(model, before)


def test_validation_with_a_fixed_rank_is_refused(digits, model):
    x, y, xv, yv = digits
    with pytest.raises(OptionError, match=r"validation data is only used to choose rank='auto'"):
        refine_model(model, (x, y), rank=2, validation=(xv, yv))
    with pytest.raises(OptionError, match=r"confidence=0.9 has no effect with rank=\d: the significance guard runs only for rank='auto'"):
        LIPCallback(data=(x, y), rank=2, confidence=0.9)


# --------------------------------------------------------------------------- label_repair (beyond the paper)
def _noisy_clusters(n=1200, q=16, l=4, rate=0.25, seed=0):
    """Separable clusters, a fraction ``rate`` of the labels moved to another class (``flip``)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(l, q)) * 2
    y = rng.integers(0, l, n)
    x = (means[y] + rng.normal(size=(n, q))).astype("float32")
    flip = rng.random(n) < rate
    return x, np.where(flip, (y + rng.integers(1, l, n)) % l, y), flip


def _cluster_net(q=16, l=4):
    keras.utils.set_random_seed(0)
    inp = keras.Input((q,), name="x")
    h = keras.layers.Dense(24, activation="tanh", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(l, name="head")(h))


def _head_weights(model):
    layer = model.get_layer("head")
    return np.asarray(layer.kernel.numpy()).copy(), np.asarray(layer.bias.numpy()).copy()


@pytest.mark.parametrize("options", [dict(label_repair="auto"), dict(label_repair="relabel", temperature=False),
                                     dict(label_issues=True, rank=2)])
def test_label_issues_name_the_flipped_rows_by_data_row_and_the_kernel_is_what_the_result_says(options):
    x, y, flip = _noisy_clusters()
    model = _cluster_net()
    k0, b0 = _head_weights(model)
    res = refine_model(model, (x, y), batch_size=100, **options)
    issues, rows = res.label_issues, res.label_issues.rows()
    assert issues.n_flagged == len(rows) > 0
    assert [r["given"] for r in rows] == y[issues.indices].tolist()  # "row" indexes (x, y), held-out rows counted
    assert flip[issues.indices].mean() > 2 * flip.mean()
    k1, b1 = _head_weights(model)
    if res.changed:
        np.testing.assert_allclose(k1, np.asarray(res.weight, dtype=k1.dtype))
        np.testing.assert_allclose(b1, b0 if res.bias is None else np.asarray(res.bias, dtype=b1.dtype), rtol=1e-6)
    else:
        assert np.array_equal(k1, k0) and np.array_equal(b1, b0)


def test_the_callback_keeps_the_label_issues_and_logs_their_count():
    x, y, _ = _noisy_clusters()
    model = _cluster_net()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = LIPCallback(data=(x, y), label_repair="auto", batch_size=100)
    history = model.fit(x, y, epochs=1, batch_size=100, verbose=0, callbacks=[cb])
    assert cb.result.label_issues is not None and cb.result.label_issues.n_flagged > 0
    assert history.history["lip_n_flagged"] == [cb.result.label_issues.n_flagged]
    assert cb.report["label_issues"]["n_flagged"] == cb.result.label_issues.n_flagged
    if cb.result.calibration is not None:
        assert history.history["lip_temperature"] == [pytest.approx(cb.result.calibration.fit.scale)]


def test_a_one_shot_generator_is_refused_before_any_batch_and_the_kernel_is_kept():
    from lip_agnostic.errors import DataTypeError

    x, y, _ = _noisy_clusters(n=300)
    model = _cluster_net()
    k0, b0 = _head_weights(model)
    read = []

    def batches():
        for i in range(0, 300, 100):
            read.append(i)
            yield x[i:i + 100], y[i:i + 100]

    with pytest.raises(DataTypeError, match=r"label_repair='auto' reads the training data twice in the same order, "
                                            r"but data is a one-shot generator; pass \(x, y\) arrays") as info:
        refine_model(model, batches(), label_repair="auto")
    assert "\n" not in str(info.value) and read == []
    assert all(np.array_equal(a, b) for a, b in zip(_head_weights(model), (k0, b0)))


def test_a_reshuffling_tf_dataset_is_refused_and_the_kernel_is_kept():
    from lip_agnostic.errors import DataError

    tf = pytest.importorskip("tensorflow")
    x, y, _ = _noisy_clusters(n=600)
    model = _cluster_net()
    k0, b0 = _head_weights(model)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(600, seed=0).batch(100)  # reshuffles every pass
    with pytest.raises(DataError, match=r"label_repair='auto' reads the training data twice in the same order, but "
                                        r"data shuffles \(ShuffleDataset\(reshuffle_each_iteration=True\)\)") as info:
        refine_model(model, data, label_repair="auto")
    assert "\n" not in str(info.value) and "the kernel was left unchanged" in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(_head_weights(model), (k0, b0)))
    ordered = tf.data.Dataset.from_tensor_slices((x, y)).batch(100)  # the same data in order: accepted
    assert refine_model(model, ordered, label_repair="auto").label_issues is not None
    once = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(600, seed=0, reshuffle_each_iteration=False).batch(100)
    assert refine_model(model, once, label_repair="auto").label_issues is not None  # one order, every pass
