"""``training.grad_accum_tail``: what an epoch's last, incomplete group of ``grad_accum`` batches
does (step on it, drop it as MMSA's MISA, MulT and Self-MM trainers do, or carry its gradients
into the next epoch's first group), each against a hand-written PyTorch loop; ``carry`` across a
resumed checkpoint; the refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import composer
from composer.errors import ComposerError
from composer.train.checkpoint import load_checkpoint, save_checkpoint
from hand_loop import by_hand as _by_hand, close as _close, trained as _trained

# 10 training samples in batches of 2: five batches an epoch, groups of two leave one behind
TRAINING = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0, "batch_size": 2, "grad_accum": 2, "epochs": 2,
            "cpu_threads": 1, "early_stop": None, "data": {"samples": {"train": 10, "valid": 4}}}


def _bp(**training):
    return composer.load_blueprint({
        "blueprint": 1, "name": "tail",
        "modalities": {"a": {"kind": "vector", "features": 4}, "b": {"kind": "vector", "features": 3}},
        "blocks": {"fusion": {"type": "concat", "in": ["a", "b"]}, "head": {"type": "mlp", "in": "fusion", "hidden": [6], "out": 1}},
        "losses": [{"type": "mse", "pred": "head"}],
        "training": {**TRAINING, **training},
    })


@pytest.mark.parametrize(("tail", "reduction", "steps"), [
    ("step", "mean", [3, 3]), ("drop", "sum", [2, 2]), ("carry", "sum", [2, 2]), ("carry", "mean", [2, 2])])
def test_each_tail_equals_a_hand_written_loop(tmp_path, tail, reduction, steps):
    bp = _bp(grad_accum_tail=tail, grad_accum_reduction=reduction)
    expected, counted = _by_hand(bp)
    assert counted == steps
    got = _trained(bp, tmp_path / "run")
    assert _close(got, expected)
    others = {t: _by_hand(_bp(grad_accum_tail=t, grad_accum_reduction=reduction))[0] for t in ("step", "drop", "carry") if t != tail}
    for other, weights in others.items():  # negative control: the three tails end at different weights
        assert not _close(got, weights), other
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["global_step"] == sum(steps)


def test_carry_resumed_at_an_epoch_boundary_carries_the_same_gradients(tmp_path):
    bp = _bp(grad_accum_tail="carry", grad_accum_reduction="sum")
    whole = _trained(bp, tmp_path / "whole")
    _trained(bp, tmp_path / "half", epochs=1)
    shutil.copytree(tmp_path / "half", tmp_path / "lost")
    state = load_checkpoint(tmp_path / "half" / "last.ckpt")
    carried = state["carried_grads"]
    assert set(carried) == {n for n, _ in composer.compile_blueprint(bp).named_parameters()}
    assert all(v.abs().sum() > 0 for v in carried.values())
    assert _close(_trained(bp, tmp_path / "half", epochs=2, resume=True), whole)
    # negative control: the same checkpoint without its carried gradients ends elsewhere
    save_checkpoint(tmp_path / "lost" / "last.ckpt", {**state, "carried_grads": None})
    assert not _close(_trained(bp, tmp_path / "lost", epochs=2, resume=True), whole)


def test_a_carried_gradient_that_does_not_fit_the_model_is_refused(tmp_path):
    bp = _bp(grad_accum_tail="carry")
    _trained(bp, tmp_path / "run", epochs=1)
    state = load_checkpoint(tmp_path / "run" / "last.ckpt")
    name = next(iter(state["carried_grads"]))
    state["carried_grads"][name] = torch.zeros(7)
    state["carried_grads"]["nowhere.weight"] = torch.zeros(2)
    save_checkpoint(tmp_path / "run" / "last.ckpt", state)
    with pytest.raises(ComposerError, match=r"carried gradients \(training.grad_accum_tail: carry\) do not fit") as err:
        _trained(bp, tmp_path / "run", epochs=2, resume=True)
    assert f"'carried_grads.{name}' has shape (7,), expected" in str(err.value)
    assert "'carried_grads.nowhere.weight' is not a tensor of this model" in str(err.value)


def test_a_split_without_a_complete_group_is_warned_about_and_carry_refuses_stages(tmp_path, capsys):
    bp = _bp(grad_accum=8, grad_accum_tail="drop", epochs=1)
    before, _ = _by_hand(bp)
    assert _close(_trained(bp, tmp_path / "few"), before)  # 5 batches, groups of 8: never a step, as MMSA's trainers
    assert "5 batches an epoch, fewer than grad_accum 8, so the optimiser never steps" in capsys.readouterr().err
    assert not _close(_trained(_bp(grad_accum=8, epochs=1), tmp_path / "step"), before)  # step: one step an epoch
    with pytest.raises(ComposerError, match="grad_accum_tail: carry.*training.stages"):
        _bp(grad_accum_tail="carry", stages=[{"name": "s", "objective": ["mse"], "update": ["head"]}])


def test_two_processes_carry_what_one_process_carries(tmp_path):
    # each process holds its own part of the tail's gradient: they are averaged at the epoch's end,
    # so the next epoch's first step and process 0's checkpoint hold the whole batch's
    path = tmp_path / "tail.yaml"
    path.write_text(yaml.safe_dump(_bp(grad_accum_tail="carry", batch_size=3, data={"samples": {"train": 14, "valid": 4}}).to_data()))
    env = {**os.environ, "COMPOSER_DIST_TIMEOUT": "60"}
    env.pop("WORLD_SIZE", None)
    two = subprocess.run([sys.executable, "-m", "composer", "train", str(path), "--out", str(tmp_path / "two"), "--device", "cpu",
                          "--nproc", "2"], capture_output=True, text=True, env=env, timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    composer.train(path, out=tmp_path / "one", progress=False, device="cpu")
    one, both = load_checkpoint(tmp_path / "one" / "last.ckpt"), load_checkpoint(tmp_path / "two" / "last.ckpt")
    for key in ("model", "carried_grads"):
        assert one[key].keys() == both[key].keys()
        assert all(torch.allclose(one[key][k], both[key][k], atol=1e-6) for k in one[key]), key
