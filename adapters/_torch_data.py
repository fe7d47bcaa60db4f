"""PyTorch plumbing shared by the torch-based faces (PyTorch, Transformers, Lightning).

Nothing here does LIP math; it turns a model plus a loader into the
``(features, labels)`` stream the core (:func:`lip_agnostic.refine_batches`)
consumes, and writes the core's ``W*`` back into the layer
(:func:`finalize_layer`, the one finalize pass every torch face runs).
"""

from __future__ import annotations

import sys

import gc
import time
from typing import Any, Callable, Iterable, Iterator, Literal

import torch
from torch import nn

from lip_agnostic.errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError

from ._face import Replayed, check_replayable, check_selection_use, reads_twice, shuffler, with_rows

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
    "DEFAULT_CHUNK_ROWS",
    "check_rank",
    "check_bias_mode",
    "check_lip_options",
    "ddp_all_reduce",
    "distributed",
    "resolve_all_reduce",
    "finalize_layer",
    "in_order",
    "REPLAY_HINT",
    "callback_settings",
    "check_callback_head",
    "callback_repr",
    "check_output_layer",
    "check_not_shared",
    "hidden_layer_ops",
    "with_context",
]

Rank = int | float | str
AllReduceArg = Callable[[torch.Tensor], torch.Tensor] | Literal["auto"] | None
#: Rows per chunk handed to the core by a finalize pass (features are buffered up to this many rows).
DEFAULT_CHUNK_ROWS = 4096

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
        raise DataTypeError(
            "classifier must be a torch.nn.Linear layer (the model's final linear layer); "
            f"got {type(classifier).__module__}.{type(classifier).__name__}"
        )
    weight = classifier.weight
    if weight is None:
        raise DataError("classifier.weight is None: the layer has no weight to refine")
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise DataTypeError("classifier is a LazyLinear that has not run yet: do one forward pass first")
    if nn.utils.parametrize.is_parametrized(classifier, "weight"):
        raise DataTypeError(
            "classifier.weight is parametrized (e.g. weight_norm / spectral_norm); "
            "LIP needs a plain weight tensor to rewrite: remove the parametrization first"
        )
    if weight.is_meta:
        raise DataError(
            "classifier.weight is on the meta device (shapes only, no values: built under device='meta' or "
            "init_empty_weights); load the trained weights first (model.to_empty(device=...), load_state_dict)")
    if weight.ndim != 2:
        raise DataError(
            f"classifier.weight must be 2-D (l classes, q features); got shape {tuple(weight.shape)}"
        )
    if not torch.is_floating_point(weight):
        raise DataTypeError(f"classifier.weight must be floating point; got {weight.dtype}")
    with torch.no_grad():
        bad = int((~torch.isfinite(weight)).sum())
    if bad:
        raise NonFiniteError(
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
    DataError
        The classifier is not inside any module, inside several models, or
        its outermost module has no ``forward`` (a ``ModuleList`` holding the
        model): the caller has to say which model to run (``model=``).
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
        raise DataError(
            "could not find a model that contains the classifier (it is not a submodule of any "
            "live nn.Module); pass model=... explicitly"
        )
    if len(models) > 1:
        names = ", ".join(type(m).__name__ for m in models)
        raise DataError(
            f"the classifier belongs to {len(models)} different models ({names}); "
            "pass model=... to say which one to run"
        )
    model = models[0]
    if type(model).forward is nn.Module.forward:  # ModuleList, ModuleDict, a bare container: nothing to run
        raise DataError(
            f"the outermost module holding the classifier is a {type(model).__name__}, which has no forward "
            "(is your model also stored in a container?); pass model=<your model> to say which one to run")
    return model


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
            raise DataError(
                f"a dict batch has no labels: label_key={label_key!r} not among its keys {keys} "
                f"(tried {list(LABEL_KEYS) if label_key is None else [label_key]}); pass label_key=..."
            )
        if xk is None or xk not in batch:
            raise DataError(
                f"a dict batch has no model input: input_key={input_key!r} not among its keys {keys} "
                f"(tried {list(INPUT_KEYS) if input_key is None else [input_key]}); pass input_key=..."
            )
        return batch[xk], batch[yk]
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise DataError(
                f"a batch must be (inputs, labels, ...); got a {type(batch).__name__} of length {len(batch)}"
            )
        return batch[0], batch[1]
    raise DataError(
        f"a batch must be an (inputs, labels) tuple or a dict with a label key; got "
        f"{type(batch).__name__}{' of shape ' + str(tuple(batch.shape)) if hasattr(batch, 'shape') else ''} "
        "(the loader yields no labels)"
    )


#: Autograd nodes that keep each logit apart (element-wise maps, casts, reshapes) or mix one row's
#: logits only (softmax): the model's output may reach the classifier through these and nothing else.
ELEMENTWISE_OPS = frozenset({
    "Softmax", "LogSoftmax", "Sigmoid", "LogSigmoid", "Tanh", "Relu", "Gelu", "Silu", "Elu", "LeakyRelu",
    "Hardtanh", "Hardsigmoid", "Hardswish", "Softplus", "Mish", "Exp", "Log", "Neg", "Abs", "Clamp", "Clamp_min",
    "Clamp_max", "Pow", "Sqrt", "Mul", "Div", "Add", "Sub", "Clone", "ToCopy", "View", "UnsafeView", "Reshape",
    "ReshapeAlias", "Squeeze", "Unsqueeze", "Alias", "Expand", "Contiguous", "Float", "Half", "Type", "Copy",
    "Where", "NanToNum", "Sign", "Reciprocal", "Rsub", "MaskedFill", "Threshold",
    # moving logits without mixing them: concatenated heads, slices, transposes
    "Cat", "Stack", "Permute", "Transpose", "T", "Select", "Slice", "Split", "SplitWithSizes", "Unbind",
})


def _op_name(node: Any) -> str:
    """``"Softmax"`` for ``SoftmaxBackward0`` (the autograd node's op)."""
    name = type(node).__name__
    name = name.split("Backward")[0]
    return name[:-1] if name.endswith("_") else name


def _output_tensors(out: Any) -> list[torch.Tensor]:
    """Every non-scalar floating tensor in a model's output (tuples, lists, dicts, ``ModelOutput``)."""
    found: list[torch.Tensor] = []
    todo = [out]
    while todo:
        x = todo.pop()
        if isinstance(x, torch.Tensor):
            if x.ndim > 0 and torch.is_floating_point(x):
                found.append(x)
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, (tuple, list)):
            todo.extend(x)
    return found


def hidden_layer_ops(out: Any, marker: Any) -> tuple[bool, list[str]]:
    """Whether any output depends on ``marker`` (an autograd node) and the non-element-wise ops on the way.

    Steps
    -----
    1. From each output tensor, walk its autograd graph backwards.
    2. A node *reaches* the marker when one of its inputs is the marker or
       reaches it (memoized, iterative: deep graphs do not recurse).
    3. The ops of the nodes that reach the marker, not in
       :data:`ELEMENTWISE_OPS`, are what stands between the classifier and
       the output (a ``Linear``: ``Addmm``; a convolution; a reduction).
    """
    reach: dict[int, bool] = {id(marker): True}
    bad: set[str] = set()
    hit = False
    for t in _output_tensors(out):
        root = t.grad_fn
        if root is None:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            key = id(node)
            if key in reach and not expanded:
                continue
            kids = [n for n, _ in node.next_functions if n is not None]
            if not expanded:
                stack.append((node, True))
                stack.extend((k, False) for k in kids if id(k) not in reach)
                continue
            reach[key] = any(reach.get(id(k), False) for k in kids)
            if reach[key] and _op_name(node) not in ELEMENTWISE_OPS:
                bad.add(_op_name(node))
        hit = hit or reach.get(id(root), False)
    return hit, sorted(bad)


class FeatureCapture:
    """A forward hook on the classifier that keeps the inputs of its last call.

    With :meth:`probe` armed, the next call's output is passed on through a
    marker autograd node (same values), so :func:`hidden_layer_ops` can tell
    whether the model's output is the classifier's (through element-wise ops).
    """

    def __init__(self, classifier: nn.Module) -> None:
        self.calls: list[torch.Tensor] = []
        self.marker: Any = None
        self._probe = False
        self._handle = classifier.register_forward_hook(self._hook)

    def probe(self) -> None:
        """Mark the next call's output (run that forward pass with gradients enabled)."""
        self._probe = True
        self.marker = None

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not args or not isinstance(args[0], torch.Tensor):
            raise DataTypeError("the classifier was called without a tensor input; cannot capture features")
        self.calls.append(args[0].detach())
        if self._probe and isinstance(output, torch.Tensor) and torch.is_floating_point(output):
            self._probe = False
            zero = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
            marked = output.detach() + zero  # a non-leaf node: in-place ops after the layer still work
            self.marker = marked.grad_fn
            return marked
        return None

    def take(self) -> torch.Tensor:
        """The features of the one classifier call since the last :meth:`take`."""
        calls, self.calls = self.calls, []
        if len(calls) != 1:
            raise DataError(
                f"the classifier ran {len(calls)} times in one forward pass; LIP needs exactly one call "
                "per batch (its inputs are the penultimate features)"
            )
        return calls[0]

    def remove(self) -> None:
        self._handle.remove()


def _to_device(x: Any, device: torch.device) -> Any:
    if type(x).__module__ == "numpy" and hasattr(x, "dtype"):  # a NumPy batch: what the model takes is a tensor
        x = torch.as_tensor(x)
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
            raise DataTypeError(f"labels must be a tensor or array-like; got {type(y).__name__} ({exc})") from None
    return y.to(device, non_blocking=device.type == "cuda")


def _rows(features: torch.Tensor, labels: torch.Tensor, l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten leading dims: features ``(..., q)`` -> ``(n, q)``, labels ``(...)``/``(..., l)`` -> rows."""
    if features.ndim < 2:
        raise DataError(
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
            raise DataError(
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
    unpack: Callable[[Any], tuple[Any, Any]] | None = None,
    call: Callable[[nn.Module, Any], Any] | None = None,
    select: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    check_output: Callable[[Any, Any], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(features (n, q), labels)`` from one no-grad forward per loader item.

    ``check_output(model_output, marker)``, when given, is called once, on
    the first batch, whose forward pass then runs with gradients enabled and
    the classifier's output marked (:meth:`FeatureCapture.probe`), so it can
    check that the model's output comes from the classifier.

    ``unpack(batch) -> (inputs, labels)`` (default :func:`unpack_batch`),
    ``call(model, inputs)`` (default ``model(inputs)``) and
    ``select(features, labels) -> (features, labels)`` (rows to keep, before
    flattening) let a face adapt its framework's batch conventions.

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
            raise DataError("the loader mixes integer labels (n,) and target matrices (n, l) across batches")
        out = (held_x[0], held_y[0]) if len(held_x) == 1 else (torch.cat(held_x), torch.cat(held_y))
        held_x.clear()
        held_y.clear()
        rows = 0
        return out

    with tqdm(loader, total=total, desc=desc, disable=not progress, leave=False, unit="batch") as bar:
        for batch in bar:
            x, y = unpack_batch(batch, input_key, label_key) if unpack is None else unpack(batch)
            first, check_output = check_output, None
            if first is not None:
                capture.probe()
            with torch.no_grad() if first is None else torch.enable_grad():
                out = model(_to_device(x, device)) if call is None else call(model, _to_device(x, device))
            if first is not None:
                first(out, capture.marker)
            del out
            features = capture.take()
            labels = _as_labels(y, features.device)
            if select is not None:
                features, labels = select(features, labels)
            features, labels = _rows(features, labels, l)
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


# --------------------------------------------------------------------------- checks shared by the torch faces
def check_rank(rank: Any, weight: torch.Tensor, name: str = "rank") -> Rank:
    """Validate ``rank`` now (not after training) with the core's one parser
    (:func:`lip_agnostic.options.parse_rank`): ``"auto"``, an int in ``[0, m]`` or a fraction in (0, 1]."""
    from lip_agnostic.options import parse_rank

    return parse_rank(rank, min(int(d) for d in weight.shape), name=name)


def check_bias_mode(bias_mode: Any, name: str = "bias_mode") -> str:
    """``"fit"`` (fit against ``Y - 1 b^T``) or ``"ignore"`` (the paper's fit), by the core's parser."""
    from lip_agnostic.options import parse_bias_mode

    return parse_bias_mode(bias_mode, name=name)


def check_lip_options(options: dict, weight: torch.Tensor, rank: Rank = 2, bias: Any = None, *,
                      reserved: dict, face: str, combine: bool = True) -> dict:
    """Reject unknown or face-owned keywords, and have the core parse the values now.

    Steps
    -----
    1. The names (and every value, by the core's one parser) are checked by
       the faces' one checker, :func:`lip_agnostic.adapters._face.face_options`.
    2. The options together with ``rank`` are built into the core's
       :class:`lip_agnostic.LIPOptions` , so a bad combination
       (a ridge with the paper's tail, ``degenerate="keep"`` with the full
       tail, ...) fails at construction with the core's own message, not after
       training. Nothing runs and the layer is not touched.
    """
    from lip_agnostic.options import OPTION_NAMES, LIPOptions

    from ._face import face_options

    options = face_options(face=face, reserved=reserved, **options)
    if combine:
        LIPOptions(rank=rank, **{k: v for k, v in options.items() if k in OPTION_NAMES})
    return dict(options)


def _names(model: nn.Module, target: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is target), "") or type(target).__name__


def check_output_layer(model: nn.Module, classifier: nn.Linear, out: Any, marker: Any) -> None:
    """Refuse a classifier that is not the layer producing ``model``'s output (see :func:`hidden_layer_ops`).

    Raises
    ------
    DataError
        No output depends on the classifier, or one reaches it through a
        layer that mixes its outputs (another ``Linear``, a convolution...);
        the message names the classifier and the way out.
    """
    name = _names(model, classifier)
    if marker is None:
        raise DataError(f"the classifier {name!r} did not run on the first batch; LIP needs the layer the "
                        "model's output comes from")
    hit, ops = hidden_layer_ops(out, marker)
    if not hit:
        raise DataError(
            f"the model's output does not depend on the classifier {name!r} (an auxiliary or unused layer?); "
            "LIP refits the layer that produces the model's output")
    if ops:
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not classifier]
        hint = f" (its last Linear layer is {last[-1]!r})" if last else ""
        raise DataError(
            f"the classifier {name!r} is a hidden layer: the model's output reaches it through {', '.join(ops)}, "
            f"not element-wise ops only; refitting it against the labels would rewrite a hidden layer. Pass the "
            f"layer that produces the output{hint}, or allow_hidden_layer=True for a multi-head model's head")


def check_not_shared(model: nn.Module, classifier: nn.Linear) -> None:
    """Refuse a classifier whose weight or bias another module of ``model`` also holds (a tied head).

    Raises
    ------
    DataError
        The weight (or bias) is the same tensor as, or shares storage with,
        a parameter of another module (``lm_head`` tied to the embedding).
    """
    own = {"weight": classifier.weight, "bias": classifier.bias}
    ptrs = {k: (p.untyped_storage().data_ptr() if p is not None and p.device.type != "meta" else None)
            for k, p in own.items()}
    for mod_name, mod in model.named_modules():
        if mod is classifier:
            continue
        for pname, p in mod.named_parameters(recurse=False):
            for key, mine in own.items():
                if mine is None:
                    continue
                same = p is mine or (ptrs[key] not in (None, 0) and p.device.type != "meta"
                                     and p.untyped_storage().data_ptr() == ptrs[key])
                if same:
                    where = f"{mod_name}.{pname}" if mod_name else pname
                    raise DataError(
                        f"the classifier's {key} is shared with {where!r} (tied parameters): refitting it would "
                        f"change {where!r} too; untie them first (e.g. clone the {key} into its own Parameter)")


# --------------------------------------------------------------------------- what the trainer callbacks share
def callback_settings(cb: Any, rank: Any, head: Any, bias_mode: Any, validation: Any, lip_options: dict, *,
                      label_key: str | None, progress: bool, named_loader: str, face: str, reserved: dict) -> None:
    """Check and set the settings every trainer callback (Transformers, Lightning) has, at construction:
    ``cb.rank``, ``head``, ``bias_mode``, ``validation``, ``label_key``, ``progress``, ``lip_options``
    and ``result`` (None).

    ``validation`` is ``named_loader`` (the trainer's own held-out loader:
    ``"eval"``, ``"val"``), None or an iterable of batches; ``head`` a module
    name, an ``nn.Module`` or None. The rank's range is checked against the
    head when training starts (:func:`check_callback_head`).

    Raises
    ------
    OptionError, OptionTypeError
        The first bad setting.
    """
    from lip_agnostic.options import parse_rank

    rank = parse_rank(rank)
    if head is not None and not isinstance(head, (str, nn.Module)):
        raise OptionTypeError(f"head must be a module name, an nn.Linear of the model, or None; got {type(head).__name__}")
    if isinstance(validation, str) and validation != named_loader:
        raise OptionError(f"validation must be {named_loader!r}, None or an iterable of batches; got {validation!r}")
    if validation is not None and not isinstance(validation, str) and not hasattr(validation, "__iter__"):
        raise OptionTypeError(f"validation must be {named_loader!r}, None or an iterable of batches; "
                              f"got {type(validation).__name__}")
    options = check_lip_options(lip_options, torch.zeros(1, 1), reserved=reserved, face=face, combine=False)
    cb.rank, cb.head, cb.bias_mode, cb.validation = rank, head, check_bias_mode(bias_mode), validation
    cb.label_key, cb.progress, cb.lip_options, cb.result = label_key, (None if progress is None else bool(progress)), options, None


def check_callback_head(model: nn.Module, layer: nn.Linear, rank: Rank, bias_mode: str, lip_options: dict,
                        validation: Any, *, face: str, reserved: dict) -> None:
    """Before training: a head of its own (not tied), the selection rule, the rank against the head, and the
    options parsed by the core's LIPOptions."""
    check_not_shared(model, layer)
    check_selection_use(rank, lip_options, validation=validation is not None and not isinstance(validation, str))
    check_rank(rank, layer.weight)
    check_lip_options(lip_options, layer.weight, rank, layer.bias if bias_mode == "fit" else None,
                      reserved=reserved, face=face)


def callback_repr(cb: Any) -> str:
    """``LIPCallback(rank=..., head=..., bias_mode=..., validation=...)`` of a trainer callback."""
    val = cb.validation if isinstance(cb.validation, (str, type(None))) else "<batches>"
    return f"LIPCallback(rank={cb.rank!r}, head={cb.head!r}, bias_mode={cb.bias_mode!r}, validation={val!r})"


def ddp_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ``torch.distributed`` ranks (a copy; the input is left alone)."""
    import torch.distributed as dist

    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def distributed() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside an initialized process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_all_reduce(all_reduce: AllReduceArg) -> Callable | None:
    """``"auto"``: :func:`ddp_all_reduce` inside a process group of more than one rank, else ``None``."""
    if all_reduce == "auto":
        return ddp_all_reduce if distributed()[1] > 1 else None
    if all_reduce is None or callable(all_reduce):
        return all_reduce
    raise OptionTypeError(f"all_reduce must be 'auto', None or a callable summing a tensor over workers; got {all_reduce!r}")


def _has_items(loader: Iterable) -> bool:
    """Cheap emptiness check for sized loaders (others are left to the core's own check)."""
    try:
        return len(loader) > 0  # type: ignore[arg-type]
    except TypeError:
        return True


#: What to pass when the fit data must be read twice and the loader cannot replay it.
REPLAY_HINT = "pass a DataLoader with shuffle=False over the same dataset (or a list of batches)"


def in_order(loader: Iterable) -> Iterable:
    """A trainer's shuffling train loader as one that reads the same dataset in order, for two passes.

    A ``DataLoader`` over a map-style dataset whose sampler is a plain
    ``RandomSampler`` (Lightning's and Transformers' train loaders) becomes a
    ``DataLoader`` over the same dataset with the same ``batch_size``,
    ``collate_fn``, ``num_workers`` and ``pin_memory``, without shuffling and
    without ``drop_last`` (every row, in dataset order: the label issues'
    rows are then dataset indices). Anything else is returned as it is (and
    refused by :func:`lip_agnostic.adapters._face.check_replayable` if it
    cannot replay).
    """
    from torch.utils.data import DataLoader, IterableDataset

    if not isinstance(loader, DataLoader) or shuffler(loader) != "RandomSampler":
        return loader
    if isinstance(loader.dataset, IterableDataset):
        return loader
    samplers = [getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    if any(getattr(s, "replacement", False) or (getattr(s, "_num_samples", None) not in (None, len(loader.dataset)))
           for s in samplers if s is not None):
        return loader  # draws with replacement or a subset: no in-order equivalent
    size = loader.batch_size if loader.batch_size is not None else getattr(loader.batch_sampler, "batch_size", None)
    if isinstance(size, bool) or not isinstance(size, int):
        return loader
    return DataLoader(loader.dataset, batch_size=size, shuffle=False, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, drop_last=False)


# --------------------------------------------------------------------------- the finalize pass
def finalize_layer(
    classifier: nn.Linear,
    loader: Iterable,
    /,
    *,
    model: nn.Module | None,
    rank: Rank,
    validation: Iterable | None,
    bias_mode: str,
    lip_options: dict,
    input_key: str | None = None,
    label_key: str | None = None,
    device: torch.device | str | None = None,
    all_reduce: AllReduceArg = "auto",
    progress: bool | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    unpack: Callable[[Any], tuple[Any, Any]] | None = None,
    call: Callable[[nn.Module, Any], Any] | None = None,
    select: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    allow_hidden_layer: bool = False,
    replay_hint: str = REPLAY_HINT,
) -> tuple[Any, dict]:
    """One no-grad pass over ``loader`` (two with ``label_repair``), LIP in the core, ``W*`` written into ``classifier``.

    The options are already checked by the calling face. Returns the core's
    :class:`lip_agnostic.LIPResult` and the face facts (``bias_mode``,
    ``bias_in_fit``, ``dtype``, ``device``, ``world_size``, ``n_batches``,
    ``n_samples_local``, ``n_val_batches``, ``seconds``).

    Steps
    -----
    1. Put ``model`` (default: the outermost module containing ``classifier``,
       ``torch.compile``/DDP wrappers peeled off) in eval mode; a forward hook
       on ``classifier`` captures its inputs, the penultimate features ``X``.
       The classifier's weight and bias must be its own (no other module of
       the model holds them: a tied head would rewrite the embedding too).
       On the first batch the hook marks the classifier's output and the
       model's output must come from it through element-wise ops only
       (softmax, an activation, a cast, a reshape): a hidden layer is refused
       unless ``allow_hidden_layer=True`` (multi-head models).
    2. Stream ``(X, labels)`` per chunk into :func:`lip_agnostic.refine_batches`
       with ``W = classifier.weight.T``, the layer's bias and ``rank``
       (``validation`` batches score ``rank="auto"``). When the core reads
       the fit data more than once (``label_repair``, ``label_issues=True``:
       :func:`lip_agnostic.adapters._face.reads_twice`) the stream is
       re-iterable, each read a fresh no-grad pass over ``loader``; a
       one-shot or shuffling loader is refused first (``replay_hint`` says
       what to pass instead), and the label issues' rows are given as
       indices in the loader's order (:func:`~lip_agnostic.adapters._face.with_rows`).
    3. Under ``torch.distributed`` the core's partial sums are all-reduced.
    4. Write ``W*.T`` into ``classifier.weight`` in its dtype and device (and,
       ``tail="full"`` with the bias in the fit, the refit bias into
       ``classifier.bias``); restore every submodule's train/eval flag. If
       anything fails, the layer is left exactly as it was.
    """
    from lip_agnostic import refine_batches

    reducer = resolve_all_reduce(all_reduce)
    if model is None:
        model = find_model(classifier)
    if not isinstance(model, nn.Module):
        raise OptionTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not any(m is classifier for m in model.modules()):
        raise DataError(f"the classifier is not a submodule of the given model ({type(model).__name__})")
    check_not_shared(model, classifier)
    check_selection_use(rank, lip_options, validation=validation is not None)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 0:
        raise OptionError(f"chunk_rows must be a non-negative integer; got {chunk_rows!r}")
    if not isinstance(allow_hidden_layer, bool):
        raise OptionTypeError(f"allow_hidden_layer must be True or False; got {allow_hidden_layer!r}")
    reason = reads_twice(lip_options)
    if reason is not None:  # before any forward pass: the layer is untouched
        check_replayable(loader, reason, what="the training loader", instead=replay_hint)
    proc, world = distributed()
    if device is not None:
        dev = torch.device(device)
    else:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else classifier.weight.device
    weight = classifier.weight
    l = int(weight.shape[0])
    start = time.perf_counter()

    if progress is None:  # a progress display on a terminal only: log files stay clean
        progress = sys.stderr.isatty()
    modes = module_modes(model)
    capture = FeatureCapture(classifier)
    fit_counts: dict = {}
    val_counts: dict = {}
    try:
        model.eval()
        stream_kw = dict(l=l, device=dev, input_key=input_key, label_key=label_key, progress=progress and proc == 0,
                         chunk_rows=chunk_rows, unpack=unpack, call=call, select=select)
        check = None if allow_hidden_layer else (lambda out, marker: check_output_layer(model, classifier, out, marker))

        def fit_pass(first: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            fit_counts.clear()  # every pass reads the same rows: the facts count one
            return feature_batches(model, capture, loader, desc="LIP fit", counts=fit_counts,
                                   check_output=check if first else None, **stream_kw)

        batches = fit_pass(True) if reason is None else Replayed(fit_pass)
        val_batches = (
            None if validation is None
            else feature_batches(model, capture, validation, desc="LIP validation", counts=val_counts, **stream_kw)
        )
        with torch.no_grad():
            W = weight.detach().clone().T
            # The bias always goes to the core (rank="auto" scores the logits the layer really
            # produces); bias_mode="ignore" only keeps it out of the fit (the paper's targets Y).
            b = classifier.bias.detach().clone() if classifier.bias is not None else None
            if b is not None and b.dtype != W.dtype:
                b = b.to(W.dtype)
            if reducer is None and not _has_items(loader):
                raise DataError("the loader is empty: LIP needs at least one batch of (inputs, labels)")
            result = refine_batches(
                W, batches, rank=rank, validation=val_batches, bias=b, bias_mode=bias_mode,
                all_reduce=reducer, progress=bool(progress) and proc == 0, **lip_options
            )
            new = result.weight.T.to(device=weight.device, dtype=weight.dtype)
            if tuple(new.shape) != tuple(weight.shape):
                raise DataError(
                    f"LIP returned a weight of shape {tuple(new.shape)} for a layer of shape {tuple(weight.shape)}"
                )
            if not bool(torch.isfinite(new).all()):
                raise NonFiniteError("LIP produced NaN/Inf weights; the classifier was left unchanged")
            # tail="full" (beyond the paper) also refits the bias when it is in the fit
            new_b = None if result.bias is None else result.bias.to(device=classifier.bias.device,
                                                                     dtype=classifier.bias.dtype)
            backup = weight.detach().clone()
            backup_b = None if new_b is None else classifier.bias.detach().clone()
            try:
                weight.copy_(new)
                if new_b is not None:
                    classifier.bias.copy_(new_b)
            except BaseException:
                weight.copy_(backup)
                if backup_b is not None:
                    classifier.bias.copy_(backup_b)
                raise
    finally:
        capture.remove()
        restore_modes(modes)

    facts = dict(
        tail=result.tail,
        bias_mode=bias_mode,
        bias_in_fit=b is not None and bias_mode == "fit",
        bias_refit=result.bias is not None,
        dtype=str(weight.dtype).replace("torch.", ""),
        device=str(weight.device),
        world_size=world,
        n_batches=fit_counts.get("batches", 0),
        n_samples_local=fit_counts.get("samples", 0),
        n_val_batches=val_counts.get("batches", 0),
        seconds=time.perf_counter() - start,
    )
    return with_rows(result, n_stream=facts["n_samples_local"]), facts


def with_context(result: Any, context: dict) -> Any:
    """The core's result with a face's facts added to ``result.context``."""
    import dataclasses

    return dataclasses.replace(result, context={**result.context, **context})
