"""Per-sample predictions and paired comparisons (issue #26, part 3): the statistics against
known cases, then ``composer predict`` / ``composer compare`` on runs trained on an MMSA-layout
pickle (the builder of tests/test_padding_from_file.py)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from composer.cli import main
from composer.errors import ComposerError, DataError
from composer.metrics import compute_metrics
from composer.train.compare import compare_predictions
from composer.train.predict import SampleOutputs, _same_samples, compare_runs, predict
from tests.test_padding_from_file import D_AUDIO, D_TEXT, D_VISION, T_AUDIO, T_TEXT, T_VISION, _write, mmsa_unaligned

REGRESSION = SimpleNamespace(kind="regression", outputs=1, label_range=(-3.0, 3.0), classes=None)


def _score(task):
    return lambda pred, label: compute_metrics(task, pred, label)


def _noisy(label, scale, seed):
    return label + np.random.default_rng(seed).normal(scale=scale, size=label.shape)


# -- the statistics ---------------------------------------------------------------------


def test_identical_predictions_differ_by_zero_with_interval_zero_and_p_one():
    label = np.random.default_rng(0).uniform(-3, 3, size=40)
    pred = _noisy(label, 0.5, 1)
    result = compare_predictions(_score(REGRESSION), pred, pred.copy(), label, resamples=200, seed=0)
    assert set(result) == set(compute_metrics(REGRESSION, pred, label))
    for m in result.values():
        assert (m.difference, m.ci_low, m.ci_high, m.p_value, m.better) == (0.0, 0.0, 0.0, 1.0, "-")


def test_a_clearly_better_run_has_a_small_p_value_and_an_interval_away_from_zero():
    label = np.random.default_rng(0).uniform(-3, 3, size=60)
    worse, better = _noisy(label, 1.5, 1), _noisy(label, 0.1, 2)
    result = compare_predictions(_score(REGRESSION), worse, better, label, resamples=300, seed=0)
    mae = result["mae"]
    assert mae.difference < 0 and mae.ci_high < 0 and mae.better == "B"
    assert mae.p_value == pytest.approx(1 / 301)  # no permutation reaches the observed difference
    assert result["corr"].difference > 0 and result["corr"].better == "B"


def test_negative_control_exchangeable_runs_are_not_called_different():
    """Two runs with the same error distribution: over 40 independent data sets the permutation
    test calls a difference in mae at 5 % about as often as chance allows, and the intervals
    cover zero about 95 % of the time."""
    rejected = covered = 0
    for k in range(40):
        label = np.random.default_rng(100 + k).uniform(-3, 3, size=30)
        a, b = _noisy(label, 1.0, 200 + k), _noisy(label, 1.0, 300 + k)
        mae = compare_predictions(lambda p, y: {"mae": float(np.mean(np.abs(p - y)))}, a, b, label, resamples=199, seed=k)["mae"]
        rejected += mae.p_value < 0.05
        covered += mae.ci_low <= 0 <= mae.ci_high
    assert rejected <= 6 and covered >= 33


def test_the_same_seed_gives_the_same_numbers_and_another_seed_other_draws():
    label = np.random.default_rng(0).uniform(-3, 3, size=25)
    a, b = _noisy(label, 1.0, 1), _noisy(label, 0.8, 2)
    score = _score(REGRESSION)
    first = compare_predictions(score, a, b, label, resamples=100, seed=5)
    assert compare_predictions(score, a, b, label, resamples=100, seed=5) == first
    other = compare_predictions(score, a, b, label, resamples=100, seed=6)
    assert other["mae"].difference == first["mae"].difference and other["mae"].ci_low != first["mae"].ci_low


def test_classification_logits_are_swapped_per_sample_and_compared_on_accuracy():
    task = SimpleNamespace(kind="classification", outputs=3, label_range=(-3.0, 3.0), classes=None)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=50)
    right = np.eye(3)[label] * 5 + rng.normal(size=(50, 3))
    guess = rng.normal(size=(50, 3))
    result = compare_predictions(_score(task), guess, right, label, resamples=200, seed=0)
    assert result["acc"].difference > 0.3 and result["acc"].p_value < 0.01
    same = compare_predictions(_score(task), right, right, label, resamples=50, seed=0)
    assert same["acc"].p_value == 1.0


def test_predictions_of_other_samples_or_shapes_are_refused():
    with pytest.raises(ComposerError, match="differ in shape"):
        compare_predictions(_score(REGRESSION), np.zeros(4), np.zeros(5), np.zeros(4))
    one = SampleOutputs(["a", "b"], np.zeros(2), {"prediction": np.zeros((2, 1))})
    other = SampleOutputs(["a", "c"], np.zeros(2), {"prediction": np.zeros((2, 1))})
    with pytest.raises(DataError, match="sample 1 is 'b' for A and 'c' for B"):
        _same_samples(one, other, "test", "runA", "runB")
    relabelled = SampleOutputs(["a", "b"], np.ones(2), {"prediction": np.zeros((2, 1))})
    with pytest.raises(DataError, match="labels differ"):
        _same_samples(one, relabelled, "test", "runA", "runB")


# -- predict and compare on runs trained on an MMSA-layout pickle -----------------------


def _blueprint(head_hidden: int, kind: str = "regression") -> dict:
    out = 1 if kind == "regression" else 2
    return {
        "blueprint": 1, "name": f"mmsa_h{head_hidden}",
        "task": {"kind": kind, "outputs": out},
        "modalities": {"text": {"features": D_TEXT, "length": T_TEXT}, "audio": {"features": D_AUDIO, "length": T_AUDIO},
                       "vision": {"features": D_VISION, "length": T_VISION}},
        "blocks": {
            "t_pool": {"type": "pool", "in": "text", "mode": "mean"},
            "a_pool": {"type": "pool", "in": "audio", "mode": "mean"},
            "v_pool": {"type": "pool", "in": "vision", "mode": "mean"},
            "fusion": {"type": "concat", "in": ["t_pool", "a_pool", "v_pool"]},
            "head": {"type": "mlp", "in": "fusion", "hidden": [head_hidden], "out": out},
        },
        "outputs": {"prediction": "head", "audio_summary": "a_pool"},
        "losses": [{"type": "l1" if kind == "regression" else "ce", "pred": "head"}],
        "training": {"epochs": 1, "batch_size": 4, **({} if kind == "regression" else {"data": {"label_key": "classification_labels"}})},
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs (different heads) trained one epoch on the same MMSA unaligned pickle."""
    import composer

    root = tmp_path_factory.mktemp("runs")
    pkl = _write(root / "unaligned_50.pkl", mmsa_unaligned(noise=0.0))
    for name, hidden in (("a", 4), ("b", 8)):
        composer.train(_blueprint(hidden), pkl, root / name, device="cpu", progress=False)
    return root, pkl


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_predict_writes_one_row_per_sample_with_id_label_and_every_named_output(two_runs):
    root, pkl = two_runs
    raw = mmsa_unaligned(noise=0.0)["test"]
    result = predict(root / "a", split="test", device="cpu", progress=False)
    header, *rows = _read_csv(result.written)
    assert result.written.name.startswith("predictions-unaligned_50-") and result.written.name.endswith("-test.csv")
    assert header == ["id", "label", "prediction", *(f"audio_summary[{i}]" for i in range(D_AUDIO))]
    assert [r[0] for r in rows] == list(raw["id"])
    np.testing.assert_allclose([float(r[1]) for r in rows], raw["regression_labels"], rtol=1e-6)
    pred = np.array([float(r[2]) for r in rows])
    np.testing.assert_array_equal(pred, result.samples.outputs["prediction"].reshape(-1))
    from composer.train.evaluation import evaluate

    scored = evaluate(root / "a", splits=("test",), device="cpu", progress=False, write=False).splits["test"]
    assert compute_metrics(REGRESSION, pred, raw["regression_labels"])["mae"] == pytest.approx(scored["mae"], abs=1e-6)
    again = predict(root / "a", str(pkl), split="test", device="cpu", progress=False)
    assert again.written != result.written and result.written.exists()  # never overwritten


def test_compare_cli_reports_every_metric_with_interval_and_p_value_as_table_and_json(two_runs, capsys):
    root, _ = two_runs
    assert main(["compare", str(root / "a"), str(root / "b"), "--resamples", "50", "--seed", "3", "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    assert "B - A" in shown and "95% CI" in shown and "acc7" in shown
    [written] = sorted((root / "a").glob("comparison-b-unaligned_50-*-test.json"))
    report = json.loads(written.read_text())
    a = predict(root / "a", device="cpu", progress=False, write=False).samples
    b = predict(root / "b", device="cpu", progress=False, write=False).samples
    ma, mb = compute_metrics(REGRESSION, a.outputs["prediction"], a.label), compute_metrics(REGRESSION, b.outputs["prediction"], b.label)
    assert set(report["metrics"]) == set(ma)
    for name, row in report["metrics"].items():
        assert row["difference"] == pytest.approx(mb[name] - ma[name])
        assert row["ci_low"] <= row["ci_high"] and 1 / 51 <= row["p_value"] <= 1
    assert (report["samples"], report["resamples"], report["seed"], report["difference"]) == (5, 50, 3, "b - a")


def test_a_run_compared_with_itself_differs_by_nothing(two_runs):
    root, _ = two_runs
    result = compare_runs(root / "a", root / "a", resamples=30, device="cpu", progress=False, write=False)
    assert all((m.difference, m.ci_low, m.ci_high, m.p_value) == (0.0, 0.0, 0.0, 1.0) for m in result.metrics.values())


def test_compare_refuses_runs_of_other_tasks_or_trained_on_other_data(two_runs, tmp_path):
    import composer

    root, pkl = two_runs
    content = mmsa_unaligned(noise=0.0)
    for split in content.values():
        split["classification_labels"] = (split["regression_labels"] > 0).astype(np.int64)
    other_task = composer.train(_blueprint(4, kind="classification"), _write(tmp_path / "cls.pkl", content), tmp_path / "c",
                                device="cpu", progress=False)
    with pytest.raises(ComposerError, match="predict different tasks .*kind: 'regression' vs 'classification'"):
        compare_runs(root / "a", other_task.run_dir, device="cpu", progress=False, write=False)
    other_data = composer.train(_blueprint(4), _write(tmp_path / "other.pkl", mmsa_unaligned(noise=0.0, seed=1)), tmp_path / "d",
                                device="cpu", progress=False)
    with pytest.raises(DataError, match="give --data FILE to score both on the same data"):
        compare_runs(root / "a", other_data.run_dir, device="cpu", progress=False, write=False)
    scored = compare_runs(root / "a", other_data.run_dir, pkl, resamples=20, device="cpu", progress=False, write=False)
    assert scored.samples == 5


def test_predict_and_compare_take_allow_plugins(capsys):
    for command in ("predict", "compare"):
        assert main([command, "--help"]) == 0
        assert "--allow-plugins" in capsys.readouterr().out
