"""Writing the refined model: original dtypes, external data kept, atomic.

The output is staged in a private temporary folder next to the final path,
validated there, then moved into place with ``os.replace`` (atomic on one
file system). A failure at any step removes the staging folder: no partial
file is ever left, and the input is never opened for writing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto

from .errors import OutputRefusedError, UnsupportedWeightError
from .model_io import LoadedModel, external_info, iter_tensors, tensor_nbytes

__all__ = ["write_bytes_atomic", "BlockSource", "StagedModel", "default_output", "check_output_path", "stage_model", "to_stored"]

#: Models whose tensors add up to more than this keep (or get) external data.
INLINE_LIMIT = 1 << 30
#: Tensors below this size stay inline when the output uses external data.
EXTERNAL_THRESHOLD = 1024
_COPY_CHUNK = 64 << 20


@dataclass
class BlockSource:
    """A big tensor produced block by block (rows of its stored layout).

    Attributes
    ----------
    shape : tuple of int
        Stored shape.
    dtype : numpy dtype
        Stored dtype.
    blocks : callable
        Returns an iterator of C-ordered row blocks in ``dtype`` that
        together make the tensor.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Callable[[], Iterator[np.ndarray]]

    def materialize(self) -> np.ndarray:
        """The whole tensor in memory."""
        return np.concatenate(list(self.blocks()), axis=0).reshape(self.shape)



def to_stored(W: np.ndarray, layout: str, alpha: float, dtype: np.dtype, name: str) -> np.ndarray:
    """``W (q, l)`` back to the stored tensor: ``/ alpha``, transposed for ``(l, q)``, cast.

    Raises
    ------
    UnsupportedWeightError
        If the cast overflows (e.g. float16 above 65504).
    """
    S = W if alpha == 1.0 else W / alpha
    S = S.T if layout == "(l, q)" else S
    out = np.ascontiguousarray(S, dtype=dtype)
    if not np.all(np.isfinite(out)):
        raise UnsupportedWeightError(f"the refined weight {name!r} overflows {np.dtype(dtype).name}: values reach {float(np.max(np.abs(S)))}")
    return out


def default_output(path: str) -> str:
    """``<stem>.lip.onnx`` next to the input."""
    stem = path[:-5] if path.lower().endswith(".onnx") else path
    return stem + ".lip.onnx"


def _data_name(out_path: str) -> str:
    return os.path.basename(out_path) + ".data"


def check_output_path(out_path: str, loaded: LoadedModel, force: bool, external: bool) -> None:
    """Refuse overwriting without ``force``, and the input (or its data) always."""
    targets = [out_path] + ([os.path.join(os.path.dirname(os.path.abspath(out_path)), _data_name(out_path))] if external else [])
    protected = set()
    if loaded.path is not None:
        protected.add(os.path.realpath(loaded.path))
        for t in iter_tensors(loaded.model.graph):
            if t.data_location == TensorProto.EXTERNAL:
                protected.add(os.path.realpath(external_info(t, loaded.base_dir)[0]))
    folder = os.path.dirname(os.path.abspath(out_path)) or "."
    if not os.path.isdir(folder):
        raise OutputRefusedError(f"output folder does not exist: {folder}")
    for t in targets:
        if os.path.realpath(t) in protected:
            raise OutputRefusedError(f"output {t} would overwrite the input model or its data; the input is never modified")
        if os.path.lexists(t) and not force:
            raise OutputRefusedError(f"output {t} exists; pass --force to overwrite it")
        if os.path.isdir(t):
            raise OutputRefusedError(f"output {t} is a folder")


@dataclass
class StagedModel:
    """A model written to a staging folder, waiting for :meth:`commit`."""

    out_path: str
    staging: str
    files: list[str] = field(default_factory=list)

    @property
    def staged_model(self) -> str:
        """Path of the staged ``.onnx`` file (for validation)."""
        return os.path.join(self.staging, os.path.basename(self.out_path))

    def commit(self) -> None:
        """Move the staged files into place (data first, the model last)."""
        folder = os.path.dirname(os.path.abspath(self.out_path))
        for name in sorted(self.files, key=lambda n: n == os.path.basename(self.out_path)):
            os.replace(os.path.join(self.staging, name), os.path.join(folder, name))
        self.discard()

    def discard(self) -> None:
        """Remove the staging folder and whatever is left in it."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "StagedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def _total_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(t) for t in iter_tensors(model.graph))


def stage_model(
    loaded: LoadedModel,
    replacements: dict[int, "np.ndarray | BlockSource"],
    out_path: str,
    *,
    external: bool | None = None,
) -> StagedModel:
    """Write ``loaded`` with some tensors replaced into a staging folder.

    Steps
    -----
    1. Copy the graph (small: external data are not loaded).
    2. ``external`` (default: the input uses external data or the tensors
       exceed :data:`INLINE_LIMIT`): every tensor above
       :data:`EXTERNAL_THRESHOLD` bytes is streamed into one data file
       ``<output name>.data`` (copied in chunks from the input's files, the
       replacements written block by block); otherwise the replacements are
       stored inline as ``raw_data``.
    3. Serialize the graph next to it.

    ``replacements`` maps the index of a tensor in
    :func:`~lip_agnostic.tools.model_io.iter_tensors` order to its new value in the stored shape and dtype.
    """
    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    originals = list(iter_tensors(loaded.model.graph))
    copies = list(iter_tensors(model.graph))
    if external is None:
        external = loaded.uses_external_data or _total_bytes(loaded.model) > INLINE_LIMIT
    folder = os.path.dirname(os.path.abspath(out_path)) or "."
    staging = tempfile.mkdtemp(prefix=".lip-onnx-", dir=folder)
    staged = StagedModel(out_path=out_path, staging=staging)
    try:
        if external:
            data_name = _data_name(out_path)
            with open(os.path.join(staging, data_name), "wb") as fh:
                staged.files.append(data_name)
                for idx, (src, dst) in enumerate(zip(originals, copies)):
                    new = replacements.get(idx)
                    nbytes = tensor_nbytes(src)
                    if nbytes < EXTERNAL_THRESHOLD and src.data_location != TensorProto.EXTERNAL:
                        if new is not None:
                            _set_inline(dst, new)
                        continue
                    pad = (-fh.tell()) % 64
                    fh.write(b"\0" * pad)
                    offset = fh.tell()
                    if new is not None:
                        _write_value(fh, new)
                    elif src.data_location == TensorProto.EXTERNAL:
                        _copy_range(fh, *external_info(src, loaded.base_dir))
                    else:
                        fh.write(_inline_bytes(src))
                    _set_external(dst, data_name, offset, fh.tell() - offset)
        else:
            for idx, (src, dst) in enumerate(zip(originals, copies)):
                new = replacements.get(idx)
                if new is not None:
                    _set_inline(dst, new)
        with open(staged.staged_model, "wb") as fh:
            fh.write(model.SerializeToString())
        staged.files.append(os.path.basename(out_path))
    except BaseException:
        staged.discard()
        raise
    return staged


def _write_value(fh, new) -> None:
    blocks = new.blocks() if isinstance(new, BlockSource) else [new]
    for block in blocks:
        arr = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("<"))
        fh.write(memoryview(arr.reshape(-1)).cast("B"))  # the buffer itself, no bytes copy


def _copy_range(fh, path: str, offset: int, length: int) -> None:
    with open(path, "rb") as src:
        src.seek(offset)
        left = length
        while left:
            chunk = src.read(min(left, _COPY_CHUNK))
            if not chunk:
                raise OSError(f"{path} ended early while copying external data")
            fh.write(chunk)
            left -= len(chunk)


def _inline_bytes(t: TensorProto) -> bytes:
    from onnx import numpy_helper
    arr = numpy_helper.to_array(t)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _clear_data(t: TensorProto) -> None:
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(f)
    t.ClearField("raw_data")
    t.ClearField("external_data")
    t.ClearField("data_location")


def _set_inline(t: TensorProto, new) -> None:
    arr = new.materialize() if isinstance(new, BlockSource) else new
    _clear_data(t)
    t.raw_data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _set_external(t: TensorProto, location: str, offset: int, length: int) -> None:
    _clear_data(t)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = key, value


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputRefusedError(f"output folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=".lip-onnx-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
