"""DDP: two gloo ranks on CPU end with identical weights equal to one process over the union."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from lip_agnostic.adapters.torch import finalize  # noqa: E402

WORKER = Path(__file__).with_name("_torch_ddp_worker.py")
TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def _worker_module():
    spec = importlib.util.spec_from_file_location("_torch_ddp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run both ranks once (time-limited); return the output folder."""
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(WORKER.parent.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(r), "2", str(port), str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for r in range(2)
    ]
    logs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=TIMEOUT_S)
            logs.append(err)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"DDP workers did not finish within {TIMEOUT_S} s")
    for r, (p, err) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed (rc {p.returncode}):\n{err[-4000:]}"
    return out


@pytest.mark.parametrize("name", ["fixed", "auto_val", "auto_holdout"])
def test_ranks_agree_and_equal_a_single_process_over_the_union(ddp_run, name):
    w = _worker_module()
    r0 = torch.load(ddp_run / "rank0.pt", weights_only=True)[name]
    r1 = torch.load(ddp_run / "rank1.pt", weights_only=True)[name]
    assert torch.equal(r0["weight"], r1["weight"]), "ranks ended with different weights"
    assert r0["k"] == r1["k"] and r0["world_size"] == r1["world_size"] == 2
    assert r0["n_samples_local"] == w.SHARD_ROWS[0] and r1["n_samples_local"] == w.SHARD_ROWS[1]

    model = w.make_model()
    trained = torch.load(ddp_run / "trained.pt", weights_only=True)
    model.load_state_dict(trained)
    W_trained = model[2].weight.detach().clone()
    kwargs = {"fixed": dict(rank=3), "auto_val": dict(rank="auto", validation=w.val_shard(0) + w.val_shard(1)),
              "auto_holdout": dict(rank="auto")}[name]
    report = finalize(model[2], w.shard(0) + w.shard(1), all_reduce=None, progress=False, **kwargs)
    assert report.context["world_size"] == 1
    assert r0["n_fit"] == report.n_fit and r0["k"] == report.k
    # the evidence for k (held-out hits per candidate rank) is all-reduced too
    assert r0["n_val"] == report.to_dict()["selection"]["n_val"] and r0["scores"] == pytest.approx(report.to_dict()["selection"]["scores"])
    if name.startswith("auto"):
        assert r0["n_val"] == (sum(w.VAL_ROWS) if name == "auto_val" else sum(w.SHARD_ROWS) // 5)
    assert torch.allclose(r0["weight"], model[2].weight, rtol=1e-5, atol=1e-6)
    if report.k < 6:
        assert not torch.allclose(r0["weight"], W_trained)  # LIP did change something


def test_a_single_shard_alone_gives_a_different_answer(ddp_run):
    """The all-reduce matters: rank 0's shard on its own does not reproduce the DDP result."""
    w = _worker_module()
    r0 = torch.load(ddp_run / "rank0.pt", weights_only=True)["fixed"]
    model = w.make_model()
    model.load_state_dict(torch.load(ddp_run / "trained.pt", weights_only=True))
    report = finalize(model[2], w.shard(0), rank=3, all_reduce=None, progress=False)
    assert report.n_fit == w.SHARD_ROWS[0]
    assert not torch.allclose(r0["weight"], model[2].weight, rtol=1e-5, atol=1e-6)
