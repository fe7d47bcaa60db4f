"""One rank of the DDP test (tests/test_torch_ddp.py): gloo on CPU, spawned as a subprocess.

Usage: ``python _torch_ddp_worker.py RANK WORLD_SIZE PORT OUT_DIR``.

Each rank trains a DDP-wrapped MLP for a few steps on its own shard, saves the
trained state (rank 0), then runs ``finalize`` three ways (fixed ``k``;
``rank="auto"`` with a validation shard; ``rank="auto"`` with the core's hold-out),
each from the same trained state, and saves the written weights.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

Q_IN, HIDDEN, CLASSES, BATCH = 20, 16, 6, 40
#: Rows per rank: unequal shard sizes and batch counts (multiples of 5 so the core's
#: every-5th-sample hold-out lands on the same rows as one process over the union).
SHARD_ROWS = (200, 240)
VAL_ROWS = (80, 120)


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(Q_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def _rows(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centers = torch.randn(CLASSES, Q_IN, generator=torch.Generator().manual_seed(7)) * 2.0
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = centers[y] + torch.randn(n, Q_IN, generator=g)
    noisy = torch.rand(n, generator=g) < 0.3
    y = torch.where(noisy, torch.randint(0, CLASSES, (n,), generator=g), y)
    return x, y


def batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, x.shape[0], BATCH)]


def shard(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return batches(*_rows(SHARD_ROWS[rank], seed=100 + rank))


def val_shard(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return batches(*_rows(VAL_ROWS[rank], seed=200 + rank))


def main(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from lip_agnostic.adapters.torch import LIPOptimizer

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = make_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = LIPOptimizer(torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9), classifier=model[2], rank=3)
        for xb, yb in shard(rank)[:4]:  # every rank has >= 4 batches: DDP's gradient sync stays in step
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(xb), yb).backward()
            opt.step()
        trained = {k: v.clone() for k, v in model.state_dict().items()}
        if rank == 0:
            torch.save(trained, os.path.join(out_dir, "trained.pt"))
        results = {}
        for name, kwargs in [
            ("fixed", dict(rank=3)),
            ("auto_val", dict(rank="auto", validation=val_shard(rank))),
            ("auto_holdout", dict(rank="auto")),
        ]:
            model.load_state_dict(trained)
            report = opt.finalize(shard(rank), progress=False, **kwargs)
            results[name] = {"weight": model[2].weight.detach().clone(), "k": report.k,
                             "n_fit": report.n_fit, "world_size": report.context["world_size"],
                             "n_samples_local": report.context["n_samples_local"],
                             "scores": report.to_dict()["selection"]["scores"], "n_val": report.to_dict()["selection"]["n_val"]}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
