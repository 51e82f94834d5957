"""Tests of the worked example: the registry-wide checks, the FiLM equation, padding, a blueprint.

Run with ``pytest examples/custom_block`` (the suite runs it in its own process from
tests/test_docs.py, so ``film`` never joins the registry of the main test process).
"""

from pathlib import Path

import pytest
import torch

import film  # registers the block (pytest puts this folder on sys.path)
from composer import SpecError, compile_blueprint, load_blueprint
from composer.spec import sequence, vector
from composer.testing import check_block, check_padding_invariance

HERE = Path(__file__).parent


@pytest.mark.parametrize("fields,inputs", film.FiLMConfig.examples())
def test_block_contract(fields, inputs):
    """What tests/test_block_registry.py checks for every built-in block: inferred spec equals
    the real output, forward, backward, YAML round-trip."""
    check_block("film", fields, inputs)


def test_equation_and_parameters():
    module, _ = check_block("film", {"delta_gamma": False}, {"x": vector(5), "cond": vector(3)})
    assert sum(p.numel() for p in module.parameters()) == 2 * (3 * 5 + 5)
    x, cond = torch.randn(2, 5), torch.randn(2, 3)
    gamma, beta = module.to_gamma_beta(cond).chunk(2, dim=-1)
    out = module({"x": x, "cond": cond}, film.Context())
    torch.testing.assert_close(out, gamma * x + beta)


def test_zero_map_is_identity_with_delta_gamma():
    module, _ = check_block("film", {}, {"x": sequence(4, 6), "cond": vector(2)})
    torch.nn.init.zeros_(module.to_gamma_beta.weight)
    torch.nn.init.zeros_(module.to_gamma_beta.bias)
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(module({"x": x, "cond": torch.randn(3, 2)}, film.Context()), x)


def test_padding_does_not_leak():
    assert check_padding_invariance("film", {}, {"x": sequence("T_x", 6), "cond": vector(4)}) == 1


def test_shape_errors_name_the_field():
    with pytest.raises(SpecError, match="cond") as info:
        film.FiLMConfig(type="film", **{"in": {"x": "a", "cond": "b"}}).infer({"x": vector(4), "cond": sequence("T", 3)})
    assert info.value.field == "in"


def test_blueprint_validates_compiles_and_runs():
    bp = load_blueprint(HERE / "film.yaml", allow_plugins=True)
    model = compile_blueprint(bp)
    assert model.parameter_counts()["audio_mod"] == 2 * (32 * 5 + 5)
    out = model(model.example_inputs(batch_size=3))
    assert out["prediction"].shape == (3, 1)


@pytest.mark.parametrize("fields,inputs", film.FiLMConfig.examples())
def test_declared_parameter_shapes_match_the_module(fields, inputs):
    """`parameter_shapes` (what `composer validate` counts) lists the module's parameters."""
    module, _ = check_block("film", fields, inputs)
    assert module.config.parameter_shapes(inputs) == {n: tuple(p.shape) for n, p in module.named_parameters()}
