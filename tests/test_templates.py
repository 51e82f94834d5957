"""Templates: named, parameterised sub-graphs used like blocks, imported from files, nested,
shared, reached by --set and search, rendered collapsed or expanded; and a paper operator
(HCT-MG's hierarchy) rebuilt from primitives equal to the built-in block."""

from pathlib import Path

import pytest
import torch
import yaml

from composer import compile_blueprint, dump_blueprint, load_blueprint
from composer.errors import BlueprintError
from composer.render import render
from composer.search.study import apply_sample

ROOT = Path(__file__).resolve().parents[1]
HCT_TEMPLATE = ROOT / "examples" / "templates" / "hct_mg_text_primary.yaml"

ENCODE = {
    "params": {"width": None, "dropout": 0.1},
    "inputs": ["x"],
    "blocks": {
        "rnn": {"type": "lstm", "in": "x", "hidden": "${width}"},
        "drop": {"type": "dropout", "in": "rnn", "p": "${dropout}"},
        "last": {"type": "pool", "in": "drop", "mode": "last"},
    },
    "outputs": {"out": "last", "seq": "drop"},
}


def blueprint(**extra):
    data = {
        "blueprint": 1,
        "name": "tpl",
        "modalities": {"text": {"features": 6, "length": 5}, "audio": {"features": 3, "length": 7}},
        "vars": {"d": 8},
        "templates": {"encode": ENCODE},
        "blocks": {
            "t": {"type": "encode", "in": "text", "width": "${d}"},
            "a": {"type": "encode", "in": "audio", "width": "${d}", "rnn": {"layers": 2}},
            "fusion": {"type": "concat", "in": ["t", "a"]},
            "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
        },
        "losses": [{"type": "l1", "pred": "head"}],
    }
    for key, value in extra.items():
        data[key] = value
    return data


def flat_blueprint():
    """The same model written without templates."""
    data = blueprint()
    del data["templates"]
    data["blocks"] = {
        "t_rnn": {"type": "lstm", "in": "text", "hidden": 8},
        "t_drop": {"type": "dropout", "in": "t_rnn", "p": 0.1},
        "t_last": {"type": "pool", "in": "t_drop", "mode": "last"},
        "a_rnn": {"type": "lstm", "in": "audio", "hidden": 8, "layers": 2},
        "a_drop": {"type": "dropout", "in": "a_rnn", "p": 0.1},
        "a_last": {"type": "pool", "in": "a_drop", "mode": "last"},
        "fusion": {"type": "concat", "in": ["t_last", "a_last"]},
        "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
    }
    return data


def messages(data, overrides=()):
    with pytest.raises(BlueprintError) as info:
        load_blueprint(data, overrides)
    return [str(p) for p in info.value.problems]


# -- expansion ------------------------------------------------------------------------------
def test_a_use_expands_into_nested_blocks_whose_parameters_read_like_the_nesting():
    bp = load_blueprint(blueprint())
    assert list(bp.blocks) == ["t/rnn", "t/drop", "t/last", "a/rnn", "a/drop", "a/last", "fusion", "head"]
    assert bp.blocks["a/rnn"].layers == 2 and bp.blocks["t/drop"].p == 0.1
    model = compile_blueprint(bp)
    names = [n for n, _ in model.named_parameters()]
    assert "t.rnn.rnn.weight_ih_l0" in names and "a.rnn.rnn.weight_hh_l1" in names
    assert model.plan.values["fusion"].features == 16  # inferred through both uses
    assert model(model.example_inputs(3))["prediction"].shape == (3, 1)


def test_a_template_model_equals_the_same_model_written_flat():
    templated = compile_blueprint(load_blueprint(blueprint())).eval()
    flat = compile_blueprint(load_blueprint(flat_blueprint())).eval()
    assert templated.parameter_summary() == flat.parameter_summary()
    state = {k.replace("t.rnn.", "t_rnn.").replace("a.rnn.", "a_rnn."): v for k, v in templated.state_dict().items()}
    flat.load_state_dict(state, strict=True)
    batch = templated.example_inputs(4)
    assert torch.equal(templated(batch)["prediction"], flat(batch)["prediction"])


def test_outputs_and_losses_reach_a_use_by_its_ports():
    data = blueprint(outputs={"prediction": "head", "text_steps": "t.seq"})
    data["losses"].append({"type": "mse", "pred": "t", "target": "a", "weight": 0.1})
    bp = load_blueprint(data)
    assert bp.outputs["text_steps"] == "t/drop"
    assert bp.losses[1].pred == "t/last" and bp.losses[1].target == "a/last"
    out = compile_blueprint(bp)(compile_blueprint(bp).example_inputs(2))
    assert out["text_steps"].shape[-1] == 8


def test_templates_nest_and_a_use_can_share_the_weights_of_another():
    outer = {
        "params": {"width": 4},
        "inputs": ["x"],
        "blocks": {"enc": {"type": "encode", "in": "x", "width": "${width}"}, "proj": {"type": "linear", "in": "enc", "out": 3}},
        "outputs": {"out": "proj", "steps": "enc.seq"},
    }
    data = blueprint(templates={"encode": ENCODE, "encoder_stack": outer})
    data["modalities"]["audio"]["features"] = 6
    data["blocks"] = {
        "t": {"type": "encoder_stack", "in": "text", "width": 5, "enc": {"rnn": {"layers": 2}}},
        "a": {"type": "encoder_stack", "in": "audio", "width": 5, "enc": {"rnn": {"layers": 2}}, "share": "t"},
        "fusion": {"type": "concat", "in": ["t", "a", "t.steps"]},
        "head": {"type": "mlp", "in": "fusion", "out": 1},
    }
    with pytest.raises(BlueprintError):  # t.steps is a sequence: concat of vectors and a sequence fails
        load_blueprint(data)
    data["blocks"]["fusion"]["in"] = ["t", "a"]
    bp = load_blueprint(data)
    assert "t/enc/rnn" in bp.blocks and bp.blocks["a/enc/rnn"].share == "t/enc/rnn" and bp.blocks["a/proj"].share == "t/proj"
    model = compile_blueprint(bp)
    names = [n for n, _ in model.named_parameters()]
    assert "t.enc.rnn.rnn.weight_hh_l1" in names and not any(n.startswith("a.") for n in model.state_dict())
    solo = compile_blueprint(load_blueprint({**data, "blocks": {**data["blocks"], "a": {k: v for k, v in data["blocks"]["a"].items() if k != "share"}}}))
    assert model.parameter_summary()["model"] < solo.parameter_summary()["model"]
    model(model.example_inputs(2))["prediction"].sum().backward()


# -- --set, search, dump ------------------------------------------------------------------------
def test_set_reaches_parameters_and_inner_blocks_also_of_a_saved_expanded_blueprint():
    bp = load_blueprint(blueprint(), ["blocks.t.width=12", "blocks.t.rnn.layers=3", "blocks.a.dropout=0.3"])
    assert bp.blocks["t/rnn"].hidden == 12 and bp.blocks["t/rnn"].layers == 3 and bp.blocks["a/drop"].p == 0.3
    saved = dump_blueprint(bp)
    assert yaml.safe_load(saved)["blocks"]["t"]["type"] == "encode"  # saved as written: the uses stay uses
    again = load_blueprint(saved)
    assert again.to_data() == bp.to_data()
    assert load_blueprint(saved, ["blocks.t.rnn.layers=1"]).blocks["t/rnn"].layers == 1
    searched = load_blueprint(blueprint(search={"space": {"blocks.t.width": {"choice": [4, 8]}}}))
    assert load_blueprint(dump_blueprint(searched)).search.space  # a search over a parameter survives saving


def test_search_space_paths_into_uses_are_checked_and_applied():
    space = {"blocks.t.width": {"choice": [4, 8]}, "blocks.a.rnn.layers": {"int": [1, 3]}}
    bp = load_blueprint(blueprint(search={"space": space}))
    sampled = load_blueprint(apply_sample(blueprint(search={"space": space}), {"blocks.t.width": 4, "blocks.a.rnn.layers": 3}))
    assert sampled.blocks["t/rnn"].hidden == 4 and sampled.blocks["a/rnn"].layers == 3 and bp.search is not None
    bad = messages(blueprint(search={"space": {"blocks.t.rnn.hiden": {"choice": [4]}}}))
    assert any("blocks.t.rnn.hiden" in m and "hidden" in m for m in bad)


# -- errors -----------------------------------------------------------------------------------
def test_mistakes_in_a_use_are_reported_together_with_suggestions():
    data = blueprint()
    data["blocks"]["t"] = {"type": "encode", "in": "text", "widht": 8}
    data["blocks"]["a"]["rnnn"] = {"layers": 2}
    data["blocks"]["a"]["dropout"] = "high"
    data["blocks"]["fusion"]["in"] = ["t", "a.sequence"]
    found = messages(data)
    assert any("'widht'" in m and "did you mean 'width'" in m for m in found)
    assert any("needs the parameter 'width'" in m for m in found)
    assert any("'rnnn'" in m and "did you mean 'rnn'" in m for m in found)
    assert any("parameter 'dropout'" in m and "number" in m for m in found)
    assert any("no output 'sequence'" in m for m in found)


def test_mistakes_inside_a_template_are_reported_at_the_template():
    bad = dict(ENCODE, blocks={**ENCODE["blocks"], "rnn": {"type": "lstm", "in": "xs", "hidden": "${width}"}})
    assert any("unknown reference 'xs' inside a template" in m and "did you mean 'x'" in m for m in messages(blueprint(templates={"encode": bad})))
    loops = {"params": {}, "inputs": ["x"], "blocks": {"me": {"type": "loop", "in": "x"}}, "outputs": {"out": "me"}}
    data = blueprint(templates={"encode": ENCODE, "loop": loops})
    data["blocks"]["extra"] = {"type": "loop", "in": "text"}
    assert any("uses itself" in m for m in messages(data))
    assert any("name of a built-in block type" in m for m in messages(blueprint(templates={"lstm": ENCODE})))
    clash = dict(ENCODE, params={"width": None, "rnn": 1})
    assert any("'rnn' is both" in m for m in messages(blueprint(templates={"encode": clash})))


def test_a_use_sharing_with_a_use_whose_blocks_share_inside_shares_with_the_final_owner():
    pair = {"inputs": ["x"], "blocks": {"a": {"type": "linear", "in": "x", "out": 4}, "b": {"type": "linear", "in": "a", "out": 4, "share": "a"}},
            "outputs": {"out": "b"}}
    data = blueprint(templates={"pair": pair})
    data["modalities"] = {"x": {"kind": "vector", "features": 4}}
    data["blocks"] = {"one": {"type": "pair", "in": "x"}, "two": {"type": "pair", "in": "one", "share": "one"},
                      "head": {"type": "linear", "in": "two", "out": 1}}
    bp = load_blueprint(data)
    assert bp.blocks["one/b"].share == "one/a" and bp.blocks["two/a"].share == "one/a" and bp.blocks["two/b"].share == "one/a"
    data["blocks"]["two"] = {"type": "pair", "in": "one", "a": {"share": "one/a"}}  # an override may name any block
    assert load_blueprint(data).blocks["two/a"].share == "one/a"


def test_imports_read_template_files_and_locate_their_problems(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "more.yaml").write_text(yaml.safe_dump({"templates": {"encode": ENCODE}}))
    (lib / "index.yaml").write_text("imports: [more.yaml]\ntemplates: {}\n")
    data = blueprint(imports=["lib/index.yaml"])
    del data["templates"]
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert "t/rnn" in load_blueprint(path).blocks  # nested import, relative to each importing file

    broken = dict(ENCODE, blocks={**ENCODE["blocks"], "rnn": {"type": "lstm", "in": "x", "hiden": 3}})
    (lib / "more.yaml").write_text(yaml.safe_dump({"templates": {"encode": broken}}))
    found = messages(path)
    assert found and all(str(lib / "more.yaml") in m for m in found if "hiden" in m) and any("hiden" in m for m in found)

    (lib / "index.yaml").write_text("imports: [index.yaml]\ntemplates: {}\n")
    assert any("import cycle" in m for m in messages(path))
    (lib / "index.yaml").write_text("blueprint: 1\ntemplates: {}\n")
    assert any("not a template file" in m for m in messages(path))
    data["imports"] = ["lib/evil.py"]
    path.write_text(yaml.safe_dump(data))
    assert any("path of a .yaml file" in m for m in messages(path))


# -- render -----------------------------------------------------------------------------------
def test_render_draws_uses_framed_or_collapsed():
    expanded = render(blueprint(), params=False).source
    assert "cluster_use_t" in expanded and "template encode" in expanded and "t/rnn" in expanded
    collapsed = render(blueprint(), params=False, templates="collapsed").source
    assert "t/rnn" not in collapsed and "template encode" in collapsed and "b__t -> b__fusion" in collapsed


# -- a paper operator as a template ------------------------------------------------------------------
def _copy_roles(builtin, templated):
    """Copy the built-in HCT-MG model's weights into the template model (same sub-modules by role)."""
    templated.load_state_dict({k: v for k, v in builtin.state_dict().items() if not k.startswith("fusion.")}, strict=False)
    fusion = builtin.block("fusion")
    for role in ("cmt_a1", "cmt_a2", "cmt_p1", "cmt_p2", "self_attention", "w1", "w2"):
        source = getattr(fusion, role).state_dict()
        target = next(m for _, m in templated.block(f"fusion/{role}").named_modules()
                      if {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in source.items()})
        target.load_state_dict(source)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_hct_hierarchy_template_equals_the_builtin_block_with_a_fixed_primary(pool):
    tiny = ["modalities.text.length=6", "modalities.audio.length=9", "modalities.vision.length=7", "vars.d=10",
            "blocks.fusion.heads=2", f"blocks.fusion.pool={pool}"]
    templated = compile_blueprint(load_blueprint(HCT_TEMPLATE, tiny)).eval()
    builtin_sets = [s.replace("vars.d=10", "blocks.text_enc.hidden=10") for s in tiny] + [
        "blocks.audio_enc.hidden=10", "blocks.vision_enc.hidden=10", "blocks.fusion.primary=text", "blocks.fusion.sa_layers=3"]
    builtin = compile_blueprint(load_blueprint(ROOT / "blueprints" / "hct_mg.yaml", builtin_sets)).eval()
    assert templated.parameter_summary() == builtin.parameter_summary()
    _copy_roles(builtin, templated)
    batch = builtin.example_inputs(4)  # unequal lengths: padding on every modality
    with torch.no_grad():
        assert torch.allclose(templated(batch)["prediction"], builtin(batch)["prediction"], atol=1e-5)
