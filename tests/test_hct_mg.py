"""HCT-MG: modality gating, role weights, hierarchy, crossmodal masks, blueprint sizes."""

from pathlib import Path

import pytest
import torch

import composer
from composer.blocks._base import Context, SpecError
from composer.blocks.crossmodal import CrossmodalConfig, CrossmodalTransformer
from composer.blocks.conv_gru import ConvGRU
from composer.configs.conv_gru import ConvGRUConfig
from composer.blocks.fusion.hierarchical import HierarchicalCrossmodal, HierarchicalCrossmodalConfig
from composer.blocks.gating import ModalityGate
from composer.spec import sequence

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"text": sequence("T_t", 4), "audio": sequence("T_a", 4), "vision": sequence("T_v", 4)}
REFS = {"text": "t", "audio": "a", "vision": "v"}



def tiny_fusion(**fields) -> HierarchicalCrossmodal:
    config = HierarchicalCrossmodalConfig(inputs=REFS, heads=2, layers=1, sa_layers=1, **fields)
    return HierarchicalCrossmodal(config, PORTS)


def tiny_batch(batch=2, lengths=(3, 5, 6)):
    gen = torch.Generator().manual_seed(1)
    return {name: torch.randn(batch, t, 4, generator=gen) for name, t in zip(("text", "audio", "vision"), lengths)}


def sgd_step(module, lr):
    """Plain gradient step (avoids torch.optim, whose first use imports torch._dynamo: seconds)."""
    with torch.no_grad():
        for param in module.parameters():
            if param.grad is not None:
                param -= lr * param.grad
                param.grad = None


def set_gate(gate: ModalityGate, weights):
    with torch.no_grad():
        gate.logits.copy_(torch.tensor(weights).log())


# -- modality gating ----------------------------------------------------------------


def test_gate_weights_sum_to_one_and_primary_follows_largest_weight():
    gate = ModalityGate(["text", "audio", "vision"])
    for weights in ([0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7]):
        set_gate(gate, weights)
        index, w = gate.select()
        assert torch.allclose(w.sum(), torch.tensor(1.0))
        assert torch.allclose(w, torch.tensor(weights), atol=1e-6)
        assert index == max(range(3), key=lambda i: weights[i])


def test_gate_weights_learn_through_scaling():
    fusion = tiny_fusion()
    out = fusion(tiny_batch(), Context())
    out.sum().backward()
    grad = fusion.gate.logits.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gate_at_outputs_also_learns():
    fusion = tiny_fusion(gate_at="outputs")
    fusion(tiny_batch(), Context()).sum().backward()
    assert fusion.gate.logits.grad.abs().sum() > 0


def test_fixed_primary_never_changes_and_has_no_gate_parameters():
    fusion = tiny_fusion(primary="vision")
    assert not any("gate" in name for name, _ in fusion.named_parameters())
    fusion.train()
    for _ in range(3):
        fusion(tiny_batch(), Context()).pow(2).sum().backward()
        sgd_step(fusion, 0.01)
        assert fusion.roles()[2] == "vision"
    log = fusion.gate.composer_epoch_end(0)
    assert log["primary_counts"] == {"text": 0, "audio": 0, "vision": 3}


def test_gated_primary_changes_when_weights_change():
    fusion = tiny_fusion()
    set_gate(fusion.gate, [0.2, 0.7, 0.1])
    assert fusion.roles() == ("text", "vision", "audio")
    set_gate(fusion.gate, [0.5, 0.2, 0.3])
    assert fusion.roles() == ("audio", "vision", "text")


def test_freeze_stops_changes():
    fusion = tiny_fusion()
    set_gate(fusion.gate, [0.3, 0.5, 0.2])
    assert fusion.gate.freeze() == "audio"
    before = fusion.gate.logits.detach().clone()
    fusion.train()
    for _ in range(2):
        fusion(tiny_batch(), Context()).pow(2).sum().backward()
        assert fusion.gate.logits.grad is None and not fusion.gate.logits.requires_grad
        sgd_step(fusion, 0.1)
    assert torch.equal(fusion.gate.logits.detach(), before)
    with torch.no_grad():  # even a direct edit of the logits no longer moves the primary
        fusion.gate.logits.copy_(torch.tensor([5.0, 0.0, 0.0]))
    assert fusion.roles()[2] == "audio"


def test_freeze_after_epochs_without_change_of_primary():
    gate = ModalityGate(["text", "audio", "vision"], freeze_after=2)
    set_gate(gate, [0.5, 0.3, 0.2])
    gate.train()
    logs = []
    for epoch in range(3):
        gate.select()
        logs.append(gate.composer_epoch_end(epoch))
    assert [log["stable_epochs"] for log in logs] == [0, 1, 2]
    assert [log["frozen"] for log in logs] == [False, False, True]
    assert logs[2]["froze_now"] and not gate.logits.requires_grad


def test_frozen_primary_is_saved_with_the_weights():
    gate = ModalityGate(["text", "audio", "vision"])
    set_gate(gate, [0.1, 0.1, 0.8])
    gate.freeze()
    fresh = ModalityGate(["text", "audio", "vision"])
    fresh.load_state_dict(gate.state_dict())
    assert fresh.frozen and fresh.primary_index() == 2


def test_epoch_end_returns_and_clears_the_batch_history():
    fusion = tiny_fusion()
    fusion.train()
    set_gate(fusion.gate, [0.2, 0.5, 0.3])
    fusion(tiny_batch(), Context())
    set_gate(fusion.gate, [0.6, 0.2, 0.2])
    fusion(tiny_batch(), Context())
    fusion.eval()
    fusion(tiny_batch(), Context())  # evaluation batches are not recorded
    log = fusion.gate.composer_epoch_end(0)
    assert [row["primary"] for row in log["batches"]] == ["audio", "text"]
    assert log["batches"][0]["weights"] == pytest.approx([0.2, 0.5, 0.3], abs=1e-5)
    assert log["mean_weights"]["text"] == pytest.approx(0.4, abs=1e-5)
    assert fusion.gate.composer_epoch_end(1)["batches"] == []


# -- hierarchy and role weights -------------------------------------------------------


def test_role_weights_are_reused_when_the_primary_changes():
    fusion = tiny_fusion()
    names = [name for name, _ in fusion.named_parameters()]
    batch = tiny_batch()
    set_gate(fusion.gate, [0.5, 0.3, 0.2])
    out_text = fusion(batch, Context())
    set_gate(fusion.gate, [0.2, 0.5, 0.3])
    out_audio = fusion(batch, Context())
    assert [name for name, _ in fusion.named_parameters()] == names  # no new parameters
    assert out_text.shape == out_audio.shape == (2, 2 * 8 + 8)
    assert not torch.allclose(out_text, out_audio)


def test_primary_role_matches_fixed_primary_model_with_same_weights():
    """Gated with audio on top == fixed audio primary with the same role weights and scales."""
    gated = tiny_fusion(gate_at="outputs").eval()
    set_gate(gated.gate, [1 / 3, 1 / 3 + 1e-4, 1 / 3 - 1e-4])
    fixed = tiny_fusion(primary="audio", gate_at="outputs").eval()
    state = {k: v for k, v in gated.state_dict().items() if not k.startswith("gate.")}
    fixed.load_state_dict(state, strict=False)
    batch = tiny_batch()
    w = gated.gate.weights().detach()
    a, b = gated(batch, Context()), fixed(batch, Context())
    d = 8
    assert torch.allclose(a[:, :d], w[0] * b[:, :d], atol=1e-5)  # aux-1 = text
    assert torch.allclose(a[:, d:2 * d], w[2] * b[:, d:2 * d], atol=1e-5)  # aux-2 = vision
    assert torch.allclose(a[:, 2 * d:], w[1] * b[:, 2 * d:], atol=1e-5)  # primary = audio


def test_hierarchy_ignores_padded_steps():
    fusion = tiny_fusion(primary="text").eval()
    batch = tiny_batch(lengths=(3, 5, 6))
    masks = {"T_t": torch.tensor([[1, 1, 0], [1, 1, 1]]).bool(), "T_a": torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool()}
    out = fusion(batch, Context(masks=masks))
    noisy = {k: v.clone() for k, v in batch.items()}
    noisy["text"][0, 2] = 100.0
    noisy["audio"][0, 3:] = -50.0
    assert torch.allclose(out, fusion(noisy, Context(masks=masks)), atol=1e-5)


def test_inputs_of_different_widths_are_rejected():
    ports = {**PORTS, "audio": sequence("T_a", 6)}
    with pytest.raises(SpecError, match="same width"):
        HierarchicalCrossmodalConfig(inputs=REFS, heads=2).infer(ports)


def test_unknown_primary_is_rejected():
    with pytest.raises(SpecError, match="primary"):
        HierarchicalCrossmodalConfig(inputs=REFS, heads=2, primary="speech").infer(PORTS)


# -- crossmodal transformer and feature projection ------------------------------------


def test_crossmodal_attention_respects_source_padding_mask():
    block = CrossmodalTransformer(
        CrossmodalConfig(inputs={"target": "a", "source": "b"}, heads=2, layers=2), {"target": sequence("T_a", 4), "source": sequence("T_b", 4)}
    ).eval()
    gen = torch.Generator().manual_seed(0)
    target, source = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 6, 4, generator=gen)
    ctx = Context(masks={"T_b": torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]).bool()})
    out = block({"target": target, "source": source}, ctx)
    changed = source.clone()
    changed[0, 4:] = 1e3
    again = block({"target": target, "source": changed}, ctx)
    assert torch.allclose(out, again, atol=1e-5)
    assert not torch.allclose(out, block({"target": target, "source": changed}, Context()), atol=1e-3)


def test_crossmodal_zeroes_padded_target_steps_and_keeps_target_time():
    config = CrossmodalConfig(inputs={"target": "a", "source": "b"}, dim=6, heads=3, layers=1)
    specs = {"target": sequence("T_a", 4), "source": sequence("T_b", 2)}
    block = CrossmodalTransformer(config, specs).eval()
    assert block.out_specs["out"] == sequence("T_a", 6)
    ctx = Context(masks={"T_a": torch.tensor([[1, 1, 0]]).bool()})
    out = block({"target": torch.randn(1, 3, 4), "source": torch.randn(1, 5, 2)}, ctx)
    assert out.shape == (1, 3, 6) and torch.all(out[0, 2] == 0) and out[0, :2].abs().sum() > 0


def test_conv_gru_keeps_time_symbol_and_ignores_padding():
    block = ConvGRU(ConvGRUConfig(inputs="x", hidden=5, kernel=3), {"in": sequence("T_x", 4)}).eval()
    assert block.out_specs["out"] == sequence("T_x", 5)
    x = torch.randn(2, 6, 4)
    ctx = Context(masks={"T_x": torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]).bool()})
    out = block({"in": x}, ctx)
    changed = x.clone()
    changed[0, 4:] = 9.0
    assert torch.allclose(out, block({"in": changed}, ctx), atol=1e-6)
    assert torch.all(out[0, 4:] == 0)


# -- blueprints ----------------------------------------------------------------------


def size(path, overrides=(), dataset=None):
    model = composer.compile_blueprint(composer.load_blueprint(ROOT / path, overrides=list(overrides), dataset=dataset))
    return model, sum(p.numel() for p in model.parameters())


def test_hct_mg_mosi_size():
    model, n = size("blueprints/hct_mg.yaml")
    assert n == 556_724
    assert abs(n - 540_000) / 540_000 < 0.035  # Table 2: 0.54M


def test_hct_mg_variant_sizes():
    assert size("blueprints/hct_mg.yaml", dataset="mosei")[1] == 795_684  # Table 2: 0.78M
    assert size("blueprints/variants/hct_mg_iemocap.yaml")[1] == 560_807  # Table 2: 0.55M


def test_primary_override_rebuilds_with_audio_primary_and_same_role_weights():
    gated, n_gated = size("blueprints/hct_mg.yaml")
    audio, n_audio = size("blueprints/hct_mg.yaml", ["blocks.fusion.primary=audio"])
    assert audio.fusion.roles() == ("text", "vision", "audio")
    assert n_gated - n_audio == 3  # only the three gate logits
    model_keys = {k for k in gated.state_dict() if ".gate." not in k}
    assert model_keys == {k for k in audio.state_dict() if ".gate." not in k}


def test_hct_mg_blueprint_trains_a_step_and_logs_gate_history():
    model, _ = size("blueprints/hct_mg.yaml")
    model.train()
    batch = model.example_inputs(2)
    for key in ("text", "audio", "vision"):  # keep the test fast: short sequences
        batch[key] = batch[key][:, :6]
        batch[f"{key}_lengths"] = batch[f"{key}_lengths"].clamp(max=6)
    before = model.fusion.gate.weights().detach().clone()
    total, _ = model.compute_loss({"main": model(batch)}, {"main": batch})
    total.backward()
    sgd_step(model, 1.0)
    assert not torch.allclose(model.fusion.gate.weights().detach(), before)
    hooks = [m for m in model.modules() if hasattr(m, "composer_epoch_end")]
    assert hooks == [model.fusion.gate]
    log = hooks[0].composer_epoch_end(0)
    assert len(log["batches"]) == 1 and set(log["weights"]) == {"text", "audio", "vision"}


def test_relative_gate_scale_starts_as_the_fixed_primary_network_and_the_tie_rule_is_explicit():
    import composer

    base = ["modalities.text.length=6", "modalities.audio.length=7", "modalities.vision.length=5", "modalities.text.features=8",
            "blocks.text_enc.hidden=10", "blocks.audio_enc.hidden=10", "blocks.vision_enc.hidden=10", "blocks.head.hidden=[60]"]
    path = Path(__file__).parents[1] / "blueprints/hct_mg.yaml"
    gated = composer.compile_blueprint(composer.load_blueprint(path, base + ["blocks.fusion.gate_scale=relative"])).eval()
    fixed = composer.compile_blueprint(composer.load_blueprint(path, base + ["blocks.fusion.primary=text"])).eval()
    fixed.load_state_dict({k: v for k, v in gated.state_dict().items() if k in fixed.state_dict() and ".gate." not in k}, strict=False)
    batch = gated.example_inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(gated(batch)["prediction"], fixed(batch)["prediction"])  # same network at init
    paper = composer.compile_blueprint(composer.load_blueprint(path, base)).eval()
    paper.load_state_dict(gated.state_dict())
    with torch.no_grad():
        assert not torch.allclose(paper(batch)["prediction"], fixed(batch)["prediction"])  # ω ≈ 1/3 scales the inputs
    assert gated.fusion.roles()[2] == "text"  # tie at init: the first port
    audio_first = composer.compile_blueprint(composer.load_blueprint(path, base + ["blocks.fusion.tie_break=audio"]))
    assert audio_first.fusion.roles()[2] == "audio"
    with pytest.raises(composer.BlueprintError, match="tie_break"):
        composer.load_blueprint(path, base + ["blocks.fusion.tie_break=speech"])


def test_modality_gate_block_routes_the_largest_weight_to_primary():
    from composer.blocks._base import Context
    from composer.registry import get_block
    from composer.spec import vector
    from composer.testing import make_config

    specs = {"text": vector(4), "audio": vector(4), "vision": vector(4)}
    block = get_block("modality_gate").impl(make_config("modality_gate", {"scale": "relative"}, list(specs)), specs).train()
    xs = {k: torch.randn(2, 4) for k in specs}
    out = block(xs, Context())
    torch.testing.assert_close(out["primary"], xs["text"])  # tie at init -> first port, relative scale 1
    with torch.no_grad():
        block.gate.logits.copy_(torch.tensor([0.0, 2.0, 0.5]))
    out = block(xs, Context())
    w = torch.tensor([0.0, 2.0, 0.5]).softmax(0)
    torch.testing.assert_close(out["primary"], 3 * w[1] * xs["audio"])
    torch.testing.assert_close(out["aux1"], 3 * w[0] * xs["text"])
    torch.testing.assert_close(out["weights"], w.expand(2, 3))
    log = block.gate.composer_epoch_end(1)
    assert log["primary_counts"] == {"text": 1, "audio": 1, "vision": 0}
