"""The full-tail refit (beyond the paper), a NumPy reference for the study, with a held-out chooser.

The paper's LAP refits only the tail's singular values along the tail's own
directions. The full-tail variant keeps the top-``k`` principal components of
the trained weight ``W (q, l)`` exactly (PSP) and refits the **whole
complement** by ridge least squares against the labels. This module is the
study's own closed-form implementation of that refit (so the study does not
depend on the core's version while it is being written, and the two can be
checked against each other).

Steps (:meth:`FullTailStats.candidates`)
----------------------------------------
1. Sufficient statistics of the fit rows (:class:`FullTailStats`, streamable
   and mergeable): ``n``, ``sum x``, ``sum t``, ``X^T X``, ``X^T T``, ``T^T T``.
   Centred: ``S = X^T X - n mx mx^T``, ``R = X^T T - n mx mt^T``.
2. Full SVD ``W = U diag(s) V^T`` with square ``U (q, q)``, ``V (l, l)``;
   ``m = min(q, l)``. For ``k < m``: kept ``W_k = U_k diag(s_k) V_k^T``,
   complements ``U_perp = U[:, k:]``, ``V_perp = V[:, k:]``.
3. Targets ``c T`` (``c`` the target scale: 1, or ``"logits"``: the ``c``
   minimising ``||c Tc - Xc W||_F``, i.e. ``c = tr(W^T R) / tr(Tc^T Tc)``).
4. ``G = U_perp^T S U_perp = Q diag(e) Q^T`` (one eigendecomposition per
   ``k`` serves every ridge), ``B = U_perp^T (c R) V_perp``,
   ``C(lam) = Q diag(1 / (e + lam)) Q^T B``, with ``lam = rho * tr(S) / q``
   (``rho`` is scale-free).
5. ``W* = W_k + U_perp C V_perp^T`` (``W* V_k = W V_k``: the kept components
   are untouched); bias: kept directions keep the layer's bias, the complement
   gets the least-squares intercept, ``b* = b V_k V_k^T + (c mt - mx W*) V_perp V_perp^T``.
   ``k = m`` returns ``W`` and ``b`` unchanged; ``k = 0`` is a ridge head.

Choosing ``(k, rho, scale)`` on held-out data (:func:`choose`) uses the same
significance guard as the core's ``RankScorer``: a candidate qualifies only if
its held-out score beats the unchanged model and a one-sided sign test on its
paired wins/losses passes at ``confidence`` (Bonferroni over the candidates);
the best qualifying score wins, ties to the smaller change (larger ``k``,
larger ``rho``); none qualifies: unchanged.

Example
-------
>>> import numpy as np
>>> from experiments.fulltail_ref import FullTailStats
>>> rng = np.random.default_rng(0)
>>> W, X = rng.normal(size=(6, 3)), rng.normal(size=(50, 6))
>>> T = np.eye(3)[rng.integers(0, 3, 50)]
>>> st = FullTailStats(6, 3).update(X, T)
>>> c = st.candidates(W, np.zeros(3), ks=[1, 3], rhos=[1e-3])
>>> [(k, rho) for k, rho, _, _, _ in c], np.array_equal(c[1][3], W)
([(1, 0.001), (3, 0.001)], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lip_agnostic.selection import sign_test_p

__all__ = ["FullTailStats", "Choice", "choose", "hits", "predictions", "default_ks", "RHOS", "SCALES"]

#: Ridge grid, relative to the mean eigenvalue of the centred Gram ``tr(S) / q``.
RHOS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Target scales tried: raw targets and targets least-squares matched to the model's logits.
SCALES: tuple[float | str, ...] = (1.0, "logits")


def default_ks(m: int, limit: int = 16) -> list[int]:
    """Candidate ranks ``0..m``: all of them when ``m <= limit``, else ``limit + 1`` evenly spaced (0 and m included)."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer; got {m!r}")
    if m <= limit:
        return list(range(m + 1))
    return sorted({int(round(v)) for v in np.linspace(0, m, limit + 1)})


class FullTailStats:
    """Streamed sufficient statistics of the fit rows (all float64; state ``O(q^2 + q l + l^2)``)."""

    def __init__(self, q: int, l: int) -> None:
        for name, v in (("q", q), ("l", l)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        self.q, self.l = int(q), int(l)
        self.n = 0
        self.sx = np.zeros(q)
        self.st = np.zeros(l)
        self.xx = np.zeros((q, q))
        self.xt = np.zeros((q, l))
        self.tt = np.zeros((l, l))

    def update(self, X: np.ndarray, T: np.ndarray) -> "FullTailStats":
        """Add a batch: features ``(n_b, q)``, targets ``(n_b, l)``."""
        X = np.asarray(X, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.q:
            raise ValueError(f"X must be (n, {self.q}); got {X.shape}")
        if T.shape != (X.shape[0], self.l):
            raise ValueError(f"T must be ({X.shape[0]}, {self.l}); got {T.shape}")
        if not (np.isfinite(X).all() and np.isfinite(T).all()):
            raise ValueError("X and T must be finite")
        self.n += X.shape[0]
        self.sx += X.sum(axis=0)
        self.st += T.sum(axis=0)
        self.xx += X.T @ X
        self.xt += X.T @ T
        self.tt += T.T @ T
        return self

    def merge(self, other: "FullTailStats") -> "FullTailStats":
        """Add another worker's statistics (same shape)."""
        if (self.q, self.l) != (other.q, other.l):
            raise ValueError(f"cannot merge statistics of shape {(other.q, other.l)} into {(self.q, self.l)}")
        self.n += other.n
        for a in ("sx", "st", "xx", "xt", "tt"):
            setattr(self, a, getattr(self, a) + getattr(other, a))
        return self

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(S, R, Ttc, mx, mt)``: centred ``X^T X``, ``X^T T``, ``T^T T`` and the means."""
        if self.n < 2:
            raise ValueError(f"need at least 2 fit rows; have {self.n}")
        mx, mt = self.sx / self.n, self.st / self.n
        S = self.xx - self.n * np.outer(mx, mx)
        R = self.xt - self.n * np.outer(mx, mt)
        Ttc = self.tt - self.n * np.outer(mt, mt)
        return (S + S.T) / 2, R, Ttc, mx, mt

    def logit_scale(self, W: np.ndarray) -> float:
        """``c`` minimising ``||c Tc - Xc W||_F``: ``tr(W^T R) / tr(Tc^T Tc)`` (1 when that is not positive)."""
        _, R, Ttc, _, _ = self.centred()
        den = float(np.trace(Ttc))
        c = float(np.sum(W * R)) / den if den > 0 else 1.0
        return c if c > 0 else 1.0

    def candidates(self, W: np.ndarray, b: np.ndarray, ks: Sequence[int], rhos: Sequence[float],
                   scales: Sequence[float | str] = (1.0,)) -> list[tuple]:
        """Refit weights for every ``(k, rho, scale)``: list of ``(k, rho, scale, W*, b*)`` (see the module steps).

        ``scale`` is reported as the number used. ``k = m`` appears once per
        ``(rho, scale)`` and is ``W``, ``b`` themselves (bit-identical).
        """
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if W.shape != (self.q, self.l):
            raise ValueError(f"W must be {(self.q, self.l)}; got {W.shape}")
        if b.shape != (self.l,):
            raise ValueError(f"b must be ({self.l},); got {b.shape}")
        m = min(self.q, self.l)
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= m:
                raise ValueError(f"every k must be an integer in [0, {m}]; got {k!r}")
        for r in rhos:
            if not (isinstance(r, (int, float)) and np.isfinite(r) and r > 0):
                raise ValueError(f"every rho must be a positive finite number; got {r!r}")
        S, R, _, mx, mt = self.centred()
        U, s, Vt = np.linalg.svd(W, full_matrices=True)
        V = Vt.T
        base = float(np.trace(S)) / self.q
        if not base > 0:
            raise ValueError("the fit features have zero variance: nothing to refit")
        cs = [(self.logit_scale(W) if sc == "logits" else float(sc)) for sc in scales]
        out = []
        for k in ks:
            k = int(k)
            if k == m:
                out += [(k, float(r), c, W, b) for c in cs for r in rhos]
                continue
            Uk, Vk, Up, Vp = U[:, :k], V[:, :k], U[:, k:], V[:, k:]
            Wk = (Uk * s[:k]) @ Vk.T
            e, Q = np.linalg.eigh(Up.T @ S @ Up)
            e = np.maximum(e, 0.0)
            QtB1 = Q.T @ (Up.T @ R @ Vp)
            bk = (b @ Vk) @ Vk.T
            for c in cs:
                for r in rhos:
                    Cm = Q @ (c * QtB1 / (e + r * base)[:, None])
                    Wc = Up @ Cm
                    Ws = Wk + Wc @ Vp.T
                    bs = bk + ((c * mt - mx @ Ws) @ Vp) @ Vp.T
                    out.append((k, float(r), c, Ws, bs))
        return out


def hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row hit (1.0/0.0): argmax equals the integer label, or lies in the candidate set (bool mask)."""
    return _hits_of(np.argmax(logits, axis=1), labels)


def _hits_of(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 1:
        return (pred == labels).astype(np.float64)
    return labels[np.arange(labels.shape[0]), pred].astype(np.float64)


def predictions(cands: list[tuple], X: np.ndarray) -> np.ndarray:
    """Argmax class of every candidate ``(k, rho, scale, W*, b*)`` on every row: int array ``(K, n)``."""
    X = np.asarray(X, dtype=np.float64)
    return np.stack([np.argmax(X @ c[3] + c[4], axis=1) for c in cands]) if cands else np.zeros((0, X.shape[0]), int)


@dataclass
class Choice:
    """What :func:`choose` picked: index into the candidate list (``None``: unchanged) and the evidence."""

    index: int | None
    score: float
    base_score: float
    p_value: float
    n_val: int
    n_candidates: int
    extra: dict = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.index is not None


def choose(cands: list[tuple], m: int, X_val: np.ndarray | None, labels_val: np.ndarray, base_logits: np.ndarray,
           confidence: float | None = 0.95, min_gain: float = 0.0, *, preds: np.ndarray | None = None) -> Choice:
    """Pick a candidate ``(k, rho, scale, W*, b*)`` on held-out rows, with the core's significance guard.

    Candidates with ``k = m`` are the unchanged model and are not tested.
    ``confidence=None``: no guard, the best held-out score wins (if it beats
    the unchanged model by more than ``min_gain``). ``preds`` (from
    :func:`predictions` on the same rows) replaces ``X_val`` to score many
    label sets against one set of predictions.
    """
    if confidence is not None and not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1) or be None; got {confidence!r}")
    if preds is None:
        if X_val is None:
            raise ValueError("choose needs X_val or preds")
        preds = predictions(cands, X_val)
    n = labels_val.shape[0]
    if preds.shape != (len(cands), n) or base_logits.shape[0] != n:
        raise ValueError(f"held-out rows disagree: {n} labels, predictions {preds.shape}, "
                         f"base logits {base_logits.shape[0]} rows, {len(cands)} candidates")
    if n == 0:
        raise ValueError("choose needs at least one held-out row")
    h0 = hits(base_logits, labels_val)
    base = float(h0.mean())
    tested = [i for i, c in enumerate(cands) if c[0] != m]
    alpha = None if confidence is None else (1.0 - float(confidence)) / max(1, len(tested))
    best, best_key, best_p = None, None, 1.0
    for i in tested:
        k, r = cands[i][0], cands[i][1]
        h = _hits_of(preds[i], labels_val)
        sc = float(h.mean())
        if not sc > base + min_gain:
            continue
        w, lo = int(np.sum(h > h0)), int(np.sum(h < h0))
        p = sign_test_p(w, lo)
        if alpha is not None and not p < alpha:
            continue
        key = (sc, k, r)
        if best_key is None or key > best_key:
            best, best_key, best_p = i, key, p
    return Choice(best, best_key[0] if best_key else base, base, best_p, int(n), len(tested),
                  {"confidence": confidence, "alpha": alpha})
