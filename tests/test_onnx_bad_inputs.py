"""Every bad input, one table: through the CLI and the Python API, each one ends with its documented
exit code (or typed error), one line of message, no traceback, nothing written, the inputs unchanged.

``docs/BAD_INPUTS.md`` is this table as run; regenerate it with
``python tests/test_onnx_bad_inputs.py --write`` after changing a message.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

from lip_agnostic.tools import api, cli, demo, errors
from onnx_models import mlp_model

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "BAD_INPUTS.md")
ERROR_OF_CODE = {2: errors.UsageError, 3: errors.ModelReadError, 4: errors.ClassifierNotFoundError,
                 5: errors.UnsupportedWeightError, 6: errors.CalibrationError, 7: errors.OutputRefusedError,
                 9: errors.WriteFailedError}


class Unpickled:
    """An object whose unpickling leaves a trace: object arrays must never be loaded."""

    def __reduce__(self):
        return (os.mkdir, ("UNPICKLED",))


def make_inputs(folder: str) -> None:
    """The files the table uses, in ``folder`` (the current directory of every run)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        model, p = mlp_model(layout="gemm_t", q=12, l=6, d=5)
        onnx.save(model, "m.onnx")
        ext, _ = mlp_model(layout="gemm", q=12, l=6, d=5)
        onnx.save(ext, "m_dynamo.onnx", save_as_external_data=True, location="m_dynamo.onnx.data", size_threshold=0)
        gone, _ = mlp_model(layout="gemm", q=12, l=6, d=5)
        onnx.save(gone, "no_data.onnx", save_as_external_data=True, location="no_data.bin", size_threshold=0)
        os.remove("no_data.bin")
        open("junk.onnx", "wb").write(b"\x08\x07garbage" * 10)
        open("empty.onnx", "wb").close()
        blob = model.SerializeToString()
        open("truncated.onnx", "wb").write(blob[: len(blob) // 2])
        os.mkdir("folder.onnx")
        os.mkdir("outdir")
        nan = onnx.ModelProto()
        nan.CopyFrom(model)
        w = [t for t in nan.graph.initializer if t.name == "W"][0]
        arr = numpy_helper.to_array(w).copy()
        arr[0, 0] = np.nan
        w.CopyFrom(numpy_helper.from_array(arr, "W"))
        onnx.save(nan, "nan_weight.onnx")
        two = onnx.ModelProto()
        two.CopyFrom(model)
        two.graph.initializer.append(numpy_helper.from_array(np.ones((12, 3), np.float32), "W_aux"))
        two.graph.node.append(helper.make_node("MatMul", ["feat", "W_aux"], ["aux"], name="aux_head"))
        two.graph.output.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["n", 3]))
        onnx.save(two, "two_heads.onnx")
        other, _ = mlp_model(layout="gemm", q=12, l=4, d=5)
        onnx.save(other, "four_classes.onnx")
        open("exists.onnx", "wb").write(b"someone's file")
        rng = np.random.default_rng(0)
        x = rng.random((40, 5), dtype=np.float32)
        y = rng.integers(0, 6, 40)
        np.savez("calib.npz", x=x, labels=y)
        open("text.npz", "w").write("x,labels\n1,2\n")
        pickle.dump({"x": x, "labels": y}, open("pickle.npz", "wb"))
        np.save("array.npy", x)
        np.savez("object.npz", x=np.array([Unpickled()] * 40, dtype=object), labels=y)
        raw = open("calib.npz", "rb").read()
        open("damaged.npz", "wb").write(raw[: len(raw) // 2])
        np.savez("no_labels.npz", x=x)
        np.savez("unknown_key.npz", x=x, labels=y, extra=y)
        np.savez("label_range.npz", x=x, labels=y + 6)
        np.savez("float_labels.npz", x=x, labels=y.astype(np.float32))
        np.savez("int_inputs.npz", x=x.astype(np.int64), labels=y)
        np.savez("wrong_width.npz", x=rng.random((40, 7), dtype=np.float32), labels=y)
        np.savez("nan_inputs.npz", x=np.where(x > 0.9, np.nan, x).astype(np.float32), labels=y)
        np.savez("count_mismatch.npz", x=x, labels=y[:30])
        np.savez("partial_val.npz", x=x, labels=y, val_x=x)
        np.savez("targets_shape.npz", x=x, labels=np.ones((40, 5)))
        np.savez("soft_labels.npz", x=x, labels=np.eye(6)[y])
    finally:
        os.chdir(cwd)


@dataclass(frozen=True)
class Case:
    id: str
    what: str                        # the bad input, in words (docs column)
    args: tuple[str, ...]            # lip-onnx arguments
    code: int
    message: str                     # a regular expression the one-line message must match
    api: Callable[[], Any] | None = None   # the same input through the Python API (None: CLI syntax only)
    api_message: str | None = None   # the API's message where it differs (argparse words the CLI's)


def _den(*a, **k):
    return lambda: api.denoise_file(*a, **k)


CASES = [
    Case("model-missing", "model file missing", ("denoise", "missing.onnx", "--rank", "1"), 3,
         r"model file not found: missing\.onnx", _den("missing.onnx", rank=1)),
    Case("model-empty", "model file empty", ("denoise", "empty.onnx", "--rank", "1"), 3,
         r"model file is empty: empty\.onnx", _den("empty.onnx", rank=1)),
    Case("model-junk", "model file not ONNX", ("inspect", "junk.onnx"), 3,
         r"junk\.onnx is not (a readable ONNX model|an ONNX model)", lambda: api.inspect("junk.onnx")),
    Case("model-truncated", "model file truncated", ("denoise", "truncated.onnx", "--rank", "1"), 3,
         r"truncated\.onnx is not", _den("truncated.onnx", rank=1)),
    Case("model-folder", "model path is a folder", ("denoise", "folder.onnx", "--rank", "1"), 3,
         r"not a regular file: folder\.onnx", _den("folder.onnx", rank=1)),
    Case("data-missing", "external data file missing", ("denoise", "no_data.onnx", "--rank", "1"), 3,
         r"external data file 'no_data\.bin' not found", _den("no_data.onnx", rank=1)),
    Case("rank-too-big", "--rank above min(q, l)", ("denoise", "m.onnx", "--rank", "99"), 2,
         r"--rank 99 is out of range: the classifier has min\(q, l\)=6 components", _den("m.onnx", rank=99)),
    Case("rank-negative", "--rank negative", ("denoise", "m.onnx", "--rank", "-1"), 2,
         r"--rank -1 is out of range: --rank counts the components kept, it must be >= 0", _den("m.onnx", rank=-1)),
    Case("rank-zero-truncation", "--rank 0 without --calib", ("denoise", "m.onnx", "--rank", "0"), 2,
         r"--rank 0 without --calib would zero the classifier", _den("m.onnx", rank=0)),
    Case("rank-auto-no-calib", "--rank auto without --calib", ("denoise", "m.onnx", "--rank", "auto"), 2,
         r"--rank auto needs held-out data: give --calib", _den("m.onnx", rank="auto")),
    Case("rank-none", "neither --rank nor --energy nor --calib", ("denoise", "m.onnx"), 2,
         r"truncation needs --rank K or --energy F", _den("m.onnx")),
    Case("rank-text", "--rank not a number", ("denoise", "m.onnx", "--rank", "x"), 2,
         r"argument --rank: expected an integer k or 'auto'; got 'x'"),
    Case("rank-bool", "--rank not an integer (API: rank=True)", ("denoise", "m.onnx", "--rank", "1.5"), 2,
         r"argument --rank: expected an integer k or 'auto'; got '1\.5'", _den("m.onnx", rank=True),
         r"rank must be an integer, an energy fraction or 'auto'; got True"),
    Case("energy-zero", "--energy 0", ("denoise", "m.onnx", "--energy", "0"), 2,
         r"--energy must lie in \(0, 1\]; got 0\.0", _den("m.onnx", rank=0.0)),
    Case("energy-above-one", "--energy above 1", ("denoise", "m.onnx", "--energy", "1.5"), 2,
         r"--energy must lie in \(0, 1\]; got 1\.5", _den("m.onnx", rank=1.5)),
    Case("rank-and-energy", "--rank and --energy together", ("denoise", "m.onnx", "--rank", "1", "--energy", "0.5"), 2,
         r"argument --energy: not allowed with argument --rank"),
    Case("min-gain-negative", "--min-gain below 0", ("denoise", "m.onnx", "--rank", "1", "--min-gain", "-0.1"), 2,
         r"--min-gain must be >= 0", _den("m.onnx", rank=1, min_gain=-0.1)),
    Case("min-gain-nan", "--min-gain NaN", ("denoise", "m.onnx", "--rank", "1", "--min-gain", "nan"), 2,
         r"--min-gain must be finite; got nan", _den("m.onnx", rank=1, min_gain=float("nan"))),
    Case("tail-full-no-calib", "--tail full without --calib", ("denoise", "m.onnx", "--rank", "1", "--tail", "full"), 2,
         r"--tail full refits the classifier against labels: it needs --calib DATA.npz",
         _den("m.onnx", rank=1, tail="full")),
    Case("ridge-no-calib", "--ridge without --calib (the default --tail auto)",
         ("denoise", "m.onnx", "--rank", "1", "--ridge", "0.5"), 2,
         r"--ridge sets the full-tail refit, which fits the classifier against labels: it needs --calib DATA.npz",
         _den("m.onnx", rank=1, ridge=0.5)),
    Case("ridge-with-diagonal", "--ridge with --tail diagonal",
         ("denoise", "m.onnx", "--rank", "1", "--tail", "diagonal", "--ridge", "0.5"), 2,
         r"--ridge applies to --tail full only", _den("m.onnx", rank=1, tail="diagonal", ridge=0.5)),
    Case("confidence-one", "--confidence outside (0, 1)", ("denoise", "m.onnx", "--rank", "1", "--confidence", "1"), 2,
         r"--confidence must lie in \(0, 1\)", _den("m.onnx", rank=1, confidence=1.0)),
    Case("target-scale-zero", "--target-scale not positive", ("denoise", "m.onnx", "--rank", "1", "--target-scale", "0"), 2,
         r"--target-scale must be positive; got 0\.0", _den("m.onnx", rank=1, target_scale=0.0)),
    Case("target-scale-text", "--target-scale neither a number nor 'logits'",
         ("denoise", "m.onnx", "--rank", "1", "--target-scale", "big"), 2,
         r"argument --target-scale: expected a positive number or 'logits'; got 'big'",
         _den("m.onnx", rank=1, target_scale="big"), r"--target-scale must be a positive number or 'logits'; got 'big'"),
    Case("batch-size-zero", "--batch-size 0", ("denoise", "m.onnx", "--rank", "1", "--batch-size", "0"), 2,
         r"--batch-size must be positive", _den("m.onnx", rank=1, batch_size=0)),
    Case("bias-mode", "--bias-mode not fit/ignore", ("denoise", "m.onnx", "--rank", "1", "--bias-mode", "subtract"), 2,
         r"argument --bias-mode: invalid choice: 'subtract'", _den("m.onnx", rank=1, bias_mode="subtract"),
         r"--bias-mode must be 'fit' or 'ignore'; got 'subtract'"),
    Case("layer-unknown", "--layer names no linear layer", ("denoise", "m.onnx", "--rank", "1", "--layer", "nope"), 4,
         r"no Gemm/MatMul layer named 'nope'; linear layers with a constant weight: 'hidden' \(Gemm, W 5x12\), "
         r"'head' \(Gemm, W 12x6\)", _den("m.onnx", rank=1, layer="nope")),
    Case("layer-hidden", "--layer names a hidden layer", ("denoise", "m.onnx", "--rank", "1", "--layer", "hidden"), 4,
         r"layer 'hidden' does not produce the model's output \(other layers read its result\); LIP refits only "
         r"the output layer: 'head' \(Gemm, W 12x6\)", _den("m.onnx", rank=1, layer="hidden")),
    Case("confidence-fixed-rank", "--confidence with a fixed --rank (it would do nothing)",
         ("denoise", "m.onnx", "--rank", "1", "--confidence", "0.9"), 2,
         r"--confidence only act\(s\) when a candidate is chosen on held-out data", _den("m.onnx", rank=1, confidence=0.9)),
    Case("two-heads", "two classifier candidates, no --layer", ("denoise", "two_heads.onnx", "--rank", "1"), 4,
         r"2 classifier candidates; choose one with --layer NAME", _den("two_heads.onnx", rank=1)),
    Case("nan-weight", "NaN in the classifier weight", ("denoise", "nan_weight.onnx", "--rank", "1"), 5,
         r"classifier weight 'W' \(shape \[12, 6\]\) contains 1 NaN/Inf value\(s\); refused",
         _den("nan_weight.onnx", rank=1)),
    Case("calib-missing", "--calib file missing", ("denoise", "m.onnx", "--calib", "missing.npz"), 6,
         r"calibration file not found: missing\.npz", _den("m.onnx", calib="missing.npz")),
    Case("calib-folder", "--calib a folder", ("denoise", "m.onnx", "--calib", "outdir"), 6,
         r"calibration path outdir is a folder, not an \.npz file", _den("m.onnx", calib="outdir")),
    Case("calib-text", "--calib a text file", ("denoise", "m.onnx", "--calib", "text.npz"), 6,
         r"calibration file text\.npz is not an \.npz archive \(not a zip archive\); save the arrays with numpy\.savez",
         _den("m.onnx", calib="text.npz")),
    Case("calib-pickle", "--calib a pickle", ("denoise", "m.onnx", "--calib", "pickle.npz"), 6,
         r"calibration file pickle\.npz is not an \.npz archive \(a pickle\)", _den("m.onnx", calib="pickle.npz")),
    Case("calib-npy", "--calib a single .npy array", ("denoise", "m.onnx", "--calib", "array.npy"), 6,
         r"calibration file array\.npy is not an \.npz archive \(a single \.npy array\)", _den("m.onnx", calib="array.npy")),
    Case("calib-damaged", "--calib a truncated .npz", ("denoise", "m.onnx", "--calib", "damaged.npz"), 6,
         r"calibration file damaged\.npz is a damaged \.npz archive", _den("m.onnx", calib="damaged.npz")),
    Case("calib-object", "--calib holding an object array (never unpickled)", ("denoise", "m.onnx", "--calib", "object.npz"), 6,
         r"calibration array 'x' in object\.npz is an object array; refused", _den("m.onnx", calib="object.npz")),
    Case("calib-no-labels", "--calib without 'labels'", ("denoise", "m.onnx", "--calib", "no_labels.npz"), 6,
         r"calibration data lack \['labels'\]", _den("m.onnx", calib="no_labels.npz")),
    Case("calib-unknown-key", "--calib with an unknown array", ("denoise", "m.onnx", "--calib", "unknown_key.npz"), 6,
         r"calibration data have unknown keys \['extra'\]", _den("m.onnx", calib="unknown_key.npz")),
    Case("calib-label-range", "labels outside [0, l)", ("denoise", "m.onnx", "--calib", "label_range.npz"), 6,
         r"'labels' must lie in \[0, 6\) for a classifier with 6 classes; got min 6, max 11",
         _den("m.onnx", calib="label_range.npz")),
    Case("calib-float-labels", "(n,) labels that are not integers", ("denoise", "m.onnx", "--calib", "float_labels.npz"), 6,
         r"'labels' must hold integer class labels; got dtype float32", _den("m.onnx", calib="float_labels.npz")),
    Case("calib-dtype", "inputs of the wrong dtype", ("denoise", "m.onnx", "--calib", "int_inputs.npz"), 6,
         r"calibration array 'x' has dtype int64 but model input 'x' is float32", _den("m.onnx", calib="int_inputs.npz")),
    Case("calib-shape", "inputs of the wrong width", ("denoise", "m.onnx", "--calib", "wrong_width.npz"), 6,
         r"calibration array 'x' has shape \(40, 7\) but model input 'x' expects \[n, 5\]",
         _den("m.onnx", calib="wrong_width.npz")),
    Case("calib-nan", "NaN in the inputs", ("denoise", "m.onnx", "--calib", "nan_inputs.npz"), 6,
         r"calibration array 'x' contains NaN/Inf", _den("m.onnx", calib="nan_inputs.npz")),
    Case("calib-count", "fewer labels than samples", ("denoise", "m.onnx", "--calib", "count_mismatch.npz"), 6,
         r"'labels' has 30 labels but the inputs have 40 samples", _den("m.onnx", calib="count_mismatch.npz")),
    Case("calib-partial-val", "held-out split incomplete", ("denoise", "m.onnx", "--calib", "partial_val.npz"), 6,
         r"held-out split incomplete: found \['val_x'\], need all of \['val_x', 'val_labels'\]",
         _den("m.onnx", calib="partial_val.npz")),
    Case("calib-targets", "(n, l) target matrix of the wrong width", ("denoise", "m.onnx", "--calib", "targets_shape.npz"), 6,
         r"'labels' target matrix has shape \(40, 5\); expected \(40, 6\)", _den("m.onnx", calib="targets_shape.npz")),
    Case("label-repair-choice", "--label-repair not none/filter/relabel/neighbours/auto",
         ("denoise", "m.onnx", "--calib", "calib.npz", "--label-repair", "clean"), 2,
         r"argument --label-repair: invalid choice: 'clean'", _den("m.onnx", calib="calib.npz", label_repair="clean"),
         r"--label-repair: label_repair must be 'none', 'filter' \(beyond the paper\), 'relabel' \(beyond the paper\), "
         r"'neighbours' \(beyond the paper\) or 'auto' \(beyond the paper\); got 'clean'"),
    Case("label-repair-fixed-rank", "--label-repair with a fixed --rank (the core refuses it)",
         ("denoise", "m.onnx", "--calib", "calib.npz", "--rank", "2", "--label-repair", "auto"), 2,
         r"label_repair='auto' needs rank='auto' and the full tail \(tail='auto' or 'full'\): its heads compete "
         r"behind the guard; got rank=2, tail='auto'", _den("m.onnx", calib="calib.npz", rank=2, label_repair="auto")),
    Case("label-repair-diagonal", "--label-repair with --tail diagonal (the core refuses it)",
         ("denoise", "m.onnx", "--calib", "calib.npz", "--tail", "diagonal", "--label-repair", "filter"), 2,
         r"label_repair='filter' needs rank='auto' and the full tail .*got rank='auto', tail='diagonal'",
         _den("m.onnx", calib="calib.npz", tail="diagonal", label_repair="filter")),
    Case("label-repair-no-calib", "--label-repair without --calib",
         ("denoise", "m.onnx", "--rank", "1", "--label-repair", "relabel"), 2,
         r"--label-repair relabel refits the classifier against labels and flags mislabelled calibration rows: it "
         r"needs --calib DATA\.npz", _den("m.onnx", rank=1, label_repair="relabel")),
    Case("issues-no-calib", "--issues without --calib", ("denoise", "m.onnx", "--rank", "1", "--issues", "i.csv"), 2,
         r"--issues lists the calibration rows whose labels look wrong: it needs --calib DATA\.npz",
         _den("m.onnx", rank=1, issues="i.csv")),
    Case("no-temperature-no-calib", "--no-temperature without --calib",
         ("denoise", "m.onnx", "--rank", "1", "--no-temperature"), 2,
         r"--no-temperature acts on a head refit against calibration data: it needs --calib DATA\.npz",
         _den("m.onnx", rank=1, temperature=False)),
    Case("issues-soft-labels", "--issues with an (n, l) target matrix as labels",
         ("denoise", "m.onnx", "--calib", "soft_labels.npz", "--issues", "i.csv"), 6,
         r"--issues needs \(n,\) integer class labels \(a row is mislabelled against one given class\); the "
         r"calibration 'labels' are an \(n, l=6\) target matrix", _den("m.onnx", calib="soft_labels.npz", issues="i.csv")),
    Case("issues-is-input", "--issues the input model",
         ("denoise", "m.onnx", "--calib", "calib.npz", "--issues", "m.onnx", "--force"), 7,
         r"--issues m\.onnx would overwrite the input model \(m\.onnx\)",
         _den("m.onnx", calib="calib.npz", issues="m.onnx", force=True)),
    Case("issues-is-calib", "--issues the calibration file",
         ("denoise", "m.onnx", "--calib", "calib.npz", "--issues", "./calib.npz", "--force"), 7,
         r"--issues \./calib\.npz would overwrite the calibration data \(calib\.npz\)",
         _den("m.onnx", calib="calib.npz", issues="./calib.npz", force=True)),
    Case("issues-is-output", "--issues the output model",
         ("denoise", "m.onnx", "--calib", "calib.npz", "-o", "r.onnx", "--issues", "r.onnx"), 7,
         r"--issues r\.onnx is the same file as output model r\.onnx",
         _den("m.onnx", "r.onnx", calib="calib.npz", issues="r.onnx")),
    Case("issues-exists", "--issues an existing file, no --force",
         ("denoise", "m.onnx", "--calib", "calib.npz", "--issues", "exists.onnx"), 7,
         r"--issues exists\.onnx exists; pass --force to overwrite it",
         _den("m.onnx", calib="calib.npz", issues="exists.onnx")),
    Case("output-is-input", "-o the input", ("denoise", "m.onnx", "--rank", "1", "-o", "./m.onnx", "--force"), 7,
         r"output model \./m\.onnx would overwrite the input model \(m\.onnx\)", _den("m.onnx", "./m.onnx", rank=1, force=True)),
    Case("output-exists", "-o an existing file, no --force", ("denoise", "m.onnx", "--rank", "1", "-o", "exists.onnx"), 7,
         r"output model exists\.onnx exists; pass --force to overwrite it", _den("m.onnx", "exists.onnx", rank=1)),
    Case("output-folder", "-o a folder", ("denoise", "m.onnx", "--rank", "1", "-o", "outdir", "--force"), 7,
         r"output model outdir is a folder", _den("m.onnx", "outdir", rank=1, force=True)),
    Case("output-no-folder", "-o in a missing folder", ("denoise", "m.onnx", "--rank", "1", "-o", "nowhere/r.onnx"), 7,
         r"output model nowhere/r\.onnx: the folder .*nowhere does not exist", _den("m.onnx", "nowhere/r.onnx", rank=1)),
    Case("output-device", "-o a character device, even with --force",
         ("denoise", "m.onnx", "--rank", "1", "-o", "/dev/null", "--force"), 7,
         r"output model /dev/null is a character device; only a regular file is ever replaced",
         _den("m.onnx", "/dev/null", rank=1, force=True)),
    Case("report-is-output", "--report the output model", ("denoise", "m.onnx", "--rank", "1", "-o", "r.onnx", "--report", "r.onnx"), 7,
         r"--report r\.onnx is the same file as output model r\.onnx", _den("m.onnx", "r.onnx", rank=1, report="r.onnx")),
    Case("report-is-input-data", "--report the input's external data file",
         ("denoise", "m_dynamo.onnx", "--rank", "1", "-o", "rr.onnx", "--report", "m_dynamo.onnx.data", "--force"), 7,
         r"--report m_dynamo\.onnx\.data would overwrite the input's external data file",
         _den("m_dynamo.onnx", "rr.onnx", rank=1, report="m_dynamo.onnx.data", force=True)),
    Case("report-exists", "--report an existing file, no --force", ("denoise", "m.onnx", "--rank", "1", "--report", "exists.onnx"), 7,
         r"--report exists\.onnx exists; pass --force to overwrite it", _den("m.onnx", rank=1, report="exists.onnx")),
    Case("plot-format", "inspect --plot with an unknown extension", ("inspect", "m.onnx", "--plot", "s.xyz"), 2,
         r"--plot s\.xyz: unknown image format 'xyz'"),
    Case("plot-exists", "inspect --plot an existing file, no --force", ("inspect", "m.onnx", "--plot", "exists.png"), 7,
         r"--plot exists\.png exists; pass --force to overwrite it"),
    Case("compare-classes", "compare classifiers with different class counts", ("compare", "m.onnx", "four_classes.onnx"), 2,
         r"the classifiers have different numbers of classes: 6 and 4", lambda: api.compare("m.onnx", "four_classes.onnx")),
    Case("compare-k", "compare --k above min(m_a, m_b)", ("compare", "m.onnx", "m.onnx", "--k", "7"), 2,
         r"k=7 is out of range \[1, 6\]", lambda: api.compare("m.onnx", "m.onnx", ks=[7])),
    Case("compare-k-zero", "compare --k 0 (checked before the models are read)", ("compare", "missing.onnx", "m.onnx", "--k", "0"), 2,
         r"--k must be a positive integer \(a rank to compare\); got 0", lambda: api.compare("missing.onnx", "m.onnx", ks=[0])),
    Case("save-inputs-file", "demo --save-inputs onto a file", ("demo", "--save-inputs", "exists.onnx"), 7,
         r"--save-inputs exists\.onnx exists and is not a folder", lambda: demo.save_inputs("exists.onnx")),
    Case("command", "unknown command", ("bogus",), 2, r"argument COMMAND: invalid choice: 'bogus'"),
]


def _snapshot(folder: str) -> dict:
    out = {}
    for root, dirs, files in os.walk(folder):
        for n in dirs + files:
            p = os.path.join(root, n)
            rel = os.path.relpath(p, folder)
            out[rel] = None if os.path.isdir(p) else hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def run_cli(case: Case) -> tuple[int, str, str]:
    """``lip-onnx`` in-process; returns (exit code, the error line, all of stderr)."""
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = cli.main(list(case.args))
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("lip-onnx: error: ")]
    return code, (lines[0][len("lip-onnx: error: "):] if lines else ""), text


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bad"))
    make_inputs(folder)
    shutil.copy(os.path.join(folder, "exists.onnx"), os.path.join(folder, "exists.png"))
    return folder


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly_through_the_cli_and_the_api(case, inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    before = _snapshot(inputs)
    code, message, stderr = run_cli(case)
    assert code == case.code and code in errors.EXIT_CODES, stderr
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if "error" in line]) == 1, stderr   # one line (usage aside)
    assert re.search(case.message, message), message
    assert _snapshot(inputs) == before              # nothing left behind, every input byte-identical
    assert not os.path.exists("UNPICKLED")          # no object array was ever unpickled
    if case.api is not None:
        with pytest.raises(ERROR_OF_CODE[case.code]) as exc:
            case.api()
        assert re.search(case.api_message or case.message, str(exc.value)), str(exc.value)
        assert "\n" not in str(exc.value)
        assert _snapshot(inputs) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("model-junk", "calib-object", "report-is-output",
                                                               "rank-zero-truncation", "command")], ids=lambda c: c.id)
def test_bad_input_in_a_real_process_prints_one_line(case, inputs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "lip_agnostic.tools", *case.args], capture_output=True, text=True,
                       cwd=inputs, env=env, timeout=300)
    assert r.returncode == case.code and "Traceback" not in r.stderr
    errs = [line for line in r.stderr.splitlines() if line.startswith("lip-onnx: error: ")]
    assert len(errs) == 1 and re.search(case.message, errs[0]), r.stderr


def render_table(folder: str) -> str:
    """The table as run: what the docs show."""
    cwd = os.getcwd()
    os.chdir(folder)
    rows = []
    try:
        for case in CASES:
            code, message, _ = run_cli(case)
            for base in (os.path.realpath(folder), folder):
                message = message.replace(base + os.sep, "").replace(base, ".")
            args = " ".join(case.args)
            rows.append(f"| {case.what} | `lip-onnx {args}` | {code} | {message.replace('|', '/')} |")
    finally:
        os.chdir(cwd)
    head = (
        "# Bad inputs: what `lip-onnx` says\n\n"
        "Every row is run by `tests/test_onnx_bad_inputs.py`, through the command line and (where the input is not\n"
        "command-line syntax) the Python API (`lip_agnostic.tools.api`), which raises the typed error of the exit code\n"
        "(`lip_agnostic.tools.errors`). Each ends with this exit code and this one-line message on stderr (after\n"
        "`lip-onnx: error: `), no traceback, nothing written and every input file byte-identical (sha256). The files\n"
        "are made by `make_inputs` in that test (`m.onnx`: an MLP with input `x (n, 5)` and a `Gemm` head `W (12, 6)`;\n"
        "`m_dynamo.onnx`: the same with its weights in `m_dynamo.onnx.data`; `calib.npz`: 40 good samples). The test\n"
        "fails when this page and the messages disagree; `python tests/test_onnx_bad_inputs.py --write` rewrites it.\n"
        "Exit 9 (the system refuses the write: a read-only folder, a full disk) cannot be made by a file here; it is\n"
        "simulated in `tests/test_onnx_safety.py`. The exit codes (`lip-onnx -h`, `lip_agnostic.tools.errors`):\n\n"
        "| exit | meaning |\n|---|---|\n"
        + "".join(f"| {code} | {text} |\n" for code, text in errors.EXIT_CODES.items())
        + "\n| bad input | command | exit | message |\n|---|---|---|---|\n")
    return head + "\n".join(rows) + "\n"


def test_docs_table_is_the_table_as_run(inputs):
    with open(DOC, encoding="utf-8") as fh:
        documented = fh.read()
    assert documented == render_table(inputs), "docs/BAD_INPUTS.md is stale: python tests/test_onnx_bad_inputs.py --write"
    cli_doc = open(os.path.join(os.path.dirname(DOC), "CLI.md"), encoding="utf-8").read()
    assert f"[BAD_INPUTS.md](BAD_INPUTS.md) lists {len(CASES)} bad inputs" in " ".join(cli_doc.split())


if __name__ == "__main__":  # regenerate docs/BAD_INPUTS.md
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_onnx_bad_inputs.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        make_inputs(tmp)
        shutil.copy(os.path.join(tmp, "exists.onnx"), os.path.join(tmp, "exists.png"))
        text = render_table(tmp)
    with open(DOC, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {DOC} ({len(CASES)} rows)")
