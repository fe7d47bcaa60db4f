"""Turn what a Keras user passes as data into a stream of ``(x_batch, labels)``.

Private helper of :mod:`lip_agnostic.adapters.keras`. Accepts ``(x, y)``
NumPy-like arrays (batched here), a ``tf.data.Dataset`` or a
``keras.utils.PyDataset`` yielding ``(x, y)`` batches, or any other iterable
of ``(x, y)`` batches (e.g. a torch ``DataLoader`` on the torch backend).
Labels come out as NumPy: int64 class ids ``(n,)`` or float targets ``(n, l)``.
"""

from __future__ import annotations

from typing import Any, Iterator

import keras
import numpy as np

from lip_agnostic.errors import DataError, DataTypeError, NonFiniteError

__all__ = ["check_data", "iter_batches", "as_labels", "n_rows", "REPLAY_HINT"]

#: What to pass when the fit data must be read twice in the same order (``label_repair``) and cannot be.
REPLAY_HINT = ("pass (x, y) arrays, a keras.utils.PyDataset, a tf.data.Dataset without reshuffling, or a list "
               "of (x, y) batches")


def _is_tf_dataset(data: Any) -> bool:
    return hasattr(data, "element_spec") and hasattr(data, "cardinality")


def _is_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and not isinstance(data, keras.utils.PyDataset)


def _no_labels(name: str, got: str) -> DataError:
    return DataError(
        f"{name} must provide labels: (x, y) arrays, or a dataset yielding (x, y) batches; got {got}"
    )


def _no_weights(name: str) -> DataError:
    return DataError(
        f"{name} yields (x, y, sample_weight): LIP's least-squares refit is unweighted; "
        "pass (x, y) only"
    )


def n_rows(x: Any) -> int:
    """Number of samples in an input array (or in the first array of a list/dict of inputs)."""
    leaves = keras.tree.flatten(x)
    if not leaves:
        raise DataError("x is empty: it holds no arrays")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise DataError(f"every input array must have the same number of rows; got {sorted(sizes)}")
    return sizes.pop()


def check_data(data: Any, name: str = "data") -> None:
    """Cheap structural checks, done when the callback is built (before any training)."""
    if data is None:
        raise DataError(f"{name} is required: LIP refits against labels")
    if _is_pair(data):
        if len(data) == 3:
            raise _no_weights(name)
        if len(data) != 2:
            raise _no_labels(name, f"a {type(data).__name__} of length {len(data)}")
        x, y = data
        if y is None:
            raise _no_labels(name, "(x, None)")
        n_x, n_y = n_rows(x), int(np.shape(y)[0]) if np.ndim(y) else -1
        if n_x != n_y:
            raise DataError(f"{name}: x has {n_x} rows but y has {n_y} (shape {np.shape(y)})")
        if n_x == 0:
            raise DataError(f"{name} is empty (0 samples)")
        return
    if isinstance(data, keras.utils.PyDataset):
        return
    if _is_tf_dataset(data):
        spec = data.element_spec
        if not isinstance(spec, tuple):
            raise _no_labels(name, f"a tf.data.Dataset of single elements ({spec})")
        if len(spec) == 3:
            raise _no_weights(name)
        if len(spec) != 2:
            raise _no_labels(name, f"a tf.data.Dataset of {len(spec)}-tuples")
        return
    if hasattr(data, "__array__") or hasattr(data, "shape"):
        raise _no_labels(name, f"a single array of shape {tuple(np.shape(data))}")
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise DataTypeError(
            f"{name} must be (x, y), a tf.data.Dataset, a keras.utils.PyDataset or an iterable of "
            f"(x, y) batches; got {type(data).__name__}"
        )


def as_labels(y: Any, n_classes: int, name: str = "y") -> np.ndarray:
    """NumPy labels for the core: int64 ``(n,)`` class ids, or float ``(n, l)`` targets.

    ``(n, 1)`` integer columns are flattened; float class ids (``3.0``) are
    cast to int64 when every value is a whole number. Range, shape and
    finiteness are checked here so the message names the Keras argument.
    """
    y = np.asarray(keras.ops.convert_to_numpy(y))
    if y.ndim == 2 and y.shape[1] == 1 and n_classes != 1:
        y = y[:, 0]
    if y.ndim == 1:
        if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataTypeError(f"{name} must hold integer class ids; got dtype {y.dtype}")
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)):
                raise NonFiniteError(f"{name} contains {int(np.sum(~np.isfinite(y)))} NaN/Inf label(s)")
            if not np.all(y == np.round(y)):
                raise DataError(f"{name} holds non-integer class ids (dtype {y.dtype}); pass int labels or (n, {n_classes}) targets")
        y = y.astype(np.int64, copy=False)
        if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DataError(
                f"{name} must lie in [0, {n_classes}) for a layer with {n_classes} units; "
                f"got min {int(y.min())}, max {int(y.max())}"
            )
        return y
    if y.ndim == 2:
        if y.shape[1] != n_classes:
            raise DataError(
                f"{name} has {y.shape[1]} columns (shape {y.shape}) but the layer has {n_classes} units"
            )
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
            raise DataTypeError(f"{name} must be numeric; got dtype {y.dtype}")
        y = y.astype(np.float64 if y.dtype == np.float64 else np.float32, copy=False)
        if not np.all(np.isfinite(y)):
            raise NonFiniteError(f"{name} contains {int(np.sum(~np.isfinite(y)))} NaN/Inf value(s)")
        return y
    raise DataError(f"{name} must be class ids (n,) or targets (n, {n_classes}); got shape {y.shape}")


def _split(batch: Any, name: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) == 3:
            raise _no_weights(name)
    raise _no_labels(name, f"a batch of type {type(batch).__name__}")


def _slice(x: Any, start: int, stop: int) -> Any:
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def iter_batches(data: Any, batch_size: int, steps: int | None = None, name: str = "data") -> Iterator[tuple[Any, Any]]:
    """Yield raw ``(x_batch, y_batch)`` from any supported data (``steps`` caps the batch count)."""
    check_data(data, name)
    if _is_pair(data):
        x, y = data
        n = n_rows(x)
        stops = range(batch_size, n + batch_size, batch_size)
        for i, stop in enumerate(stops):
            if steps is not None and i >= steps:
                return
            start = stop - batch_size
            yield _slice(x, start, min(stop, n)), y[start:min(stop, n)]
        return
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        if count is None and steps is None:
            raise DataError(f"{name} is a PyDataset without num_batches (infinite): pass steps=")
        count = steps if count is None else (count if steps is None else min(count, steps))
        for i in range(count):
            yield _split(data[i], name)
        return
    if _is_tf_dataset(data):
        card = int(data.cardinality())
        if card == -1 and steps is None:
            raise DataError(f"{name} is an infinite tf.data.Dataset (repeat()): pass steps=")
        if steps is not None:
            data = data.take(steps)
        data = data.as_numpy_iterator()  # NumPy batches: usable on every Keras backend
    for i, batch in enumerate(data):
        if steps is not None and i >= steps:
            return
        yield _split(batch, name)
