"""Label-aware, stateful training blocks: Self-MM's ULGM reads ``label`` and ``index``, keeps its
state in buffers across steps and epochs, resumes exactly, and cannot sit on the inference path."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.errors import BlueprintError
from tests.killed_runs import ROOT, checkpoint_state, kill_inside_an_epoch_then_resume

SELF_MM = ROOT / "examples/objectives/self_mm.yaml"
TINY = ["vars.train_samples=16", "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8",
        "modalities.text.length=6", "modalities.audio.length=6", "modalities.vision.length=6", "training.early_stop=null"]


def _ulgm_state(run) -> dict[str, torch.Tensor]:
    return checkpoint_state(run, "ulgm.")


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


def test_ulgm_generates_the_labels_and_weights_of_mmsas_self_mm_trainer():
    """Three epochs of random representations in shuffled batches through the block and through
    MMSA 2.2.1's SELF_MM trainer functions (init_labels, update_labels, update_features,
    update_centers, weighted_loss's weights): every target, weight and final label equal."""
    import types

    from composer.blocks.ulgm import ULGM
    from composer.configs.ulgm import ULGMConfig
    from composer.spec import labels, vector
    from tests import mmsa_oracle

    module = mmsa_oracle.load("MMSA.trains.multiTask.SELF_MM")["MMSA.trains.multiTask.SELF_MM"]
    module.MetricsTop = lambda mode: types.SimpleNamespace(getMetics=lambda name: None)  # metrics are not compared
    n, dims = 24, {"fusion": 6, "text": 4, "audio": 3, "vision": 5}
    args = types.SimpleNamespace(train_mode="regression", dataset_name="mosi", train_samples=n, device="cpu", H=3.0, excludeZero=False,
                                 post_fusion_dim=dims["fusion"], post_text_dim=dims["text"], post_audio_dim=dims["audio"], post_video_dim=dims["vision"])
    oracle = module.SELF_MM(args)
    specs = {**{m: vector(d) for m, d in dims.items()}, "label": labels("float"), "index": labels("long")}
    block = ULGM(ULGMConfig(type="ulgm", inputs={k: k for k in specs}, samples=n, bound=3.0), specs).train()
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(n, generator=gen) * 1.5
    oracle.init_labels(torch.arange(n), y)
    names = {"fusion": "fusion", "text": "text", "audio": "audio", "vision": "vision"}
    for epoch in (1, 2, 3):
        for idx in torch.randperm(n, generator=gen).split(8):
            feats = {m: torch.randn(len(idx), d, generator=gen) for m, d in dims.items()}
            out = block({**feats, "label": y[idx], "index": idx}, None)
            for m in ("text", "audio", "vision"):
                assert torch.allclose(out[m], oracle.label_map[names[m]][idx], atol=1e-6)
                weight = torch.tanh(torch.abs(oracle.label_map[m][idx] - oracle.label_map["fusion"][idx]))  # weighted_loss
                assert torch.allclose(out[f"weight_{m}"], weight, atol=1e-6)
            if epoch > 1:
                oracle.update_labels(feats["fusion"], feats["text"], feats["audio"], feats["vision"], epoch, idx, None)
            oracle.update_features(feats["fusion"], feats["text"], feats["audio"], feats["vision"], idx)
            oracle.update_centers()
        block.composer_epoch_end(epoch)
    for m in ("text", "audio", "vision"):
        assert torch.allclose(getattr(block, f"labels_{m}"), oracle.label_map[m], atol=1e-6)
        assert not torch.allclose(oracle.label_map[m], y)  # negative control: the labels did move


def test_a_run_killed_with_sigkill_resumes_to_the_state_of_an_uninterrupted_run(tmp_path):
    """SIGKILL while training (after the first checkpoint, inside a later epoch), then resume:
    the generated labels and every buffer equal an uninterrupted run's."""
    longer = TINY[:1] + ["vars.train_samples=96", "training.data.samples={train: 96, valid: 8, test: 8}", "training.batch_size=4"] + TINY[3:]
    killed = kill_inside_an_epoch_then_resume(SELF_MM, tmp_path / "killed", longer, epochs=4)
    composer.train(SELF_MM, out=tmp_path / "whole", overrides=longer + ["training.epochs=4"], progress=False)
    whole, again = _ulgm_state(tmp_path / "whole"), _ulgm_state(tmp_path / "killed")
    assert int(again["ulgm.epoch"]) == 5 and all(torch.equal(whole[k], again[k]) for k in whole)
    assert not torch.equal(killed["model"]["ulgm.labels_text"], whole["ulgm.labels_text"])  # the compared labels moved after the kill
