"""LIP for Lightning: a ``lightning.pytorch.Callback`` that refines the head when ``fit`` ends.

:class:`LIPCallback` runs the torch faces' finalize pass
(:func:`lip_agnostic.adapters._torch_data.finalize_layer`) at ``on_fit_end``
on the LightningModule's output layer, with the train loader the Trainer
used (the datamodule's, with Lightning's ``DistributedSampler`` under DDP).
Under ``strategy="ddp"`` every process streams its shard and the core's sums
are all-reduced over the process group Lightning set up, so every process
writes the same ``W*`` (the same all-reduce as the PyTorch face). Every
formula lives in the core.

Example
-------
>>> from lip_agnostic.adapters.lightning import LIPCallback
>>> LIPCallback(rank=2, head="classifier")
LIPCallback(rank=2, head='classifier', bias_mode='fit', validation='val')
"""

from __future__ import annotations

from typing import Any, Iterable

import lightning.pytorch as pl
from torch import nn

from lip_agnostic.errors import DataError, OptionTypeError

from . import _face
from ._face import HEAD_NAMES, check_replayable, chooses, log_entry, reads_twice
from ._torch_data import (
    callback_repr,
    callback_settings,
    check_callback_head,
    check_classifier,
    check_rank,
    distributed,
    finalize_layer,
    in_order,
    with_context,
)

__all__ = ["LIPCallback", "find_head", "HEAD_NAMES"]

#: What to pass when ``label_repair`` must read a train loader the callback cannot replay in order.
_REPLAY_HINT = "pass LIPCallback(train=DataLoader(<train set>, shuffle=False)) (or a list of batches)"
#: ``refine_batches`` keywords this face sets itself.
_RESERVED = {"validation": "validation", "bias_mode": "bias_mode", "rank": "rank", "all_reduce": "all_reduce"}


def find_head(module: nn.Module, head: str | nn.Module | None = None) -> tuple[str, nn.Linear]:
    """The output layer: ``(dotted name, nn.Linear)``, by the faces' one head search
    (:func:`lip_agnostic.adapters._face.find_head`: ``head`` as a name or a submodule; else the first
    of :data:`HEAD_NAMES` the module has, or its one linear layer whose last name component is in it).
    That it produces the module's output is checked when the pass runs.

    Raises
    ------
    OptionError
        Nothing (or more than one layer) matches; the message lists the linear layers.
    DataTypeError
        The head is not an ``nn.Linear`` (see :func:`check_classifier`).
    """
    named = dict(module.named_modules())
    name = _face.find_head(named, lambda m: isinstance(m, nn.Linear), owner=type(module).__name__, head=head)
    return name, check_classifier(named[name])


def _one_loader(loaders: Any, what: str) -> Iterable | None:
    """A single loader out of what Lightning stores (a loader, or a 1-element list/dict of them)."""
    if loaders is None:
        return None
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        if len(loaders) != 1:
            raise DataError(f"the Trainer has {len(loaders)} {what} loaders; LIP needs one: pass {what}=<loader>")
        return loaders[0]
    return loaders


class LIPCallback(pl.Callback):
    """Apply LIP to the module's output layer at the end of ``Trainer.fit``.

    Steps
    -----
    1. ``on_fit_start``: find the head (:func:`find_head`), check ``rank``
       against its size and parse the LIP options (the core's LIPOptions) (fail before training).
    2. ``on_fit_end``: one no-grad pass of the LightningModule over the
       Trainer's train loader (``trainer.train_dataloader``; the datamodule's
       ``train_dataloader()`` if the Trainer holds none). ``rank="auto"`` is
       scored on the validation loader (``trainer.val_dataloaders``, else
       the datamodule's ``val_dataloader()``) or, without one, on every 5th
       training sample held out of the refit.
    3. Under DDP the core's sums are all-reduced (``torch.distributed``);
       every process writes the same ``W*``. Note that Lightning's
       ``DistributedSampler`` pads the last shard by repeating samples, so
       those few rows count twice, as they do in the training itself.
    4. The report goes to ``self.result`` (the core's ``LIPResult``) and to
       every logger (``lip_*`` metrics). If anything fails, the head is left
       bit-identical and the error raised.

    ``label_repair`` (beyond the paper) reads the training data twice in the
    same order: the Trainer's shuffling train loader is then read as its
    dataset in order (same batch size and collate function, every row: see
    :func:`~lip_agnostic.adapters._torch_data.in_order`), so
    ``self.result.label_issues.rows()``'s ``row`` is a dataset index; a
    ``train=`` loader must replay itself (no shuffling, not a generator).
    Under DDP ``label_repair`` is refused (it ranks every row in one process).

    Parameters
    ----------
    rank : int, float in (0, 1], or "auto"
    head : str or nn.Linear, optional
        The output layer (default: found by name, :data:`HEAD_NAMES`).
    bias_mode : {"fit", "ignore"}
    validation : "val", None, or an iterable of batches
        Held-out batches for ``rank="auto"`` (``"val"``: the Trainer's / datamodule's).
    train : iterable of batches, optional
        Batches to refit on instead of the Trainer's train loader.
    input_key, label_key : str, optional
        Keys of dict batches (defaults try common names).
    progress : bool or None
        Progress on stderr during the pass (rank 0 only); ``None`` (default):
        on a terminal only, so log files stay clean.
    **lip_options
        Passed to :func:`lip_agnostic.refine_batches`.
    """

    def __init__(
        self,
        *,
        rank: int | float | str = "auto",
        head: str | nn.Module | None = None,
        bias_mode: str = "fit",
        validation: str | Iterable | None = "val",
        train: Iterable | None = None,
        input_key: str | None = None,
        label_key: str | None = None,
        progress: bool | None = None,
        **lip_options: Any,
    ) -> None:
        callback_settings(self, rank, head, bias_mode, validation, lip_options, label_key=label_key,
                          progress=progress, named_loader="val", face="Lightning callback", reserved=_RESERVED)
        if train is not None and not hasattr(train, "__iter__"):
            raise OptionTypeError(f"train must be an iterable of batches; got {type(train).__name__}")
        reason = reads_twice(self.lip_options)
        if train is not None and reason is not None:  # refused now, not after training
            check_replayable(train, reason, what="the training loader", instead=_REPLAY_HINT)
        self.train = train
        self.input_key = input_key

    def __repr__(self) -> str:
        return callback_repr(self)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _, layer = find_head(pl_module, self.head)
        check_callback_head(pl_module, layer, self.rank, self.bias_mode, self.lip_options, self.validation,
                            face="Lightning callback", reserved=_RESERVED)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        name, layer = find_head(pl_module, self.head)
        rank = check_rank(self.rank, layer.weight)
        loader, loader_source = self._train_loader(trainer)
        if reads_twice(self.lip_options) is not None and loader_source != "given":
            # the Trainer's loader shuffles for training; the passes read its dataset in order
            replayed = in_order(loader)
            loader_source += " (in order)" if replayed is not loader else ""
            loader = replayed
        validation, source = self._validation(trainer, rank)
        result, facts = finalize_layer(
            layer, loader, model=pl_module, rank=rank, validation=validation, bias_mode=self.bias_mode,
            lip_options=self.lip_options, input_key=self.input_key, label_key=self.label_key,
            device=pl_module.device, progress=self.progress, replay_hint=_REPLAY_HINT,
        )
        facts.update(face="lightning", head=name, train=loader_source, validation=source,
                     global_step=int(trainer.global_step), strategy=type(trainer.strategy).__name__)
        self.result = with_context(result, facts)
        entry = {key: float(value) for key, value in log_entry(self.result).items()}
        for logger in trainer.loggers:
            logger.log_metrics(entry, step=int(trainer.global_step))

    def _train_loader(self, trainer: pl.Trainer) -> tuple[Iterable, str]:
        if self.train is not None:
            return self.train, "given"
        loader = _one_loader(trainer.train_dataloader, "train")
        if loader is not None:
            return loader, "trainer"
        dm = getattr(trainer, "datamodule", None)
        if dm is not None:
            return _one_loader(dm.train_dataloader(), "train"), "datamodule"
        raise DataError("the Trainer holds no train loader after fit and there is no datamodule; "
                         "pass LIPCallback(train=<loader>)")

    def _validation(self, trainer: pl.Trainer, rank: Any) -> tuple[Iterable | None, str | None]:
        if not chooses(rank, self.lip_options):
            return None, None
        if self.validation is None:
            return None, "holdout"
        if not isinstance(self.validation, str):
            return self.validation, "given"
        loader = _one_loader(trainer.val_dataloaders, "validation")
        if loader is not None:
            return loader, "val"
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and _overrides(dm, "val_dataloader"):
            return _one_loader(dm.val_dataloader(), "validation"), "val"
        if distributed()[0] == 0:
            import warnings

            warnings.warn("rank='auto' found no validation loader; scoring ranks on every 5th training sample "
                          "held out of the refit", stacklevel=2)
        return None, "holdout"


def _overrides(dm: Any, name: str) -> bool:
    """Whether a LightningDataModule defines ``name`` itself (the base class's raises)."""
    return getattr(type(dm), name, None) is not getattr(pl.LightningDataModule, name, None)
