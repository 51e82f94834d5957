"""The command line: exit codes, messages without tracebacks, tables and files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from composer.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "invalid"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok_exits_zero(capsys):
    code, out, _ = run(capsys, "validate", "blueprints/late_fusion.yaml")
    assert code == 0 and "ok" in out


def test_validate_misspelled_reference_prints_location_and_suggestion(capsys):
    path = str(FIXTURES / "misspelled_reference.yaml")
    code, out, err = run(capsys, "validate", path)
    assert code == 1
    assert f"{path}:9: blocks.fusion.in[1]: unknown reference 'audo_enc'" in err
    assert "did you mean 'audio_enc'?" in err
    assert "Traceback" not in err + out


def test_validate_reports_each_file_and_fails_if_any_fails(capsys):
    code, out, err = run(capsys, "validate", "blueprints/late_fusion.yaml", str(FIXTURES / "cycle.yaml"))
    assert code == 1 and "ok" in out and "cycle" in err


def test_validate_applies_overrides(capsys):
    code, _, err = run(capsys, "validate", "blueprints/late_fusion.yaml", "--set", "blocks.head.out=0")
    assert code == 1 and "blocks.head.out" in err


def test_build_prints_per_block_table_with_shapes_and_params(capsys, tmp_path):
    code, out, _ = run(capsys, "build", "blueprints/late_fusion.yaml", "--json", str(tmp_path / "b.json"))
    assert code == 0
    for text in ("text_enc", "lstm", "sequence[B, T_text, 300]", "vector[B, 64]", "93,696", "total parameters: 109,377"):
        assert text in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["total_params"] == 109377 and data["blocks"][0]["id"] == "text_enc"


def test_build_with_override_changes_the_model(capsys):
    code, out, _ = run(capsys, "build", "blueprints/late_fusion.yaml", "--set", "blocks.head.hidden=[8]")
    assert code == 0 and "vector[B, 8]" not in out  # head's output stays 1-wide
    assert "total parameters: 109,377" not in out


def test_missing_file_is_exit_one_without_traceback(capsys):
    code, out, err = run(capsys, "build", "nope.yaml")
    assert code == 1 and "not found" in err and "Traceback" not in err


def test_usage_error_exits_two(capsys):
    code, _, err = run(capsys, "build")
    assert code == 2 and "Missing argument" in err


def test_blocks_lists_registry_and_details(capsys):
    code, out, _ = run(capsys, "blocks")
    assert code == 0 and "lstm" in out and "concat" in out and "l1" in out
    code, out, _ = run(capsys, "blocks", "lstm", "--details")
    assert code == 0 and "hidden" in out and "Hidden width per direction" in out
    code, _, err = run(capsys, "blocks", "no_such_block*")
    assert code == 1 and "no block type matches" in err


def test_schema_is_json_with_block_union(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and "blocks" in schema["properties"]
    assert "LSTMConfig" in schema["$defs"]


def test_every_command_has_help_with_an_example(capsys):
    from composer.cli import app

    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert "Example:" in (command.help or ""), name


def test_console_script_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "composer", "validate", "blueprints/late_fusion.yaml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["validate", "build", "render", "bench", "train", "search", "reproduce", "robustness", "import-weights"])
def test_every_blueprint_command_with_set_also_takes_dataset_and_plugins(name):
    """``--dataset`` and ``--allow-plugins`` are added to the commands that read a blueprint file,
    whichever way their ``--set`` is declared (a default ``typer.Option`` or shared ``Annotated``)."""
    import typer.main

    from composer.cli import app

    command = typer.main.get_command(app).commands[name]
    flags = {flag for param in command.params for flag in param.opts}
    assert {"--set", "--dataset", "--allow-plugins"} <= flags, sorted(flags)
