"""Missing-modality conditions the field reports: a modality dropped at test time, the seven
conditions of the literature's tables, and missing-rate sweeps restricted to some modalities."""

from __future__ import annotations

import json

import pytest
import torch

import composer
from composer.cli import main
from composer.train.views import drop_modalities, modality_conditions
from tests.shipped import ROOT

TINY = ["training.epochs=1", "training.batch_size=8", "training.data.samples={train: 16, valid: 8, test: 8}",
        "modalities.text.length=6", "modalities.audio.length=6", "modalities.vision.length=6"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "late"
    composer.train(ROOT / "blueprints/late_fusion.yaml", out=out, overrides=TINY, progress=False)
    return out


def test_the_seven_conditions_of_three_modalities():
    assert modality_conditions(["text", "audio", "vision"]) == [
        ("text", "audio", "vision"), ("text",), ("audio",), ("vision",), ("text", "audio"), ("text", "vision"), ("audio", "vision")]


def test_a_dropped_modality_is_zeroed_and_the_others_are_untouched():
    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", TINY)
    batch = composer.compile_blueprint(bp).example_inputs(4)
    out = drop_modalities(batch, bp, ["audio"])
    valid = torch.arange(6)[None, :] < batch["audio_lengths"][:, None]  # padding is never read: only valid steps matter
    assert (out["audio"][valid] == 0).all() and (batch["audio"][valid] != 0).any()
    assert torch.equal(out["text"], batch["text"]) and torch.equal(out["audio_lengths"], batch["audio_lengths"])


def test_evaluate_reports_every_condition_and_the_complete_one_equals_the_clean_score(run, capsys):
    result = composer.evaluate(run, conditions="all", progress=False)
    assert list(result.conditions) == modality_conditions(["text", "audio", "vision"])
    assert result.conditions[("text", "audio", "vision")]["mae"] == pytest.approx(result.splits["test"]["mae"])
    assert result.conditions[("text",)]["mae"] != result.conditions[("audio",)]["mae"]
    saved = json.loads(result.written.read_text())
    assert [c["present"] for c in saved["conditions"]][0] == ["text", "audio", "vision"] and "conditions-test" in result.written.name


def test_drop_removes_a_modality_from_everything_scored(run):
    clean = composer.evaluate(run, progress=False, write=False)
    dropped = composer.evaluate(run, drop=["audio"], progress=False, write=False)
    assert dropped.splits["test"]["mae"] != clean.splits["test"]["mae"]
    with pytest.raises(composer.ComposerError, match="--drop: 'audoi' is not a modality .* did you mean 'audio'"):
        composer.evaluate(run, drop=["audoi"], progress=False, write=False)


def test_a_sweep_may_mask_some_modalities_only(run):
    only_audio = composer.evaluate(run, missing_rates=[0.0, 1.0], sweep_modalities=["audio"], progress=False, write=False)
    audio_dropped = composer.evaluate(run, drop=["audio"], progress=False, write=False)
    assert only_audio.sweep[1.0]["mae"] == pytest.approx(audio_dropped.splits["test"]["mae"])  # rate 1 on audio = audio absent


def test_the_command_line_takes_the_conditions(run, capsys):
    assert main(["evaluate", str(run), "--conditions", "text;text+audio", "--drop", "vision"]) == 0
    out = capsys.readouterr().out
    assert "missing-modality conditions" in out and "text + audio" in out


def test_auilc_is_printed_in_the_unit_the_protocols_and_papers_use(run, capsys):
    from composer.metric_names import in_percent, shown

    result = composer.evaluate(run, missing_rates=[0.0, 0.5, 1.0], write=False)
    out = capsys.readouterr().out
    assert in_percent("auilc_acc7") and in_percent("mean_f1_nonzero") and not in_percent("auilc_mae")
    assert shown("acc7", result.auilc["acc7"]) == f"{result.auilc['acc7'] * 100:.1f}" and shown("acc7", result.auilc["acc7"]) in out
    assert f"{result.auilc['mae']:.4f}" in out
