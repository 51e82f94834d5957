"""``training.grad_clip_at``: ``backward`` clips the running gradient sum after every backward
pass (MMSA's MulT and MISA trainers call ``clip_grad_value_`` after each ``loss.backward()`` while
``update_epochs`` batches accumulate), ``step`` the accumulated gradient once before the step;
each against a hand-written PyTorch loop, with every ``grad_accum_reduction`` and
``grad_accum_tail``; stages; the refusals (nothing to clip, fp16, several processes)."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.errors import ComposerError
from composer.train import trainer as trainer_module
from composer.train.distributed import World
from hand_loop import by_hand, close as _close, trained as _trained

# 10 training samples in batches of 2: five batches an epoch, a group of three and a tail of two
TRAINING = {"optimizer": "sgd", "lr": 0.5, "momentum": 0.0, "batch_size": 2, "grad_accum": 3, "epochs": 2,
            "cpu_threads": 1, "early_stop": None, "data": {"samples": {"train": 10, "valid": 4}}}
VALUE, NORM = 0.02, 0.05  # small enough to bite on one batch's gradient


def _bp(**training):
    return composer.load_blueprint({
        "blueprint": 1, "name": "clip_at",
        "modalities": {"a": {"kind": "vector", "features": 4}, "b": {"kind": "vector", "features": 3}},
        "blocks": {"enc": {"type": "mlp", "in": "a", "hidden": [5], "out": 4}, "fusion": {"type": "concat", "in": ["enc", "b"]},
                   "head": {"type": "mlp", "in": "fusion", "hidden": [6], "out": 1}},
        "losses": [{"name": "task", "type": "mse", "pred": "head"}],
        "training": {**TRAINING, **training},
    })


def _by_hand(bp, at: str) -> dict[str, torch.Tensor]:
    """Plain PyTorch (tests/hand_loop.py): clipping after every backward (``at='backward'``, MMSA's
    ``MULT.py``/``MISA.py`` loop) or once before each step (``at='step'``)."""
    return by_hand(bp, clip_at=at)[0]


@pytest.mark.parametrize(("clip", "reduction", "tail"), [
    ({"grad_clip_value": VALUE}, "sum", "drop"),   # MulT's and MISA's recipe
    ({"grad_clip_value": VALUE}, "mean", "step"),
    ({"grad_clip": NORM}, "sum", "carry"),
    ({"grad_clip": NORM, "grad_clip_value": VALUE}, "mean", "carry"),
])
def test_backward_clips_the_running_sum_as_a_hand_written_loop(tmp_path, clip, reduction, tail):
    bp = _bp(grad_clip_at="backward", grad_accum_reduction=reduction, grad_accum_tail=tail, **clip)
    got = _trained(bp, tmp_path / "backward")
    assert _close(got, _by_hand(bp, "backward"))
    # negative control: the default clips once before the step, as its own hand-written loop, and ends elsewhere
    at_step = _bp(grad_accum_reduction=reduction, grad_accum_tail=tail, **clip)
    assert at_step.training.grad_clip_at == "step"
    once = _trained(at_step, tmp_path / "step")
    assert _close(once, _by_hand(at_step, "step"))
    assert not _close(got, once)


def test_with_one_batch_a_step_both_clip_alike_and_stages_clip_once(tmp_path):
    # grad_accum 1: one backward per step, so backward and step clip the same gradient; a stage's
    # update is always one backward and one clip (its grad_clip, else training.grad_clip)
    stage = {"name": "s", "objective": ["task"], "update": ["enc"]}
    common = {"grad_clip": NORM, "grad_accum": 1, "stages": [stage]}
    backward = _trained(_bp(grad_clip_at="backward", **common), tmp_path / "backward")
    assert _close(backward, _trained(_bp(**common), tmp_path / "step"))
    # with groups of three the main update differs while the stages stay as they are
    grouped = {**common, "grad_accum": 3, "grad_accum_reduction": "sum"}
    assert not _close(_trained(_bp(grad_clip_at="backward", **grouped), tmp_path / "b3"), _trained(_bp(**grouped), tmp_path / "s3"))


def test_backward_without_a_threshold_or_with_fp16_is_refused():
    with pytest.raises(ComposerError, match="grad_clip_at: backward clips nothing: set training.grad_clip"):
        _bp(grad_clip_at="backward")
    with pytest.raises(ComposerError, match="grad_clip_at: backward needs unscaled gradients.*use precision bf16 or fp32"):
        _bp(grad_clip_at="backward", grad_clip_value=VALUE, precision="fp16")
    _bp(grad_clip_value=VALUE, precision="fp16")  # step: unscaled once, clipped, as before


def test_backward_under_several_processes_or_an_automatic_fp16_is_refused(tmp_path, monkeypatch):
    bp = _bp(grad_clip_at="backward", grad_clip_value=VALUE)
    real_join = trainer_module.join_world
    monkeypatch.setattr(trainer_module, "join_world", lambda device: (World(rank=0, size=2), device))
    with pytest.raises(ComposerError, match="under 2 processes the gradients are averaged across processes only at the step"):
        composer.train(bp, out=tmp_path / "ddp", progress=False, device="cpu")
    monkeypatch.setattr(trainer_module, "join_world", real_join)

    class Fp16:  # what precision auto gives on a GPU without bf16
        def __init__(self, precision, device):
            self.scaler = torch.amp.GradScaler("cpu")

    monkeypatch.setattr(trainer_module, "Precision", Fp16)
    with pytest.raises(ComposerError, match="precision auto chose fp16 on this GPU.*set training.precision bf16 or fp32"):
        composer.train(bp, out=tmp_path / "fp16", progress=False, device="cpu")


@pytest.mark.parametrize("name", ["mult", "misa"])
def test_mmsa_zoo_blueprints_whose_trainer_clips_after_every_backward_say_so(name):
    bp = composer.load_blueprint(f"blueprints/zoo/{name}.yaml")
    assert bp.training.grad_clip_at == "backward" and bp.training.grad_clip_value is not None and bp.training.grad_accum > 1


def test_mult_training_equals_mmsas_trainer_with_clipping_biting(tmp_path, monkeypatch):
    """MMSA's own ``MULT.do_train`` (trains/singleTask/MULT.py: backward, ``clip_grad_value_``
    after each, a step every ``update_epochs`` batches, an epoch's incomplete group dropped) for
    one epoch (stopped at its training metrics, after the epoch's last step), against Composer's trainer on the zoo blueprint (test sizes, dropouts 0) from the
    same weights on the same batches in the same order, both with plain SGD: ``grad_clip_at: backward`` ends at MMSA's
    weights, ``step`` elsewhere. Threshold 0.02 and 7 batches in groups of 3 (2 steps, a dropped tail)."""
    import pickle

    import mmsa_oracle
    import test_mmsa_mult as mult
    from composer.zoo_import import NAME_MAPS

    mmsa = mmsa_oracle.model_and_trainer("singleTask", "MULT")  # metrics stubbed
    mult.mmsa_pickle(tmp_path / "mosi.pkl", n=14)
    data = pickle.loads((tmp_path / "mosi.pkl").read_bytes())
    for split in data.values():  # full lengths: MMSA's MulT reads every step, and so Composer when none is padding
        for m in ("audio", "vision"):
            split[f"{m}_lengths"] = [mult.LENGTHS[m]] * len(split[f"{m}_lengths"])
    (tmp_path / "mosi.pkl").write_bytes(pickle.dumps(data))
    zero = [f"vars.{v}=0.0" for v in ("attn_t", "attn_a", "attn_v", "relu", "res", "embed")] + ["blocks.text_drop.p=0.0", "blocks.head.dropout=0.0"]
    # SGD on both sides (MMSA's Adam swapped below): Adam turns the float noise of gradients that
    # are zero in exact arithmetic (attention's key biases) into full-size steps that differ
    settings = ["training.batch_size=2", "training.grad_accum=3", "training.grad_clip_value=0.02", "training.epochs=1", "training.cpu_threads=1",
                "training.optimizer=sgd", "training.momentum=0.0", "training.lr=0.1"]

    theirs = mult.mmsa_module((mmsa.model, mmsa.config), "mosi")
    for name in ("text_dropout", "attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "res_dropout", "embed_dropout", "output_dropout"):
        assert hasattr(theirs, name), name
        setattr(theirs, name, 0.0)
    for module in theirs.modules():  # the transformers' own copies of the rates
        for name in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
        if isinstance(module, torch.nn.MultiheadAttention) or hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.0
    start = {k: v.clone() for k, v in theirs.state_dict().items()}

    def composer_weights(at: str) -> dict[str, torch.Tensor]:
        bp = mult.composer_blueprint("mosi", *zero, *settings, f"training.grad_clip_at={at}")
        names = NAME_MAPS["mult"](composer.compile_blueprint(bp))  # every tensor on both sides once
        return mmsa_oracle.trained_from(bp, start, names, tmp_path / at, tmp_path / "mosi.pkl", monkeypatch), bp

    ours, bp = composer_weights("backward")
    cfg = bp.training
    assert bp.training.reinit is None and cfg.grad_accum_tail == "drop"

    # MMSA's trainer (its Adam swapped for SGD), stopped where the epoch's training metrics begin, on Composer's batches in Composer's order
    batches = mmsa_oracle.epoch_batches(bp, tmp_path / "mosi.pkl", lambda b: b["text"])
    assert len(batches) == 7
    args = mmsa.config("mult", "mosi")
    args.update(train_mode="regression", device=torch.device("cpu"), update_epochs=cfg.grad_accum, grad_clip=cfg.grad_clip_value,
                learning_rate=cfg.lr, KeyEval="Loss")
    mmsa_oracle.mmsa_one_epoch(mmsa, args, theirs, batches, monkeypatch)
    reference = theirs.state_dict()
    moved = [k for k in ours if not torch.equal(reference[k], start[k])]
    assert moved  # MMSA's two steps moved the weights
    for k, v in ours.items():
        torch.testing.assert_close(v, reference[k], atol=1e-6, rtol=0, msg=lambda m: f"{k}: {m}")
    once, _ = composer_weights("step")  # negative control: one clip before the step ends elsewhere
    assert any(not torch.allclose(once[k], reference[k], atol=1e-5) for k in once)
