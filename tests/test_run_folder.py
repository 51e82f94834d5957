"""A run folder has one owner (an exclusive lock), protocol cells are done only for their exact
configuration, and evaluation names (and defaults to) the data a run was trained on."""

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import composer
from composer.cli import main
from composer.errors import ComposerError, DataError
from composer.train.lock import RunLock
from composer.train.protocol import run_protocol

MODS = {"text": {"features": 5, "length": 6}, "audio": {"features": 3, "length": 7}}
SAMPLES = {"train": 32, "valid": 16, "test": 16}


def _data(epochs=1, **training):
    return {
        "blueprint": 1, "name": "owned", "modalities": MODS,
        "blocks": {
            "text_enc": {"type": "gru", "in": "text", "hidden": 6, "output": "last"},
            "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
            "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
            "head": {"type": "mlp", "in": "fusion", "out": 1},
        },
        "losses": [{"type": "l1", "pred": "head"}],
        "training": {"batch_size": 16, "epochs": epochs, "data": {"samples": SAMPLES}, **training},
    }


def _pickle(path, seed=0):
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        splits[split] = {
            "text": rng.standard_normal((n, 6, 5)).astype(np.float32),
            "audio": rng.standard_normal((n, 7, 3)).astype(np.float32),
            "audio_lengths": rng.integers(1, 8, size=n),
            "regression_labels": rng.uniform(-3, 3, size=(n, 1)).astype(np.float32),
        }
    path.write_bytes(pickle.dumps(splits))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


HOLDER = """
import sys, time
from composer.train.lock import RunLock
with RunLock(sys.argv[1], "composer train (the holder)"):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held_by_another_process(folder: Path):
    """A second process that holds ``folder``'s lock until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


# -- one owner -------------------------------------------------------------------------------
def test_a_second_process_holding_the_folder_makes_train_refuse_with_its_owner_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    with held_by_another_process(run) as holder:
        with pytest.raises(ComposerError) as refused:
            composer.train(_data(), out=run, progress=False)
        message = str(refused.value)
        for part in (f"pid {holder.pid}", f"host {socket.gethostname()}", "composer train (the holder)", "started 20"):
            assert part in message
        assert _snapshot(run) == {}  # nothing written


def test_overwrite_or_resume_while_another_process_holds_the_folder_deletes_nothing(tmp_path):
    run = tmp_path / "run"
    composer.train(_data(), out=run, progress=False)
    before = _snapshot(run)
    with held_by_another_process(run):
        for kwargs in ({"overwrite": True}, {"resume": True}, {}):
            with pytest.raises(ComposerError, match="is in use by pid"):
                composer.train(_data(epochs=2), out=run, progress=False, **kwargs)
    assert _snapshot(run) == before


TRAINER = """
import sys, time
import composer
bp = composer.load_blueprint(sys.argv[2])
def slow(epoch, rows):
    if epoch == 1:
        print("training", flush=True)
    time.sleep(0.3)
composer.train(bp, out=sys.argv[1], progress=False, on_epoch_end=slow)
"""


def test_two_concurrent_trains_end_with_one_refused_and_no_mixed_file(tmp_path):
    run, bp_path = tmp_path / "run", tmp_path / "bp.yaml"
    bp_path.write_text(composer.dump_blueprint(composer.load_blueprint(_data(epochs=8))))
    first = subprocess.Popen([sys.executable, "-c", TRAINER, str(run), str(bp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "training"
        assert main(["train", str(bp_path), "--out", str(run), "--device", "cpu"]) == 1
        assert main(["train", str(bp_path), "--out", str(run), "--overwrite", "--device", "cpu"]) == 1
        assert main(["train", str(bp_path), "--out", str(run), "--resume", "--device", "cpu"]) == 1
        assert first.poll() is None, "the first run ended before the second was refused: the test proves nothing"
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in rows] == [(e, s) for e in range(1, 9) for s in ("train", "valid", "test")]
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 8


def test_a_refusal_names_the_owner_on_the_command_line(tmp_path, capsys):
    bp_path = tmp_path / "bp.yaml"
    bp_path.write_text(composer.dump_blueprint(composer.load_blueprint(_data())))
    with held_by_another_process(tmp_path / "run") as holder:
        assert main(["train", str(bp_path), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 1
    printed = " ".join((capsys.readouterr().err + capsys.readouterr().out).split())
    assert f"is in use by pid {holder.pid}" in printed and "Traceback" not in printed


def test_a_stale_lock_of_an_ended_process_is_reported_and_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (run / ".lock").write_text(json.dumps({"pid": ended.pid, "host": socket.gethostname(), "command": "composer train (killed)",
                                           "started": "2024-01-01 00:00:00"}))
    composer.train(_data(), out=run, progress=False)
    assert f"a stale lock of pid {ended.pid} (ended) was taken over" in capsys.readouterr().err
    assert (run / "summary.json").exists() and (run / ".lock").read_text() == ""  # released cleanly


def test_the_lock_is_reentrant_in_one_process_and_released_empty(tmp_path):
    with RunLock(tmp_path, "outer"):
        body = json.loads((tmp_path / ".lock").read_text())
        assert body["pid"] == os.getpid() and body["command"] == "outer" and body["host"] == socket.gethostname()
        with RunLock(tmp_path, "inner"):
            pass
        assert json.loads((tmp_path / ".lock").read_text())["command"] == "outer"  # still held
    assert (tmp_path / ".lock").read_text() == ""
    with RunLock(tmp_path, "again"):  # free again
        pass


def test_evaluate_and_protocols_hold_the_lock_of_the_folder_they_write(tmp_path):
    run = tmp_path / "run"
    composer.train(_data(), out=run, progress=False)
    before = _snapshot(run)
    with held_by_another_process(run):
        with pytest.raises(ComposerError, match="is in use by pid"):
            composer.evaluate(run, progress=False)
        composer.evaluate(run, progress=False, write=False)  # reading needs no lock
    assert _snapshot(run) == before
    with held_by_another_process(tmp_path / "proto"):
        with pytest.raises(ComposerError, match="is in use by pid"):
            run_protocol(_data(), "standard", out=tmp_path / "proto", seeds=[1], progress=False, log=lambda _: None)
    assert not (tmp_path / "proto" / "seed_1").exists()


def test_a_run_killed_before_its_first_checkpoint_is_told_what_is_there_not_to_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "blueprint.yaml").write_text(composer.dump_blueprint(composer.load_blueprint(_data())))
    (run / "metrics.jsonl").write_text("")
    for kwargs, extra in (({}, ""), ({"resume": True}, "no last.ckpt to resume from")):
        with pytest.raises(ComposerError) as refused:
            composer.train(_data(), out=run, progress=False, **kwargs)
        message = str(refused.value)
        assert "ended before its first checkpoint (metrics.jsonl, blueprint.yaml)" in message and extra in message
        assert "continue it with --resume" not in message and "--overwrite" in message
    composer.train(_data(), out=run, progress=False, overwrite=True)


# -- evaluation names its data ---------------------------------------------------------------
def test_a_run_records_its_data_path_sha256_reader_and_splits(tmp_path):
    feats = _pickle(tmp_path / "feats.pkl")
    done = composer.train(_data(), data=str(feats), out=tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert record["path"] == str(feats.resolve()) and record["reader"] == "pickle"
    assert record["files"] == {str(feats.resolve()): __import__("hashlib").sha256(feats.read_bytes()).hexdigest()}
    assert record["splits"] == ["train", "valid", "test"] and record["sizes"] == {"train": 24, "valid": 8, "test": 8}
    assert len(record["sha256"]) == 64 and done.summary["data"] == record
    synthetic = json.loads((composer.train(_data(), out=tmp_path / "syn", progress=False).run_dir / "data.json").read_text())
    assert synthetic["reader"] == "synthetic" and synthetic["path"] is None and synthetic["files"] == {}


def test_evaluate_scores_the_file_the_run_was_trained_on_and_says_so(tmp_path, capsys):
    feats = _pickle(tmp_path / "feats.pkl")
    done = composer.train(_data(), data=str(feats), out=tmp_path / "run", progress=False)
    result = composer.evaluate(tmp_path / "run", progress=False)
    assert result.data["path"] == str(feats.resolve())
    assert result.splits["test"]["mae"] == pytest.approx(done.summary["best"]["test"]["mae"])  # the file, not synthetic data
    assert main(["evaluate", str(tmp_path / "run"), "--device", "cpu"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "on feats.pkl (pickle" in printed and "test 8" in printed


def test_evaluations_go_to_new_files_named_by_data_and_protocol(tmp_path):
    feats = _pickle(tmp_path / "feats.pkl")
    composer.train(_data(), data=str(feats), out=tmp_path / "run", progress=False)
    first = composer.evaluate(tmp_path / "run", progress=False)
    sha8 = first.data["sha256"][:8]
    assert first.written == tmp_path / "run" / f"evaluation-feats-{sha8}-clean.json"
    again = composer.evaluate(tmp_path / "run", progress=False)
    sweep = composer.evaluate(tmp_path / "run", progress=False, missing_rates="0,1")
    assert again.written.name == f"evaluation-feats-{sha8}-clean-2.json" and sweep.written.name == f"evaluation-feats-{sha8}-sweep-test.json"
    synthetic = composer.evaluate(tmp_path / "run", "synthetic", progress=False)
    assert synthetic.written.name.startswith("evaluation-synthetic-")
    assert json.loads(first.written.read_text())["data"]["path"] == str(feats.resolve())
    assert len(list((tmp_path / "run").glob("evaluation-*.json"))) == 4


def test_a_recorded_file_that_is_gone_or_changed_is_refused_unless_data_is_given(tmp_path):
    feats = _pickle(tmp_path / "feats.pkl")
    composer.train(_data(), data=str(feats), out=tmp_path / "run", progress=False)
    _pickle(feats, seed=1)
    with pytest.raises(DataError, match="feats.pkl changed since .*run was trained on it"):
        composer.evaluate(tmp_path / "run", progress=False)
    feats.unlink()
    with pytest.raises(DataError, match="feats.pkl, which is gone; give the data to score with --data"):
        composer.evaluate(tmp_path / "run", progress=False)
    other = _pickle(tmp_path / "other.pkl", seed=2)
    assert composer.evaluate(tmp_path / "run", str(other), progress=False).data["path"] == str(other.resolve())


def test_scoring_synthetic_data_on_a_run_trained_on_a_file_is_explicit_and_said(tmp_path, capsys):
    feats = _pickle(tmp_path / "feats.pkl")
    composer.train(_data(), data=str(feats), out=tmp_path / "run", progress=False)
    assert main(["evaluate", str(tmp_path / "run"), "--data", "synthetic", "--device", "cpu"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "note: scoring synthetic" in printed and "not the data" in printed and "feats.pkl" in printed


# -- protocol cells --------------------------------------------------------------------------
def _quiet(**kwargs):
    return run_protocol(_data(), progress=False, log=lambda _: None, **kwargs)


def test_a_robustness_rerun_with_more_epochs_is_refused_and_never_reports_the_old_models(tmp_path, capsys):
    first = _quiet(protocol="lnln", out=tmp_path, seeds=[1], rates=[0.0, 0.5], epochs=1)
    assert json.loads((tmp_path / "seed_1" / "cell.json").read_text())["epochs"] == 1
    with pytest.raises(ComposerError, match=r"seed_1 was trained with 1 epochs \(now 2\).*new --out folder.*--overwrite"):
        _quiet(protocol="lnln", out=tmp_path, seeds=[1], rates=[0.0, 0.5], epochs=2)
    bp_path = tmp_path / "bp.yaml"
    bp_path.write_text(composer.dump_blueprint(composer.load_blueprint(_data())))
    assert main(["robustness", str(bp_path), "--protocol", "lnln", "--seeds", "1", "--rates", "0,0.5", "--out", str(tmp_path),
                 "--set", "training.lr=0.01", "--device", "cpu"]) == 1
    assert "another blueprint" in " ".join(capsys.readouterr().err.split())
    again = _quiet(protocol="lnln", out=tmp_path, seeds=[1], rates=[0.0, 0.5], epochs=2, overwrite=True)
    assert json.loads((tmp_path / "seed_1" / "summary.json").read_text())["epochs_run"] == 2
    assert again.runs[0]["cell"] != first.runs[0]["cell"] and again.runs[0]["metrics"] != first.runs[0]["metrics"]


def test_overwrite_retrains_only_the_cells_whose_configuration_changed(tmp_path):
    _quiet(protocol="standard", out=tmp_path, seeds=[1], epochs=1)
    kept = _snapshot(tmp_path / "seed_1")
    said = []
    run_protocol(_data(), "standard", out=tmp_path, seeds=[1, 2], epochs=1, progress=False, log=said.append, overwrite=True)
    assert any("reusing the finished run" in s and "seed_1" in s for s in said)
    assert _snapshot(tmp_path / "seed_1") == kept


def test_a_protocol_rerun_on_other_data_after_the_checkpoint_is_gone_is_refused(tmp_path):
    _quiet(protocol="standard", out=tmp_path, seeds=[1], data=str(_pickle(tmp_path / "a.pkl")))
    (tmp_path / "seed_1" / "last.ckpt").unlink()
    with pytest.raises(ComposerError, match="trained with other data"):
        _quiet(protocol="standard", out=tmp_path, seeds=[1], data=str(_pickle(tmp_path / "b.pkl", seed=3)))


def test_a_cell_without_a_record_of_its_configuration_is_refused(tmp_path):
    composer.train(_data(), out=tmp_path / "seed_1", progress=False)  # e.g. left by an older Composer
    with pytest.raises(ComposerError, match="no record of its configuration"):
        _quiet(protocol="standard", out=tmp_path, seeds=[1])


def test_a_protocol_rerun_without_data_uses_the_data_its_folder_recorded(tmp_path):
    feats = _pickle(tmp_path / "feats.pkl")
    first = _quiet(protocol="standard", out=tmp_path / "out", seeds=[1], data=str(feats))
    said = []
    again = run_protocol(_data(), "standard", out=tmp_path / "out", seeds=[1], progress=False, log=said.append)
    assert again.provenance["data"]["path"] == str(feats.resolve()) and again.runs[0]["metrics"] == first.runs[0]["metrics"]
    assert any(s.startswith("data: feats.pkl") for s in said) and any("reusing the finished run" in s for s in said)


def test_protocol_results_are_named_by_data_and_protocol_and_never_overwritten(tmp_path):
    first = _quiet(protocol="standard", out=tmp_path, seeds=[1])
    sha8 = first.provenance["data_sha256"][:8]
    assert [p.name for p in first.written] == [f"standard-synthetic-{sha8}.{s}" for s in ("json", "csv", "md")]
    again = _quiet(protocol="standard", out=tmp_path, seeds=[1])
    assert [p.name for p in again.written] == [f"standard-synthetic-{sha8}-2.{s}" for s in ("json", "csv", "md")]
    assert all(p.exists() for p in first.written + again.written)


# -- export --verify -------------------------------------------------------------------------
def test_export_verifies_on_the_data_the_run_was_trained_on(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    feats = _pickle(tmp_path / "feats.pkl")
    composer.train(_data(), data=str(feats), out=tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--program", str(tmp_path / "m.pt2")]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "max |program - PyTorch|" in printed and "3 samples of the test split of feats.pkl (pickle" in printed
    feats.unlink()
    assert main(["export", str(tmp_path / "run"), "--program", str(tmp_path / "m.pt2")]) == 1
    assert "which is gone" in " ".join(capsys.readouterr().err.split())
