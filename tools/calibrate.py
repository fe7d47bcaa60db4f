"""Calibration data: loading, checking against the model, streaming features into the core.

File format (``.npz``, ``numpy.savez``)
---------------------------------------
``<input name>``
    One array per graph input, under the input's name, samples on axis 0.
``labels``
    ``(n,)`` integer class labels in ``[0, l)`` (the noisy training labels),
    or an ``(n, l)`` target matrix (soft labels, candidate sets).
``val_<input name>``, ``val_labels`` (optional)
    A held-out split (noisy labels are fine) that ``--rank auto`` scores
    every ``k`` on; without it the core holds out every 5th sample.

Label issues (``--label-repair``, ``--issues``) need two passes over the
features (:class:`FeatureStream`); the core reports rows by their position in
the stream as passed, which here is the row index in the calibration inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import onnx

from .errors import CalibrationError
from .graph import Classifier, graph_inputs
from .model_io import LoadedModel
from .runtime import Session, batched

__all__ = ["CalibrationData", "load_calibration", "feature_batches", "FeatureStream", "LABELS",
           "VAL_PREFIX"]

LABELS = "labels"
VAL_PREFIX = "val_"


@dataclass
class CalibrationData:
    """Checked calibration arrays.

    Attributes
    ----------
    inputs : dict of str to array
    labels : array (n,) or (n, l)
    val_inputs : dict or None
    val_labels : array or None
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    val_inputs: dict[str, np.ndarray] | None = None
    val_labels: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_val(self) -> int:
        return 0 if self.val_labels is None else int(self.val_labels.shape[0])


def _np_type(elem_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _check_input(name: str, key: str, arr: np.ndarray, vi: onnx.ValueInfoProto) -> np.ndarray:
    tt = vi.type.tensor_type
    want = _np_type(tt.elem_type)
    if arr.ndim == 0:
        raise CalibrationError(f"calibration array {key!r} is a scalar; it needs the samples on axis 0")
    if arr.dtype.kind != want.kind:
        raise CalibrationError(
            f"calibration array {key!r} has dtype {arr.dtype} but model input {name!r} is {want}; "
            f"convert it (e.g. x.astype(np.{want.name}))")
    if tt.HasField("shape"):
        dims = tt.shape.dim
        if arr.ndim != len(dims):
            raise CalibrationError(
                f"calibration array {key!r} has shape {arr.shape} but model input {name!r} has rank "
                f"{len(dims)} ({_dims_text(dims)})")
        for axis, d in enumerate(dims):
            if axis and d.HasField("dim_value") and d.dim_value > 0 and arr.shape[axis] != d.dim_value:
                raise CalibrationError(
                    f"calibration array {key!r} has shape {arr.shape} but model input {name!r} expects "
                    f"{_dims_text(dims)} (axis {axis}: {d.dim_value})")
    if arr.shape[0] == 0:
        raise CalibrationError(f"calibration array {key!r} is empty")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CalibrationError(f"calibration array {key!r} contains NaN/Inf")
    cast = arr.astype(want, copy=False)
    if cast.dtype.kind == "f" and cast is not arr and not np.all(np.isfinite(cast)):
        # finite in the file, infinite in the model's dtype (float32 values above float16's 65504)
        raise CalibrationError(
            f"calibration array {key!r} overflows {want.name}, the dtype of model input {name!r}: its values reach "
            f"{float(np.max(np.abs(arr))):.4g} but {want.name} holds at most {float(np.finfo(want).max):.4g}; "
            "scale the inputs as the model expects them")
    return cast


def _dims_text(dims) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def _check_labels(key: str, y: np.ndarray, n: int, l: int) -> np.ndarray:
    if y.ndim == 1:
        if y.dtype.kind not in "iu":
            raise CalibrationError(f"{key!r} must hold integer class labels; got dtype {y.dtype} "
                                   "(or give an (n, l) target matrix)")
        if y.shape[0] != n:
            raise CalibrationError(f"{key!r} has {y.shape[0]} labels but the inputs have {n} samples")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= l:
            raise CalibrationError(f"{key!r} must lie in [0, {l}) for a classifier with {l} classes; got min {lo}, max {hi}")
        return y.astype(np.int64, copy=False)
    if y.ndim == 2:
        if y.shape != (n, l):
            raise CalibrationError(f"{key!r} target matrix has shape {y.shape}; expected ({n}, {l})")
        if y.dtype.kind not in "fiub" or (y.dtype.kind == "f" and not np.all(np.isfinite(y))):
            raise CalibrationError(f"{key!r} must be a finite real matrix; got dtype {y.dtype}")
        return y.astype(np.float64, copy=False)
    raise CalibrationError(f"{key!r} must be (n,) labels or an (n, l={l}) matrix; got shape {y.shape}")


_NPZ_HINT = "save the arrays with numpy.savez(path, **arrays)"


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, read with ``allow_pickle=False``.

    Anything else (a ``.npy`` array, a pickle, text, a truncated zip, an
    archive holding object arrays) is refused with one line of our own: no
    object array is ever unpickled.
    """
    import zipfile

    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04" and magic != b"PK\x05\x06":
        kind = ("a single .npy array" if magic.startswith(b"\x93NUM") else
                "a pickle" if magic[:1] == b"\x80" else "empty" if not magic else "not a zip archive")
        raise CalibrationError(f"calibration file {path} is not an .npz archive ({kind}); {_NPZ_HINT}")
    data: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                try:
                    data[key] = z[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise CalibrationError(
                            f"calibration array {key!r} in {path} is an object array; refused (object arrays are "
                            "never loaded: store numeric arrays)") from None
                    raise
    except CalibrationError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CalibrationError(f"calibration file {path} is a damaged .npz archive ({reason}); {_NPZ_HINT}") from None
    return data


def load_calibration(source: "str | os.PathLike | Mapping[str, np.ndarray]", loaded: LoadedModel,
                     classifier: Classifier) -> CalibrationData:
    """Read and check calibration data against the model.

    Raises
    ------
    CalibrationError
        Unreadable file; missing, unknown or partial keys; dtypes, shapes,
        sample counts or label range that do not fit the model.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            raise CalibrationError(f"calibration path {path} is a folder, not an .npz file")
        if not os.path.isfile(path):
            raise CalibrationError(f"calibration file not found: {path}")
        data = _read_npz(path)
    elif isinstance(source, Mapping):
        data = {str(k): np.asarray(v) for k, v in source.items()}
        for key, arr in data.items():
            if arr.dtype.kind == "O":
                raise CalibrationError(f"calibration array {key!r} is an object array; refused (store numeric arrays)")
    else:
        raise CalibrationError(f"calibration data must be a path or a mapping of arrays; got {type(source).__name__}")
    ins = {v.name: v for v in graph_inputs(loaded)}
    expected = sorted(ins) + [LABELS]
    allowed = set(expected) | {VAL_PREFIX + k for k in expected}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise CalibrationError(f"calibration data have unknown keys {unknown}; expected {expected} "
                               f"(and optionally {[VAL_PREFIX + k for k in expected]})")
    missing = [k for k in expected if k not in data]
    if missing:
        raise CalibrationError(f"calibration data lack {missing}; the model's inputs are {sorted(ins)}, plus {LABELS!r}")
    val_keys = [VAL_PREFIX + k for k in expected]
    have_val = [k for k in val_keys if k in data]
    if have_val and len(have_val) != len(val_keys):
        raise CalibrationError(f"held-out split incomplete: found {have_val}, need all of {val_keys}")

    def split(prefix: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        arrays = {name: _check_input(name, prefix + name, data[prefix + name], vi) for name, vi in ins.items()}
        counts = {prefix + k: a.shape[0] for k, a in arrays.items()}
        if len(set(counts.values())) > 1:
            raise CalibrationError(f"calibration inputs have different sample counts: {counts}")
        n = next(iter(counts.values()))
        return arrays, _check_labels(prefix + LABELS, data[prefix + LABELS], n, classifier.l)

    inputs, labels = split("")
    cal = CalibrationData(inputs, labels)
    if have_val:
        cal.val_inputs, cal.val_labels = split(VAL_PREFIX)
    return cal


def _prefetched(session: Session, name: str, direct: bool, feeds_iter) -> Iterator[tuple[dict, np.ndarray]]:
    """``(feeds, features)`` per batch; onnxruntime computes batch ``i + 1`` in a worker
    thread while the caller (the core's accumulator) digests batch ``i``."""
    if direct:
        for feeds in feeds_iter:
            yield feeds, feeds[name]
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for feeds in feeds_iter:
            job = pool.submit(session.run, feeds, [name])
            if pending is not None:
                yield pending[0], pending[1].result()[0]
            pending = (feeds, job)
        if pending is not None:
            yield pending[0], pending[1].result()[0]


def feature_batches(session: Session, classifier: Classifier, inputs: Mapping[str, np.ndarray], labels: np.ndarray,
                    batch_size: int, *, progress: bool = False, desc: str = "calibration") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Run the model batch by batch; yield ``(features (n_b, q), labels)`` for the core.

    The features are the classifier's input tensor, exposed as an extra
    graph output (or a graph input itself: then no inference is needed).
    Inference of the next batch overlaps with the consumer's work on this one.
    """
    name = classifier.input_name
    direct = name in inputs
    start = 0
    for feeds, X in _prefetched(session, name, direct, batched(inputs, batch_size, progress=progress, desc=desc)):
        n_b = len(next(iter(feeds.values())))
        if X.ndim != 2 or X.shape[0] != n_b:
            raise CalibrationError(
                f"the classifier input {name!r} has shape {X.shape} for a batch of {n_b} samples; LIP needs one "
                f"feature vector of q={classifier.q} per sample (n, q)")
        if X.shape[1] != classifier.q:
            raise CalibrationError(f"the classifier input {name!r} has {X.shape[1]} features, the weight expects q={classifier.q}")
        if X.dtype != np.float64 and X.dtype != np.float32:
            X = X.astype(np.float32)
        if not np.all(np.isfinite(X)):
            raise CalibrationError(
                f"the classifier input {name!r}, computed by the model from finite calibration data, holds "
                f"{int(X.size - np.count_nonzero(np.isfinite(X)))} NaN/Inf value(s) in a batch (an overflow inside the "
                "model, e.g. float16 activations?); LIP needs finite features")
        yield X, labels[start:start + n_b]
        start += n_b


class FeatureStream:
    """:func:`feature_batches` over the same calibration arrays, re-iterable: every
    ``iter()`` runs the model over the arrays again from the first row, so the core
    can read the fit stream twice (label-aware repair, label issues) and sees the
    same rows in the same order each time. Features are recomputed rather than
    kept, so memory stays ``O(batch_size q)``.

    >>> stream = FeatureStream(session, classifier, cal.inputs, cal.labels, 256)   # doctest: +SKIP
    >>> iter(stream) is not stream                                                   # doctest: +SKIP
    True
    """

    def __init__(self, session: Session, classifier: Classifier, inputs: Mapping[str, np.ndarray],
                 labels: np.ndarray, batch_size: int, *, progress: bool = False, desc: str = "calibration") -> None:
        self._args = (session, classifier, inputs, labels, batch_size)
        self._progress, self._desc = progress, desc
        self.passes = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self.passes += 1
        desc = self._desc if self.passes == 1 else f"{self._desc} (pass {self.passes})"
        return feature_batches(*self._args, progress=self._progress, desc=desc)


