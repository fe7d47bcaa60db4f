"""Python API of ``lip-onnx``: one function per command.

>>> from lip_agnostic.tools import api          # doctest: +SKIP
>>> model = api.denoise("model.onnx", rank=8)   # doctest: +SKIP
>>> api.denoise_file("model.onnx", calib="calib.npz")["rank"]["k"]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np
import onnx

import lip_agnostic as lip
from lip_agnostic.lowrank import low_rank_blocks, truncate_top

from .calibrate import CalibrationData, feature_batches, load_calibration
from .errors import CalibrationError, LipOnnxError, UnsupportedWeightError, UsageError
from .graph import Classifier, classifier_candidates, find_linear_layers, read_bias, read_weight, select_classifier, weight_tensor
from .model_io import LoadedModel, iter_tensors, load_model, read_tensor, tensor_nbytes
from .runtime import Session
from .validate import check_model_file, compare_outputs, random_inputs
from .writer import BlockSource, check_output_path, default_output, stage_model, to_stored

__all__ = ["denoise", "denoise_file", "inspect", "compare", "LARGE_WEIGHT", "DEFAULT_BATCH"]

#: Weights with more elements than this are truncated with the randomized top-k SVD.
LARGE_WEIGHT = 1 << 22
#: Models above this size cannot be returned in memory by :func:`denoise` (protobuf's 2 GiB cap).
IN_MEMORY_LIMIT = 2**31 - 2**24
#: Samples per onnxruntime call during calibration.
DEFAULT_BATCH = 256
_CHUNK = 1 << 20


def _check_finite(W: np.ndarray, name: str) -> None:
    flat = np.ravel(W, order="K")  # a view for C- or F-ordered (transposed) weights
    bad = 0
    for start in range(0, flat.size, _CHUNK):
        bad += int(np.count_nonzero(~np.isfinite(flat[start:start + _CHUNK])))
    if bad:
        raise UnsupportedWeightError(f"classifier weight {name!r} (shape {list(W.shape)}) contains {bad} NaN/Inf value(s); refused")


def _check_rank(rank: Any, m: int, calib: bool) -> Any:
    if rank is None:
        if not calib:
            raise UsageError("truncation needs --rank K or --energy F (or give --calib for the full LIP with --rank auto)")
        return "auto"
    if isinstance(rank, str):
        if rank != "auto":
            try:
                rank = int(rank)
            except ValueError:
                raise UsageError(f"--rank must be an integer or 'auto'; got {rank!r}") from None
        elif not calib:
            raise UsageError("--rank auto needs held-out data: give --calib DATA.npz "
                             "(with val_* arrays, or the core holds out every 5th sample)")
        else:
            return "auto"
    if isinstance(rank, bool):
        raise UsageError(f"rank must be an integer, an energy fraction or 'auto'; got {rank!r}")
    if isinstance(rank, (int, np.integer)):
        if not 0 <= int(rank) <= m:
            raise UsageError(f"k={int(rank)} is out of range: the classifier has min(q, l)={m} components, k must lie in [0, {m}]")
        return int(rank)
    if isinstance(rank, float):
        if not (0.0 < rank <= 1.0) or math.isnan(rank):
            raise UsageError(f"--energy must lie in (0, 1]; got {rank}")
        return rank
    raise UsageError(f"rank must be an integer, an energy fraction or 'auto'; got {rank!r}")


def _weight_index(loaded: LoadedModel, c: Classifier) -> int:
    target = weight_tensor(loaded, c.weight)
    for i, t in enumerate(iter_tensors(loaded.model.graph)):
        if t is target:
            return i
    raise UnsupportedWeightError(f"weight {c.weight.name!r} not found among the model's tensors")


def _refine(loaded: LoadedModel, *, rank: Any, calib: Any, layer: str | None, batch_size: int,
            target_scale: Any, min_gain: float, progress: bool) -> tuple[Classifier, Any, dict, CalibrationData | None]:
    """Find the classifier, run PSP or LIP through the core, return its new stored value."""
    t0 = time.perf_counter()
    c = select_classifier(loaded, layer)
    stored = read_weight(loaded, c)
    large = c.q * c.l > LARGE_WEIGHT
    if not (large and calib is None):  # the large truncation checks finiteness in its energy pass
        _check_finite(stored, c.weight.name)
    m = min(c.q, c.l)
    rank = _check_rank(rank, m, calib is not None)
    dtype = np.dtype(c.weight.dtype)
    transposed = c.layout == "(l, q)"
    report: dict = {"layer": c.to_dict(), "notes": list(c.notes)}
    cal = None
    if calib is None:
        report["mode"] = "truncation"
        work = np.float32 if large or dtype == np.float16 else np.float64
        W = stored if (stored.dtype == work and c.alpha == 1.0) else np.asarray(stored, dtype=work) * c.alpha
        if large:
            # Decompose the weight as stored ((l, q) for transB=1: W^T, same spectrum and k), so
            # every pass reads contiguous rows; its rank-k blocks are then rows of the stored tensor.
            S = W.T if transposed else W
            try:
                top = truncate_top(S, rank)
            except ValueError as exc:
                if "NaN/Inf" not in str(exc):
                    raise
                _check_finite(stored, c.weight.name)  # the precise message (count, shape)
                raise
            k = top.k
            report["rank"] = {"k": k, "m": m, "strategy": "energy" if isinstance(rank, float) else "fixed",
                              "changed": k < m}
            report["svd"] = top.to_dict()
            kept = top.energy_kept()
            report["summary"] = {"shape": [c.q, c.l], "k": k,
                                 "spectrum_before_top": [float(v) for v in top.svd.s],
                                 "energy_kept": kept, "relative_change": math.sqrt(max(0.0, 1.0 - kept)),
                                 "principal_angle": 0.0,
                                 "principal_angle_note": "rank-k truncation keeps the top-k subspace by construction"}
            shape = tuple(S.shape)

            def blocks():
                for blk in low_rank_blocks(top.svd, block_rows=1024):
                    yield np.asarray(blk / c.alpha if c.alpha != 1.0 else blk).astype(dtype, copy=False)
            value: Any = BlockSource(shape, dtype, blocks)
        else:
            f = lip.reduced_svd(W)  # the one factorization: rank, projection and summary reuse it
            sel = lip.select_rank(W, rank, svd=f)
            W_new = lip.project_principal(W, sel.k, svd=f)
            kept = np.concatenate([np.asarray(f.s[:sel.k]), np.zeros(f.rank_max - sel.k, dtype=f.s.dtype)])
            report["rank"] = sel.to_dict()
            report["summary"] = lip.summarize_refit(f.s, kept, sel.k, shape=tuple(W.shape)).to_dict()
            value = to_stored(np.asarray(W_new), c.layout, c.alpha, dtype, c.weight.name)
    else:
        report["mode"] = "lip"
        cal = calib if isinstance(calib, CalibrationData) else load_calibration(calib, loaded, c)
        work = np.float32 if large else np.float64
        W = np.asarray(stored, dtype=work) * c.alpha
        bias = read_bias(loaded, c)
        bias = None if bias is None else bias.astype(work)
        session = Session(loaded, [c.input_name])
        batches = feature_batches(session, c, cal.inputs, cal.labels, batch_size, progress=progress)
        val = None
        if cal.val_inputs is not None and rank == "auto":
            val = feature_batches(session, c, cal.val_inputs, cal.val_labels, batch_size, progress=progress,
                                  desc="held-out")
        try:
            res = lip.refine_batches(W, batches, rank=rank, validation=val, bias=bias, target_scale=target_scale,
                                     min_gain=min_gain)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, LipOnnxError):
                raise
            raise CalibrationError(f"LIP refused the calibration features/labels: {exc}") from None
        report["rank"] = res.selection.to_dict()
        report["summary"] = res.summary.to_dict()
        report["calibration"] = {"n": cal.n, "n_val": cal.n_val, "n_fit": res.n_fit,
                                 "n_degenerate": res.n_degenerate, "bias": c.bias is not None,
                                 "target_scale": target_scale, "rank_source": res.selection.extra.get("source")}
        value = to_stored(np.asarray(res.weight), c.layout, c.alpha, dtype, c.weight.name)
    report["seconds_refine"] = time.perf_counter() - t0
    return c, value, report, cal


def _materialize(loaded: LoadedModel, index: int, value: Any) -> onnx.ModelProto:
    """An in-memory copy with every tensor's data inline and ``value`` at ``index``."""
    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    for i, (src, dst) in enumerate(zip(iter_tensors(loaded.model.graph), iter_tensors(model.graph))):
        if i == index:
            arr = value.materialize() if isinstance(value, BlockSource) else value
        elif src.data_location == onnx.TensorProto.EXTERNAL:
            arr = np.asarray(read_tensor(src, loaded.base_dir))
        else:
            continue
        for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "raw_data",
                  "external_data", "data_location"):
            dst.ClearField(f)
        dst.raw_data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return model


def _stamp(model: onnx.ModelProto, report: dict) -> None:
    info = {"tool": "lip-onnx", "version": lip.__version__, "mode": report["mode"],
            "layer": report["layer"]["node_name"] or report["layer"]["output_name"], "k": report["rank"]["k"]}
    for p in list(model.metadata_props):
        if p.key == "lip_agnostic":
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = "lip_agnostic", json.dumps(info, sort_keys=True, default=str)


def denoise(model: "str | os.PathLike | onnx.ModelProto | bytes", /, *, rank: Any = None,
            calib: "str | os.PathLike | Mapping[str, np.ndarray] | None" = None, layer: str | None = None,
            batch_size: int = DEFAULT_BATCH, target_scale: Any = 1.0, min_gain: float = 0.0,
            validate: bool = True, progress: bool = False, return_report: bool = False) -> Any:
    """Refine a model's classifier; return the new model in memory (the input is untouched).

    Steps
    -----
    1. Find the classifier (:func:`lip_agnostic.tools.graph.select_classifier`).
    2. Without ``calib``: Principal Subspace Preservation, ``W_k`` of rank
       ``rank`` (an int, or a float in ``(0, 1]`` read as an energy fraction).
    3. With ``calib`` (a ``.npz`` path or a mapping, see
       :mod:`lip_agnostic.tools.calibrate`): the full LIP through
       :func:`lip_agnostic.refine_batches`; ``rank="auto"`` by default.
    4. Write ``W*`` back in the weight's original dtype and layout; stamp
       ``metadata_props["lip_agnostic"]``; optionally validate (checker +
       onnxruntime on the calibration inputs or random ones).

    Returns
    -------
    onnx.ModelProto, or (ModelProto, report dict) with ``return_report=True``.

    Examples
    --------
    >>> from lip_agnostic.tools import api, demo   # doctest: +SKIP
    >>> new = api.denoise(demo.model_path(), rank=5)   # doctest: +SKIP
    """
    loaded = load_model(model)
    size = sum(tensor_nbytes(t) for t in iter_tensors(loaded.model.graph))
    if size > IN_MEMORY_LIMIT:
        raise UsageError(f"the model holds {size / 2**30:.1f} GiB of tensors: too large for an in-memory "
                         "ModelProto; use denoise_file() or the lip-onnx CLI (they keep external data)")
    c, value, report, cal = _refine(loaded, rank=rank, calib=calib, layer=layer, batch_size=batch_size,
                                    target_scale=target_scale, min_gain=min_gain, progress=progress)
    new = _materialize(loaded, _weight_index(loaded, c), value)
    _stamp(new, report)
    if validate:
        if new.ByteSize() < 2**31 - 1:
            try:
                onnx.checker.check_model(new, full_check=True)
            except Exception as exc:
                from .errors import ValidationFailedError
                raise ValidationFailedError(f"the refined model fails onnx.checker: {str(exc)[:300]}") from None
        new_loaded = LoadedModel(new, None, loaded.base_dir)
        feeds = cal.inputs if cal is not None else random_inputs(loaded)
        report["validation"] = dict(compare_outputs(loaded, new_loaded, c, feeds), checker="ok")
    return (new, report) if return_report else new


def denoise_file(model_path: "str | os.PathLike", output: "str | os.PathLike | None" = None, /, *,
                 rank: Any = None, calib: Any = None, layer: str | None = None, force: bool = False,
                 batch_size: int = DEFAULT_BATCH, target_scale: Any = 1.0, min_gain: float = 0.0,
                 validate: bool = True, progress: bool = False) -> dict:
    """File to file: what ``lip-onnx denoise`` runs. Returns the report.

    The output (default ``<stem>.lip.onnx``) is staged in a temporary folder
    next to it, checked (``onnx.checker`` full check, then onnxruntime old
    vs new), and only then moved into place; models with external data keep
    it (one ``<output>.data`` file). Nothing is written on failure.
    """
    t0 = time.perf_counter()
    model_path = os.fspath(model_path)
    loaded = load_model(model_path)
    out = os.fspath(output) if output is not None else default_output(model_path)
    external = loaded.uses_external_data
    check_output_path(out, loaded, force, external)
    c, value, report, cal = _refine(loaded, rank=rank, calib=calib, layer=layer, batch_size=batch_size,
                                    target_scale=target_scale, min_gain=min_gain, progress=progress)
    _stamp(loaded.model, report)  # the copy written below carries it; the input file is not touched
    t_write = time.perf_counter()
    staged = stage_model(loaded, {_weight_index(loaded, c): value}, out, external=external or None)
    report["seconds_write"] = time.perf_counter() - t_write
    with staged:
        t1 = time.perf_counter()
        if validate:
            check_model_file(staged.staged_model)
            new_loaded = load_model(staged.staged_model)
            feeds = cal.inputs if cal is not None else random_inputs(loaded)
            report["validation"] = dict(compare_outputs(loaded, new_loaded, c, feeds), checker="ok")
        else:
            report["validation"] = {"skipped": True}
        report["seconds_validate"] = time.perf_counter() - t1
        staged.commit()
    report["input"], report["output"] = model_path, out
    report["seconds_total"] = time.perf_counter() - t0
    return report


def _spectrum_facts(W: np.ndarray, s: Any = None) -> dict:
    s = lip.singular_spectrum(W) if s is None else s
    return {"spectrum": [float(v) for v in s], "effective_rank": float(lip.effective_rank(s)),
            "stable_rank": float(lip.stable_rank(s))}


def _large_spectrum_facts(loaded: LoadedModel, c: Classifier, top: int = 64) -> dict:
    """Top of the spectrum of a large weight (randomized), exact stable rank; no full SVD."""
    stored = read_weight(loaded, c)
    S = np.asarray(stored.T if c.layout == "(l, q)" else stored, dtype=np.float32)
    try:
        res = truncate_top(S, min(top, min(S.shape)))
    except ValueError as exc:
        if "NaN/Inf" in str(exc):
            _check_finite(stored, c.weight.name)
        raise
    s = [abs(c.alpha) * float(v) for v in res.svd.s]
    total = res.total_energy * c.alpha ** 2
    return {"spectrum": s, "spectrum_is_top": len(s), "effective_rank": None,
            "stable_rank": total / (s[0] ** 2) if s and s[0] > 0 else 0.0,
            "note": f"weight above {LARGE_WEIGHT} entries: top-{len(s)} singular values (randomized SVD); "
                    "effective rank needs the full spectrum"}


def _weight_f(loaded: LoadedModel, c: Classifier) -> np.ndarray:
    W = np.asarray(read_weight(loaded, c), dtype=np.float64) * c.alpha
    _check_finite(W, c.weight.name)
    return W


def inspect(model: "str | os.PathLike | onnx.ModelProto | bytes", /, *, layer: str | None = None,
            spectrum: bool = True) -> dict:
    """The classifier candidates with their spectra, effective and stable ranks.

    ``layer`` restricts to one linear layer (any ``Gemm``/``MatMul`` with a
    constant weight). Raises ``ClassifierNotFoundError`` if there is none.
    """
    loaded = load_model(model)
    if layer is not None:
        cands, quantized = [select_classifier(loaded, layer)], []
    else:
        cands, quantized = classifier_candidates(loaded)
    out = {"model": model if isinstance(model, (str, os.PathLike)) else "<in memory>",
           "candidates": [], "quantized": quantized,
           "linear_layers": [c.label for c in find_linear_layers(loaded)]}
    if not cands:
        select_classifier(loaded)  # raises the precise error (none / quantized)
    for c in cands:
        entry = c.to_dict()
        if spectrum and c.q * c.l > LARGE_WEIGHT:
            entry.update(_large_spectrum_facts(loaded, c))
        elif spectrum:
            entry.update(_spectrum_facts(_weight_f(loaded, c)))
        out["candidates"].append(entry)
    return out


def compare(model_a: Any, model_b: Any, /, *, layer_a: str | None = None, layer_b: str | None = None,
            ks: list[int] | None = None) -> dict:
    """Principal angles and the paper's ``phi`` between two models' classifiers.

    Steps
    -----
    1. ``W_a``, ``W_b`` (same number of classes ``l``); reduced SVDs.
    2. For each ``k`` (default 1, 2, 4, ... and ``m``): ``phi(V_a, V_b, k, k)``
       (:func:`lip_agnostic.subspace_similarity`) and the principal angles
       between the top-``k`` class-side subspaces
       (:func:`lip_agnostic.principal_angles`), largest reported in degrees.
    """
    la, lb = load_model(model_a), load_model(model_b)
    ca, cb = select_classifier(la, layer_a), select_classifier(lb, layer_b)
    if ca.l != cb.l:
        raise UsageError(f"the classifiers have different numbers of classes: {ca.l} and {cb.l}")
    Wa, Wb = _weight_f(la, ca), _weight_f(lb, cb)
    fa, fb = lip.reduced_svd(Wa), lip.reduced_svd(Wb)
    m = min(fa.rank_max, fb.rank_max)
    if ks is None:
        ks = sorted({min(2 ** i, m) for i in range(int(math.log2(m)) + 1)} | {m})
    rows = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m:
            raise UsageError(f"k={k!r} is out of range [1, {m}]")
        theta = lip.principal_angles(fa.V[:, :k], fb.V[:, :k])
        rows.append({"k": k, "phi": float(lip.subspace_similarity(fa.V, fb.V, k, k)),
                     "max_angle_deg": float(np.degrees(np.max(theta))),
                     "mean_angle_deg": float(np.degrees(np.mean(theta)))})
    return {"a": {"layer": ca.label, "shape": [ca.q, ca.l], **_spectrum_facts(Wa, fa.s)},
            "b": {"layer": cb.label, "shape": [cb.q, cb.l], **_spectrum_facts(Wb, fb.s)},
            "subspaces": rows}
