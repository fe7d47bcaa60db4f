"""LIP for PyTorch: an optimizer wrapper, a hook-based attach, and the finalize pass.

Thin by design: this module moves weights and penultimate features between
PyTorch and the framework-free core; every formula lives in
:mod:`lip_agnostic` (:func:`~lip_agnostic.refine_batches`,
:func:`~lip_agnostic.project_principal`).

Three ways in:

- :class:`LIPOptimizer` wraps the optimizer you already use (it *is* a
  ``torch.optim.Optimizer``: schedulers, ``GradScaler``, grad clipping and
  ``torch.compile``d models work unchanged) and adds :meth:`LIPOptimizer.finalize`.
- :func:`attach` gives the same behaviour to an optimizer you cannot replace
  (a step post-hook); it returns a :class:`LIPHandle` with ``.remove()``.
- :func:`finalize` runs LIP once on a trained model, no optimizer needed.

Example
-------
>>> import torch
>>> from torch import nn
>>> from lip_agnostic.adapters.torch import LIPOptimizer
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
>>> opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[2], rank=2)
>>> data = [(torch.randn(32, 8), torch.randint(0, 4, (32,))) for _ in range(4)]
>>> for x, y in data:
...     opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()
>>> result = opt.finalize(data, progress=False)
>>> result.k, result.n_fit
(2, 128)
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any, Callable, Iterable, Literal

import torch
from torch import nn

from lip_agnostic import LIPResult, project_principal
from lip_agnostic.errors import DataError, DataTypeError, OptionError, OptionTypeError

from ._face import check_selection_use
from ._torch_data import (
    DEFAULT_CHUNK_ROWS,
    check_bias_mode,
    check_classifier,
    check_lip_options,
    check_not_shared,
    check_rank,
    ddp_all_reduce,
    finalize_layer,
)

__all__ = ["LIPOptimizer", "LIPHandle", "attach", "finalize", "ddp_all_reduce", "BiasMode"]

BiasMode = Literal["fit", "ignore"]
Rank = int | float | str
AllReduceArg = Callable[[torch.Tensor], torch.Tensor] | Literal["auto"] | None

#: ``refine_batches`` keywords the adapter sets itself beyond every face's (the layer's bias, the factors...).
_RESERVED = {"all_reduce": "all_reduce"}
_STATE_VERSION = 1


# --------------------------------------------------------------------------- validation helpers
def _check_rank(rank: Any, weight: torch.Tensor, name: str = "rank") -> Rank:
    """Validate ``rank`` now (not after training): ``"auto"``, an int in ``[0, m]`` or a fraction in (0, 1]."""
    return check_rank(rank, weight, name)


def _check_bias_mode(bias_mode: Any) -> BiasMode:
    return check_bias_mode(bias_mode, "bias_mode")  # type: ignore[return-value]


def _check_lip_options(options: dict, weight: torch.Tensor, rank: Rank = 2, bias: Any = None, *,
                       combine: bool = True) -> dict:
    """Reject unknown or adapter-owned keywords; parse them with the core's LIPOptions (see ``check_lip_options``)."""
    return check_lip_options(options, weight, rank, bias, reserved=_RESERVED, face="PyTorch adapter", combine=combine)


def _check_in_optimizer(optimizer: torch.optim.Optimizer, classifier: nn.Linear) -> None:
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if id(classifier.weight) not in ids:
        raise DataError(
            f"classifier.weight (shape {tuple(classifier.weight.shape)}) is not among the optimizer's "
            f"parameters ({len(ids)} tensors in {len(optimizer.param_groups)} group(s)); pass the "
            "classifier of the model this optimizer trains"
        )


# --------------------------------------------------------------------------- the finalize pass
def finalize(
    classifier: nn.Linear,
    loader: Iterable,
    /,
    *,
    model: nn.Module | None = None,
    rank: Rank = "auto",
    validation: Iterable | None = None,
    bias_mode: BiasMode = "fit",
    input_key: str | None = None,
    label_key: str | None = None,
    device: torch.device | str | None = None,
    all_reduce: AllReduceArg = "auto",
    progress: bool | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    allow_hidden_layer: bool = False,
    **lip_options: Any,
) -> LIPResult:
    """Run LIP once on a trained classifier: one no-grad pass, then write ``W*`` in place.

    Steps
    -----
    1. Put ``model`` (default: the outermost module containing
       ``classifier``, ``torch.compile``/DDP wrappers peeled off) in eval
       mode; a forward hook on ``classifier`` captures its inputs, the
       penultimate features ``X``. On the first batch the hook also checks
       that the model's output comes from ``classifier`` through element-wise
       ops only (softmax, an activation): a hidden layer is refused, and so
       is a weight or bias tied to another module (an embedding).
    2. Stream ``(X, labels)`` per batch, never holding all of ``X``, into
       :func:`lip_agnostic.refine_batches` with ``W = classifier.weight.T``
       (``(q, l)``), the layer's bias (in the fit with ``bias_mode="fit"``),
       ``rank`` and, for ``rank="auto"``, the ``validation`` batches (without
       them the core holds out every 5th training sample to score the ranks).
    3. Under ``torch.distributed`` the core's partial sums are all-reduced,
       so every rank writes the same ``W*`` as one process over all data.
    4. Write ``W*.T`` into ``classifier.weight`` in its dtype and device;
       restore every submodule's train/eval flag. If anything fails, the
       weight is left exactly as it was.

    Parameters
    ----------
    classifier : nn.Linear
        The final layer, weight ``(l classes, q features)``.
    loader : iterable
        Yields ``(inputs, labels, ...)`` tuples or dicts (``input_key``,
        ``label_key``; defaults try common names). Labels: int ``(n,)`` in
        ``[0, l)``, or a target matrix ``(n, l)`` (soft labels, candidate sets).
    model : nn.Module, optional
        What to run on the inputs (default: found from ``classifier``).
    rank : int, float in (0, 1], or "auto"
        Principal components kept (a float is an energy fraction); read by
        :func:`lip_agnostic.options.parse_rank`.
    validation : iterable, optional
        Held-out batches (noisy labels are fine) to choose ``rank="auto"``.
    bias_mode : {"fit", "ignore"}
        ``"fit"`` (default): the refit targets ``Y - 1 b^T`` with the layer's
        bias ``b`` (a layer that adds ``b`` is fit against what the weight must produce).
        ``"ignore"``: the paper's reference code (bias left out of the fit).
        The bias itself is changed only by ``tail="full"`` with ``"fit"``.
    input_key, label_key : str, optional
        Keys of dict batches.
    device : torch.device, optional
        Where inputs go (default: the model's first parameter's device).
    all_reduce : "auto", None or callable
        ``"auto"``: ``torch.distributed.all_reduce`` when a process group
        with more than one rank is initialized.
    progress : bool
        Progress on stderr (rank 0 only): a tqdm bar over the feature pass, and
        the core's lines for the statistics, candidates and held-out pass;
        ``None`` (default): on a terminal only, so log files stay clean.
    chunk_rows : int
        Consecutive batches are concatenated into chunks of at least this
        many rows before they reach the core (bounded memory,
        ``O(chunk_rows * q)``; far less per-batch overhead). ``0``: hand
        over every batch as it comes.
    allow_hidden_layer : bool
        The escape hatch for a multi-head model: refine ``classifier`` even
        though the model's output reaches it through other layers (default
        False: refused, as refitting a hidden layer against the labels
        rewrites what the layers after it read).
    **lip_options
        Passed to :func:`lip_agnostic.refine_batches` (``target_scale``,
        ``degenerate``, ``min_gain``, ``holdout``, ...; ``tail="full"``,
        ``ridge=``: the full-tail ridge refit, beyond the paper, which also
        refits the bias). ``label_repair="auto"`` (beyond the paper, with
        ``rank="auto"``) also tries ridge heads fit without, or with
        corrected, the labels that look wrong; it and ``label_issues=True``
        read ``loader`` twice in the same order, so a generator or a
        shuffling ``DataLoader`` is refused before anything runs (pass a
        ``DataLoader`` with ``shuffle=False``).

    Returns
    -------
    LIPResult
        The core's result, as every face returns it: ``.k``, ``.selection``,
        ``.summary`` (spectrum before/after, ``kept_unchanged``,
        ``top_k_angle``, ...), ``.n_fit``, ``.n_degenerate``, ``.to_dict()``
        (the JSON report), and ``.context``: ``bias_mode``, ``bias_in_fit``
        (whether a bias entered the fit), ``bias_refit``, ``tail``, ``dtype``,
        ``device``, ``world_size``, ``n_batches``, ``n_samples_local``,
        ``n_val_batches`` and ``seconds``. With ``label_repair`` or
        ``label_issues=True``, ``.label_issues.rows()`` lists the flagged
        rows, most suspect first: ``position`` (the core's), ``row``
        (the row's index in the order ``loader`` yields rows, held-out rows
        counted), ``given``, ``suggested``, ``score``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from lip_agnostic.adapters.torch import finalize
    >>> g = torch.Generator().manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    >>> data = [(torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g)) for _ in range(3)]
    >>> finalize(model[2], data, rank=1, progress=False).n_fit
    60
    """
    classifier = check_classifier(classifier)
    rank = _check_rank(rank, classifier.weight)
    bias_mode = _check_bias_mode(bias_mode)
    lip_options = _check_lip_options(lip_options, classifier.weight, combine=False)  # the real run checks values
    result, facts = finalize_layer(
        classifier, loader, model=model, rank=rank, validation=validation, bias_mode=bias_mode,
        lip_options=lip_options, input_key=input_key, label_key=label_key, device=device, all_reduce=all_reduce,
        progress=progress, chunk_rows=chunk_rows, allow_hidden_layer=allow_hidden_layer,
    )
    return replace(result, context={**result.context, **facts})


# --------------------------------------------------------------------------- shared controller
class _LIPController:
    """What LIPOptimizer and attach share: the classifier, LIP's settings and its step counter."""

    def __init__(
        self,
        classifier: nn.Linear,
        *,
        model: nn.Module | None,
        rank: Rank,
        bias_mode: BiasMode,
        project_every: int | None,
        project_rank: int | float | None,
        lip_options: dict,
    ) -> None:
        self.classifier = check_classifier(classifier)
        self.rank = _check_rank(rank, classifier.weight)
        self.bias_mode = _check_bias_mode(bias_mode)
        self.lip_options = _check_lip_options(
            lip_options, classifier.weight, self.rank, classifier.bias if self.bias_mode == "fit" else None)
        check_selection_use(self.rank, self.lip_options)  # before training, not after
        if model is not None and not isinstance(model, nn.Module):
            raise OptionTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if model is not None:
            check_not_shared(model, classifier)  # a tied head: refused before training, not after
        self.model = model
        if project_every is not None:
            if isinstance(project_every, bool) or not isinstance(project_every, int) or project_every < 1:
                raise OptionError(f"project_every must be a positive number of steps or None; got {project_every!r}")
            if project_rank is None:
                if isinstance(self.rank, str):
                    raise OptionError("project_every needs project_rank=... (an int or energy fraction) when rank='auto'")
                project_rank = self.rank
        if project_rank is not None:
            project_rank = _check_rank(project_rank, classifier.weight, "project_rank")
            if isinstance(project_rank, str):
                raise OptionError("project_rank must be an int or an energy fraction in (0, 1]; got 'auto'")
        self.project_every = project_every
        self.project_rank = project_rank
        self.steps = 0
        self.projections = 0

    def after_step(self) -> None:
        self.steps += 1
        if self.project_every is not None and self.steps % self.project_every == 0:
            self.project_now()

    def project_now(self, rank: int | float | None = None) -> None:
        """Replace the classifier's weight by its best rank-``k`` approximation (PSP only)."""
        rank = self.project_rank if rank is None else _check_rank(rank, self.classifier.weight, "rank")
        if rank is None:
            raise OptionError("no projection rank: pass project_now(rank) or project_rank=... at construction")
        weight = self.classifier.weight
        with torch.no_grad():
            Wk = project_principal(weight.detach().T, rank)
            weight.copy_(Wk.T)
        self.projections += 1

    def finalize(self, loader: Iterable, **kwargs: Any) -> LIPResult:
        options = dict(self.lip_options)
        for key in list(kwargs):
            if key not in inspect.signature(finalize).parameters:
                options[key] = kwargs.pop(key)
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("rank", self.rank)
        kwargs.setdefault("bias_mode", self.bias_mode)
        result = finalize(self.classifier, loader, **kwargs, **options)
        return replace(result, context={**result.context, "steps": self.steps, "projections": self.projections})

    def state_dict(self) -> dict:
        return {"version": _STATE_VERSION, "steps": self.steps, "projections": self.projections}

    def load_state_dict(self, state: Any) -> None:
        self.steps, self.projections = self.checked_state(state)

    @staticmethod
    def checked_state(state: Any) -> tuple[int, int]:
        """``(steps, projections)`` of a LIP state, validated; nothing is changed."""
        if not isinstance(state, dict):
            raise DataTypeError(f"the LIP state must be a dict; got {type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise DataError(f"unsupported LIP state version {state.get('version')!r}; expected {_STATE_VERSION}")
        for key in ("steps", "projections"):
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DataError(f"LIP state {key!r} must be a non-negative int; got {value!r}")
        return state["steps"], state["projections"]


# --------------------------------------------------------------------------- the optimizer wrapper
class _LIPFace:
    """What :class:`LIPOptimizer` and :class:`LIPHandle` share: delegation to one ``_LIPController``."""

    _lip: _LIPController

    @property
    def classifier(self) -> nn.Linear:
        """The layer LIP refines."""
        return self._lip.classifier

    def project_now(self, rank: int | float | None = None) -> None:
        """Project the classifier onto its top principal components now (default rank: ``project_rank``)."""
        self._lip.project_now(rank)

    def finalize(self, loader: Iterable, /, **kwargs: Any) -> LIPResult:
        """LIP on the trained classifier; see :func:`finalize` for the keywords and the result.

        The constructor's ``rank``, ``model``, ``bias_mode`` and LIP options
        are the defaults; any of them can be overridden here. The result's
        ``context`` also holds ``steps`` and ``projections``.
        """
        return self._lip.finalize(loader, **kwargs)


class LIPOptimizer(_LIPFace, torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that trains like ``base_optimizer`` and adds LIP.

    The wrapper shares ``param_groups``, ``state``, ``defaults`` and the hook
    registries of the base optimizer by reference, so LR schedulers,
    ``torch.amp.GradScaler`` (fused optimizers included), gradient clipping
    and step hooks see one optimizer. ``step`` delegates to the base, then
    (optionally) applies the periodic principal-subspace projection.

    Steps
    -----
    1. Training: ``step()`` = ``base_optimizer.step()``; every
       ``project_every`` steps (off by default; not in the paper)
       ``classifier.weight.T`` is replaced by its rank-``project_rank``
       approximation (:func:`lip_agnostic.project_principal`).
    2. After training: :meth:`finalize` runs :func:`finalize` (one
       no-grad pass, ``W*`` written into the classifier).

    Parameters
    ----------
    base_optimizer : torch.optim.Optimizer
        Must hold ``classifier.weight``.
    classifier : nn.Linear
        The final layer.
    rank : int, float in (0, 1], or "auto"
        Rank for :meth:`finalize` (default ``"auto"``: scored on held-out
        data).
    model : nn.Module, optional
        The model to run in :meth:`finalize` (default: found from ``classifier``).
    bias_mode : {"fit", "ignore"}
        See :func:`finalize`.
    project_every : int, optional
        Project every this many optimizer steps (``len(train_loader)`` for
        once per epoch); call :meth:`project_now` to do it by hand.
    project_rank : int or float, optional
        Rank of that projection (default: ``rank`` when it is not ``"auto"``).
    **lip_options
        Passed to :func:`lip_agnostic.refine_batches` (``target_scale``,
        ``degenerate``, ``min_gain``, ``holdout``, ...); checked now.

    ``state_dict()`` is the base optimizer's state dict plus a ``"lip"``
    entry (so it also loads into a bare base optimizer);
    ``load_state_dict`` accepts it or a bare base-optimizer checkpoint
    (the LIP step counter then restarts at 0).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from lip_agnostic.adapters.torch import LIPOptimizer
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), classifier=model[2])
    >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    >>> opt.param_groups is opt.base_optimizer.param_groups
    True
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        classifier: nn.Linear,
        *,
        rank: Rank = "auto",
        model: nn.Module | None = None,
        bias_mode: BiasMode = "fit",
        project_every: int | None = None,
        project_rank: int | float | None = None,
        **lip_options: Any,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise OptionTypeError(f"base_optimizer must be a torch.optim.Optimizer; got {type(base_optimizer).__name__}")
        if isinstance(base_optimizer, LIPOptimizer):
            raise OptionTypeError("base_optimizer is already a LIPOptimizer; wrap the plain optimizer once")
        torch._C._log_api_usage_once("lip_agnostic.adapters.torch.LIPOptimizer")
        check_classifier(classifier)
        _check_in_optimizer(base_optimizer, classifier)
        self._lip = _LIPController(
            classifier, model=model, rank=rank, bias_mode=bias_mode, project_every=project_every,
            project_rank=project_rank, lip_options=lip_options,
        )
        self.base_optimizer = base_optimizer
        self._share_with_base()

    # ``param_groups``, ``state`` and ``defaults`` ARE the base's: properties, so they stay the
    # same objects even when the base rebinds them (its load_state_dict does).
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.base_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base_optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.base_optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base_optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base_optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base_optimizer.defaults = value

    def _share_with_base(self) -> None:
        """Point the hook registries ``torch.optim.Optimizer`` reads at the base's own dicts."""
        base = self.base_optimizer
        for name in (
            "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
        ):
            setattr(self, name, getattr(base, name))
        self._warned_capturable_if_run_uncaptured = True

    # -- the optimizer protocol, delegated
    @property
    def _step_supports_amp_scaling(self) -> bool:  # fused optimizers + GradScaler
        return bool(getattr(self.base_optimizer, "_step_supports_amp_scaling", False))

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """``base_optimizer.step(closure)``, then the periodic projection if it is due."""
        base = self.base_optimizer
        forwarded = [n for n in ("grad_scale", "found_inf") if n in self.__dict__]  # set by GradScaler
        for name in forwarded:
            setattr(base, name, self.__dict__[name])
        try:
            out = base.step() if closure is None else base.step(closure)
        finally:
            for name in forwarded:
                base.__dict__.pop(name, None)
        found_inf = self.__dict__.get("found_inf")
        if found_inf is None or not bool(found_inf):  # a fused step GradScaler skipped is not a step
            self._lip.after_step()
        return out

    # The base's step runs the (shared) step hooks; never wrap this one a second time.
    step.hooked = True  # type: ignore[attr-defined]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.base_optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict plus ``"lip"`` (LIP's step counter)."""
        sd = self.base_optimizer.state_dict()
        sd["lip"] = self._lip.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output, or a bare base-optimizer state dict."""
        if not isinstance(state_dict, dict):
            raise DataTypeError(f"state_dict must be a dict; got {type(state_dict).__name__}")
        sd = dict(state_dict)
        lip_state = sd.pop("lip", None)
        counts = (0, 0) if lip_state is None else self._lip.checked_state(lip_state)  # validate, change nothing
        try:
            self.base_optimizer.load_state_dict(sd)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"the base optimizer refused the state dict ({exc}); the LIP step counter is "
                            "unchanged") from exc
        self._lip.steps, self._lip.projections = counts  # only once the base has taken its part

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._share_with_base()

    def __repr__(self) -> str:
        c = self._lip
        return (f"LIPOptimizer({self.base_optimizer!r},\n  classifier={c.classifier!r}, rank={c.rank!r}, "
                f"bias_mode={c.bias_mode!r}, project_every={c.project_every!r})")

    # -- LIP (classifier, project_now, finalize: from _LIPFace)
    @property
    def lip_steps(self) -> int:
        """Optimizer steps taken through this wrapper (drives ``project_every``)."""
        return self._lip.steps


# --------------------------------------------------------------------------- attach
class LIPHandle(_LIPFace):
    """What :func:`attach` returns: ``remove()``, ``finalize()``, ``project_now()``.

    Also a context manager that removes the hook on exit.
    """

    def __init__(self, controller: _LIPController, hook: Any, optimizer: torch.optim.Optimizer) -> None:
        self._lip = controller
        self._hook = hook
        self.optimizer = optimizer
        self.attached = True

    def remove(self) -> None:
        """Detach from the optimizer (idempotent); ``finalize`` still works afterwards."""
        if self.attached:
            self._hook.remove()
            self.attached = False

    @property
    def steps(self) -> int:
        """Optimizer steps seen while attached."""
        return self._lip.steps

    def state_dict(self) -> dict:
        """LIP's own state (the step counter); save it next to the optimizer's."""
        return self._lip.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._lip.load_state_dict(state)

    def __enter__(self) -> "LIPHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"LIPHandle(attached={self.attached}, steps={self.steps}, rank={self._lip.rank!r})"


def attach(
    optimizer: torch.optim.Optimizer,
    classifier: nn.Linear,
    *,
    rank: Rank = "auto",
    model: nn.Module | None = None,
    bias_mode: BiasMode = "fit",
    project_every: int | None = None,
    project_rank: int | float | None = None,
    **lip_options: Any,
) -> LIPHandle:
    """Give ``optimizer`` LIP's behaviour without replacing it (a step post-hook).

    Same keywords as :class:`LIPOptimizer`. The hook counts steps and runs
    the periodic projection (when ``project_every`` is set);
    ``handle.finalize(loader)`` runs LIP; ``handle.remove()`` detaches.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from lip_agnostic.adapters.torch import attach
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> opt = torch.optim.Adam(model.parameters())
    >>> handle = attach(opt, model[2], rank=2, project_every=10)
    >>> handle.remove()
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise OptionTypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    check_classifier(classifier)
    _check_in_optimizer(optimizer, classifier)
    controller = _LIPController(
        classifier, model=model, rank=rank, bias_mode=bias_mode, project_every=project_every,
        project_rank=project_rank, lip_options=lip_options,
    )
    hook = optimizer.register_step_post_hook(lambda opt, args, kwargs: controller.after_step())
    return LIPHandle(controller, hook, optimizer)

