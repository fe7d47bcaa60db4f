"""Python API of ``lip-onnx``: one function per command.

>>> from lip_agnostic.tools import api          # doctest: +SKIP
>>> model = api.denoise("model.onnx", rank=8)   # doctest: +SKIP
>>> api.denoise_file("model.onnx", calib="calib.npz")["rank"]["k"]   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np
import onnx

import lip_agnostic as lip
from lip_agnostic import metrics
from lip_agnostic.options import CONSTRAINTS, DEFAULT_CONFIDENCE, LIPOptions
from lip_agnostic.report import summarize_refit
from lip_agnostic.errors import LIPError, NonFiniteError, OptionError, RankOutOfRangeError
from lip_agnostic.adapters import _face
from lip_agnostic.options import parse_rank
from lip_agnostic.svd import low_rank_blocks, truncate_top

from .calibrate import CalibrationData, FeatureStream, feature_batches, load_calibration
from .errors import CalibrationError, UnsupportedWeightError, UsageError
from .graph import (Classifier, classifier_candidates, find_linear_layers, read_bias, read_weight, select_classifier,
                    shared_bias_users, weight_tensor)
from .model_io import LoadedModel, iter_tensors, load_model, read_tensor, tensor_nbytes
from .runtime import Session
from .validate import check_model_file, compare_outputs, random_inputs
from .writer import (BlockSource, check_output_path, data_path, default_output, stage_bytes, stage_model, to_stored,
                     uses_external_output)

#: The core's defaults (``lip_agnostic.options.LIPOptions``): the tool's options default to them.
_CORE = LIPOptions()
#: The columns of the ``--issues`` CSV.
ISSUES_HEADER = ("position", "given", "suggested", "score")

__all__ = ["denoise", "denoise_file", "inspect", "compare", "check_options", "issues_csv", "LARGE_WEIGHT",
           "DEFAULT_BATCH", "ISSUES_HEADER"]

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


def _check_rank(rank: Any, calib: bool) -> Any:
    """The rank option alone (no model needed), through the core's one rank parser
    (:func:`lip_agnostic.options.parse_rank`): ``"auto"``, an int ``k >= 0`` or an energy fraction."""
    if rank is None:
        if not calib:
            raise UsageError("truncation needs --rank K or --energy F (or give --calib for the full LIP with --rank auto)")
        return "auto"
    if isinstance(rank, str) and rank != "auto":
        try:
            rank = int(rank)
        except ValueError:
            raise UsageError(f"--rank must be an integer or 'auto'; got {rank!r}") from None
    try:
        rank = parse_rank(rank, name="rank")
    except RankOutOfRangeError as exc:
        raise UsageError(f"--rank {exc.rank} is out of range: --rank counts the components kept, it must be >= 0") from None
    except OptionError as exc:
        if isinstance(rank, (float, np.floating)):
            raise UsageError(f"--energy must lie in (0, 1]; got {rank}") from None
        raise UsageError(f"rank must be an integer, an energy fraction or 'auto'; got {rank!r}") from None
    if rank == "auto" and not calib:
        raise UsageError("--rank auto needs held-out data: give --calib DATA.npz "
                         "(with val_* arrays, or the core holds out every 5th sample)")
    if rank == 0 and not calib:
        raise UsageError("--rank 0 without --calib would zero the classifier (truncation keeps k components); "
                         "k=0 is meaningful only with --calib, where the whole spectrum is refit against the labels")
    return rank


def _check_rank_range(rank: Any, m: int, calib: bool) -> Any:
    if isinstance(rank, int) and rank > m:
        where = f"[0, {m}]" if calib else f"[1, {m}] (0 only with --calib)"
        raise UsageError(f"--rank {rank} is out of range: the classifier has min(q, l)={m} components, --rank must lie in {where}")
    return rank


def _finite_number(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UsageError(f"{option} must be a number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UsageError(f"{option} must be finite; got {value}")
    return value


def check_options(*, rank: Any = None, calib: Any = None, batch_size: Any = DEFAULT_BATCH, target_scale: Any = 1.0,
                  min_gain: Any = 0.0, confidence: Any = DEFAULT_CONFIDENCE, bias_mode: Any = "fit",
                  tail: Any = "auto", ridge: Any = None, label_repair: Any = _CORE.label_repair,
                  temperature: Any = _CORE.temperature, issues: Any = None) -> dict:
    """Check every option that needs no file; return them normalized.

    Called first by :func:`denoise` and :func:`denoise_file` (and the CLI), so
    a bad value is reported before any file is read or written.

    Raises
    ------
    UsageError
        The first bad option: ``rank`` (``k < 0``; ``k = 0`` or ``"auto"``
        without ``calib``; an energy fraction outside ``(0, 1]``),
        ``batch_size < 1``, ``target_scale`` not positive or ``"logits"``,
        ``min_gain < 0``, ``confidence`` outside ``(0, 1)``, ``bias_mode``
        not ``"fit"``/``"ignore"``, ``tail`` not ``"auto"``/``"diagonal"``/``"full"``
        (``"full"`` without ``calib``), ``ridge`` not ``"auto"`` or a number
        ``>= 0`` (or given with ``tail="diagonal"``), ``label_repair`` not
        one of the core's choices, ``temperature`` not a bool, ``issues`` not
        a path; ``label_repair``, ``issues`` or ``temperature=False`` without
        ``calib``; and every combination the core refuses
        (:class:`lip_agnostic.options.LIPOptions`: ``label_repair`` needs
        ``rank="auto"`` and the full tail), with the core's message.
    """
    if calib is not None and not isinstance(calib, (str, os.PathLike, Mapping, CalibrationData)):
        raise UsageError(f"calib must be a .npz path or a mapping of arrays; got {type(calib).__name__}")
    rank = _check_rank(rank, calib is not None)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or int(batch_size) < 1:
        raise UsageError(f"--batch-size must be positive (an integer >= 1); got {batch_size!r}")
    if not (isinstance(target_scale, str) and target_scale == "logits"):
        if isinstance(target_scale, str):
            raise UsageError(f"--target-scale must be a positive number or 'logits'; got {target_scale!r}")
        target_scale = _finite_number(target_scale, "--target-scale")
        if target_scale <= 0:
            raise UsageError(f"--target-scale must be positive; got {target_scale}")
    min_gain = _finite_number(min_gain, "--min-gain")
    if min_gain < 0:
        raise UsageError(f"--min-gain must be >= 0 (a held-out gain the change must exceed); got {min_gain}")
    if confidence is not None:
        confidence = _finite_number(confidence, "--confidence")
        if not 0.0 < confidence < 1.0:
            raise UsageError(f"--confidence must lie in (0, 1) (or 'none' to switch the significance guard off); "
                             f"got {confidence}")
    if bias_mode not in ("fit", "ignore"):
        raise UsageError(f"--bias-mode must be 'fit' or 'ignore'; got {bias_mode!r}")
    if not (isinstance(tail, str) and tail in ("auto", "diagonal", "full")):
        raise UsageError(f"--tail must be 'auto' (the default: the evidence's choice), 'diagonal' (the paper) or "
                         f"'full' (beyond the paper); got {tail!r}")
    if ridge is not None:
        if tail == "diagonal":
            raise UsageError("--ridge applies to --tail full only (the paper's diagonal refit has no ridge)")
        if not (isinstance(ridge, str) and ridge == "auto"):
            ridge = _finite_number(ridge, "--ridge")
            if ridge < 0:
                raise UsageError(f"--ridge must be 'auto' or a number >= 0; got {ridge}")
    # the core's one rule (lip_agnostic.options.inert_options), worded with the flags: never silently ignored
    inert = _face.unused_selection_options(rank, {"tail": tail, "ridge": ridge, "confidence": confidence,
                                                  "min_gain": min_gain})
    unused = ["--" + name.replace("_", "-") for name in inert]
    if unused:
        raise UsageError(f"{' and '.join(unused)} only act(s) when a candidate is chosen on held-out data "
                         f"behind the significance guard (--rank auto); got --rank {rank}, which forces a "
                         f"change: drop {'it' if len(unused) == 1 else 'them'}")
    if tail == "full" and calib is None:
        raise UsageError("--tail full refits the classifier against labels: it needs --calib DATA.npz")
    if ridge is not None and calib is None:
        raise UsageError("--ridge sets the full-tail refit, which fits the classifier against labels: "
                         "it needs --calib DATA.npz")
    try:  # the core's one parser for the choice; its message lists them
        label_repair = CONSTRAINTS["label_repair"](label_repair)
    except OptionError as exc:
        raise UsageError(f"--label-repair: {exc}") from None
    if not isinstance(temperature, bool):
        raise UsageError(f"temperature must be True or False (--no-temperature: False); got {temperature!r}")
    if issues is not None and not isinstance(issues, (str, os.PathLike)):
        raise UsageError(f"--issues must be a path (FILE.csv); got {type(issues).__name__}")
    if calib is None:
        if label_repair != "none":
            raise UsageError(f"--label-repair {label_repair} refits the classifier against labels and flags "
                             "mislabelled calibration rows: it needs --calib DATA.npz")
        if issues is not None:
            raise UsageError("--issues lists the calibration rows whose labels look wrong: it needs --calib DATA.npz")
        if temperature != _CORE.temperature:
            raise UsageError("--no-temperature acts on a head refit against calibration data: it needs --calib DATA.npz")
    try:  # the combinations the core refuses (label_repair needs rank='auto' and the full tail), in its words
        LIPOptions(rank=rank, tail=tail, ridge=ridge, label_repair=label_repair, temperature=temperature)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    return {"rank": rank, "batch_size": int(batch_size), "target_scale": target_scale, "min_gain": min_gain,
            "confidence": confidence, "bias_mode": bias_mode, "tail": tail, "ridge": ridge,
            "label_repair": label_repair, "temperature": temperature, "label_issues": issues is not None}


def _weight_index(loaded: LoadedModel, c: Classifier) -> int:
    target = weight_tensor(loaded, c.weight)
    for i, t in enumerate(iter_tensors(loaded.model.graph)):
        if t is target:
            return i
    raise UnsupportedWeightError(f"weight {c.weight.name!r} not found among the model's tensors")


def _label_options(opts: Mapping[str, Any]) -> list[str]:
    """The options that look for mislabelled rows, in the CLI's words (empty: none)."""
    said = []
    if opts.get("label_repair", "none") != "none":
        said.append(f"--label-repair {opts['label_repair']}")
    if opts.get("label_issues"):
        said.append("--issues")
    return said


def _prepare(loaded: LoadedModel, *, rank: Any, calib: Any, layer: str | None,
             label_options: "list[str]" = ()) -> tuple[Classifier, Any, CalibrationData | None]:
    """Checks that need the model, in order: the classifier (``layer``), ``k`` against its
    ``min(q, l)``, then the calibration data against its inputs and classes (integer labels
    when ``label_options`` look for mislabelled rows)."""
    c = select_classifier(loaded, layer)
    rank = _check_rank_range(rank, min(c.q, c.l), calib is not None)
    cal = None
    if calib is not None:
        cal = calib if isinstance(calib, CalibrationData) else load_calibration(calib, loaded, c)
        if label_options and cal.labels.ndim != 1:
            verb = "need" if len(label_options) > 1 else "needs"
            raise CalibrationError(f"{' and '.join(label_options)} {verb} (n,) integer class labels (a row is mislabelled against "
                                   f"one given class); the calibration 'labels' are an (n, l={c.l}) target matrix")
    return c, rank, cal


def _refine(loaded: LoadedModel, c: Classifier, *, rank: Any, cal: CalibrationData | None, batch_size: int,
            target_scale: Any, min_gain: float, confidence: Any, bias_mode: str, tail: str = "auto",
            ridge: Any = None, label_repair: str = _CORE.label_repair, temperature: bool = _CORE.temperature,
            label_issues: bool = False, progress: bool) -> tuple[dict, dict, list | None]:
    """Run PSP or LIP through the core on classifier ``c``; return ``{tensor index: new stored value}``
    (the weight; with ``tail="full"`` and the bias in the fit, the refit bias too), the report, and
    the suspect calibration rows (:func:`_issue_rows`; None when no label issues were looked for)."""
    t0 = time.perf_counter()
    stored = read_weight(loaded, c)
    large = c.q * c.l > LARGE_WEIGHT
    if not (large and cal is None):  # the large truncation checks finiteness in its energy pass
        _check_finite(stored, c.weight.name)
    m = min(c.q, c.l)
    dtype = np.dtype(c.weight.dtype)
    transposed = c.layout == "(l, q)"
    report: dict = {"layer": c.to_dict(), "notes": list(c.notes)}
    extra: dict = {}
    rows = None
    if cal is None:
        report["mode"] = "truncation"
        work = np.float32 if large or dtype == np.float16 else np.float64
        W = stored if (stored.dtype == work and c.alpha == 1.0) else np.asarray(stored, dtype=work) * c.alpha
        if large:
            # Decompose the weight as stored ((l, q) for transB=1: W^T, same spectrum and k), so
            # every pass reads contiguous rows; its rank-k blocks are then rows of the stored tensor.
            S = W.T if transposed else W
            try:
                top = truncate_top(S, rank)
            except NonFiniteError:
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
                                 "kept_relative_change": None, "kept_unchanged": None, "top_k_angle": None,
                                 "kept_note": f"not measured for weights above {LARGE_WEIGHT} entries: the rank-k "
                                              "truncation keeps the (randomized) top-k components by construction"}
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
            report["summary"] = summarize_refit(f.s, kept, sel.k, shape=tuple(W.shape), V=f.V, W_before=W,
                                                   W_after=W_new).to_dict()
            value = to_stored(np.asarray(W_new), c.layout, c.alpha, dtype, c.weight.name)
    else:
        report["mode"] = "lip"
        work = np.float32 if large else np.float64
        W = np.asarray(stored, dtype=work) * c.alpha
        bias = read_bias(loaded, c)
        bias = None if bias is None else bias.astype(work)
        session = Session(loaded, [c.input_name])
        if label_repair != "none" or label_issues:  # the core reads the fit stream more than once
            batches = FeatureStream(session, c, cal.inputs, cal.labels, batch_size, progress=progress)
        else:
            batches = feature_batches(session, c, cal.inputs, cal.labels, batch_size, progress=progress)
        val = None
        if cal.val_inputs is not None and _face.chooses(rank, {"tail": tail, "ridge": ridge}):
            val = feature_batches(session, c, cal.val_inputs, cal.val_labels, batch_size, progress=progress,
                                  desc="held-out")
        try:
            res = lip.refine_batches(W, batches, rank=rank, validation=val, bias=bias, target_scale=target_scale,
                                     min_gain=min_gain, confidence=confidence, bias_mode=bias_mode,
                                     tail=tail, ridge=ridge, label_repair=label_repair, temperature=temperature,
                                     label_issues=label_issues, progress=bool(progress))
        except LIPError as exc:  # the core's typed errors: data (shapes, labels, NaN) or option values
            if isinstance(exc, OptionError):
                raise UsageError(str(exc)) from None
            raise CalibrationError(f"LIP refused the calibration features/labels: {exc}") from None
        report["rank"] = res.selection.to_dict()
        report["summary"] = res.summary.to_dict()
        report["calibration"] = {"n": cal.n, "n_val": cal.n_val, "n_fit": res.n_fit,
                                 "n_degenerate": res.n_degenerate, "bias": c.bias is not None,
                                 "bias_mode": bias_mode, "target_scale": target_scale,
                                 "rank_source": res.selection.extra.get("source"),
                                 "labels": "integer" if cal.labels.ndim == 1 else "target matrix",
                                 "bias_refit": res.bias is not None}
        report["tail"], report["beyond_paper"] = res.tail, res.tail != "diagonal"
        report["rank"]["asked"] = rank  # what --rank said: a fixed k with --tail full searches only the ridge
        if _face.chooses(rank, {"tail": tail, "ridge": ridge}):
            report["rank"]["metric"] = res.selection.extra["metric"]  # the core's words for the held-out score
            report["rank"]["held_out"] = _held_out_text(res.selection)
        report["calibration"]["label_repair"] = label_repair
        if res.calibration is not None:
            report["temperature"] = res.calibration.to_dict()
        if res.label_issues is not None:
            rows = _issue_rows(res, cal.n)
            report["label_issues"] = {"method": res.label_issues.method, "n_flagged": res.label_issues.n_flagged,
                                      "n_checked": int(res.label_issues.suspects.flags.shape[0]), "n": cal.n}
        value = to_stored(np.asarray(res.weight), c.layout, c.alpha, dtype, c.weight.name)
        if res.bias is not None:
            extra = dict([_bias_value(loaded, c, np.asarray(res.bias, dtype=np.float64))])
    # LIP: the core's outcome sentence, the one LIPResult.to_dict() carries; truncation: the tool's own
    report["outcome"] = res.outcome if report["mode"] == "lip" else _outcome(report)
    report["seconds_refine"] = time.perf_counter() - t0
    return {_weight_index(loaded, c): value, **extra}, report, rows


def _bias_value(loaded: LoadedModel, c: Classifier, b: np.ndarray) -> tuple[int, np.ndarray]:
    """``(tensor index, stored value)`` of the refit bias ``b (l,)`` (``tail="full"``): ``C = b / beta``
    for ``Gemm``, in the stored shape and dtype."""
    users = shared_bias_users(loaded, c)
    if users:
        raise UnsupportedWeightError(f"the refit changes bias {c.bias.name!r}, which {len(users)} other node(s) "
                                     f"{users} also read: their outputs would change too; refused "
                                     "(--bias-mode ignore or --tail diagonal leave the bias alone)")
    tensor = weight_tensor(loaded, c.bias)
    stored = np.asarray(read_tensor(tensor, loaded.base_dir))
    beta = c.beta if c.op_type == "Gemm" else 1.0
    if stored.size != c.l or beta == 0.0:
        raise UsageError(f"--tail full refits the bias, but bias {c.bias.name!r} (shape {list(stored.shape)}"
                         f"{', beta 0' if beta == 0.0 else ''}) does not hold one value per class; "
                         "use --bias-mode ignore")
    new = np.ascontiguousarray((b / beta).reshape(stored.shape), dtype=stored.dtype)
    if not np.all(np.isfinite(new)):
        raise UnsupportedWeightError(f"the refit bias {c.bias.name!r} overflows {stored.dtype.name}")
    for i, t in enumerate(iter_tensors(loaded.model.graph)):
        if t is tensor:
            return i, new
    raise UnsupportedWeightError(f"bias {c.bias.name!r} not found among the model's tensors")


def _holdout_period(sel: Any) -> int:
    """Every how many calibration rows the core held one out of the fit (its selection's
    ``source``, ``"holdout 1/p"``); 0 when it held none out (validation data, or nothing chosen)."""
    source = sel.extra.get("source", "")
    return int(source.split("/")[1]) if source.startswith("holdout 1/") else 0


def _held_out_text(sel: Any) -> str:
    source = sel.extra.get("source", "")
    if source == "validation":
        return f"the held-out split of the calibration data (val_*, {sel.n_val} samples)"
    if _holdout_period(sel):
        return f"every {_holdout_period(sel)}th calibration sample, held out of the fit ({sel.n_val} samples)"
    return f"{sel.n_val} held-out samples"


def _issue_rows(res: Any, n: int) -> list[dict]:
    """The core's suspect rows, most suspect first; ``position`` is the row index in the calibration
    inputs (the core counts positions in the stream as passed, held-out rows included)."""
    rows = res.label_issues.rows()
    if rows and not 0 <= max(r["position"] for r in rows) < n:
        raise CalibrationError(f"the core reported a row position outside [0, {n}); the suspect rows cannot be placed")
    return rows


def issues_csv(rows: list[dict]) -> bytes:
    """The ``--issues`` file: a header ``position,given,suggested,score`` and one line per
    suspect row, most suspect first (``score`` written to round-trip exactly)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(ISSUES_HEADER)
    for r in rows:
        out.writerow([r["position"], r["given"], r["suggested"], repr(float(r["score"]))])
    return buf.getvalue().encode("utf-8")


def _outcome(report: dict) -> str:
    """One sentence for ``--rank`` truncation (no calibration data: PSP alone); LIP runs carry the
    core's :attr:`lip_agnostic.LIPResult.outcome`."""
    rk = report["rank"]
    if not rk.get("changed", rk["k"] < rk["m"]):
        return f"unchanged: k={rk['k']} keeps all {rk['m']} components"
    return f"changed: the top {rk['k']} components kept, the other {rk['m'] - rk['k']} dropped"


def _materialize(loaded: LoadedModel, replacements: dict) -> onnx.ModelProto:
    """An in-memory copy with every tensor's data inline and ``replacements[i]`` at each index ``i``."""
    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    for i, (src, dst) in enumerate(zip(iter_tensors(loaded.model.graph), iter_tensors(model.graph))):
        if i in replacements:
            value = replacements[i]
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
    info = {"tool": "lip-onnx", "version": lip.__version__, "mode": report["mode"], "tail": report.get("tail"),
            "layer": report["layer"]["node_name"] or report["layer"]["output_name"], "k": report["rank"]["k"]}
    for p in list(model.metadata_props):
        if p.key == "lip_agnostic":
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = "lip_agnostic", json.dumps(info, sort_keys=True, default=str)


def denoise(model: "str | os.PathLike | onnx.ModelProto | bytes", /, *, rank: Any = None,
            calib: "str | os.PathLike | Mapping[str, np.ndarray] | None" = None, layer: str | None = None,
            batch_size: int = DEFAULT_BATCH, target_scale: Any = 1.0, min_gain: float = 0.0,
            confidence: Any = DEFAULT_CONFIDENCE, bias_mode: str = "fit", tail: str = "auto",
            ridge: Any = None, label_repair: str = _CORE.label_repair, temperature: bool = _CORE.temperature,
            validate: bool = True, progress: bool = False, return_report: bool = False) -> Any:
    """Refine a model's classifier; return the new model in memory (the input is untouched).

    Steps
    -----
    1. Check the options (:func:`check_options`), then find the classifier
       (:func:`lip_agnostic.tools.graph.select_classifier`).
    2. Without ``calib``: Principal Subspace Preservation, ``W_k`` of rank
       ``rank`` (an int ``k >= 1``, or a float in ``(0, 1]`` read as an energy fraction).
    3. With ``calib`` (a ``.npz`` path or a mapping, see
       :mod:`lip_agnostic.tools.calibrate`): the full LIP through
       :func:`lip_agnostic.refine_batches`; ``rank="auto"`` by default,
       ``bias_mode="fit"`` (the tail fit against ``Y - 1 b^T``; ``"ignore"``:
       the paper's fit without the bias), ``confidence`` the sign-test guard
       of ``"auto"`` (``None``: off); ``tail="auto"`` (default, the committed
       evidence): the full-tail ridge refit for ``rank="auto"`` and the paper's
       diagonal for a fixed rank; ``tail="diagonal"``: the paper, always;
       ``tail="full"`` (beyond the paper) with ``ridge`` (``"auto"`` by
       default): the full-tail ridge refit, which also rewrites the bias when
       it is in the fit. ``label_repair`` (beyond the paper, ``rank="auto"``
       and the full tail): the guard also weighs ridge heads fit without
       (``"filter"``) or with corrected (``"relabel"``) labels of the
       calibration rows that look mislabelled (``"auto"``: both); the core
       then reads the calibration features twice. ``temperature`` (the
       core's default True): a new head beyond the paper gets one temperature
       fit on the held-out data written into it when the layer can take it.
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
    opts = check_options(rank=rank, calib=calib, batch_size=batch_size, target_scale=target_scale,
                         min_gain=min_gain, confidence=confidence, bias_mode=bias_mode, tail=tail, ridge=ridge,
                         label_repair=label_repair, temperature=temperature)
    loaded = load_model(model)
    size = sum(tensor_nbytes(t) for t in iter_tensors(loaded.model.graph))
    if size > IN_MEMORY_LIMIT:
        raise UsageError(f"the model holds {size / 2**30:.1f} GiB of tensors: too large for an in-memory "
                         "ModelProto; use denoise_file() or the lip-onnx CLI (they keep external data)")
    c, rank, cal = _prepare(loaded, rank=opts.pop("rank"), calib=calib, layer=layer, label_options=_label_options(opts))
    values, report, _ = _refine(loaded, c, rank=rank, cal=cal, progress=progress, **opts)
    new = _materialize(loaded, values)
    _stamp(new, report)
    if validate:
        if new.ByteSize() < 2**31 - 1:
            try:
                onnx.checker.check_model(new, full_check=True)
            except Exception as exc:
                from .errors import ValidationFailedError
                raise ValidationFailedError(f"the refined model fails onnx.checker: {str(exc)[:300]}") from None
        new_loaded = LoadedModel(new, None, loaded.base_dir)
        report["validation"] = _validate(loaded, new_loaded, c, cal)
    return (new, report) if return_report else new


def _validate(old: LoadedModel, new: LoadedModel, c: Classifier, cal: CalibrationData | None) -> dict:
    if cal is not None:
        feeds, source = cal.inputs, "calibration"
    else:
        feeds, source = random_inputs(old), "random"
    return dict(compare_outputs(old, new, c, feeds), checker="ok", inputs=source)


def denoise_file(model_path: "str | os.PathLike", output: "str | os.PathLike | None" = None, /, *,
                 rank: Any = None, calib: Any = None, layer: str | None = None, force: bool = False,
                 report: "str | os.PathLike | None" = None,
                 batch_size: int = DEFAULT_BATCH, target_scale: Any = 1.0, min_gain: float = 0.0,
                 confidence: Any = DEFAULT_CONFIDENCE, bias_mode: str = "fit", tail: str = "auto",
                 ridge: Any = None, label_repair: str = _CORE.label_repair, temperature: bool = _CORE.temperature,
                 issues: "str | os.PathLike | None" = None, validate: bool = True, progress: bool = False) -> dict:
    """File to file: what ``lip-onnx denoise`` runs. Returns the report.

    Steps
    -----
    1. Check the options (:func:`check_options`); read the model; find the
       classifier (``layer``); check ``k`` against it; read and check the
       calibration data. The first error is raised; nothing is written.
    2. Check every path this run writes (the output, default
       ``<stem>.lip.onnx``; its ``<output>.data`` file when the model keeps
       external data; ``report``; ``issues``): each is refused when it is, or
       resolves to (``./x`` vs ``x``, a symlink, a hard link), the input model,
       one of its external data files, the calibration file, or another output
       of this run; or when it exists and ``force`` is false.
    3. Refine; stage the model (and its data) in a temporary folder next to
       the output, check it (``onnx.checker`` full check, then onnxruntime old
       vs new); stage the JSON report and the ``issues`` CSV (:func:`issues_csv`:
       the calibration rows whose labels look wrong, most suspect first) next
       to their paths.
    4. Rename everything into place under a folder lock (data, model, report,
       issues), so concurrent runs to one output never leave a model with
       another run's data. On any failure nothing is written.

    ``issues`` looks for mislabelled calibration rows with any repair (the core's
    ``label_issues=True``; with ``label_repair`` it uses that repair's own pass);
    it needs integer labels and makes the core read the calibration features
    twice more (once more with ``label_repair``).
    """
    t0 = time.perf_counter()
    opts = check_options(rank=rank, calib=calib, batch_size=batch_size, target_scale=target_scale,
                         min_gain=min_gain, confidence=confidence, bias_mode=bias_mode, tail=tail, ridge=ridge,
                         label_repair=label_repair, temperature=temperature, issues=issues)
    model_path = os.fspath(model_path)
    loaded = load_model(model_path)
    c, rank_, cal = _prepare(loaded, rank=opts.pop("rank"), calib=calib, layer=layer, label_options=_label_options(opts))
    out = os.fspath(output) if output is not None else default_output(model_path)
    report_path = os.fspath(report) if report is not None else None
    issues_path = os.fspath(issues) if issues is not None else None
    external = uses_external_output(loaded)
    extra = [("--report", report_path)] if report_path is not None else []
    extra += [("--issues", issues_path)] if issues_path is not None else []
    calib_file = [("the calibration data", os.fspath(calib))] if isinstance(calib, (str, os.PathLike)) else []
    check_output_path(out, loaded, force, external, extra, calib_file)
    values, rep, rows = _refine(loaded, c, rank=rank_, cal=cal, progress=progress, **opts)
    if issues_path is not None:
        rep["label_issues"]["file"] = issues_path
    _stamp(loaded.model, rep)  # the copy written below carries it; the input file is not touched
    t_write = time.perf_counter()
    staged = stage_model(loaded, values, out, external=external)
    rep["seconds_write"] = time.perf_counter() - t_write
    report_tmp = issues_tmp = None
    try:
        with staged:
            t1 = time.perf_counter()
            if validate:
                check_model_file(staged.staged_model)
                new_loaded = load_model(staged.staged_model)
                rep["validation"] = _validate(loaded, new_loaded, c, cal)
            else:
                rep["validation"] = {"skipped": True}
            rep["seconds_validate"] = time.perf_counter() - t1
            rep["input"], rep["output"] = model_path, out
            if external:
                rep["output_data"] = data_path(out)
            rep["report"] = report_path
            rep["seconds_total"] = time.perf_counter() - t0
            also = []
            if report_path is not None:
                report_tmp = stage_bytes(report_path, json.dumps(rep, indent=2, default=str).encode("utf-8"))
                also.append((report_tmp, report_path))
            if issues_path is not None:
                issues_tmp = stage_bytes(issues_path, issues_csv(rows))
                also.append((issues_tmp, issues_path))
            staged.commit(force, also)
    finally:
        for tmp in (report_tmp, issues_tmp):
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
    return rep


def _spectrum_facts(W: np.ndarray, s: Any = None) -> dict:
    s = metrics.singular_spectrum(W) if s is None else s
    return {"spectrum": [float(v) for v in s], "effective_rank": float(metrics.effective_rank(s)),
            "stable_rank": float(metrics.stable_rank(s))}


def _large_spectrum_facts(loaded: LoadedModel, c: Classifier, top: int = 64) -> dict:
    """Top of the spectrum of a large weight (randomized), exact stable rank; no full SVD."""
    stored = read_weight(loaded, c)
    S = np.asarray(stored.T if c.layout == "(l, q)" else stored, dtype=np.float32)
    try:
        res = truncate_top(S, min(top, min(S.shape)))
    except NonFiniteError:
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
        cands, quantized = [select_classifier(loaded, layer, output_only=False)], []
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
    for k in ks or ():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UsageError(f"--k must be a positive integer (a rank to compare); got {k!r}")
    la, lb = load_model(model_a), load_model(model_b)
    ca, cb = select_classifier(la, layer_a, output_only=False), select_classifier(lb, layer_b, output_only=False)
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
        theta = metrics.principal_angles(fa.V[:, :k], fb.V[:, :k])
        rows.append({"k": k, "phi": float(metrics.subspace_similarity(fa.V, fb.V, k, k)),
                     "max_angle_deg": float(np.degrees(np.max(theta))),
                     "mean_angle_deg": float(np.degrees(np.mean(theta)))})
    return {"a": {"layer": ca.label, "shape": [ca.q, ca.l], **_spectrum_facts(Wa, fa.s)},
            "b": {"layer": cb.label, "shape": [cb.q, cb.l], **_spectrum_facts(Wb, fb.s)},
            "subspaces": rows}
