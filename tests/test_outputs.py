"""Several outputs: every named output of the prediction's shape gets the task's metrics
(``<output>/<metric>``) in logs and the summary; monitor and search objectives may name them."""

from __future__ import annotations

import json

import pytest

import composer
from composer.errors import BlueprintError
from tests.shipped import ROOT

SELF_MM = ROOT / "examples/objectives/self_mm.yaml"
TINY = ["vars.train_samples=16", "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8",
        "modalities.text.length=6", "modalities.audio.length=6", "modalities.vision.length=6"]
HEADS = ["outputs={prediction: head, text: head_text, audio: head_audio, vision: head_vision}"]


def test_each_output_of_the_predictions_shape_is_scored():
    bp = composer.load_blueprint(SELF_MM, TINY + HEADS + ["+outputs.features=f_fusion"])
    assert bp.plan.scored_outputs == ["prediction", "text", "audio", "vision"]  # features (B, 32) is carried, not scored


def test_output_metrics_reach_the_logs_the_summary_and_the_monitor(tmp_path):
    result = composer.train(SELF_MM, out=tmp_path / "run", progress=False,
                            overrides=TINY + HEADS + ["training.epochs=2", "training.monitor={metric: text/mae}"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["split"] == "valid"]
    assert all({"mae", "text/mae", "audio/corr", "vision/acc7"} <= set(r) for r in valid)
    assert result.summary["monitor"]["metric"] == "text/mae"
    assert result.summary["best"]["valid"]["text/mae"] == min(r["text/mae"] for r in valid)


def test_an_unknown_output_metric_is_refused_with_a_suggestion():
    with pytest.raises(BlueprintError, match="unknown metric 'txt/mae'") as info:
        composer.load_blueprint(SELF_MM, TINY + HEADS + ["training.monitor.metric=txt/mae"])
    assert any(p.suggestion == "text/mae" for p in info.value.problems)
