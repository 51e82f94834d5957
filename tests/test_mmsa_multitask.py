"""The zoo's multi-task baselines (MLF-DNN, MTFN, MLMF) equal MMSA 2.2.1's, with CH-SIMS' unimodal labels.

MMSA's module is built from its own ``sims`` configuration (the only dataset MMSA configures these
models for; feature widths shrunk to keep the tests fast) and Composer's blueprint; every MMSA
tensor is copied through an explicit name map. Then on a padded batch, in eval mode: equal
trainable parameter counts, all four predictions (M, T, A, V) within 1e-5, the weighted sum of the
four L1 losses (each head against its own label: ``label``, ``label.text``, ``label.audio``,
``label.vision``) within 1e-5, and the gradient of every parameter within 1e-5. The optimiser's
learning rate and weight decay of every parameter are compared with the optimiser MMSA's trainer
builds. Each model has a negative control. The data side: ``training.data.extra_labels`` read by the
standard pickle reader and drawn by the synthetic set; ``label.<name>`` checked by ``validate``.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import composer
from composer.data import load_data
from composer.errors import BlueprintError, DataError
from composer.testing import padded_batch
from composer.zoo_import import NAME_MAPS, import_mmsa_weights

import mmsa_oracle
from test_mmsa_zoo import (
    LENGTHS, SUBNETS_AS_MMSA, TOLERANCE, WIDTHS, copy_weights, mmsa_inputs, trainable, with_running_statistics, zero_padding,
)

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "blueprints" / "zoo"
MODELS = {"mlf_dnn": "MLF_DNN", "mtfn": "MTFN", "mlmf": "MLMF"}
HEADS = {"prediction": "M", "text": "T", "audio": "A", "vision": "V"}  # Composer's outputs -> MMSA's keys
LABELS = {"M": "label", "T": "label_text", "A": "label_audio", "V": "label_vision"}
CONTROLS = {  # a setting that must break the equality
    "mlf_dnn": "blocks.fusion.in=[vision_net, audio_net, text_net]",
    "mtfn": "blocks.fusion.one=last",
    "mlmf": "blocks.fusion.one=last",
}


@pytest.fixture(scope="module")
def mmsa():
    names = [f"MMSA.models.multiTask.{c}" for c in MODELS.values()] + [f"MMSA.trains.multiTask.{c}" for c in MODELS.values()]
    loaded = mmsa_oracle.load(*names, "MMSA.config")
    return types.SimpleNamespace(
        models={n: getattr(loaded[f"MMSA.models.multiTask.{c}"], c) for n, c in MODELS.items()},
        trainers={n: getattr(loaded[f"MMSA.trains.multiTask.{c}"], c) for n, c in MODELS.items()},
        modules={n: loaded[f"MMSA.trains.multiTask.{c}"] for n, c in MODELS.items()},
        config=loaded["MMSA.config"].get_config_regression,
    )


# -- building both sides -------------------------------------------------------------------------


#: MTFN's fused width at its CH-SIMS hidden sizes is 33 x 257 x 257 (139M weights after it): the
#: tests shrink the subnetworks on both sides (the full-size counts are compared on the meta device).
SMALLER = {"mtfn": ({"hidden_dims": [16, 4, 8], "text_out": 12},
                    ["blocks.text_net.hidden=16", "blocks.text_net.out=12", "blocks.audio_net.hidden=4", "blocks.vision_net.hidden=8"])}


def mmsa_config(mmsa, name: str, widths=(WIDTHS["text"], WIDTHS["audio"], WIDTHS["vision"]), smaller: bool = True):
    config = mmsa.config(name, "sims")
    config.feature_dims, config.train_mode = list(widths), "regression"
    if smaller:
        config.update(SMALLER.get(name, ({}, []))[0])
    return config


def mmsa_module(mmsa, name: str) -> nn.Module:
    torch.manual_seed(1)
    return with_running_statistics(mmsa.models[name](mmsa_config(mmsa, name)))


def composer_model(name: str, *overrides: str):
    sizes = [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()] + [f"modalities.{m}.length={n}" for m, n in LENGTHS.items()]
    torch.manual_seed(0)
    sizes += SMALLER.get(name, ({}, []))[1]
    return composer.compile_blueprint(composer.load_blueprint(ZOO / f"{name}.yaml", [*sizes, *overrides], dataset="sims"))


def names_of(name: str) -> dict[str, str | None]:
    """The name map `composer import-weights` uses (composer/zoo_import/multitask.py)."""
    return NAME_MAPS[name](None)


def pair(mmsa, name: str, *overrides: str):
    theirs, ours = mmsa_module(mmsa, name), composer_model(name, *SUBNETS_AS_MMSA, *overrides)
    copy_weights(theirs, ours, names_of(name))
    ours.eval(), theirs.eval()
    return ours, theirs


def mmsa_loss(mmsa, name: str, outputs: dict, batch: dict) -> torch.Tensor:
    """MMSA's trainer's loss: ``sum(args.<task> * L1(outputs[task], labels[task]) for task in "MTAV")``."""
    config = mmsa_config(mmsa, name)
    return sum(config[task] * nn.functional.l1_loss(outputs[task], batch[LABELS[task]].view(-1, 1)) for task in "MTAV")


def a_batch(ours) -> dict:
    batch = zero_padding(padded_batch(ours, 4))
    assert (batch["audio_lengths"] < batch["audio"].shape[1]).any() and (batch["text_lengths"] < batch["text"].shape[1]).any()
    return batch


# -- equality ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multitask_outputs_loss_and_gradients_equal_mmsa_on_padded_batches(mmsa, name):
    ours, theirs = pair(mmsa, name)
    assert trainable(ours) == trainable(theirs) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    batch = a_batch(ours)
    mine, reference = ours(batch, training_branches=True), theirs(*mmsa_inputs(batch, normalized=True))
    for output, key in HEADS.items():
        assert mine[output].shape == reference[key].shape == (4, 1)
        torch.testing.assert_close(mine[output], reference[key], atol=TOLERANCE, rtol=0, msg=lambda m: f"{output}: {m}")
    total, parts = ours.compute_loss({"main": mine}, {"main": batch})
    expected = mmsa_loss(mmsa, name, reference, batch)
    torch.testing.assert_close(total, expected, atol=TOLERANCE, rtol=0)
    assert sorted(parts) == sorted("MTAV")
    total.backward()
    expected.backward()
    twins, params = dict(theirs.named_parameters()), dict(ours.named_parameters())
    for mmsa_name, mine_name in names_of(name).items():
        if mmsa_name not in twins or mine_name is None:
            continue  # a BatchNorm buffer, or MTFN's frozen constants
        grad, reference_grad = params[mine_name].grad, twins[mmsa_name].grad
        if reference_grad.abs().sum() > 0:  # MTFN's audio head has loss weight 0 and no gradient on either side
            assert grad is not None and grad.abs().sum() > 0, mine_name
        torch.testing.assert_close(grad if grad is not None else torch.zeros_like(reference_grad), reference_grad,
                                   atol=1e-5, rtol=1e-4, msg=lambda m: f"{mine_name}: {m}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multitask_negative_control_a_changed_setting_breaks_the_equality(mmsa, name):
    ours, theirs = pair(mmsa, name, CONTROLS[name])
    batch = a_batch(ours)
    with torch.no_grad():
        difference = (ours(batch)["prediction"] - theirs(*mmsa_inputs(batch, normalized=True))["M"]).abs().max().item()
    assert difference > TOLERANCE


def test_multitask_negative_control_a_head_against_another_label_breaks_the_loss(mmsa):
    """The text head's loss reads ``label.text``; pointed at the main label, the loss differs."""
    ours, theirs = pair(mmsa, "mlf_dnn", "losses.T.target=label")
    batch = a_batch(ours)
    with torch.no_grad():
        total, _ = ours.compute_loss({"main": ours(batch)}, {"main": batch})
        expected = mmsa_loss(mmsa, "mlf_dnn", theirs(*mmsa_inputs(batch, normalized=True)), batch)
    assert (total - expected).abs().item() > TOLERANCE


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multitask_full_size_parameter_counts_on_sims(mmsa, name):
    """At CH-SIMS' real widths (768, 33, 709) the counts agree exactly (MMSA's module built on the meta device)."""
    with torch.device("meta"):
        theirs = mmsa.models[name](mmsa_config(mmsa, name, widths=(768, 33, 709), smaller=False))
    from composer.graph.size import estimate_size

    assert estimate_size(composer.load_blueprint(ZOO / f"{name}.yaml", dataset="sims").plan).model_params == trainable(theirs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multitask_weights_saved_by_mmsa_import_and_predict_equally(mmsa, name, tmp_path):
    """``composer import-weights`` reads the state dict MMSA's trainer saves (``Model.`` names) and
    the imported model predicts all four outputs as MMSA's module does."""
    theirs = mmsa_module(mmsa, name)
    path = tmp_path / f"{name}-sims.pth"
    torch.save({f"Model.{k}": v for k, v in theirs.state_dict().items()}, path)
    sizes = [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()] + [f"modalities.{m}.length={n}" for m, n in LENGTHS.items()]
    overrides = [*sizes, *SMALLER.get(name, ({}, []))[1], *SUBNETS_AS_MMSA]
    ours = composer.load_model(import_mmsa_weights(path, ZOO / f"{name}.yaml", tmp_path / "w.safetensors", dataset="sims", overrides=overrides))
    ours.eval(), theirs.eval()
    batch = a_batch(ours)
    with torch.no_grad():
        mine, reference = ours(batch), theirs(*mmsa_inputs(batch, normalized=True))
    for output, key in HEADS.items():
        torch.testing.assert_close(mine[output], reference[key], atol=TOLERANCE, rtol=0, msg=lambda m: f"{output}: {m}")


def test_multitask_import_refuses_weights_of_another_model(mmsa, tmp_path):
    """An MLMF file given for the MTFN blueprint is refused, naming the tensors that do not fit."""
    path = tmp_path / "mlmf.pth"
    torch.save(mmsa_module(mmsa, "mlmf").state_dict(), path)
    with pytest.raises(DataError, match="fusion_weights"):
        import_mmsa_weights(path, ZOO / "mtfn.yaml", tmp_path / "w.safetensors", dataset="sims")


def test_multitask_mtfn_output_constants_are_the_configs_bounds(mmsa):
    theirs = mmsa_module(mmsa, "mtfn")
    out = composer.load_blueprint(ZOO / "mtfn.yaml").blueprint.blocks["out"]
    assert theirs.output_range.item() == out.high - out.low and theirs.output_shift.item() == out.low


# -- the training recipe -------------------------------------------------------------------------


class _Built(Exception):
    """Raised by the recording optimiser once MMSA's trainer has built its optimiser."""


def mmsa_groups(mmsa, name: str, theirs: nn.Module, monkeypatch) -> dict[str, tuple[float, float]]:
    """(lr, weight decay) of every parameter in the optimiser MMSA's trainer builds (``do_train``,
    stopped right after ``optim.Adam(...)``)."""
    seen = {}

    def record(groups, lr, weight_decay=0.0):
        for group in groups:
            for p in group["params"]:
                assert id(p) not in seen, "a parameter in two groups"
                seen[id(p)] = (group.get("lr", lr), group.get("weight_decay", weight_decay))
        raise _Built

    monkeypatch.setattr(mmsa.modules[name], "optim", types.SimpleNamespace(Adam=record))  # the trainer module's name only
    trainer = object.__new__(mmsa.trainers[name])  # its __init__ builds MMSA's metrics, which the oracle leaves out
    trainer.args = mmsa_config(mmsa, name)
    with pytest.raises(_Built):
        trainer.do_train(types.SimpleNamespace(Model=theirs, parameters=theirs.parameters), {"train": []})
    return {n: seen[id(p)] for n, p in theirs.named_parameters() if id(p) in seen}


#: Parameters whose optimiser settings differ from MMSA's, and why (docs/zoo.md). None since
#: param_groups select by name and take lr 0 (MLMF's fusion_weights, fusion_bias).
RECIPE_DIFFERENCES: dict[str, set[str]] = {}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multitask_optimiser_settings_of_every_parameter_are_mmsas(mmsa, name, monkeypatch):
    from composer.train.optim import build_optimizer

    theirs = mmsa_module(mmsa, name)
    theirs_groups = mmsa_groups(mmsa, name, theirs, monkeypatch)
    ours = composer_model(name)
    optimizer = build_optimizer(ours, ours.blueprint.training)
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params = dict(ours.named_parameters())
    compared = 0
    for mmsa_name, mine_name in names_of(name).items():
        if mmsa_name not in theirs_groups or mmsa_name in RECIPE_DIFFERENCES.get(name, set()):
            continue
        if not dict(theirs.named_parameters())[mmsa_name].requires_grad:
            assert mine_name is None  # MTFN's output constants: config values in Composer
            continue
        assert mine[id(params[mine_name])] == pytest.approx(theirs_groups[mmsa_name]), mine_name
        compared += 1
    assert compared == len(params) - len(RECIPE_DIFFERENCES.get(name, ()))


# -- the data side -------------------------------------------------------------------------------


def sims_pickle(path: Path, n: int = 6, seed: int = 0) -> dict:
    """An MMSA-layout CH-SIMS-style pickle at test widths: unaligned, with the unimodal labels."""
    rng = np.random.default_rng(seed)
    data = {}
    for split in ("train", "valid", "test"):
        d = {m: rng.standard_normal((n, LENGTHS[m], WIDTHS[m])).astype(np.float32) for m in WIDTHS}
        for m in ("audio", "vision"):
            d[f"{m}_lengths"] = rng.integers(2, LENGTHS[m] + 1, size=n).tolist()
        for key in ("regression_labels", "regression_labels_T", "regression_labels_A", "regression_labels_V"):
            d[key] = np.round(rng.uniform(-1, 1, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    path.write_bytes(pickle.dumps(data))
    return data


def small(name: str, *overrides: str):
    sizes = [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()] + [f"modalities.{m}.length={n}" for m, n in LENGTHS.items()]
    sizes += SMALLER.get(name, ({}, []))[1]
    return composer.load_blueprint(ZOO / f"{name}.yaml", [*sizes, *overrides])


def test_standard_reader_gives_the_extra_labels_as_label_keys(tmp_path):
    data = sims_pickle(tmp_path / "sims.pkl")
    splits = load_data(small("mlf_dnn"), tmp_path / "sims.pkl")
    for split in ("train", "valid", "test"):
        tensors = splits[split].tensors
        for name, key in (("label", "regression_labels"), ("label_text", "regression_labels_T"),
                          ("label_audio", "regression_labels_A"), ("label_vision", "regression_labels_V")):
            assert torch.equal(tensors[name], torch.from_numpy(data[split][key])), (split, name)


def test_standard_reader_names_a_missing_extra_label_key(tmp_path):
    data = sims_pickle(tmp_path / "sims.pkl")
    del data["valid"]["regression_labels_A"]
    (tmp_path / "sims.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"\[valid\]: no key 'regression_labels_A' for training.data.extra_labels.audio"):
        load_data(small("mlf_dnn"), tmp_path / "sims.pkl")


def test_an_extra_label_outside_the_label_range_is_refused(tmp_path):
    data = sims_pickle(tmp_path / "sims.pkl")
    data["test"]["regression_labels_T"][0] = 2.5
    (tmp_path / "sims.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"'label_text'.*outside task.label_range \[-1.0, 1.0\]"):
        load_data(small("mlf_dnn"), tmp_path / "sims.pkl")


def test_arrays_without_a_declared_extra_label_are_refused():
    bp = small("mlf_dnn")
    arrays = {s: {m: np.zeros((2, LENGTHS[m], WIDTHS[m]), np.float32) for m in WIDTHS} | {"label": np.zeros(2, np.float32)}
              for s in ("train", "valid", "test")}
    with pytest.raises(DataError, match=r"no 'label_text' tensor for training.data.extra_labels.text"):
        load_data(bp, arrays)


def test_synthetic_data_draws_each_modalitys_own_label_and_keeps_the_rest():
    with_extra = load_data(small("mlf_dnn"), "synthetic")
    without = load_data(small("mlf_dnn", "training.data.extra_labels={}", "losses=[{type: l1, pred: post}]"), "synthetic")
    train = with_extra["train"].tensors
    assert sorted(set(train) - set(without["train"].tensors)) == ["label_audio", "label_text", "label_vision"]
    for key, value in without["train"].tensors.items():
        assert torch.equal(train[key], value), key  # the extra labels come from their own stream
    for m in ("text", "audio", "vision"):
        y = train[f"label_{m}"]
        assert y.shape == train["label"].shape and y.min() >= -1 and y.max() <= 1
        assert not torch.equal(y, train["label"])
    assert not torch.equal(train["label_text"], train["label_audio"])


def test_a_loss_reads_label_dot_name_and_an_unknown_name_is_refused():
    with pytest.raises(BlueprintError, match=r"'label.txt' is not a label of the batch \(training.data.extra_labels names text, audio, vision\)"):
        small("mlf_dnn", "losses.T.target=label.txt")
    with pytest.raises(BlueprintError, match=r"'label.text' is not a label of the batch \(training.data.extra_labels names none\)"):
        small("mlf_dnn", "training.data.extra_labels={}")


def test_extra_labels_from_a_reader_without_them_are_refused_by_validate():
    with pytest.raises(BlueprintError, match=r"training.data.extra_labels.*source 'csd' reads one label per sample"):
        small("mlf_dnn", "training.data.source=csd", "training.data.split=cmu_mosi",
              "training.data.paths={text: t.csd, audio: a.csd, vision: v.csd, label: l.csd}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_multitask_blueprints_train_on_synthetic_data(tmp_path, name):
    run = composer.train(small(name, "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8"),
                         out=tmp_path / name, epochs=1, progress=False)
    row = run.summary
    text = str(row)
    assert all(f"loss/{t}" in text for t in "MTAV") and "text/mae" in text, text[:500]


def test_mlmf_training_leaves_fusion_weights_and_bias_as_built_and_trains_the_factors(tmp_path):
    from composer.train.checkpoint import seed_everything

    bp = small("mlmf", "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8", "training.early_stop=null")
    seed_everything(bp.training.seed)
    start = {n: p.detach().clone() for n, p in composer.compile_blueprint(bp).named_parameters()}
    trained = dict(composer.train(bp, out=tmp_path / "run", epochs=2, progress=False).model.named_parameters())
    for name in ("fusion.weights", "fusion.bias"):  # MMSA's lr-0 group
        assert torch.equal(trained[name].detach().cpu(), start[name]), name
    assert not torch.equal(trained["fusion.factors.text"].detach().cpu(), start["fusion.factors.text"])  # negative control


def test_mtfn_trains_on_an_mmsa_layout_pickle_with_unimodal_labels(tmp_path):
    sims_pickle(tmp_path / "sims.pkl", n=8)
    run = composer.train(small("mtfn", "training.batch_size=4"), tmp_path / "sims.pkl", out=tmp_path / "run", epochs=1, progress=False)
    assert "vision/mae" in str(run.summary)


def test_validate_warns_of_an_extra_label_no_loss_reads():
    warnings = [p.message for p in small("mlf_dnn", "losses.T.target=label").warnings]
    assert any("no loss reads extra label 'text' (from 'regression_labels_T')" in w for w in warnings), warnings
    assert not any("extra label" in p.message for p in small("mlf_dnn").warnings)
