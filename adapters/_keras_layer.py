"""Keras side of LIP: find the classifier layer, check it can be refined, extract its input features.

Private helper of :mod:`lip_agnostic.adapters.keras`. No math lives here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import keras
import numpy as np

__all__ = ["find_target_layer", "check_refinable", "FeatureExtractor", "layer_path"]


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


def find_target_layer(model: Any, layer: Any = None) -> Any:
    """The layer LIP refines.

    ``None``: the model's final ``keras.layers.Dense`` (the last one in
    tracking order, searching nested models too); a ``str``: the layer of that
    name (or ``"outer/inner"`` path) anywhere in the model; a layer object:
    itself, which must belong to the model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"LIP needs a keras.Model; got {type(model).__name__}")
    found = list(_walk(model))
    if layer is None:
        dense = [sub for _, sub in found if isinstance(sub, keras.layers.Dense)]
        if not dense:
            kinds = sorted({type(sub).__name__ for _, sub in found})
            raise ValueError(
                f"model {model.name!r} has no keras.layers.Dense layer to refine (its layers: "
                f"{', '.join(kinds) or 'none'}); pass layer= explicitly"
            )
        return dense[-1]
    if isinstance(layer, str):
        for path, sub in found:
            if layer in (path, sub.name):
                return sub
        names = [path for path, _ in found]
        raise ValueError(f"model {model.name!r} has no layer named {layer!r}; its layers: {names}")
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"layer must be None, a layer name or a keras layer; got {type(layer).__name__}")
    if not any(sub is layer for _, sub in found):
        raise ValueError(f"layer {layer.name!r} is not part of model {model.name!r}")
    return layer


def check_refinable(layer: Any, require_built: bool = True) -> tuple[int, int] | None:
    """Refuse layers whose kernel LIP cannot rewrite; return the kernel shape ``(q, l)``.

    With ``require_built=False`` an unbuilt layer (a subclassed model before
    its first step) passes the type checks and gives ``None``.
    """
    if not isinstance(layer, keras.layers.Dense):
        raise TypeError(
            f"LIP refines a Dense layer (2-D kernel, features x classes); layer {layer.name!r} "
            f"is a {type(layer).__name__}"
        )
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"layer {layer.name!r} has LoRA enabled: its kernel is the frozen base plus "
            "lora_kernel_a @ lora_kernel_b and cannot be assigned; copy the merged `layer.kernel` "
            "into a plain Dense first"
        )
    mode = getattr(layer, "quantization_mode", None)
    if mode is not None:
        raise ValueError(
            f"layer {layer.name!r} is quantized ({mode!r}): its kernel is stored as "
            "quantized integers with scales and cannot be assigned; apply LIP before quantizing"
        )
    if not layer.built:
        if not require_built:
            return None
        raise ValueError(f"layer {layer.name!r} is not built yet: call the model on data (or fit) first")
    shape = tuple(layer.kernel.shape)
    if len(shape) != 2:
        raise ValueError(f"layer {layer.name!r} kernel must be 2-D (features, classes); got shape {shape}")
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
            raise ValueError(
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
            raise ValueError(f"layer {self.layer.name!r} takes several inputs; LIP needs one (n, q) feature matrix")
        feats = np.asarray(keras.ops.convert_to_numpy(out))
        if feats.ndim != 2 or feats.shape[1] != self.q:
            raise ValueError(
                f"layer {self.layer.name!r} receives inputs of shape {feats.shape}; LIP needs "
                f"(batch, {self.q}) features (flatten or pool before the classifier)"
            )
        return feats


FeatureFn = Callable[[Any], np.ndarray]
