"""The PyTorch adapter against the core: same weights, same choices, nothing lost on failure."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lip_agnostic import lip_refine, LIPResult, project_principal, refine_batches  # noqa: E402
from lip_agnostic.adapters.torch import LIPHandle, LIPOptimizer, attach, finalize  # noqa: E402
from lip_agnostic.errors import DataError, LIPError, OptionError, OptionTypeError  # noqa: E402

BATCH = 64
NOISE = 0.3


# ----------------------------------------------------------------------------- fixtures
def _mlp(seed: int = 0, hidden: int = 48, q: int = 24) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, q), nn.ReLU(), nn.Linear(q, 10))


@pytest.fixture(scope="module")
def digits():
    """sklearn digits with 30 % symmetric label noise on the training split."""
    datasets = pytest.importorskip("sklearn.datasets")
    x, y_clean = datasets.load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y_clean))
    x, y_clean = (x[order] / 16.0).astype(np.float32), y_clean[order].astype(np.int64)
    n_train = 1257
    y = y_clean[:n_train].copy()
    flip = rng.random(n_train) < NOISE
    y[flip] = rng.integers(0, 10, int(flip.sum()))
    return (torch.from_numpy(x[:n_train]), torch.from_numpy(y),
            torch.from_numpy(x[n_train:]), torch.from_numpy(y_clean[n_train:]))


def _batches(x, y, size=BATCH):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, x.shape[0], size)]


@pytest.fixture(scope="module")
def trained(digits):
    """State of an MLP trained (through LIPOptimizer) on the noisy digits."""
    x, y, _, _ = digits
    model = _mlp()
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), classifier=model[4], rank=4)
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        perm = torch.randperm(x.shape[0], generator=g)
        for xb, yb in _batches(x[perm], y[perm]):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def model(trained):
    m = _mlp()
    m.load_state_dict(trained)
    return m


def _features(model, x):
    with torch.no_grad():
        return model[:-1](x)


# ----------------------------------------------------------------------------- invariants vs core
@pytest.mark.parametrize("bias", ["fit", "ignore"])
def test_finalize_writes_lip_refine_of_independently_computed_features(model, digits, bias):
    x, y, _, _ = digits
    fc = model[4]
    W0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    expected = lip_refine(W0.T, _features(model, x), y, 4, bias=b0 if bias == "fit" else None, batch_rows=BATCH)
    report = finalize(fc, _batches(x, y), rank=4, bias_mode=bias, progress=False)
    assert torch.allclose(fc.weight, expected.T, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fc.weight, W0)
    assert torch.equal(fc.bias, b0)  # the bias is never rewritten
    assert report.k == 4 and report.n_fit == x.shape[0] == report.context["n_samples_local"]
    assert report.context["bias_mode"] == bias and report.context["n_batches"] == len(_batches(x, y))
    assert report.to_dict()["summary"]["spectrum_before"] == pytest.approx(torch.linalg.svdvals(W0).tolist(), rel=1e-5)
    # float32 weights: singular values agree to rounding of the largest (|W| eps ~ 3e-7)
    assert report.to_dict()["summary"]["spectrum_after"] == pytest.approx(torch.linalg.svdvals(fc.weight).tolist(), rel=1e-5, abs=1e-6)


def _one_chunk(model, batches):
    """The stream finalize hands to the core: all rows in one chunk (fewer than chunk_rows=4096)."""
    return [(_features(model, torch.cat([xb for xb, _ in batches])), torch.cat([yb for _, yb in batches]))]


def _core_on_captured(model, batches, **kw):
    fc = model[4]
    return refine_batches(fc.weight.detach().clone().T, _one_chunk(model, batches), bias=fc.bias.detach().clone(), **kw)


def test_finalize_auto_with_validation_equals_core_refine_batches(model, digits):
    x, y, x_te, y_te = digits
    val = _batches(x_te[:300], y_te[:300])
    val_feats = _one_chunk(model, val)
    res = _core_on_captured(model, _batches(x, y), rank="auto", validation=val_feats)
    report = finalize(model[4], _batches(x, y), rank="auto", validation=val, progress=False)
    assert torch.equal(model[4].weight, res.weight.T)
    assert report.to_dict()["selection"] == res.selection.to_dict()
    assert report.to_dict()["selection"]["n_val"] == 300 and report.context["n_val_batches"] == len(val)


def test_finalize_auto_without_validation_uses_core_holdout(model, digits):
    x, y, _, _ = digits
    res = _core_on_captured(model, _batches(x, y), rank="auto")
    report = finalize(model[4], _batches(x, y), progress=False)  # rank="auto" is the default
    assert torch.equal(model[4].weight, res.weight.T)
    assert report.to_dict()["selection"]["extra"]["source"].startswith("holdout")
    assert report.n_fit + report.to_dict()["selection"]["n_val"] == x.shape[0]


def test_unchunked_stream_equals_core_per_batch_and_chunking_changes_only_rounding(model, digits):
    x, y, _, _ = digits
    fc = model[4]
    W0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    per_batch = [(_features(model, xb), yb) for xb, yb in _batches(x, y)]
    res = refine_batches(W0.T, per_batch, rank="auto", bias=b0)
    report = finalize(fc, _batches(x, y), chunk_rows=0, progress=False)
    assert torch.equal(fc.weight, res.weight.T) and report.to_dict()["selection"] == res.selection.to_dict()
    with torch.no_grad():
        fc.weight.copy_(W0)
    report_chunked = finalize(fc, _batches(x, y), chunk_rows=200, progress=False)
    assert report_chunked.n_fit == report.n_fit and report_chunked.k == report.k
    assert report_chunked.to_dict()["selection"]["n_val"] == report.to_dict()["selection"]["n_val"]  # same hold-out rows
    assert torch.allclose(fc.weight, res.weight.T, rtol=1e-5, atol=1e-6)


def test_confidence_option_reaches_the_core(model, digits):
    x, y, x_te, y_te = digits
    val = _batches(x_te[:200], y_te[:200])
    res = _core_on_captured(model, _batches(x, y), rank="auto", validation=_one_chunk(model, val), confidence=None)
    report = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model[4], confidence=None).finalize(
        _batches(x, y), validation=val, progress=False)
    assert report.to_dict()["selection"]["extra"]["confidence"] is None
    assert report.to_dict()["selection"] == res.selection.to_dict() and torch.equal(model[4].weight, res.weight.T)


def test_lip_options_reach_the_core(model, digits):
    x, y, _, _ = digits
    res = _core_on_captured(model, _batches(x, y), rank=3, target_scale="logits", degenerate="keep")
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model[4], rank=3,
                       target_scale="logits", degenerate="keep")
    opt.finalize(_batches(x, y), progress=False)
    assert torch.equal(model[4].weight, res.weight.T)


def test_finalize_overrides_constructor_settings(model, digits):
    x, y, _, _ = digits
    res = _core_on_captured(model, _batches(x, y), rank=2, target_scale=2.0)
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model[4], rank=5)
    report = opt.finalize(_batches(x, y), rank=2, target_scale=2.0, progress=False)
    assert report.k == 2 and torch.equal(model[4].weight, res.weight.T)


def test_lip_improves_or_keeps_test_accuracy_with_auto_k(model, digits):
    """Sanity of the whole path on real noisy data (k chosen on noisy held-out labels)."""
    x, y, x_te, y_te = digits
    def acc():
        with torch.no_grad():
            return float((model(x_te).argmax(1) == y_te).float().mean())
    before = acc()
    report = finalize(model[4], _batches(x[:1000], y[:1000]), validation=_batches(x[1000:], y[1000:]), progress=False)
    after = acc()
    assert 0 <= report.k <= 10
    assert after >= before - 0.02, (before, after, report.k)


# ----------------------------------------------------------------------------- batch formats
def test_dict_batches_default_and_custom_keys_and_tuples_with_extras(model, digits):
    x, y, _, _ = digits
    ref = copy.deepcopy(model)
    finalize(ref[4], _batches(x, y), rank=3, progress=False)
    for batches, kw in [
        ([{"x": xb, "y": yb} for xb, yb in _batches(x, y)], {}),
        ([{"pixel_values": xb, "labels": yb} for xb, yb in _batches(x, y)], {}),
        ([{"img": xb, "cls": yb, "id": 0} for xb, yb in _batches(x, y)], {"input_key": "img", "label_key": "cls"}),
        ([(xb, yb, torch.zeros(len(yb))) for xb, yb in _batches(x, y)], {}),
        ([(xb, yb.numpy()) for xb, yb in _batches(x, y)], {}),
    ]:
        m = _mlp()
        m.load_state_dict(model.state_dict())
        finalize(m[4], batches, rank=3, progress=False, **kw)
        assert torch.equal(m[4].weight, ref[4].weight), kw


def test_torch_dataloader_and_generator_input(model, digits):
    x, y, _, _ = digits
    from torch.utils.data import DataLoader, TensorDataset

    ref = copy.deepcopy(model)
    finalize(ref[4], _batches(x, y), rank=3, progress=False)
    finalize(model[4], DataLoader(TensorDataset(x, y), batch_size=BATCH), rank=3, progress=False)
    assert torch.equal(model[4].weight, ref[4].weight)


def test_soft_targets_match_one_hot_labels(model, digits):
    x, y, _, _ = digits
    ref = copy.deepcopy(model)
    finalize(ref[4], _batches(x, y), rank=3, progress=False)
    onehot = nn.functional.one_hot(y, 10).float()
    finalize(model[4], _batches(x, onehot), rank=3, progress=False)
    assert torch.allclose(model[4].weight, ref[4].weight, rtol=1e-5, atol=1e-6)


def test_sequence_features_are_flattened_with_their_labels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(40, 7, 5)
    y = torch.randint(0, 3, (40, 7))
    W = model[2].weight.detach().clone()
    with torch.no_grad():
        feats = model[:2](x).reshape(-1, 8)
    expected = lip_refine(W.T, feats, y.reshape(-1), 1, bias=model[2].bias.detach(), batch_rows=70)
    finalize(model[2], [(x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)], rank=1, progress=False)
    assert torch.allclose(model[2].weight, expected.T, rtol=1e-5, atol=1e-6)


def test_sequence_labels_of_the_wrong_shape_are_rejected():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    W0 = model[2].weight.detach().clone()
    with pytest.raises(ValueError, match=r"classifier inputs have shape \(4, 7, 8\) but labels have shape \(4,\)"):
        finalize(model[2], [(torch.randn(4, 7, 5), torch.zeros(4, dtype=torch.long))], rank=1, progress=False)
    with pytest.raises(ValueError, match=r"must be batched \(n, q\); got shape \(8,\)"):
        finalize(model[2], [(torch.randn(5), torch.zeros(1, dtype=torch.long))], rank=1, progress=False)
    assert torch.equal(model[2].weight, W0)


def test_progress_bar_on_and_off(model, digits, capsys):
    x, y, _, _ = digits
    finalize(model[4], _batches(x, y), rank=3, progress=False)
    assert "LIP fit" not in capsys.readouterr().err
    finalize(model[4], _batches(x, y), rank=3, progress=True)
    assert "LIP fit" in capsys.readouterr().err


# ----------------------------------------------------------------------------- modes, dtypes, compile
def test_train_eval_modes_restored_per_module_and_bn_stats_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 4))
    model.train()
    model[1].eval()  # a deliberately frozen BN must stay frozen
    with torch.no_grad():
        model[1].running_mean.normal_()
    stats = copy.deepcopy(model[1].state_dict())
    data = [(torch.randn(32, 6), torch.randint(0, 4, (32,))) for _ in range(3)]
    # eval mode: dropout off, so the features are deterministic and equal to an eval-mode forward
    model_eval = copy.deepcopy(model).eval()
    with torch.no_grad():
        feats = torch.cat([model_eval[:4](xb) for xb, _ in data])
    expected = lip_refine(model[4].weight.detach().T, feats, torch.cat([yb for _, yb in data]), 2,
                          bias=model[4].bias.detach())
    finalize(model[4], data, rank=2, progress=False)
    assert torch.allclose(model[4].weight, expected.T, rtol=1e-5, atol=1e-6)
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True]
    for key, value in stats.items():
        assert torch.equal(model[1].state_dict()[key], value), key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_refined_in_float32_and_written_back_in_its_dtype(model, digits, dtype):
    x, y, _, _ = digits
    model = model.to(dtype)
    fc = model[4]
    W0 = fc.weight.detach().clone()
    feats = _features(model, x.to(dtype))
    assert feats.dtype == dtype
    expected = lip_refine(W0.T, feats, y, 4, bias=fc.bias.detach(), batch_rows=BATCH)
    assert expected.dtype == dtype
    report = finalize(fc, _batches(x.to(dtype), y), rank=4, progress=False)
    assert fc.weight.dtype == dtype and report.context["dtype"] == str(dtype).replace("torch.", "")
    assert torch.equal(fc.weight, expected.T)
    ref32 = lip_refine(W0.float().T, feats.float(), y, 4, bias=fc.bias.detach().float())
    assert torch.allclose(fc.weight.float(), ref32.T, rtol=2e-2, atol=2e-2)


def test_torch_compiled_model_trains_and_finalizes(digits):
    x, y, _, _ = digits
    model = _mlp(3)
    compiled = torch.compile(model, backend="aot_eager")
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[4], rank=3)
    for xb, yb in _batches(x, y)[:5]:
        opt.zero_grad()
        nn.functional.cross_entropy(compiled(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    W_expected = lip_refine(model[4].weight.detach().clone().T, _features(model, x), y, 3,
                            bias=model[4].bias.detach(), batch_rows=BATCH)
    opt.finalize(_batches(x, y), progress=False)  # model found through the compiled wrapper
    assert torch.allclose(model[4].weight, W_expected.T, rtol=1e-5, atol=1e-6)
    assert compiled.training and model.training
    with torch.no_grad():
        assert torch.allclose(compiled(x[:20]), model(x[:20]))


# ----------------------------------------------------------------------------- the optimizer protocol
def _train(model, opt, batches, *, scaler=None, sched=None, clip=None, autocast=False):
    for xb, yb in batches:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = nn.functional.cross_entropy(model(xb), yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip is not None:
                scaler.unscale_(opt)
        else:
            loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize("setup", ["sgd_sched_scaler_clip", "fused_adam_scaler", "adamw_bf16_autocast"])
def test_wrapper_trains_bit_identically_to_the_bare_optimizer(digits, setup):
    x, y, _, _ = digits
    batches = _batches(x, y)[:8]
    runs = []
    for wrap in (False, True):
        model = _mlp(7)
        if setup == "sgd_sched_scaler_clip":
            base = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True)
            kw = dict(clip=0.5)
        elif setup == "fused_adam_scaler":
            base = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
            kw = {}
        else:
            base = torch.optim.AdamW(model.parameters(), lr=1e-2)
            kw = dict(autocast=True)
        opt = LIPOptimizer(base, classifier=model[4], rank=3) if wrap else base
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3 if "sgd" in setup else 1e-2, total_steps=20)
        scaler = None if setup == "adamw_bf16_autocast" else torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
            _train(model, opt, batches, scaler=scaler, sched=sched, **kw)
        runs.append((model.state_dict(), sched.get_last_lr(), base.state_dict()))
        if wrap:
            assert opt.lip_steps == len(batches)
            assert opt.param_groups is base.param_groups and opt.state is base.state
    (m0, lr0, s0), (m1, lr1, s1) = runs
    assert lr0 == lr1
    for key in m0:
        assert torch.equal(m0[key], m1[key]), key


@pytest.mark.parametrize("fused", [False, True])
def test_grad_scaler_skips_inf_steps_through_the_wrapper(fused):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    base = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    opt = LIPOptimizer(base, classifier=model, rank=1, model=model, project_every=1)
    assert opt._step_supports_amp_scaling is fused
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    before = copy.deepcopy(model.state_dict())
    opt.zero_grad()
    scaler.scale(model(torch.full((2, 4), float("inf"))).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert opt.lip_steps == 0 and scaler.get_scale() == 2.0  # a skipped step is not counted (nor projected)
    assert "grad_scale" not in base.__dict__ and "found_inf" not in base.__dict__
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)


def test_step_hooks_and_closure_go_through_the_base(digits):
    x, y, _, _ = digits
    model = _mlp()
    base = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    opt = LIPOptimizer(base, classifier=model[4], rank=3)
    seen = []
    handle = opt.register_step_post_hook(lambda o, a, k: seen.append(o))
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[:64]), y[:64])
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and seen == [base] and opt.lip_steps == 1
    handle.remove()
    opt.step(closure)
    assert len(seen) == 1
    assert "LIPOptimizer(LBFGS" in repr(opt)


def test_add_param_group_is_shared():
    model = _mlp()
    extra = nn.Parameter(torch.zeros(3))
    base = torch.optim.SGD(list(model.parameters()), lr=0.1)
    opt = LIPOptimizer(base, classifier=model[4], rank=2)
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert len(base.param_groups) == 2 and base.param_groups[1]["lr"] == 0.5


# ----------------------------------------------------------------------------- state dicts
def _make(seed=5, project_every=3):
    model = _mlp(seed)
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), classifier=model[4],
                       rank=6, project_every=project_every)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return model, opt, sched


def test_state_dict_round_trip_mid_training_continues_bit_identically(digits):
    x, y, _, _ = digits
    batches = _batches(x, y)[:10]
    model, opt, sched = _make()
    _train(model, opt, batches[:4], sched=sched)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    _train(model, opt, batches[4:], sched=sched)
    assert opt.lip_steps == 10 and opt._lip.projections == 3

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert ckpt["opt"]["lip"]["steps"] == 4
    model2, opt2, sched2 = _make(seed=99)  # different init: everything must come from the checkpoint
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert opt2.state is opt2.base_optimizer.state and opt2.param_groups is opt2.base_optimizer.param_groups
    _train(model2, opt2, batches[4:], sched=sched2)
    assert opt2.lip_steps == 10
    for key, value in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value), key


def test_bare_base_checkpoints_load_both_ways(digits):
    x, y, _, _ = digits
    model, opt, _ = _make(project_every=None)
    _train(model, opt, _batches(x, y)[:3])
    bare = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    bare.load_state_dict(copy.deepcopy(opt.state_dict()))  # wrapper checkpoint -> plain optimizer
    assert all(torch.equal(bare.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"]) for p in model.parameters())
    model2, opt2, _ = _make(project_every=None)
    model2.load_state_dict(model.state_dict())
    opt2._lip.steps = 7
    opt2.load_state_dict(copy.deepcopy(bare.state_dict()))  # plain checkpoint -> wrapper
    assert opt2.lip_steps == 0
    opt2.base_optimizer.load_state_dict(copy.deepcopy(bare.state_dict()))  # behind the wrapper's back
    assert opt2.state is opt2.base_optimizer.state and opt2.param_groups is opt2.base_optimizer.param_groups
    _train(model, opt, _batches(x, y)[3:5])
    _train(model2, opt2, _batches(x, y)[3:5])
    for key, value in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value), key


def test_load_state_dict_rejects_bad_lip_entries_and_keeps_state():
    model, opt, _ = _make()
    good = opt.state_dict()
    for bad, msg in [({"version": 99, "steps": 1, "projections": 0}, "version"),
                     ({"version": 1, "steps": -1, "projections": 0}, "non-negative int"),
                     ({"version": 1, "steps": 1.5, "projections": 0}, "non-negative int"),
                     ("nope", "must be a dict")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            opt.load_state_dict({**good, "lip": bad})
        assert opt.lip_steps == 0
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        opt.load_state_dict([1, 2])


# ----------------------------------------------------------------------------- periodic projection, attach
def test_periodic_projection_applies_project_principal_every_n_steps(digits):
    x, y, _, _ = digits
    model = _mlp(2)
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[4], rank="auto",
                       project_every=2, project_rank=3)
    for i, (xb, yb) in enumerate(_batches(x, y)[:4]):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.base_optimizer.step()  # the plain update, to know the weight just before the projection
        W_pre = model[4].weight.detach().clone()
        opt._lip.after_step()
        if (i + 1) % 2 == 0:
            assert torch.equal(model[4].weight, project_principal(W_pre.T, 3).T)
            assert int(torch.linalg.matrix_rank(model[4].weight)) == 3
        else:
            assert torch.equal(model[4].weight, W_pre)
    assert opt._lip.projections == 2


def test_attach_counts_steps_projects_and_removes(digits):
    x, y, _, _ = digits
    model = _mlp(4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    handle = attach(opt, model[4], rank=2, project_every=3)
    assert isinstance(handle, LIPHandle) and handle.attached
    _train(model, opt, _batches(x, y)[:6])
    assert handle.steps == 6 and handle._lip.projections == 2
    assert int(torch.linalg.matrix_rank(model[4].weight)) == 2
    handle.remove()
    handle.remove()  # idempotent
    _train(model, opt, _batches(x, y)[6:9])
    assert handle.steps == 6 and not handle.attached
    assert int(torch.linalg.matrix_rank(model[4].weight)) > 2
    W_expected = lip_refine(model[4].weight.detach().clone().T, _features(model, x), y, 2,
                            bias=model[4].bias.detach(), batch_rows=BATCH)
    report = handle.finalize(_batches(x, y), progress=False)
    assert report.k == 2 and report.context["steps"] == 6
    assert torch.allclose(model[4].weight, W_expected.T, rtol=1e-5, atol=1e-6)
    with attach(opt, model[4], rank=2) as h2:
        _train(model, opt, _batches(x, y)[:1])
        assert h2.steps == 1
    assert not h2.attached and opt._optimizer_step_post_hooks == {}


# ----------------------------------------------------------------------------- bad input
def test_classifier_must_be_a_linear_layer_in_the_optimizer():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="must be a torch.nn.Linear layer.*Conv1d"):
        LIPOptimizer(opt, classifier=nn.Conv1d(3, 4, 1))
    with pytest.raises(TypeError, match="LazyLinear that has not run"):
        attach(opt, nn.LazyLinear(4))
    wn = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3))
    with pytest.raises(TypeError, match="parametrized"):
        finalize(wn, [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], model=wn, rank=1)
    other = nn.Linear(24, 10)
    with pytest.raises(ValueError, match=r"classifier.weight \(shape \(10, 24\)\) is not among the optimizer's"):
        LIPOptimizer(opt, classifier=other)
    with pytest.raises(ValueError, match="not among the optimizer's"):
        attach(torch.optim.SGD(model[:4].parameters(), lr=0.1), model[4])
    with pytest.raises(TypeError, match="base_optimizer must be a torch.optim.Optimizer; got list"):
        LIPOptimizer([p for p in model.parameters()], classifier=model[4])
    with pytest.raises(TypeError, match="already a LIPOptimizer"):
        LIPOptimizer(LIPOptimizer(opt, model[4], rank=1), model[4], rank=1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        attach("sgd", model[4])


def test_nan_weights_are_rejected_up_front():
    model = _mlp()
    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"classifier.weight contains 1 NaN/Inf value\(s\) \(shape \(10, 24\)\)"):
        LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[4])
    with pytest.raises(ValueError, match="NaN/Inf"):
        finalize(model[4], [(torch.randn(2, 64), torch.zeros(2, dtype=torch.long))], rank=1)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(rank="best"), ValueError, "'auto'; got 'best'"),
        (dict(rank=11), ValueError, r"\[0, min\(q, l\)=10\]; got 11"),
        (dict(rank=1.5), ValueError, r"fraction must lie in \(0, 1\]; got 1.5"),
        (dict(rank=True), TypeError, r"rank must be an int, an energy fraction in \(0, 1\], or 'auto'; got True \(bool\)"),
        (dict(rank=2, bias_mode="center"), ValueError, "bias_mode must be 'fit'.*'center'"),
        (dict(rank=2, target_scale="logit"), ValueError, "target_scale must be a positive number or 'logits'"),
        (dict(rank=2, degenerate="drop"), ValueError, "degenerate must be 'zero' or 'keep'"),
        (dict(rank=2, holdout=0.9), ValueError, r"holdout must lie in \(0, 0.5\]"),
        (dict(rank=2, min_gain=float("nan")), ValueError, "min_gain must be a finite number"),
        (dict(rank="auto", confidence=95), ValueError, r"confidence must lie in \(0, 1\)"),
        (dict(rank="auto", holdout=0.0), ValueError, r"holdout must lie in \(0, 0.5\]"),
        (dict(rank=2, k=3), TypeError, r"unknown LIP option 'k'"),
        (dict(rank=2, bias_mode="ignore", bias="fit"), TypeError, r"'bias' is set by the PyTorch adapter"),
        (dict(rank=2, fit_bias=False), TypeError, r"unknown LIP option 'fit_bias'"),  # never released: no old spelling
        (dict(rank=2, xp=np), TypeError, "'xp' is set by the PyTorch adapter"),
        (dict(rank=2, momentum=0.9), TypeError, "unknown LIP option 'momentum'"),
        (dict(rank="auto", project_every=5), ValueError, "project_every needs project_rank"),
        (dict(rank=2, project_every=0), ValueError, "project_every must be a positive number of steps"),
        (dict(rank=2, project_every=3, project_rank="auto"), ValueError, "project_rank must be an int"),
        (dict(rank=2, project_every=3, project_rank=20), ValueError, "got 20"),
        (dict(rank=2, model="net"), TypeError, "model must be a torch.nn.Module; got str"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, exc, msg):
    model = _mlp()
    with pytest.raises(exc, match=msg):
        LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), classifier=model[4], **kwargs)
    with pytest.raises(exc, match=msg):
        attach(torch.optim.SGD(model.parameters(), lr=0.1), model[4], **kwargs)
    assert not model[4]._forward_hooks


def test_bad_options_given_to_finalize_fail_before_any_write(model, digits):
    x, y, _, _ = digits
    W0 = model[4].weight.detach().clone()
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model[4], rank="auto")
    for kwargs, msg in [(dict(confidence=2.0), "confidence must lie in"), (dict(rank=99), "got 99"),
                        (dict(tau=1), "unknown LIP option 'tau'"), (dict(chunk_rows=-1), "chunk_rows must be")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            opt.finalize(_batches(x, y), progress=False, **kwargs)
        assert torch.equal(model[4].weight, W0)


def _twice_model():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(64, 24)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            h = self.body(x)
            return self.fc(h) + self.fc(h)
    torch.manual_seed(0)
    return Twice()


def _nan_loader(x, y):
    xb = x[:64].clone()
    xb[3, 0] = float("inf")
    big = _batches(x, y)
    return big[:2] + [(xb * 0 + float("nan"), y[:64])] + big[2:]


@pytest.mark.parametrize(
    "case, exc, msg",
    [
        ("bare tensors", ValueError, r"got Tensor of shape \(64, 64\) \(the loader yields no labels\)"),
        ("1-tuple", ValueError, r"must be \(inputs, labels, ...\); got a tuple of length 1"),
        ("dict without labels", ValueError, "a dict batch has no labels.*'x'"),
        ("dict without input", ValueError, "a dict batch has no model input"),
        ("label too large", ValueError, r"labels must lie in \[0, 10\).*max 10"),
        ("negative label", ValueError, r"labels must lie in \[0, 10\).*min -1"),
        ("float labels", TypeError, "1-D Y must hold integer class labels"),
        ("label count", ValueError, "rows but Y has"),
        ("nan features", ValueError, "NaN/Inf"),
        ("mixed label kinds", ValueError, r"mixes integer labels \(n,\) and target matrices"),
        ("empty list", ValueError, "the loader is empty"),
        ("empty generator", ValueError, "batches were empty"),
        ("empty validation", ValueError, "no held-out samples"),
        ("validation with fixed k", ValueError, "only used to choose rank='auto'"),
        ("loader raises", RuntimeError, "disk on fire"),
        ("called twice", ValueError, "the classifier ran 2 times in one forward pass"),
        ("foreign model", ValueError, "not a submodule of the given model"),
    ],
)
def test_failures_leave_weights_and_modes_exactly_as_they_were(model, digits, case, exc, msg):
    x, y, _, _ = digits
    base = _batches(x, y)
    kw: dict = dict(rank=3)
    fc = model[4]
    if case == "bare tensors":
        loader = [xb for xb, _ in base]
    elif case == "1-tuple":
        loader = [(xb,) for xb, _ in base]
    elif case == "dict without labels":
        loader = [{"x": xb} for xb, _ in base]
    elif case == "dict without input":
        loader = [{"pic": xb, "y": yb} for xb, yb in base]
    elif case == "label too large":
        loader = base[:3] + [(base[3][0], base[3][1].clone().fill_(10))]
    elif case == "negative label":
        loader = base[:3] + [(base[3][0], base[3][1] - 1)]
    elif case == "float labels":
        loader = [(xb, yb.float()) for xb, yb in base]
    elif case == "label count":
        loader = [(xb, yb[:-1]) for xb, yb in base]
    elif case == "nan features":
        loader = _nan_loader(x, y)
    elif case == "mixed label kinds":
        loader = base[:2] + [(base[2][0], nn.functional.one_hot(base[2][1], 10).float())]
    elif case == "empty list":
        loader = []
    elif case == "empty generator":
        loader = (b for b in [])
    elif case == "empty validation":
        loader, kw = base, dict(rank="auto", validation=[])
    elif case == "validation with fixed k":
        loader, kw = base, dict(rank=3, validation=base)
    elif case == "loader raises":
        def gen():
            yield from base[:3]
            raise RuntimeError("disk on fire")
        loader = gen()
    elif case == "called twice":
        model = _twice_model()
        fc = model.fc
        loader = base
    else:
        loader, kw = base, dict(rank=3, model=_mlp(1))
    model.train()
    (model[1] if isinstance(model, nn.Sequential) else model.body).eval()  # modes are restored per module
    modes = [m.training for m in model.modules()]
    W0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    with pytest.raises(exc, match=msg):
        finalize(fc, loader, progress=False, **kw)
    assert torch.equal(fc.weight, W0) and torch.equal(fc.bias, b0)
    assert [m.training for m in model.modules()] == modes
    assert not fc._forward_hooks  # the capture hook is gone


def test_model_discovery_errors():
    lone = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="could not find a model that contains the classifier.*pass model="):
        finalize(lone, [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], rank=1, progress=False)
    a = nn.Sequential(nn.Linear(5, 4), lone)
    b = nn.Sequential(nn.Linear(6, 4), lone)  # noqa: F841  (kept alive: two owners)
    with pytest.raises(ValueError, match="belongs to 2 different models.*pass model="):
        finalize(lone, [(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))], rank=1, progress=False)
    finalize(lone, [(torch.randn(8, 5), torch.zeros(8, dtype=torch.long))], model=a, rank=1, progress=False)


def test_old_spellings_are_refused_not_translated(digits):
    # nothing was ever released: one spelling per option (k= and bias= meaning bias_mode are gone)
    x, y, _, _ = digits
    model = _mlp()
    before = model[4].weight.detach().clone()
    with pytest.raises(OptionTypeError, match=r"unknown LIP option 'k'"):
        finalize(model[4], _batches(x, y), k=3, progress=False)
    with pytest.raises(OptionTypeError, match=r"'bias' is set by the PyTorch adapter"):
        finalize(model[4], _batches(x, y), rank=3, bias="ignore", progress=False)
    finalize(model[4], _batches(x, y), rank=3, bias_mode="ignore", progress=False)
    assert not torch.equal(model[4].weight, before)  # the spelled-right call runs


# ----------------------------------------------------------------------------- the layer refit is the output layer
def _data(q=8, n=40, l=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, q, generator=g), torch.randint(0, l, (n,), generator=g))]


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("two_passes", [{"label_repair": "auto"}, {"label_issues": True}], ids=lambda d: next(iter(d)))
def test_a_hidden_layer_is_refused_when_the_fit_rows_are_read_twice(two_passes):
    # the output-layer check runs on the first pass that reads batches (the core's re-iterability
    # check calls iter() first without reading: that must not count as the first pass)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = _weights(model)
    with pytest.raises(DataError, match=r"the classifier '0' is a hidden layer"):
        finalize(model[0], _data(n=200), rank="auto", progress=False, **two_passes)
    assert _unchanged(model, before)


def test_a_hidden_layer_is_refused_and_nothing_changes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = _weights(model)
    with pytest.raises(DataError, match=r"the classifier '0' is a hidden layer: the model's output reaches it "
                                        r"through Addmm.*its last Linear layer is '2'"):
        finalize(model[0], _data(), rank=2, progress=False)
    assert _unchanged(model, before)
    # the explicit escape hatch, named as such, for a multi-head model's head
    finalize(model[0], _data(), rank=2, progress=False, allow_hidden_layer=True)
    assert not torch.equal(model[0].weight, before["0.weight"])


@pytest.mark.parametrize("tail", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Sigmoid(), nn.Identity()])
def test_the_output_layer_passes_through_element_wise_ops(tail):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), tail)
    before = model[2].weight.detach().clone()
    finalize(model[2], _data(), rank=2, progress=False)
    assert not torch.equal(model[2].weight, before)


def test_an_unused_layer_is_refused():
    torch.manual_seed(0)

    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head, self.aux = nn.Linear(8, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = self.body(x)
            self.aux(h)  # computed, not returned
            return self.head(h)

    model = Aux()
    before = _weights(model)
    with pytest.raises(DataError, match=r"the model's output does not depend on the classifier 'aux'"):
        finalize(model.aux, _data(), rank=2, progress=False)
    assert _unchanged(model, before)


def test_a_head_tied_to_an_embedding_is_refused():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(6, 8)
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 6, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(self.body(x))

    model = Tied()
    before = _weights(model)
    with pytest.raises(DataError, match=r"the classifier's weight is shared with 'emb.weight' \(tied parameters\)"):
        finalize(model.head, _data(l=6), rank=2, progress=False)
    assert _unchanged(model, before)


def test_a_meta_device_weight_is_refused():
    with torch.device("meta"):
        layer = nn.Linear(8, 4)
    with pytest.raises(DataError, match=r"classifier.weight is on the meta device"):
        finalize(layer, _data(), model=layer, rank=2, progress=False)


def test_a_model_also_held_by_a_container_asks_for_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    keep = nn.ModuleList([model, nn.Linear(2, 2)])  # noqa: F841 - a live container holding the model
    before = _weights(model)
    with pytest.raises(DataError, match=r"outermost module holding the classifier is a ModuleList.*pass model="):
        finalize(model[2], _data(), rank=2, progress=False)
    assert _unchanged(model, before)
    finalize(model[2], _data(), model=model, rank=2, progress=False)


@pytest.mark.parametrize("kw", [dict(confidence=0.9), dict(min_gain=0.01), dict(holdout=0.5)])
def test_selection_options_with_a_fixed_rank_are_refused(kw):
    model = _mlp()
    before = _weights(model)
    with pytest.raises(OptionError, match=rf"{next(iter(kw))}=.* has no effect with rank="):
        finalize(model[4], _data(q=64, l=10), rank=3, progress=False, **kw)
    assert _unchanged(model, before)


def test_a_failed_optimizer_load_leaves_the_step_counter_alone():
    model = _mlp()
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model[4], rank=2)
    sd = opt.state_dict()
    sd["lip"] = {"version": 1, "steps": 7, "projections": 0}
    sd["param_groups"] = sd["param_groups"] * 2  # the base refuses: two groups for one
    with pytest.raises(DataError, match=r"the base optimizer refused the state dict"):
        opt.load_state_dict(sd)
    assert opt.lip_steps == 0


def test_selection_options_with_a_fixed_rank_fail_at_construction():
    model = _mlp()
    with pytest.raises(OptionError, match=r"confidence=0.9 has no effect with rank=\d: the significance guard runs only for rank='auto'"):
        LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model[4], rank=3, confidence=0.9)


def test_concatenated_heads_are_output_layers():
    torch.manual_seed(0)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 2), nn.Linear(16, 2)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return torch.cat([self.a(h), self.b(h)], dim=1)

    model = TwoHeads()
    before = model.a.weight.detach().clone()
    finalize(model.a, [(torch.randn(40, 8), torch.randint(0, 2, (40,)))], rank=1, progress=False)
    assert not torch.equal(model.a.weight, before)


def test_numpy_batches_reach_the_model_as_tensors():
    model = _mlp()
    x, y = torch.randn(30, 64), torch.randint(0, 10, (30,))
    ref = _mlp()
    ref.load_state_dict(model.state_dict())
    finalize(model[4], [(x.numpy(), y.numpy())], rank=3, progress=False)
    finalize(ref[4], [(x, y)], rank=3, progress=False)
    assert torch.equal(model[4].weight, ref[4].weight)


def test_progress_defaults_to_a_terminal_only(capfd):
    """Logs and pipes stay clean by default; progress=True shows the bar and the core's lines."""
    model = _mlp()
    finalize(model[4], _data(q=64, l=10), rank=2)
    assert capfd.readouterr().err == ""  # stderr is not a terminal here
    finalize(model[4], _data(q=64, l=10), rank=2, progress=True)
    assert "LIP fit" in capfd.readouterr().err


# ----------------------------------------------------------------------------- label_repair (beyond the paper)
def _noisy_clusters(n=1600, q=16, l=4, rate=0.25, seed=0):
    """Separable clusters, a fraction ``rate`` of the labels moved to another class; ``flip`` marks them."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(l, q, generator=g) * 2
    y = torch.randint(0, l, (n,), generator=g)
    x = means[y] + torch.randn(n, q, generator=g)
    flip = torch.rand(n, generator=g) < rate
    return x, torch.where(flip, (y + torch.randint(1, l, (n,), generator=g)) % l, y), flip


def _cluster_net(q=16, l=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(q, 24), nn.Tanh(), nn.Linear(24, l))


def _loader(x, y, **kw):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100, **kw)


@pytest.mark.parametrize("options", [dict(label_repair="auto"), dict(label_repair="auto", validation=True),
                                     dict(label_repair="filter", temperature=False), dict(label_issues=True, rank=2),
                                     dict(label_issues=True)])
def test_label_issues_name_the_flipped_rows_by_loader_row_and_the_head_is_what_the_result_says(options):
    x, y, flip = _noisy_clusters()
    n = 1200
    model = _cluster_net()
    w0, b0 = model[2].weight.detach().clone(), model[2].bias.detach().clone()
    options = dict(options)
    if options.pop("validation", False):
        options["validation"] = _loader(x[n:], y[n:])
    res = finalize(model[2], _loader(x[:n], y[:n]), progress=False, **options)
    issues, rows = res.label_issues, res.label_issues.rows()
    assert issues.n_flagged == len(rows) > 0 and res.context["n_samples_local"] == n  # the facts count one pass
    # "row" is the row's index in the loader's order (held-out rows counted): its label is the given one
    assert [r["given"] for r in rows] == y[[r["row"] for r in rows]].tolist()
    assert issues.indices == [r["row"] for r in rows] and len(set(issues.indices)) == len(rows)
    assert flip[issues.indices].float().mean() > 2 * flip[:n].float().mean()  # far more flips than chance
    if res.changed:
        torch.testing.assert_close(model[2].weight, res.weight.T.float())
        want_b = b0 if res.bias is None else res.bias.float()
        torch.testing.assert_close(model[2].bias, want_b)
    else:
        assert torch.equal(model[2].weight, w0) and torch.equal(model[2].bias, b0)
    if res.calibration is not None and res.calibration.applied:  # T is in the head: the argmax is the unscaled one
        assert res.changed and res.selection.k == 0


def test_label_repair_without_validation_never_names_a_held_out_row():
    x, y, _ = _noisy_clusters(n=1000)
    model = _cluster_net()
    res = finalize(model[2], _loader(x, y), progress=False, label_repair="auto")
    rows = res.label_issues.rows()
    assert res.selection.extra["source"] == "holdout 1/5" and rows
    assert all(r["row"] % 5 != 4 for r in rows)  # rows 4, 9, 14, ... were held out of the fit, not checked
    assert [r["given"] for r in rows] == y[[r["row"] for r in rows]].tolist()


def test_one_pass_runs_keep_handing_the_core_a_plain_generator(monkeypatch):
    import lip_agnostic

    seen = []
    real = lip_agnostic.refine_batches

    def spy(W, batches, **kw):
        seen.append(type(batches).__name__)
        return real(W, batches, **kw)

    monkeypatch.setattr(lip_agnostic, "refine_batches", spy)
    x, y, _ = _noisy_clusters(n=300)
    model = _cluster_net()
    finalize(model[2], _loader(x, y), rank=2, progress=False)
    finalize(model[2], _loader(x, y), rank=2, progress=False, label_issues=True)
    assert seen == ["generator", "Replayed"]


@pytest.mark.parametrize("loader, error, match", [
    ("shuffle", DataError, r"^label_repair='auto' reads the training data twice in the same order, but the training "
                           r"loader shuffles \(RandomSampler\); pass a DataLoader with shuffle=False"),
    ("generator", LIPError, r"^label_repair='auto' reads .* one-shot generator; pass a DataLoader with shuffle=False"),
])
def test_a_loader_that_cannot_replay_is_refused_before_any_forward_pass(loader, error, match):
    x, y, _ = _noisy_clusters(n=300)
    model = _cluster_net()
    calls = []
    model[0].register_forward_hook(lambda *a: calls.append(1))
    before = copy.deepcopy(model.state_dict())
    source = _loader(x, y, shuffle=True) if loader == "shuffle" else ((x[i:i + 100], y[i:i + 100]) for i in range(0, 300, 100))
    with pytest.raises(error, match=match) as info:
        finalize(model[2], source, progress=False, label_repair="auto")
    assert "\n" not in str(info.value) and calls == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
