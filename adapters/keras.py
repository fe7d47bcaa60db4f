"""Keras 3 face of lip-agnostic: ``LIPCallback`` and ``refine_model``.

Thin: it finds the classifier ``Dense`` layer, streams its input features
and the labels (NumPy, converted at the boundary with
``keras.ops.convert_to_numpy``) into :func:`lip_agnostic.refine_batches`,
and writes the refined kernel back with ``assign``. All math is the core's.
Runs on the TensorFlow, torch and jax Keras backends.

Callback order
--------------
Keras calls callbacks in list order. Put ``LIPCallback``

- **after** ``EarlyStopping(restore_best_weights=True)``: its ``on_train_end``
  restores the best weights first, then LIP refines those;
- **before** ``ModelCheckpoint`` when LIP acts at epoch ends
  (``when="epoch_end"`` or ``project_every``): the checkpoint then holds the
  refined weights. ``ModelCheckpoint`` never saves at train end: after
  ``fit`` with the default ``when="train_end"``, save the model yourself.

Example
-------
>>> import numpy as np, keras
>>> from lip_agnostic.adapters.keras import LIPCallback
>>> rng = np.random.default_rng(0)
>>> x, y = rng.normal(size=(256, 8)).astype("float32"), rng.integers(0, 3, 256)
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
...                           keras.layers.Dense(3)])
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> lip = LIPCallback(data=(x, y), rank=1)
>>> hist = model.fit(x, y, epochs=2, verbose=0, callbacks=[lip])
>>> lip.report["selection"]["k"], hist.history["lip_rank"]
(1, [1])
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterator, Literal

import keras
import numpy as np

import lip_agnostic
from lip_agnostic import LIPResult, project_principal, refine_batches
from lip_agnostic.errors import DataError, DataTypeError, LIPError, NonFiniteError, OptionError, RankOutOfRangeError
from lip_agnostic.options import DRIVER_INPUTS, OPTION_NAMES, face_reserved, parse_bias_mode, parse_rank

from ._face import Replayed, check_replayable, check_selection_use, face_options, log_entry, reads_twice, with_rows
from ._keras_data import REPLAY_HINT, as_labels, check_data, iter_batches
from ._keras_layer import FeatureExtractor, check_output_layer, check_refinable, find_target_layer, layer_path

__all__ = ["LIPCallback", "refine_model", "BiasMode", "LIP_OPTIONS"]

BiasMode = Literal["fit", "ignore"]

#: ``refine_batches`` keywords the adapter sets itself (the face's own arguments and the core's reserved names).
_RESERVED = face_reserved()  # the names every face sets (W, bias, svd, xp...), for LIP_OPTIONS below
_OWN = ("rank", "validation", "bias_mode")

#: Keywords of :func:`lip_agnostic.refine_batches` that ``refine_model`` / ``LIPCallback`` pass through
#: (``**lip_options``).
LIP_OPTIONS = tuple(p for p in OPTION_NAMES + DRIVER_INPUTS if p not in _RESERVED and p not in _OWN)

DEFAULT_BATCH_SIZE = 256


def _check_lip_options(options: dict, rank: Any, validation: Any) -> dict:
    options = face_options(face="Keras adapter", reserved={}, own=_OWN, **options)
    check_selection_use(rank, options, validation=validation is not None)
    return options


def _check_options(rank: Any, bias_mode: Any, batch_size: Any, steps: Any, validation_steps: Any,
                   name: str = "rank") -> tuple[Any, BiasMode]:
    rank = parse_rank(rank, name=name)
    bias_mode = parse_bias_mode(bias_mode)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive integer; got {batch_size!r}")
    for what, v in (("steps", steps), ("validation_steps", validation_steps)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise OptionError(f"{what} must be a positive integer or None; got {v!r}")
    return rank, bias_mode


def _variable_to_numpy(variable: Any) -> np.ndarray:
    """A Keras variable's value as NumPy (``Variable.numpy()`` works on every backend and,
    unlike ``convert_to_numpy`` on a TF variable, raises no NumPy-2 ``copy=`` deprecation)."""
    return np.asarray(variable.numpy())


def _check_inputs(xb: Any, name: str) -> None:
    """NaN/Inf in what the user gave (each floating input array of the batch), not only in the features."""
    for leaf in keras.tree.flatten(xb):
        arr = np.asarray(keras.ops.convert_to_numpy(leaf))
        if np.issubdtype(arr.dtype, np.floating):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise NonFiniteError(f"{name}: a batch of inputs holds {bad} NaN/Inf value(s); LIP refuses them "
                                     "even where the model would hide them (a ReLU turns NaN into 0)")


def _feature_stream(
    features: FeatureExtractor, data: Any, n_classes: int, batch_size: int, steps: int | None, name: str,
    first: Callable[[Any], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(features (n_b, q), labels)`` batches; features are made one batch at a time.

    Every batch's inputs are checked for NaN/Inf (:func:`_check_inputs`);
    ``first(x_batch)`` runs on the first batch (the output-layer check).
    """
    for xb, yb in iter_batches(data, batch_size, steps, name):
        _check_inputs(xb, name)
        labels = as_labels(yb, n_classes, f"{name} labels")
        feats = features(xb)
        if first is not None:
            first(xb)
            first = None
        if feats.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: a batch has {feats.shape[0]} inputs but {labels.shape[0]} labels")
        yield feats, labels


def refine_model(
    model: keras.Model,
    data: Any,
    *,
    rank: int | float | str = "auto",
    layer: Any = None,
    validation: Any = None,
    bias_mode: BiasMode = "fit",
    batch_size: int = DEFAULT_BATCH_SIZE,
    steps: int | None = None,
    validation_steps: int | None = None,
    **lip_options: Any,
) -> LIPResult:
    """Apply LIP to a Keras model's classifier ``Dense`` layer, in place.

    Steps
    -----
    1. Target: ``layer`` (object or name), default the ``Dense`` producing
       the model's output (read from the graph; a subclassed model: the last
       ``Dense`` in tracking order); refuse a layer that is not the output
       layer (on the first batch, the model's output must order each row as
       the layer's output does: element-wise layers such as ``Softmax`` at
       most after it), a layer called twice, LoRA-enabled, quantized or
       non-2-D kernels. Every batch of inputs is checked for NaN/Inf.
    2. Features: a model ``inputs -> layer.input`` (or a tap on the layer
       for subclassed models), run batch by batch with ``predict_on_batch``;
       features and labels reach the core as NumPy, one batch at a time.
    3. ``result = lip_agnostic.refine_batches(kernel, stream, rank=rank,
       validation=..., bias=b, bias_mode=bias_mode, **lip_options)``.
    4. ``layer.kernel.assign(result.weight)`` when ``k < min(q, l)``. The
       bias is changed only by ``tail="full"`` (beyond the paper) with the bias
       in the fit (``result.bias``). Any error before this step leaves the layer untouched.

    Parameters
    ----------
    model : keras.Model
        Functional, Sequential or subclassed.
    data : (x, y), tf.data.Dataset, keras.utils.PyDataset or iterable of (x, y) batches
        The (noisy) training data. ``y``: int class ids ``(n,)`` / ``(n, 1)``,
        or one-hot / soft / candidate-set targets ``(n, l)``.
    rank : int, float in (0, 1], or "auto"
        Components kept; ``"auto"`` scores every ``k`` on ``validation``
        (or on a hold-out of ``data``, see ``refine_batches(holdout=)``).
    layer : None, str or keras layer
    validation : same kinds as ``data``, optional
        Held-out data for ``rank="auto"`` (noisy labels are fine); refused
        with a fixed rank (it would do nothing).
    bias_mode : {"fit", "ignore"}
        ``"fit"`` (default): the refit targets ``Y - 1 b^T``, consistent
        with a layer that adds ``b``. ``"ignore"``: the paper's reference code
        (targets ``Y``, bias disregarded). The bias itself is kept (except by
        ``tail="full"``).
    batch_size : int
        Rows per batch for ``(x, y)`` arrays.
    steps, validation_steps : int, optional
        Batches to take from a stream (required for infinite ones).
    **lip_options
        Passed to :func:`lip_agnostic.refine_batches` (``target_scale``,
        ``degenerate``, ``min_gain``, ``holdout``, ``all_reduce``, ...;
        ``tail="full"``, ``ridge=``: the full-tail ridge refit, beyond the
        paper); the names are :data:`LIP_OPTIONS`. ``label_repair="auto"``
        (beyond the paper, with ``rank="auto"``) also tries ridge heads fit
        without, or with corrected, the labels that look wrong; it and
        ``label_issues=True`` read ``data`` twice in the same order, so a
        generator is refused before anything runs, and a ``tf.data``
        pipeline that reshuffles on every pass is refused once its second
        pass differs (the layer is left unchanged either way).

    Returns
    -------
    LIPResult
        ``.weight`` is the kernel now in the layer (NumPy); ``.to_dict()`` the
        report; ``.context`` has ``face``, ``layer`` and ``bias_mode``. With
        ``label_repair`` or ``label_issues=True``, ``.label_issues.rows()``
        lists the flagged rows, most suspect first: ``position`` (the core's),
        ``row`` (the row's index in ``data``, in the order it yields rows,
        held-out rows counted), ``given``, ``suggested``, ``score``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from lip_agnostic.adapters.keras import refine_model
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 4, 64)
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(4)])
    >>> refine_model(model, (x, y), rank=2).k
    2
    """
    rank, bias_mode = _check_options(rank, bias_mode, batch_size, steps, validation_steps)
    lip_options = _check_lip_options(lip_options, rank, validation)
    target = find_target_layer(model, layer)
    return _Refiner(model, target, bias_mode).refine(
        data, rank=rank, validation=validation, batch_size=batch_size, steps=steps,
        validation_steps=validation_steps, **lip_options,
    )


class _Refiner:
    """One checked target layer plus its feature extractor (reused across epochs)."""

    def __init__(self, model: keras.Model, layer: Any, bias_mode: BiasMode) -> None:
        self.q, self.l = check_refinable(layer)
        self.layer = layer
        self.path = layer_path(model, layer)
        self.bias_mode = bias_mode
        self._model = model
        self._features: FeatureExtractor | None = None

    def _context(self, exc: Exception) -> Exception:
        """The same kind of error (the core's typed errors stay typed), saying which layer."""
        msg = f"LIP on layer {self.path!r}: {exc} (the kernel was left unchanged)"
        if isinstance(exc, RankOutOfRangeError):
            return RankOutOfRangeError(msg, exc.rank, exc.m)
        if isinstance(exc, LIPError):
            return type(exc)(msg)
        return (DataError if isinstance(exc, ValueError) else DataTypeError)(msg)

    def refine(self, data: Any, *, rank: Any, validation: Any, batch_size: int,
               steps: int | None, validation_steps: int | None, **lip_options: Any) -> LIPResult:
        layer = self.layer
        kernel = _variable_to_numpy(layer.kernel)
        # The bias always goes to the core (k="auto" scores the logits the layer really
        # produces); bias_mode="ignore" only keeps it out of the fit (the paper's targets Y).
        bias = None
        if getattr(layer, "bias", None) is not None:
            bias = _variable_to_numpy(layer.bias).astype(kernel.dtype, copy=False)
        try:
            if self._features is None:
                self._features = FeatureExtractor(self._model, layer, self.q)
            reason = reads_twice(lip_options)
            if reason is not None:  # before any batch is read: the layer is untouched
                check_replayable(data, reason, what="data", instead=REPLAY_HINT)
            features = self._features

            def fit_pass(first: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
                check = (lambda xb: check_output_layer(self._model, layer, xb, self.path)) if first else None
                return _feature_stream(features, data, self.l, batch_size, steps, "data", first=check)

            # label_repair / label_issues=True read the fit data again: each read a fresh pass over data
            stream = fit_pass(True) if reason is None else Replayed(fit_pass)
            val = None
            if validation is not None:
                val = _feature_stream(self._features, validation, self.l, batch_size,
                                      validation_steps, "validation")
            result = refine_batches(kernel, stream, rank=rank, validation=val, bias=bias,
                                    bias_mode=self.bias_mode, **lip_options)
            new = np.asarray(result.weight, dtype=kernel.dtype)
            if not np.all(np.isfinite(new)):
                raise NonFiniteError(f"the refined kernel has {int(np.sum(~np.isfinite(new)))} NaN/Inf entries")
            # tail="full" (beyond the paper) also refits the bias when it is in the fit
            new_b = None if result.bias is None else np.asarray(result.bias, dtype=_variable_to_numpy(layer.bias).dtype)
            if new_b is not None and not np.all(np.isfinite(new_b)):
                raise NonFiniteError(f"the refit bias has {int(np.sum(~np.isfinite(new_b)))} NaN/Inf entries")
        except (ValueError, TypeError) as exc:
            raise self._context(exc) from exc
        if result.selection.changed:
            layer.kernel.assign(new)
            if new_b is not None:
                layer.bias.assign(new_b)
        return replace(with_rows(result), context={**result.context, "face": "keras", "layer": self.path,
                                                   "bias_mode": self.bias_mode})

    def project(self, rank: int | float) -> int:
        """PSP only: ``kernel <- project_principal(kernel, rank)``; returns the rank kept."""
        kernel = _variable_to_numpy(self.layer.kernel)
        try:
            f = lip_agnostic.reduced_svd(kernel)  # one factorization for the rank and the projection
            kept = lip_agnostic.select_rank(kernel, rank, svd=f).k
            new = np.asarray(project_principal(kernel, kept, svd=f), dtype=kernel.dtype)
        except (ValueError, TypeError) as exc:
            raise self._context(exc) from exc
        if kept < min(self.q, self.l):
            self.layer.kernel.assign(new)
        return kept


class LIPCallback(keras.callbacks.Callback):
    """Apply LIP to the classifier layer when training ends (or at epoch ends).

    ``on_train_end`` (default) runs :func:`refine_model`'s pass on ``data``
    and writes ``lip_rank`` (``k``), ``lip_top_k_angle`` (radians: largest
    principal angle between the top-``k`` class subspaces before and after,
    each ranked by its own singular values), ``lip_kept_relative_change``
    (measured change of the kept components, ~0), ``lip_relative_change`` and ``lip_n_fit`` into
    ``logs`` and into ``model.history.history`` (so the ``History`` that
    ``fit`` returns shows them). ``callback.report`` keeps the core's
    ``LIPResult.to_dict()`` (plus ``layer`` and ``bias_mode``);
    ``callback.result`` the ``LIPResult``. With ``label_repair`` (beyond the
    paper) ``callback.result.label_issues`` holds the flagged rows (``rows()``:
    ``row`` is the index in ``data``) and History also gets ``lip_n_flagged``
    and, with a temperature, ``lip_temperature`` and ``lip_temperature_applied``;
    one-shot ``data`` is refused here, before training (it is read twice).

    See the module docstring for the order relative to ``EarlyStopping``
    and ``ModelCheckpoint``.

    Parameters
    ----------
    data, rank, layer, validation, bias_mode, batch_size, steps, validation_steps
        As in :func:`refine_model`.
    when : {"train_end", "epoch_end", "never"}
        ``"epoch_end"``: refine after every ``every``-th epoch instead
        (training then continues from the refined kernel; the keys go into
        that epoch's logs). ``"never"``: only the optional projection.
    every : int
        Period of ``when="epoch_end"``.
    project_every : int, optional
        Off by default. Every ``project_every`` epochs, replace the kernel
        by its best rank-``project_rank`` approximation (PSP,
        :func:`lip_agnostic.project_principal`); logs ``lip_projected_rank``.
    project_rank : int or float, optional
        Rank (or energy fraction) for the projection; defaults to ``rank``
        when ``rank`` is a number. Required with ``project_every`` and ``rank="auto"``.
    **lip_options
        Passed to :func:`lip_agnostic.refine_batches` (:data:`LIP_OPTIONS`).

    Examples
    --------
    >>> import numpy as np, keras
    >>> rng = np.random.default_rng(1)
    >>> x, y = rng.normal(size=(128, 5)).astype("float32"), rng.integers(0, 3, 128)
    >>> model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", "sparse_categorical_crossentropy")
    >>> cb = LIPCallback(data=(x, y), rank=2, bias_mode="ignore")
    >>> _ = model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    >>> cb.report["selection"]["strategy"]
    'fixed'
    """

    def __init__(
        self,
        data: Any,
        rank: int | float | str = "auto",
        *,
        validation: Any = None,
        layer: Any = None,
        when: Literal["train_end", "epoch_end", "never"] = "train_end",
        every: int = 1,
        bias_mode: BiasMode = "fit",
        batch_size: int = DEFAULT_BATCH_SIZE,
        steps: int | None = None,
        validation_steps: int | None = None,
        project_every: int | None = None,
        project_rank: int | float | None = None,
        **lip_options: Any,
    ) -> None:
        super().__init__()
        rank, bias_mode = _check_options(rank, bias_mode, batch_size, steps, validation_steps)
        lip_options = _check_lip_options(lip_options, rank, validation)
        if when not in ("train_end", "epoch_end", "never"):
            raise OptionError(f"when must be 'train_end', 'epoch_end' or 'never'; got {when!r}")
        for name, v in (("every", every), ("project_every", project_every)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise OptionError(f"{name} must be a positive integer; got {v!r}")
        if project_every is not None:
            if project_rank is None:
                if isinstance(rank, str):
                    raise OptionError("project_every needs a numeric project_rank when rank='auto'")
                project_rank = rank
            project_rank = parse_rank(project_rank, name="project_rank", allow_auto=False)
        if when != "never":
            check_data(data, "data")
            if validation is not None:
                check_data(validation, "validation")
            reason = reads_twice(lip_options)
            if reason is not None:  # refused now, not after training
                check_replayable(data, reason, what="data", instead=REPLAY_HINT)
        self.data = data
        self.validation = validation
        self.rank = rank
        self.layer = layer
        self.when = when
        self.every = every
        self.bias_mode = bias_mode
        self.batch_size = batch_size
        self.steps = steps
        self.validation_steps = validation_steps
        self.project_every = project_every
        self.project_rank = project_rank
        self.lip_options = dict(lip_options)
        self.result: LIPResult | None = None
        self.report: dict | None = None
        self.reports: list[dict] = []
        self._refiner: _Refiner | None = None

    # ------------------------------------------------------------------ setup
    def _target(self) -> _Refiner:
        if self._refiner is None or self._refiner._model is not self.model:
            target = find_target_layer(self.model, self.layer)
            self._refiner = _Refiner(self.model, target, self.bias_mode)
            m = min(self._refiner.q, self._refiner.l)
            for name, r in (("rank", self.rank), ("project_rank", self.project_rank)):
                if isinstance(r, int) and r > m:
                    raise RankOutOfRangeError(
                        f"{name}={r} exceeds min(q, l)={m} for layer {self._refiner.path!r} "
                        f"(kernel {self._refiner.q}x{self._refiner.l})", r, m)
            if self.when != "never":
                self._check_array_labels(self._refiner.l)
        return self._refiner

    def _check_array_labels(self, n_classes: int) -> None:
        """Fail before training, not after it, on bad in-memory labels."""
        for name, d in (("data", self.data), ("validation", self.validation)):
            if isinstance(d, (tuple, list)) and len(d) == 2:
                as_labels(d[1], n_classes, f"{name} labels")

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Check the target layer and in-memory labels now, before any training."""
        target = find_target_layer(self.model, self.layer)
        shape = check_refinable(target, require_built=False)
        if shape is not None:
            self._target()

    # -------------------------------------------------------------- actions
    def refine_now(self) -> LIPResult:
        """Run the LIP pass on ``self.model`` now; returns the :class:`LIPResult`."""
        refiner = self._target()
        result = refiner.refine(
            self.data, rank=self.rank, validation=self.validation, batch_size=self.batch_size,
            steps=self.steps, validation_steps=self.validation_steps, **self.lip_options,
        )
        self.result = result
        self.report = result.to_dict()
        self.report["layer"] = refiner.path
        self.report["bias_mode"] = self.bias_mode
        self.reports.append(self.report)
        return result

    #: The keys History gets (a subset of the faces' one log entry, :func:`~lip_agnostic.adapters._face.log_entry`).
    LOG_KEYS = ("lip_rank", "lip_top_k_angle", "lip_kept_relative_change", "lip_relative_change", "lip_n_fit")

    #: Keys History also gets when the run has them (label issues, a temperature; beyond the paper).
    OPTIONAL_LOG_KEYS = ("lip_n_flagged", "lip_temperature", "lip_temperature_applied")

    @classmethod
    def _log_values(cls, result: LIPResult) -> dict:
        entry = log_entry(result)
        return {key: entry[key] for key in cls.LOG_KEYS + cls.OPTIONAL_LOG_KEYS if key in entry}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if self.project_every is not None and done % self.project_every == 0:
            kept = self._target().project(self.project_rank)
            if logs is not None:
                logs["lip_projected_rank"] = kept
        if self.when == "epoch_end" and done % self.every == 0:
            values = self._log_values(self.refine_now())
            if logs is not None:
                logs.update(values)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.when != "train_end":
            return
        values = self._log_values(self.refine_now())
        if logs is not None:
            logs.update(values)
        history = getattr(self.model, "history", None)
        record = getattr(history, "history", None)
        if isinstance(record, dict):
            for key, value in values.items():
                record.setdefault(key, []).append(value)
