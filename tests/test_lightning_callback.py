"""Lightning face: LIPCallback refines the head at on_fit_end, alone and under strategy="ddp" (gloo)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from lip_agnostic import LIPResult, refine_batches  # noqa: E402
from lip_agnostic.errors import OptionError, OptionTypeError  # noqa: E402
from lip_agnostic.adapters.lightning import LIPCallback, find_head  # noqa: E402

WORKER = Path(__file__).with_name("_lightning_ddp_worker.py")
TIMEOUT_S = 240


def _worker():
    spec = importlib.util.spec_from_file_location("_lightning_ddp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


w = _worker()


def _trainer(callbacks, **kw):
    base = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    base.update(kw)
    return pl.Trainer(callbacks=callbacks, **base)


def _reference(state, rank, validation=False, **kw):
    """LIP in one process over all the data, with features computed here (not by the face)."""
    model = w.Net()
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        x, y = w.dataset(w.N_TRAIN, 0).tensors
        F = model.body(x)
        val = None
        if validation:
            xv, yv = w.dataset(w.N_VAL, 1).tensors
            val = [(model.body(xv).double(), yv)]
        fc = model.classifier
        return refine_batches(fc.weight.T.double(), [(F.double(), y)], rank=rank, bias=fc.bias.double(),
                              validation=val, **kw)


class Snapshot(pl.Callback):
    def __init__(self, on_end=None):
        self.on_end, self.state = on_end, None

    def on_fit_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.modes = [m.training for m in pl_module.modules()]
        if self.on_end is not None:
            self.on_end()


class Recorder(pl.loggers.Logger):
    def __init__(self):
        super().__init__()
        self.metrics = []

    name, version = "recorder", 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append((dict(metrics), step))


def test_fixed_rank_equals_the_core_and_reports_to_the_logger():
    pl.seed_everything(0)
    model = w.Net()
    snap, lip, rec = Snapshot(), LIPCallback(rank=1), Recorder()
    _trainer([snap, lip], logger=rec).fit(model, datamodule=w.Data())
    want = _reference(snap.state, 1)
    torch.testing.assert_close(model.classifier.weight, want.weight.T.float(), rtol=1e-4, atol=1e-5)
    assert not torch.equal(model.classifier.weight, snap.state["classifier.weight"])
    assert torch.equal(model.classifier.bias, snap.state["classifier.bias"])
    assert isinstance(lip.result, LIPResult) and lip.result.n_fit == w.N_TRAIN
    ctx = lip.result.context
    assert ctx["head"] == "classifier" and ctx["train"] == "trainer" and ctx["world_size"] == 1
    metrics, step = rec.metrics[-1]
    assert metrics["lip_rank"] == 1.0 and metrics["lip_n_fit"] == float(w.N_TRAIN) and step == 6


def test_auto_scores_on_the_validation_loader():
    pl.seed_everything(1)
    model = w.Net()
    snap, lip = Snapshot(), LIPCallback()
    _trainer([snap, lip]).fit(model, datamodule=w.Data())
    want = _reference(snap.state, "auto", validation=True)
    assert lip.result.context["validation"] == "val"
    assert lip.result.selection.k == want.selection.k and lip.result.selection.n_val == w.N_VAL
    assert lip.result.selection.scores == pytest.approx(want.selection.scores)
    torch.testing.assert_close(model.classifier.weight, want.weight.T.float(), rtol=1e-4, atol=1e-5)


def test_full_tail_beyond_the_paper_chooses_its_ridge_on_the_validation_loader():
    pl.seed_everything(2)
    model = w.Net()
    snap, lip = Snapshot(), LIPCallback(rank=2, tail="full")
    _trainer([snap, lip]).fit(model, datamodule=w.Data())
    want = _reference(snap.state, 2, validation=True, tail="full")
    assert lip.result.tail == "full" and lip.result.context["validation"] == "val"
    torch.testing.assert_close(model.classifier.weight, want.weight.T.float(), rtol=1e-4, atol=1e-5)
    want_b = snap.state["classifier.bias"] if want.bias is None else want.bias.float()  # None: guard kept it
    torch.testing.assert_close(model.classifier.bias, want_b, rtol=1e-4, atol=1e-5)
    assert lip.result.selection.extra["source"] == "validation" and lip.result.selection.n_val == w.N_VAL


def test_auto_without_validation_holds_out_training_rows_and_says_so():
    class TrainOnly(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(w.dataset(w.N_TRAIN, 0), batch_size=16)

    class NoVal(w.Net):
        validation_step = None

    lip = LIPCallback()
    with pytest.warns(UserWarning, match="found no validation loader"):
        _trainer([lip], limit_val_batches=0).fit(NoVal(), datamodule=TrainOnly())
    assert lip.result.context["validation"] == "holdout" and lip.result.selection.n_val == w.N_TRAIN // 5


def test_a_failure_during_the_pass_leaves_the_head_bit_identical():
    class Flaky(torch.utils.data.Dataset):
        broken = False

        def __init__(self):
            self.data = w.dataset(w.N_TRAIN, 0)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            if self.broken and i == 50:
                raise RuntimeError("disk went away")
            return self.data[i]

    data = Flaky()

    class DM(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(data, batch_size=16)

    model = w.Net()
    snap = Snapshot(on_end=lambda: setattr(data, "broken", True))
    with pytest.raises(RuntimeError, match="disk went away"):
        _trainer([snap, LIPCallback(rank=1)], limit_val_batches=0).fit(model, datamodule=DM())
    assert model.classifier.weight.detach().numpy().tobytes() == snap.state["classifier.weight"].numpy().tobytes()
    assert [m.training for m in model.modules()] == snap.modes


def test_find_head():
    net = w.Net()
    assert find_head(net) == ("classifier", net.classifier)
    assert find_head(net, "body.0")[1] is net.body[0]
    two = nn.ModuleDict({"a": nn.ModuleDict({"fc": nn.Linear(2, 2)}), "b": nn.ModuleDict({"fc": nn.Linear(2, 2)})})
    with pytest.raises(OptionError, match=r"several candidate heads \(\['a.fc', 'b.fc'\]\); pass head="):
        find_head(two)
    with pytest.raises(ValueError, match="has no linear layer named one of"):
        find_head(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="has no module named 'nope'"):
        find_head(net, "nope")
    with pytest.raises(TypeError, match="classifier must be a torch.nn.Linear"):
        find_head(net, "body")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(rank="most"), OptionError, "rank"),
        (dict(rank=False), OptionTypeError, "rank"),
        (dict(bias_mode="none"), OptionError, "bias_mode"),
        (dict(validation="test"), OptionError, "validation must be 'val', None or an iterable"),
        (dict(train=3), OptionTypeError, "train must be an iterable of batches"),
        (dict(head=1.5), OptionTypeError, "head must be a module name"),
        (dict(fit_bias=True), TypeError, "unknown LIP option 'fit_bias'"),
        (dict(foo=1), TypeError, "unknown LIP option 'foo'"),
        (dict(holdout=0.9), ValueError, r"holdout must lie in \(0, 0.5\]"),
        (dict(rank=1, target_scale=-1.0), ValueError, "target_scale"),  # every value parsed by the core, now
    ],
)
def test_bad_options_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        LIPCallback(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [(dict(rank=9), "rank"), (dict(head="nope"), "no module named 'nope'")])
def test_bad_options_for_this_module_fail_before_training(kwargs, message):
    trainer = _trainer([LIPCallback(**kwargs)])
    with pytest.raises(ValueError, match=message):
        trainer.fit(w.Net(), datamodule=w.Data())
    assert trainer.global_step == 0


# --------------------------------------------------------------------------- DDP (2 CPU processes, gloo)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("lightning_ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               PYTHONPATH=os.pathsep.join([str(WORKER.parent.parent)] + [
                   p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    # Both processes are started here, as a cluster launcher would (LOCAL_RANK set: Lightning then
    # does not re-launch the script itself), so their imports run side by side.
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(env, LOCAL_RANK=str(r), NODE_RANK="0"))
             for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[1])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the Lightning DDP processes did not finish within {TIMEOUT_S} s")
    for r, (p, err) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"Lightning DDP process {r} failed (rc {p.returncode}):\n{err[-4000:]}"
    return out


@pytest.mark.parametrize("name", ["fixed", "auto"])
def test_ddp_processes_agree_and_equal_one_process_over_all_the_data(ddp_run, name):
    r0 = torch.load(ddp_run / "rank0.pt", weights_only=True)[name]
    r1 = torch.load(ddp_run / "rank1.pt", weights_only=True)[name]
    assert torch.equal(r0["weight"], r1["weight"]), "the processes ended with different heads"
    trained = torch.load(ddp_run / "trained.pt", weights_only=True)
    want = _reference(trained, 2 if name == "fixed" else "auto", validation=name == "auto")
    assert r0["k"] == r1["k"] == want.selection.k and r0["n_fit"] == want.n_fit == w.N_TRAIN
    torch.testing.assert_close(r0["weight"], want.weight.T.float(), rtol=1e-4, atol=1e-5)
    if name == "fixed":
        assert r0["world_size"] == 2 and r0["strategy"] == "DDPStrategy"
        assert r0["n_samples_local"] == r1["n_samples_local"] == w.N_TRAIN // 2  # each saw its shard only
        assert not torch.allclose(r0["weight"], trained["classifier.weight"])
    else:
        assert r0["validation"] == "val" and r0["n_val"] == w.N_VAL  # the sharded val loader, all-reduced
        assert r0["scores"] == pytest.approx(list(want.selection.scores))


# ----------------------------------------------------------------------------- only the output layer, never a tied one
def test_a_hidden_head_is_refused_and_the_module_is_unchanged():
    torch.manual_seed(0)
    model = w.Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer([LIPCallback(rank=2, head="body.0")], max_epochs=0)
    with pytest.raises(ValueError, match=r"the classifier 'body.0' is a hidden layer.*last Linear layer is 'classifier'"):
        trainer.fit(model, datamodule=w.Data())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_head_tied_to_an_embedding_is_refused_before_it_is_touched():
    class TiedNet(w.Net):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(w.L, 12)
            self.classifier.weight = self.emb.weight  # tied: (L, 12) both

    torch.manual_seed(0)
    model = TiedNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer([LIPCallback(rank=2)], max_epochs=0)
    with pytest.raises(ValueError, match=r"the classifier's weight is shared with 'emb.weight' \(tied parameters\)"):
        trainer.fit(model, datamodule=w.Data())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_validation_batches_with_a_fixed_rank_are_refused_before_training():
    model = w.Net()
    trainer = _trainer([LIPCallback(rank=2, validation=[(torch.zeros(2, w.Q_IN), torch.zeros(2, dtype=torch.long))])])
    with pytest.raises(OptionError, match=r"validation data is only used to choose rank='auto'"):
        trainer.fit(model, datamodule=w.Data())
    assert trainer.global_step == 0


# ----------------------------------------------------------------------------- label_repair (beyond the paper)
def _noisy_clusters(n=800, rate=0.25, seed=0):
    """Separable clusters in the worker's input size, a fraction ``rate`` of labels moved (``flip``)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(w.L, w.Q_IN, generator=g) * 2
    y = torch.randint(0, w.L, (n,), generator=g)
    x = means[y] + torch.randn(n, w.Q_IN, generator=g)
    flip = torch.rand(n, generator=g) < rate
    return x, torch.where(flip, (y + torch.randint(1, w.L, (n,), generator=g)) % w.L, y), flip


def test_label_repair_reads_the_shuffling_train_loader_in_order_and_reports_the_flagged_rows():
    x, y, flip = _noisy_clusters()
    train = torch.utils.data.TensorDataset(x[:600], y[:600])

    class Noisy(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(train, batch_size=50, shuffle=True)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[600:], y[600:]), batch_size=50)

    pl.seed_everything(0)
    model = w.Net()
    snap, lip, rec = Snapshot(), LIPCallback(label_repair="auto"), Recorder()
    _trainer([snap, lip], logger=rec).fit(model, datamodule=Noisy())
    res = lip.result
    assert res.context["train"].endswith("(in order)") and res.context["validation"] == "val"
    issues, rows = res.label_issues, res.label_issues.rows()
    assert issues.n_flagged == len(rows) > 0
    assert [r["given"] for r in rows] == y[issues.indices].tolist()  # "row" is the train dataset's index
    assert flip[issues.indices].float().mean() > 2 * flip[:600].float().mean()
    if res.changed:
        torch.testing.assert_close(model.classifier.weight, res.weight.T.float())
    else:
        assert torch.equal(model.classifier.weight, snap.state["classifier.weight"])
    metrics, _ = rec.metrics[-1]
    assert metrics["lip_n_flagged"] == float(issues.n_flagged)
    assert ("lip_temperature" in metrics) == (res.calibration is not None)
