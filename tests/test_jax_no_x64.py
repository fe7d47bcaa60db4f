"""The core on ``jax.numpy`` arrays in JAX's default mode (no x64: float32 and int32 only).

The namespace is asked which dtypes it has (``__array_namespace_info__``), so
nothing requests float64 or int64 and JAX has nothing to warn about. Runs in
a fresh interpreter: x64 is a process-wide switch that the backend-parametrized
tests turn on.
"""

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
warnings.simplefilter("error")  # any warning (JAX's "requested dtype float64 ... not available") fails
import numpy as np
import jax, jax.numpy as jnp
assert not jax.config.jax_enable_x64
import lip_agnostic as lip
import lip_agnostic.metrics as lip_metrics
import lip_agnostic.svd as lip_svd
from lip_agnostic._arrays import has_float64, stats_dtype

rng = np.random.default_rng(0)
W = jnp.asarray(rng.normal(size=(40, 8)).astype(np.float32))
X = jnp.asarray(rng.normal(size=(300, 40)).astype(np.float32))
y = jnp.asarray(rng.integers(0, 8, 300).astype(np.int32))
b = jnp.asarray(rng.normal(size=8).astype(np.float32))
assert not has_float64(jnp) and stats_dtype(jnp, None) == jnp.float32

out = lip.lip_refine(W, X, y, 3, bias=b)
ref = lip.lip_refine(np.asarray(W, np.float64), np.asarray(X, np.float64), np.asarray(y), 3,
                     bias=np.asarray(b, np.float64))
assert isinstance(out, jax.Array) and out.dtype == jnp.float32
assert np.allclose(np.asarray(out), ref, rtol=1e-3, atol=1e-4), float(np.max(np.abs(np.asarray(out) - ref)))
res = lip.refine_batches(W, [(X[:150], y[:150]), (X[150:], y[150:])], rank="auto", bias=b)
assert res.weight.dtype == jnp.float32 and 0 <= res.selection.k <= 8
Xn = X.at[3, 4].set(jnp.nan)
try:
    lip.lip_refine(W, Xn, y, 3)
except lip.NonFiniteError as e:
    assert "X contains 1 NaN/Inf value(s)" in str(e), e
else:
    raise AssertionError("NaN features were accepted")
assert lip.select_rank(W, 0.9).k == lip_svd.energy_rank(lip.reduced_svd(W).s, 0.9)
assert lip.project_principal(W, 2).dtype == jnp.float32 and lip.reduced_svd(W).s.dtype == jnp.float32
assert lip.full_tail_refine(W, X, y, 2, ridge=0.1)[0].dtype == jnp.float32
assert lip_svd.truncate_top(W, 2).k == 2 and lip_metrics.effective_rank(W) > 0
assert float(lip_metrics.principal_subspace_angle(W, out, 3)) < 1e-3
acc = lip.LIPAccumulator(W, 2).update(X, y)
assert acc.result().dtype == jnp.float32 and acc.partial_sums.dtype == jnp.float32
print("ok")
'''


def test_the_core_on_jax_without_x64_emits_no_warning():
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout + proc.stderr)[-4000:]
