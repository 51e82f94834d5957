"""The zoo's MMIM equals MMSA 2.2.1's MMIM model, its bounds and its trainer's two passes.

MMSA's module is built from its own ``get_config_regression('mmim', dataset)`` (MMSA's widths of the
encoders, the fusion and the bounds; the feature widths and BERT shrunk: ``mmsa_oracle.offline_bert()``),
Composer's from ``blueprints/zoo/mmim.yaml`` at the same ``--dataset`` with the same tiny BERT, and
every tensor is copied through the import's name map (``composer/zoo_import/representation.py``:
the bounds' networks are the networks of the losses ``nce_*``, ``lld_*``, ``entropy_*``; each tensor
on both sides used once). Checked: parameter counts (also at full size on the meta device), the
prediction, the four representations, CPC's ``nce`` and MMILB's ``lld`` on padded batches (1e-5),
the entropy ``H`` with its memory, the gradient of every parameter, the two optimisers' settings of
every parameter, and two epochs of MMSA's ``train_mmilb`` + ``train_others`` (their losses, clipping
and optimisers, with MMSA's re-initialised weights) beside Composer's stage and main updates: every
loss at every step and the weights at the end. Negative controls: CPC scoring the other modality,
the bound stage without its weight, a perturbed weight.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import composer
from composer.zoo_import import NAME_MAPS

import mmsa_oracle
from mmsa_oracle import no_dropout, trainable
from test_mmsa_self_mm import (BERT_SIZES, HIDDEN, TINY, TOLERANCE, WIDTHS, a_batch, imported_and_predicting_as_mmsa, mmsa_inputs,
                               train_on_mmsa_pickle)

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "zoo" / "mmim.yaml"
FEATURES = {"Feature_t": "text_bert.cls", "Feature_a": "audio_net/linear_1", "Feature_v": "vision_net/linear_1", "Feature_f": "fusion_prj/feature"}


@pytest.fixture(scope="module")
def mmsa():
    return mmsa_oracle.model_and_trainer("singleTask", "MMIM")


def mmsa_config(mmsa, dataset: str, text_width: int = HIDDEN, widths=(WIDTHS["audio"], WIDTHS["vision"]), **changes):
    return mmsa_oracle.regression_config(mmsa, "mmim", dataset, text_width, widths, **changes)


def mmsa_module(mmsa, dataset: str, **changes) -> nn.Module:
    return mmsa_oracle.bert_module(mmsa, mmsa_config(mmsa, dataset, **changes), BERT_SIZES)


def composer_model(dataset: str, *overrides: str):
    return mmsa_oracle.zoo_model(BLUEPRINT, dataset, [*TINY, *overrides])


def copy_weights(theirs: nn.Module, ours) -> dict[str, str]:
    """MMSA's tensors into Composer's model through the import's name map, every tensor on both sides once."""
    names = NAME_MAPS["mmim"](ours)
    mmsa_oracle.copy_through_map(theirs.state_dict(), ours, names)
    return names


def pair(mmsa, dataset: str = "mosi", *overrides: str):
    theirs, ours = mmsa_module(mmsa, dataset), composer_model(dataset, *overrides)
    return ours, theirs, copy_weights(theirs, ours)


def terms_of(ours, batch: dict):
    """Composer's outputs, values and loss terms (the entropy terms are 0 out of training)."""
    out = ours(batch, training_branches=True)
    total, parts = ours.compute_loss({"main": out}, {"main": batch})
    return out, total, parts


# -- equality of the module and its bounds -------------------------------------------------------


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_mmim_outputs_bounds_and_gradients_equal_mmsa_on_padded_batches(mmsa, dataset):
    ours, theirs, names = pair(mmsa, dataset)
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters())
    ours.eval(), theirs.eval()
    batch = a_batch(ours)
    out, total, parts = terms_of(ours, batch)
    reference = theirs(*mmsa_inputs(batch))
    torch.testing.assert_close(out["prediction"], reference["M"], atol=TOLERANCE, rtol=0)
    for key, value in FEATURES.items():
        torch.testing.assert_close(out["values"][value], reference[key], atol=TOLERANCE, rtol=0, msg=lambda m: f"{key}: {m}")
    torch.testing.assert_close(parts["nce_text"] + parts["nce_vision"] + parts["nce_audio"], reference["nce"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(parts["lld_tv"] + parts["lld_ta"], -reference["lld"], atol=TOLERANCE, rtol=0)
    text_h, vision_h = reference["Feature_t"], reference["Feature_v"]
    torch.testing.assert_close(parts["nce_vision"], theirs.cpc_zv(vision_h, reference["Feature_f"]), atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(parts["lld_tv"], -theirs.mi_tv(x=text_h, y=vision_h)[0], atol=TOLERANCE, rtol=0)
    assert parts["entropy_tv"] == 0 and parts["entropy_ta"] == 0  # MMSA's H is 0 without labels and memory
    config = mmsa_config(mmsa, dataset)
    expected = nn.functional.l1_loss(reference["M"], batch["label"].view(-1, 1)) + config.alpha * reference["nce"] - config.beta * reference["lld"]
    torch.testing.assert_close(total, expected, atol=TOLERANCE, rtol=0)  # train_others' loss before the memory fills
    total.backward()
    expected.backward()
    unused = ("bertmodel.model.pooler.", "mi_tv.entropy_prj.", "mi_ta.entropy_prj.")  # no gradient on either side here
    mmsa_oracle.assert_gradients_equal(ours, theirs, names, unused=unused)


def test_mmim_negative_controls_break_the_equality(mmsa):
    ours, theirs, names = pair(mmsa, "mosi", "losses.nce_vision.x=audio_net")  # CPC on the other modality
    ours.eval(), theirs.eval()
    batch = a_batch(ours)
    with torch.no_grad():
        _, _, parts = terms_of(ours, batch)
        reference = theirs(*mmsa_inputs(batch))
        assert (parts["nce_vision"] - theirs.cpc_zv(reference["Feature_v"], reference["Feature_f"])).abs() > TOLERANCE
        dict(ours.named_parameters())[names["visual_enc.rnn.weight_ih_l0_reverse"]][0, 0] += 0.5  # the backward direction counts
        assert (ours(batch)["prediction"] - reference["M"]).abs().max() > TOLERANCE


def test_mmim_entropy_with_its_memory_equals_mmilbs(mmsa):
    """``gaussian_entropy`` over three training batches: 0 for the first two, then ``-H`` of MMILB
    with the previous batch's codes as its memory; equal gradients into the codes and the projection."""
    ours, theirs, names = pair(mmsa, "mosi")
    loss = ours.losses[[n.name for n in ours.plan.losses].index("entropy_tv")].train()
    gen = torch.Generator().manual_seed(4)
    memory = None
    for step in range(3):
        y = torch.randn(10, 16, generator=gen, requires_grad=True)
        label = torch.tensor([1.5, -2.0, 0.0, 0.4, -0.6, 2.2, -1.0, 0.8, -0.2, 1.1])[torch.randperm(10, generator=gen)]
        value = loss({"y": y, "label": label}, None)
        x = torch.randn(10, HIDDEN, generator=gen)
        _, sample, h = theirs.mi_tv(x=x, y=y, labels=label.view(-1, 1), mem=memory if step >= 1 else None)
        if step < 2:
            assert float(value) == 0.0
        else:
            assert float(h.detach()) != 0.0
            torch.testing.assert_close(value, -h, atol=1e-5, rtol=0)
            grads = torch.autograd.grad(value, [y, loss.projection[0].weight])
            reference = torch.autograd.grad(-h, [y, theirs.mi_tv.entropy_prj[0].weight])
            for mine, theirs_grad in zip(grads, reference):
                torch.testing.assert_close(mine, theirs_grad, atol=1e-5, rtol=1e-4)
        memory = {"pos": [sample["pos"].detach()], "neg": [sample["neg"].detach()]}
    loss.composer_epoch_end(1)
    assert float(loss({"y": y, "label": label}, None)) == 0.0  # a new epoch starts with an empty memory


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_mmim_full_size_parameter_counts(mmsa, dataset):
    """At the datasets' real widths and BERT-base (bert-base-chinese's vocabulary on CH-SIMS), MMSA's
    module built on the meta device has the blueprint's count (model and training-only parameters)."""
    theirs, ours = mmsa_oracle.full_size_counts(mmsa, lambda text, widths: mmsa_config(mmsa, dataset, text, widths), BLUEPRINT, dataset)
    assert ours == theirs
    assert {"mosi": 109_763_913}.get(dataset, theirs) == theirs


# -- the training recipe -------------------------------------------------------------------------


def mmsa_trainer(mmsa, theirs: nn.Module, config, monkeypatch):
    """MMSA's trainer after ``do_train`` built its optimisers (it re-initialises MMSA's weights first:
    xavier_normal_ on every matrix outside BERT), stopped at its scheduler."""

    def stop(*args, **kwargs):
        raise mmsa_oracle.Stop

    monkeypatch.setattr(mmsa.trainer_module, "ReduceLROnPlateau", stop)
    trainer = mmsa.trainer(config)
    with pytest.raises(mmsa_oracle.Stop):
        trainer.do_train(theirs, {"train": []})
    return trainer


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_mmim_two_optimisers_settings_of_every_parameter_are_mmsas(mmsa, dataset, monkeypatch):
    from composer.train.optim import build_optimizer, build_stage_optimizers

    ours, theirs, names = pair(mmsa, dataset)
    trainer = mmsa_trainer(mmsa, theirs, mmsa_config(mmsa, dataset), monkeypatch)
    theirs_settings = {}
    for kind, optimizer in (("mmilb", trainer.optimizer_mmilb), ("main", trainer.optimizer_main)):
        for g in optimizer.param_groups:
            theirs_settings.update({id(p): (kind, g["lr"], g["weight_decay"]) for p in g["params"]})
    mine = {}
    cfg = ours.blueprint.training
    for kind, optimizer in (*build_stage_optimizers(ours, cfg).items(), ("main", build_optimizer(ours, cfg))):
        for g in optimizer.param_groups:
            mine.update({id(p): (kind, g["lr"], g["weight_decay"]) for p in g["params"]})
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for mmsa_name, name in names.items():
        assert mine[id(params[name])] == pytest.approx(theirs_settings[id(twins[mmsa_name])]), name
    assert ours.blueprint.training.stages[0].fraction == (0.5 if dataset == "mosei" else 1.0)  # train_mmilb's 50% on MOSEI


N_TRAIN, BATCH, EPOCHS = 32, 8, 2


def training_data(ours) -> dict[str, torch.Tensor]:
    data = a_batch(ours, N_TRAIN, seed=5)
    gen = torch.Generator().manual_seed(9)
    data["label"] = torch.cat([torch.rand(N_TRAIN // 2, generator=gen) * 2.5 + 0.2, -torch.rand(N_TRAIN // 2, generator=gen) * 2.5 - 0.2])
    data["label"][:2] = 0.0
    return data


def batches(data: dict, epoch: int, seed: int):
    order = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(100 * seed + epoch))
    for idx in order.split(BATCH):
        yield {k: v[idx] for k, v in data.items()}


def mmsa_run(mmsa, data: dict, monkeypatch) -> dict:
    """MMSA's model under its trainer's ``train_mmilb`` and ``train_others`` (each epoch, as
    ``do_train`` calls them), on the same batches as Composer's."""
    config = mmsa_config(mmsa, "mosi")
    theirs = mmsa_module(mmsa, "mosi")
    no_dropout(theirs)
    trainer = mmsa_trainer(mmsa, theirs, config, monkeypatch)  # its re-initialisation happens here
    start = {k: v.clone() for k, v in theirs.state_dict().items()}
    stage, main = [], []
    theirs.train()
    for epoch in range(1, EPOCHS + 1):
        for batch in batches(data, epoch, 1):  # train_mmilb
            theirs.zero_grad()
            loss = -theirs(*mmsa_inputs(batch))["lld"]
            loss.backward()
            nn.utils.clip_grad_norm_(theirs.parameters(), config.grad_clip)
            trainer.optimizer_mmilb.step()
            stage.append(float(loss.detach()))
        memory = {"tv": {"pos": [], "neg": []}, "ta": {"pos": [], "neg": []}}
        for i, batch in enumerate(batches(data, epoch, 2)):  # train_others (mem_size 1: the last batch)
            theirs.zero_grad()
            labels = batch["label"].view(-1, 1)
            mem = {"tv": memory["tv"], "ta": memory["ta"], "va": None} if i >= config.mem_size else {"tv": None, "ta": None, "va": None}
            results = theirs(*mmsa_inputs(batch), y=labels, mem=mem)
            for pair_name in ("tv", "ta"):
                memory[pair_name] = {k: [results["pn_dic"][pair_name][k].detach()] for k in ("pos", "neg")}
            loss = nn.functional.l1_loss(results["M"], labels) + config.alpha * results["nce"] - config.beta * results["lld"]
            if i > config.mem_size:
                loss = loss - config.beta * results["H"]
            loss.backward()
            nn.utils.clip_grad_norm_(theirs.parameters(), config.grad_clip)
            trainer.optimizer_main.step()
            main.append(float(loss.detach()))
    return {"start": start, "stage": stage, "main": main, "weights": dict(theirs.named_parameters())}


def composer_run(data: dict, start: dict, *overrides: str) -> dict:
    """Composer's model, losses and optimisers: the ``mmilb`` stage's pass (its weighted objective,
    clipping over every parameter, its own Adam) then the main pass, ``composer_epoch_end`` after each epoch."""
    from composer.train.optim import build_optimizer, build_stage_optimizers, stage_terms

    ours = composer_model("mosi", *overrides)
    names = NAME_MAPS["mmim"](ours)
    ours.load_state_dict({names[k]: v for k, v in start.items()})
    no_dropout(ours)
    cfg = ours.blueprint.training
    (stage_cfg,) = cfg.stages
    stage_opt, main_opt = build_stage_optimizers(ours, cfg)[stage_cfg.name], build_optimizer(ours, cfg)
    stage, main = [], []
    ours.train()
    for epoch in range(1, EPOCHS + 1):
        for batch in batches(data, epoch, 1):
            ours.zero_grad(set_to_none=True)
            total, _ = ours.compute_loss({"main": ours(batch)}, {"main": batch}, stage_terms(ours.blueprint, stage_cfg))
            total = total * stage_cfg.weight
            total.backward()
            nn.utils.clip_grad_norm_(ours.parameters(), cfg.grad_clip)
            stage_opt.step()
            stage.append(float(total.detach()))
        for batch in batches(data, epoch, 2):
            ours.zero_grad(set_to_none=True)
            total, _ = ours.compute_loss({"main": ours(batch)}, {"main": batch})
            total.backward()
            nn.utils.clip_grad_norm_(ours.parameters(), cfg.grad_clip)
            main_opt.step()
            main.append(float(total.detach()))
        mmsa_oracle.epoch_end(ours, epoch)
    return {"stage": stage, "main": main, "weights": {m: dict(ours.named_parameters())[n] for m, n in names.items()}}


@pytest.fixture(scope="module")
def mmsa_training(mmsa):
    patch = pytest.MonkeyPatch()
    try:
        data = training_data(composer_model("mosi"))
        return data, mmsa_run(mmsa, data, patch)
    finally:
        patch.undo()


def test_mmim_training_equals_mmsas_two_passes_losses_and_weights(mmsa_training):
    data, reference = mmsa_training
    mine = composer_run(data, reference["start"])
    assert len(mine["stage"]) == len(reference["stage"]) == len(mine["main"]) == EPOCHS * N_TRAIN // BATCH
    assert mine["stage"] == pytest.approx(reference["stage"], abs=1e-4, rel=1e-5)
    assert mine["main"] == pytest.approx(reference["main"], abs=1e-4, rel=1e-5)
    for mmsa_name, p in mine["weights"].items():
        torch.testing.assert_close(p, reference["weights"][mmsa_name], atol=1e-4, rtol=1e-4, msg=lambda m: f"{mmsa_name}: {m}")
    moved = [n for n, p in mine["weights"].items() if not torch.equal(p, reference["start"][n])]
    assert any(n.startswith("mi_tv.mlp_mu") for n in moved) and any(n.startswith("fusion_prj") for n in moved)
    assert not any(n.startswith("mi_tv.entropy_prj") for n in moved)  # in MMSA's mmilb optimiser, never given a gradient there


def test_mmim_negative_control_the_stage_without_its_weight_trains_otherwise(mmsa_training):
    data, reference = mmsa_training
    mine = composer_run(data, reference["start"], "training.stages.0.weight=1.0")
    assert mine["stage"] != pytest.approx(reference["stage"], abs=1e-4, rel=1e-5)


# -- running it ----------------------------------------------------------------------------------


RUN = [*TINY, "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8"]


def test_mmim_trains_on_synthetic_data_with_its_stage(tmp_path):
    run = composer.train(BLUEPRINT, out=tmp_path / "run", overrides=RUN, epochs=2, progress=False)
    text = str(run.summary)
    assert "loss/entropy_tv" in text and "loss/task" in text
    rows = [r for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"split": "train"' in r]
    assert rows and all("stage/mmilb/loss" in r for r in rows)


def test_mmim_trains_on_an_mmsa_layout_pickle_with_text_bert(tmp_path):
    run = train_on_mmsa_pickle(BLUEPRINT, tmp_path, 8)
    assert "loss/lld_tv" in str(run.summary)


def test_mmim_weights_saved_by_mmsa_import_and_predict_equally(mmsa, tmp_path):
    imported_and_predicting_as_mmsa(mmsa_module(mmsa, "mosi"), BLUEPRINT, tmp_path)


def test_gaussian_entropy_refuses_a_code_narrower_than_four_and_class_labels():
    with pytest.raises(composer.BlueprintError, match=r"losses\[6\].*y must be at least 4 wide"):
        composer.load_blueprint(BLUEPRINT, [*TINY, "blocks.vision_net.out=3"])
    with pytest.raises(composer.BlueprintError, match=r"label must be regression labels"):
        composer.load_blueprint(BLUEPRINT, [*TINY, "task={kind: classification, outputs: 3}", "losses.task.type=ce"])


def test_a_class_with_too_few_codes_adds_nothing_instead_of_minus_infinity():
    """With at most D/4 positive codes their covariance is singular (MMSA: log det = -inf and the run
    diverges); the term adds 0, the negative class still counts, and every gradient is finite."""
    from composer.losses.representation import gaussian_entropy

    z = torch.randn(12, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    positive = torch.zeros(12, dtype=torch.bool)
    positive[:3] = True
    value = gaussian_entropy(z, positive, ~positive)
    torch.testing.assert_close(value, 0.25 * torch.logdet(torch.cov(z[3:].t(), correction=0)))
    value.backward()
    assert torch.isfinite(z.grad).all() and z.grad[:3].abs().sum() == 0


# -- the re-initialisation -----------------------------------------------------------------------


def _redrawn(before: dict, after: dict) -> set[str]:
    return {k for k, v in after.items() if not torch.equal(v, before[k])}


def _xavier_std(p: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(p)
    return (2.0 / (fan_in + fan_out)) ** 0.5


def test_mmim_reinit_redraws_the_tensors_mmsas_do_train_redraws_with_xavier(mmsa, monkeypatch):
    """``training.reinit: {init: xavier_normal, tensors: matrices, skip: [text_bert]}`` re-draws
    exactly the tensors MMSA's ``do_train`` re-draws (every matrix whose name lacks 'bert'), each
    from N(0, 2 / (fan_in + fan_out)). The draws themselves cannot be equal: MMSA's loop re-draws
    every collected matrix once per named parameter (the re-init sits inside the loop over
    ``named_parameters``), so its final values come after hundreds of earlier draws and in its
    own order ('mi' names first); Composer draws each matrix once, in its parameter order."""
    from composer.blueprint.training import ReinitConfig
    from composer.train.optim import reinitialise

    ours, theirs, names = pair(mmsa, "mosi")
    theirs_before = {k: v.detach().clone() for k, v in theirs.named_parameters()}
    mmsa_trainer(mmsa, theirs, mmsa_config(mmsa, "mosi"), monkeypatch)  # MMSA's own re-initialisation
    theirs_after = {k: v.detach().clone() for k, v in theirs.named_parameters()}
    cfg = ours.blueprint.training
    assert cfg.reinit is not None and cfg.reinit.init == "xavier_normal" and cfg.reinit.tensors == "matrices"
    ours_before = {k: v.detach().clone() for k, v in ours.named_parameters()}
    torch.manual_seed(cfg.seed)
    reinitialise(ours, cfg)
    ours_after = {k: v.detach().clone() for k, v in ours.named_parameters()}
    redrawn = _redrawn(theirs_before, theirs_after)
    assert redrawn and not any("bert" in k for k in redrawn) and all(theirs_after[k].dim() > 1 for k in redrawn)
    ours_redrawn = _redrawn(ours_before, ours_after)
    assert {names[k] for k in redrawn} == ours_redrawn
    # Composer's draws are torch's xavier_normal_ in its parameter order from the seed (exact)
    torch.manual_seed(cfg.seed)
    for name, p in ours_before.items():
        if name in ours_redrawn:
            expected = nn.init.xavier_normal_(p.clone())
            assert torch.equal(ours_after[name], expected), name
    # both sides' draws are N(0, 1) once divided by each tensor's Xavier std (pooled over the tensors)
    for after, keys in ((theirs_after, redrawn), (ours_after, {names[k] for k in redrawn})):
        z = torch.cat([(after[k] / _xavier_std(after[k])).flatten() for k in sorted(keys)])
        assert z.numel() > 2000 and abs(z.std().item() - 1.0) < 0.05 and abs(z.mean().item()) < 0.05
    # negative control: the default (every Linear, N(0, std), biases set) re-draws another set
    reinitialise(ours, cfg.model_copy(update={"reinit": ReinitConfig(std=0.02, skip=["text_bert"])}))
    assert {names[k] for k in redrawn} != _redrawn(ours_after, {k: v.detach() for k, v in ours.named_parameters()})
