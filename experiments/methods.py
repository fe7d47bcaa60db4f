"""LIP variants applied to a trained final layer, all through the core.

Each variant is a :class:`Variant`: which **targets** the tail is refit to,
whether the layer's **bias** enters the fit, which **target scale**, and on which
rows the tail is **fit** (the memorized training rows, or a held-out split).
For every variant :func:`evaluate_variant` returns

1. the clean-test accuracy of ``W*(k)`` for every ``k`` in ``0..m`` (the
   paper's fixed-``k`` sweep; ``k = m`` is the unchanged model), from one
   :class:`lip_agnostic.LIPAccumulator` pass, and
2. the automatic choice: ``lip_agnostic.refine_batches(..., rank="auto",
   validation=..., tail="diagonal")`` (the paper's refit) scored on a held-out split with **noisy** labels (the
   paper's LIP in the automatic mode, with the core's default significance guard), its ``k`` and
   its clean-test accuracy; and the same without the guard
   (``confidence=None``: the best held-out score wins).

Targets (``(n, l)`` matrices; ``C`` the training candidate mask: a one-hot
noisy label, or a partial-label candidate set):

- ``"raw"``: ``C`` itself (paper: noisy one-hot rows / candidate-set rows).
- ``"cand_norm"``: ``C / |C|`` (each candidate set sums to one).
- ``"purified"``: the model's own softmax restricted to the candidates and
  renormalised (for one-hot ``C`` that would be ``C`` again, so for noisy
  labels it is the plain softmax: the model's label estimate; for GCE it is
  GCE's estimate).

Example
-------
>>> import numpy as np
>>> from experiments.methods import VARIANTS, evaluate_variant
>>> from experiments.train import HeadSnapshot
>>> rng = np.random.default_rng(0)
>>> f = {s: rng.normal(size=(60, 6)).astype(np.float32) for s in ("train", "val", "test")}
>>> snap = HeadSnapshot(3, rng.normal(size=(6, 3)), np.zeros(3), f)
>>> C = np.eye(3, dtype=bool)[rng.integers(0, 3, 60)]
>>> out = evaluate_variant(snap, VARIANTS["bias"], C, C, rng.integers(0, 3, 60))
>>> len(out["acc_by_k"]), 0 <= out["auto_k"] <= 3
(4, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lip_agnostic import LIPAccumulator, refine_batches

from .train import HeadSnapshot, softmax

__all__ = ["Variant", "VARIANTS", "make_targets", "evaluate_variant", "accuracy"]


@dataclass(frozen=True)
class Variant:
    """One way of running LIP on a trained head.

    Attributes
    ----------
    name : str
    targets : {"raw", "cand_norm", "purified"}
    bias : bool
        Fit against ``c T - 1 b^T`` (the layer's bias in the fit); the bias is
        passed to the core either way, so ``k="auto"`` scores the real logits.
    scale : float or "logits"
        The core's ``target_scale``.
    fit_on : {"train", "heldout"}
        ``"heldout"``: fit the tail on the first half of the validation split
        and score ``k`` on the second half, instead of fitting on the training
        rows the model memorized.
    description : str
    """

    name: str
    targets: Literal["raw", "cand_norm", "purified"]
    bias: bool
    scale: float | str
    fit_on: Literal["train", "heldout"] = "train"
    description: str = ""


#: The variants of the study, by name.
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("paper", "raw", False, 1.0, description="paper-faithful: raw noisy targets, no bias, scale 1"),
    Variant("bias", "raw", True, 1.0, description="raw targets, bias-aware (the core's defaults + the layer's bias)"),
    Variant("logits", "raw", True, "logits", description="raw targets, bias-aware, targets scaled to the logits"),
    Variant("cand_norm", "cand_norm", True, "logits", description="candidate-set-normalised targets (partial labels)"),
    Variant("purified", "purified", True, "logits", description="purified targets: the model's own (candidate-restricted) softmax"),
    Variant("heldout", "raw", True, "logits", "heldout", description="raw targets fit on a held-out split, not the memorized training rows"),
)}


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Percentage of rows whose argmax equals ``y``."""
    if logits.shape[0] != y.shape[0]:
        raise ValueError(f"logits {logits.shape} and labels {y.shape} disagree on the number of rows")
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == y))


def make_targets(kind: str, candidates: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    """Target matrix ``(n, l)`` float64 of the given kind (see the module docstring)."""
    C = candidates.astype(np.float64)
    if kind == "raw":
        return C
    if kind == "cand_norm":
        return C / C.sum(axis=1, keepdims=True)
    if kind == "purified":
        if logits is None:
            raise ValueError("purified targets need the model's logits on the fit rows")
        p = softmax(logits)
        if (candidates.sum(axis=1) > 1).any():
            p = p * C
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
        return p
    raise ValueError(f"target kind must be 'raw', 'cand_norm' or 'purified'; got {kind!r}")


def _val_labels(candidates: np.ndarray):
    """Noisy validation labels as the core's scorer takes them: ints for one-hot rows, else the mask."""
    if (candidates.sum(axis=1) == 1).all():
        return np.argmax(candidates, axis=1).astype(np.int64)
    return candidates.astype(np.float64)


def evaluate_variant(snap: HeadSnapshot, variant: Variant, train_cand: np.ndarray,
                     val_cand: np.ndarray, y_test: np.ndarray) -> dict:
    """Test accuracy of LIP(variant) for every ``k``, and of the automatic ``k``.

    Parameters
    ----------
    snap : HeadSnapshot
        Needs features ``"train"``, ``"val"``, ``"test"``.
    variant : Variant
    train_cand, val_cand : ndarray bool (n_split, l)
        Noisy one-hot labels or candidate sets of the train / validation rows.
    y_test : ndarray int (n_test,)
        Clean test labels.

    Returns
    -------
    dict
        ``acc_by_k`` (list, index ``k``), ``auto_k``, ``auto_acc``,
        ``auto_changed``, ``unguarded_k``, ``unguarded_acc``, ``m``,
        ``scale`` (the target scale used).
    """
    for split in ("train", "val", "test"):
        if split not in snap.features:
            raise ValueError(f"snapshot lacks features of split {split!r}; has {sorted(snap.features)}")
    W, b = snap.W, snap.b
    Xtr, Xval, Xte = (snap.features[s].astype(np.float64) for s in ("train", "val", "test"))
    if variant.fit_on == "train":
        Xfit, Cfit, Xsel, Csel = Xtr, train_cand, Xval, val_cand
    else:
        half = Xval.shape[0] // 2
        Xfit, Cfit, Xsel, Csel = Xval[:half], val_cand[:half], Xval[half:], val_cand[half:]
    T = make_targets(variant.targets, Cfit, Xfit @ W + b)
    # The layer's bias always goes to the core, so k="auto" scores the logits the model really
    # produces; variant.bias decides whether it enters the fit (the paper's fit leaves it out).
    bias_mode = "fit" if variant.bias else "ignore"
    acc = LIPAccumulator(W, None, bias=b, bias_mode=bias_mode, target_scale=variant.scale).update(Xfit, T)
    m = acc.svd.rank_max
    by_k = [accuracy(Xte @ acc.result(k) + b, y_test) for k in range(m + 1)]

    val = [(Xsel, _val_labels(Csel))]
    res = refine_batches(W, [(Xfit, T)], rank="auto", validation=val, bias=b, bias_mode=bias_mode,
                         target_scale=variant.scale, tail="diagonal")
    # The same choice without the core's significance guard: the best held-out score wins.
    raw = refine_batches(W, [(Xfit, T)], rank="auto", validation=val, bias=b, bias_mode=bias_mode,
                         target_scale=variant.scale, confidence=None, tail="diagonal")
    return {
        "acc_by_k": by_k,
        "auto_k": int(res.selection.k),
        "auto_acc": accuracy(Xte @ res.weight + b, y_test),
        "auto_changed": bool(res.selection.changed),
        "unguarded_k": int(raw.selection.k),
        "unguarded_acc": accuracy(Xte @ raw.weight + b, y_test),
        "m": int(m),
        "scale": float(acc.scale()),
    }
