"""Several `composer search` processes on one study in a real PostgreSQL server (loopback)."""

import os
import subprocess
import sys

import optuna
import pytest

from composer.search.study import postgres_driver, tally

def test_two_worker_processes_on_one_postgresql_study_reach_the_total(postgres_url, tmp_path):
    from tests_search_toy import toy_file

    path = toy_file(tmp_path)
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
