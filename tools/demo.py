"""``lip-onnx demo``: the project's job end to end on an embedded model.

The package ships a small ONNX classifier trained with 40 % noisy labels on
scikit-learn's digits, its calibration data (noisy training labels plus a
noisy held-out split) and a clean test split; ``tools/data/make_demo.py``
regenerates them. The demo denoises the model with the full LIP and prints
the clean test accuracy before and after.
"""

from __future__ import annotations

import os
import time
from importlib import resources

import numpy as np
import onnx

from .api import denoise
from .errors import OutputRefusedError
from .model_io import LoadedModel, load_model
from .runtime import Session

__all__ = ["DEMO_RANK", "model_path", "calib_path", "test_path", "run", "accuracy"]

#: The demo's rank setting: the core's automatic choice (scored on the noisy
#: held-out split). Change it here, or pass ``lip-onnx demo --rank K``.
DEMO_RANK = "auto"


def _data(name: str) -> str:
    return str(resources.files("lip_agnostic.tools").joinpath("data", name))


def model_path() -> str:
    """Path of the embedded model ``demo_digits.onnx``."""
    return _data("demo_digits.onnx")


def calib_path() -> str:
    """Path of the calibration data (noisy labels, with a held-out split)."""
    return _data("demo_digits_calib.npz")


def test_path() -> str:
    """Path of the clean test split."""
    return _data("demo_digits_test.npz")


def accuracy(model: "onnx.ModelProto | LoadedModel | str", x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model's ``logits`` on ``(x, y)`` (onnxruntime)."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    z = Session(loaded).run({"pixels": x}, ["logits"])[0]
    return float(np.mean(np.argmax(z, axis=1) == y))


def run(rank=None, output: str | None = None, force: bool = False, verbose: bool = True) -> dict:
    """Denoise the embedded model; return (and print) accuracy before/after on clean labels."""
    t0 = time.perf_counter()
    rank = DEMO_RANK if rank is None else rank
    if output is not None and os.path.lexists(output) and not force:
        raise OutputRefusedError(f"output {output} exists; pass --force to overwrite it")
    with np.load(test_path()) as z:
        x_test, y_test = z["pixels"], z["labels"]
    before_model = load_model(model_path())
    new, report = denoise(before_model.model, rank=rank, calib=calib_path(), return_report=True)
    before = accuracy(before_model, x_test, y_test)
    after = accuracy(new, x_test, y_test)
    if output is not None:
        from .writer import write_bytes_atomic
        write_bytes_atomic(output, new.SerializeToString())
    sel = report["rank"]
    result = {
        "model": model_path(), "noise": 0.4, "rank_setting": rank, "k": sel["k"], "m": sel["m"],
        "held_out_score": sel.get("best_score"), "held_out_base": sel.get("base_score"),
        "n_calib": report["calibration"]["n"], "n_val": report["calibration"]["n_val"], "n_test": int(len(y_test)),
        "test_accuracy_before": before, "test_accuracy_after": after,
        "top1_agreement": report["validation"]["top1_agreement"], "seconds": time.perf_counter() - t0,
        "output": output,
    }
    if verbose:
        print("lip-onnx demo: MLP 64-64-10 on sklearn digits, trained with 40% noisy labels")
        print(f"  calibration: {result['n_calib']} samples (noisy labels), held-out {result['n_val']} (noisy)")
        how = f"k={sel['k']} of {sel['m']}"
        if sel.get("strategy") == "auto":
            how += f" (auto: held-out {sel['best_score']:.3f} vs unchanged {sel['base_score']:.3f})"
        print(f"  LIP on classifier 'fc2' (10 x 64): {how}")
        print(f"  clean test accuracy ({len(y_test)} samples): before {before:.4f}  after {after:.4f}  "
              f"({after - before:+.4f})")
        if sel.get("strategy") == "auto" and sel["k"] == sel["m"]:
            print("  no rank beat the unchanged model significantly on the held-out split, so the weights were")
            print("  left as they are (on cross-entropy heads LIP did not help in our study: docs/EVIDENCE.md);")
            print("  'lip-onnx demo --rank K' forces a change")
        if output:
            print(f"  wrote {output}")
        print(f"  done in {result['seconds']:.2f} s")
    return result
