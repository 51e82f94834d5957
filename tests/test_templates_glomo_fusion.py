"""GLoMo's fusion (eqs. 8-13, Table 4) said with primitives, proven equal to the built-in `glomo_fusion`.

The templates of blueprints/templates/glomo.yaml, inside the whole GLoMo model at tiny shapes:
each case builds blueprints/glomo.yaml with a `glomo_fusion` setting and the same model with the
fusion written as a template use, asserts the same parameter count, copies the built-in weights
in through an explicit name map (every tensor used once, loaded strictly) and compares the
prediction (and the MIXUP weights) in eval mode, float32, on a batch with padded text, audio and
vision (1e-5):

* `glomo_global_guided_fusion` = strategy global_guided: the paper's fusion (through
  examples/templates/glomo_fusion_template.yaml itself, which with BERT-base has the paper's
  109,818,887 parameters), the authors' bare-Linear MLPs
  (mlp_activation: false), mixup local (ReAt_G) and mixup attention (ATTN_G);
* `glomo_token_fusion` = strategy sum (SUM), product (MUL), attention (ATTN_F), concat (CON).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from composer import compile_blueprint, load_blueprint
from composer.blocks.fusion.elementwise import Product, WeightedSum
from composer.blocks._base import Context
from composer.testing import make_config, padded_batch
from composer.spec import sequence, vector
from equivalence import max_value_difference

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "blueprints" / "glomo.yaml"
EXAMPLE = ROOT / "examples" / "templates" / "glomo_fusion_template.yaml"
TEMPLATES = ROOT / "blueprints" / "templates" / "glomo.yaml"
ATOL = 1e-5
D = 8  # the width of every fusion input at test size
MODALITIES = ("text", "audio", "vision")

#: The whole GLoMo model at test size (tiny BERT, short sequences, d = 8); valid for either fusion.
TINY = [
    "modalities.text.vocab=200", "modalities.text.length=8", "modalities.audio.length=7", "modalities.vision.length=6",
    "blocks.text_bert.hidden_size=16", "blocks.text_bert.num_layers=2", "blocks.text_bert.num_heads=2",
    "blocks.text_bert.intermediate_size=32", "blocks.text_bert.vocab_size=200",
    "blocks.fusion.heads=2", "blocks.fusion.ff_dim=16",
    "blocks.audio_coding.heads=2", "blocks.vision_coding.heads=2", "blocks.audio_coding.layers=1", "blocks.vision_coding.layers=1",
] + [f"blocks.{b}.dim={D}" for b in ("text_coding", "audio_coding", "vision_coding")] + [f"blocks.{m}_moe.out={D}" for m in MODALITIES]

#: Built-in module prefix -> template module prefix, common to both templates (eq. 8).
ENCODER = {"fusion.encoder.": "fusion.encoder.encoder."}
#: `glomo_global_guided_fusion`: eqs. 9-13.
GUIDED = {
    **ENCODER,
    **{f"fusion.modality_mlps.{i}.0.": f"fusion.z_{m}.linear." for i, m in enumerate(MODALITIES)},  # eq. 9
    **{f"fusion.attention.{k}.score.": f"fusion.attn_{k}.attention.score." for k in ("global", "local")},  # eq. 10
    "fusion.pair_mlp.0.": "fusion.z1.linear.",  # eq. 11
    "fusion.mix.score.": "fusion.mix.attention.score.",  # mixup attention (ATTN_G)
    "fusion.predict.": "fusion.predict.linear.",  # eq. 13
}


def _token_map(strategy: str) -> dict[str, str]:
    """`glomo_token_fusion`: the merge and the head (an `mlp`: net.0, or net.0 / net.2 for CON)."""
    if strategy == "concat":
        return {**ENCODER, "fusion.merge.0.": "fusion.predict.net.0.", "fusion.predict.": "fusion.predict.net.2."}
    return {**ENCODER, "fusion.merge.score.": "fusion.merge.attention.score.", "fusion.predict.": "fusion.predict.net.0."}


def _rename(prefixes: dict[str, str]):
    def rename(name: str) -> str:
        for old, new in prefixes.items():
            if name.startswith(old):
                return new + name[len(old):]
        return name  # outside the fusion: the same blocks in both models

    return rename


def _builtin(fusion: dict):
    data = yaml.safe_load(PRESET.read_text())
    data["blocks"]["fusion"].update(fusion)
    return compile_blueprint(load_blueprint(data, TINY)).eval()


def _templated(use: dict | None):
    """The example; ``use``: its fusion replaced by that template use (same inputs)."""
    if use is None:
        return compile_blueprint(load_blueprint(EXAMPLE, TINY + [f"blocks.fusion.dim={D}"])).eval()
    data = yaml.safe_load(EXAMPLE.read_text())
    data["imports"] = [str(TEMPLATES)]
    data["blocks"]["fusion"] = {"in": data["blocks"]["fusion"]["in"], **copy.deepcopy(use)}
    return compile_blueprint(load_blueprint(data, TINY)).eval()


def _copy_weights(source: torch.nn.Module, target: torch.nn.Module, rename) -> None:
    state = {}
    for name, tensor in source.state_dict().items():
        new = rename(name)
        assert new not in state, f"{name} and another tensor both map to {new}"
        state[new] = tensor
    assert set(state) == set(target.state_dict()), sorted(set(state) ^ set(target.state_dict()))
    target.load_state_dict(state, strict=True)


def _max_difference(builtin, templated, pairs: list[tuple[str, str]]) -> float:
    batch = padded_batch(builtin, 4)
    assert not batch["text_mask"].all() and all((batch[f"{m}_lengths"] < batch[m].shape[1]).any() for m in ("audio", "vision"))
    with torch.no_grad():
        a, b = builtin(batch), templated(batch)
    a, b = {"prediction": a["prediction"], **a["values"]}, {"prediction": b["prediction"], **b["values"]}
    return max_value_difference(a, b, pairs, ATOL)


def _check(builtin, templated, prefixes: dict[str, str], pairs: list[tuple[str, str]]) -> float:
    assert templated.parameter_summary() == builtin.parameter_summary()
    _copy_weights(builtin, templated, _rename(prefixes))
    return _max_difference(builtin, templated, [("prediction", "prediction")] + pairs)


def _bare(inner: list[str]) -> dict:
    """Use settings turning the template's Linear -> ReLU MLPs into bare Linears (the authors' code)."""
    return {name: {"activation": None} for name in inner}


def test_the_example_is_blueprints_glomo_with_the_fusion_as_a_template():
    preset, example = load_blueprint(PRESET), load_blueprint(EXAMPLE)
    sizes = {"hidden_size", "num_layers", "num_heads", "intermediate_size"}  # the example's BERT-Tiny shape
    for bid, cfg in preset.blocks.items():
        if bid != "fusion":
            assert example.blocks[bid].model_dump(exclude=sizes) == cfg.model_dump(exclude=sizes), bid
    assert example.training == preset.training.model_copy(update={"data": example.training.data})  # a small synthetic set
    assert example.losses[0].pred == example.outputs["prediction"] == "fusion/predict"
    builtin, templated = _builtin({}), _templated(None)
    assert templated.blueprint.blocks["fusion/encoder"].type == "post_ln_transformer" and "fusion" not in templated.blueprint.blocks
    assert _check(builtin, templated, GUIDED, [("fusion.weights", "fusion/attn_global.weights")]) < ATOL


def test_the_example_with_bert_base_has_the_papers_parameter_count():
    base = ["blocks.text_bert.hidden_size=768", "blocks.text_bert.num_layers=12", "blocks.text_bert.num_heads=12",
            "blocks.text_bert.intermediate_size=3072"]  # BertConfig() defaults: the example's BERT-Tiny shape undone
    assert compile_blueprint(load_blueprint(EXAMPLE, base)).parameter_summary()["model"] == 109_818_887  # Table 5


GUIDED_CASES = {
    "authors_bare_linear": ({"mlp_activation": False}, _bare([f"z_{m}" for m in MODALITIES] + ["z1"]), "global"),
    "mixup_local": ({"mixup": "local"}, {"mixup": "local"}, "local"),
    "mixup_attention": (
        {"mixup": "attention"}, {"mix": {"type": "attention_pool", "in": [f"z_{m}" for m in MODALITIES], "dropout": 0.1}}, None,
    ),
}


@pytest.mark.parametrize("case", sorted(GUIDED_CASES))
def test_global_guided_template_equals_glomo_fusion_option(case):
    fusion, settings, weights = GUIDED_CASES[case]
    builtin = _builtin(fusion)
    templated = _templated({"type": "glomo_global_guided_fusion", "dim": D, "out": 1, "layers": 2, **settings})
    pairs = [("fusion.weights", f"fusion/attn_{weights}.weights")] if weights else []
    assert _check(builtin, templated, GUIDED, pairs) < ATOL


TOKEN_CASES = {  # glomo_fusion strategy -> the glomo_token_fusion use's settings
    "sum": {"join": "sum"},
    "product": {"join": "product"},
    "attention": {"join": "attention_pool", "merge": {"dropout": 0.1}},
    "concat": {"join": "concat", "hidden": [D]},
}


@pytest.mark.parametrize("strategy", sorted(TOKEN_CASES))
def test_token_fusion_template_equals_glomo_fusion_strategy(strategy):
    builtin = _builtin({"strategy": strategy})
    templated = _templated({"type": "glomo_token_fusion", "out": 1, "layers": 2, **TOKEN_CASES[strategy]})
    assert _check(builtin, templated, _token_map(strategy), []) < ATOL


def test_weighted_sum_weighs_each_input_by_its_column_at_every_step():
    specs = {"weights": vector(2), "a": sequence(3, 4), "b": sequence(3, 4)}
    block = WeightedSum(make_config("weighted_sum", {}, list(specs)), specs)
    w, a, b = torch.randn(5, 2), torch.randn(5, 3, 4), torch.randn(5, 3, 4)
    got = block({"weights": w, "a": a, "b": b}, Context())
    assert torch.allclose(got, w[:, :1, None] * a + w[:, 1:, None] * b, atol=1e-6)


def test_product_multiplies_its_inputs_element_wise():
    specs = {str(i): vector(4) for i in range(3)}
    block = Product(make_config("product", {}, list(specs)), specs)
    x = [torch.randn(5, 4) for _ in specs]
    assert torch.allclose(block(dict(zip(specs, x)), Context()), x[0] * x[1] * x[2], atol=1e-6)
