"""The label-issue pieces (out-of-fold heads, temperature, confident learning, neighbour vote) on
``jax.numpy`` in JAX's default mode (no x64: float32 and int32 only), warnings as errors, in a fresh
interpreter (x64 is a process-wide switch that the backend-parametrized tests turn on)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import warnings
warnings.simplefilter("error")
import numpy as np
import jax, jax.numpy as jnp
assert not jax.config.jax_enable_x64
from lip_agnostic.out_of_fold import out_of_fold_scores
from lip_agnostic.temperature import fit_temperature, softmax
from lip_agnostic.confident_learning import confident_learning
from lip_agnostic.neighbours import neighbour_disagreement

rng = np.random.default_rng(0)
Xn = rng.normal(size=(400, 12)).astype(np.float32)
yn = rng.integers(0, 5, 400).astype(np.int32)
X, y = jnp.asarray(Xn), jnp.asarray(yn)
oof = out_of_fold_scores([(X[:170], y[:170]), (X[170:], y[170:])], 5, ridge=0.1)
ref = out_of_fold_scores([(Xn.astype(np.float64), yn.astype(np.int64))], 5, ridge=0.1)
assert oof.logits.dtype == jnp.float32
assert np.allclose(np.asarray(oof.logits), ref.logits, atol=1e-4), float(np.max(np.abs(np.asarray(oof.logits) - ref.logits)))
fit = fit_temperature(oof.heads.full_logits(X), y)
P = softmax(oof.logits, scale=fit.scale)
cl = confident_learning(P, y)
assert cl.flags.dtype == jnp.bool_ and int(cl.joint.sum()) == 400
nv = neighbour_disagreement(X, y, 5, k=5)
assert nv.votes.dtype == jnp.float32 and nv.suggested.dtype == y.dtype
print("ok")
'''


def test_label_issue_pieces_on_jax_without_x64_emit_no_warning():
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout + proc.stderr)[-4000:]
