"""`losses[].from_epoch`: a term added to the training loss from a given epoch on (TFR-Net's
`pred_loss + gen_loss` from epoch 2, MMSA trains/missingTask/TFR_NET.py line 81).

The gradient tests train with a learning rate of 1e-30, so the weights stay what they were
initialised to and every step's gradient depends only on its batch (the same per epoch in
every run: the order is seeded by the seed and the epoch) and on the terms that are summed.
"""

import json

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import composer
from composer.cli import main
from composer.errors import BlueprintError
from composer.train.checkpoint import load_checkpoint

MODS = {"text": {"features": 4, "length": 5}, "audio": {"features": 3, "length": 4}}
TASK = {"name": "task", "type": "l1", "pred": "head"}
LATE = {"name": "late", "type": "cosine", "a": "text_enc", "b": "audio_proj", "weight": 3.0}


def _bp(losses, search=None, **training):
    training = {"batch_size": 8, "epochs": 2, "lr": 1e-30, "optimizer": "sgd",
                "data": {"samples": {"train": 16, "valid": 8, "test": 8}}, **training}
    return composer.load_blueprint({
        "blueprint": 1,
        "name": "late_term",
        "modalities": MODS,
        "blocks": {
            "text_enc": {"type": "gru", "in": "text", "hidden": 4, "output": "last"},
            "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
            "audio_proj": {"type": "linear", "in": "audio_enc", "out": 4},
            "fusion": {"type": "concat", "in": ["text_enc", "audio_proj"]},
            "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
        },
        "losses": losses,
        "training": training,
        **({"search": search} if search else {}),
    })


@pytest.fixture
def step_grads():
    """Every optimiser step's gradients (one list per step: a tensor per parameter, None where it got none)."""
    steps: list[dict] = []

    def hook(optimizer, args, kwargs):
        steps.append([None if p.grad is None else p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]])

    handle = register_optimizer_step_pre_hook(hook)
    yield steps
    handle.remove()


def _run(bp, out, steps, **kw) -> list[list]:
    """The gradients of the run's optimiser steps (not of the checks' throwaway optimisers)."""
    start = len(steps)
    composer.train(bp, out=out, progress=False, **kw)
    n = len(list(composer.compile_blueprint(bp).parameters()))
    return [s for s in steps[start:] if len(s) == n]


def _same(a: list, b: list) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and torch.allclose(x, y, atol=1e-7, rtol=0))
               for x, y in zip(a, b, strict=True))


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_term_from_epoch_2_gives_epoch_1_gradients_without_it_and_epoch_2_gradients_with_it(tmp_path, step_grads):
    without = _run(_bp([TASK]), tmp_path / "without", step_grads)
    always = _run(_bp([TASK, LATE]), tmp_path / "always", step_grads)
    late = _run(_bp([TASK, {**LATE, "from_epoch": 2}]), tmp_path / "late", step_grads)
    assert len(without) == len(always) == len(late) == 4  # 2 epochs x 2 batches
    for i in (0, 1):  # epoch 1: as without the term, and not as with it (the control)
        assert _same(late[i], without[i]) and not _same(late[i], always[i])
    for i in (2, 3):  # epoch 2: as with the term from the start, and not as without it
        assert _same(late[i], always[i]) and not _same(late[i], without[i])
    rows = {(r["epoch"], r["split"]): r for r in _rows(tmp_path / "late")}
    # not computed while inactive: no `loss/late` before epoch 2, in training and validation
    assert "loss/late" not in rows[1, "train"] and "loss/late" not in rows[1, "valid"]
    assert "loss/late" in rows[2, "train"] and "loss/late" in rows[2, "valid"]
    # the validation loss sums the terms active in its epoch
    assert rows[1, "valid"]["loss"] == pytest.approx(rows[1, "valid"]["loss/task"], abs=1e-6)
    assert rows[2, "valid"]["loss"] == pytest.approx(rows[2, "valid"]["loss/task"] + 3.0 * rows[2, "valid"]["loss/late"], abs=1e-5)


def test_resume_across_the_boundary_starts_the_term_at_the_same_epoch(tmp_path, step_grads):
    bp = _bp([TASK, {**LATE, "from_epoch": 2}], lr=0.05, optimizer="adam", epochs=3)
    straight = _run(bp, tmp_path / "straight", step_grads)
    first = _run(bp, tmp_path / "split", step_grads, epochs=1)
    assert load_checkpoint(tmp_path / "split" / "last.ckpt")["epoch"] == 1
    rest = _run(bp, tmp_path / "split", step_grads, resume=True)
    assert len(straight) == 6 and len(first) + len(rest) == 6
    assert all(_same(a, b) for a, b in zip(straight, first + rest, strict=True))
    drop = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop(_rows(tmp_path / "straight")) == drop(_rows(tmp_path / "split"))
    assert [r["epoch"] for r in _rows(tmp_path / "split") if r["split"] == "train" and "loss/late" in r] == [2, 3]


def test_compute_loss_skips_inactive_terms_and_sums_every_term_without_an_epoch():
    model = composer.compile_blueprint(_bp([TASK, {**LATE, "from_epoch": 3}]))
    batch = model.example_inputs(3)
    outputs = {"main": model(batch)}
    every, parts = model.compute_loss(outputs, {"main": batch})
    early, early_parts = model.compute_loss(outputs, {"main": batch}, epoch=2)
    later, _ = model.compute_loss(outputs, {"main": batch}, epoch=3)
    assert set(parts) == {"task", "late"} and set(early_parts) == {"task"}
    assert torch.allclose(early, parts["task"]) and torch.allclose(later, every)
    assert torch.allclose(every, parts["task"] + 3.0 * parts["late"])


def test_a_stage_whose_terms_start_later_makes_no_update_before(tmp_path, step_grads):
    stage = {"name": "align", "objective": ["late"], "update": ["audio_proj"], "every": "epoch"}
    bp = _bp([TASK, {**LATE, "from_epoch": 2}], stages=[stage])
    start = len(step_grads)
    _run(bp, tmp_path / "run", step_grads)
    train = {r["epoch"]: r for r in _rows(tmp_path / "run") if r["split"] == "train"}
    assert "stage/align/loss" not in train[1] and "stage/align/loss" in train[2]
    # the stage's own optimiser (audio_proj's weight and bias) steps on epoch 2's two batches only
    stage_steps = lambda first: sum(len(s) == 2 for s in step_grads[first:])  # noqa: E731
    assert stage_steps(start) == 2
    always = len(step_grads)  # control: the same stage on a term active from epoch 1 steps in both epochs
    _run(_bp([TASK, LATE], stages=[stage]), tmp_path / "always", step_grads)
    assert stage_steps(always) == 4


def test_from_epoch_must_be_a_positive_integer():
    with pytest.raises(BlueprintError, match="from_epoch"):
        _bp([TASK, {**LATE, "from_epoch": 0}])


def test_a_term_never_reached_by_training_epochs_is_a_warning_not_an_error():
    # --set training.epochs=1 (a smoke run) must still load a blueprint with warm-up terms
    bp = _bp([TASK, {**LATE, "from_epoch": 3}])
    found = [w.message for w in bp.warnings if "never adds" in w.message]
    assert found == ["from_epoch 3 is after training.epochs 2: this run never adds the term"]
    assert not [w for w in _bp([TASK, {**LATE, "from_epoch": 2}]).warnings if "never" in w.message]


def test_epoch_1_needs_a_term():
    with pytest.raises(BlueprintError, match="epoch 1"):
        _bp([{**TASK, "from_epoch": 2}, {**LATE, "from_epoch": 2}])


def test_monitoring_a_term_that_starts_later_is_refused_and_the_summed_loss_warns():
    with pytest.raises(BlueprintError, match="loss/late"):
        _bp([TASK, {**LATE, "from_epoch": 2}], monitor={"metric": "loss/late"})
    bp = _bp([TASK, {**LATE, "from_epoch": 2}], monitor={"metric": "loss"})
    assert any("comparable" in w.message for w in bp.warnings)
    assert not any("comparable" in w.message for w in _bp([TASK, LATE], monitor={"metric": "loss"}).warnings)


def test_a_search_objective_on_a_term_that_starts_later_is_refused():
    late = [TASK, {**LATE, "from_epoch": 2}]
    with pytest.raises(BlueprintError, match=r"search.objective.metric: objective 'loss/late': that term starts at epoch 2"):
        _bp(late, search={"objective": {"metric": "loss/late"}})
    with pytest.raises(BlueprintError, match=r"search.objective\[1\].metric: objective 'loss/late'"):
        _bp(late, search={"objective": [{"metric": "mae"}, {"metric": "loss/late"}]})
    _bp(late, search={"objective": {"metric": "loss/task"}})  # a term active from epoch 1
    _bp([TASK, LATE], search={"objective": {"metric": "loss/late"}})


def test_validate_prints_the_warning(tmp_path, capsys):
    path = tmp_path / "bp.yaml"
    text = _bp([TASK, {**LATE, "from_epoch": 3}]).text()
    path.write_text(text)
    assert main(["validate", str(path)]) == 0
    printed = capsys.readouterr()
    assert "losses[1].from_epoch: from_epoch 3 is after training.epochs 2" in printed.out + printed.err


def test_tfr_net_adds_its_reconstruction_losses_from_epoch_2_as_mmsas_trainer(tmp_path):
    """MMSA trains/missingTask/TFR_NET.py line 81: `pred_loss + gen_loss` if epochs > 1 else `pred_loss`
    (tests/test_mmsa_tfr_net.py proves the whole sum equal to MMSA's)."""
    from test_mmsa_tfr_net import small

    bp = small("training.data.samples={train: 3, valid: 3, test: 3}", "training.epochs=2")
    assert {cfg.name: cfg.from_epoch for cfg in bp.losses} == {"task": 1, "rec_text": 2, "rec_audio": 2, "rec_vision": 2}
    run = composer.train(bp, out=tmp_path / "run", progress=False)
    train = {r["epoch"]: r for r in _rows(run.run_dir) if r["split"] == "train"}
    assert not [k for k in train[1] if k.startswith("loss/rec_")]
    assert train[1]["loss"] == pytest.approx(train[1]["loss/task"], abs=1e-6)
    rec = sum(cfg.weight * train[2][f"loss/{cfg.name}"] for cfg in bp.losses[1:])
    assert rec > 0 and train[2]["loss"] == pytest.approx(train[2]["loss/task"] + rec, rel=1e-5)
