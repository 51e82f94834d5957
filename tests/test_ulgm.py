"""Label-aware, stateful training blocks: Self-MM's ULGM reads ``label`` and ``index``, keeps its
state in buffers across steps and epochs, resumes exactly, and cannot sit on the inference path."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.errors import BlueprintError
from composer.train.checkpoint import load_checkpoint
from tests.shipped import ROOT

SELF_MM = ROOT / "examples/objectives/self_mm.yaml"
TINY = ["vars.train_samples=16", "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8",
        "modalities.text.length=6", "modalities.audio.length=6", "modalities.vision.length=6", "training.early_stop=null"]


def _ulgm_state(run) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run / "last.ckpt")["model"]
    return {k: v for k, v in state.items() if k.startswith("ulgm.")}


def test_ulgm_and_the_unimodal_heads_are_training_only():
    bp = composer.load_blueprint(SELF_MM, TINY)
    assert bp.plan.training_only == {"ulgm", *(f"{k}_{m}" for m in ("text", "audio", "vision") for k in ("head", "f")),
                                     "text_lin", "audio_lin", "vision_lin"}  # the unimodal branches, as in MMSA


def test_generated_labels_move_away_from_the_multimodal_label_after_the_first_epoch(tmp_path):
    composer.train(SELF_MM, out=tmp_path / "run", overrides=TINY + ["training.epochs=3"], progress=False)
    state = _ulgm_state(tmp_path / "run")
    assert int(state["ulgm.epoch"]) == 4
    assert torch.equal(state["ulgm.labels_fusion"].abs() > 0, torch.ones(16, dtype=torch.bool))
    for m in ("text", "audio", "vision"):
        assert not torch.allclose(state[f"ulgm.labels_{m}"], state["ulgm.labels_fusion"])  # updated in epochs 2 and 3
        assert state[f"ulgm.labels_{m}"].abs().max() <= 3.0
        assert state[f"ulgm.features_{m}"].abs().sum() > 0


def test_a_resumed_run_generates_the_same_labels_as_an_uninterrupted_one(tmp_path):
    composer.train(SELF_MM, out=tmp_path / "whole", overrides=TINY + ["training.epochs=3"], progress=False)
    composer.train(SELF_MM, out=tmp_path / "parts", overrides=TINY + ["training.epochs=1"], progress=False)
    composer.train(SELF_MM, out=tmp_path / "parts", overrides=TINY + ["training.epochs=3"], resume=True, progress=False)
    whole, parts = _ulgm_state(tmp_path / "whole"), _ulgm_state(tmp_path / "parts")
    assert whole.keys() == parts.keys() and all(torch.equal(whole[k], parts[k]) for k in whole)


def test_the_validation_loss_leaves_the_state_alone_and_counts_only_the_multimodal_term():
    from composer.data import load_data
    from composer.train.trainer import evaluate_split

    bp = composer.load_blueprint(SELF_MM, TINY)
    model = composer.compile_blueprint(bp)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("ulgm.")}
    row = evaluate_split(model, load_data(bp, None)["valid"], 8, torch.device("cpu"))
    assert row["loss/t"] == row["loss/a"] == row["loss/v"] == 0.0 and row["loss/m"] > 0
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_a_block_on_the_inference_path_cannot_read_the_label():
    with pytest.raises(BlueprintError, match="reads 'label', which a batch has only in training, but output 'text' depends on it"):
        composer.load_blueprint(SELF_MM, TINY + ["outputs={prediction: head, text: ulgm.text}"])


def test_a_train_split_larger_than_the_state_is_refused_with_the_setting_to_change(tmp_path):
    with pytest.raises(composer.DataError, match="set the block's `samples`"):
        composer.train(SELF_MM, out=tmp_path / "run", overrides=TINY + ["vars.train_samples=4", "training.epochs=1"], progress=False)
