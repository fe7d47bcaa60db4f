"""Keras side of LIP: find the classifier layer, check it can be refined, extract its input features.

Private helper of :mod:`lip_agnostic.adapters.keras`. No math lives here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import keras
import numpy as np

from lip_agnostic.errors import DataError, DataTypeError, OptionError, OptionTypeError

__all__ = ["find_target_layer", "output_layers", "check_output_layer", "check_refinable", "FeatureExtractor",
           "layer_path"]

#: Layers that act on each logit alone (or on one row's logits: softmax): a model's output may pass through
#: these after its classifier and the classifier is still the output layer.
ELEMENTWISE_LAYERS = ("Activation", "Softmax", "ReLU", "LeakyReLU", "ELU", "Dropout", "GaussianNoise",
                      "GaussianDropout", "AlphaDropout", "Identity", "Rescaling", "ActivityRegularization")


def _sublayers(layer: Any) -> list:
    """Direct sublayers of a model or layer (tracked attribute order)."""
    subs = getattr(layer, "layers", None)
    if subs is None:
        subs = getattr(layer, "_layers", None) or []
    return list(subs)


def _walk(root: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` for every layer under ``root``, depth first, in tracking order."""
    for sub in _sublayers(root):
        path = f"{prefix}{sub.name}"
        yield path, sub
        yield from _walk(sub, path + "/")


def layer_path(model: Any, layer: Any) -> str:
    """``"outer/inner/dense"``: where ``layer`` sits in ``model``."""
    for path, sub in _walk(model):
        if sub is layer:
            return path
    return layer.name


def _producer(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def output_layers(model: Any) -> list | None:
    """The ``Dense`` layers producing ``model.outputs`` (through element-wise layers), from the graph.

    ``None`` when the model has no graph (a subclassed model); a layer that
    is not a ``Dense`` (found before any ``Dense``) is listed as it is.
    """
    try:
        outputs = model.outputs
    except Exception:  # noqa: BLE001 - an unbuilt Sequential, a subclassed model: no graph to read
        return None
    if not outputs:
        return None
    found: list = []
    todo = list(keras.tree.flatten(outputs))
    while todo:
        op = _producer(todo.pop())
        while op is not None and type(op).__name__ in ELEMENTWISE_LAYERS:
            ins = keras.tree.flatten(getattr(op, "input", None)) if _single_node(op) else []
            op = _producer(ins[0]) if len(ins) == 1 else None
        if isinstance(op, keras.Model):
            inner = output_layers(op)
            found.extend(inner or [op])
        elif op is not None and not any(op is f for f in found):
            found.append(op)
    return found


def _single_node(layer: Any) -> bool:
    return len(getattr(layer, "_inbound_nodes", []) or []) <= 1


def find_target_layer(model: Any, layer: Any = None) -> Any:
    """The layer LIP refines.

    ``None``: the ``Dense`` layer producing the model's output (through
    element-wise layers such as ``Softmax`` or ``Activation``), read from the
    graph of a functional or Sequential model (nested models followed); for a
    subclassed model, which has no graph, the last ``Dense`` in tracking order
    (and :func:`check_output_layer` refuses it on the first batch when it is
    not the output layer). A ``str``: the layer of that name (or
    ``"outer/inner"`` path) anywhere in the model; a layer object: itself,
    which must belong to the model. A graph model's named layer must be its
    output layer, and a layer called twice (two inputs) is refused.
    """
    if not isinstance(model, keras.Model):
        raise OptionTypeError(f"LIP needs a keras.Model; got {type(model).__name__}")
    found = list(_walk(model))
    chosen = _find(model, layer, found)
    if not _single_node(chosen):
        raise DataError(f"layer {chosen.name!r} is called {len(chosen._inbound_nodes)} times in the model (shared by "
                        "several inputs); LIP needs a layer applied exactly once")
    outs = output_layers(model) if isinstance(chosen, keras.layers.Dense) else None  # check_refinable says why not
    if outs is not None and not any(chosen is o for o in outs):
        named = ", ".join(repr(layer_path(model, o)) for o in outs)
        raise DataError(f"layer {layer_path(model, chosen)!r} does not produce the model's output (the output comes "
                        f"from {named}); refitting a hidden layer against the labels rewrites what the layers after "
                        "it read: LIP refits the output layer")
    return chosen


def _find(model: Any, layer: Any, found: list) -> Any:
    if layer is None:
        outs = output_layers(model)
        if outs is not None:
            dense = [o for o in outs if isinstance(o, keras.layers.Dense)]
            if len(dense) == 1:
                return dense[0]
            if len(dense) > 1:
                names = [layer_path(model, o) for o in dense]
                raise OptionError(f"model {model.name!r} has {len(dense)} output Dense layers {names}; "
                                  "pass layer= to say which")
            if any(isinstance(sub, keras.layers.Dense) for _, sub in found):
                kinds = sorted({type(o).__name__ for o in outs})
                raise OptionError(f"model {model.name!r}'s output does not come from a keras.layers.Dense (it comes "
                                  f"from {', '.join(kinds)}); pass layer= explicitly")
        dense = [sub for _, sub in found if isinstance(sub, keras.layers.Dense)]
        if not dense:
            kinds = sorted({type(sub).__name__ for _, sub in found})
            raise OptionError(
                f"model {model.name!r} has no keras.layers.Dense layer to refine (its layers: "
                f"{', '.join(kinds) or 'none'}); pass layer= explicitly"
            )
        return dense[-1]
    if isinstance(layer, str):
        for path, sub in found:
            if layer in (path, sub.name):
                return sub
        names = [path for path, _ in found]
        raise OptionError(f"model {model.name!r} has no layer named {layer!r}; its layers: {names}")
    if not isinstance(layer, keras.layers.Layer):
        raise OptionTypeError(f"layer must be None, a layer name or a keras layer; got {type(layer).__name__}")
    if not any(sub is layer for _, sub in found):
        raise OptionError(f"layer {layer.name!r} is not part of model {model.name!r}")
    return layer


def check_refinable(layer: Any, require_built: bool = True) -> tuple[int, int] | None:
    """Refuse layers whose kernel LIP cannot rewrite; return the kernel shape ``(q, l)``.

    With ``require_built=False`` an unbuilt layer (a subclassed model before
    its first step) passes the type checks and gives ``None``.
    """
    if not isinstance(layer, keras.layers.Dense):
        raise DataTypeError(
            f"LIP refines a Dense layer (2-D kernel, features x classes); layer {layer.name!r} "
            f"is a {type(layer).__name__}"
        )
    if getattr(layer, "lora_enabled", False):
        raise DataError(
            f"layer {layer.name!r} has LoRA enabled: its kernel is the frozen base plus "
            "lora_kernel_a @ lora_kernel_b and cannot be assigned; copy the merged `layer.kernel` "
            "into a plain Dense first"
        )
    mode = getattr(layer, "quantization_mode", None)
    if mode is not None:
        raise DataError(
            f"layer {layer.name!r} is quantized ({mode!r}): its kernel is stored as "
            "quantized integers with scales and cannot be assigned; apply LIP before quantizing"
        )
    if not layer.built:
        if not require_built:
            return None
        raise DataError(f"layer {layer.name!r} is not built yet: call the model on data (or fit) first")
    shape = tuple(layer.kernel.shape)
    if len(shape) != 2:
        raise DataError(f"layer {layer.name!r} kernel must be 2-D (features, classes); got shape {shape}")
    return int(shape[0]), int(shape[1])


class _FeatureTap(keras.Model):
    """Model that runs ``source`` and returns what ``target`` received (subclassed models).

    The target's ``call`` is wrapped for the duration of one forward pass,
    which also works inside a traced ``tf.function`` (the tap records the
    symbolic tensor during tracing).
    """

    def __init__(self, source: keras.Model, target: keras.layers.Layer) -> None:
        super().__init__(name=f"lip_features_{source.name}")
        self._source = source
        self._target = target

    def call(self, inputs: Any) -> Any:
        seen: list = []
        target = self._target
        original = type(target).call.__get__(target)
        had_own = "call" in vars(target)
        own = vars(target).get("call")

        def tap(x: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(x)
            return (own or original)(x, *args, **kwargs)

        object.__setattr__(target, "call", tap)
        try:
            self._source(inputs, training=False)
        finally:
            if had_own:
                object.__setattr__(target, "call", own)
            else:
                object.__delattr__(target, "call")
        if len(seen) != 1:
            raise DataError(
                f"layer {target.name!r} was called {len(seen)} times in one forward pass of "
                f"{self._source.name!r}; LIP needs a layer applied exactly once"
            )
        return seen[0]


class FeatureExtractor:
    """``features(x_batch) -> np.ndarray (n_b, q)``: the target layer's input, inference mode.

    Functional and Sequential models get a pruned graph ``inputs -> layer.input``;
    subclassed models (or layers nested out of the graph's reach) a
    :class:`_FeatureTap`. Both run through ``predict_on_batch``, so the
    forward pass is compiled (``tf.function``) and gradient-free on every backend.
    """

    def __init__(self, model: keras.Model, layer: keras.layers.Layer, q: int) -> None:
        self.q = q
        self.layer = layer
        self.kind = "graph"
        try:
            self._model = keras.Model(model.input, layer.input)
        except (AttributeError, ValueError, TypeError, KeyError):
            self.kind = "tap"
            self._model = _FeatureTap(model, layer)

    def __call__(self, x: Any) -> np.ndarray:
        out = self._model.predict_on_batch(x)
        if isinstance(out, (list, tuple, dict)):
            raise DataError(f"layer {self.layer.name!r} takes several inputs; LIP needs one (n, q) feature matrix")
        feats = np.asarray(keras.ops.convert_to_numpy(out))
        if feats.ndim != 2 or feats.shape[1] != self.q:
            raise DataError(
                f"layer {self.layer.name!r} receives inputs of shape {feats.shape}; LIP needs "
                f"(batch, {self.q}) features (flatten or pool before the classifier)"
            )
        return feats


def _same_order(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``b`` is an increasing function of ``a``, row by row (one column: down the column)."""
    if a.shape != b.shape or a.ndim != 2:
        return False
    if np.array_equal(a, b):
        return True
    if a.shape[1] == 1:
        a, b = a.T, b.T
    return bool(np.array_equal(np.argsort(a, axis=1, kind="stable"), np.argsort(b, axis=1, kind="stable")))


def check_output_layer(model: Any, layer: Any, x: Any, path: str) -> None:
    """Refuse ``layer`` when, on the batch ``x``, the model's output is not the layer's (through element-wise ops).

    Steps
    -----
    1. Run the model once in inference mode with the ``call`` of every
       ``Dense`` in it tapped, keeping what each one returned.
    2. ``layer`` must have run once, and one of the model's outputs must
       order every row's logits as ``layer``'s output does (an increasing
       element-wise map or a softmax keeps that order; a later ``Dense`` does not).

    Raises
    ------
    DataError
        The layer did not run, ran twice, or is not the output layer (the
        message names the ``Dense`` layers whose output is the model's).
    """
    dense = [sub for _, sub in _walk(model) if isinstance(sub, keras.layers.Dense)]
    seen: dict[int, list] = {id(d): [] for d in dense}
    saved = []
    for d in dense:
        own = vars(d).get("call")
        original = own or type(d).call.__get__(d)

        def tap(*args: Any, _d: Any = d, _f: Any = original, **kwargs: Any) -> Any:
            out = _f(*args, **kwargs)
            seen[id(_d)].append(out)
            return out

        saved.append((d, own))
        object.__setattr__(d, "call", tap)
    try:
        out = model(x, training=False)
    finally:
        for d, own in saved:
            if own is not None:
                object.__setattr__(d, "call", own)
            else:
                object.__delattr__(d, "call")
    outs = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(out)]
    calls = seen[id(layer)]
    if len(calls) != 1:
        raise DataError(f"layer {path!r} ran {len(calls)} times in one forward pass; LIP needs the output layer, "
                        "applied exactly once")

    def is_output(d: Any) -> bool:
        got = seen[id(d)]
        return len(got) == 1 and any(_same_order(np.asarray(keras.ops.convert_to_numpy(got[0])), o) for o in outs)

    if not is_output(layer):
        named = [layer_path(model, d) for d in dense if d is not layer and is_output(d)]
        hint = f"the output comes from {', '.join(map(repr, named))}" if named else "no Dense layer's output is the model's"
        raise DataError(f"layer {path!r} does not produce the model's output ({hint}); refitting a hidden layer "
                        "against the labels rewrites what the layers after it read: pass layer= the output layer")


FeatureFn = Callable[[Any], np.ndarray]
