"""Benchmarks and MAC counting run on compiled blueprints (numbers themselves live in docs/)."""

import json

import composer
from composer.bench import bench_model
from composer.cli import main
from composer.profiling import count_macs

SHORT = ["modalities.text.length=4", "modalities.audio.length=4", "modalities.vision.length=4"]


def test_macs_are_counted_for_a_recurrent_blueprint_with_learned_initial_state():
    model = composer.compile_blueprint(composer.load_blueprint("blueprints/rmfn.yaml", SHORT))
    batch = model.example_inputs(1)
    assert count_macs(lambda: model(batch)) > 0


def test_macs_of_a_linear_layer_follow_the_documented_convention():
    import torch

    layer = torch.nn.Linear(10, 20)
    assert count_macs(lambda: layer(torch.randn(3, 10))) == 3 * 10 * 20


def test_bench_model_reports_every_figure():
    model = composer.compile_blueprint(composer.load_blueprint("blueprints/late_fusion.yaml", SHORT))
    result = bench_model(model, batch_size=2, warmup=1, repeats=1)
    assert result.params == 109377 and result.macs > 0
    assert result.forward_ms > 0 and result.train_step_ms > 0


def test_bench_command_writes_results_with_the_machine(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "blueprints/late_fusion.yaml", "-b", "2", "--repeats", "1", "--device", "cpu", "-o", str(out), *sum((["--set", s] for s in SHORT), [])])
    data = json.loads(out.read_text())
    assert code == 0 and data["machine"]["torch"] and data["results"][0]["name"] == "late_fusion"


def test_recurrent_layers_are_counted_by_formula():
    import torch

    lstm = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 3, 5)
    per_step = 4 * (5 * 7 + 7 * 7) + 4 * (14 * 7 + 7 * 7)  # layer 1 and layer 2, one direction
    assert count_macs(lambda: lstm(x), lstm) == 2 * 2 * 3 * per_step


def test_bench_against_the_reference_reports_the_issue_fields_with_equal_outputs(tmp_path):
    import pytest
    import torch

    from composer.bench import compare_with_reference, find_reference
    from composer.errors import ComposerError

    tiny_mult = ["modalities.text.length=5", "modalities.audio.length=6", "modalities.vision.length=4"]
    for path, sets in (("blueprints/mult.yaml", tiny_mult), ("blueprints/rmfn.yaml", SHORT)):
        model = composer.compile_blueprint(composer.load_blueprint(path, sets))
        result = compare_with_reference(model, bench_model(model, batch_size=2, warmup=1, repeats=1), device=torch.device("cpu"), warmup=1, repeats=2)
        row = result.row()
        for field in ("params", "macs", "forward_ms", "train_step_ms", "samples_per_s", "peak_mem_mb", "reference_ratio"):
            assert field in row
        assert result.reference in path and result.reference_ratio > 0 and result.reference_max_diff < 1e-5
    late = composer.compile_blueprint(composer.load_blueprint("blueprints/late_fusion.yaml", SHORT))
    with pytest.raises(ComposerError, match="no reference"):
        find_reference(late)
    out = tmp_path / "bench.json"
    assert main(["bench", "blueprints/late_fusion.yaml", "--reference", "-b", "2", "--repeats", "1", "--device", "cpu", "-o", str(out),
                 *sum((["--set", s] for s in SHORT), [])]) == 0
    assert json.loads(out.read_text())["results"][0]["reference_ratio"] is None


def test_the_gpu_benchmark_script_runs_end_to_end_in_its_cpu_smoke_mode(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "performance.md"
    done = subprocess.run([sys.executable, str(root / "scripts" / "bench_gpu.py"), "--quick", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "| mult | 1,071,211 | 2 | eager | fp32 |" in text and "reference" in text
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert rows[0]["reference_ratio"] > 0 and not rows[0]["error"]
