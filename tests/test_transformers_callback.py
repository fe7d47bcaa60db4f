"""Transformers face: LIPCallback refines tiny random models (built from configs) at on_train_end."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded: every model here is built from a config
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from lip_agnostic import LIPResult, refine_batches  # noqa: E402
from lip_agnostic.errors import OptionError, OptionTypeError, RankOutOfRangeError  # noqa: E402
from lip_agnostic.adapters.transformers import LIPCallback, attach, find_head  # noqa: E402

SEQ = 10


def _bert_config(**kw):
    return BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=16, **kw)


def _seq_data(n, seed, token_labels=False, l=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, SEQ), generator=g)
    lab = torch.randint(0, l, (n,), generator=g)
    ids[:, 0] = lab + 1  # the label is readable from the first token
    rows = []
    for i in range(n):
        row = {"input_ids": ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long)}
        if token_labels:
            t = (ids[i] % l).clone()
            t[::3] = -100  # positions the loss ignores
            row["labels"] = t
        else:
            row["labels"] = lab[i]
        rows.append(row)
    return rows


def _image_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, 4, (n,), generator=g)
    px = torch.randn(n, 3, 16, 16, generator=g) + lab[:, None, None, None].float()
    return [{"pixel_values": px[i], "labels": lab[i]} for i in range(n)]


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=8, per_device_train_batch_size=16,
                per_device_eval_batch_size=32, learning_rate=1e-3, report_to=[], save_strategy="no",
                use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0, dataloader_num_workers=0)
    base.update(kw)
    return TrainingArguments(**base)


class Snapshot(TrainerCallback):
    """Records the head as training left it (runs before LIPCallback at on_train_end)."""

    def __init__(self, name, on_end=None):
        self.name, self.on_end, self.weight, self.bias = name, on_end, None, None

    def on_train_end(self, args, state, control, model=None, **kw):
        layer = model.get_submodule(self.name)
        self.weight = layer.weight.detach().clone()
        self.modes = [m.training for m in model.modules()]
        self.bias = None if layer.bias is None else layer.bias.detach().clone()
        if self.on_end is not None:
            self.on_end()


def _features(model, layer, rows, label_fn=None):
    """Reference stream: the head's inputs in eval mode, one batch, computed here (not by the face)."""
    got = []
    h = layer.register_forward_hook(lambda m, a, o: got.append(a[0].detach()))
    model.eval()
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    labels = batch.pop("labels")
    with torch.no_grad():
        model(**batch)
    h.remove()
    F = got[0]
    return (F, labels) if label_fn is None else label_fn(F, labels)


def test_bert_sequence_classification_fixed_rank_equals_the_core(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    train = _seq_data(96, 1)
    snap = Snapshot("classifier")
    lip = LIPCallback(rank=1)
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=train, callbacks=[snap, lip])
    trainer.train()
    assert isinstance(lip.result, LIPResult)
    F, y = _features(model, model.classifier, train)
    want = refine_batches(snap.weight.T.double(), [(F.double(), y)], rank=1, bias=snap.bias.double())
    torch.testing.assert_close(model.classifier.weight, want.weight.T.float(), rtol=1e-4, atol=1e-5)
    assert not torch.equal(model.classifier.weight, snap.weight)
    assert torch.equal(model.classifier.bias, snap.bias)  # the bias is never changed
    ctx = lip.result.context
    assert ctx["head"] == "classifier" and ctx["n_samples_local"] == 96 and ctx["validation"] is None
    entry = trainer.state.log_history[-1]
    assert entry["lip_rank"] == 1 and entry["lip_n_fit"] == 96 and entry["step"] == 8
    assert entry["lip_relative_change"] == pytest.approx(lip.result.summary.relative_change)


def test_attached_auto_scores_ranks_on_the_eval_dataset(tmp_path):
    torch.manual_seed(1)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_seq_data(80, 3),
                      eval_dataset=_seq_data(48, 4))
    lip = attach(trainer, rank="auto")
    trainer.train()
    sel = lip.result.selection
    assert sel.strategy == "auto" and sel.n_val == 48 and sel.extra["source"] == "validation"
    assert lip.result.context["validation"] == "eval_dataset" and lip.result.context["n_val_batches"] == 2
    assert trainer.state.log_history[-1]["lip_rank"] == sel.k


def test_unattached_auto_uses_the_eval_loader_the_trainer_built(tmp_path, recwarn):
    torch.manual_seed(7)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    lip = LIPCallback()
    trainer = Trainer(model=model, args=_args(tmp_path, eval_strategy="steps", eval_steps=4),
                      train_dataset=_seq_data(64, 11), eval_dataset=_seq_data(40, 12), callbacks=[lip])
    trainer.train()
    assert lip.result.context["validation"] == "eval_dataset" and lip.result.selection.n_val == 40
    assert not [w for w in recwarn if "found no eval_dataset" in str(w.message)]


def test_auto_without_an_eval_dataset_holds_out_training_rows_and_says_so(tmp_path):
    torch.manual_seed(2)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    lip = LIPCallback()
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_seq_data(80, 5), callbacks=[lip])
    with pytest.warns(UserWarning, match="found no eval_dataset"):
        trainer.train()
    assert lip.result.context["validation"] == "holdout"
    assert lip.result.selection.n_val == 16 and lip.result.n_fit == 64  # every 5th of 80 rows held out


def test_tiny_vit_image_classification(tmp_path):
    torch.manual_seed(3)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=37, num_labels=4)
    model = ViTForImageClassification(cfg)
    train = _image_data(64, 6)
    snap = Snapshot("classifier")
    lip = LIPCallback(rank=2, bias_mode="ignore")
    Trainer(model=model, args=_args(tmp_path), train_dataset=train, callbacks=[snap, lip]).train()
    F, y = _features(model, model.classifier, train)
    want = refine_batches(snap.weight.T.double(), [(F.double(), y)], rank=2, bias=snap.bias.double(),
                          bias_mode="ignore")
    torch.testing.assert_close(model.classifier.weight, want.weight.T.float(), rtol=1e-4, atol=1e-5)
    assert lip.result.n_fit == 64 and lip.result.context["bias_in_fit"] is False


def test_token_classification_drops_ignored_positions(tmp_path):
    torch.manual_seed(4)
    model = BertForTokenClassification(_bert_config(num_labels=3))
    train = _seq_data(40, 7, token_labels=True)
    snap = Snapshot("classifier")
    lip = LIPCallback(rank=1)
    Trainer(model=model, args=_args(tmp_path), train_dataset=train, callbacks=[snap, lip]).train()
    kept = sum(int((r["labels"] != -100).sum()) for r in train)
    assert lip.result.n_fit == kept < 40 * SEQ

    def rows(F, y):
        F, y = F.reshape(-1, F.shape[-1]), y.reshape(-1)
        return F[y != -100], y[y != -100]

    F, y = _features(model, model.classifier, train, rows)
    want = refine_batches(snap.weight.T.double(), [(F.double(), y)], rank=1, bias=snap.bias.double())
    torch.testing.assert_close(model.classifier.weight, want.weight.T.float(), rtol=1e-4, atol=1e-5)


def test_causal_lm_head_shifts_labels_and_refuses_tied_embeddings(tmp_path):
    torch.manual_seed(5)
    cfg = dict(vocab_size=24, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    rows = []
    g = torch.Generator().manual_seed(8)
    for _ in range(32):
        ids = torch.randint(0, 24, (SEQ,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": ids.clone()})
    tied = GPT2LMHeadModel(GPT2Config(**cfg))
    before = {k: v.clone() for k, v in tied.state_dict().items()}
    trainer = Trainer(model=tied, args=_args(tmp_path), train_dataset=rows, callbacks=[LIPCallback(rank=4)])
    with pytest.raises(ValueError, match="weight is shared with 'transformer.wte.weight'"):
        trainer.train()
    assert trainer.state.global_step == 0  # refused before training
    assert all(torch.equal(before[k], v) for k, v in tied.state_dict().items())

    model = GPT2LMHeadModel(GPT2Config(tie_word_embeddings=False, **cfg))
    lip = LIPCallback(rank=4)
    Trainer(model=model, args=_args(tmp_path, max_steps=2), train_dataset=rows, callbacks=[lip]).train()
    assert lip.result.context["head"] == "lm_head" and lip.result.context["shift_labels"] is True
    assert lip.result.n_fit == 32 * (SEQ - 1)  # position t predicts token t + 1


def test_a_failure_during_the_pass_leaves_the_head_bit_identical(tmp_path):
    torch.manual_seed(6)
    model = BertForSequenceClassification(_bert_config(num_labels=3))

    class Flaky(torch.utils.data.Dataset):
        broken = False

        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            if self.broken and i % 7 == 3:
                raise RuntimeError("disk went away")
            return self.rows[i]

    data = Flaky(_seq_data(64, 9))
    snap = Snapshot("classifier", on_end=lambda: setattr(data, "broken", True))
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=data, callbacks=[snap, LIPCallback(rank=1)])
    with pytest.raises(RuntimeError, match="disk went away"):
        trainer.train()
    assert model.classifier.weight.detach().numpy().tobytes() == snap.weight.numpy().tobytes()
    assert [m.training for m in model.modules()] == snap.modes  # train/eval flags restored


def test_find_head_names_and_errors():
    model = BertForSequenceClassification(_bert_config(num_labels=2))
    assert find_head(model)[0] == "classifier"
    assert find_head(model, "classifier")[1] is model.classifier
    assert find_head(model, model.classifier)[0] == "classifier"
    with pytest.raises(OptionError, match="has no module named 'nope'.*pass head="):
        find_head(model, "nope")
    with pytest.raises(TypeError, match="classifier must be a torch.nn.Linear"):
        find_head(model, "bert.embeddings")
    with pytest.raises(ValueError, match="not a submodule"):
        find_head(model, torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(rank="most"), OptionError, "rank"),
        (dict(rank=True), OptionTypeError, "rank"),
        (dict(rank=-1), RankOutOfRangeError, "rank"),
        (dict(bias_mode="none"), OptionError, "bias_mode"),
        (dict(validation="test"), OptionError, "validation must be 'eval', None or an iterable"),
        (dict(validation=3), OptionTypeError, "validation must be 'eval', None or an iterable"),
        (dict(shift_labels="yes"), OptionError, "shift_labels must be True, False or 'auto'"),
        (dict(head=3), OptionTypeError, "head must be a module name"),
        (dict(bias="fit"), TypeError, "'bias' is set by the Transformers callback; pass bias_mode="),
        (dict(foo=1), TypeError, "unknown LIP option 'foo'"),
        (dict(rank=1, target_scale=-1.0), ValueError, "target_scale"),  # every value parsed by the core, now
    ],
)
def test_bad_options_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        LIPCallback(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(rank=50), RankOutOfRangeError, "50"),
        (dict(head="nope"), OptionError, "has no module named 'nope'"),
    ],
)
def test_bad_options_for_this_model_fail_before_training(tmp_path, kwargs, error, message):
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_seq_data(32, 10),
                      callbacks=[LIPCallback(**kwargs)])
    with pytest.raises(error, match=message):
        trainer.train()
    assert trainer.state.global_step == 0


def test_attach_needs_a_trainer():
    with pytest.raises(OptionTypeError, match="trainer must be a transformers.Trainer; got object"):
        attach(object())


def test_a_hidden_head_such_as_the_pooler_is_refused_and_nothing_changes(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    snap = Snapshot("bert.pooler.dense")
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_seq_data(32, 1),
                      callbacks=[snap, LIPCallback(rank=1, head="bert.pooler.dense")])
    with pytest.raises(ValueError, match=r"the classifier 'bert.pooler.dense' is a hidden layer.*Addmm"):
        trainer.train()
    assert model.bert.pooler.dense.weight.detach().numpy().tobytes() == snap.weight.numpy().tobytes()


# ----------------------------------------------------------------------------- label_repair (beyond the paper)
def test_label_repair_reads_the_train_dataset_in_order_and_reports_the_flagged_rows(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    train = _seq_data(300, 1)  # the true label is readable from the first token
    g = torch.Generator().manual_seed(2)
    flip = torch.rand(300, generator=g) < 0.25
    for row, f in zip(train, flip.tolist()):
        if f:
            row["labels"] = (row["labels"] + 1) % 3
    given = torch.stack([r["labels"] for r in train])
    snap = Snapshot("classifier")
    lip = LIPCallback(label_repair="auto", validation=None)
    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=20), train_dataset=train, callbacks=[snap, lip])
    trainer.train()
    res = lip.result
    issues, rows = res.label_issues, res.label_issues.rows()
    assert issues.n_flagged == len(rows) > 0 and res.context["n_samples_local"] == 300
    assert [r["given"] for r in rows] == given[issues.indices].tolist()  # "row" is the train dataset's index
    assert flip[issues.indices].float().mean() > 2 * flip.float().mean()
    if res.changed:
        torch.testing.assert_close(model.classifier.weight, res.weight.T.float())
    else:
        assert torch.equal(model.classifier.weight, snap.weight)
    entry = trainer.state.log_history[-1]
    assert entry["lip_n_flagged"] == issues.n_flagged


def test_label_repair_refuses_a_train_dataloader_it_cannot_replay_and_keeps_the_head():
    from lip_agnostic.errors import DataTypeError

    torch.manual_seed(0)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    before = model.classifier.weight.detach().clone()
    rows = _seq_data(20, 1)
    once = ({k: torch.stack([r[k] for r in rows[i:i + 10]]) for k in rows[0]} for i in (0, 10))
    lip = LIPCallback(label_repair="auto", validation=None)
    with pytest.raises(DataTypeError, match=r"^label_repair='auto' reads the training data twice in the same order, "
                                            r"but the training loader is a one-shot generator; the Trainer's") as info:
        lip.on_train_end(TrainingArguments(output_dir="unused", use_cpu=True, report_to=[]), None, None,
                         model=model, train_dataloader=once)
    assert "\n" not in str(info.value) and torch.equal(model.classifier.weight, before)
