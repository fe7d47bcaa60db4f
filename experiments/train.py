"""Base learners for the accuracy study: an MLP (CE or GCE loss) and a linear learner, in PyTorch on CPU.

Every learner is trained on *candidate masks* ``C`` (bool ``(n, l)``): a one-hot
row for a (noisy) label, several ones for a partial-label candidate set. With
``p_S = sum_{j in S} softmax(z)_j`` the mass the model puts on the candidates:

1. ``loss="ce"``:  ``-log p_S`` — cross-entropy for one-hot rows; the
   classifier-consistent partial-label loss (Feng et al., NeurIPS 2020) otherwise.
2. ``loss="gce"``: ``(1 - p_S^q) / q`` with ``q = 0.7`` — generalized cross-entropy
   (Zhang & Sabuncu, NeurIPS 2018), its candidate-set form otherwise.

What comes back is a :class:`HeadSnapshot` per checkpoint (an early and the
final epoch): the final layer's ``W (q, l)`` and ``b (l,)`` and the penultimate
features of the train / validation / test rows — everything LIP needs, so the
trained network itself need not be kept.

Example
-------
>>> import numpy as np
>>> from experiments.train import TrainConfig, train_mlp
>>> rng = np.random.default_rng(0)
>>> x = rng.random((200, 12), dtype=np.float32); c = np.eye(3, dtype=bool)[rng.integers(0, 3, 200)]
>>> snaps = train_mlp(x, c, {"val": x[:20], "test": x[:20]}, TrainConfig(hidden=(16, 8), epochs=2))
>>> sorted(snaps), snaps["late"].W.shape
(['early', 'late'], (8, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

__all__ = ["TrainConfig", "HeadSnapshot", "train_mlp", "train_linear", "train_cnn", "candidate_loss", "softmax",
           "GCE_Q", "CNN_CHANNELS"]

#: GCE's exponent (Zhang & Sabuncu 2018 use q = 0.7).
GCE_Q = 0.7
#: Channels of the small CNN's two convolutions (:func:`train_cnn`).
CNN_CHANNELS = (8, 16)


@dataclass(frozen=True)
class TrainConfig:
    """How a learner is trained.

    Attributes
    ----------
    loss : {"ce", "gce"}
    hidden : tuple of int
        MLP hidden widths (ignored by the linear learner); the last one is ``q``.
    epochs : int
        Training epochs; the ``"late"`` snapshot is taken after the last one.
    early_epoch : int or None
        Epoch after which the ``"early"`` snapshot is taken (default ``max(1, epochs // 4)``).
    lr, weight_decay, batch_size : float, float, int
        Adam settings.
    seed : int
    project_every_epoch : float or int or None
        If set, the final layer's weight is replaced after every epoch by
        ``lip_agnostic.project_principal(W, project_every_epoch)`` (periodic PSP).
    threads : int
        ``torch.set_num_threads`` (1 or 2; 1 is several times faster than 2 when
        the two cores are shared with other jobs, as measured here).
    """

    loss: Literal["ce", "gce"] = "ce"
    hidden: tuple[int, ...] = (256, 128)
    epochs: int = 20
    early_epoch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    seed: int = 0
    project_every_epoch: float | int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "gce"):
            raise ValueError(f"loss must be 'ce' or 'gce'; got {self.loss!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer; got {self.epochs!r}")
        if self.early_epoch is not None and not (1 <= self.early_epoch <= self.epochs):
            raise ValueError(f"early_epoch must lie in [1, {self.epochs}]; got {self.early_epoch}")
        if not self.hidden or any((not isinstance(h, int)) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty tuple of positive ints; got {self.hidden!r}")
        if not 1 <= self.threads <= 2:
            raise ValueError(f"threads must be 1 or 2 on this shared machine; got {self.threads}")

    @property
    def early(self) -> int:
        """The epoch of the early snapshot."""
        return self.early_epoch if self.early_epoch is not None else max(1, self.epochs // 4)


@dataclass
class HeadSnapshot:
    """The final linear layer and its input features at one checkpoint.

    Attributes
    ----------
    epoch : int
    W : ndarray (q, l) float64
        Final-layer weight, features in, classes out.
    b : ndarray (l,) float64
    features : dict of str -> ndarray (n_split, q) float32
        Penultimate features per split: ``"train"`` plus the extra splits passed in.
    forward_s : dict of str -> float
        CPU seconds (``time.process_time``) of the network's forward pass that
        produced each split's features (empty when not measured).
    """

    epoch: int
    W: np.ndarray
    b: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    forward_s: dict[str, float] = field(default_factory=dict)

    def logits(self, split: str, W: np.ndarray | None = None) -> np.ndarray:
        """``features[split] @ W + b`` (``W`` defaults to the trained weight)."""
        W = self.W if W is None else W
        return self.features[split].astype(np.float64) @ W + self.b

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` view for ``np.savez``."""
        out = {f"{prefix}/epoch": np.asarray(self.epoch), f"{prefix}/W": self.W, f"{prefix}/b": self.b}
        out.update({f"{prefix}/x/{k}": v for k, v in self.features.items()})
        out.update({f"{prefix}/t/{k}": np.asarray(v) for k, v in self.forward_s.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "HeadSnapshot":
        """Inverse of :meth:`to_arrays`."""
        feats = {k.split("/", 2)[2]: arrays[k] for k in arrays if k.startswith(f"{prefix}/x/")}
        times = {k.split("/", 2)[2]: float(arrays[k]) for k in arrays if k.startswith(f"{prefix}/t/")}
        return cls(int(arrays[f"{prefix}/epoch"]), arrays[f"{prefix}/W"], arrays[f"{prefix}/b"], feats, times)


def candidate_loss(logits, candidates, loss: str):
    """Mean loss on candidate masks (see the module docstring); torch tensors in, scalar out."""
    import torch

    logp = torch.log_softmax(logits, dim=1)
    masked = logp.masked_fill(~candidates, float("-inf"))
    log_ps = torch.logsumexp(masked, dim=1)
    if loss == "ce":
        return -log_ps.mean()
    if loss == "gce":
        return ((1.0 - torch.exp(GCE_Q * log_ps)) / GCE_Q).mean()
    raise ValueError(f"loss must be 'ce' or 'gce'; got {loss!r}")


def _check_inputs(x: np.ndarray, candidates: np.ndarray, extra: dict[str, np.ndarray]) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n, d); got shape {x.shape}")
    if candidates.ndim != 2 or candidates.shape[0] != x.shape[0] or candidates.dtype != bool:
        raise ValueError(f"candidates must be bool (n, l) with n = {x.shape[0]}; got {candidates.dtype} {candidates.shape}")
    if not candidates.any(axis=1).all():
        raise ValueError("every row of candidates needs at least one candidate class")
    for name, a in extra.items():
        if a.ndim != 2 or a.shape[1] != x.shape[1]:
            raise ValueError(f"split {name!r} must be (n, {x.shape[1]}); got {a.shape}")


def _fit(model, head, x, candidates, cfg: TrainConfig, snapshot: Callable[[int], None]) -> None:
    """Adam over shuffled mini-batches; ``snapshot(epoch)`` after each epoch."""
    import torch

    g = torch.Generator().manual_seed(cfg.seed)
    xt, ct = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(candidates)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = xt.shape[0]
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            candidate_loss(model(xt[idx]), ct[idx], cfg.loss).backward()
            opt.step()
        if cfg.project_every_epoch is not None:
            _project_head(head, cfg.project_every_epoch)
        snapshot(epoch)


def _project_head(head, k) -> None:
    """Periodic PSP: ``head.weight <- project_principal(weight^T, k)^T`` through the core."""
    import torch
    from lip_agnostic import project_principal

    with torch.no_grad():
        W = head.weight.detach().T.contiguous()
        head.weight.copy_(project_principal(W, k).T)


def _snap(trunk, head, splits: dict[str, np.ndarray], epoch: int) -> HeadSnapshot:
    import time

    import torch

    trunk.eval()
    feats, times = {}, {}
    with torch.no_grad():
        for name, a in splits.items():
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            c0 = time.process_time()
            # the whole network's forward pass (trunk + head), as a deployed model runs it
            parts = []
            for i in range(0, t.shape[0], 4096):
                f = trunk(t[i:i + 4096])
                head(f)
                parts.append(f)
            times[name] = time.process_time() - c0
            feats[name] = torch.cat(parts).numpy()
    trunk.train()
    W = head.weight.detach().double().numpy().T.copy()
    b = head.bias.detach().double().numpy().copy()
    return HeadSnapshot(epoch, W, b, feats, times)


def _train(trunk, head, x, candidates, extra, cfg) -> dict[str, HeadSnapshot]:
    import torch

    model = torch.nn.Sequential(trunk, head)
    splits = {"train": x, **extra}
    snaps: dict[str, HeadSnapshot] = {}

    def snapshot(epoch: int) -> None:
        if epoch == cfg.early:
            snaps["early"] = _snap(trunk, head, splits, epoch)
        if epoch == cfg.epochs:
            snaps["late"] = _snap(trunk, head, splits, epoch)

    _fit(model, head, x, candidates, cfg, snapshot)
    return snaps


def train_mlp(x: np.ndarray, candidates: np.ndarray, extra: dict[str, np.ndarray],
              cfg: TrainConfig) -> dict[str, HeadSnapshot]:
    """Train ``d -> hidden... -> l`` (ReLU) and snapshot its head early and late.

    Parameters
    ----------
    x : ndarray (n, d) float32
    candidates : ndarray (n, l) bool
        One-hot noisy labels, or partial-label candidate sets.
    extra : dict of str -> ndarray (n_s, d)
        Other splits whose penultimate features are wanted (e.g. ``"val"``, ``"test"``).
    cfg : TrainConfig

    Returns
    -------
    dict with keys ``"early"`` and ``"late"`` -> :class:`HeadSnapshot`
    """
    import torch

    _check_inputs(x, candidates, extra)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    layers, width = [], x.shape[1]
    for h in cfg.hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    trunk = torch.nn.Sequential(*layers)
    head = torch.nn.Linear(width, candidates.shape[1])
    return _train(trunk, head, x, candidates, extra, cfg)


def train_linear(x: np.ndarray, candidates: np.ndarray, extra: dict[str, np.ndarray],
                 cfg: TrainConfig) -> dict[str, HeadSnapshot]:
    """The "stand-alone" linear learner: multinomial logistic regression on the raw inputs.

    Its "penultimate features" are the inputs themselves, so LIP refits the
    ``(d, l)`` weight against the pixels. Same loss, optimiser and snapshots
    as :func:`train_mlp`.
    """
    import torch

    _check_inputs(x, candidates, extra)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    trunk = torch.nn.Identity()
    head = torch.nn.Linear(x.shape[1], candidates.shape[1])
    return _train(trunk, head, x, candidates, extra, cfg)


def train_cnn(x: np.ndarray, candidates: np.ndarray, extra: dict[str, np.ndarray], cfg: TrainConfig,
              image_shape: tuple[int, int], channels: tuple[int, int] = CNN_CHANNELS) -> dict[str, HeadSnapshot]:
    """A small CNN: two 5x5 convolutions (ReLU, 2x2 max-pool each), then the linear head.

    ``x`` holds flattened single-channel images of ``image_shape`` (e.g. 28x28
    Fashion-MNIST). Layers: ``conv(1 -> c1, 5) -> ReLU -> maxpool 2 ->
    conv(c1 -> c2, 5) -> ReLU -> maxpool 2 -> flatten`` (the penultimate
    features, ``q = c2 * 4 * 4`` for 28x28) ``-> Linear(q, l)``. Same loss,
    optimiser and snapshots as :func:`train_mlp` (``cfg.hidden`` is ignored).
    """
    import torch

    _check_inputs(x, candidates, extra)
    if (len(image_shape) != 2 or int(np.prod(image_shape)) != x.shape[1]
            or min(image_shape) < 16):
        raise ValueError(f"image_shape must be (h, w) with h * w = {x.shape[1]} and h, w >= 16; got {image_shape}")
    if len(channels) != 2 or any((not isinstance(c, int)) or c < 1 for c in channels):
        raise ValueError(f"channels must be two positive ints; got {channels!r}")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    h, w = image_shape
    c1, c2 = channels
    trunk = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, h, w)),
        torch.nn.Conv2d(1, c1, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(c1, c2, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
    )
    q = c2 * (((h - 4) // 2 - 4) // 2) * (((w - 4) // 2 - 4) // 2)
    head = torch.nn.Linear(q, candidates.shape[1])
    return _train(trunk, head, x, candidates, extra, cfg)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``(n, l)``, numerically stable."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
