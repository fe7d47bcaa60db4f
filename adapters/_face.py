"""What every face shares, framework-free: option checking, the selection rule, the head search, the log entry.

Private helper of the faces in :mod:`lip_agnostic.adapters` (and of
``lip-onnx``'s selection rule). No framework is imported here and no LIP
math lives here; each function is the one home of a rule the faces apply:

- :func:`face_options`: the one check of a face's ``**lip_options`` (the
  names a face passes through to :func:`lip_agnostic.refine_batches`).
- :func:`unused_selection_options` / :func:`check_selection_use`: options
  that only matter when a choice is made on held-out data (``validation``,
  ``confidence``, ``min_gain``, ``holdout``) are refused with a fixed rank.
- :func:`find_head`: the output layer of a model by name (Transformers,
  Lightning).
- :func:`log_entry`: the flat ``lip_*`` numbers a training framework's
  loggers take.
- :func:`reads_twice`, :func:`check_replayable`, :class:`Replayed`: the fit
  data read more than once (``label_repair``, ``label_issues=True``): a
  source that can replay the same rows in the same order, a fresh feature
  pass per read.
- :class:`RowLabelIssues`, :func:`with_rows`: the core's label issues with
  each flagged row's index in the data the user passed.

Example
-------
>>> from lip_agnostic.adapters._face import face_options, unused_selection_options
>>> face_options(face="PyTorch adapter", reserved={}, tail="full")
{'tail': 'full'}
>>> unused_selection_options(3, {"confidence": 0.9})
['confidence']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

from lip_agnostic.errors import DataError, DataTypeError, OptionError, OptionTypeError
from lip_agnostic.label_issues import LabelIssues
from lip_agnostic.options import OPTION_NAMES, SELECTION_DEFAULTS, LIPOptions, check_option_names, face_reserved, inert_options

__all__ = [
    "HEAD_NAMES",
    "SELECTION_OPTIONS",
    "face_options",
    "chooses",
    "unused_selection_options",
    "check_selection_use",
    "find_head",
    "log_entry",
    "reads_twice",
    "shuffler",
    "check_replayable",
    "Replayed",
    "RowLabelIssues",
    "with_rows",
]

#: Options that only act when candidates are scored on held-out data (the core's list).
SELECTION_OPTIONS = tuple(SELECTION_DEFAULTS)

#: Names tried for a model's output layer, in order: a dotted name from the model's root first
#: (Transformers' conventions), then, among linear layers, a unique last name component.
HEAD_NAMES = ("classifier", "score", "lm_head", "cls.predictions.decoder", "head", "fc", "output", "out")
#: The linear layer inside a head container (RoBERTa's ``classifier.out_proj``, a ``decoder``).
_HEAD_PARTS = ("out_proj", "decoder")


def face_options(*, face: str, reserved: Mapping[str, str], own: Any = (), **lip_options: Any) -> dict:
    """The one check of a face's pass-through options: known names, none the face sets itself.

    Steps
    -----
    1. Every name must be an option of :class:`lip_agnostic.LIPOptions` or a
       driver input of :func:`lip_agnostic.refine_batches` that neither the core
       nor this face set themselves (``reserved`` maps each core name the
       face sets to the face's own keyword, or None, for the message);
       ``own`` lists the face's own keywords.
    2. Every option value is parsed by the core's one parser
       (:data:`lip_agnostic.options.CONSTRAINTS`), so a typo or a bad value
       fails when the face is built, not after training.

    Returns the options as a new dict.

    Raises
    ------
    OptionTypeError
        An unknown or face-owned name (the message names the face and the
        keyword to use instead).
    OptionError
        A bad value.
    """
    kwargs: dict = {"reserved": face_reserved(**reserved), "face": face}
    if own:
        kwargs["own"] = own
    return dict(check_option_names(dict(lip_options), **kwargs))


def chooses(rank: Any, options: Mapping[str, Any]) -> bool:
    """Whether a run with this ``rank`` and these options picks a candidate on held-out data
    (:attr:`lip_agnostic.LIPOptions.uses_validation`)."""
    return LIPOptions(rank=rank, tail=options.get("tail", "auto"), ridge=options.get("ridge"),
                      degenerate=options.get("degenerate", "zero")).uses_validation


def unused_selection_options(rank: Any, options: Mapping[str, Any]) -> list[str]:
    """The names in ``options`` among :data:`SELECTION_OPTIONS` that would do nothing for this run
    (the core's one rule, :func:`lip_agnostic.options.inert_options`)."""
    return inert_options({**options, "rank": rank})


def check_selection_use(rank: Any, options: Mapping[str, Any], *, validation: bool = False) -> None:
    """Refuse held-out data or selection options that would do nothing (a fixed rank).

    Raises
    ------
    OptionError
        ``validation`` given while nothing is chosen on held-out data, or one
        of :data:`SELECTION_OPTIONS` in ``options`` that cannot act (the
        guard's ``confidence``/``min_gain`` with a fixed rank; ``holdout`` when
        nothing is chosen): they would be silently ignored.
    """
    if validation and not chooses(rank, options):
        raise OptionError(f"validation data is only used to choose rank='auto' (or tail='full' ridge='auto'); "
                          f"got rank={rank!r}")
    # the core's one rule and message (lip_agnostic.options.inert_options, via LIPOptions)
    LIPOptions(rank=rank, **{k: v for k, v in options.items() if k in OPTION_NAMES})


def find_head(named: Mapping[str, Any], is_linear: Callable[[Any], bool], *, owner: str,
              head: Any = None) -> str:
    """The dotted name of a model's output layer among its ``named`` submodules.

    Steps
    -----
    1. ``head`` a name: that submodule; ``head`` an object: the submodule it
       is (by identity).
    2. Otherwise the first of :data:`HEAD_NAMES` that is a dotted name of the
       model, else the one linear layer whose last name component is in it.
    3. A head that is a container resolves to its ``out_proj`` / ``decoder``
       linear layer, the one producing the logits.

    Whether that layer really produces the model's output is checked by the
    face when it runs the model (a hidden layer is refused there).

    Raises
    ------
    OptionError
        No such submodule, nothing found, or several candidates (the message
        lists the last linear layers).
    OptionTypeError
        ``head`` is neither a name, a submodule, nor None.
    """
    linears = [n for n, m in named.items() if n and is_linear(m)]
    if head is not None and not isinstance(head, str):
        found = next((n for n, m in named.items() if m is head), None)
        if found is None:
            if isinstance(head, (bool, int, float, bytes, list, tuple, dict, set)):
                raise OptionTypeError(f"head must be a module name, a layer of the model, or None; "
                                      f"got {type(head).__name__}")
            raise OptionError(f"head ({type(head).__name__}) is not a submodule of {owner}")
        return found
    if isinstance(head, str):
        if head not in named:
            raise OptionError(f"{owner} has no module named {head!r}; pass head='<name>' (its last linear layers: "
                              f"{linears[-5:]})")
        name = head
    else:
        name = next((n for n in HEAD_NAMES if n in named), None)
        if name is None:
            found = [n for n in linears if n.rsplit(".", 1)[-1] in HEAD_NAMES]
            if len(found) != 1:
                what = "several candidate heads" if found else f"no linear layer named one of {list(HEAD_NAMES)}"
                raise OptionError(f"{owner} has {what} ({(found or linears)[-5:]}); pass head='<name>'")
            name = found[0]
    if not is_linear(named[name]):
        inner = next((f"{name}.{part}" for part in _HEAD_PARTS
                      if f"{name}.{part}" in named and is_linear(named[f"{name}.{part}"])), None)
        if inner is not None:
            return inner
    return name


def log_entry(result: Any) -> dict:
    """The flat ``lip_*`` numbers a training framework's loggers take (the Keras History keys too).

    ``lip_rank`` (``k``), ``lip_changed`` (0/1), ``lip_n_fit``,
    ``lip_relative_change``, ``lip_kept_relative_change``,
    ``lip_top_k_angle`` (radians) and, when candidates were scored on
    held-out data, ``lip_val_score`` and ``lip_val_base_score``. With label
    issues (``label_repair``, ``label_issues=True``): ``lip_n_flagged``, the
    fit rows flagged as mislabelled. With a temperature fit (``temperature``,
    beyond the paper): ``lip_temperature`` (the logit multiplier ``T``),
    ``lip_temperature_applied`` (0/1: written into the head),
    ``lip_val_nll_unchanged`` and ``lip_val_nll`` (held-out negative
    log-likelihood in nats of the unchanged layer and of the head as written).
    """
    summary = result.summary
    entry = {
        "lip_rank": int(result.selection.k),
        "lip_changed": int(result.selection.changed),
        "lip_n_fit": int(result.n_fit),
        "lip_relative_change": float(summary.relative_change),
        "lip_kept_relative_change": float(summary.kept_relative_change),
        "lip_top_k_angle": float(summary.top_k_angle),
    }
    if result.selection.best_score is not None:
        entry["lip_val_score"] = float(result.selection.best_score)
        entry["lip_val_base_score"] = float(result.selection.base_score)
    if result.label_issues is not None:
        entry["lip_n_flagged"] = int(result.label_issues.n_flagged)
    cal = result.calibration
    if cal is not None:
        entry["lip_temperature"] = float(cal.fit.scale)
        entry["lip_temperature_applied"] = int(cal.applied)
        entry["lip_val_nll_unchanged"] = float(cal.unchanged_nll)
        entry["lip_val_nll"] = float(cal.fit.nll_after if cal.applied else cal.fit.nll_before)
    return entry


# --------------------------------------------------------------------------- data read more than once
def reads_twice(options: Mapping[str, Any]) -> str | None:
    """Why the fit data must be read more than once, in the option's words, or None (one pass).

    ``label_repair`` other than ``"none"`` reads the fit rows twice (statistics,
    then out-of-fold logits); ``label_issues=True`` twice more after the fit.

    >>> reads_twice({"label_repair": "auto"}), reads_twice({"label_issues": True}), reads_twice({})
    ("label_repair='auto'", 'label_issues=True', None)
    """
    repair = options.get("label_repair", "none")
    if repair != "none":
        return f"label_repair={repair!r}"
    if options.get("label_issues") is True:
        return "label_issues=True"
    return None


#: Samplers that draw another order on every pass (matched by class name: no framework import here).
_SHUFFLERS = ("RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler")


def shuffler(loader: Any) -> str | None:
    """The name of what makes ``loader`` yield another order on every pass, or None.

    Walks ``sampler`` / ``batch_sampler`` (and theirs, as wrappers such as
    Accelerate's nest them) without iterating anything: a random sampler, or
    a sampler with ``shuffle=True`` (``DistributedSampler``); for a
    ``tf.data.Dataset``, a ``shuffle`` stage that reshuffles on every pass.
    """
    if type(loader).__module__.startswith("tensorflow"):
        return _tf_shuffler(loader)
    todo, seen = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)], set()
    while todo:
        s = todo.pop()
        if s is None or id(s) in seen:
            continue
        seen.add(id(s))
        names = {c.__name__ for c in type(s).__mro__}
        hit = next((n for n in _SHUFFLERS if n in names), None)
        if hit is not None:
            return hit
        if getattr(s, "shuffle", False) is True:
            return f"{type(s).__name__}(shuffle=True)"
        todo.extend([getattr(s, "sampler", None), getattr(s, "batch_sampler", None)])
    return None


def _tf_shuffler(dataset: Any) -> str | None:
    """A ``tf.data`` stage that reshuffles on every pass (``shuffle(..., reshuffle_each_iteration=True)``,
    the default), found by walking the pipeline's inputs (tf.data keeps them as ``_inputs()``)."""
    todo, seen = [dataset], set()
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        name = type(d).__name__.lstrip("_")
        if "Shuffle" in name and bool(getattr(d, "_reshuffle_each_iteration", True)):
            return f"{name}(reshuffle_each_iteration=True)"
        inputs = getattr(d, "_inputs", None)
        if callable(inputs):
            try:
                todo.extend(inputs())
            except Exception:  # noqa: BLE001 - a stage without inputs to walk
                continue
    return None


def check_replayable(source: Any, reason: str, *, what: str, instead: str) -> None:
    """Refuse a fit source that cannot replay the same rows in the same order (before anything is read).

    ``reason`` is :func:`reads_twice`'s; ``what`` names the source for the
    user (``"the loader"``, ``"data"``); ``instead`` says what to pass.

    Raises
    ------
    DataTypeError
        A one-shot iterator or generator (a second pass would see nothing).
    DataError
        A loader that shuffles (a second pass would see the rows in another order).
    """
    if isinstance(source, Iterator):
        raise DataTypeError(f"{reason} reads the training data twice in the same order, but {what} is a one-shot "
                            f"{type(source).__name__}; {instead}")
    order = shuffler(source)
    if order is not None:
        raise DataError(f"{reason} reads the training data twice in the same order, but {what} shuffles "
                        f"({order}); {instead}")


class Replayed:
    """A re-iterable feature stream: every ``iter()`` starts a fresh pass, ``make(first)``.

    ``first`` is True on the first pass only (a face checks its output layer
    once). The core reads it as many times as it needs; a face hands it over
    only when :func:`reads_twice` says so, so one-pass runs keep their cost.
    """

    def __init__(self, make: Callable[[bool], Any]) -> None:
        self._make, self.passes = make, 0

    def __iter__(self) -> Any:
        # a generator: a pass counts when it starts handing out batches, not when iter() is
        # called (the core's re-iterability check calls iter() without reading)
        self.passes += 1
        yield from self._make(self.passes == 1)


@dataclass(frozen=True)
class RowLabelIssues(LabelIssues):
    """The core's :class:`~lip_agnostic.label_issues.LabelIssues` plus where each row lies in the user's data.

    ``row_of[j]`` is the index, in the data the user passed (the rows their
    loader yields, in its order, every row counted; ``X`` for scikit-learn),
    of the row behind the core's suspect entry ``j``. :meth:`rows` adds it to
    each of the core's rows as ``"row"``; :attr:`indices` lists the flagged
    rows' indices alone, most suspect first.
    """

    row_of: tuple = ()

    def rows(self) -> list[dict]:
        """The core's rows (``position``, ``given``, ``suggested``, ``score``), each with its ``row``."""
        out = super().rows()
        for r, j in zip(out, self.entries()):  # the suspect entries in the order of the core's rows
            r["row"] = int(self.row_of[j])
        return out

    @property
    def indices(self) -> list[int]:
        """The flagged rows' indices in the user's data, most suspect first."""
        return [r["row"] for r in self.rows()]


def with_rows(result: Any, row_of: Any = None, *, n_stream: int | None = None) -> Any:
    """``result`` with its label issues as :class:`RowLabelIssues` (unchanged when there are none).

    Steps
    -----
    1. The core's suspect entry ``j`` is a fit row; its position in the stream
       the face passed (held-out rows counted) is the core's
       :meth:`~lip_agnostic.label_issues.LabelIssues.stream_position`.
    2. ``row_of`` (the stream's rows in the user's data, e.g. the training
       part of ``X``; default: the stream is the data) maps that on;
       ``n_stream`` (the rows the face streamed) checks it.
    """
    issues = result.label_issues
    if issues is None:
        return result
    n = int(issues.suspects.flags.shape[0])
    stream = [issues.stream_position(j) for j in range(n)]
    limit = len(row_of) if row_of is not None else n_stream
    if stream and limit is not None and limit <= stream[-1]:
        raise DataError(f"the label issues name stream row {stream[-1]} but the data has {limit} rows")
    if row_of is not None:
        stream = [int(row_of[i]) for i in stream]
    kept = {f.name: getattr(issues, f.name) for f in fields(issues) if f.name != "row_of"}
    return replace(result, label_issues=RowLabelIssues(**kept, row_of=tuple(stream)))
