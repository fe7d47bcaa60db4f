"""Writing the refined model and every other output: checked, staged, atomic.

Before anything is written, :func:`check_outputs` refuses each path that is,
or resolves to (``./x`` vs ``x``, symlinks, hard links: :func:`same_file`),
the input model or one of its external data files (:func:`input_files`), or
another output of the same run, and each existing path without ``force``.
The model is staged in a private temporary folder next to its final path
(other outputs in temporary files next to theirs), validated there, then
moved into place with ``os.replace`` (atomic on one file system) by
:func:`commit_files`, under an exclusive lock on the output folder so that
two concurrent runs commit one after the other (a model never ends up with
another run's data file). A failure at any step removes what was staged: no
partial file is ever left, and the input is never opened for writing. An
existing target that is not a regular file (a FIFO, a device, a socket, or a
symlink to one such as ``/proc/self/fd/1``) is refused even with ``force``; a
write the system refuses (read-only folder, full disk, no permission) is one
:class:`WriteFailedError` (exit 9), never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto

from .errors import LipOnnxError, OutputRefusedError, UnsupportedWeightError, WriteFailedError
from .model_io import LoadedModel, external_info, iter_tensors, tensor_nbytes

__all__ = ["write_bytes_atomic", "BlockSource", "StagedModel", "default_output", "check_output_path", "check_outputs",
           "commit_files", "data_path", "input_files", "output_lock", "same_file", "stage_bytes", "stage_model",
           "to_stored", "uses_external_output"]

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


def data_path(out_path: str) -> str:
    """The external data file written next to an output model: ``<output>.data``."""
    return os.path.join(os.path.dirname(os.path.abspath(out_path)), _data_name(out_path))


def uses_external_output(loaded: LoadedModel) -> bool:
    """Whether the output of ``loaded`` gets an external data file (the input has one, or it is big)."""
    return loaded.uses_external_data or _total_bytes(loaded.model) > INLINE_LIMIT


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turn an ``OSError`` of the system (read-only folder, full disk, no
    permission) while writing ``path`` into one :class:`WriteFailedError` line."""
    try:
        yield
    except LipOnnxError:
        raise
    except OSError as exc:
        why = exc.strerror or str(exc)
        hint = {errno.ENOSPC: " (the disk is full)", errno.EROFS: " (read-only file system)",
                errno.EACCES: " (no permission to write in that folder)"}.get(exc.errno, "")
        raise WriteFailedError(f"could not write {path}: {why}{hint}; nothing was written") from None


def _special_target(path: str) -> str | None:
    """What an existing non-regular target is (``"a FIFO"``...), or None for a regular file / no file."""
    try:
        st = os.stat(path)  # follows symlinks: a link to /proc/self/fd/1 is judged by what it points to
    except OSError:
        return None
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(st.st_mode):
            return name
    return None if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) else "not a regular file"


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: equal after resolving ``.``/``..`` and
    symlinks (``os.path.realpath``), or, both existing, one inode on one device
    (hard links: ``os.path.samefile``, i.e. ``st_ino`` and ``st_dev``)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def input_files(loaded: LoadedModel) -> list[tuple[str, str]]:
    """``(what, path)`` of every file a loaded model was read from: the model
    and each of its external data files (none for an in-memory model)."""
    files: list[tuple[str, str]] = []
    if loaded.path is not None:
        files.append(("the input model", loaded.path))
        seen: set[str] = set()
        for t in iter_tensors(loaded.model.graph):
            if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
                full = external_info(t, loaded.base_dir)[0]
                if full not in seen:
                    seen.add(full)
                    files.append(("the input's external data file", full))
    return files


def check_outputs(outputs: "list[tuple[str, str]]", protected: "list[tuple[str, str]]", force: bool) -> None:
    """Refuse an output set before anything is written.

    ``outputs`` and ``protected`` are ``(what, path)`` pairs, e.g.
    ``("output model", "r.onnx")``, ``("--report", "r.json")`` and
    ``("the input model", "m.onnx")``. Each output is refused (with
    :class:`OutputRefusedError`) when its folder is missing, it is a folder,
    it is or resolves to (``./x`` vs ``x``, symlinks, hard links) a protected
    file (always, ``force`` or not) or another output of the same run, or it
    exists and ``force`` is false.
    """
    for i, (what, path) in enumerate(outputs):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise OutputRefusedError(f"{what} {path}: the folder {folder} does not exist")
        if os.path.isdir(path):
            raise OutputRefusedError(f"{what} {path} is a folder")
        special = _special_target(path)
        if special is not None:
            link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
            raise OutputRefusedError(f"{what} {path} is {special}{link}; only a regular file is ever replaced, "
                                     "--force or not: choose another path")
        for pwhat, ppath in protected:
            if same_file(path, ppath):
                raise OutputRefusedError(f"{what} {path} would overwrite {pwhat} ({ppath}); the input is never "
                                         "modified: choose another path")
        for owhat, opath in outputs[:i]:
            if same_file(path, opath):
                raise OutputRefusedError(f"{what} {path} is the same file as {owhat} {opath}; "
                                         "give each output its own path")
    for what, path in outputs:
        if os.path.lexists(path) and not force:
            raise OutputRefusedError(f"{what} {path} exists; pass --force to overwrite it")


def check_output_path(out_path: str, loaded: LoadedModel, force: bool, external: bool,
                      extra: "list[tuple[str, str]]" = (), inputs: "list[tuple[str, str]]" = ()) -> None:
    """:func:`check_outputs` for a model output (and its data file when
    ``external``), plus ``extra`` outputs of the same run, against the input's
    files and the run's other ``inputs`` (``(what, path)``: the calibration file)."""
    outputs = [("output model", out_path)]
    if external:
        outputs.append(("the output's external data file", data_path(out_path)))
    check_outputs(outputs + list(extra), input_files(loaded) + list(inputs), force)


def _replace(src: str, dst: str) -> None:
    os.replace(src, dst)


@contextlib.contextmanager
def output_lock(paths: "list[str]") -> Iterator[None]:
    """Hold an exclusive ``flock`` on each distinct folder of ``paths`` (sorted,
    so two runs never deadlock): concurrent ``lip-onnx`` runs commit one after
    the other, so a model and its data file always come from one run. Where
    ``fcntl`` is missing (Windows) this is a no-op."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    fds = []
    try:
        for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in paths}):
            fd = os.open(folder, os.O_RDONLY)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing releases the lock


def commit_files(moves: "list[tuple[str, str]]", force: bool) -> None:
    """Move staged files into place, in order, under :func:`output_lock`.

    Without ``force``, the targets are checked again under the lock, so of two
    concurrent runs to one new path the second is refused instead of
    overwriting the first."""
    targets = [dst for _, dst in moves]
    with output_lock(targets):
        if not force:
            for dst in targets:
                if os.path.lexists(dst):
                    raise OutputRefusedError(f"output {dst} appeared while this run was working (another run?); "
                                             "pass --force to overwrite it")
        for src, dst in moves:
            with writing(dst):
                _replace(src, dst)


def stage_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to a private temporary file in ``path``'s folder (same
    file system, so :func:`commit_files` renames it atomically); return its path."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=".lip-onnx-", suffix=suffix, dir=folder)
    try:
        with writing(path):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


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

    def commit(self, force: bool = True, also: "list[tuple[str, str]]" = ()) -> None:
        """Move the staged files into place (data first, the model last, then
        ``also``: further staged ``(temporary, final)`` files of the same run)."""
        folder = os.path.dirname(os.path.abspath(self.out_path))
        names = sorted(self.files, key=lambda n: n == os.path.basename(self.out_path))
        moves = [(os.path.join(self.staging, n), os.path.join(folder, n)) for n in names] + list(also)
        try:
            commit_files(moves, force)
        finally:
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
    with writing(out_path):
        staging = tempfile.mkdtemp(prefix=".lip-onnx-", dir=folder)
    staged = StagedModel(out_path=out_path, staging=staging)
    try:
        with writing(out_path):
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


def write_bytes_atomic(path: str, data: bytes, *, force: bool = True,
                       protected: "list[tuple[str, str]]" = (), what: str = "output") -> None:
    """Write ``data`` to ``path``: checked (:func:`check_outputs`), staged in a
    temporary file in the same folder, renamed into place under the lock."""
    check_outputs([(what, path)], list(protected), force)
    tmp = stage_bytes(path, data)
    try:
        commit_files([(tmp, path)], force)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
