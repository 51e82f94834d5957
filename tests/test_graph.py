"""Graph compilation: naming, ports, sharing, pass-through, persistence, round-trips."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

import composer
from composer.errors import BlueprintError, ComposerError, DataError

BASE = """
blueprint: 1
name: toy
modalities:
  text:  {features: 6, length: 7}
  audio: {features: 3, length: 9}
blocks:
{blocks}
losses:
  - {type: l1, pred: head}
"""


def fill(blocks: str) -> str:
    return BASE.replace("{blocks}", blocks)


def load(blocks: str, overrides=()):
    return composer.load_blueprint(fill(blocks), list(overrides))


LATE = """
  text_enc:  {type: lstm, in: text, hidden: 4, output: both}
  audio_enc: {type: lstm, in: audio, hidden: 4, output: last}
  fusion:    {type: concat, in: [text_enc.last, audio_enc]}
  head:      {type: mlp, in: fusion, hidden: [5], out: 1}
"""


def test_parameter_names_start_with_block_ids():
    model = composer.compile_blueprint(load(LATE))
    prefixes = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert prefixes == {"text_enc", "audio_enc", "head"}


def test_forward_returns_prediction_values_and_aux_losses():
    model = composer.compile_blueprint(load(LATE))
    out = model(model.example_inputs(3))
    assert out["prediction"].shape == (3, 1)
    assert out["values"]["text_enc.seq"].shape == (3, 7, 4)
    assert out["aux_losses"] == {}


def test_inferred_specs_match_real_shapes_for_every_value():
    model = composer.compile_blueprint(load(LATE))
    out = model(model.example_inputs(2))
    sizes = {"B": 2, "T_text": 7, "T_audio": 9}
    for key, spec in model.plan.values.items():
        assert spec.matches(tuple(out["values"][key].shape), sizes), key


def test_share_reuses_the_same_module_and_counts_once():
    blocks = """
  text_proj:  {type: mlp, in: text, out: 3}
  text_enc:   {type: lstm, in: text_proj, hidden: 4, output: last}
  audio_enc:  {type: lstm, in: audio, share: text_enc}
  fusion:     {type: concat, in: [text_enc, audio_enc]}
  head:       {type: mlp, in: fusion, out: 1}
"""
    model = composer.compile_blueprint(load(blocks))
    assert "audio_enc" not in dict(model.named_children())
    n_single = sum(p.numel() for p in model.text_enc.parameters())
    assert model.parameter_counts()["audio_enc"] == 0
    total = sum(p.numel() for p in model.parameters())
    assert total == n_single + sum(p.numel() for p in model.text_proj.parameters()) + sum(p.numel() for p in model.head.parameters())
    out = model(model.example_inputs(2))
    assert out["values"]["audio_enc"].shape == (2, 4)


def test_share_with_different_settings_is_refused():
    blocks = """
  text_enc:   {type: lstm, in: text, hidden: 4, output: last}
  text_enc2:  {type: lstm, in: text, hidden: 5, output: last, share: text_enc}
  fusion:     {type: concat, in: [text_enc, text_enc2]}
  head:       {type: mlp, in: fusion, out: 1}
  audio_head: {type: mlp, in: audio, out: 1}
"""
    with pytest.raises(BlueprintError, match="settings differ"):
        composer.load_blueprint(fill(blocks) + "outputs: {prediction: head}\n")


def test_disabled_block_passes_its_input_through():
    blocks = """
  text_enc: {type: lstm, in: text, hidden: 4, output: last}
  refine:   {type: mlp, in: text_enc, hidden: [8], out: 4, enabled: false}
  head:     {type: mlp, in: refine, out: 1}
"""
    model = composer.compile_blueprint(load(blocks))
    out = model(model.example_inputs(2))
    assert torch.equal(out["values"]["refine"], out["values"]["text_enc"])
    enabled = composer.compile_blueprint(load(blocks, ["blocks.refine.enabled=true"]))
    assert sum(p.numel() for p in enabled.parameters()) > 0
    assert not torch.equal(*(enabled(enabled.example_inputs(2))["values"][k] for k in ("refine", "text_enc")))


def test_unused_block_is_a_warning_not_an_error():
    bp = load(LATE + "  spare: {type: mlp, in: text, out: 2}\n")
    assert any("spare" in w.message and w.severity == "warning" for w in bp.plan.warnings)


def test_explicit_outputs_select_the_prediction():
    bp = composer.load_blueprint(fill(LATE) + "outputs: {prediction: head, fused: fusion}\n")
    model = composer.compile_blueprint(bp)
    out = model(model.example_inputs(2))
    assert out["fused"].shape == (2, 8)


def test_padding_does_not_change_valid_outputs():
    model = composer.compile_blueprint(load(LATE)).eval()
    batch = model.example_inputs(2)
    batch["text_lengths"] = torch.tensor([7, 4])
    before = model(batch)["prediction"]
    batch["text"][1, 4:] = 1e3
    after = model(batch)["prediction"]
    assert torch.allclose(before, after)


def test_blueprint_yaml_round_trip_is_lossless():
    bp = composer.load_blueprint("blueprints/late_fusion.yaml")
    again = composer.load_blueprint(composer.dump_blueprint(bp))
    assert again.model_dump() == bp.model_dump()


def test_save_and_load_restore_weights_and_blueprint(tmp_path):
    model = composer.compile_blueprint(composer.load_blueprint("blueprints/late_fusion.yaml")).eval()
    path = model.save(tmp_path / "m.safetensors")
    loaded = composer.load_model(path).eval()
    batch = model.example_inputs(2)
    assert torch.equal(model(batch)["prediction"], loaded(batch)["prediction"])
    assert loaded.blueprint.model_dump() == model.blueprint.model_dump()


def test_loading_a_foreign_file_is_a_data_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(DataError, match="holds no blueprint"):
        composer.load_model(tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataError):
        composer.load_model(tmp_path / "junk.safetensors")


def test_duplicate_block_type_names_are_refused():
    from typing import Literal

    class Dup(composer.BlockConfig):
        type: Literal["lstm"] = "lstm"

    with pytest.raises(ComposerError, match="already registered"):
        composer.register_block(Dup)(type("DupBlock", (composer.Block,), {}))


def test_user_block_from_python_and_plugins_only_on_opt_in(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    text = fill("""
  text_enc: {type: lstm, in: text, hidden: 4, output: last}
  scaled:   {type: toy_scale, in: text_enc, factor: 3.0}
  head:     {type: mlp, in: scaled, out: 1}
""") + "plugins: [toy_plugin]\n"
    if "toy_plugin" not in sys.modules:
        with pytest.raises(BlueprintError, match="unknown block type 'toy_scale'"):
            composer.load_blueprint(text)
    bp = composer.load_blueprint(text, allow_plugins=True)
    model = composer.compile_blueprint(bp)
    out = model(model.example_inputs(2))
    assert torch.allclose(out["values"]["scaled"], 3.0 * out["values"]["text_enc"])


def test_loss_combines_weighted_terms():
    bp = composer.load_blueprint(fill(LATE).replace("{type: l1, pred: head}", "{type: l1, pred: head, weight: 0.5}") + "  - {type: mse, pred: head, name: sq}\n")
    model = composer.compile_blueprint(bp)
    batch = model.example_inputs(4)
    out = model(batch)
    total, parts = model.compute_loss({"main": out}, {"main": batch})
    assert set(parts) == {"l1_0", "sq"}
    assert torch.allclose(total, 0.5 * parts["l1_0"] + parts["sq"])


def test_checked_in_json_schema_is_current():
    import subprocess

    # a fresh process: blocks registered by other tests (plugins) must not leak into the schema
    fresh = subprocess.run([sys.executable, "-m", "composer", "schema"], capture_output=True, text=True, check=True).stdout
    path = Path(__file__).parents[1] / "docs" / "blueprint.schema.json"
    assert path.read_text() == fresh, "run: composer schema -o docs/blueprint.schema.json"


def test_shipped_blueprints_point_editors_at_the_schema():
    for path in Path("blueprints").rglob("*.yaml"):
        assert path.read_text().startswith("# yaml-language-server: $schema="), path
