"""Invalid blueprints report every problem with file:line, YAML path and suggestion."""

from pathlib import Path

import pytest

import composer
from composer.errors import BlueprintError

FIXTURES = Path(__file__).parent / "fixtures" / "invalid"
CASES = sorted(p.stem for p in FIXTURES.glob("*.yaml"))


def errors_of(path: Path) -> list[str]:
    with pytest.raises(BlueprintError) as info:
        composer.load_blueprint(path)
    return [str(p) for p in info.value.problems if p.severity == "error"]


@pytest.mark.parametrize("case", CASES)
def test_invalid_blueprint_reports_expected_problems(case):
    path = FIXTURES / f"{case}.yaml"
    expected = (FIXTURES / f"{case}.expected").read_text().replace("{file}", str(path)).strip().splitlines()
    assert errors_of(path) == expected


def test_every_fixture_has_expectations():
    assert all((FIXTURES / f"{c}.expected").exists() for c in CASES)


def test_blueprint_error_is_a_composer_error():
    assert issubclass(BlueprintError, composer.ComposerError)


def test_unknown_reference_suggestion_names_the_close_block():
    problems = errors_of(FIXTURES / "misspelled_reference.yaml")
    assert "did you mean 'audio_enc'" in problems[0]


def test_override_of_a_missing_place_is_reported_with_suggestion(tmp_path):
    with pytest.raises(BlueprintError) as info:
        composer.load_blueprint("blueprints/late_fusion.yaml", ["blocks.haed.out=2"])
    (problem,) = info.value.problems
    assert problem.file == "--set" and problem.suggestion == "head"


def test_override_value_is_validated():
    with pytest.raises(BlueprintError) as info:
        composer.load_blueprint("blueprints/late_fusion.yaml", ["blocks.head.out=zero"])
    assert "blocks.head.out" in str(info.value)


def test_not_a_mapping_is_a_clear_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(BlueprintError, match="a blueprint is a YAML mapping"):
        composer.load_blueprint(path)


def test_missing_file_is_a_composer_error():
    with pytest.raises(composer.ComposerError, match="not found"):
        composer.load_blueprint("no/such/blueprint.yaml")


def test_an_unknown_type_of_a_blueprint_with_plugins_says_how_to_import_them():
    data = {"blueprint": 1, "name": "p", "plugins": ["film"], "modalities": {"a": {"features": 3, "length": 4}},
            "blocks": {"f": {"type": "film", "in": "a"}}}
    with pytest.raises(BlueprintError, match="plugins \\(film\\) registers it, pass --allow-plugins"):
        composer.load_blueprint(data)


def _module_attributes() -> set[str]:
    """Every non-dunder attribute of a compiled model and of a template's module, but its blocks."""
    import transformers

    # building a transformers model adds `smart_apply` to every torch module (transformers 5)
    transformers.BertModel(transformers.BertConfig(vocab_size=8, hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4))
    from composer.graph.model import TemplateModules

    model = composer.compile_blueprint(composer.load_blueprint(Path(__file__).parents[1] / "blueprints/late_fusion.yaml"))
    names = (set(dir(model)) | set(dir(TemplateModules()))) - set(model._modules) - set(model._parameters) - set(model._buffers)
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


def test_the_torch_free_list_holds_every_public_attribute_of_the_compiled_module():
    from composer.blueprint.schema import MODULE_ATTRIBUTES

    public = {n for n in _module_attributes() if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, f"add to MODULE_ATTRIBUTES: {sorted(public - MODULE_ATTRIBUTES)}"


@pytest.mark.parametrize("name", ["train", "to", "state_dict", "parameters", "_modules", "compute_loss", "size"])
def test_a_block_named_like_a_module_attribute_is_refused_by_validate_not_by_the_build(name):
    """``validate`` said ok to a block named ``train`` and building the model raised KeyError."""
    text = (
        "blueprint: 1\nname: t\ntask: {kind: regression, outputs: 1}\nmodalities: {x: {kind: vector, features: 4}}\n"
        f"blocks:\n  {name}: {{type: mlp, in: x, hidden: [4], out: 4}}\n  head: {{type: mlp, in: {name}, hidden: [4], out: 1}}\n"
        "losses: [{type: l1, pred: head}]\n"
    )
    with pytest.raises(BlueprintError, match=f"'{name}' cannot name a block"):
        composer.load_blueprint(text)


def test_a_template_block_named_like_a_module_attribute_is_refused():
    text = (
        "blueprint: 1\nname: t\ntask: {kind: regression, outputs: 1}\nmodalities: {x: {kind: vector, features: 4}}\n"
        "templates:\n  pair:\n    inputs: [x]\n    blocks:\n      forward: {type: mlp, in: x, hidden: [4], out: 4}\n"
        "    outputs: {out: forward}\n"
        "blocks:\n  p: {type: pair, in: {x: x}}\n  head: {type: mlp, in: p, hidden: [4], out: 1}\n"
        "losses: [{type: l1, pred: head}]\n"
    )
    with pytest.raises(BlueprintError, match="'forward' cannot name a block"):
        composer.load_blueprint(text)
