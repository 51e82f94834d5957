"""A training run killed with SIGKILL inside an epoch, then resumed: the exact-resume proofs of the
stateful training blocks (``tests/test_ulgm.py``, ``tests/test_zoo_self_mm_resume.py``) share it.

:func:`kill_inside_an_epoch_then_resume` starts ``composer train`` in a subprocess, waits for its
first ``last.ckpt`` (written atomically at the end of epoch 1) and kills the process at once with
SIGKILL: no handler, no cleanup, in the middle of epoch 2. It checks that the kill did land inside
the run (the process ended by the signal, the checkpoint it left one of an epoch before the last),
then resumes the run folder to its end with ``composer.train(..., resume=True)`` in the test process
(the same trainer as ``composer train --resume``, without a second interpreter and its imports) and
checks that the run record says it continued after the killed run's checkpoint (not from scratch).
The subprocess runs on one thread (``OMP_NUM_THREADS=1``), as the test process does
(``tests/conftest.py``), so an uninterrupted run in the test process computes bit for bit the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

import composer
from composer.train.checkpoint import load_checkpoint
from composer.train.runlog import read_run_record

ROOT = Path(__file__).resolve().parents[1]


def checkpoint_state(run: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model state in ``run/last.ckpt`` (parameters and buffers), those whose names start with ``prefix``."""
    state = load_checkpoint(run / "last.ckpt")["model"]
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def kill_inside_an_epoch_then_resume(blueprint: Path, run: Path, overrides: list[str], epochs: int, *, wait_s: float = 240) -> dict:
    """``composer train BLUEPRINT --out RUN --set ... --set training.epochs=EPOCHS`` killed with SIGKILL
    right after its first checkpoint, then resumed to the end. Returns the checkpoint the killed
    process left (``epoch``, ``model``, ...: where the resumed run started)."""
    overrides = [*overrides, f"training.epochs={epochs}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "composer", "train", str(blueprint), "--out", str(run), *[a for o in overrides for a in ("--set", o)]]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + wait_s
    while not (run / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed (exit {proc.returncode}): {err.decode()[-2000:]}"
    assert (run / "last.ckpt").exists(), f"no checkpoint within {wait_s} s: {err.decode()[-2000:]}"
    killed = load_checkpoint(run / "last.ckpt")
    assert 1 <= killed["epoch"] < epochs, f"the killed run left the checkpoint of epoch {killed['epoch']} of {epochs}: it was not killed inside the run"
    composer.train(blueprint, out=run, overrides=overrides, resume=True, progress=False)
    record = read_run_record(run)
    assert record["resumed_after_epoch"] == killed["epoch"], f"the run did not continue from the killed run's checkpoint: {record}"
    return killed
