"""Validation of a refined model: the ONNX checker, then old vs new in onnxruntime."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from .errors import CalibrationError, ValidationFailedError
from .graph import Classifier, graph_inputs
from .model_io import LoadedModel
from .runtime import Session, batched

__all__ = ["check_model_file", "random_inputs", "compare_outputs"]

#: Samples the runtime comparison uses at most.
MAX_SAMPLES = 512


def check_model_file(path: str) -> None:
    """``onnx.checker.check_model(path, full_check=True)`` (shape inference included).

    Raises
    ------
    ValidationFailedError
        With the checker's message.
    """
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:
        raise ValidationFailedError(f"the refined model fails onnx.checker: {str(exc).strip()[:400]}") from None


def random_inputs(loaded: LoadedModel, n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of the declared shapes (symbolic batch axis -> ``n``, other symbolic axes -> 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in graph_inputs(loaded):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (n if axis == 0 else 1)
                for axis, d in enumerate(tt.shape.dim)]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if dtype.kind == "f":
            feeds[vi.name] = rng.random(dims).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.random(dims) > 0.5
        else:
            feeds[vi.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def _run(session: Session, names: list[str], feeds: Mapping[str, np.ndarray], batch_size: int) -> list[np.ndarray]:
    parts = [session.run(b, names) for b in batched(feeds, batch_size)]
    return [np.concatenate([p[i] for p in parts], axis=0).astype(np.float64) for i in range(len(names))]


def output_kinds(loaded: LoadedModel, c: Classifier) -> dict[str, str]:
    """The model's float graph outputs and what they hold: ``"logits"`` (the
    classifier's own output), ``"probabilities"`` (made by ``Softmax`` or
    ``Sigmoid``), ``"log-probabilities"`` (``LogSoftmax``) or ``"outputs"``."""
    producer = {o: n.op_type for n in loaded.model.graph.node for o in n.output}
    kinds = {}
    for o in loaded.model.graph.output:
        if onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).kind != "f":
            continue
        op = producer.get(o.name)
        kinds[o.name] = ("logits" if o.name == c.output_name else
                         "probabilities" if op in ("Softmax", "Sigmoid") else
                         "log-probabilities" if op == "LogSoftmax" else "outputs")
    return kinds


def compare_outputs(old: LoadedModel, new: LoadedModel, c: Classifier, feeds: Mapping[str, np.ndarray],
                    *, batch_size: int = 256) -> dict:
    """Run old and new model on the same feeds; compare the classifier's logits and the model's outputs.

    Steps
    -----
    1. Keep the first :data:`MAX_SAMPLES` samples of ``feeds``.
    2. Logits ``Z_old``, ``Z_new`` (the classifier's output tensor), and each
       float graph output (:func:`output_kinds`: logits, probabilities, ...).
    3. ``top1_agreement`` = mean of ``argmax Z_old == argmax Z_new`` (last axis),
       ``max_logit_change`` = ``max |Z_new - Z_old|``, and per graph output
       ``max_change`` = ``max |O_new - O_old|``; all finite or the model is invalid.

    Raises
    ------
    ValidationFailedError
        If the new model does not run or gives non-finite outputs.
    """
    feeds = {k: v[:MAX_SAMPLES] for k, v in feeds.items()}
    kinds = output_kinds(old, c)
    names = [c.output_name] + [n for n in kinds if n != c.output_name]
    try:
        olds = _run(Session(old, [c.output_name], prepack=False), names, feeds, batch_size)
    except CalibrationError as exc:
        raise ValidationFailedError(f"cannot validate: the original model does not run on the validation inputs "
                                    f"({exc}); give --calib data, or --no-validate") from None
    try:
        news = _run(Session(new, [c.output_name], prepack=False), names, feeds, batch_size)
    except Exception as exc:
        raise ValidationFailedError(f"onnxruntime cannot run the refined model: {str(exc).strip()[:300]}") from None
    for name, a, b in zip(names, olds, news):
        if a.shape != b.shape:
            raise ValidationFailedError(f"the refined model's {name!r} has shape {b.shape}, the original's {a.shape}")
        if not np.all(np.isfinite(b)):
            raise ValidationFailedError(f"the refined model produces NaN/Inf in {name!r}")
    z_old, z_new = olds[0], news[0]
    agree = np.argmax(z_old, axis=-1) == np.argmax(z_new, axis=-1)
    return {
        "samples": int(z_old.shape[0]),
        "logits": c.output_name,
        "top1_agreement": float(np.mean(agree)),
        "max_logit_change": float(np.max(np.abs(z_new - z_old))) if z_old.size else 0.0,
        "max_logit_abs": float(np.max(np.abs(z_old))) if z_old.size else 0.0,
        "outputs": [{"name": n, "kind": kinds[n], "max_change": float(np.max(np.abs(b - a))) if a.size else 0.0}
                    for n, a, b in zip(names[1:], olds[1:], news[1:])],
    }
