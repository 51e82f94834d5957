"""Training-only branches: a block whose outputs reach only losses is built and run in training
(and for the validation loss), skipped when the model predicts or is exported, and counted
apart from the model's parameters."""

from __future__ import annotations

import torch

import composer
from composer.train.trainer import evaluate_split

MISA_LIKE = {
    "blueprint": 1, "name": "recon", "task": {"kind": "regression", "outputs": 1},
    "modalities": {"x": {"kind": "vector", "features": 6}},
    "blocks": {
        "enc": {"type": "mlp", "in": "x", "hidden": [8], "out": 4},
        "head": {"type": "mlp", "in": "enc", "out": 1},
        "decoder": {"type": "mlp", "in": "enc", "hidden": [5], "out": 6},  # read by the reconstruction loss only
    },
    "losses": [{"type": "l1", "pred": "head"}, {"type": "mse", "pred": "decoder", "target": "x", "name": "recon"}],
    "training": {"batch_size": 4, "epochs": 1, "data": {"samples": {"train": 8, "valid": 4, "test": 4}}},
}
DECODER = 4 * 5 + 5 + 5 * 6 + 6  # enc (4) -> 5 -> x (6)


def test_a_block_only_losses_read_is_training_only():
    bp = composer.load_blueprint(MISA_LIKE)
    assert bp.plan.training_only == {"decoder"}
    plain = composer.load_blueprint({**MISA_LIKE, "losses": MISA_LIKE["losses"][:1]})
    assert plain.plan.training_only == frozenset()  # unused (a warning), not training-only


def test_training_only_parameters_are_counted_apart():
    model = composer.compile_blueprint(composer.load_blueprint(MISA_LIKE))
    sizes = model.parameter_summary()
    assert sizes["training_only"] == DECODER
    assert sizes["model"] == sum(p.numel() for p in model.parameters()) - DECODER


def test_prediction_skips_the_branch_and_the_loss_runs_it():
    model = composer.compile_blueprint(composer.load_blueprint(MISA_LIKE))
    batch = model.example_inputs(4)
    model.eval()
    assert "decoder" not in model(batch)["values"]
    assert "decoder" in model(batch, training_branches=True)["values"]
    model.train()
    assert "decoder" in model(batch)["values"]


def test_the_validation_loss_keeps_the_reconstruction_term():
    from composer.data import load_data

    bp = composer.load_blueprint(MISA_LIKE)
    model = composer.compile_blueprint(bp)
    row = evaluate_split(model, load_data(bp, None)["valid"], 4, torch.device("cpu"))
    assert row["loss/recon"] > 0 and "mae" in row


def test_an_exported_program_holds_no_training_only_weight():
    from composer.export import trace

    model = composer.compile_blueprint(composer.load_blueprint(MISA_LIKE)).eval()
    program = trace(model).program
    names = list(program.state_dict) + [s.target for s in program.graph_signature.input_specs if s.target]
    assert names and not any("decoder" in n for n in names)
    assert sum(t.numel() for t in program.state_dict.values()) == model.parameter_summary()["model"]


def test_the_size_estimate_counts_training_only_blocks_apart_as_the_model_does():
    bp = composer.load_blueprint(MISA_LIKE)
    sizes = composer.compile_blueprint(bp).parameter_summary()
    assert (bp.size.model_params, bp.size.training_params) == (sizes["model"], sizes["training_only"])
