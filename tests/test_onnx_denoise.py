"""``denoise`` file to file: the math against the core, dtypes, external data, atomic output, refusals."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ort = pytest.importorskip("onnxruntime")

import lip_agnostic as lip
import lip_agnostic.svd as lip_svd
from lip_agnostic.tools import api, writer
from lip_agnostic.tools.errors import (CalibrationError, ModelReadError, OutputRefusedError, UsageError,
                                       ValidationFailedError)
from lip_agnostic.tools.graph import read_weight, select_classifier
from lip_agnostic.tools.model_io import load_model
from onnx_models import mlp_model


def _digest(folder) -> dict:
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest() for n in sorted(os.listdir(folder))}


def _head(path_or_model) -> np.ndarray:
    loaded = load_model(path_or_model)
    c = select_classifier(loaded)
    return np.asarray(read_weight(loaded, c), dtype=np.float64) * c.alpha, c


def _features(model, params, x):
    h = np.maximum(x.astype(np.float64) @ params["W1"].astype(np.float64) + params["b1"], 0)
    return h


@pytest.fixture
def small(tmp_path):
    model, p = mlp_model(layout="gemm_t", q=12, l=6, d=5)
    path = tmp_path / "small.onnx"
    onnx.save(model, path)
    return str(path), p


def test_truncation_writes_the_cores_rank_k_projection(small, tmp_path):
    path, p = small
    report = api.denoise_file(path, rank=3)
    out = str(tmp_path / "small.lip.onnx")
    assert report["output"] == out and os.path.isfile(out)
    W_new, c = _head(out)
    np.testing.assert_allclose(W_new, lip.project_principal(p["W"], 3), atol=1e-5)
    assert np.linalg.matrix_rank(W_new, tol=1e-4) == 3
    assert c.layout == "(l, q)"                   # layout kept
    assert report["rank"]["k"] == 3 and report["mode"] == "truncation"
    assert report["validation"]["checker"] == "ok" and 0.0 <= report["validation"]["top1_agreement"] <= 1.0
    meta = {e.key: e.value for e in onnx.load(out).metadata_props}
    assert '"k": 3' in meta["lip_agnostic"]


def test_energy_fraction_picks_the_cores_energy_rank(small):
    path, p = small
    report = api.denoise_file(path, rank=0.8)
    assert report["rank"]["k"] == lip_svd.energy_rank(np.linalg.svd(p["W"], compute_uv=False), 0.8)


def test_input_is_never_modified_and_output_refused_without_force(small, tmp_path):
    path, _ = small
    before = _digest(tmp_path)
    api.denoise_file(path, rank=2)
    after = _digest(tmp_path)
    assert after[os.path.basename(path)] == before[os.path.basename(path)]
    with pytest.raises(OutputRefusedError, match="exists; pass --force"):
        api.denoise_file(path, rank=2)
    api.denoise_file(path, rank=4, force=True)
    assert np.linalg.matrix_rank(_head(str(tmp_path / "small.lip.onnx"))[0], tol=1e-4) == 4
    with pytest.raises(OutputRefusedError, match="would overwrite the input model"):
        api.denoise_file(path, path, rank=2, force=True)


def test_failed_validation_leaves_no_file(small, tmp_path, monkeypatch):
    path, _ = small
    before = sorted(os.listdir(tmp_path))

    def boom(_path):
        raise ValidationFailedError("forced failure")
    monkeypatch.setattr(api, "check_model_file", boom)
    with pytest.raises(ValidationFailedError, match="forced failure"):
        api.denoise_file(path, rank=2)
    assert sorted(os.listdir(tmp_path)) == before      # no output, no staging folder


@pytest.mark.parametrize("rank, msg", [(7, r"--rank 7 is out of range.*\[1, 6\] \(0 only with --calib\)"), (-1, r"--rank -1 is out of range"),
                                       (1.5, r"--energy must lie in \(0, 1\]"), (0.0, r"--energy must lie in"),
                                       ("auto", "--rank auto needs held-out data: give --calib"),
                                       (None, "truncation needs --rank K or --energy F"),
                                       ("seven", "--rank must be an integer or 'auto'")])
def test_bad_ranks_are_usage_errors(small, rank, msg):
    with pytest.raises(UsageError, match=msg):
        api.denoise_file(small[0], rank=rank)


def test_float16_weights_are_written_back_as_float16(tmp_path):
    model, p = mlp_model(layout="matmul_add", dtype="float16", q=10, l=5)
    path = tmp_path / "h.onnx"
    onnx.save(model, path)
    api.denoise_file(str(path), rank=2)
    out = onnx.load(tmp_path / "h.lip.onnx")
    W = numpy_helper.to_array([t for t in out.graph.initializer if t.name == "W"][0])
    assert W.dtype == np.float16
    ref = lip.project_principal(p["W"].astype(np.float32), 2)
    np.testing.assert_allclose(W.astype(np.float32), ref, atol=2e-2)


def test_external_data_is_kept_self_consistent_and_input_untouched(tmp_path):
    model, p = mlp_model(layout="gemm", q=40, l=30, d=20)
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    onnx.save(model, src / "m.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    before = _digest(src)
    out = dst / "refined.onnx"
    api.denoise_file(str(src / "m.onnx"), str(out), rank=5)
    assert _digest(src) == before
    assert sorted(os.listdir(dst)) == ["refined.onnx", "refined.onnx.data"]
    m = onnx.load(out, load_external_data=False)
    locs = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    assert locs == {"refined.onnx.data"}
    W_new, _ = _head(str(out))
    np.testing.assert_allclose(W_new, lip.project_principal(p["W"], 5), atol=1e-5)
    # the rest of the model is unchanged: same hidden-layer output through onnxruntime
    x = np.random.default_rng(1).random((7, 20), dtype=np.float32)
    s_old = ort.InferenceSession(str(src / "m.onnx"))
    s_new = ort.InferenceSession(str(out))
    z_new = s_new.run(["logits"], {"x": x})[0]
    feat = _features(model, p, x)
    np.testing.assert_allclose(z_new, feat @ W_new + p["b"], rtol=1e-4, atol=1e-4)
    assert s_old.run(["logits"], {"x": x})[0].shape == z_new.shape


def test_large_weights_use_randomized_top_k_streamed_to_disk(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    model, p = mlp_model(layout="gemm_t", q=120, l=90, d=8)
    W = (rng.normal(size=(120, 6)) * [30, 20, 10, 5, 3, 2]) @ rng.normal(size=(6, 90)) + 0.01 * rng.normal(size=(120, 90))
    t = [t for t in model.graph.initializer if t.name == "W"][0]
    t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(W.T).astype(np.float32), "W"))
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    monkeypatch.setattr(api, "LARGE_WEIGHT", 100)
    report = api.denoise_file(str(tmp_path / "m.onnx"), rank=4)
    assert report["svd"]["method"] == "randomized" and report["svd"]["converged"]
    W_new, _ = _head(str(tmp_path / "m.lip.onnx"))
    np.testing.assert_allclose(W_new, lip.project_principal(W.astype(np.float32).astype(np.float64), 4), atol=1e-4)


def test_path_traversal_in_external_data_is_refused(tmp_path):
    model, _ = mlp_model(layout="gemm")
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(model, inner / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    os.replace(inner / "w.bin", tmp_path / "w.bin")
    m = onnx.load(inner / "m.onnx", load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.bin"
    with open(inner / "evil.onnx", "wb") as fh:
        fh.write(m.SerializeToString())
    with pytest.raises(ModelReadError, match=r"'\.\./w\.bin' points outside the model's folder.*path traversal"):
        api.denoise_file(str(inner / "evil.onnx"), rank=1)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = str(tmp_path / "w.bin")
    with open(inner / "abs.onnx", "wb") as fh:
        fh.write(m.SerializeToString())
    with pytest.raises(ModelReadError, match="is an absolute path; refused"):
        api.denoise_file(str(inner / "abs.onnx"), rank=1)


def test_missing_or_short_external_data_is_a_read_error(tmp_path):
    model, _ = mlp_model(layout="gemm")
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    with open(tmp_path / "w.bin", "r+b") as fh:
        fh.truncate(40)
    with pytest.raises(ModelReadError, match="truncated or corrupt"):
        api.denoise_file(str(tmp_path / "m.onnx"), rank=1)
    os.remove(tmp_path / "w.bin")
    with pytest.raises(ModelReadError, match="external data file 'w.bin' not found"):
        api.denoise_file(str(tmp_path / "m.onnx"), rank=1)


@pytest.mark.parametrize("content, msg", [(None, "model file not found"), (b"", "model file is empty"),
                                          (b"\x00\x01garbage\xff" * 50, "not a readable ONNX model|not an ONNX model")])
def test_missing_empty_and_non_onnx_files_are_read_errors(tmp_path, content, msg):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelReadError, match=msg):
        api.denoise_file(str(path), rank=1)


def test_truncated_model_file_is_a_read_error(small, tmp_path):
    data = open(small[0], "rb").read()
    for cut in (len(data) // 3, len(data) - 7):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelReadError):
            api.denoise_file(str(bad), rank=1)
        assert not os.path.exists(tmp_path / f"cut{cut}.lip.onnx")


# ---------------------------------------------------------------- calibration (full LIP)

def _calib(p, n, rng, l, d=5, noise=0.3, prefix=""):
    x = rng.random((n, d), dtype=np.float32)
    feat = _features(None, p, x)
    y = np.argmax(feat @ p["W"] + p["b"], axis=1)
    flip = rng.random(n) < noise
    y = np.where(flip, rng.integers(0, l, n), y)
    return {prefix + "x": x, prefix + "labels": y.astype(np.int64)}


def test_calibration_mode_equals_the_core_on_the_models_features(small, tmp_path):
    path, p = small
    rng = np.random.default_rng(0)
    data = _calib(p, 300, rng, 6)
    np.savez(tmp_path / "cal.npz", **data)
    report = api.denoise_file(path, rank=2, calib=str(tmp_path / "cal.npz"), batch_size=64)
    W_new, _ = _head(str(tmp_path / "small.lip.onnx"))
    feat = _features(None, p, data["x"])
    ref = lip.lip_refine(p["W"], feat, data["labels"], 2, bias=p["b"])
    np.testing.assert_allclose(W_new, ref, rtol=1e-4, atol=1e-4)
    assert report["mode"] == "lip" and report["calibration"]["n_fit"] == 300
    assert report["validation"]["samples"] == 300


def test_rank_auto_uses_the_held_out_split(small, tmp_path):
    path, p = small
    rng = np.random.default_rng(1)
    data = {**_calib(p, 200, rng, 6), **_calib(p, 100, rng, 6, prefix="val_")}
    report = api.denoise_file(path, calib=data)
    assert report["rank"]["strategy"] == "auto" and report["rank"]["n_val"] == 100
    assert report["calibration"]["rank_source"] == "validation"
    feat = _features(None, p, data["x"])
    acc = lip.LIPAccumulator(p["W"], None, bias=p["b"]).update(feat, data["labels"])
    sel = lip.select_rank(p["W"], "auto", accumulator=acc, validation=(_features(None, p, data["val_x"]), data["val_labels"]))
    assert report["rank"]["k"] == sel.k
    # without a held-out split the core holds out every 5th sample
    del data["val_x"], data["val_labels"]
    report = api.denoise_file(path, calib=data, force=True)
    assert report["calibration"]["rank_source"] == "holdout 1/5" and report["rank"]["n_val"] == 40


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d.update(image=d.pop("x")), r"unknown keys \['image'\]"),
    (lambda d: d.pop("labels"), r"lack \['labels'\]"),
    (lambda d: d.update(x=d["x"][:, :3]), r"'x' has shape \(50, 3\) but model input 'x' expects \[n, 5\]"),
    (lambda d: d.update(x=d["x"][:, :, None]), "has rank 2"),
    (lambda d: d.update(x=(d["x"] * 10).astype(np.int64)), "has dtype int64 but model input 'x' is float32"),
    (lambda d: d.update(labels=d["labels"] + 6), r"must lie in \[0, 6\).*max 1[01]"),
    (lambda d: d.update(labels=d["labels"][:-1]), "has 49 labels but the inputs have 50"),
    (lambda d: d.update(labels=d["labels"].astype(np.float32)), "must hold integer class labels"),
    (lambda d: d.update(labels=np.ones((50, 4))), r"target matrix has shape \(50, 4\); expected \(50, 6\)"),
    (lambda d: d.update(val_x=d["x"]), r"held-out split incomplete"),
    (lambda d: d.update(x=np.full_like(d["x"], np.nan)), "contains NaN/Inf"),
])
def test_calibration_mismatches_are_refused(small, tmp_path, mutate, msg):
    path, p = small
    data = _calib(p, 50, np.random.default_rng(2), 6)
    mutate(data)
    np.savez(tmp_path / "c.npz", **data)
    with pytest.raises(CalibrationError, match=msg):
        api.denoise_file(path, calib=str(tmp_path / "c.npz"), rank=2)
    assert not os.path.exists(tmp_path / "small.lip.onnx")


def test_unreadable_calibration_file_is_refused(small, tmp_path):
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="is not an .npz archive \\(not a zip archive\\); save the arrays with numpy.savez"):
        api.denoise_file(small[0], calib=str(tmp_path / "c.npz"), rank=2)
    with pytest.raises(CalibrationError, match="calibration file not found"):
        api.denoise_file(small[0], calib=str(tmp_path / "none.npz"), rank=2)


def test_soft_target_matrix_is_accepted(small, tmp_path):
    path, p = small
    data = _calib(p, 80, np.random.default_rng(4), 6)
    data["labels"] = np.eye(6)[data["labels"]] * 0.9 + 0.1 / 6
    report = api.denoise_file(path, calib=data, rank=3)
    feat = _features(None, p, data["x"])
    ref = lip.lip_refine(p["W"], feat, data["labels"], 3, bias=p["b"])
    np.testing.assert_allclose(_head(report["output"])[0], ref, rtol=1e-4, atol=1e-4)


def test_python_api_returns_a_model_and_leaves_the_file_alone(small, tmp_path):
    path, p = small
    before = _digest(tmp_path)
    model = api.denoise(path, rank=2)
    assert isinstance(model, onnx.ModelProto) and _digest(tmp_path) == before
    np.testing.assert_allclose(_head(model)[0], lip.project_principal(p["W"], 2), atol=1e-5)


def test_default_output_name():
    assert writer.default_output("a/b/model.onnx") == "a/b/model.lip.onnx"
    assert writer.default_output("model") == "model.lip.onnx"


def test_big_inline_models_get_external_data_on_output(small, tmp_path, monkeypatch):
    path, p = small
    monkeypatch.setattr(writer, "INLINE_LIMIT", 100)
    api.denoise_file(path, rank=2)
    assert (tmp_path / "small.lip.onnx.data").exists()
    np.testing.assert_allclose(_head(str(tmp_path / "small.lip.onnx"))[0], lip.project_principal(p["W"], 2), atol=1e-5)


def test_in_memory_api_refuses_models_over_two_gigabytes(small, monkeypatch):
    monkeypatch.setattr(api, "IN_MEMORY_LIMIT", 10)
    with pytest.raises(UsageError, match=r"too large for an in-memory ModelProto; use denoise_file\(\)"):
        api.denoise(small[0], rank=2)


def test_inputs_onnxruntime_rejects_and_nan_features_are_calibration_errors(small, tmp_path):
    path, p = small
    data = _calib(p, 40, np.random.default_rng(5), 6)
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[1].ClearField("dim_value")   # q unknown to the checker
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "d"
    onnx.save(model, tmp_path / "dyn.onnx")
    bad = dict(data, x=np.ones((40, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"onnxruntime cannot run the model on inputs \{'x': \(40, 3\)\}"):
        api.denoise_file(str(tmp_path / "dyn.onnx"), calib=bad, rank=2, batch_size=64)
    huge = dict(data, x=np.full((40, 5), 3e38, np.float32))                       # features overflow to inf
    with pytest.raises(CalibrationError, match="LIP refused the calibration features/labels: .*NaN/Inf"):
        api.denoise_file(path, calib=huge, rank=2, force=True)


# ---------------------------------------------------------------- label-aware repair and label issues (beyond the paper)

def _noisy(p, n, rng, l=6, rate=0.2, prefix=""):
    """Calibration data whose clean label is the model's own prediction, with a known ``rate`` of flips."""
    x = rng.random((n, 5), dtype=np.float32)
    clean = np.argmax(_features(None, p, x) @ p["W"] + p["b"], axis=1)
    flip = rng.random(n) < rate
    given = np.where(flip, (clean + rng.integers(1, l, n)) % l, clean)
    return {prefix + "x": x, prefix + "labels": given.astype(np.int64)}, flip


def _read_issues(path):
    import csv
    with open(path, newline="") as fh:
        lines = fh.read().splitlines()
    rows = list(csv.DictReader(lines))
    return lines[0], [{k: (float(v) if k == "score" else int(v)) for k, v in r.items()} for r in rows]


@pytest.mark.parametrize("held_out", ["holdout", "val_split"])
def test_label_repair_issues_hit_the_true_flips_at_their_calibration_rows(small, tmp_path, held_out):
    path, p = small
    rng = np.random.default_rng(3)
    data, flip = _noisy(p, 1500, rng)
    if held_out == "val_split":
        data.update(_noisy(p, 300, rng, prefix="val_")[0])
    np.savez(tmp_path / "c.npz", **data)
    report = api.denoise_file(path, calib=str(tmp_path / "c.npz"), label_repair="auto", issues=str(tmp_path / "i.csv"))
    header, rows = _read_issues(tmp_path / "i.csv")
    assert header == "position,given,suggested,score"
    li = report["label_issues"]
    assert len(rows) == li["n_flagged"] > 0 and li["file"] == str(tmp_path / "i.csv")
    pos = np.array([r["position"] for r in rows])
    assert len(set(pos.tolist())) == len(pos) and pos.min() >= 0 and pos.max() < 1500
    # the position indexes the calibration file: its label there is the one the row reports as given
    assert [r["given"] for r in rows] == data["labels"][pos].tolist()
    assert all(r["suggested"] != r["given"] for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores)                      # most suspect (lowest label quality) first
    checked = np.ones(1500, bool)
    if held_out == "holdout":                            # every 5th row is held out of the fit: never checked
        checked[4::5] = False
        assert li["n_checked"] == 1200 and not np.any(pos % 5 == 4)
    else:
        assert li["n_checked"] == 1500
    precision, chance = flip[pos].mean(), flip[checked].mean()
    assert precision > 2.5 * chance                       # flagged rows are flips far more often than chance
    assert flip[pos].sum() > 0.5 * flip[checked].sum()    # and most flips are found


def test_issues_alone_works_with_any_repair_and_leaves_the_head_as_without_it(small, tmp_path):
    path, p = small
    data, flip = _noisy(p, 600, np.random.default_rng(5))
    np.savez(tmp_path / "c.npz", **data)
    with_issues = api.denoise_file(path, str(tmp_path / "a.onnx"), calib=str(tmp_path / "c.npz"), rank=2,
                                   issues=str(tmp_path / "i.csv"))
    without = api.denoise_file(path, str(tmp_path / "b.onnx"), calib=str(tmp_path / "c.npz"), rank=2)
    np.testing.assert_array_equal(_head(str(tmp_path / "a.onnx"))[0], _head(str(tmp_path / "b.onnx"))[0])
    assert "label_issues" not in without and with_issues["label_issues"]["n_checked"] == 600
    _, rows = _read_issues(tmp_path / "i.csv")
    pos = np.array([r["position"] for r in rows])
    assert len(rows) == with_issues["label_issues"]["n_flagged"]
    assert [r["given"] for r in rows] == data["labels"][pos].tolist()
    assert flip[pos].mean() > 2.5 * flip.mean()


def test_label_repair_equals_the_core_on_the_models_features(small, tmp_path):
    path, p = small
    rng = np.random.default_rng(6)
    W_true = rng.normal(size=(12, 6))     # the labels follow another head than the model's: the guard must change it

    def noisy(n, prefix=""):
        x = rng.random((n, 5), dtype=np.float32)
        clean = np.argmax(_features(None, p, x) @ W_true, axis=1)
        flip = rng.random(n) < 0.3
        return {prefix + "x": x, prefix + "labels": np.where(flip, (clean + rng.integers(1, 6, n)) % 6, clean)}
    data = {**noisy(800), **noisy(300, "val_")}
    for temperature in (True, False):
        report = api.denoise_file(path, str(tmp_path / f"t{temperature}.onnx"), calib=data, label_repair="auto",
                                  temperature=temperature, batch_size=64)
        ref = lip.refine_batches(p["W"], [(_features(None, p, data["x"]), data["labels"])], bias=p["b"],
                                 validation=(_features(None, p, data["val_x"]), data["val_labels"]),
                                 label_repair="auto", temperature=temperature)
        assert ref.changed and report["rank"]["changed"]
        np.testing.assert_allclose(_head(str(tmp_path / f"t{temperature}.onnx"))[0], ref.weight, rtol=1e-4, atol=1e-4)
        assert report["rank"]["k"] == ref.k and report["tail"] == "labels" == ref.tail
        assert report["rank"]["labels"] == ref.selection.labels
        assert report["label_issues"]["n_flagged"] == ref.label_issues.n_flagged
        assert ("temperature" in report) == temperature == (ref.calibration is not None)
        if temperature:
            assert report["temperature"]["scale"] == pytest.approx(ref.calibration.fit.scale, rel=1e-3)
        model, mem = api.denoise(path, calib=data, label_repair="auto", temperature=temperature, return_report=True)
        np.testing.assert_allclose(_head(model)[0], ref.weight, rtol=1e-4, atol=1e-4)    # the in-memory API too
        assert mem["label_issues"]["n_flagged"] == ref.label_issues.n_flagged


def test_the_feature_stream_starts_a_fresh_pass_at_every_iter(small):
    from lip_agnostic.tools.calibrate import FeatureStream, feature_batches
    from lip_agnostic.tools.runtime import Session
    path, p = small
    data, _ = _noisy(p, 70, np.random.default_rng(7))
    loaded = load_model(path)
    c = select_classifier(loaded)
    session = Session(loaded, [c.input_name])
    stream = FeatureStream(session, c, {"x": data["x"]}, data["labels"], 32)
    first, second = list(stream), list(stream)
    assert [len(y) for _, y in first] == [32, 32, 6] and stream.passes == 2
    assert iter(stream) is not stream                    # not a one-shot iterator: the core accepts it
    for (X1, y1), (X2, y2), (X3, _) in zip(first, second, feature_batches(session, c, {"x": data["x"]}, data["labels"], 32)):
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(X1, X3)


def test_label_options_need_integer_labels(small, tmp_path):
    path, p = small
    data, _ = _noisy(p, 80, np.random.default_rng(8))
    data["labels"] = np.eye(6)[data["labels"]]
    for kw, said in [({"label_repair": "auto"}, "--label-repair auto needs"), ({"issues": str(tmp_path / "i.csv")}, "--issues needs"),
                     ({"label_repair": "filter", "issues": str(tmp_path / "i.csv")}, "--label-repair filter and --issues need")]:
        with pytest.raises(CalibrationError, match=f"{said} \\(n,\\) integer class labels.*an \\(n, l=6\\) target matrix"):
            api.denoise_file(path, calib=data, **kw)
    assert sorted(os.listdir(tmp_path)) == ["small.onnx"]


@pytest.mark.parametrize("kw, msg", [
    ({"temperature": "no"}, r"temperature must be True or False \(--no-temperature: False\); got 'no'"),
    ({"temperature": 0}, r"temperature must be True or False"),
    ({"issues": 3}, r"--issues must be a path \(FILE.csv\); got int"),
    ({"label_repair": None}, r"--label-repair: label_repair must be 'none'"),
])
def test_bad_label_option_values_are_usage_errors_before_any_file(kw, msg, tmp_path):
    with pytest.raises(UsageError, match=msg):
        api.denoise_file(str(tmp_path / "missing.onnx"), calib=str(tmp_path / "missing.npz"), **kw)
