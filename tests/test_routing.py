"""Routing primitives: ``activation``, ``scale``, ``router``, and the broadcasting ``product`` and
one-input ``weighted_sum`` (shapes, values by hand, errors; the registry-wide tests cover
forward/backward, YAML round-trip, parameter shapes and padding from the configs' examples)."""

from __future__ import annotations

import math

import pytest
import torch

import composer
from composer.blocks._base import Context
from composer.blocks.routing import entropy_balance, load_balance
from composer.configs._base import SpecError
from composer.registry import get_block
from composer.spec import sequence, vector
from composer.testing import make_config


def _block(type_name: str, fields: dict, inputs: dict):
    config = make_config(type_name, fields, list(inputs))
    return get_block(type_name).impl(config, inputs)


def _infer(type_name: str, fields: dict, inputs: dict):
    return make_config(type_name, fields, list(inputs)).infer(inputs)


# -- activation ---------------------------------------------------------------------------------


def test_activation_functions_and_temperature():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    soft = _block("activation", {"function": "softmax", "temperature": 0.5}, {"in": vector(3)})
    torch.testing.assert_close(soft({"in": x}, Context()), torch.softmax(x * 2, dim=-1))
    assert not torch.allclose(soft({"in": x}, Context()), torch.softmax(x, dim=-1))
    sig = _block("activation", {"function": "sigmoid"}, {"in": sequence("T", 3)})
    y = torch.randn(2, 4, 3)
    torch.testing.assert_close(sig({"in": y}, Context()), torch.sigmoid(y))
    assert _infer("activation", {"function": "tanh"}, {"in": sequence("T", 3)}) == {"out": sequence("T", 3)}


def test_activation_refuses_two_inputs():
    with pytest.raises(SpecError, match="expected 1 input"):
        _infer("activation", {"function": "softmax"}, {"0": vector(2), "1": vector(2)})


# -- scale --------------------------------------------------------------------------------------


def test_scale_broadcasts_one_weight_over_vectors_and_sequences():
    block = _block("scale", {}, {"weights": vector(1), "text": vector(2), "audio": sequence("T", 3)})
    w = torch.tensor([[2.0], [0.5]])
    text, audio = torch.ones(2, 2), torch.ones(2, 4, 3)
    out = block({"weights": w, "text": text, "audio": audio}, Context())
    assert set(out) == {"text", "audio"}
    torch.testing.assert_close(out["text"], torch.tensor([[2.0, 2.0], [0.5, 0.5]]))
    torch.testing.assert_close(out["audio"][:, :, 0], torch.tensor([[2.0] * 4, [0.5] * 4]))


def test_scale_by_columns_and_by_one_column():
    w = torch.tensor([[1.0, 2.0, 3.0]])
    x = {"a": torch.ones(1, 2), "b": torch.ones(1, 2), "c": torch.ones(1, 2)}
    per_input = _block("scale", {}, {"weights": vector(3), "a": vector(2), "b": vector(2), "c": vector(2)})
    out = per_input({"weights": w, **x}, Context())
    assert [float(out[p][0, 0]) for p in "abc"] == [1.0, 2.0, 3.0]
    one = _block("scale", {"column": 2}, {"weights": vector(3), "in": vector(2)})
    torch.testing.assert_close(one({"weights": w, "in": x["a"]}, Context()), torch.full((1, 2), 3.0))
    assert _infer("scale", {"column": 2}, {"weights": vector(3), "in": vector(2)}) == {"out": vector(2)}


@pytest.mark.parametrize("fields,inputs,message", [
    ({}, {"x": vector(2)}, "needs an input port 'weights'"),
    ({}, {"weights": vector(2), "a": vector(2), "b": vector(2), "c": vector(2)}, "2 columns for 3 inputs"),
    ({"column": 3}, {"weights": vector(3), "a": vector(2)}, "column 3 is out of range"),
    ({}, {"weights": sequence("T", 1), "a": vector(2)}, "must be a vector"),
])
def test_scale_errors_say_what_is_expected(fields, inputs, message):
    with pytest.raises(SpecError, match=message):
        _infer("scale", fields, inputs)


# -- product broadcast, weighted_sum of one input -------------------------------------------------


def test_product_broadcasts_a_per_sample_factor():
    block = _block("product", {}, {"gate": vector(1), "x": vector(3)})
    gate, x = torch.tensor([[2.0], [-1.0]]), torch.arange(6.0).view(2, 3)
    torch.testing.assert_close(block({"gate": gate, "x": x}, Context()), gate * x)
    seq = _block("product", {}, {"x": sequence("T", 2), "g": vector(1), "y": sequence("T", 2)})
    a, b, g = torch.randn(2, 3, 2), torch.randn(2, 3, 2), torch.tensor([[3.0], [0.0]])
    torch.testing.assert_close(seq({"x": a, "g": g, "y": b}, Context()), a * b * g[:, :, None])
    assert _infer("product", {}, {"g": vector(1), "x": sequence("T", 2)}) == {"out": sequence("T", 2)}
    with pytest.raises(SpecError, match="one shape"):  # (B, 2) is no factor: the shapes must still agree
        _infer("product", {}, {"g": vector(2), "x": vector(3)})


def test_weighted_sum_of_one_input_scales_it():
    block = _block("weighted_sum", {}, {"weights": vector(1), "x": sequence("T", 2)})
    w, x = torch.tensor([[2.0], [3.0]]), torch.ones(2, 4, 2)
    torch.testing.assert_close(block({"weights": w, "x": x}, Context()), w[:, :, None] * x)
    with pytest.raises(SpecError, match="2 features for 1 inputs"):
        _infer("weighted_sum", {}, {"weights": vector(2), "x": vector(3)})


# -- router -------------------------------------------------------------------------------------


def _router(fields, inputs):
    torch.manual_seed(0)
    return _block("router", fields, inputs)


def test_router_weights_sum_to_one_and_combine_the_inputs():
    inputs = {"text": vector(4), "audio": vector(4), "vision": vector(4)}
    block = _router({"hidden": [5], "temperature": 0.5}, inputs)
    x = {p: torch.randn(3, 4) for p in inputs}
    out = block(x, Context())
    w = out["weights"]
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(out["out"], sum(w[:, m : m + 1] * x[p] for m, p in enumerate(inputs)))
    torch.testing.assert_close(out["weight_audio"], w[:, 1:2])
    logits = block.gate(torch.cat([x[p] for p in inputs], dim=-1))
    torch.testing.assert_close(w, torch.softmax(logits / 0.5, dim=-1))
    assert set(out) == {"out", "weights", "weight_text", "weight_audio", "weight_vision"}


def test_router_concat_rescaled_is_emoe_concat_fusion():
    block = _router({"combine": "concat", "rescale": True}, {"a": vector(2), "b": vector(3)})
    a, b = torch.randn(2, 2), torch.randn(2, 3)
    out = block({"a": a, "b": b}, Context())
    w = out["weights"]
    torch.testing.assert_close(out["out"], torch.cat([a * w[:, :1], b * w[:, 1:]], dim=-1) * 2)
    assert _infer("router", {"combine": "concat"}, {"a": vector(2), "b": vector(3)})["out"] == vector(5)


def test_router_reads_the_gate_port_and_pools_sequences_over_valid_steps():
    inputs = {"gate": sequence("T_g", 3), "a": vector(2), "b": vector(2)}
    block = _router({}, inputs)
    g = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    ctx = Context(masks={"T_g": mask})
    x = {"gate": g, "a": torch.randn(2, 2), "b": torch.randn(2, 2)}
    w = block(x, ctx)["weights"]
    pooled = torch.stack([g[0, :2].mean(0), g[1].mean(0)])
    torch.testing.assert_close(w, torch.softmax(block.gate(pooled), dim=-1))
    x["a"] = x["a"] + 100.0  # the values do not reach the gate when a gate port is given
    torch.testing.assert_close(block(x, ctx)["weights"], w)


def test_entropy_and_balance_terms_by_hand():
    uniform = torch.full((4, 3), 1 / 3)
    assert entropy_balance(uniform).item() == pytest.approx(-3 * math.log(3), rel=1e-6)  # EMOE: N Σ p log p
    one_hot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert entropy_balance(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert load_balance(torch.tensor([[0.9, 0.1], [0.2, 0.8]])).item() == pytest.approx(2 * (0.5 * 0.55 + 0.5 * 0.45))
    assert load_balance(torch.tensor([[0.9, 0.1], [0.8, 0.2]])).item() == pytest.approx(2 * 0.85)  # all on expert 0: more


def test_router_aux_losses_join_the_total():
    bp = composer.load_blueprint("""
blueprint: 1
name: routed
task: {kind: regression, outputs: 1}
modalities:
  text: {kind: vector, features: 3}
  audio: {kind: vector, features: 5}
blocks:
  t: {type: linear, in: text, out: 4}
  a: {type: linear, in: audio, out: 4}
  router: {type: router, in: {text: t, audio: a}, entropy_weight: 0.1, balance_weight: 0.01}
  head: {type: linear, in: router, out: 1}
losses:
  - {type: l1, pred: head}
""")
    torch.manual_seed(0)
    model = composer.compile_blueprint(bp)
    batch = model.example_inputs(batch_size=4)
    out = model(batch)
    total, parts = model.compute_loss({"main": out}, {"main": batch})
    w = out["values"]["router.weights"]
    torch.testing.assert_close(parts["router.entropy"], 0.1 * entropy_balance(w).detach())
    torch.testing.assert_close(total, parts["l1_0"] + bp.aux_loss_weight * (parts["router.entropy"] + parts["router.balance"]))
    assert _infer("router", {}, {"a": vector(2), "b": vector(2)}).keys() == {"out", "weights", "weight_a", "weight_b"}


@pytest.mark.parametrize("fields,inputs,message", [
    ({}, {"a": vector(2)}, "at least 2 inputs"),
    ({}, {"a": vector(2), "b": vector(3)}, "combine 'sum' needs inputs of one spec"),
    ({"combine": "concat"}, {"a": sequence("T_x", 2), "b": sequence("T_y", 2)}, "one kind and time axis"),
])
def test_router_errors_say_what_is_expected(fields, inputs, message):
    with pytest.raises(SpecError, match=message):
        _infer("router", fields, inputs)
