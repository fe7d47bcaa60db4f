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

Example
-------
>>> from lip_agnostic.adapters._face import face_options, unused_selection_options
>>> face_options(face="PyTorch adapter", reserved={}, tail="full")
{'tail': 'full'}
>>> unused_selection_options(3, {"confidence": 0.9})
['confidence']
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from lip_agnostic.errors import OptionError, OptionTypeError
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
    held-out data, ``lip_val_score`` and ``lip_val_base_score``.
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
    return entry
