"""LIP for Hugging Face Transformers: a ``TrainerCallback`` that refines the head at the end of training.

:class:`LIPCallback` waits for ``on_train_end``, then runs the torch faces'
finalize pass (:func:`lip_agnostic.adapters._torch_data.finalize_layer`) on
the model's classification head with the Trainer's own train dataloader; the
refined weight is written in place, so ``trainer.save_model()`` saves it.
This module only adapts Transformers' conventions (dict batches called as
``model(**inputs)``, ``labels`` with ``-100`` for ignored positions, the
one-token shift of causal language models); every formula lives in the core.

Example
-------
>>> from transformers import BertConfig, BertForSequenceClassification
>>> from lip_agnostic.adapters.transformers import LIPCallback, find_head
>>> model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
...     num_attention_heads=2, intermediate_size=32, num_labels=3))
>>> find_head(model)[0]
'classifier'
>>> LIPCallback(rank="auto")
LIPCallback(rank='auto', head=None, bias_mode='fit', validation='eval')
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import torch
from torch import nn

from lip_agnostic.errors import DataError, DataTypeError, OptionError, OptionTypeError
from transformers import TrainerCallback

from . import _face
from ._face import HEAD_NAMES, chooses, log_entry, reads_twice
from ._torch_data import (
    callback_repr,
    callback_settings,
    check_callback_head,
    check_classifier,
    check_not_shared,
    check_rank,
    distributed,
    finalize_layer,
    in_order,
    with_context,
)

__all__ = ["LIPCallback", "attach", "find_head", "HEAD_NAMES", "IGNORE_INDEX"]

#: Label value Transformers' losses ignore (padding, sub-word continuations).
IGNORE_INDEX = -100
#: What to do when ``label_repair`` must read a train dataloader the callback cannot replay in order.
_REPLAY_HINT = ("the Trainer's train dataloader cannot be read again in order here: after training run "
                "lip_agnostic.adapters.torch.finalize(<head>, DataLoader(<train set>, shuffle=False, "
                "collate_fn=<collator>), label_repair=...)")
#: ``refine_batches`` keywords this face sets itself.
_RESERVED = {"validation": "validation", "bias_mode": "bias_mode", "rank": "rank", "all_reduce": "all_reduce"}


def find_head(model: nn.Module, head: str | nn.Module | None = None) -> tuple[str, nn.Linear]:
    """The model's output layer: ``(dotted name, nn.Linear)``.

    Steps
    -----
    1. ``head`` given (a dotted name or a submodule): that layer.
    2. Otherwise the model's output embeddings (``get_output_embeddings()``,
       a language model's ``lm_head``) when they are an ``nn.Linear``, else
       the faces' one head search (:func:`lip_agnostic.adapters._face.find_head`,
       :data:`HEAD_NAMES`); a container head (RoBERTa's ``classifier``)
       resolves to its ``out_proj`` linear layer, the one producing the logits.
    3. That the layer produces the model's ``logits`` is checked on the first
       batch of the pass (a hidden layer such as ``bert.pooler.dense`` is refused).

    Raises
    ------
    OptionError
        No such module, or nothing found; the message lists the linear layers.
    DataTypeError
        The head is not an ``nn.Linear`` (see :func:`check_classifier`).
    """
    named = dict(model.named_modules())
    if head is None:
        get = getattr(model, "get_output_embeddings", None)
        out = get() if callable(get) else None
        if isinstance(out, nn.Linear):
            head = out
    name = _face.find_head(named, lambda m: isinstance(m, nn.Linear), owner=f"the model ({type(model).__name__})",
                           head=head)
    return name, check_classifier(named[name])


def _is_causal_lm(model: nn.Module) -> bool:
    """Whether Transformers' loss for this model shifts the labels (a causal language model)."""
    name = type(model).__name__
    if name.endswith("ForCausalLM"):
        return True
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - layout of older releases
        return False
    names: set = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return name in names


class _Batches:
    """Transformers' batch conventions for the finalize pass."""

    def __init__(self, label_key: str, shift: bool) -> None:
        self.label_key = label_key
        self.shift = shift

    def unpack(self, batch: Any) -> tuple[dict, Any]:
        if not hasattr(batch, "keys"):
            raise DataTypeError(f"a Transformers batch must be a dict of model inputs and {self.label_key!r}; "
                             f"got {type(batch).__name__}")
        inputs = {k: batch[k] for k in batch.keys()}
        if self.label_key not in inputs:
            raise DataError(f"the batch has no {self.label_key!r} (keys: {sorted(inputs)}); "
                             "LIP needs the training labels (pass label_key=...)")
        labels = inputs.pop(self.label_key)
        return inputs, labels

    @staticmethod
    def call(model: nn.Module, inputs: dict) -> Any:
        return model(**inputs)

    def select(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift causal-LM positions; drop the rows Transformers' loss ignores (label ``-100``)."""
        if self.shift:
            if features.ndim != 3 or labels.ndim != 2:
                raise DataError(f"a causal LM head expects features (n, s, q) and labels (n, s); got "
                                 f"{tuple(features.shape)} and {tuple(labels.shape)}")
            features, labels = features[:, :-1, :], labels[:, 1:]  # position t predicts token t + 1
        if labels.is_floating_point():
            return features, labels  # soft / multi-label targets: nothing is ignored
        features = features.reshape(-1, features.shape[-1]) if features.ndim > 2 else features
        labels = labels.reshape(-1)
        if features.shape[0] != labels.shape[0]:
            raise DataError(f"the head saw {features.shape[0]} positions but the batch has {labels.shape[0]} "
                             "labels; LIP needs one label per head input (sequence-level heads that pool after "
                             "the head, e.g. GPT-2's score, are not supported)")
        keep = labels != IGNORE_INDEX
        if not bool(keep.all()):
            features, labels = features[keep], labels[keep]
        return features, labels


class LIPCallback(TrainerCallback):
    """Apply LIP to the classification head when the ``Trainer`` finishes training.

    Steps
    -----
    1. ``on_train_begin``: find the head (:func:`find_head`), check ``rank``
       against its size and parse the LIP options (the core's LIPOptions), so a bad option fails
       before training, not after it.
    2. ``on_train_end``: one no-grad pass over the Trainer's train dataloader
       (under ``torch.distributed`` each process streams its shard and the
       core's sums are all-reduced); ``rank="auto"`` is scored on the
       ``eval_dataset`` (the Trainer's eval dataloader: :func:`attach` builds
       it, otherwise the one the Trainer built for evaluation during training)
       and, without one, on every 5th training sample held out of the refit.
    3. ``W*`` is written into the head in place (the bias is untouched on the
       paper's path; ``tail="full"``, beyond the paper, refits it too); the report
       goes into ``state.log_history`` (keys ``lip_*``, via ``trainer.log``
       when attached) and ``self.result`` (the core's ``LIPResult``).
       If anything fails, the head is left bit-identical and the error raised.

    ``label_repair`` (beyond the paper) reads the training data twice in the
    same order: the Trainer's shuffling train dataloader is then read as its
    dataset in order (same batch size and collator, every row: see
    :func:`~lip_agnostic.adapters._torch_data.in_order`), so
    ``self.result.label_issues.rows()``'s ``row`` is a dataset index for a
    sequence classifier (for token heads: the labelled positions, in order).
    Under ``torch.distributed`` it is refused (it ranks every row in one process).

    Parameters
    ----------
    rank : int, float in (0, 1], or "auto"
        Principal components kept (a float is an energy fraction).
    head : str or nn.Linear, optional
        The output layer (default: found by name, :data:`HEAD_NAMES`).
    bias_mode : {"fit", "ignore"}
        ``"fit"``: refit targets ``Y - 1 b^T``; ``"ignore"``: the paper's fit.
    validation : "eval", None, or an iterable of batches
        Held-out batches for ``rank="auto"``: ``"eval"`` the Trainer's
        ``eval_dataset``; ``None`` the hold-out of the training stream.
    label_key : str, optional
        Batch key of the labels (default: the Trainer's first ``label_names``, else ``"labels"``).
    shift_labels : bool or "auto"
        Shift labels one position left (causal LM heads). ``"auto"``: when the
        model is one of Transformers' causal language models (its loss shifts too).
    progress : bool or None
        Progress on stderr during the pass (rank 0 only); ``None`` (default):
        on a terminal only, so log files stay clean.
    **lip_options
        Passed to :func:`lip_agnostic.refine_batches` (``target_scale``,
        ``min_gain``, ``confidence``, ``holdout``, ``degenerate``, ...).

    Attributes
    ----------
    result : lip_agnostic.LIPResult or None
        After training; ``result.context`` holds the face facts (head name,
        world size, batches, samples, where ``rank="auto"`` was scored);
        with ``label_repair``, ``result.label_issues`` the flagged rows.
    """

    def __init__(
        self,
        *,
        rank: int | float | str = "auto",
        head: str | nn.Module | None = None,
        bias_mode: str = "fit",
        validation: str | Iterable | None = "eval",
        label_key: str | None = None,
        shift_labels: bool | str = "auto",
        progress: bool | None = None,
        **lip_options: Any,
    ) -> None:
        callback_settings(self, rank, head, bias_mode, validation, lip_options, label_key=label_key,
                          progress=progress, named_loader="eval", face="Transformers callback", reserved=_RESERVED)
        if shift_labels not in ("auto", True, False):
            raise OptionError(f"shift_labels must be True, False or 'auto'; got {shift_labels!r}")
        self.shift_labels = shift_labels
        self.trainer: Any = None

    def __repr__(self) -> str:
        return callback_repr(self)

    # ------------------------------------------------------------------ Trainer events
    def _layer(self, model: nn.Module) -> tuple[str, nn.Linear]:
        name, layer = find_head(model, self.head)
        check_not_shared(model, layer)  # tie_word_embeddings=True: LIP would rewrite the embeddings too
        return name, layer

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        if model is None:
            return
        _, layer = self._layer(model)
        check_callback_head(model, layer, self.rank, self.bias_mode, self.lip_options, self.validation,
                            face="Transformers callback", reserved=_RESERVED)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                     train_dataloader: Iterable | None = None, eval_dataloader: Iterable | None = None,
                     **kw: Any) -> None:
        if model is None or train_dataloader is None:
            raise DataError("on_train_end got no model or train_dataloader from the Trainer; LIP cannot run")
        name, layer = self._layer(model)
        rank = check_rank(self.rank, layer.weight)
        label_key = self.label_key or (list(args.label_names)[0] if getattr(args, "label_names", None) else "labels")
        shift = _is_causal_lm(model) if self.shift_labels == "auto" else bool(self.shift_labels)
        validation, source = self._validation(rank, eval_dataloader)
        batches = _Batches(label_key, shift)
        if reads_twice(self.lip_options) is not None:
            # the Trainer's train dataloader shuffles; the passes read its dataset in order
            train_dataloader = in_order(train_dataloader)
        result, facts = finalize_layer(
            layer, train_dataloader, model=model, rank=rank, validation=validation, bias_mode=self.bias_mode,
            lip_options=self.lip_options, progress=self.progress, unpack=batches.unpack, call=batches.call,
            select=batches.select, replay_hint=_REPLAY_HINT,
        )
        facts.update(face="transformers", head=name, validation=source, shift_labels=shift,
                     global_step=int(getattr(state, "global_step", 0)))
        self.result = with_context(result, facts)
        logs = log_entry(self.result)
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": int(getattr(state, "global_step", 0))})

    def _validation(self, rank: Any, eval_dataloader: Iterable | None) -> tuple[Iterable | None, str | None]:
        if not chooses(rank, self.lip_options):
            return None, None
        if self.validation is None:
            return None, "holdout"
        if not isinstance(self.validation, str):
            return self.validation, "given"
        if self.trainer is not None and getattr(self.trainer, "eval_dataset", None) is not None:
            return self.trainer.get_eval_dataloader(), "eval_dataset"
        if eval_dataloader is not None:
            return eval_dataloader, "eval_dataset"
        if distributed()[0] == 0:
            warnings.warn("rank='auto' found no eval_dataset (use attach(trainer) or let the Trainer evaluate); "
                          "scoring ranks on every 5th training sample held out of the refit", stacklevel=3)
        return None, "holdout"


def attach(trainer: Any, **options: Any) -> LIPCallback:
    """Add a :class:`LIPCallback` to ``trainer`` (same keywords) and return it.

    Attached, the callback scores ``rank="auto"`` on ``trainer.eval_dataset``
    (through ``trainer.get_eval_dataloader()``, so the Trainer's collator,
    batch size and sharding apply) even when the Trainer never evaluated, and
    logs its report with ``trainer.log``.

    Examples
    --------
    >>> callback = attach(trainer, rank="auto")  # doctest: +SKIP
    >>> trainer.train(); callback.result.selection.k  # doctest: +SKIP
    """
    if not hasattr(trainer, "add_callback") or not hasattr(trainer, "get_eval_dataloader"):
        raise OptionTypeError(f"trainer must be a transformers.Trainer; got {type(trainer).__name__}")
    callback = LIPCallback(**options)
    callback.trainer = trainer
    trainer.add_callback(callback)
    return callback
