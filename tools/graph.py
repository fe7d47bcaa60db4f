"""Finding the classifier layer of an ONNX graph.

The classifier is the last ``Gemm`` or ``MatMul`` with a constant weight
(an initializer or a ``Constant``, possibly through ``Identity``,
``Transpose`` or ``Cast``) on the way back from a graph output. Its layout is
normalised to the core's ``W (q, l)``: features in, classes out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
import onnx

from .errors import ClassifierNotFoundError, ModelReadError, UnsupportedWeightError
from .model_io import LoadedModel, read_tensor

__all__ = ["WeightRef", "Classifier", "find_linear_layers", "classifier_candidates", "select_classifier",
           "graph_inputs"]

#: Ops that mean the weight is stored quantized.
QUANTIZED_OPS = frozenset({
    "QLinearMatMul", "QLinearConv", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "MatMulNBits", "DequantizeLinear", "DynamicQuantizeLinear",
    "QuantizeLinear", "QAttention", "QOrderedMatMul",
})
_PASS_THROUGH = frozenset({"Identity", "Transpose", "Cast"})
_FLOAT_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.BFLOAT16: "bfloat16"}


@dataclass(frozen=True)
class WeightRef:
    """Where a constant operand lives and how it reaches the node.

    Attributes
    ----------
    kind : {"initializer", "constant"}
    name : str
        Initializer name, or the ``Constant`` node's output name.
    node_index : int or None
        Index of the ``Constant`` node (``kind="constant"``).
    via : tuple of str
        Ops between the stored tensor and its consumer (``Transpose``, ``Cast``...).
    transposed : bool
        Whether ``via`` transposes the stored 2-D tensor.
    dtype : str
        Stored element type (``float32``, ``float16``, ``int8``...).
    shape : tuple of int
        Stored shape.
    """

    kind: str
    name: str
    node_index: int | None
    via: tuple[str, ...]
    transposed: bool
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Classifier:
    """A linear layer ``logits = X W + b`` found in the graph (``W`` is ``(q, l)``).

    Attributes
    ----------
    node_name, op_type, node_index
        The ``Gemm``/``MatMul`` node.
    input_name : str
        The features tensor ``X`` (the layer's input).
    output_name : str
        The logits tensor (after the bias ``Add`` if there is one).
    weight : WeightRef
    layout : str
        How the stored weight relates to ``W``: ``"(q, l)"`` or ``"(l, q)"``.
    alpha : float
        ``Gemm`` alpha: ``W = alpha * B'``.
    transA : bool
        ``Gemm`` transA: the features arrive transposed ``(q, n)``.
    bias : WeightRef or None
    beta : float
        ``Gemm`` beta: ``b = beta * C``.
    bias_node : str or None
        The ``Add`` node carrying a ``MatMul``'s bias.
    q, l : int
    notes : list of str
    """

    node_name: str
    op_type: str
    node_index: int
    input_name: str
    output_name: str
    weight: WeightRef
    layout: str
    alpha: float
    transA: bool
    bias: WeightRef | None
    beta: float
    bias_node: str | None
    q: int
    l: int
    notes: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        """A name for messages: the node name, else its output."""
        return self.node_name or self.output_name

    def to_dict(self) -> dict:
        """JSON-friendly view."""
        d = asdict(self)
        d["weight"]["shape"] = list(self.weight.shape)
        if self.bias is not None:
            d["bias"]["shape"] = list(self.bias.shape)
        d["shape"] = [self.q, self.l]
        d["notes"] = list(self.notes)
        return d

    def brief(self) -> str:
        """A few words: name, op, ``W`` shape."""
        return f"{self.label!r} ({self.op_type}, W {self.q}x{self.l})"

    def describe(self) -> str:
        """One line: node, op, weight, layout, shape."""
        name = self.node_name or "<unnamed>"
        bias = f", bias {self.bias.name!r}" if self.bias is not None else ", no bias"
        return (f"{name} ({self.op_type}): weight {self.weight.name!r} {self.weight.dtype} "
                f"stored {list(self.weight.shape)} as {self.layout}, W (q={self.q}, l={self.l}){bias}")


class _Graph:
    def __init__(self, loaded: LoadedModel) -> None:
        g = loaded.model.graph
        self.loaded = loaded
        self.graph = g
        self.inits = {t.name: t for t in g.initializer}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(g.node):
            for o in node.output:
                if o:
                    self.producer[o] = i
            for name in _node_inputs(node):
                self.consumers.setdefault(name, []).append(i)
        self.outputs = [o.name for o in g.output]

    def constant(self, name: str) -> WeightRef | None:
        """Trace ``name`` back to a stored constant through pass-through ops."""
        via: list[str] = []
        transposed = False
        cur = name
        for _ in range(16):
            if cur in self.inits:
                t = self.inits[cur]
                return WeightRef("initializer", cur, None, tuple(reversed(via)), transposed,
                                 _dtype_name(t.data_type), tuple(int(d) for d in t.dims))
            i = self.producer.get(cur)
            if i is None:
                return None
            node = self.graph.node[i]
            if node.op_type == "Constant":
                t = _constant_tensor(node)
                if t is None:
                    return None
                return WeightRef("constant", cur, i, tuple(reversed(via)), transposed,
                                 _dtype_name(t.data_type), tuple(int(d) for d in t.dims))
            if node.op_type in QUANTIZED_OPS:
                via.append(node.op_type)
                inner = self.constant(node.input[0]) if node.input else None
                if inner is not None:
                    return WeightRef(inner.kind, inner.name, inner.node_index,
                                     inner.via + tuple(reversed(via)), inner.transposed, inner.dtype, inner.shape)
                return None
            if node.op_type not in _PASS_THROUGH or not node.input:
                return None
            if node.op_type == "Transpose":
                perm = _ints(node, "perm")
                if perm not in (None, [1, 0]):
                    return None
                transposed = not transposed
            via.append(node.op_type)
            cur = node.input[0]
        return None


def _node_inputs(node: onnx.NodeProto) -> Iterable[str]:
    """Inputs of a node, including names its subgraphs read from the outer scope."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                names.extend(n for n in _node_inputs(inner))
    return names


def _text(name) -> str:
    """A protobuf string field as text (a corrupt file may yield bytes)."""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return attr.t
    return None


def _ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints)
    return None


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for attr in node.attribute:
        if attr.name == name:
            return attr.f if attr.type == onnx.AttributeProto.FLOAT else attr.i
    return default


def _dtype_name(data_type: int) -> str:
    if data_type in _FLOAT_TYPES:
        return _FLOAT_TYPES[data_type]
    return onnx.TensorProto.DataType.Name(data_type).lower() if data_type in onnx.TensorProto.DataType.values() else str(data_type)


def _linear(g: _Graph, i: int) -> Classifier | None:
    node = g.graph.node[i]
    if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
        return None
    w = g.constant(node.input[1])
    if w is None or len(w.shape) != 2:
        return None
    transposed = w.transposed
    alpha, beta, transA, notes = 1.0, 1.0, False, []
    if node.op_type == "Gemm":
        alpha = float(_attr(node, "alpha", 1.0))
        beta = float(_attr(node, "beta", 1.0))
        transA = bool(_attr(node, "transA", 0))
        if _attr(node, "transB", 0):
            transposed = not transposed
    rows, cols = w.shape
    q, l = (cols, rows) if transposed else (rows, cols)
    bias, bias_node, out = None, None, node.output[0]
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = g.constant(node.input[2])
        if bias is None:
            notes.append("Gemm C is not a constant: the fit ignores it")
    elif node.op_type == "MatMul":
        users = g.consumers.get(out, [])
        if len(users) == 1 and out not in g.outputs:
            add = g.graph.node[users[0]]
            if add.op_type == "Add" and len(add.input) == 2:
                other = add.input[1] if add.input[0] == out else add.input[0]
                ref = g.constant(other)
                if ref is not None and int(np.prod(ref.shape)) == l and (not ref.shape or ref.shape[-1] == l):
                    bias, bias_node, out = ref, add.name or add.output[0], add.output[0]
    if bias is not None and int(np.prod(bias.shape)) not in (1, l):
        notes.append(f"bias {bias.name!r} of shape {list(bias.shape)} is not per-class: the fit ignores it")
        bias = None
    return Classifier(
        node_name=_text(node.name), op_type=_text(node.op_type), node_index=i, input_name=node.input[0], output_name=out,
        weight=w, layout="(l, q)" if transposed else "(q, l)", alpha=alpha, transA=transA, bias=bias,
        beta=beta, bias_node=bias_node, q=int(q), l=int(l), notes=tuple(notes),
    )


def find_linear_layers(loaded: LoadedModel) -> list[Classifier]:
    """Every ``Gemm``/``MatMul`` with a constant 2-D weight, in graph order."""
    g = _Graph(loaded)
    found = []
    for i in range(len(g.graph.node)):
        c = _linear(g, i)
        if c is not None:
            found.append(c)
    return found


def classifier_candidates(loaded: LoadedModel) -> tuple[list[Classifier], list[str]]:
    """Linear layers that are last on some path back from a graph output.

    Returns ``(candidates, quantized)``: the float candidates, and a
    description of each quantized linear op found last on a path instead.
    """
    found, quantized, _ = _last_linear(loaded)
    return [found[i] for i in sorted(found)], quantized


def _last_linear(loaded: LoadedModel) -> tuple[dict[int, Classifier], list[str], set[int]]:
    """The walk back from the graph outputs: float candidates by node index, the quantized ones
    described, and the index of every linear node met last on some path (float or quantized)."""
    g = _Graph(loaded)
    found: dict[int, Classifier] = {}
    quantized: list[str] = []
    last: set[int] = set()
    seen: set[str] = set()
    stack = list(g.outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        i = g.producer.get(name)
        if i is None:
            continue
        node = g.graph.node[i]
        if node.op_type in QUANTIZED_OPS and node.op_type != "QuantizeLinear":
            quantized.append(f"{node.name or node.output[0]} ({node.op_type})")
            last.add(i)
            continue
        c = _linear(g, i)
        if c is not None:
            last.add(i)
            if any(op in QUANTIZED_OPS for op in c.weight.via) or c.weight.dtype in ("int8", "uint8", "int4", "uint4"):
                quantized.append(f"{c.label} ({c.op_type} on {c.weight.dtype} weight {c.weight.name!r} via {list(c.weight.via)})")
            else:
                found[i] = c
            continue
        stack.extend(n for n in node.input if n)
    return found, quantized, last


def select_classifier(loaded: LoadedModel, layer: str | None = None, *, output_only: bool = True) -> Classifier:
    """The classifier to refine, checked for what LIP can handle.

    Steps
    -----
    1. ``layer`` given: the linear layer whose node name, weight name or
       output name equals it; else the unique candidate of
       :func:`classifier_candidates`. With ``output_only`` (what ``denoise``
       uses) a named layer must be one of those candidates, a layer whose
       result reaches a graph output through no other linear layer: a hidden
       ``Gemm`` is refused (``inspect`` and ``compare`` only read, and may name one).
    2. Refuse quantized weights, weights shared with other nodes, and
       non-float weights.

    Raises
    ------
    ClassifierNotFoundError
        No candidate, several (listed; pass ``layer``), or ``layer`` unknown.
    UnsupportedWeightError
        Quantized, shared, or non-float weight.
    """
    if layer is not None:
        layers = find_linear_layers(loaded)
        match = [c for c in layers if layer in (c.node_name, c.weight.name, c.output_name)]
        if not match:
            listing = ", ".join(c.brief() for c in layers) or "(none)"
            raise ClassifierNotFoundError(f"no Gemm/MatMul layer named {layer!r}; linear layers with a constant weight: {listing}")
        if len(match) > 1:
            raise ClassifierNotFoundError(f"--layer {layer!r} matches {len(match)} layers; use a node name")
        chosen = match[0]
        found, _, last = _last_linear(loaded)
        outputs = [found[i] for i in sorted(found)]
        if output_only and chosen.node_index not in last:
            # a hidden layer: refitting it against the labels rewrites what the layers after it read
            named = ", ".join(c.brief() for c in outputs) or "(none found)"
            raise ClassifierNotFoundError(
                f"layer {chosen.label!r} does not produce the model's output (other layers read its result); "
                f"LIP refits only the output layer: {named}")
        if any(op in QUANTIZED_OPS for op in chosen.weight.via):
            raise UnsupportedWeightError(f"layer {chosen.label!r} has a quantized weight (via {list(chosen.weight.via)}); LIP needs float weights")
    else:
        cands, quantized = classifier_candidates(loaded)
        if quantized and not cands:
            raise UnsupportedWeightError(
                "the classifier is quantized: " + "; ".join(quantized)
                + ". LIP needs float weights: apply it before quantization")
        if not cands:
            raise ClassifierNotFoundError(
                "no classifier found: no Gemm or MatMul with a constant weight on the way back from the "
                f"graph outputs {[o.name for o in loaded.model.graph.output]}")
        if len(cands) > 1:
            listing = ", ".join(c.brief() for c in cands)
            raise ClassifierNotFoundError(
                f"{len(cands)} classifier candidates; choose one with --layer NAME: {listing} "
                "(lip-onnx inspect MODEL shows each one)")
        chosen = cands[0]
    w = chosen.weight
    if w.dtype in ("int8", "uint8", "int4", "uint4", "int16", "uint16", "int32"):
        raise UnsupportedWeightError(f"classifier weight {w.name!r} is {w.dtype} (quantized?); LIP needs float16/32/64 weights")
    if w.dtype not in ("float32", "float16", "float64"):
        raise UnsupportedWeightError(f"classifier weight {w.name!r} has dtype {w.dtype}; supported: float16, float32, float64")
    g = _Graph(loaded)
    for link in _weight_chain(g, chosen):
        users = g.consumers.get(link, [])
        if len(users) > 1 or link in g.outputs:
            names = [g.graph.node[u].name or g.graph.node[u].output[0] for u in users]
            raise UnsupportedWeightError(
                f"classifier weight {w.name!r} is shared by {len(users)} nodes {names}"
                + (f" (through {link!r})" if link != w.name else "")
                + ": refining it would change them too; refused")
    if chosen.transA:
        raise UnsupportedWeightError(f"Gemm {chosen.label!r} has transA=1 (features stored transposed); not supported")
    if chosen.alpha == 0.0:
        raise UnsupportedWeightError(f"Gemm {chosen.label!r} has alpha=0: the weight has no effect")
    return chosen


def shared_bias_users(loaded: LoadedModel, c: Classifier) -> list[str]:
    """Nodes other than the classifier's own that read its bias (empty when it has none or owns it)."""
    if c.bias is None:
        return []
    g = _Graph(loaded)
    node = g.graph.node[c.node_index]
    if c.bias_node is None:
        start, own = node.input[2], c.node_index
    else:
        add = g.producer[c.output_name]
        start, own = next(n for n in g.graph.node[add].input if n != node.output[0]), add
    users: list[str] = []
    for link in _chain(g, start, len(c.bias.via)):
        users += [g.graph.node[u].name or g.graph.node[u].output[0] for u in g.consumers.get(link, []) if u != own]
        own = g.producer.get(link, -1)
    return users


def _weight_chain(g: _Graph, c: Classifier) -> list[str]:
    """Tensor names from the classifier's weight input back to the stored tensor."""
    return _chain(g, g.graph.node[c.node_index].input[1], len(c.weight.via))


def _chain(g: _Graph, cur: str, hops: int) -> list[str]:
    """Tensor names from ``cur`` back through ``hops`` pass-through nodes to the stored tensor."""
    names = []
    for _ in range(hops + 1):
        names.append(cur)
        i = g.producer.get(cur)
        if i is None or g.graph.node[i].op_type == "Constant":
            break
        cur = g.graph.node[i].input[0]
    return names


def graph_inputs(loaded: LoadedModel) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (graph inputs that are not initializers)."""
    inits = {t.name for t in loaded.model.graph.initializer}
    return [v for v in loaded.model.graph.input if v.name not in inits]


def weight_tensor(loaded: LoadedModel, ref: WeightRef) -> onnx.TensorProto:
    """The ``TensorProto`` a :class:`WeightRef` points at."""
    g = loaded.model.graph
    if ref.kind == "initializer":
        for t in g.initializer:
            if t.name == ref.name:
                return t
    else:
        t = _constant_tensor(g.node[ref.node_index])
        if t is not None:
            return t
    raise ModelReadError(f"weight {ref.name!r} vanished from the graph")


def read_weight(loaded: LoadedModel, c: Classifier) -> np.ndarray:
    """``W (q, l)`` as stored (a view, possibly memory-mapped), before ``alpha``."""
    arr = read_tensor(weight_tensor(loaded, c.weight), loaded.base_dir)
    return arr.T if c.layout == "(l, q)" else arr


def read_bias(loaded: LoadedModel, c: Classifier) -> np.ndarray | None:
    """The effective bias ``b (l,)`` in float64 (``beta * C``), or ``None``."""
    if c.bias is None:
        return None
    b = np.asarray(read_tensor(weight_tensor(loaded, c.bias), loaded.base_dir), dtype=np.float64)
    b = np.broadcast_to(b.reshape(-1), (c.l,)) * (c.beta if c.op_type == "Gemm" else 1.0)
    return np.ascontiguousarray(b)


__all__ += ["weight_tensor", "read_weight", "read_bias", "shared_bias_users"]
