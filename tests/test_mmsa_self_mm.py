"""The zoo's Self-MM equals MMSA 2.2.1's SELF_MM model and its trainer's label generation.

MMSA's module is built from its own ``get_config_regression('self_mm', dataset)`` (MMSA's widths of
the LSTMs and heads; the feature widths and BERT shrunk: ``mmsa_oracle.offline_bert()``), Composer's
from ``blueprints/zoo/self_mm.yaml`` at the same ``--dataset`` with the same tiny BERT, and every
tensor is copied through the import's name map (``composer/zoo_import/representation.py``; each
tensor on both sides used once; the ``ulgm`` block's buffers are the trainer's state, not the
module's). Checked: parameter counts (also at full size on the meta device), the four predictions
and the four representations ULGM reads on padded batches (1e-5), the gradient of every parameter,
the optimiser's lr and weight decay of every parameter, and three epochs of training through the
trainer's own functions (``init_labels``, ``weighted_loss``, ``update_labels``, ``update_features``,
``update_centers``, ``optimizer.step()`` every ``update_epochs`` batches) beside Composer's model,
loss terms and optimiser: every loss term at every step, the generated labels after every epoch
and the weights at the end. Negative controls: the fusion's inputs reordered, the class centres
counting zero labels as positive, a perturbed weight.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from composer.testing import padded_batch
from composer.zoo_import import NAME_MAPS

import mmsa_oracle
from mmsa_oracle import no_dropout, trainable

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "self_mm.yaml"
TOLERANCE = 1e-5
HIDDEN = 32  # the tiny BERT's width (MMSA's text_out must equal it)
WIDTHS = {"audio": 3, "vision": 4}
LENGTHS = {"text": 7, "audio": 9, "vision": 8}
BERT_SIZES = {"hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
              "vocab_size": 120, "max_position_embeddings": 512}  # 512: BertConfig's default, as Composer's `bert` builds
TINY = [
    f"blocks.text_bert.hidden_size={HIDDEN}", "blocks.text_bert.num_layers=2", "blocks.text_bert.num_heads=2",
    "blocks.text_bert.intermediate_size=37", "blocks.text_bert.vocab_size=120", "modalities.text.vocab=120",
    *(f"modalities.{m}.features={w}" for m, w in WIDTHS.items()), *(f"modalities.{m}.length={n}" for m, n in LENGTHS.items()),
]
OUTPUTS = {"M": "head", "T": "head_text", "A": "head_audio", "V": "head_vision"}  # MMSA's keys -> Composer's heads
FEATURES = {"Feature_f": "head", "Feature_t": "head_text", "Feature_a": "head_audio", "Feature_v": "head_vision"}
TASKS = {"M": "fusion", "T": "text", "A": "audio", "V": "vision"}  # the trainer's name_map


@pytest.fixture(scope="module")
def mmsa():
    return mmsa_oracle.model_and_trainer("multiTask", "SELF_MM")


# -- building both sides -------------------------------------------------------------------------


def mmsa_config(mmsa, dataset: str, text_width: int = HIDDEN, widths=(WIDTHS["audio"], WIDTHS["vision"]), **changes):
    return mmsa_oracle.regression_config(mmsa, "self_mm", dataset, text_width, widths, text_out=text_width, **changes)


def mmsa_module(mmsa, dataset: str, **changes) -> nn.Module:
    return mmsa_oracle.bert_module(mmsa, mmsa_config(mmsa, dataset, **changes), BERT_SIZES)


def composer_model(dataset: str, *overrides: str):
    return mmsa_oracle.zoo_model(BLUEPRINT, dataset, [*TINY, *overrides])


def copy_weights(theirs: nn.Module, ours) -> dict[str, str]:
    """MMSA's tensors into Composer's model through the import's name map; every tensor on both
    sides named once, except the ``ulgm`` block's buffers (the trainer's state, not the module's)."""
    names = NAME_MAPS["self_mm"](ours)
    state = {k for k in ours.state_dict() if k.startswith("ulgm.")}
    assert state == {f"ulgm.{b}" for b in ("epoch", *(f"{k}_{p}" for k in ("features", "labels") for p in TASKS.values()))}
    mmsa_oracle.copy_through_map(theirs.state_dict(), ours, names, keep=frozenset(state))
    return names


def pair(mmsa, dataset: str = "mosi", *overrides: str, **changes):
    theirs, ours = mmsa_module(mmsa, dataset, **changes), composer_model(dataset, *overrides)
    names = copy_weights(theirs, ours)
    return ours, theirs, names


def a_batch(ours, size: int = 4, seed: int = 0) -> dict:
    """A padded batch: token ids with a mask and segment ids, audio and vision with lengths, padded steps zero."""
    batch = padded_batch(ours, size, seed=seed)
    gen = torch.Generator().manual_seed(seed + 3)
    batch["text_segment"] = torch.randint(0, 2, batch["text"].shape, generator=gen) * batch["text_mask"]
    for m in WIDTHS:
        valid = torch.arange(batch[m].shape[1])[None] < batch[f"{m}_lengths"][:, None]
        batch[m] = batch[m] * valid[..., None]
    batch["index"] = torch.arange(size)  # each sample's row in ULGM's state (read by the training-only branch)
    assert (batch["audio_lengths"] < LENGTHS["audio"]).any() and (~batch["text_mask"]).any()
    return batch


def mmsa_inputs(batch: dict):
    """(text, audio, vision) as MMSA's data loader gives them: ``text_bert`` (B, 3, T) as floats."""
    text = torch.stack([batch["text"], batch["text_mask"].long(), batch["text_segment"]], dim=1).float()
    return text, (batch["audio"], batch["audio_lengths"].cpu()), (batch["vision"], batch["vision_lengths"].cpu())


def heads_of(ours, batch: dict, training_branches: bool = True) -> dict[str, torch.Tensor]:
    """Composer's four outputs and four representations under MMSA's keys."""
    values = ours(batch, training_branches=training_branches)["values"]
    out = {k: values[f"{use}/layers"] for k, use in OUTPUTS.items()}
    out.update({k: values[f"{use}/feature"] for k, use in FEATURES.items()})
    return out


# -- equality of the modules ---------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_self_mm_outputs_representations_and_gradients_equal_mmsa_on_padded_batches(mmsa, dataset):
    ours, theirs, names = pair(mmsa, dataset)
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters())
    ours.eval(), theirs.eval()
    batch = a_batch(ours)
    mine, reference = heads_of(ours, batch), theirs(*mmsa_inputs(batch))
    torch.testing.assert_close(ours(batch)["prediction"], reference["M"], atol=TOLERANCE, rtol=0)
    for key in [*OUTPUTS, *FEATURES]:
        assert mine[key].shape == reference[key].shape
        torch.testing.assert_close(mine[key], reference[key], atol=TOLERANCE, rtol=0, msg=lambda m: f"{key}: {m}")
    y = batch["label"].view(-1, 1)
    sum(nn.functional.mse_loss(mine[k], y) + mine[f].square().mean() for k, f in zip(OUTPUTS, FEATURES)).backward()
    sum(nn.functional.mse_loss(reference[k], y) + reference[f].square().mean() for k, f in zip(OUTPUTS, FEATURES)).backward()
    compared = mmsa_oracle.assert_gradients_equal(ours, theirs, names, unused=("text_model.model.pooler.",))  # BERT's pooler: counted, never used
    assert compared == len(names) - 2


def test_self_mm_negative_controls_break_the_equality(mmsa):
    ours, theirs, _ = pair(mmsa, "mosi", "blocks.fusion.in=[text_bert.cls, vision_net, audio_net]")
    ours.eval(), theirs.eval()
    batch = a_batch(ours)
    with torch.no_grad():
        assert (ours(batch)["prediction"] - theirs(*mmsa_inputs(batch))["M"]).abs().max() > TOLERANCE  # audio and vision swapped
    ours, theirs, names = pair(mmsa, "mosi")
    ours.eval(), theirs.eval()
    with torch.no_grad():
        dict(ours.named_parameters())[names["audio_model.rnn.weight_ih_l0"]][0, 0] += 0.5
        assert (heads_of(ours, batch)["A"] - theirs(*mmsa_inputs(batch))["A"]).abs().max() > TOLERANCE


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_self_mm_full_size_parameter_counts(mmsa, dataset):
    """At the datasets' real widths and BERT-base (bert-base-chinese's vocabulary on CH-SIMS), MMSA's
    module built on the meta device: the same trainable count as the blueprint's (inference and
    training-only parameters together; the unimodal heads are training-only in Composer)."""
    theirs, ours = mmsa_oracle.full_size_counts(mmsa, lambda text, widths: mmsa_config(mmsa, dataset, text, widths), BLUEPRINT, dataset)
    assert ours == theirs
    assert {"mosi": 109_641_572}.get(dataset, theirs) == theirs


# -- the training recipe -------------------------------------------------------------------------


def mmsa_optimizer_groups(mmsa, theirs: nn.Module, config, monkeypatch) -> list[dict]:
    """The parameter groups MMSA's trainer gives ``optim.Adam`` (``do_train``, stopped right there)."""
    seen = []

    def record(groups, *args, **kwargs):
        seen.extend(groups)
        raise mmsa_oracle.Stop

    monkeypatch.setattr(mmsa.trainer_module, "optim", types.SimpleNamespace(Adam=record))
    trainer = object.__new__(mmsa.trainer)
    trainer.args = config
    with pytest.raises(mmsa_oracle.Stop):
        trainer.do_train(types.SimpleNamespace(Model=theirs), {"train": []})
    return seen


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_self_mm_optimiser_settings_of_every_parameter_are_mmsas(mmsa, dataset, monkeypatch):
    from composer.train.optim import build_optimizer

    ours, theirs, names = pair(mmsa, dataset)
    groups = mmsa_optimizer_groups(mmsa, theirs, mmsa_config(mmsa, dataset), monkeypatch)
    theirs_settings = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(theirs_settings) == len(list(theirs.parameters()))
    optimizer = build_optimizer(ours, ours.blueprint.training)
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for mmsa_name, name in names.items():
        assert mine[id(params[name])] == pytest.approx(theirs_settings[id(twins[mmsa_name])]), name
    no_decay = [n for n in names if n.startswith("text_model.") and theirs_settings[id(twins[n])][1] == 0.0]
    assert no_decay and all("bias" in n or "LayerNorm" in n for n in no_decay)  # bert_no_decay did apply


N_TRAIN, BATCH, EPOCHS = 16, 2, 3
N_ODD = 14  # 7 batches of 2: the last 3 of every epoch make no group of update_epochs = 4


def training_data(ours, n: int = N_TRAIN) -> dict[str, torch.Tensor]:
    """A train split of ``n`` padded samples with labels that include exact zeros."""
    data = a_batch(ours, n, seed=5)
    gen = torch.Generator().manual_seed(9)
    data["label"] = torch.round(torch.randn(n, generator=gen) * 1.5)
    data["label"][:3] = 0.0
    data["index"] = torch.arange(n)
    return data


def batches(data: dict, epoch: int):
    order = torch.randperm(len(data["index"]), generator=torch.Generator().manual_seed(100 + epoch))
    for idx in order.split(BATCH):
        yield {k: v[idx] for k, v in data.items()}


def mmsa_run(mmsa, data: dict, monkeypatch, epochs: int = EPOCHS) -> dict:
    """MMSA's model under its trainer's loop (trains/multiTask/SELF_MM.py ``do_train``, one epoch at a
    time, with its own functions): the loss terms of every batch, the labels after every epoch, the
    final weights."""
    n = len(data["index"])
    config = mmsa_config(mmsa, "mosi", train_samples=n)
    theirs = mmsa_module(mmsa, "mosi")
    no_dropout(theirs)
    start = {k: v.clone() for k, v in theirs.state_dict().items()}
    with monkeypatch.context() as patch:
        groups = mmsa_optimizer_groups(mmsa, theirs, config, patch)
    optimizer = torch.optim.Adam(groups)
    trainer = mmsa.trainer(config)
    trainer.init_labels(data["index"], data["label"])
    terms, labels = [], []
    theirs.train()
    for epoch in range(1, epochs + 1):
        left = config.update_epochs  # reset every epoch: the next zero_grad discards an incomplete group
        for batch in batches(data, epoch):
            if left == config.update_epochs:
                optimizer.zero_grad()
            left -= 1
            idx = batch["index"]
            outputs = theirs(*mmsa_inputs(batch))
            parts = {m: trainer.weighted_loss(outputs[m], trainer.label_map[name][idx], indexes=idx, mode=name) for m, name in TASKS.items()}
            sum(parts.values()).backward()
            terms.append({m: float(v.detach()) for m, v in parts.items()})
            features = [outputs[k].detach() for k in ("Feature_f", "Feature_t", "Feature_a", "Feature_v")]
            if epoch > 1:
                trainer.update_labels(*features, epoch, idx, outputs)
            trainer.update_features(*features, idx)
            trainer.update_centers()
            if not left:
                optimizer.step()
                left = config.update_epochs
        assert left == config.update_epochs - (n // BATCH) % config.update_epochs  # the incomplete group, never stepped
        labels.append({name: trainer.label_map[name].clone() for name in TASKS.values()})
    return {"start": start, "terms": terms, "labels": labels, "weights": dict(theirs.named_parameters())}


def composer_run(mmsa, data: dict, start: dict, *overrides: str, epochs: int = EPOCHS) -> dict:
    """Composer's model, loss terms and optimiser (``build_optimizer``, stepped every ``grad_accum``
    batches on the summed losses, the trainer's ``steps_after`` and ``grad_accum_tail``) on the same
    batches, with ``composer_epoch_end`` after each epoch."""
    from composer.train.optim import build_optimizer
    from composer.train.trainer import steps_after

    n_batches = -(-len(data["index"]) // BATCH)
    ours = composer_model("mosi", f"blocks.ulgm.samples={len(data['index'])}", *overrides)
    names = NAME_MAPS["self_mm"](ours)
    target = ours.state_dict()
    ours.load_state_dict({**{k: v for k, v in target.items() if k.startswith("ulgm.")}, **{names[k]: v for k, v in start.items()}})
    no_dropout(ours)
    cfg = ours.blueprint.training
    assert (cfg.grad_accum, cfg.grad_accum_reduction) == (4, "sum")
    optimizer = build_optimizer(ours, cfg)
    terms, labels = [], []
    ours.train()
    for epoch in range(1, epochs + 1):
        if epoch == 1 or cfg.grad_accum_tail != "carry":
            optimizer.zero_grad()
        for i, batch in enumerate(batches(data, epoch)):
            total, parts = ours.compute_loss({"main": ours(batch)}, {"main": batch})
            total.backward()
            terms.append({m: float(v.detach()) for m, v in parts.items()})
            if steps_after(i, n_batches, cfg):
                optimizer.step()
                optimizer.zero_grad()
        mmsa_oracle.epoch_end(ours, epoch)
        labels.append({name: getattr(ours.block("ulgm"), f"labels_{name}").clone() for name in TASKS.values()})
    return {"terms": terms, "labels": labels, "weights": {m: dict(ours.named_parameters())[n] for m, n in names.items()}}


@pytest.fixture(scope="module")
def mmsa_training(mmsa):
    patch = pytest.MonkeyPatch()
    try:
        probe = composer_model("mosi", f"blocks.ulgm.samples={N_TRAIN}")
        data = training_data(probe)
        return data, mmsa_run(mmsa, data, patch)
    finally:
        patch.undo()


def test_self_mm_training_equals_mmsas_trainer_loss_terms_generated_labels_and_weights(mmsa, mmsa_training):
    data, reference = mmsa_training
    mine = composer_run(mmsa, data, reference["start"])
    assert len(mine["terms"]) == len(reference["terms"]) == EPOCHS * N_TRAIN // BATCH
    for step, (ours, theirs) in enumerate(zip(mine["terms"], reference["terms"])):
        for m in TASKS:
            assert ours[m] == pytest.approx(theirs[m], abs=1e-5), (step, m)
    assert any(t["T"] > 0 for t in reference["terms"][N_TRAIN // BATCH:])  # the unimodal terms weigh something after epoch 1
    for epoch, (ours, theirs) in enumerate(zip(mine["labels"], reference["labels"]), start=1):
        for name in TASKS.values():
            torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0, msg=lambda m: f"epoch {epoch}, {name}: {m}")
    for name in ("text", "audio", "vision"):
        assert not torch.allclose(reference["labels"][-1][name], data["label"])  # the labels did move
    for mmsa_name, p in mine["weights"].items():
        torch.testing.assert_close(p, reference["weights"][mmsa_name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{mmsa_name}: {m}")


def test_self_mm_training_drops_an_epochs_incomplete_group_as_mmsas_trainer(mmsa, monkeypatch):
    # 7 batches an epoch: MMSA steps after batch 4 and never on 5-7, whose gradients the next
    # epoch's first zero_grad discards; the blueprint's grad_accum_tail: drop does the same
    probe = composer_model("mosi", f"blocks.ulgm.samples={N_ODD}")
    assert probe.blueprint.training.grad_accum_tail == "drop"
    data = training_data(probe, N_ODD)
    reference = mmsa_run(mmsa, data, monkeypatch, epochs=2)
    weights = {tail: composer_run(mmsa, data, reference["start"], f"training.grad_accum_tail={tail}", epochs=2)["weights"]
               for tail in ("drop", "step", "carry")}
    for mmsa_name, p in weights["drop"].items():
        torch.testing.assert_close(p, reference["weights"][mmsa_name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{mmsa_name}: {m}")
    for tail in ("step", "carry"):  # negative controls: stepping on the tail, or carrying it, ends elsewhere
        assert any(not torch.allclose(p, reference["weights"][k], atol=1e-4) for k, p in weights[tail].items()), tail


def test_self_mm_negative_control_zero_labels_in_the_positive_centre_change_the_generated_labels(mmsa, mmsa_training):
    data, reference = mmsa_training
    mine = composer_run(mmsa, data, reference["start"], "blocks.ulgm.exclude_zero=false", epochs=2)  # labels move from epoch 2
    assert not torch.allclose(mine["labels"][-1]["text"], reference["labels"][1]["text"], atol=1e-4)


# -- running it ----------------------------------------------------------------------------------


RUN = [*TINY, "training.data.samples={train: 12, valid: 4, test: 4}", "training.batch_size=4", "blocks.ulgm.samples=12"]


def test_self_mm_trains_on_synthetic_data_and_a_resumed_run_generates_the_same_labels(tmp_path):
    from composer.train.checkpoint import load_checkpoint

    composer.train(BLUEPRINT, out=tmp_path / "whole", overrides=RUN + ["training.epochs=2"], progress=False)
    composer.train(BLUEPRINT, out=tmp_path / "parts", overrides=RUN + ["training.epochs=1"], progress=False)
    run = composer.train(BLUEPRINT, out=tmp_path / "parts", overrides=RUN + ["training.epochs=2"], resume=True, progress=False)
    assert all(f"loss/{t}" in str(run.summary) for t in "MTAV")
    whole, parts = (load_checkpoint(tmp_path / r / "last.ckpt")["model"] for r in ("whole", "parts"))
    state = [k for k in whole if k.startswith("ulgm.")]
    assert int(whole["ulgm.epoch"]) == 3 and all(torch.equal(whole[k], parts[k]) for k in state)
    assert not torch.equal(whole["ulgm.labels_text"], whole["ulgm.labels_fusion"])


def mmsa_pickle(path: Path, n: int = 6, seed: int = 0) -> None:
    """An MMSA-layout pickle (unaligned, ``text_bert`` (N, 3, T): ids, mask, segments) at test widths."""
    mmsa_oracle.write_bert_pickle(path, LENGTHS, WIDTHS, n=n, seed=seed, vocab=120)


def train_on_mmsa_pickle(blueprint: Path, folder: Path, n: int, *overrides: str):
    """One epoch of ``blueprint`` at the test sizes (batches of 4) on an MMSA-layout pickle of ``n`` samples a split."""
    mmsa_pickle(folder / "mosi.pkl", n=n)
    return composer.train(blueprint, folder / "mosi.pkl", out=folder / "run", epochs=1, progress=False,
                          overrides=[*TINY, "training.batch_size=4", *overrides])


def test_self_mm_trains_on_an_mmsa_layout_pickle_with_text_bert(tmp_path):
    run = train_on_mmsa_pickle(BLUEPRINT, tmp_path, 6, "blocks.ulgm.samples=6")
    assert "loss/T" in str(run.summary)


# -- moving over from MMSA -----------------------------------------------------------------------


def imported_and_predicting_as_mmsa(theirs: nn.Module, blueprint: Path, folder: Path):
    """Composer's model from MMSA's module's weights as MMSA saves them (MOSI, the test sizes), after
    checking that it predicts MMSA's ``M`` on a padded batch (1e-5)."""
    ours = mmsa_oracle.imported_as_saved_by_mmsa(theirs, blueprint, folder, "mosi", TINY)
    ours.eval(), theirs.eval()
    batch = a_batch(ours)
    with torch.no_grad():
        torch.testing.assert_close(ours(batch)["prediction"], theirs(*mmsa_inputs(batch))["M"], atol=TOLERANCE, rtol=0)
    return ours


def test_self_mm_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    ours = imported_and_predicting_as_mmsa(mmsa_module(mmsa, "mosi"), BLUEPRINT, tmp_path)
    assert int(ours.block("ulgm").epoch) == 1 and not ours.block("ulgm").labels_text.any()  # the trainer's state starts fresh


def test_self_mm_labels_stay_finite_when_a_class_is_empty():
    """Every label positive: no negative centre (MMSA's generated labels turn NaN); ULGM keeps the
    labels as they are, so training goes on, and the run's state is finite."""
    from composer.blocks.ulgm import ULGM
    from composer.configs.ulgm import ULGMConfig
    from composer.spec import labels, vector

    specs = {"fusion": vector(6), "text": vector(4), "label": labels("float"), "index": labels("long")}
    block = ULGM(ULGMConfig(type="ulgm", inputs={k: k for k in specs}, samples=8), specs).train()
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(8, generator=gen) + 0.5
    for epoch in (1, 2, 3):
        out = block({"fusion": torch.randn(8, 6, generator=gen), "text": torch.randn(8, 4, generator=gen), "label": y, "index": torch.arange(8)}, None)
        assert torch.isfinite(out["text"]).all() and torch.isfinite(out["weight_text"]).all()
        block.composer_epoch_end(epoch)
    assert torch.equal(block.labels_text, y)
