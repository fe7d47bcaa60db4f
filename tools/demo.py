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

from .api import check_options, denoise
from .errors import OutputRefusedError
from .model_io import LoadedModel, load_model
from .runtime import Session
from .writer import check_outputs, write_bytes_atomic

__all__ = ["DEMO_RANK", "model_path", "calib_path", "test_path", "run", "accuracy", "save_inputs"]

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


def _packaged() -> list[tuple[str, str]]:
    return [("the demo's packaged model", model_path()), ("the demo's packaged calibration data", calib_path()),
            ("the demo's packaged test data", test_path())]


def save_inputs(folder: "str | os.PathLike", force: bool = False) -> dict:
    """Copy the demo's model and calibration data to ``folder/model.onnx`` and
    ``folder/calib.npz`` (the names the README examples use).

    ``folder`` is created if missing; an existing file is refused unless
    ``force`` (the packaged files themselves, never). Both files are checked
    before either is written, and each is staged and renamed into place.
    """
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputRefusedError(f"--save-inputs {folder} exists and is not a folder")
    targets = {"model": os.path.join(folder, "model.onnx"), "calib": os.path.join(folder, "calib.npz")}
    if os.path.isdir(folder):
        check_outputs([(f"--save-inputs {k}", p) for k, p in targets.items()], _packaged(), force)
    else:
        try:
            os.makedirs(folder)
        except OSError as exc:
            raise OutputRefusedError(f"cannot create --save-inputs folder {folder}: {exc.strerror}") from None
    for key, src in (("model", model_path()), ("calib", calib_path())):
        with open(src, "rb") as fh:
            write_bytes_atomic(targets[key], fh.read(), force=force, protected=_packaged(), what=f"--save-inputs {key}")
    return targets


def run(rank=None, output: str | None = None, force: bool = False, verbose: bool = True, tail: str = "auto") -> dict:
    """Denoise the embedded model; return (and print) accuracy before/after on clean labels.

    ``tail`` as for :func:`lip_agnostic.tools.api.denoise` (``"auto"``, the
    default, follows the committed evidence; ``"diagonal"`` is the paper's LIP).
    """
    t0 = time.perf_counter()
    rank = DEMO_RANK if rank is None else rank
    check_options(rank=rank, calib=calib_path(), tail=tail)
    if output is not None:
        check_outputs([("output", output)], _packaged(), force)
    with np.load(test_path()) as z:
        x_test, y_test = z["pixels"], z["labels"]
    before_model = load_model(model_path())
    new, report = denoise(before_model.model, rank=rank, calib=calib_path(), tail=tail, return_report=True)
    before = accuracy(before_model, x_test, y_test)
    after = accuracy(new, x_test, y_test)
    if output is not None:
        write_bytes_atomic(output, new.SerializeToString(), force=force, protected=_packaged())
    sel = report["rank"]
    result = {
        "model": model_path(), "noise": 0.4, "rank_setting": rank, "k": sel["k"], "m": sel["m"],
        "held_out_score": sel.get("best_score"), "held_out_base": sel.get("base_score"),
        "n_calib": report["calibration"]["n"], "n_val": report["calibration"]["n_val"], "n_test": int(len(y_test)),
        "test_accuracy_before": before, "test_accuracy_after": after,
        "top1_agreement": report["validation"]["top1_agreement"], "seconds": time.perf_counter() - t0,
        "output": output, "tail_setting": tail, "tail": report.get("tail"),
    }
    if verbose:
        print("lip-onnx demo: MLP 64-64-10 on sklearn digits, trained with 40% noisy labels")
        print(f"  calibration: {result['n_calib']} samples (noisy labels), held-out {result['n_val']} (noisy)")
        how = f"k={sel['k']} of {sel['m']}"
        if sel.get("strategy") == "auto":
            how += (f" (auto: held-out top-1 accuracy {sel['best_score']:.3f} vs unchanged {sel['base_score']:.3f}, "
                    f"on the {sel['n_val']} noisy held-out labels)")
        lay = report["layer"]  # the wording of ``lip-onnx inspect``/``denoise``: W (q, l)
        print(f"  LIP on classifier {lay['node_name'] or lay['output_name']!r}, W (q={lay['q']}, l={lay['l']}): {how}")
        if report.get("tail") == "full":
            ridge = sel.get("ridge")
            print(f"  refit: the full-tail ridge refit (beyond the paper{'' if ridge is None else f'; ridge {ridge:.4g}'}"
                  f"{'; k=0 is a ridge head' if sel['k'] == 0 else ''}), "
                  + ("the default for --rank auto by the" if tail == "auto" else "as requested (--tail full);"))
            print(("  committed evidence (docs/EVIDENCE.md); " if tail == "auto" else "  ")
                  + "'lip-onnx demo --tail diagonal' runs the paper's LIP")
        elif report.get("mode") == "lip":
            print("  refit: the paper's LIP (diagonal tail refit)"
                  + (", what --tail auto runs for a fixed rank" if tail == "auto" else ""))
        print(f"  clean test accuracy ({len(y_test)} samples): before {before:.4f}  after {after:.4f}  "
              f"({after - before:+.4f})")
        if sel.get("strategy") == "auto" and sel["k"] == sel["m"]:
            print("  no (rank, ridge) beat the unchanged model's held-out top-1 accuracy significantly (sign test),"
                  if report.get("tail") == "full" else
                  "  no rank beat the unchanged model's held-out top-1 accuracy significantly (sign test),")
            print("  so the weights were left as they are (docs/EVIDENCE.md says where LIP helps);")
            print("  'lip-onnx demo --rank K' forces a change")
        if output:
            print(f"  wrote {output}")
        print(f"  done in {result['seconds']:.2f} s")
    return result
