"""Small things a first user hit (issue: one checked blueprint, item 8)."""

from __future__ import annotations

import pytest

import composer
from composer.cli import main
from composer.errors import BlueprintError
from tests.shipped import ROOT


def test_version_is_printed(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"composer {composer.__version__}")


def test_blocks_prints_docstrings_with_brackets_as_written(capsys):
    assert main(["blocks", "gated_sum"]) == 0
    assert "[x_1; …; x_M]" in capsys.readouterr().out


def test_block_details_list_a_literal_fields_allowed_values(capsys):
    assert main(["blocks", "pool", "--details"]) == 0
    assert "'mean' | 'max' | 'last' | 'first' | 'attention'" in capsys.readouterr().out


def test_a_share_refusal_names_the_setting_that_differs():
    bp = {
        "blueprint": 1, "name": "share", "modalities": {"x": {"kind": "vector", "features": 3}, "y": {"kind": "vector", "features": 3}},
        "blocks": {"a": {"type": "mlp", "in": "x", "hidden": [4], "out": 2}, "b": {"type": "mlp", "in": "y", "hidden": [8], "out": 2, "share": "a"},
                   "sum": {"type": "sum", "in": ["a", "b"]}},
    }
    with pytest.raises(BlueprintError, match=r"settings differ in hidden \(\[4\] there, \[8\] here\)"):
        composer.load_blueprint(bp)


@pytest.mark.parametrize("path", sorted((ROOT / "blueprints/templates").glob("*.yaml")), ids=lambda p: p.stem)
def test_validate_checks_a_template_library_as_templates(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "template library" in capsys.readouterr().out


def test_a_broken_template_library_is_refused_with_its_line(tmp_path, capsys):
    lib = tmp_path / "lib.yaml"
    lib.write_text("templates:\n  t:\n    inputs: [x]\n    blocks: {a: {type: linear, in: x, out: 2}}\n    outputs: {out: a}\n    mian: out\n")
    assert main(["validate", str(lib)]) == 1
    assert f"{lib}:6: templates.t.mian" in capsys.readouterr().err


def test_validate_prints_user_text_as_written(tmp_path, capsys):
    path = tmp_path / "[bold]x[red].yaml"
    path.write_text((ROOT / "blueprints/late_fusion.yaml").read_text())
    assert main(["validate", str(path), "--set", "training.monitor.metric=[red]m"]) == 1
    err = capsys.readouterr().err
    assert "[bold]x[red].yaml" in err and "'[red]m'" in err


def test_training_prints_user_text_as_written(tmp_path, capsys):
    out = tmp_path / "[red]run[bold]"
    composer.train(ROOT / "blueprints/late_fusion.yaml", out=out, overrides=[
        "training.epochs=1", "training.batch_size=8", "training.data.samples={train: 8, valid: 4, test: 4}"])
    assert "[red]run[bold]" in capsys.readouterr().out


def test_a_forward_reference_in_vars_says_so():
    data = {"blueprint": 1, "name": "fwd", "vars": {"a": "${b * 2}", "b": 4},
            "modalities": {"x": {"kind": "vector", "features": 3}}, "blocks": {"head": {"type": "mlp", "in": "x", "out": "${a}"}}}
    with pytest.raises(BlueprintError, match="uses 'b', which is defined after it"):
        composer.load_blueprint(data)


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_an_infinite_or_nan_setting_is_refused(value):
    with pytest.raises(BlueprintError):
        composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", [f"training.lr={value}"])
    data = {"blueprint": 1, "name": "x", "modalities": {"x": {"kind": "vector", "features": 3}},
            "blocks": {"head": {"type": "mlp", "in": "x", "out": 1}}, "training": {"lr": float(value.replace(".", "").replace("inf", "inf"))}}
    with pytest.raises(BlueprintError, match="training.lr"):
        composer.load_blueprint(data)


def test_a_blueprint_whose_saved_copy_would_be_too_large_is_refused_before_it_trains(monkeypatch):
    text = (ROOT / "blueprints/late_fusion.yaml").read_text()
    monkeypatch.setenv("COMPOSER_MAX_YAML_CHARS", str(len(text) + 10))  # the file fits, its saved copy (all fields written) does not
    with pytest.raises(BlueprintError, match="the blueprint as a run saves it .* set COMPOSER_MAX_YAML_CHARS"):
        composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml")


def test_a_width_mismatch_in_data_suggests_the_setting_that_fixes_it():
    from composer.data import splits_from_arrays

    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", ["modalities.text.length=4", "modalities.audio.length=4", "modalities.vision.length=4"])
    import numpy as np

    arrays = {"text": np.zeros((3, 4, 300), "float32"), "audio": np.zeros((3, 4, 74), "float32"), "vision": np.zeros((3, 4, 20), "float32"),
              "label": np.zeros(3, "float32")}
    with pytest.raises(composer.DataError, match=r"--set modalities.audio.features=74"):
        splits_from_arrays(bp, {"train": arrays, "valid": arrays})
