"""Reading an ONNX model safely: the file, its protobuf, its external data.

The model is parsed *without* loading external data: big weights stay on
disk and are memory-mapped on demand (:func:`read_tensor`), so a model of any
size (over 2 GB included) costs only its graph in memory until a weight is
actually needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelReadError, UnsupportedWeightError

__all__ = ["LoadedModel", "load_model", "iter_tensors", "external_info", "tensor_nbytes", "read_tensor"]


@dataclass
class LoadedModel:
    """A parsed model plus where it came from.

    Attributes
    ----------
    model : onnx.ModelProto
        Graph and inline tensors; external tensors still point at their files.
    path : str or None
        The file it was read from (``None`` for an in-memory model).
    base_dir : str
        Folder external data locations are relative to.
    """

    model: onnx.ModelProto
    path: str | None
    base_dir: str

    @property
    def uses_external_data(self) -> bool:
        """Whether any tensor lives in an external file."""
        return any(_is_external(t) for t in iter_tensors(self.model.graph))


def _is_external(t: TensorProto) -> bool:
    return t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL


def iter_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor of a graph: initializers, ``Constant``/attribute tensors, subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for g in attr.graphs:
                yield from iter_tensors(g)


def tensor_nbytes(t: TensorProto) -> int:
    """Bytes the tensor's data takes (``prod(dims) * itemsize``)."""
    dtype = _np_dtype(t)
    return int(np.prod([int(d) for d in t.dims], dtype=np.int64)) * dtype.itemsize


def _np_dtype(t: TensorProto) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except Exception:
        raise UnsupportedWeightError(
            f"tensor {t.name!r} has an unsupported data type {t.data_type}"
        ) from None


def external_info(t: TensorProto, base_dir: str) -> tuple[str, int, int]:
    """``(absolute file, offset, length)`` of an external tensor, checked.

    Raises
    ------
    ModelReadError
        If the location is absolute or escapes ``base_dir`` (path
        traversal, symlinks included), the file is missing, or the recorded
        range does not fit the file or the tensor's shape.
    """
    fields = {e.key: e.value for e in t.external_data}
    loc = fields.get("location", "")
    if not loc:
        raise ModelReadError(f"tensor {t.name!r} is marked external but has no 'location'")
    if os.path.isabs(loc) or loc.startswith(("/", "\\")) or ":" in loc.split("/")[0]:
        raise ModelReadError(
            f"tensor {t.name!r}: external data location {loc!r} is an absolute path; refused "
            "(external data must live in the model's folder)"
        )
    root = os.path.realpath(base_dir)
    full = os.path.realpath(os.path.join(root, loc))
    if os.path.commonpath([root, full]) != root:
        raise ModelReadError(
            f"tensor {t.name!r}: external data location {loc!r} points outside the model's folder "
            f"{root!r}; refused (path traversal)"
        )
    if not os.path.isfile(full):
        raise ModelReadError(f"tensor {t.name!r}: external data file {loc!r} not found in {root!r}")
    try:
        offset = int(fields.get("offset", "0") or 0)
        length = int(fields["length"]) if fields.get("length") else tensor_nbytes(t)
    except ValueError:
        raise ModelReadError(f"tensor {t.name!r}: external data offset/length are not integers: {fields}") from None
    size = os.path.getsize(full)
    expected = tensor_nbytes(t)
    if offset < 0 or length != expected or offset + length > size:
        raise ModelReadError(
            f"tensor {t.name!r} (dims {list(t.dims)}): external data range offset={offset} "
            f"length={length} does not fit its shape ({expected} bytes) or the file {loc!r} "
            f"({size} bytes): truncated or corrupt"
        )
    return full, offset, length


def _check_inline(t: TensorProto) -> None:
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return
    if t.HasField("raw_data") or len(t.raw_data):
        expected = tensor_nbytes(t)
        if len(t.raw_data) != expected:
            raise ModelReadError(
                f"tensor {t.name!r} (dims {list(t.dims)}) holds {len(t.raw_data)} bytes of data, "
                f"expected {expected}: truncated or corrupt"
            )


def load_model(source: "str | os.PathLike | onnx.ModelProto | bytes") -> LoadedModel:
    """Parse and check a model without loading its external data.

    Steps
    -----
    1. A path must name a non-empty regular file; it is parsed with
       ``onnx.load(load_external_data=False)``; bytes and ``ModelProto``
       are taken as they are.
    2. ``onnx.checker.check_model`` (structure, opsets, external files).
    3. Every tensor's data must fit its shape; external locations must stay
       inside the model's folder and their byte ranges inside their files.

    Raises
    ------
    ModelReadError
        For a missing, empty, non-ONNX or truncated file, or bad external data.
    """
    path: str | None = None
    if isinstance(source, onnx.ModelProto):
        model, base_dir = source, os.getcwd()
    elif isinstance(source, (bytes, bytearray)):
        model, base_dir = _parse_bytes(bytes(source), "<bytes>"), os.getcwd()
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ModelReadError(f"model file not found: {path}")
        if not os.path.isfile(path):
            raise ModelReadError(f"not a regular file: {path}")
        if os.path.getsize(path) == 0:
            raise ModelReadError(f"model file is empty: {path}")
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as exc:
            raise ModelReadError(f"{path} is not a readable ONNX model (truncated, or not ONNX: the protobuf does not parse)") from None
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise ModelReadError(f"model must be a path, bytes or onnx.ModelProto; got {type(source).__name__}")
    name = path or "the model"
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelReadError(f"{name} is not an ONNX model with a graph (no nodes found)")
    for t in iter_tensors(model.graph):
        if _is_external(t):
            if path is None and not t.external_data:
                raise ModelReadError(f"tensor {t.name!r} is external but has no location")
            external_info(t, base_dir)
        else:
            _check_inline(t)
    try:
        if path is not None and not model.ByteSize() > 2**31 - 1:
            onnx.checker.check_model(path)
        elif not any(_is_external(t) for t in iter_tensors(model.graph)) and model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelReadError(f"{name} is not a valid ONNX model: {_short(exc)}") from None
    return LoadedModel(model=model, path=path, base_dir=base_dir)


def _parse_bytes(data: bytes, name: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:
        raise ModelReadError(f"{name} is not a readable ONNX model (truncated, or not ONNX: the protobuf does not parse)") from None
    return model


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:300]


def read_tensor(t: TensorProto, base_dir: str) -> np.ndarray:
    """The tensor as a NumPy array; external data are memory-mapped read-only."""
    dtype = _np_dtype(t)
    shape = tuple(int(d) for d in t.dims)
    if _is_external(t):
        full, offset, _ = external_info(t, base_dir)
        if int(np.prod(shape, dtype=np.int64)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(full, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape)
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:
        raise ModelReadError(f"tensor {t.name!r} cannot be decoded: {_short(exc)}") from None
