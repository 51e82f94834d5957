"""The training-memory estimate (issue #26): one step traced with fake tensors
(:mod:`composer.train.memory`) against the same step run for real, and the budget it enforces.

The real runs here count live tensor bytes (:class:`LiveBytes` on real tensors), which is exact
for tiny models; process RSS (what ``scripts/measure_memory.py`` measures on the paper
blueprints) is dominated by fixed costs at these sizes."""

from __future__ import annotations

import copy

from pathlib import Path

import pytest
import torch
import yaml

import composer
from composer.cli import main
from composer.errors import BlueprintError, ComposerError
from composer.train import memory
from composer.train.memory import LiveBytes, check_training_memory, trace_training_memory
from composer.graph.model import compile_blueprint

# attention-heavy: 48 steps, 4 heads, two layers, so the (B, heads, T, T) weights dominate
ATTENTION = {
    "blueprint": 1, "name": "attention_heavy",
    "task": {"kind": "regression", "outputs": 1},
    "modalities": {"text": {"features": 8, "length": 48}},
    "blocks": {
        "enc": {"type": "transformer", "in": "text", "dim": 16, "heads": 4, "layers": 2},
        "pool": {"type": "pool", "in": "enc"},
        "head": {"type": "mlp", "in": "pool", "hidden": [8], "out": 1},
    },
    "outputs": {"prediction": "head"},
    "losses": [{"type": "l1", "pred": "head"}],
    "training": {"batch_size": 6, "epochs": 1},
}


# activation-heavy beyond the old floor: the MLP's hidden activations at batch 2048, which the
# floor (parameters x 16 and block outputs) leaves out
WIDE_MLP = {
    "blueprint": 1, "name": "wide_mlp",
    "task": {"kind": "regression", "outputs": 1},
    "modalities": {"x": {"kind": "vector", "features": 64}},
    "blocks": {"head": {"type": "mlp", "in": "x", "hidden": [512, 512], "out": 1}},
    "outputs": {"prediction": "head"},
    "losses": [{"type": "l1", "pred": "head"}],
    "training": {"batch_size": 2048, "epochs": 1},
}


def blueprint(data: dict, **training):
    data = copy.deepcopy(data)
    data["training"].update(training)
    return composer.load_blueprint(yaml.safe_dump(data))


def real_peak(bp, batch_size: int) -> tuple[int, int]:
    """The same step as the trace, on real tensors: (peak live bytes + batch, bytes of the state)."""
    torch.manual_seed(0)
    model = compile_blueprint(bp)
    model.train()
    batches = memory.step_batches(model, batch_size)
    live = LiveBytes()
    live.count_apart(batches)
    with live:
        model.to_empty(device="cpu")  # counted as the trace counts them
        optimizers = memory.make_optimizers(model)
        memory.prime_optimizers(model, optimizers)
        state = live.live
        live.reset_peak()
        memory.training_step(model, batches, optimizers)
    return live.peak + memory._batch_bytes(batches), state


def test_trace_equals_the_real_step_of_an_attention_heavy_model():
    bp = blueprint(ATTENTION)
    est = trace_training_memory(bp)
    measured, state = real_peak(bp, 6)
    assert est.state_bytes == state  # parameters and Adam's two moments, byte for byte
    assert abs(est.tensor_bytes / measured - 1) < 0.05, (est.tensor_bytes, measured)
    assert est.peak_bytes == est.tensor_bytes + min(memory.KERNEL_ALLOWANCE, est.tensor_bytes // 4)
    assert est.activation_bytes > 4 * est.state_bytes  # the activations, not the weights, decide it


def test_the_estimate_grows_linearly_with_the_batch_and_the_length():
    """A known case: PyTorch's fused CPU attention keeps ``(B, heads, T)`` log-sum-exps for the
    backward pass, not the ``(B, heads, T, T)`` weights, so every saved tensor is linear in B and T."""
    small, double_batch = trace_training_memory(blueprint(ATTENTION)), trace_training_memory(blueprint(ATTENTION), 12)
    assert 1.9 < double_batch.activation_bytes / small.activation_bytes < 2.1
    long = copy.deepcopy(ATTENTION)
    long["modalities"]["text"]["length"] = 96
    assert 1.9 < trace_training_memory(blueprint(long)).activation_bytes / small.activation_bytes < 2.1


def test_rnn_workspace_counts_the_pages_onednn_writes():
    """PyTorch's shape-only LSTM kernel keeps no workspace; the real one keeps oneDNN's, of which
    it writes part: the trace counts the written pages, between the outputs and the full size."""
    t, b, d, h = 40, 20, 6, 8  # batch above the probe's 16: scaled
    args = (torch.randn(t, b, d), torch.randn(4 * h, d), torch.randn(4 * h, h), torch.randn(4 * h), torch.randn(4 * h),
            torch.randn(b, h), torch.randn(b, h), False, [], 2, h, 1, True, False, True, True)
    real = torch.ops.aten.mkldnn_rnn_layer.default(*args)[3].numel()
    forward, backward = memory._rnn_workspace_bytes(args)
    assert t * b * 4 * h * 4 < forward and 0 < backward and forward + backward <= real * 1.05, (forward, backward, real)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        assert torch.ops.aten.mkldnn_rnn_layer.default(*args)[3].numel() == 0  # what the trace would see without it


def test_validate_memory_prints_the_traced_peak_and_refuses_above_the_budget(tmp_path, capsys, monkeypatch):
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(WIDE_MLP))
    est = trace_training_memory(blueprint(WIDE_MLP))
    floor = blueprint(WIDE_MLP).size.train_bytes
    assert est.peak_bytes > 2 * floor
    budget = (floor + est.peak_bytes) // 2  # above the old floor, below the traced peak
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", str(budget))
    assert main(["validate", str(path)]) == 0  # the floor alone lets it through
    assert "training needs at least" in capsys.readouterr().out
    assert main(["validate", "--memory", str(path)]) == 1
    err = capsys.readouterr().err
    assert "too large to train here: training needs about" in err and "training.batch_size" in err, err
    with pytest.raises(BlueprintError, match="above the budget"):
        check_training_memory(blueprint(WIDE_MLP))
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", str(est.peak_bytes * 2))
    assert main(["validate", "--memory", str(path)]) == 0
    assert "training needs about" in capsys.readouterr().out


def test_the_measurement_script_finds_the_estimate_within_25_percent_of_the_rss():
    """``scripts/measure_memory.py`` end to end on the smallest paper blueprint, where RSS is
    steady from run to run (0.83 on the project's machine): the peak RSS of the real step in a
    fresh process against the trace. The whole table (docs/memory-cpu.json) comes from this code.
    (A model of a few large tensors is a poor probe: glibc keeps a varying share of them.)"""
    import importlib.util

    from shipped import ROOT

    spec = importlib.util.spec_from_file_location("measure_memory", ROOT / "scripts" / "measure_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    row = script.row(ROOT / "blueprints" / "late_fusion.yaml", None, headroom=1.5)
    assert row["measured_bytes"] > 10_000_000 and abs(row["ratio"] - 1) <= script.TOLERANCE, row


def test_a_step_that_cannot_be_traced_is_a_clear_error(monkeypatch):
    from torch._subclasses.fake_tensor import DynamicOutputShapeException

    def needs_data(model, batches, optimizers):
        raise DynamicOutputShapeException(torch.ops.aten.nonzero.default)

    assert trace_training_memory(blueprint(ATTENTION)).peak_bytes > 0  # the real step traces
    monkeypatch.setattr(memory, "training_step", needs_data)
    with pytest.raises(ComposerError, match="attention_heavy: one training step cannot be traced with fake tensors .*nonzero"):
        trace_training_memory(blueprint(ATTENTION))


def test_train_refuses_a_step_above_the_budget_before_building_the_model(tmp_path, monkeypatch):
    """`COMPOSER_MAX_MEMORY` holds for the traced step when training, not only the floor: a budget the
    floor passes but the step does not ends `composer.train` with the estimate, before any epoch."""
    import composer
    from composer.errors import BlueprintError
    from composer.train.memory import trace_training_memory

    path = Path(__file__).resolve().parents[1] / "blueprints" / "late_fusion.yaml"
    checked = composer.load_blueprint(path)
    peak, floor = trace_training_memory(checked).peak_bytes, checked.size.train_bytes
    assert floor < peak
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", str((floor + peak) // 2))
    monkeypatch.setenv("COMPOSER_MAX_DATA", "4GB")  # the data read has a budget of its own
    with pytest.raises(BlueprintError, match="too large to train here"):
        composer.train(path, out=tmp_path / "run", epochs=1, progress=False)
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_a_trace_leaves_no_fake_tensor_in_the_caches_real_models_read():
    """The positional tables and MulT's future-mask triangles are cached per size: a trace once left
    fake tensors there, and the next real model (a training run after the trainer's check) computed
    fake outputs and failed. Caches now keep only real tensors."""
    from torch._subclasses.fake_tensor import is_fake

    from composer.layers import attention, positional

    path = Path(__file__).resolve().parents[1] / "blueprints" / "mult.yaml"
    checked = composer.load_blueprint(path, ["modalities.text.length=5", "modalities.audio.length=6", "modalities.vision.length=7"])
    memory.trace_training_memory(checked, batch_size=2)
    assert not any(is_fake(t) for t in [*attention._TRIANGLES.values(), *positional._TABLES.values()])
    model = composer.compile_blueprint(checked).eval()
    with torch.no_grad():
        assert not is_fake(model(model.example_inputs(2))["prediction"])
