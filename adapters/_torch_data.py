"""PyTorch plumbing for the LIP adapter: find the model, unpack batches, capture features.

Nothing here does LIP math; it only turns a model plus a loader into the
``(features, labels)`` stream the core (:func:`lip_agnostic.refine_batches`)
consumes.
"""

from __future__ import annotations

import gc
from typing import Any, Iterable, Iterator

import torch
from torch import nn

__all__ = [
    "INPUT_KEYS",
    "LABEL_KEYS",
    "check_classifier",
    "find_model",
    "unwrap_model",
    "unpack_batch",
    "FeatureCapture",
    "feature_batches",
    "module_modes",
    "restore_modes",
]

#: Keys tried, in order, for the model input of a dict batch when ``input_key`` is not given.
INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "features", "data")
#: Keys tried, in order, for the labels of a dict batch when ``label_key`` is not given.
LABEL_KEYS = ("y", "label", "labels", "target", "targets")


def check_classifier(classifier: Any) -> nn.Linear:
    """Validate that ``classifier`` is an ``nn.Linear`` whose weight can be rewritten in place.

    Raises
    ------
    TypeError
        Not an ``nn.Linear``, a still-uninitialized lazy layer, or a
        parametrized weight (``weight_norm`` and the like: there is no plain
        tensor to write ``W*`` into).
    ValueError
        The weight is not 2-D ``(l, q)``, or holds NaN/Inf.
    """
    if not isinstance(classifier, nn.Linear):
        raise TypeError(
            "classifier must be a torch.nn.Linear layer (the model's final linear layer); "
            f"got {type(classifier).__module__}.{type(classifier).__name__}"
        )
    weight = classifier.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise TypeError("classifier is a LazyLinear that has not run yet: do one forward pass first")
    if nn.utils.parametrize.is_parametrized(classifier, "weight"):
        raise TypeError(
            "classifier.weight is parametrized (e.g. weight_norm / spectral_norm); "
            "LIP needs a plain weight tensor to rewrite: remove the parametrization first"
        )
    if weight.ndim != 2:
        raise ValueError(
            f"classifier.weight must be 2-D (l classes, q features); got shape {tuple(weight.shape)}"
        )
    if not torch.is_floating_point(weight):
        raise TypeError(f"classifier.weight must be floating point; got {weight.dtype}")
    with torch.no_grad():
        bad = int((~torch.isfinite(weight)).sum())
    if bad:
        raise ValueError(
            f"classifier.weight contains {bad} NaN/Inf value(s) (shape {tuple(weight.shape)}); "
            "LIP cannot refine a diverged layer"
        )
    return classifier


def unwrap_model(model: nn.Module) -> nn.Module:
    """Peel ``torch.compile`` and (Distributed)DataParallel wrappers off a model.

    The finalize pass runs the plain module: no recompilation for eval mode
    and hooks, and no DDP collectives (ranks may hold different numbers of
    batches). Parameters are shared, so nothing is lost.
    """
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
            continue
        return model


def find_model(classifier: nn.Module) -> nn.Module:
    """The outermost module that contains ``classifier`` (wrappers peeled off).

    Steps
    -----
    1. Collect every live ``nn.Module`` and map each child to its parents.
    2. Walk up from ``classifier`` to the modules nobody contains (roots).
    3. Peel ``torch.compile``/DDP wrappers off each root; exactly one model
       must remain, else the caller has to say which one (``model=``).

    Raises
    ------
    ValueError
        The classifier is not inside any module, or inside several models.
    """
    def roots() -> list[nn.Module]:
        parents: dict[int, list[nn.Module]] = {}
        for obj in gc.get_objects():
            if issubclass(type(obj), nn.Module):  # type(): some lazy objects warn on __class__
                for child in obj.__dict__.get("_modules", {}).values():
                    if child is not None:
                        parents.setdefault(id(child), []).append(obj)
        found: dict[int, nn.Module] = {}
        todo, seen = [classifier], set()
        while todo:
            mod = todo.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            ups = parents.get(id(mod), [])
            if not ups and mod is not classifier:
                found[id(mod)] = mod
            todo.extend(ups)
        unique: dict[int, nn.Module] = {}
        for mod in found.values():
            inner = unwrap_model(mod)
            unique[id(inner)] = inner
        return list(unique.values())

    models = roots()
    if len(models) > 1:
        gc.collect()  # drop dead containers before calling it ambiguous
        models = roots()
    if not models:
        raise ValueError(
            "could not find a model that contains the classifier (it is not a submodule of any "
            "live nn.Module); pass model=... explicitly"
        )
    if len(models) > 1:
        names = ", ".join(type(m).__name__ for m in models)
        raise ValueError(
            f"the classifier belongs to {len(models)} different models ({names}); "
            "pass model=... to say which one to run"
        )
    return models[0]


def unpack_batch(batch: Any, input_key: str | None, label_key: str | None) -> tuple[Any, Any]:
    """Split a loader item into ``(model input, labels)``.

    Accepts ``(x, y, ...)`` tuples/lists (extra items are ignored) and dicts
    (``input_key``/``label_key``, or the first of :data:`INPUT_KEYS` /
    :data:`LABEL_KEYS` present).

    Raises
    ------
    ValueError
        The item carries no labels (a bare tensor, a 1-tuple, a dict without
        a label key) or a named key is missing.
    """
    if isinstance(batch, dict):
        keys = list(batch.keys())
        xk = input_key if input_key is not None else next((k for k in INPUT_KEYS if k in batch), None)
        yk = label_key if label_key is not None else next((k for k in LABEL_KEYS if k in batch), None)
        if yk is None or yk not in batch:
            raise ValueError(
                f"a dict batch has no labels: label_key={label_key!r} not among its keys {keys} "
                f"(tried {list(LABEL_KEYS) if label_key is None else [label_key]}); pass label_key=..."
            )
        if xk is None or xk not in batch:
            raise ValueError(
                f"a dict batch has no model input: input_key={input_key!r} not among its keys {keys} "
                f"(tried {list(INPUT_KEYS) if input_key is None else [input_key]}); pass input_key=..."
            )
        return batch[xk], batch[yk]
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise ValueError(
                f"a batch must be (inputs, labels, ...); got a {type(batch).__name__} of length {len(batch)}"
            )
        return batch[0], batch[1]
    raise ValueError(
        f"a batch must be an (inputs, labels) tuple or a dict with a label key; got "
        f"{type(batch).__name__}{' of shape ' + str(tuple(batch.shape)) if hasattr(batch, 'shape') else ''} "
        "(the loader yields no labels)"
    )


class FeatureCapture:
    """A forward hook on the classifier that keeps the inputs of its last call."""

    def __init__(self, classifier: nn.Module) -> None:
        self.calls: list[torch.Tensor] = []
        self._handle = classifier.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError("the classifier was called without a tensor input; cannot capture features")
        self.calls.append(args[0].detach())

    def take(self) -> torch.Tensor:
        """The features of the one classifier call since the last :meth:`take`."""
        calls, self.calls = self.calls, []
        if len(calls) != 1:
            raise ValueError(
                f"the classifier ran {len(calls)} times in one forward pass; LIP needs exactly one call "
                "per batch (its inputs are the penultimate features)"
            )
        return calls[0]

    def remove(self) -> None:
        self._handle.remove()


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=device.type == "cuda")  # host->GPU only: safe without a sync
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    return x


def _as_labels(y: Any, device: torch.device) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(y)
        except Exception as exc:
            raise TypeError(f"labels must be a tensor or array-like; got {type(y).__name__} ({exc})") from None
    return y.to(device, non_blocking=device.type == "cuda")


def _rows(features: torch.Tensor, labels: torch.Tensor, l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten leading dims: features ``(..., q)`` -> ``(n, q)``, labels ``(...)``/``(..., l)`` -> rows."""
    if features.ndim < 2:
        raise ValueError(
            f"the classifier's input must be batched (n, q); got shape {tuple(features.shape)}"
        )
    lead = tuple(features.shape[:-1])
    if features.ndim > 2:
        features = features.reshape(-1, features.shape[-1])
        if tuple(labels.shape) == lead:
            labels = labels.reshape(-1)
        elif tuple(labels.shape) == lead + (l,):
            labels = labels.reshape(-1, l)
        else:
            raise ValueError(
                f"classifier inputs have shape {lead + (features.shape[-1],)} but labels have shape "
                f"{tuple(labels.shape)}; expected {lead} or {lead + (l,)}"
            )
    return features, labels


def feature_batches(
    model: nn.Module,
    capture: FeatureCapture,
    loader: Iterable,
    *,
    l: int,
    device: torch.device,
    input_key: str | None,
    label_key: str | None,
    progress: bool,
    desc: str,
    counts: dict,
    chunk_rows: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(features (n, q), labels)`` from one no-grad forward per loader item.

    With ``chunk_rows > 0`` consecutive batches are concatenated until they
    hold at least that many rows (memory stays ``O(chunk_rows * q)``; the
    core's per-call overhead is paid per chunk, not per small batch). Row
    order is kept, so the core's hold-out split sees the same rows.
    ``counts`` gets ``batches`` and ``samples`` added up as the stream is consumed.
    """
    from tqdm.auto import tqdm

    total = len(loader) if hasattr(loader, "__len__") else None
    held_x: list[torch.Tensor] = []
    held_y: list[torch.Tensor] = []
    rows = 0

    def flush() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal rows
        if len({y.ndim for y in held_y}) > 1:
            raise ValueError("the loader mixes integer labels (n,) and target matrices (n, l) across batches")
        out = (held_x[0], held_y[0]) if len(held_x) == 1 else (torch.cat(held_x), torch.cat(held_y))
        held_x.clear()
        held_y.clear()
        rows = 0
        return out

    with tqdm(loader, total=total, desc=desc, disable=not progress, leave=False, unit="batch") as bar:
        for batch in bar:
            x, y = unpack_batch(batch, input_key, label_key)
            with torch.no_grad():
                model(_to_device(x, device))
            features = capture.take()
            features, labels = _rows(features, _as_labels(y, features.device), l)
            counts["batches"] = counts.get("batches", 0) + 1
            counts["samples"] = counts.get("samples", 0) + int(features.shape[0])
            held_x.append(features)
            held_y.append(labels)
            rows += int(features.shape[0])
            if rows >= chunk_rows:
                yield flush()
    if held_x:
        yield flush()


def module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule with its current ``training`` flag."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags saved by :func:`module_modes` (per module, not one global switch)."""
    for m, flag in modes:
        m.training = flag
