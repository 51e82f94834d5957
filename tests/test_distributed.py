"""Data-parallel training (torchrun, gloo on CPU): two processes equal one with the same global
batch; a killed process ends the run with a message and an intact last checkpoint; resume
keeps the number of processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import composer
from composer.cli import main
from composer.errors import ComposerError
from composer.train.checkpoint import LoopState, load_checkpoint
from composer.train.distributed import World, local_share
from tests.shipped import ROOT

TINY = {
    "blueprint": 1, "name": "tiny",
    "modalities": {"text": {"features": 6, "length": 8}, "audio": {"features": 3, "length": 8}, "v": {"kind": "vector", "features": 4}},
    "blocks": {
        "text_enc": {"type": "gru", "in": "text", "hidden": 8, "output": "last"},
        "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
        "fusion": {"type": "concat", "in": ["text_enc", "audio_enc", "v"]},
        "head": {"type": "mlp", "in": "fusion", "hidden": [8], "out": 1},
        "decoder": {"type": "mlp", "in": "fusion", "hidden": [5], "out": 4},  # training-only: read by a loss alone
    },
    "losses": [{"type": "l1", "pred": "head"}, {"type": "mse", "pred": "decoder", "target": "v", "name": "recon", "weight": 0.1}],
    # 41 samples in batches of 10: the last batch of 1 leaves process 1 nothing (a stand-in that counts 0)
    "training": {"batch_size": 10, "grad_accum": 2, "epochs": 3, "cpu_threads": 1, "views": {"masked": {"type": "temporal_mask", "rate": 0.3}},
                 "data": {"samples": {"train": 41, "valid": 17, "test": 9}}},
}
EMT_DLFR_TINY = [  # tests/test_emt_dlfr.py's tiny EMT-DLFR: shared projections, views, the DLFR losses
    "modalities.text.length=7", "modalities.text.vocab=160", "modalities.audio.length=9", "modalities.vision.length=6",
    "blocks.text_enc.hidden_size=8", "blocks.text_enc.num_layers=1", "blocks.text_enc.num_heads=2", "blocks.text_enc.intermediate_size=16",
    "blocks.text_enc.vocab_size=160", "blocks.audio_enc.hidden=4", "blocks.vision_enc.hidden=4", "blocks.emt.layers=2", "blocks.emt.heads=2",
    "blocks.head.hidden=[8]", *(f"blocks.{b}.out=8" for b in ("text_proj", "text_utt", "audio_proj", "audio_utt", "vision_proj", "vision_utt")),
    "training.data.samples.train=24", "training.data.samples.valid=8", "training.data.samples.test=8", "training.batch_size=8",
    "training.cpu_threads=1", "training.early_stop=null",
]


def _composer(*args: str) -> subprocess.Popen:
    env = {**os.environ, "COMPOSER_DIST_TIMEOUT": "60"}
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen([sys.executable, "-m", "composer", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_shares_split_each_global_batch_once_in_order():
    for n in (1, 2, 3, 7, 10):
        parts = [World(rank, 3).share(n) for rank in range(3)]
        taken = [i for part, count in parts if count for i in range(n)[part]]
        assert taken == list(range(n)) and sum(count for _, count in parts) == n
        assert all(part == slice(0, 1) for part, count in parts if count == 0)  # an empty share: a stand-in counting 0
    batch = {"label": torch.arange(5), "id": list("abcde"), "host_lengths": {"text": [1, 2, 3, 4, 5]}, "split_size": 5,
             "view_masks": {"text": torch.zeros(5, 8, dtype=torch.bool)}, "index": torch.arange(10, 15)}
    part, count = World(1, 2).share(5)
    local = local_share(batch, part, 5)
    assert count == 2 and local["id"] == ["d", "e"] and local["host_lengths"] == {"text": [4, 5]}
    assert local["index"].tolist() == [13, 14] and local["view_masks"]["text"].shape == (2, 8) and local["split_size"] == 5


def test_nproc_is_refused_under_torchrun(tmp_path, monkeypatch, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--nproc", "2"]) == 1
    assert "under torchrun leave it out" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    two = _composer("train", str(path), "--out", str(tmp_path / "two"), "--device", "cpu", "--set", "training.seed=3", "--nproc", "2")
    one = composer.train(path, out=tmp_path / "one", overrides=["training.seed=3"], device="cpu", progress=False)
    out, err = two.communicate(timeout=180)
    assert two.returncode == 0, err
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [(r["epoch"], r["split"]) for r in a] == [(r["epoch"], r["split"]) for r in b]
    for ra, rb in zip(a, b):  # losses (recon, the view) and metrics over the whole split, gathered
        assert ra.keys() == rb.keys()
        for key in ra.keys() - {"time"}:
            assert ra[key] == pytest.approx(rb[key], abs=1e-5), (ra["epoch"], ra["split"], key)
    wa, wb = load_file(tmp_path / "one" / "best.safetensors"), load_file(tmp_path / "two" / "best.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["best_epoch"] == one.summary["best_epoch"]
    state = load_checkpoint(tmp_path / "two" / "last.ckpt")
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    with pytest.raises(ComposerError, match=r"trained in 2 process\(es\), this run has 1: resume under 2"):
        composer.train(path, out=tmp_path / "two", overrides=["training.seed=3"], epochs=4, resume=True, progress=False)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the child of ``parent`` whose environment says ``RANK=rank`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0") if ppid == parent else []
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_process_ends_the_run_with_a_message_and_an_intact_checkpoint(tmp_path):
    run = tmp_path / "run"
    sets = [arg for o in EMT_DLFR_TINY for arg in ("--set", o)]
    launcher = _composer("train", str(ROOT / "blueprints/emt_dlfr.yaml"), "--out", str(run), "--epochs", "500", "--device", "cpu", *sets, "--nproc", "2")
    deadline = time.monotonic() + 150
    while not (run / "last.ckpt").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = _rank_pid(launcher.pid, 1)
    if pid is None or launcher.poll() is not None:
        launcher.kill()
        pytest.fail(f"the run never reached its first checkpoint with process 1 alive: {launcher.communicate()[1][-2000:]}")
    os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    assert "process 1 (killed by SIGKILL)" in err and "continue with --resume --nproc 2" in err and "Traceback" not in err
    state = load_checkpoint(run / "last.ckpt")  # written atomically by process 0 alone: whole
    assert LoopState.from_checkpoint(state, run / "last.ckpt").epoch >= 1 and state["world_size"] == 2
