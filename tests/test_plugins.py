"""Plug-ins in every command: a blueprint's `plugins:` are imported with `--allow-plugins` only,
the same flag on every command that reads a blueprint, search workers included; the loss
plug-in protocol's worked example (examples/custom_block/ccc.py) trains and searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from composer.cli import BLUEPRINT_COMMANDS, main
from tests.shipped import ROOT

EXAMPLE = ROOT / "examples/custom_block"
BLUEPRINT = EXAMPLE / "ccc.yaml"


def _composer(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{EXAMPLE}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "composer", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", BLUEPRINT_COMMANDS)
def test_every_command_that_reads_a_blueprint_takes_the_flag(command, capsys):
    main([command, "--help"])
    assert "--allow-plugins" in capsys.readouterr().out


def test_the_ccc_loss_is_lins_concordance():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from ccc import CCCConfig, CCCLoss
    finally:
        sys.path.remove(str(EXAMPLE))
    from composer.spec import labels, vector

    loss = CCCLoss(CCCConfig(pred="head"), {"pred": vector(1), "target": labels("float")})
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=32), gen.normal(size=32) * 0.5 + 0.3
    ccc = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    got = loss({"pred": torch.tensor(x).reshape(-1, 1), "target": torch.tensor(y)}, None)
    assert abs(float(got) - (1 - ccc)) < 1e-6
    assert float(loss({"pred": torch.tensor(y).reshape(-1, 1), "target": torch.tensor(y)}, None)) < 1e-6  # agreement: 0
    assert float(loss({"pred": -torch.tensor(y).reshape(-1, 1), "target": torch.tensor(y)}, None)) > 1.0  # control: opposite, above 1


def test_without_the_flag_a_plugin_is_never_imported(tmp_path):
    probe = "import sys; from composer.cli import main; rc = main(['validate', sys.argv[1]]); print('imported' if 'ccc' in sys.modules else 'not imported'); sys.exit(rc)"
    env = {**os.environ, "PYTHONPATH": f"{EXAMPLE}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", probe, str(BLUEPRINT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "not imported" in done.stdout
    assert "unknown loss type 'ccc'" in done.stderr and "pass --allow-plugins" in done.stderr


def test_a_loss_plugin_trains_evaluates_and_searches_with_two_workers_from_the_command_line(tmp_path):
    trained = _composer("train", str(BLUEPRINT), "--allow-plugins", "--out", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "loss/ccc" in json.loads((tmp_path / "run" / "summary.json").read_text())["best"]["valid"]
    refused = _composer("evaluate", "run", cwd=tmp_path)  # a fresh process: the saved blueprint lists the plug-in too
    assert refused.returncode == 1 and "pass --allow-plugins" in refused.stderr
    assert _composer("evaluate", "run", "--allow-plugins", cwd=tmp_path).returncode == 0
    searched = _composer("search", str(BLUEPRINT), "--allow-plugins", "--workers", "2", "--trials", "2", "--out", "search", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr[-2000:]
    assert "2 complete" in searched.stdout + searched.stderr or (tmp_path / "search").exists()
