"""Several `composer search` processes on one study in a real PostgreSQL server (loopback)."""

import os
import subprocess
import sys

import optuna
import pytest
import yaml

from composer.search.study import postgres_driver, tally

BLUEPRINT = {
    "blueprint": 1, "name": "pgtoy",
    "modalities": {"text": {"features": 4, "length": 5}, "audio": {"features": 3, "length": 5}},
    "blocks": {
        "text_enc": {"type": "gru", "in": "text", "hidden": 4, "output": "last"},
        "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
        "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
        "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
    },
    "losses": [{"type": "l1", "pred": "head"}],
    "training": {"epochs": 2, "batch_size": 8, "data": {"samples": {"train": 64, "valid": 16, "test": 8}}},
    "search": {"objective": {"metric": "mae"}, "sampler": "random", "heartbeat": 1,
               "space": {"blocks.text_enc.hidden": {"int": [2, 12]}, "training.lr": {"float": [1e-4, 1e-2], "log": True}}},
}


def test_two_worker_processes_on_one_postgresql_study_reach_the_total(postgres_url, tmp_path):
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(BLUEPRINT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "composer", "search", str(path), "--storage", postgres_url, "--trials", "6", "--study", "pg_two"]
    procs = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"w{i}"), "--seed", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    study = optuna.load_study(study_name="pg_two", storage=postgres_driver(postgres_url))
    now = tally(study)
    assert now["counted"] == 6 and now["running"] == 0
    pids = {t.user_attrs.get("worker_pid") for t in study.trials if "worker_pid" in t.user_attrs}
    assert len(pids) == 2, "both processes ran trials"
