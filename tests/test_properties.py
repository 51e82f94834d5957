"""Properties every block and every shipped blueprint must hold (docs/masks.md).

* padding invariance: noise in padded steps and extra padded steps (lengths unchanged) leave
  every output at valid positions, and every pooled output, unchanged (eval mode, 1e-5);
* content sensitivity: every input, and every part of a joined sequence (each BERT layer
  GLoMo joins), has a non-zero gradient on its valid steps;
* share equivalence: a block that shares weights, on another time axis, equals the owner's
  weights run on that input with that input's own mask.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import composer
from composer.registry import list_blocks
from composer.blocks.text import TextEncoder
from composer.graph.model import build_context
from composer.testing import check_content_sensitivity, check_padding_invariance, grow_padding, padded_batch

from shipped import EXAMPLES, PRESETS, ROOT, SEARCHES

BLUEPRINTS = sorted([*PRESETS, *SEARCHES, *EXAMPLES])

#: Options that reproduce an author's padding-dependent behaviour on purpose (documented there).
PADDING_DEPENDENT = {("bert", "layers_padding"): "include", ("almt_transformer", "padding"): "include"}


def _padding_dependent(fields: dict, type_name: str) -> bool:
    return any(t == type_name and fields.get(f) == v for (t, f), v in PADDING_DEPENDENT.items())


MASKED_CASES = [
    pytest.param(entry.name, fields, inputs, id=f"{entry.name}-{i}")
    for entry in list_blocks()
    for i, (fields, inputs) in enumerate(entry.config.examples())
    if any(s.kind in ("sequence", "tokens") and isinstance(s.time, str) for s in inputs.values())
    and not _padding_dependent(fields, entry.name)
]
ALL_CASES = [
    pytest.param(entry.name, fields, inputs, id=f"{entry.name}-{i}")
    for entry in list_blocks()
    for i, (fields, inputs) in enumerate(entry.config.examples())
]


def _accepts_padded_sequences(entry) -> bool:
    """Whether some example still infers when its sequence inputs get a padded (symbolic) time axis."""
    from composer.blocks._base import SpecError
    from composer.testing import make_config

    for fields, inputs in entry.config.examples():
        if not any(s.kind in ("sequence", "tokens") for s in inputs.values()):
            continue
        padded = {p: s.with_time("T_probe") if s.kind in ("sequence", "tokens") else s for p, s in inputs.items()}
        try:
            make_config(entry.name, fields, list(padded)).infer(padded)
            return True
        except SpecError:
            continue
    return False


def test_every_block_that_takes_padded_sequences_is_checked_for_padding():
    names = {p.values[0] for p in MASKED_CASES}
    takes_padding = {e.name for e in list_blocks() if _accepts_padded_sequences(e)}
    assert takes_padding <= names, f"blocks that take padded sequences but have no masked example: {sorted(takes_padding - names)}"


@pytest.mark.parametrize("type_name,fields,inputs", MASKED_CASES)
def test_block_is_padding_invariant(type_name, fields, inputs):
    assert check_padding_invariance(type_name, fields, inputs) > 0


@pytest.mark.parametrize("type_name,fields,inputs", ALL_CASES)
def test_every_block_input_influences_its_outputs(type_name, fields, inputs):
    check_content_sensitivity(type_name, fields, inputs)


# -- shipped blueprints ----------------------------------------------------------------------
def _small(path: Path):
    """The blueprint at test size: sequences of at most 12 steps, a 2-layer 16-wide BERT."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    overrides = []
    for name, m in raw["modalities"].items():
        if m.get("kind", "sequence") in ("sequence", "tokens") and m.get("length", 50) > 12:
            overrides.append(f"modalities.{name}.length=12")
    for bid, cfg in raw["blocks"].items():
        if cfg.get("type") in ("bert", "mag_bert"):
            overrides += [f"blocks.{bid}.{k}={v}" for k, v in
                          {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}.items()]
    return composer.load_blueprint(path, overrides)


def _model(path: Path):
    torch.manual_seed(0)
    return composer.compile_blueprint(_small(path)).eval()


def _padding_dependent_blueprint(bp) -> bool:
    return any(_padding_dependent(cfg.model_dump(), cfg.type) for cfg in bp.blocks.values())


@pytest.mark.parametrize("path", BLUEPRINTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_blueprint_prediction_is_padding_invariant(path):
    model = _model(path)
    if _padding_dependent_blueprint(model.blueprint):
        pytest.skip("reproduces an author's padding-dependent behaviour on purpose")
    batch = padded_batch(model, 3)
    with torch.no_grad():
        plain = model(batch)
        noisy = model(grow_padding(model, batch))
    assert torch.allclose(plain["prediction"], noisy["prediction"], atol=1e-5, rtol=1e-4), (
        f"prediction changed by {(plain['prediction'] - noisy['prediction']).abs().max():.2e} with more padding"
    )
    for key, spec in model.plan.values.items():  # every pooled (vector) value
        if spec.kind == "vector" and key in plain["values"]:
            assert torch.allclose(plain["values"][key], noisy["values"][key], atol=1e-5, rtol=1e-4), f"{key} depends on padding"


def _valid(batch, name):
    x = batch[name]
    if f"{name}_mask" in batch:
        return batch[f"{name}_mask"]
    if f"{name}_lengths" in batch:
        return torch.arange(x.shape[1])[None] < batch[f"{name}_lengths"][:, None]
    return None


def _training_only_input(model, modality: str) -> bool:
    """Only training-only blocks read the modality (MCTN's translation targets): no prediction reads it."""
    readers = [n.id for n in model.plan.nodes if any(ref.source == modality for ref in n.inputs.values())]
    return bool(readers) and all(r in model.plan.training_only for r in readers)


@pytest.mark.parametrize("path", BLUEPRINTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_modality_and_joined_layer_influences_the_prediction(path):
    model = _model(path)
    batch = padded_batch(model, 3)
    floats = [m for m, cfg in model.blueprint.modalities.items() if cfg.kind != "tokens" and not _training_only_input(model, m)]
    for m in floats:
        batch[m].requires_grad_(True)
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for bid, module in model.named_children():
        if isinstance(module, TextEncoder):
            def keep(_bert, _args, result, bid=bid, config=module.config):
                # each state the block passes on becomes a leaf: its gradient is its *direct* influence,
                # not the path through BERT's later layers
                states = list(result.hidden_states) if result.hidden_states is not None else None
                leaves = []
                for i in config.hidden_layers or [-1]:
                    state = states[i] if states else result.last_hidden_state
                    leaf = state.detach().requires_grad_(True)
                    leaves.append(leaf)
                    # the same values; the gradient reaches the leaf and, through `state`, what BERT read
                    # (mag_bert's nonverbal inputs enter inside BERT)
                    passed = leaf + (state - state.detach())
                    if states:
                        states[i] = passed
                    if states is None or i % len(states) == len(states) - 1:
                        result.last_hidden_state = passed
                        if _bert.pooler is not None:  # `pooled` reads the last layer through BERT's pooler
                            result.pooler_output = _bert.pooler(passed)
                if states:
                    result.hidden_states = tuple(states)
                captured[bid] = leaves
                return result

            hooks.append(module.bert.register_forward_hook(keep))
    out = model(batch)
    (out["prediction"].float() * torch.randn_like(out["prediction"].float())).sum().backward()
    for h in hooks:
        h.remove()
    for m in floats:
        valid = _valid(batch, m)
        grad = batch[m].grad
        assert grad is not None, f"modality '{m}' does not reach the prediction"
        per_sample = grad.flatten(2).abs().sum(-1) if grad.dim() > 2 else grad.abs()
        if valid is not None:
            per_sample = (per_sample * valid).sum(1)
        assert (per_sample.reshape(per_sample.shape[0], -1).sum(1) > 0).all(), f"modality '{m}' has no influence for some sample"
    for bid, layers in captured.items():
        # the encoder's tokens (mag_bert has other inputs; LNLN's BERT reads tokens a block dropped): their modality's mask
        symbol = model.block(bid)._spec.time
        tokens = next(m for m, cfg in model.blueprint.modalities.items() if cfg.kind == "tokens" and cfg.time_symbol(m) == symbol)
        valid = batch[f"{tokens}_mask"]
        for i, h in enumerate(layers):
            influence = (h.grad.abs().sum(-1) * valid).sum(1)  # (B,)
            assert (influence > 0).all(), f"{bid}: chosen hidden layer #{i} has no influence on some sample"


# -- sharing -----------------------------------------------------------------------------------
SHARE_TYPES = {
    "transformer": {"heads": 2, "layers": 1},
    "lstm": {"hidden": 4, "output": "sequence"},
    "gru": {"hidden": 4, "output": "sequence", "packed": True},
    "conv1d": {"out": 4, "kernel": 3},
    "glomo_coding": {"dim": 4, "n": 2, "heads": 2, "layers": 1},
    "conv_gru": {"hidden": 4, "kernel": 3},
}


@pytest.mark.parametrize("type_name", sorted(SHARE_TYPES))
def test_a_shared_block_on_another_time_axis_equals_the_owners_weights_on_that_input(type_name):
    data = {
        "blueprint": 1, "name": "share",
        "modalities": {"a": {"features": 4, "length": 9}, "b": {"features": 4, "length": 6}},
        "blocks": {"own": {"type": type_name, "in": "a", **SHARE_TYPES[type_name]}, "use": {"type": type_name, "in": "b", "share": "own"}},
        "outputs": {"prediction": "own" if type_name != "glomo_coding" else "own.global"},
    }
    model = composer.compile_blueprint(composer.load_blueprint(data)).eval()
    assert sum(p.numel() for p in model.parameters()) == model.parameter_counts()["own"]
    batch = model.example_inputs(3)
    with torch.no_grad():
        values = model(batch)["values"]
        node = model.plan.node("use")
        alone = node.entry.impl(node.config, node.in_specs).eval()
        alone.load_state_dict(model.own.state_dict())
        ctx = build_context(batch, {"a": "T_a", "b": "T_b"})
        expected = alone({"in": batch["b"]}, ctx)
    expected = expected if isinstance(expected, dict) else {"out": expected}
    for port in node.out_specs:
        got = values[node.value_key(port)]
        want = expected[port]
        if node.out_specs[port].kind == "sequence" and isinstance(node.out_specs[port].time, str):
            valid = ctx.mask(node.out_specs[port])
            got, want = got[valid], want[valid]
        assert torch.allclose(got, want, atol=1e-6), f"{type_name}.{port}: the shared use differs from the owner's weights on its input"


def test_shared_encoder_example_trains_and_saves_weights_once(tmp_path):
    result = composer.train(ROOT / "examples/hybrids/shared_encoder.yaml", out=tmp_path / "run", epochs=1, progress=False)
    names = list(result.model.state_dict())
    assert not any(n.startswith("vision_enc.") or n.startswith("shared_uses.") for n in names)
    assert any(n.startswith("audio_enc.") for n in names)


def test_sharing_survives_moving_and_casting_the_model():
    model = composer.compile_blueprint(composer.load_blueprint(ROOT / "examples/hybrids/shared_encoder.yaml"))
    model.double()
    own = dict(model.audio_enc.named_parameters())
    use = dict(model.shared_uses["vision_enc"].named_parameters())
    assert all(own[k] is use[k] for k in own)
    for (k, a), (_, b) in zip(model.audio_enc.state_dict(keep_vars=True).items(), model.shared_uses["vision_enc"].state_dict(keep_vars=True).items()):
        assert a is b, k
