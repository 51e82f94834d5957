"""Behaviour of the basic blocks: projections, transformer, pooling, baseline fusion, and
the early-fusion blueprint."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import composer
from composer.blocks._base import Context, SpecError
from composer.registry import get_block
from composer.spec import Spec, sequence, vector
from composer.testing import make_config

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints"


def build(type_name, fields, inputs):
    config = make_config(type_name, fields, list(inputs))
    return get_block(type_name).impl(config, inputs)


def infer(type_name, fields, inputs):
    config = make_config(type_name, fields, list(inputs))
    return config.infer(inputs)


def right_padded_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


# -- linear --------------------------------------------------------------------------------


def test_linear_maps_last_axis_of_vector_and_sequence():
    block = build("linear", {"out": 3}, {"in": sequence("T_x", 4)})
    x = torch.randn(2, 5, 4)
    expected = x @ block.linear.weight.T + block.linear.bias
    torch.testing.assert_close(block({"in": x}, Context()), expected)
    assert infer("linear", {"out": 3}, {"in": vector(4)})["out"] == vector(3)
    assert infer("linear", {"out": 3}, {"in": sequence("T_x", 4)})["out"] == sequence("T_x", 3)


def test_linear_without_bias_and_with_activation_and_norm():
    block = build("linear", {"out": 6, "bias": False, "activation": "relu", "norm": True}, {"in": vector(4)})
    assert block.linear.bias is None
    assert sum(p.numel() for p in block.parameters()) == 4 * 6 + 2 * 6
    y = block({"in": torch.randn(5, 4)}, Context())
    torch.testing.assert_close(y.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)


def test_linear_rejects_tokens():
    with pytest.raises(SpecError):
        infer("linear", {"out": 3}, {"in": Spec("tokens", ("B", "T"), "long")})


# -- conv1d --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,time,expected",
    [
        ({"kernel": 3}, "T_x", "T_x"),
        ({"kernel": 4}, "T_x", "T_x"),
        ({"kernel": 5, "padding": 2}, "T_x", "T_x"),
        ({"kernel": 3, "dilation": 2, "padding": 2}, "T_x", "T_x"),
        ({"kernel": 3, "padding": "valid"}, 10, 8),
        ({"kernel": 3, "stride": 2, "padding": "valid"}, 10, 4),
        ({"kernel": 3, "stride": 2, "padding": 1}, 10, 5),
        ({"kernel": 2, "stride": 3, "padding": "same"}, 10, 4),
        ({"kernel": 1, "padding": "valid"}, "T_x", "T_x"),
    ],
)
def test_conv1d_infers_output_time(fields, time, expected):
    out = infer("conv1d", {"out": 2, **fields}, {"in": sequence(time, 3)})["out"]
    assert out == sequence(expected, 2)


@pytest.mark.parametrize("fields,time", [
    ({"kernel": 3}, 10), ({"kernel": 4}, 9), ({"kernel": 3, "stride": 2, "padding": "valid"}, 10),
    ({"kernel": 2, "stride": 3}, 10), ({"kernel": 3, "stride": 2, "padding": 1, "dilation": 2}, 11),
])
def test_conv1d_real_length_matches_inferred_length(fields, time):
    block = build("conv1d", {"out": 2, **fields}, {"in": sequence(time, 3)})
    y = block({"in": torch.randn(2, time, 3)}, Context())
    assert y.shape == (2, block.out_specs["out"].time, 2)


def test_conv1d_refuses_striding_a_symbolic_time_axis():
    with pytest.raises(SpecError, match="T_x") as info:
        infer("conv1d", {"out": 2, "kernel": 3, "stride": 2}, {"in": sequence("T_x", 3)})
    assert info.value.field == "padding"


@pytest.mark.parametrize("fields, time", [({"padding": "valid"}, "T_x-2"), ({"padding": 3}, "T_x+4")])
def test_conv1d_without_same_padding_shifts_a_symbolic_time_axis(fields, time):
    """MMSA's MulT convolves with padding 0: each sequence loses k - 1 steps (``T-n``, with its own mask)."""
    assert infer("conv1d", {"out": 2, "kernel": 3, **fields}, {"in": sequence("T_x", 3)})["out"].time == time


def test_conv1d_refuses_a_kernel_longer_than_the_sequence():
    with pytest.raises(SpecError, match="at least"):
        infer("conv1d", {"out": 2, "kernel": 5, "padding": "valid"}, {"in": sequence(3, 3)})


def test_conv1d_same_padding_equals_torch_conv_with_symmetric_padding():
    block = build("conv1d", {"out": 4, "kernel": 3}, {"in": sequence(7, 3)})
    x = torch.randn(2, 7, 3)
    expected = F.conv1d(x.transpose(1, 2), block.conv.weight, block.conv.bias, padding=1).transpose(1, 2)
    torch.testing.assert_close(block({"in": x}, Context()), expected)


def test_conv1d_valid_steps_ignore_padded_steps():
    block = build("conv1d", {"out": 4, "kernel": 3}, {"in": sequence("T_x", 3)})
    x = torch.randn(2, 6, 3)
    mask = right_padded_mask([6, 4], 6)
    y = block({"in": x}, Context(masks={"T_x": mask}))
    noisy = x.clone()
    noisy[1, 4:] = 100.0
    y_noisy = block({"in": noisy}, Context(masks={"T_x": mask}))
    torch.testing.assert_close(y[mask], y_noisy[mask])
    alone = block({"in": x[1:, :4]}, Context())  # the short sample, unpadded
    torch.testing.assert_close(y[1, :4], alone[0])


def test_conv1d_without_bias_has_kernel_weights_only():
    block = build("conv1d", {"out": 4, "kernel": 5, "bias": False}, {"in": sequence("T_x", 3)})
    assert sum(p.numel() for p in block.parameters()) == 5 * 3 * 4


# -- transformer ---------------------------------------------------------------------------


def test_transformer_padded_steps_do_not_change_valid_outputs():
    block = build("transformer", {"heads": 2, "layers": 2}, {"in": sequence("T_x", 4)}).eval()
    x = torch.randn(2, 6, 4)
    mask = right_padded_mask([6, 3], 6)
    y = block({"in": x}, Context(masks={"T_x": mask}))
    noisy = x.clone()
    noisy[1, 3:] = torch.randn(3, 4) * 50
    y_noisy = block({"in": noisy}, Context(masks={"T_x": mask}))
    torch.testing.assert_close(y[mask], y_noisy[mask])
    alone = block({"in": x[1:, :3]}, Context())
    torch.testing.assert_close(y[1, :3], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.all(y[1, 3:] == 0)


def test_transformer_projects_input_when_dim_differs():
    block = build("transformer", {"dim": 8, "heads": 2, "layers": 2}, {"in": sequence("T_x", 5)})
    assert isinstance(block.project, nn.Linear) and block.project.bias is None
    assert block.out_specs["out"] == sequence("T_x", 8)
    d = 8
    assert sum(p.numel() for p in block.parameters()) == 5 * d + 2 * (12 * d * d + 13 * d) + 2 * d


def test_transformer_keeps_input_width_without_dim():
    block = build("transformer", {"dim": 4, "heads": 2, "layers": 1}, {"in": sequence("T_x", 4)})
    assert isinstance(block.project, nn.Identity)


def test_transformer_rejects_heads_not_dividing_width():
    with pytest.raises(SpecError) as info:
        infer("transformer", {"heads": 3}, {"in": sequence("T_x", 4)})
    assert info.value.field == "heads"


def test_transformer_causal_output_ignores_future_steps():
    block = build("transformer", {"heads": 2, "layers": 2, "causal": True}, {"in": sequence(6, 4)}).eval()
    x = torch.randn(1, 6, 4)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 2, 4)
    y, y_changed = block({"in": x}, Context()), block({"in": changed}, Context())
    torch.testing.assert_close(y[:, :4], y_changed[:, :4])
    assert not torch.allclose(y[:, 4:], y_changed[:, 4:])


# -- pooling -------------------------------------------------------------------------------

X = torch.tensor(
    [
        [[1.0, -2.0], [3.0, 0.0], [5.0, 4.0], [7.0, -1.0]],
        [[2.0, 1.0], [-4.0, 6.0], [9.0, 9.0], [9.0, 9.0]],  # last two steps are padding
    ]
)
MASK = torch.tensor([[True, True, True, True], [True, True, False, False]])


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("mean", [[4.0, 0.25], [-1.0, 3.5]]),
        ("max", [[7.0, 4.0], [2.0, 6.0]]),
        ("last", [[7.0, -1.0], [-4.0, 6.0]]),
        ("first", [[1.0, -2.0], [2.0, 1.0]]),
    ],
)
def test_pool_ignores_padded_steps(mode, expected):
    block = build("pool", {"mode": mode}, {"in": sequence("T_x", 2)})
    y = block({"in": X}, Context(masks={"T_x": MASK}))
    torch.testing.assert_close(y, torch.tensor(expected))


def test_pool_without_mask_uses_every_step():
    block = build("pool", {"mode": "mean"}, {"in": sequence(4, 2)})
    torch.testing.assert_close(block({"in": X}, Context()), X.mean(1))


def test_attention_pool_is_a_softmax_weighted_mean_over_valid_steps():
    block = build("pool", {"mode": "attention", "hidden": 3}, {"in": sequence("T_x", 2)})
    y = block({"in": X}, Context(masks={"T_x": MASK}))
    scores = block.score[2](torch.tanh(block.score[0](X))).squeeze(-1)  # vᵀ tanh(W x + b)
    w0 = scores[0].softmax(0)
    w1 = scores[1, :2].softmax(0)
    torch.testing.assert_close(y[0], w0 @ X[0])
    torch.testing.assert_close(y[1], w1 @ X[1, :2])
    assert sum(p.numel() for p in block.parameters()) == 2 * 3 + 3 + 3


def test_pool_rejects_hidden_outside_attention_mode():
    with pytest.raises(SpecError, match="attention"):
        infer("pool", {"mode": "mean", "hidden": 4}, {"in": sequence("T_x", 2)})


def test_adaptive_max_pool_matches_torch_without_mask():
    block = build("adaptive_max_pool", {"steps": 3}, {"in": sequence(7, 2)})
    x = torch.randn(2, 7, 2)
    expected = nn.AdaptiveMaxPool1d(3)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(block({"in": x}, Context()), expected)
    assert block.out_specs["out"] == sequence(3, 2)


def test_adaptive_max_pool_pools_each_sample_over_its_valid_length():
    block = build("adaptive_max_pool", {"steps": 2}, {"in": sequence("T_x", 2)})
    x = torch.randn(2, 8, 2)
    mask = right_padded_mask([8, 5], 8)
    y = block({"in": x}, Context(masks={"T_x": mask}))
    pool = nn.AdaptiveMaxPool1d(2)
    torch.testing.assert_close(y[1], pool(x[1, :5].T).T)
    torch.testing.assert_close(y[0], pool(x[0].T).T)


# -- fusion baselines -----------------------------------------------------------------------


def test_sum_adds_inputs_and_learns_weights_when_asked():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    plain = build("sum", {}, {"0": vector(4), "1": vector(4)})
    torch.testing.assert_close(plain({"0": a, "1": b}, Context()), a + b)
    assert sum(p.numel() for p in plain.parameters()) == 0
    weighted = build("sum", {"weighted": True}, {"0": vector(4), "1": vector(4)})
    with torch.no_grad():
        weighted.weights.copy_(torch.tensor([2.0, -0.5]))
    torch.testing.assert_close(weighted({"0": a, "1": b}, Context()), 2 * a - 0.5 * b)


@pytest.mark.parametrize("block", ["sum", "gated_sum"])
def test_same_shape_fusions_reject_different_shapes(block):
    with pytest.raises(SpecError, match="one shape"):
        infer(block, {}, {"0": vector(4), "1": vector(5)})
    with pytest.raises(SpecError, match="one shape"):
        infer(block, {}, {"0": sequence("T_a", 4), "1": sequence("T_b", 4)})


def test_gated_sum_with_open_gates_is_the_sum():
    block = build("gated_sum", {}, {"0": sequence("T", 3), "1": sequence("T", 3)})
    with torch.no_grad():
        block.gates.weight.zero_()
        block.gates.bias.fill_(50.0)  # σ(50) = 1: every gate open
    a, b = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(block({"0": a, "1": b}, Context()), a + b)
    assert sum(p.numel() for p in block.parameters()) == 2 * (2 * 3 * 3 + 3)


def test_tensor_fusion_output_size_is_product_of_widths_plus_one():
    out = infer("tensor_fusion", {}, {"text": vector(4), "audio": vector(2), "vision": vector(3)})["out"]
    assert out == vector(5 * 3 * 4)


@pytest.mark.parametrize("one,at", [("last", -1), ("first", 0)])
def test_tensor_fusion_contains_each_unimodal_vector_and_their_products(one, at):
    torch.manual_seed(1)
    xs = {"text": torch.randn(2, 4), "audio": torch.randn(2, 2), "vision": torch.randn(2, 3)}
    block = build("tensor_fusion", {"one": one}, {k: vector(v.shape[1]) for k, v in xs.items()})
    z = block(xs, Context())
    assert z.shape == (2, 60)
    cube = z.view(2, 5, 3, 4)  # (B, D_t + 1, D_a + 1, D_v + 1)
    body = slice(None, -1) if one == "last" else slice(1, None)
    torch.testing.assert_close(cube[:, body, at, at], xs["text"])
    torch.testing.assert_close(cube[:, at, body, at], xs["audio"])
    torch.testing.assert_close(cube[:, at, at, body], xs["vision"])
    torch.testing.assert_close(cube[:, body, body, at], xs["text"][:, :, None] * xs["audio"][:, None, :])
    torch.testing.assert_close(cube[:, at, at, at], torch.ones(2))


def test_tensor_fusion_refuses_oversized_outputs_and_sequences():
    with pytest.raises(SpecError, match="max_features") as info:
        infer("tensor_fusion", {"max_features": 100}, {"0": vector(10), "1": vector(10)})
    assert info.value.field == "max_features"
    with pytest.raises(SpecError, match="vector"):
        infer("tensor_fusion", {}, {"0": sequence("T", 3), "1": vector(3)})


# -- blueprints ------------------------------------------------------------------------------


def test_early_fusion_blueprint_compiles_and_runs():
    bp = composer.load_blueprint(BLUEPRINTS / "early_fusion.yaml")
    model = composer.compile_blueprint(bp)
    batch = model.example_inputs(3)
    out = model(batch)
    assert out["prediction"].shape == (3, 1)
    assert out["values"]["fusion"].shape == (3, 50, 325)
    counts = model.parameter_counts()
    assert counts["encoder"] == 4 * (64 * (325 + 64) + 2 * 64)
    loss, _ = model.compute_loss({"main": out}, {"main": batch})
    assert torch.isfinite(loss)
    loss.backward()


def test_basic_blocks_compose_in_a_blueprint_and_respect_padding():
    bp = composer.load_blueprint(
        {
            "blueprint": 1,
            "name": "basic_chain",
            "task": {"kind": "regression", "outputs": 1},
            "modalities": {"audio": {"features": 5, "length": 8}},
            "blocks": {
                "proj": {"type": "conv1d", "in": "audio", "out": 8, "kernel": 3},
                "enc": {"type": "transformer", "in": "proj", "heads": 2, "layers": 1},
                "pool": {"type": "pool", "in": "enc", "mode": "attention"},
                "head": {"type": "linear", "in": "pool", "out": 1},
            },
            "losses": [{"type": "l1", "pred": "head"}],
        }
    )
    model = composer.compile_blueprint(bp).eval()
    batch = model.example_inputs(2)
    batch["audio_lengths"] = torch.tensor([8, 5])
    y = model(batch)["prediction"]
    batch["audio"][1, 5:] = 1000.0
    torch.testing.assert_close(model(batch)["prediction"], y)
