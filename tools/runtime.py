"""onnxruntime sessions over a :class:`LoadedModel`, with extra outputs exposed.

A model with external data on disk is opened by onnxruntime from its own
folder (onnxruntime maps the data: no copy; extra outputs go through a
temporary graph file there, removed at once). Otherwise, or when that folder
is read-only, external tensors are handed over as memory-mapped arrays
(``SessionOptions.add_external_initializers``, which onnxruntime copies).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import CalibrationError, ModelReadError
from .model_io import LoadedModel, read_tensor

__all__ = ["Session", "elem_types", "batched"]


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor that shape inference can type."""
    types: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            types[v.name] = v.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


class Session:
    """An ``onnxruntime.InferenceSession`` that also returns some internal tensors.

    Parameters
    ----------
    loaded : LoadedModel
    extra_outputs : sequence of str
        Internal tensors to expose as graph outputs (e.g. the classifier's input).
    threads : int, optional
        Intra-op threads (onnxruntime default when ``None``).
    prepack : bool
        Let onnxruntime pre-pack weights (faster runs; a private copy of each
        packed weight and a slower start). Off for short validation runs.
    """

    def __init__(self, loaded: LoadedModel, extra_outputs: Sequence[str] = (), threads: int | None = None,
                 prepack: bool = True) -> None:
        import onnxruntime as ort

        model = onnx.ModelProto()
        model.CopyFrom(loaded.model)
        have = {o.name for o in model.graph.output}
        missing = [n for n in extra_outputs if n not in have]
        if missing:
            types = elem_types(loaded.model)
            for name in missing:
                model.graph.output.append(
                    helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if not prepack:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        self._keep: list = []
        try:
            self.session = self._from_folder(ort, loaded, model, opts, bool(missing)) or self._from_memory(ort, loaded, model, opts)
        except Exception as exc:
            raise ModelReadError(f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _from_folder(ort, loaded: LoadedModel, model: onnx.ModelProto, opts, changed: bool):
        """Let onnxruntime read external data from the model's folder itself (it maps it: no copy).

        The graph with the extra outputs goes to a temporary file next to the
        model, removed once the session exists. ``None`` when the model has no
        external data or the folder is not writable.
        """
        if loaded.path is None or not loaded.uses_external_data:
            return None
        if not changed:
            return ort.InferenceSession(loaded.path, opts, providers=["CPUExecutionProvider"])
        try:
            fd, tmp = tempfile.mkstemp(prefix=".lip-onnx-graph-", suffix=".onnx", dir=loaded.base_dir)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(model.SerializeToString())
            return ort.InferenceSession(tmp, opts, providers=["CPUExecutionProvider"])
        finally:
            os.remove(tmp)

    def _from_memory(self, ort, loaded: LoadedModel, model: onnx.ModelProto, opts):
        """The graph from memory; external tensors handed over as memory-mapped arrays."""
        names, values = [], []
        for t in model.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                arr = np.asarray(read_tensor(t, loaded.base_dir))
                self._keep.append(arr)
                names.append(t.name)
                values.append(ort.OrtValue.ortvalue_from_numpy(arr))
        if names:
            opts.add_external_initializers(names, values)
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run on one batch; return the requested outputs.

        Raises
        ------
        CalibrationError
            If onnxruntime rejects the inputs (shapes or types it cannot run).
        """
        try:
            return self.session.run(list(outputs), dict(feeds))
        except Exception as exc:
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            raise CalibrationError(f"onnxruntime cannot run the model on inputs {shapes}: "
                                   f"{str(exc).strip().splitlines()[0][:300]}") from None


def batched(inputs: Mapping[str, np.ndarray], batch_size: int, *, progress: bool = False,
            desc: str = "") -> Iterator[dict[str, np.ndarray]]:
    """Slices of every input along axis 0, ``batch_size`` rows each (tqdm bar if ``progress``)."""
    n = len(next(iter(inputs.values())))
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=desc, unit="batch", total=len(starts), file=sys.stderr, leave=False)
    for start in starts:
        yield {k: v[start:start + batch_size] for k, v in inputs.items()}
