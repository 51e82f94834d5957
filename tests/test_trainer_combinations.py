"""Combinations of today's trainer fields that each field's own tests do not reach:
``training.reinit`` with ``share:`` (a sharing use holds its owner's tensors), and the
divergence warning across a ``losses[].from_epoch`` start."""

from __future__ import annotations

import torch

import composer
from composer.train.optim import reinitialise


def _shared(reinit: dict):
    return composer.load_blueprint({
        "blueprint": 1, "name": "shared_reinit",
        "modalities": {"a": {"kind": "vector", "features": 4}, "b": {"kind": "vector", "features": 4}},
        "blocks": {
            "proj": {"type": "linear", "in": "a", "out": 3},
            "proj_b": {"type": "linear", "in": "b", "out": 3, "share": "proj"},
            "fusion": {"type": "concat", "in": ["proj", "proj_b"]},
            "head": {"type": "linear", "in": "fusion", "out": 1},
        },
        "losses": [{"type": "mse", "pred": "head"}],
        "training": {"seed": 5, "reinit": reinit},
    })


def _values(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_reinit_linear_keeps_a_skipped_owner_that_another_block_shares():
    bp = _shared({"std": 0.5, "skip": ["proj"]})
    model = composer.compile_blueprint(bp)
    before = _values(model)
    reinitialise(model, bp.training)
    after = _values(model)
    assert {"proj.linear.weight", "proj.linear.bias"} <= after.keys()  # the owner holds the tensors proj_b uses
    assert all(torch.equal(after[n], before[n]) for n in after if n.startswith("proj."))
    assert not all(torch.equal(after[n], before[n]) for n in after if n.startswith("head."))  # control: the rest is drawn


def test_reinit_linear_draws_a_shared_weight_once_as_matrices_do():
    # the head's draw follows the shared weight's in module order: drawn twice, the head would get other values
    for tensors in ("linear", "matrices"):
        reinit = {"init": "xavier_normal", "tensors": tensors}
        bp = _shared(reinit)
        model = composer.compile_blueprint(bp)
        torch.manual_seed(11)
        reinitialise(model, bp.training)
        torch.manual_seed(11)
        expected = {}
        for name, p in model.named_parameters():  # every tensor once, in parameter order
            if p.dim() > 1:
                expected[name] = torch.nn.init.xavier_normal_(torch.empty_like(p))
        got = _values(model)
        for name, value in expected.items():
            assert torch.equal(got[name], value), (tensors, name)


def test_a_term_starting_later_is_not_taken_for_divergence(tmp_path, capsys):
    from test_loss_from_epoch import LATE, TASK, _bp

    heavy = {**LATE, "weight": 1e4}  # epoch 2's summed loss is thousands of times epoch 1's
    composer.train(_bp([TASK, {**heavy, "from_epoch": 2}]), out=tmp_path / "late", progress=False)
    assert "training may be diverging" not in capsys.readouterr().err


def test_the_divergence_warning_compares_epochs_with_the_same_terms():
    from types import SimpleNamespace

    from composer.train.trainer import Trainer

    def warned(rows: list[dict]) -> bool:
        notes: list[str] = []
        Trainer._warn_if_diverging(SimpleNamespace(_note=notes.append), SimpleNamespace(rows=rows[:-1]), rows[-1])
        return any("training may be diverging" in n for n in notes)

    one = {"split": "train", "loss": 0.01, "loss/task": 0.01}
    started = {"split": "train", "loss": 5.0, "loss/task": 0.01, "loss/late": 0.5}
    assert not warned([one, started])  # a term that starts: no earlier epoch sums the same terms
    assert warned([one, {**one, "loss": 5.0, "loss/task": 5.0}])  # control: the same terms a hundredfold
    assert warned([one, started, {**started, "loss": 600.0, "loss/late": 60.0}])  # after the start, against its first epoch


def test_a_search_objective_on_the_summed_loss_across_a_start_warns():
    # trials are compared at their selected epochs: one selected before a term's start sums fewer terms
    from test_loss_from_epoch import LATE, TASK, _bp

    def warnings(losses):
        bp = _bp(losses, search={"objective": {"metric": "loss"}}, monitor={"metric": "mae"})
        return [w for w in bp.warnings if w.path[:1] == ("search",)]

    found = warnings([TASK, {**LATE, "from_epoch": 2}])
    assert len(found) == 1 and "late (from_epoch 2)" in found[0].message and "not comparable" in found[0].message
    assert not warnings([TASK, LATE])  # control: every term from epoch 1


def _gated(freeze_after):
    return composer.load_blueprint({
        "blueprint": 1, "name": "gate_carry",
        "modalities": {m: {"kind": "vector", "features": 4} for m in ("a", "b", "c")},
        "blocks": {
            "gate": {"type": "modality_gate", "in": ["a", "b", "c"], "freeze_after": freeze_after},
            "fusion": {"type": "concat", "in": ["gate.primary", "gate.aux1", "gate.aux2"]},
            "head": {"type": "linear", "in": "fusion", "out": 1},
        },
        "losses": [{"type": "mse", "pred": "head"}],
        # five batches an epoch in groups of two: epoch 1's fifth batch is carried into epoch 2
        "training": {"optimizer": "sgd", "lr": 0.5, "momentum": 0.0, "batch_size": 2, "grad_accum": 2, "epochs": 2,
                     "grad_accum_tail": "carry", "cpu_threads": 1, "early_stop": None, "data": {"samples": {"train": 10, "valid": 4}}},
    })


def test_carry_does_not_move_a_parameter_frozen_at_the_epochs_end(tmp_path):
    # a gate that freezes at the end of epoch 1 (its epoch hook) stops learning: the tail's gradient
    # carried from before the freeze must not move it at epoch 2's first step
    from hand_loop import trained

    def logits(bp, out, epochs):
        weights = trained(bp, tmp_path / out, epochs=epochs)
        return next(v for k, v in weights.items() if k.endswith("logits"))

    frozen = _gated(0)
    assert torch.equal(logits(frozen, "f1", 1), logits(frozen, "f2", 2))
    learning = _gated(None)  # control: an unfrozen gate moves in epoch 2
    assert not torch.equal(logits(learning, "l1", 1), logits(learning, "l2", 2))
