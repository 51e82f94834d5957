"""Experiment tracking: every run records what it was (``run.json``); TensorBoard and MLflow
receive every epoch's metrics from one flag each; only rank 0 tracks; a missing package names
the extra to install (docs/training.md#tracking)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from composer.blueprint.load import load_blueprint
from composer.cli import main
from composer.errors import BlueprintError, ComposerError
from composer.search import search
from composer.train import tracking
from composer.train.trainer import train

BLUEPRINT = {
    "blueprint": 1, "name": "tracked",
    "modalities": {"text": {"features": 5, "length": 6}, "audio": {"features": 3, "length": 7}},
    "blocks": {
        "text_enc": {"type": "gru", "in": "text", "hidden": 6, "output": "last"},
        "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
        "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
        "head": {"type": "mlp", "in": "fusion", "out": 1},
    },
    "losses": [{"type": "l1", "pred": "head"}],
    "training": {"batch_size": 16, "epochs": 2, "cpu_threads": 1, "data": {"samples": {"train": 32, "valid": 16, "test": 16}}},
}


def _blueprint(tmp_path: Path, **tracking_cfg) -> Path:
    data = json.loads(json.dumps(BLUEPRINT))
    if tracking_cfg:
        data["training"]["tracking"] = tracking_cfg
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _metrics(run: Path, split: str, name: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r[name]) for r in rows if r["split"] == split]


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_run_json_records_blueprint_hash_data_seed_versions_and_git(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git checkout: git is None, no error
    run = train(_blueprint(tmp_path), out=tmp_path / "run", seed=3, progress=False).run_dir
    record = json.loads((run / "run.json").read_text())
    text = (run / "blueprint.yaml").read_text()
    assert record["blueprint"] == "tracked" and record["blueprint_text"] == text
    assert record["blueprint_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert load_blueprint(record["blueprint_text"]).training.seed == 3 == record["seed"]
    assert record["data"] == json.loads((run / "data.json").read_text())
    assert set(record["versions"]) == {"composer", "python", "torch", "optuna"}
    assert record["versions"]["optuna"] == optuna.__version__
    assert record["git"] is None and record["search"] is None
    assert record["status"] == "FINISHED" and record["trackers"] == {}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_run_json_records_the_git_commit_of_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    (repo / "a.txt").write_text("changed")
    monkeypatch.chdir(repo)
    assert tracking.git_commit() == {"commit": head, "dirty": True}


def test_a_search_trial_records_its_study_and_trial_number(tmp_path):
    path = _blueprint(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["training"]["epochs"] = 1
    data["search"] = {"objective": {"metric": "mae", "split": "valid", "direction": "minimize"}, "trials": 2, "sampler": "random",
                      "space": {"blocks.text_enc.hidden": {"int": [2, 6]}}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = search(path, out=tmp_path / "s", trials=2, study_name="study_x")
    for number in (0, 1):
        record = json.loads((tmp_path / "s" / f"trial_{number:04d}" / "run.json").read_text())
        assert record["search"] == {"study": "study_x", "trial": number}
    assert result.study.study_name == "study_x"


def test_tensorboard_event_file_has_every_epoch_of_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    run = train(_blueprint(tmp_path, tensorboard=True), out=tmp_path / "run", progress=False).run_dir
    for split, name in (("valid", "mae"), ("valid", "loss"), ("train", "loss"), ("test", "corr")):
        logged = _scalars(run, f"{split}/{name}")
        assert [s for s, _ in logged] == [1, 2]
        assert [v for _, v in logged] == pytest.approx([v for _, v in _metrics(run, split, name)], rel=1e-6)
    assert json.loads((run / "run.json").read_text())["trackers"] == {"tensorboard": {"dir": "tensorboard"}}


def test_a_resumed_run_continues_the_event_file_without_repeating_epochs(tmp_path):
    pytest.importorskip("tensorboard")
    path = _blueprint(tmp_path, tensorboard=True)
    train(path, out=tmp_path / "run", epochs=1, progress=False)
    run = train(path, out=tmp_path / "run", epochs=2, resume=True, progress=False).run_dir
    assert [s for s, _ in _scalars(run, "valid/mae")] == [1, 2]
    assert json.loads((run / "run.json").read_text())["resumed_after_epoch"] == 1


def test_one_flag_each_logs_to_tensorboard_and_to_an_mlflow_sqlite_store(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    main(["train", str(_blueprint(tmp_path)), "--out", str(tmp_path / "run"), "--tensorboard", "--mlflow", uri])
    run = tmp_path / "run"
    record = json.loads((run / "run.json").read_text())
    assert [s for s, _ in _scalars(run, "valid/mae")] == [1, 2]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == record["trackers"]["mlflow"]["run_id"] and found.info.status == "FINISHED"
    assert found.data.tags["composer.blueprint_sha256"] == record["blueprint_sha256"]
    assert found.data.tags["composer.version.torch"] == record["versions"]["torch"]
    assert found.data.params["training.lr"] == "0.001" and found.data.params["seed"] == "0"
    assert found.data.params["data.sha256"] == record["data"]["sha256"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, "valid/mae"))
    assert [s for s, _ in history] == [1, 2]
    assert [v for _, v in history] == pytest.approx([v for _, v in _metrics(run, "valid", "mae")], rel=1e-6)
    assert not (tmp_path / "mlruns").exists()  # artifacts beside the store, not in the working directory
    assert (tmp_path / "store" / "mlartifacts").is_dir()


def test_the_blueprint_chooses_trackers_and_a_failed_run_says_so(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = _blueprint(tmp_path, mlflow={"uri": uri, "experiment": "exp"})

    def stop(epoch, rows):
        raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(path, out=tmp_path / "run", progress=False, on_epoch_end=stop)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "FAILED"
    run = MlflowClient(tracking_uri=uri).get_run(record["trackers"]["mlflow"]["run_id"])
    assert run.info.status == "FAILED" and run.info.run_name == "run"


@pytest.mark.parametrize("module, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_package_names_the_extra_to_install(tmp_path, monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.delitem(sys.modules, "mlflow.tracking", raising=False)
    flags = {"tensorboard": True} if module == "tensorboard" else {"mlflow": f"sqlite:///{tmp_path / 'm.db'}"}
    with tracking.options(**flags), pytest.raises(ComposerError) as caught:
        train(_blueprint(tmp_path), out=tmp_path / "run", progress=False)
    message = str(caught.value)
    assert f"'{package}' package" in message and "pip install 'fusion-composer[tracking]'" in message


def test_only_rank_zero_records_and_tracks(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "is_rank_zero", lambda: False)
    with tracking.options(tensorboard=True, mlflow="sqlite:///never.db"):
        run = train(_blueprint(tmp_path), out=tmp_path / "run", progress=False).run_dir
    assert not (run / "run.json").exists() and not (run / "tensorboard").exists()
    assert (run / "metrics.jsonl").exists()  # the built-in logs stay


def test_the_tracking_section_is_strict(tmp_path):
    for bad in ({"tensorbord": True}, {"mlflow": {"uri": ""}}, {"mlflow": {"uri": "sqlite:///x.db", "name": "e"}}):
        data = json.loads(json.dumps(BLUEPRINT))
        data["training"]["tracking"] = bad
        with pytest.raises(BlueprintError):
            load_blueprint(data)
    data = json.loads(json.dumps(BLUEPRINT))
    data["training"]["tracking"] = {"tensorboard": True, "mlflow": {"uri": "sqlite:///x.db"}}
    cfg = load_blueprint(data).training.tracking
    assert cfg.tensorboard and cfg.mlflow.uri == "sqlite:///x.db" and cfg.mlflow.experiment is None
