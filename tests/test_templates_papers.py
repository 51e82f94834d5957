"""Paper operators rebuilt from primitives as templates, each equal to the built-in network.

Each test builds the built-in model and the template model at tiny shapes, asserts the same
parameter count, copies the built-in weights in through an explicit name map (a bijection:
every tensor used once, loaded strictly) and compares outputs in eval mode (float32, 1e-5)
on a batch with padding on every sequence modality:

* MulT: examples/templates/mult_branches.yaml (three uses of `mult_branch`) = blueprints/mult.yaml,
  block settings included (dropouts, causal masks);
* GLoMo's coding: `glomo_sequence_coding` = `glomo_coding`, `glomo_bert_coding` = `glomo_text_coding`,
  inside the whole GLoMo blueprint;
* EMT: L uses of `emt_layer` = `emt` (strategy oagl, positions off) for each pooling and every
  sharing-flag combination the templates can say.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from composer import compile_blueprint, load_blueprint
from composer.testing import padded_batch
from equivalence import max_value_difference

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "blueprints" / "templates"
ATOL = 1e-5


def copy_weights(source: torch.nn.Module, target: torch.nn.Module, rename) -> None:
    """Load ``source``'s state into ``target`` under ``rename(name) -> name | None`` (None: a
    tensor the target has no place for, asserted absent by the caller), strictly, each once."""
    state = {}
    for name, tensor in source.state_dict().items():
        new = rename(name)
        if new is None:
            continue
        assert new not in state, f"{name} and another tensor both map to {new}"
        state[new] = tensor
    assert set(state) == set(target.state_dict()), sorted(set(state) ^ set(target.state_dict()))
    target.load_state_dict(state, strict=True)


def assert_same_outputs(builtin, templated, batch, pairs) -> float:
    """Max |difference| over the (built-in value key, template value key) pairs; asserts each < ATOL."""
    with torch.no_grad():
        a, b = builtin(batch)["values"], templated(batch)["values"]
    return max_value_difference(a, b, pairs, ATOL)


# -- MulT --------------------------------------------------------------------------------------------
MULT_BRANCHES = {"t": ("a", "v"), "a": ("t", "v"), "v": ("t", "a")}  # target -> (source1, source2)


def _mult_block_map() -> dict[str, str]:
    """mult.yaml's block id -> the expanded block id of mult_branches.yaml."""
    names = {}
    for target, sources in MULT_BRANCHES.items():
        for i, source in enumerate(sources, start=1):
            names[f"cm_{target}_{source}"] = f"branch_{target}/cm{i}"
        names[f"cat_{target}"] = f"branch_{target}/joined"
        names[f"mem_{target}"] = f"branch_{target}/memory"
        names[f"last_{target}"] = f"branch_{target}/last"
    return names


def _mult_models():
    lengths = ["modalities.text.length=6", "modalities.audio.length=9", "modalities.vision.length=7"]
    flat_sets = lengths + [f"blocks.proj_{m}.out=10" for m in "tav"] + ["blocks.head.hidden=[60]"]
    flat_sets += [f"blocks.cm_{t}_{s}.layers=1" for t, ss in MULT_BRANCHES.items() for s in ss] + [f"blocks.mem_{m}.layers=3" for m in "tav"]
    flat = load_blueprint(ROOT / "blueprints" / "mult.yaml", flat_sets)
    templated = load_blueprint(ROOT / "examples" / "templates" / "mult_branches.yaml", lengths + ["vars.d=10"] + [f"blocks.branch_{m}.layers=1" for m in "tav"])
    return flat, templated


def test_mult_branches_are_blueprints_mult_block_for_block():
    flat = load_blueprint(ROOT / "blueprints" / "mult.yaml")
    templated = load_blueprint(ROOT / "examples" / "templates" / "mult_branches.yaml")
    names = _mult_block_map()
    assert set(templated.blocks) == {names.get(b, b) for b in flat.blocks}
    for bid, cfg in flat.blocks.items():  # every setting (dropouts, causal, layers) but the wiring
        mine = templated.blocks[names.get(bid, bid)]
        assert mine.model_dump(exclude={"inputs"}) == cfg.model_dump(exclude={"inputs"}), bid
        refs = cfg.input_map()
        assert {p: names.get(r, r) for p, r in refs.items()} == mine.input_map(), bid
    assert compile_blueprint(templated).parameter_summary()["model"] == 1_071_211


def test_mult_branch_template_equals_blueprints_mult_with_copied_weights():
    flat_bp, templated_bp = _mult_models()
    flat, templated = compile_blueprint(flat_bp).eval(), compile_blueprint(templated_bp).eval()
    assert templated.parameter_summary() == flat.parameter_summary()
    modules = {old.replace("/", "."): new.replace("/", ".") for old, new in _mult_block_map().items()}

    def rename(name: str) -> str:
        block, _, rest = name.partition(".")
        return f"{modules.get(block, block)}.{rest}"

    copy_weights(flat, templated, rename)
    batch = padded_batch(flat, 4)
    pairs = [("head", "head")] + [(f"mem_{m}", f"branch_{m}/memory") for m in "tav"]
    assert assert_same_outputs(flat, templated, batch, pairs) < ATOL


# -- GLoMo's coding ------------------------------------------------------------------------------
GLOMO_TINY = [
    "modalities.text.vocab=200", "modalities.text.length=8", "modalities.audio.length=7", "modalities.vision.length=6",
    "blocks.text_bert.hidden_size=16", "blocks.text_bert.num_layers=2", "blocks.text_bert.num_heads=2",
    "blocks.text_bert.intermediate_size=32", "blocks.text_bert.vocab_size=200", "blocks.fusion.ff_dim=16",
    "blocks.fusion.heads=2", "blocks.audio_coding.heads=2", "blocks.vision_coding.heads=2", "blocks.audio_coding.layers=2",
    "blocks.vision_coding.layers=1", "blocks.audio_coding.kernel=1",
] + [f"blocks.{b}.dim=8" for b in ("text_coding", "audio_coding", "vision_coding")] + [f"blocks.{m}_moe.out=8" for m in ("text", "audio", "vision")]


def _glomo_with_templates() -> dict:
    """blueprints/glomo.yaml with its three coding blocks written as template uses."""
    data = yaml.safe_load((ROOT / "blueprints" / "glomo.yaml").read_text())
    data["imports"] = [str(TEMPLATES / "glomo.yaml")]
    blocks = data["blocks"]
    blocks["text_coding"]["type"] = "glomo_bert_coding"
    for m in ("audio", "vision"):
        blocks[f"{m}_coding"]["type"] = "glomo_sequence_coding"
    return data


def test_glomo_coding_templates_equal_the_builtin_coding_blocks_in_the_whole_model():
    builtin = compile_blueprint(load_blueprint(ROOT / "blueprints" / "glomo.yaml", GLOMO_TINY)).eval()
    templated_bp = load_blueprint(_glomo_with_templates(), GLOMO_TINY)
    assert {"text_coding/global", "text_coding/conv", "audio_coding/encoder", "vision_coding/local"} <= set(templated_bp.blocks)
    templated = compile_blueprint(templated_bp).eval()
    assert templated.parameter_summary() == builtin.parameter_summary()
    copy_weights(builtin, templated, lambda name: name.replace("text_coding.global_proj.", "text_coding.global.linear."))
    batch = padded_batch(builtin, 4)  # padded text, audio and vision
    pairs = [("fusion.out", "fusion.out")]
    for m in ("text", "audio", "vision"):
        pairs += [(f"{m}_coding.global", f"{m}_coding/global"), (f"{m}_coding.local", f"{m}_coding/local")]
    pairs += [(f"{m}_coding.seq", f"{m}_coding/encoder") for m in ("audio", "vision")]
    assert assert_same_outputs(builtin, templated, batch, pairs) < ATOL


# -- EMT ---------------------------------------------------------------------------------------------
EMT_MODALITIES = ("text", "audio", "vision")
EMT_D, EMT_LAYERS = 8, 2
#: (share_directions, share_modalities, share_layers): every combination `share:` can say
#: (share_layers with another flag would chain shares, which the graph refuses).
SHARING = [(False, False, False), (True, False, False), (False, True, False), (True, True, False), (False, False, True)]


def _emt_blueprint(emt: dict | None) -> dict:
    """Projections and utterance vectors, then (``emt``: its settings) the `emt` block and a
    linear head on its global context; ``None``: the inputs only, for the template model."""
    blocks = {}
    for m in EMT_MODALITIES:
        blocks[f"{m}_proj"] = {"type": "linear", "in": m, "out": EMT_D, "bias": False}
        blocks[f"{m}_utt"] = {"type": "pool", "in": f"{m}_proj", "mode": "mean"}
    data = {
        "blueprint": 1, "name": "emt_template", "task": {"kind": "regression", "outputs": 1},
        "modalities": {"text": {"features": 5, "length": 6}, "audio": {"features": 3, "length": 9}, "vision": {"features": 4, "length": 7}},
        "blocks": blocks, "losses": [{"type": "l1", "pred": "head"}],
    }
    if emt is not None:
        blocks["emt"] = {"type": "emt", "in": {**{m: f"{m}_proj" for m in EMT_MODALITIES}, **{f"{m}_utt": f"{m}_utt" for m in EMT_MODALITIES}},
                         "strategy": "oagl", "layers": EMT_LAYERS, "heads": 2, "ffn_expansion": 2, "positions": False, **emt}
        blocks["head"] = {"type": "linear", "in": "emt", "out": 1}
    return data


def _emt_templated(pooling: str, ffn: str, directions: bool, modalities: bool, layers: bool) -> dict:
    data = _emt_blueprint(None)
    data["imports"] = [str(TEMPLATES / "emt.yaml")]
    blocks = data["blocks"]
    blocks["g0"] = {"type": "stack", "in": [f"{m}_utt" for m in EMT_MODALITIES]}  # G⁰ = [h_l; h_a; h_v]
    inner = {}
    if modalities:
        inner.update({f"{d}_{m}": {"share": f"{d}_text"} for d in ("to", "from") for m in EMT_MODALITIES[1:]})
    if directions:
        inner.update({f"from_{m}": {"share": "to_text" if modalities else f"to_{m}"} for m in EMT_MODALITIES})
    previous = {**{m: f"{m}_proj" for m in EMT_MODALITIES}, "context": "g0"}
    for i in range(1, EMT_LAYERS + 1):
        use = {"type": "emt_layer", "in": previous, "dim": EMT_D, "heads": 2, "ffn_expansion": 2, "ffn": ffn, "pooling": pooling, **copy.deepcopy(inner)}
        if layers and i > 1:
            use["share"] = "layer1"
        blocks[f"layer{i}"] = use
        previous = {port: f"layer{i}.{port}" for port in previous}
    blocks["head"] = {"type": "linear", "in": f"layer{EMT_LAYERS}", "out": 1}
    return data


def _emt_rename(emt) -> Callable[[str], str | None]:
    """The built-in's ``emt.units.<k>`` / ``emt.pools.<k>`` -> the owning template block's module."""
    units, pools = {}, {}
    for layer in range(EMT_LAYERS):  # the first use of a unit (layer, modality, direction order) owns it
        for m, name in enumerate(EMT_MODALITIES):
            for direction, prefix in enumerate(("to", "from")):
                units.setdefault(emt.grid[layer][m][direction], f"layer{layer + 1}.{prefix}_{name}.unit")
        pools.setdefault(emt.pool_grid[layer][0], f"layer{layer + 1}.pool")

    def rename(name: str) -> str | None:
        match = re.match(r"emt\.(units|pools)\.(\d+)\.(.*)", name)
        if match is None:
            return name
        kind, index, rest = match.groups()
        if kind == "units":
            return f"{units[int(index)]}.{rest}"
        pool = pools[int(index)]
        if emt.config.pooling == "mlp":
            return f"{pool}.merge.linear.weight" if rest == "merge.weight" else f"{pool}.merge.linear.bias"
        if rest == "score.2.bias":
            return None  # a constant added to every candidate's score: the softmax cancels it
        return f"{pool}.weigh.{rest}"

    return rename


@pytest.mark.parametrize("pooling,ffn", [("avg", "relu"), ("mlp", "geglu"), ("attention", "relu")])
@pytest.mark.parametrize("sharing", SHARING, ids=lambda s: "share_" + ("".join("dml"[i] for i, on in enumerate(s) if on) or "none"))
def test_emt_layer_template_equals_the_builtin_emt_block(pooling, ffn, sharing):
    directions, modalities, layers = sharing
    flags = {"share_directions": directions, "share_modalities": modalities, "share_layers": layers}
    builtin = compile_blueprint(load_blueprint(_emt_blueprint({"pooling": pooling, "ffn": ffn, **flags}))).eval()
    templated = compile_blueprint(load_blueprint(_emt_templated(pooling, ffn, *sharing))).eval()
    emt = builtin.block("emt")
    redundant = len(emt.pools) if pooling == "attention" else 0  # the score bias of each attention pool
    assert templated.parameter_summary()["model"] == builtin.parameter_summary()["model"] - redundant
    rename = _emt_rename(emt)
    if pooling == "attention":
        with torch.no_grad():  # the dropped biases are arbitrary: non-zero, to show they do not matter
            for pool in emt.pools:
                pool.score[2].bias.fill_(0.7)
    copy_weights(builtin, templated, rename)
    batch = padded_batch(builtin, 4)
    last = f"layer{EMT_LAYERS}"
    pairs = [("head", "head"), ("emt.global", f"{last}/pool/" + {"mlp": "merge", "avg": "mean", "attention": "weigh"}[pooling])]
    pairs += [(f"emt.{m}", f"{last}/to_{m}") for m in EMT_MODALITIES]
    assert assert_same_outputs(builtin, templated, batch, pairs) < ATOL
