"""Training settings that authors' recipes need: weight-decay exemptions, re-initialisation of
Linear layers, an optimiser re-created every epoch, keeping the last epoch, clipping by value."""

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

import composer
from composer.errors import ComposerError
from composer.train.optim import build_optimizer, build_scheduler, reinitialise, reset_optimizer

BLOCKS = {
    "text_enc": {"type": "gru", "in": "text", "hidden": 8, "output": "last"},
    "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
    "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
    "fusion_norm": {"type": "layer_norm", "in": "fusion"},
    "head": {"type": "mlp", "in": "fusion_norm", "hidden": [8], "out": 1},
}


def _bp(**training):
    training = {"batch_size": 16, "epochs": 2, "data": {"samples": {"train": 32, "valid": 16, "test": 16}}, **training}
    return composer.load_blueprint({
        "blueprint": 1, "name": "recipe",
        "modalities": {"text": {"features": 6, "length": 8}, "audio": {"features": 3, "length": 8}},
        "blocks": BLOCKS, "losses": [{"type": "l1", "pred": "head"}], "training": training,
    })


def test_no_weight_decay_exempts_matching_parameters_in_every_group():
    bp = _bp(optimizer="adamw", weight_decay=0.1, no_weight_decay=["bias", "norm"],
             param_groups=[{"blocks": ["text_enc"], "lr": 1e-4, "weight_decay": 0.01}])
    model = composer.compile_blueprint(bp)
    opt = build_optimizer(model, bp.training)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = 0
    for group in opt.param_groups:
        for p in group["params"]:
            seen += 1
            exempt = "bias" in names[id(p)] or "norm" in names[id(p)]
            expected = 0.0 if exempt else (0.01 if names[id(p)].startswith("text_enc.") else 0.1)
            assert group["weight_decay"] == expected, names[id(p)]
    assert seen == len(list(model.parameters()))
    assert {g["name"] for g in opt.param_groups} == {"text_enc", "text_enc (no decay)", "default", "default (no decay)"}


def test_reinit_draws_every_linear_from_the_normal_and_leaves_skipped_blocks():
    bp = _bp(reinit={"std": 0.02, "bias": 0.0, "skip": ["head"]})
    model = composer.compile_blueprint(bp)
    head_before = {k: v.clone() for k, v in model.block("head").state_dict().items()}
    wide = composer.load_blueprint({**bp.to_data(), "blocks": {**BLOCKS, "head": {**BLOCKS["head"], "hidden": [4000]}}})
    big = composer.compile_blueprint(wide)
    torch.manual_seed(0)
    reinitialise(big, wide.training.model_copy(update={"reinit": wide.training.reinit.model_copy(update={"skip": []})}))
    first = big.block("head").net[0]
    assert isinstance(first, nn.Linear) and abs(first.weight.std().item() - 0.02) < 0.002 and torch.count_nonzero(first.bias) == 0
    reinitialise(model, bp.training)
    assert all(torch.equal(v, head_before[k]) for k, v in model.block("head").state_dict().items())
    with pytest.raises(ComposerError, match="did you mean 'head'"):
        reinitialise(model, bp.training.model_copy(update={"reinit": bp.training.reinit.model_copy(update={"skip": ["haed"]})}))


def test_a_reset_optimizer_starts_from_zero_moments_at_the_current_learning_rate():
    bp = _bp(scheduler={"type": "step", "step_size": 1, "gamma": 0.5})
    model = composer.compile_blueprint(bp)
    opt = build_optimizer(model, bp.training)
    sched = build_scheduler(opt, bp.training, 2, "minimize")
    model(model.example_inputs(2))["prediction"].sum().backward()
    opt.step()
    sched.step()
    fresh = reset_optimizer(opt, model, bp.training, sched)
    assert not fresh.state and all(g["lr"] == pytest.approx(5e-4) for g in fresh.param_groups)
    sched.step()
    assert all(g["lr"] == pytest.approx(2.5e-4) for g in fresh.param_groups)  # the schedule goes on, on the new optimiser


def test_training_with_reset_optimizer_and_keep_last_keeps_the_last_epoch(tmp_path):
    result = composer.train(_bp(reset_optimizer="epoch", monitor={"keep": "last"}, epochs=3), out=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["kept"] == {"rule": "last", "epoch": 3}
    with safe_open(str(tmp_path / "run" / "best.safetensors"), framework="pt") as f:
        assert f.metadata()["composer.epoch"] == "3"
    assert result.model is not None


def test_clipping_by_value_bounds_every_update(tmp_path):
    bp = _bp(optimizer="sgd", lr=1.0, momentum=0.0, grad_clip_value=1e-6, epochs=1)
    composer.train(bp, out=tmp_path / "run", progress=False)
    after = composer.load_model(tmp_path / "run" / "best.safetensors")
    # torch.manual_seed(training.seed) builds the same initial weights; 2 steps of at most 1e-6 each
    torch.manual_seed(bp.training.seed)
    before = composer.compile_blueprint(bp)
    change = max((a - b).abs().max().item() for a, b in zip(after.state_dict().values(), before.state_dict().values()))
    assert 0 < change <= 2.2e-6  # (float32 rounding of weights near 1 adds ~1e-7)


def test_sum_reduction_steps_with_the_sum_of_the_accumulated_gradients(tmp_path):
    # SGD without momentum: one step over 2 accumulated batches moves twice as far when summed
    moved = {}
    for reduction in ("mean", "sum"):
        bp = _bp(optimizer="sgd", lr=1e-2, momentum=0.0, grad_accum=2, grad_accum_reduction=reduction, epochs=1)
        torch.manual_seed(bp.training.seed)
        start = composer.compile_blueprint(bp).state_dict()
        composer.train(bp, out=tmp_path / reduction, progress=False)
        end = composer.load_model(tmp_path / reduction / "best.safetensors").state_dict()
        moved[reduction] = torch.cat([(end[k] - start[k]).flatten() for k in start])
    assert torch.allclose(moved["sum"], 2 * moved["mean"], rtol=1e-3, atol=1e-6)  # float32 rounding of weights near 1


def test_a_view_can_mask_each_modality_at_its_own_rate():
    from composer.train.views import make_views

    bp = _bp(views={"incomplete": {"rates": {"text": 0.0, "audio": 1.0}}})
    batch = composer.compile_blueprint(bp).example_inputs(4)
    masked = make_views(batch, bp, torch.Generator().manual_seed(0))["incomplete"]
    assert torch.equal(masked["text"], batch["text"]) and not masked["view_masks"]["text"].any()
    valid = torch.arange(batch["audio"].shape[1])[None] < batch["audio_lengths"][:, None]
    assert torch.equal(masked["view_masks"]["audio"], valid) and masked["audio"][valid].abs().sum() == 0
    with pytest.raises(ComposerError, match="drop `modalities`"):
        composer.train(_bp(views={"v": {"rates": {"text": 0.5}, "modalities": ["text"]}}), progress=False)


def test_validation_can_score_a_view_and_monitor_one_loss_term(tmp_path):
    from composer.train.optim import Precision
    from composer.train.trainer import evaluate_split
    from composer.data import load_data

    bp = _bp(views={"incomplete": {"rate": 1.0}}, monitor={"metric": "loss/l1_0", "view": "incomplete"})
    model = composer.compile_blueprint(bp)
    splits = load_data(bp)
    main = evaluate_split(model, splits["valid"], 16, torch.device("cpu"), Precision("fp32", torch.device("cpu")), view="main")
    masked = evaluate_split(model, splits["valid"], 16, torch.device("cpu"), Precision("fp32", torch.device("cpu")))
    assert main["loss/l1_0"] == masked["loss/l1_0"] and main["mae"] != masked["mae"]  # the view's predictions are scored
    result = composer.train(bp, out=tmp_path / "run", progress=False)
    assert result.summary["monitor"]["metric"] == "loss/l1_0" and result.summary["monitor"]["direction"] == "minimize"
    with pytest.raises(ComposerError, match="unknown view 'incomplet'"):
        composer.train(_bp(monitor={"view": "incomplet"}), progress=False)
