"""One Lightning fit under strategy="ddp" (CPU, gloo, 2 processes) with LIPCallback; run by
tests/test_lightning_callback.py as ``LOCAL_RANK=r python _lightning_ddp_worker.py OUT_DIR`` for
r = 0, 1 (without LOCAL_RANK, Lightning starts the second process itself). Every process saves what LIP gave it; process 0 also saves the
trained weights (before LIP) so the test can recompute LIP in one process over all the data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

import lightning.pytorch as pl

from lip_agnostic.adapters.lightning import LIPCallback

N_TRAIN, N_VAL, Q_IN, L = 96, 40, 8, 4


def dataset(n: int, seed: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, L, (n,), generator=g)
    x = torch.randn(n, Q_IN, generator=g) + nn.functional.one_hot(y, Q_IN).float() * 2.0
    return torch.utils.data.TensorDataset(x, y)


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(Q_IN, 12), nn.Tanh())
        self.classifier = nn.Linear(12, L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


class Data(pl.LightningDataModule):
    def train_dataloader(self):
        return torch.utils.data.DataLoader(dataset(N_TRAIN, 0), batch_size=16, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(dataset(N_VAL, 1), batch_size=10)


class Snapshot(pl.Callback):
    """Saves the trained weights before LIPCallback (registered after it) changes them."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, self.out / "trained.pt")


def main(out: Path) -> None:
    pl.seed_everything(0, workers=True)
    model = Net()
    fixed = LIPCallback(rank=2, head="classifier")
    trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Snapshot(out), fixed], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=Data())
    after_fixed = model.classifier.weight.detach().clone()
    # rank="auto" scored on the (sharded) validation loader, applied to the trained weights again
    model.load_state_dict(torch.load(out / "trained.pt", weights_only=True))
    auto = LIPCallback(rank="auto")
    auto.on_fit_end(trainer, model)
    r = trainer.global_rank
    torch.save({
        "fixed": {"weight": after_fixed, "k": fixed.result.selection.k, "n_fit": fixed.result.n_fit,
                  "world_size": fixed.result.context["world_size"],
                  "n_samples_local": fixed.result.context["n_samples_local"],
                  "strategy": fixed.result.context["strategy"]},
        "auto": {"weight": model.classifier.weight.detach().clone(), "k": auto.result.selection.k,
                 "n_fit": auto.result.n_fit, "n_val": auto.result.selection.n_val,
                 "scores": list(auto.result.selection.scores), "validation": auto.result.context["validation"]},
    }, out / f"rank{r}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
