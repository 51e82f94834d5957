"""Tampered checkpoints and weights, and full disks (issue #28, points 4 and 5).

A checkpoint is checked key by key, shape by shape and for finiteness before anything is
loaded; every case is an ``error:`` naming the file and the key, never a traceback. A disk
that fills while Composer writes names the file and what is intact.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import composer
import composer.train.trainer  # noqa: F401  imported before any test patches what it imports by name
from composer.cli import main
from composer.errors import ComposerError, DataError, DiskFullError
from composer.train.checkpoint import LoopState, save_checkpoint

from tests.tiny import BLOCKS, MODS


def tiny(**training) -> dict:
    training = {"epochs": 1, "batch_size": 8, "scheduler": {"type": "step", "step_size": 1},
                "data": {"samples": {"train": 16, "valid": 8, "test": 8}}, **training}
    return copy.deepcopy({"blueprint": 1, "name": "tiny", "modalities": MODS, "blocks": BLOCKS,
                          "losses": [{"type": "l1", "pred": "head"}], "training": training})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished one-epoch run (its folder is copied by each test that changes it)."""
    import yaml

    root = tmp_path_factory.mktemp("trained")
    (root / "bp.yaml").write_text(yaml.safe_dump(tiny()))
    composer.train(str(root / "bp.yaml"), out=root / "run", progress=False)  # resumed from the same file
    return root


def _copy_run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    return trained / "bp.yaml", run


def _resume(bp: Path, run: Path, capsys) -> tuple[int, str]:
    code = main(["train", str(bp), "--resume", "--epochs", "2", "--out", str(run)])
    return code, capsys.readouterr().err


# -- the loop state ---------------------------------------------------------------------
def test_loop_state_round_trips_through_a_checkpoint(tmp_path):
    loop = LoopState(epoch=4, global_step=12, best=0.25, best_epoch=3, bad_epochs=1, stopped=True)
    path = save_checkpoint(tmp_path / "last.ckpt", loop.to_checkpoint())
    state = torch.load(path, weights_only=True)
    assert LoopState.from_checkpoint(state, path) == loop
    assert LoopState.from_checkpoint(LoopState().to_checkpoint(), path) == LoopState()


@pytest.mark.parametrize("field, value, expected", [
    ("epoch", "3", "'epoch' is str '3', expected an integer >= 0"),
    ("epoch", -1, "'epoch' is int -1"),
    ("epoch", True, "'epoch' is bool"),
    ("global_step", 2.5, "'global_step' is float"),
    ("best", "0.3", "'best' is str"),
    ("best", math.nan, "'best' is float nan, expected a finite number or None"),
    ("best_epoch", 9, "'best_epoch' is int 9, expected None or an epoch between 1 and 'epoch'"),
    ("bad_epochs", -2, "'bad_epochs' is int -2"),
    ("stopped", "no", "'stopped' is str 'no', expected true or false"),
    ("best_epoch", None, "'best' is float 0.5 but 'best_epoch' is NoneType None"),
])
def test_loop_state_fields_are_type_checked_with_the_key_and_the_expectation(field, value, expected):
    state = {**LoopState(epoch=3, global_step=6, best=0.5, best_epoch=2, bad_epochs=1).to_checkpoint(), field: value}
    with pytest.raises(DataError, match="runs/x/last.ckpt: the training loop state is damaged") as info:
        LoopState.from_checkpoint(state, "runs/x/last.ckpt")
    assert expected in str(info.value)


def test_a_missing_loop_field_is_named():
    state = LoopState().to_checkpoint()
    del state["global_step"]
    with pytest.raises(DataError, match="'global_step' is missing"):
        LoopState.from_checkpoint(state, "last.ckpt")


# -- tampered last.ckpt: one test per case ---------------------------------------------------
def _first(d: dict) -> str:
    return next(iter(d))


def _set_lr(s):
    s["optimizer"]["param_groups"][0]["lr"] = "fast"


def _nan_moment(s):
    s["optimizer"]["state"][0]["exp_avg"][0, 0] = math.nan


CASES = {
    "model tensor of the wrong shape": (lambda s: s["model"].__setitem__("head.net.2.weight", torch.zeros(3, 3)),
                                        "'model.head.net.2.weight' has shape (3, 3), expected (1, 4)"),
    "model tensor missing": (lambda s: s["model"].pop("head.net.2.bias"), "'model.head.net.2.bias' is missing"),
    "model tensor unknown": (lambda s: s["model"].__setitem__("head.extra", torch.zeros(1)), "'model.head.extra' is not a tensor of this model"),
    "model weights with NaN": (lambda s: s["model"]["head.net.0.weight"].__setitem__((0, 0), math.nan),
                               "'model.head.net.0.weight' holds NaN or infinite values"),
    "model weights with inf": (lambda s: s["model"]["head.net.0.bias"].fill_(math.inf), "'model.head.net.0.bias' holds NaN or infinite values"),
    "model a string": (lambda s: s.__setitem__("model", "weights"), "'model' is str 'weights', expected a mapping"),
    "model value a string": (lambda s: s["model"].__setitem__("head.net.2.bias", "0.1"), "'model.head.net.2.bias' is str '0.1', expected a tensor of shape (1,)"),
    "optimizer garbage": (lambda s: s.__setitem__("optimizer", [1, 2]), "'optimizer' is list [1, 2], expected a mapping with 'state' and 'param_groups'"),
    "optimizer moment of the wrong shape": (lambda s: s["optimizer"]["state"][0].__setitem__("exp_avg", torch.zeros(2)),
                                            "'optimizer.state[0].exp_avg' is a float32 tensor of shape (2,), expected a tensor of shape (12, "),
    "optimizer moment with NaN": (_nan_moment, "'optimizer.state[0].exp_avg' holds NaN or infinite values"),
    "optimizer state of no parameter": (lambda s: s["optimizer"]["state"].__setitem__(99, {}), "'optimizer.state[99]' names no parameter"),
    "optimizer state without a key": (lambda s: s["optimizer"]["state"][1].pop("exp_avg_sq"), "'optimizer.state[1]' is dict"),
    "optimizer lr a string": (_set_lr, "'optimizer.param_groups[0].lr' is str 'fast', expected a number"),
    "optimizer groups": (lambda s: s["optimizer"]["param_groups"].append({}), "'optimizer.param_groups' has 2 groups, expected 1"),
    # found by the mutator: betas (0, 2) made Adam's step complex, (0, 1) the loss NaN, both tracebacks
    "optimizer betas edited": (lambda s: s["optimizer"]["param_groups"][0].__setitem__("betas", [0, 2]),
                               "'optimizer.param_groups[0].betas' is list [0, 2], but the blueprint's optimiser has"),
    "optimizer lr negative": (lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", -1.0),
                              "'optimizer.param_groups[0].lr' is float -1.0, expected a finite learning rate >= 0"),
    "scheduler garbage": (lambda s: s["scheduler"].__setitem__("last_epoch", "1"), "'scheduler.last_epoch' is str '1', expected an integer"),
    "scheduler key unknown": (lambda s: s["scheduler"].__setitem__("boom", 1), "'scheduler.boom' is not part of this state"),
    "rng torch of the wrong size": (lambda s: s["rng"].__setitem__("torch", torch.zeros(7, dtype=torch.uint8)),
                                    "'rng.torch' is a uint8 tensor of shape (7,), expected a uint8 tensor of shape (5056,)"),
    "rng torch of the wrong dtype": (lambda s: s["rng"].__setitem__("torch", s["rng"]["torch"].float()), "'rng.torch' is a float32 tensor"),
    "rng python garbage": (lambda s: s["rng"].__setitem__("python", (3, (1, 2), None)), "'rng.python' is tuple"),
    "rng numpy position": (lambda s: s["rng"]["numpy"].__setitem__("pos", 10_000), "'rng.numpy' has kind str 'MT19937', pos int 10000"),
    "rng numpy keys": (lambda s: s["rng"]["numpy"].__setitem__("keys", torch.zeros(3)), "'rng.numpy.keys' is a float32 tensor of shape (3,)"),
    "rng missing": (lambda s: s.pop("rng"), "missing 'rng'"),
    "epoch a string": (lambda s: s.__setitem__("epoch", "1"), "'epoch' is str '1', expected an integer >= 0"),
    "best a string": (lambda s: s.__setitem__("best", "good"), "'best' is str 'good'"),
    "blueprint missing": (lambda s: s.pop("blueprint"), "missing 'blueprint'"),
    "blueprint not text": (lambda s: s.__setitem__("blueprint", 7), "'blueprint' is int 7, expected the blueprint's YAML text"),
    "no data fingerprint": (lambda s: s.pop("data"), "holds no record of the data it was trained on"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_checkpoint_is_refused_naming_the_file_and_key(trained, tmp_path, capsys, case):
    mutate, expected = CASES[case]
    bp, run = _copy_run(trained, tmp_path)
    state = torch.load(run / "last.ckpt", weights_only=True)
    mutate(state)
    torch.save(state, run / "last.ckpt")
    before = (run / "last.ckpt").read_bytes()
    code, err = _resume(bp, run, capsys)
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert str(run / "last.ckpt") in err and expected in err, err
    assert (run / "last.ckpt").read_bytes() == before, "a refused resume must leave the checkpoint as it was"


def test_an_untampered_checkpoint_resumes(trained, tmp_path, capsys):
    bp, run = _copy_run(trained, tmp_path)
    code, err = _resume(bp, run, capsys)
    assert code == 0, err
    assert LoopState.from_checkpoint(torch.load(run / "last.ckpt", weights_only=True), run / "last.ckpt").epoch == 2


# -- the mutator: any damage is an error, never a traceback ---------------------------------------
PATHS = [("epoch",), ("global_step",), ("best",), ("best_epoch",), ("bad_epochs",), ("stopped",), ("model",),
         ("model", "head.net.0.weight"), ("model", "text_enc.rnn.bias_ih_l0"), ("optimizer",), ("optimizer", "state"),
         ("optimizer", "state", 0), ("optimizer", "state", 0, "step"), ("optimizer", "state", 3, "exp_avg"),
         ("optimizer", "param_groups"), ("optimizer", "param_groups", 0, "betas"), ("optimizer", "param_groups", 0, "params"),
         ("scheduler",), ("scheduler", "base_lrs"), ("scheduler", "_last_lr"), ("rng",), ("rng", "python"), ("rng", "numpy"),
         ("rng", "numpy", "cached"), ("rng", "torch"), ("rng", "cuda"), ("data",), ("data", "sha256"), ("blueprint",), ("format",)]

garbage = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
           | st.lists(st.integers(-3, 3), max_size=4) | st.just({}) | st.just("DELETE")
           | st.builds(lambda shape, fill: torch.full(tuple(shape), fill), st.lists(st.integers(0, 3), max_size=3),
                       st.floats(allow_nan=True, allow_infinity=True, width=32))
           | st.builds(lambda n: torch.zeros(n, dtype=torch.uint8), st.integers(0, 6000)))


def _mutate(state: dict, path: tuple, value) -> None:
    """Set (or with ``"DELETE"`` remove) ``path`` in ``state`` when the path still leads somewhere."""
    holder = state
    for key in path[:-1]:
        if isinstance(holder, dict) and key in holder:
            holder = holder[key]
        elif isinstance(holder, list) and isinstance(key, int) and key < len(holder):
            holder = holder[key]
        else:
            return
    if isinstance(holder, dict):
        if isinstance(value, str) and value == "DELETE":
            holder.pop(path[-1], None)
        else:
            holder[path[-1]] = value


@settings(max_examples=int(os.environ.get("COMPOSER_FUZZ_EXAMPLES", 40)), deadline=None, suppress_health_check=list(HealthCheck),
          derandomize="COMPOSER_FUZZ_RANDOM" not in os.environ)
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), garbage), min_size=1, max_size=3))
def test_mutated_checkpoints_resume_or_say_why_never_a_traceback(trained, tmp_path_factory, edits):
    run = tmp_path_factory.mktemp("mut") / "run"
    shutil.copytree(trained / "run", run)
    state = torch.load(run / "last.ckpt", weights_only=True)
    for path, value in edits:
        _mutate(state, path, value)
    torch.save(state, run / "last.ckpt")
    try:
        composer.train(str(trained / "bp.yaml"), epochs=2, out=run, progress=False, resume=True)
    except ComposerError as exc:
        assert str(run / "last.ckpt") in str(exc) or "last.ckpt" in str(exc), str(exc)


# -- weights files: NaN and infinity are refused with the tensor names ---------------------------
def test_best_weights_holding_nan_are_refused_with_the_tensor_names(trained, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from composer.train.evaluation import load_trained

    src = trained / "run" / "best.safetensors"
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(src))
    state["head.net.0.weight"][1, 1] = math.nan
    state["text_enc.rnn.bias_hh_l0"][0] = -math.inf
    bad = tmp_path / "best.safetensors"
    save_file(state, str(bad), metadata=metadata)
    with pytest.raises(DataError, match=r"best.safetensors: NaN or infinite values in head.net.0.weight, text_enc.rnn.bias_hh_l0"):
        load_trained(bad)


def test_a_checkpoint_holding_nan_weights_is_refused_by_evaluate(trained, tmp_path):
    from composer.train.evaluation import load_trained

    state = torch.load(trained / "run" / "last.ckpt", weights_only=True)
    state["model"]["head.net.2.bias"].fill_(math.nan)
    torch.save(state, tmp_path / "nan.ckpt")
    with pytest.raises(DataError, match=r"nan.ckpt: NaN or infinite values in head.net.2.bias"):
        load_trained(tmp_path / "nan.ckpt")


# -- a full disk ---------------------------------------------------------------------------------
def _disk_fills(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.ckpt", LoopState(epoch=1).to_checkpoint())
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _disk_fills)
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {path}; kept: the previous last.ckpt"):
        save_checkpoint(path, LoopState(epoch=2).to_checkpoint())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "the temporary file is removed"


def test_a_full_disk_during_training_is_an_error_naming_the_file(tmp_path, monkeypatch, capsys):
    import yaml

    import composer.train.checkpoint as checkpoint

    bp = tmp_path / "bp.yaml"
    bp.write_text(yaml.safe_dump(tiny(epochs=2)))
    real = checkpoint.publish
    calls = []

    def publish_then_fill(tmp, path):
        calls.append(path)
        if Path(path).name == "last.ckpt" and Path(path).exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, path)

    monkeypatch.setattr(checkpoint, "publish", publish_then_fill)
    code = main(["train", str(bp), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert f"error: no space left on device while writing {tmp_path / 'run' / 'last.ckpt'}; kept: the previous last.ckpt" in err
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1, "the first epoch's checkpoint is intact"


def test_a_full_disk_while_saving_the_best_model_names_it(tmp_path, monkeypatch):
    from composer.graph.model import ComposedModel

    monkeypatch.setattr(ComposedModel, "save", _disk_fills)
    with pytest.raises(DiskFullError, match=r"while writing .*best.safetensors; kept: no best model yet"):
        composer.train(tiny(), out=tmp_path / "run", progress=False)


def test_a_full_disk_while_writing_a_picture_or_the_summary_names_the_file(tmp_path, monkeypatch):
    from composer.render import render_to_file
    from composer.train.runlog import write_json

    bp = composer.load_blueprint(tiny())
    monkeypatch.setattr(Path, "write_text", _disk_fills)
    with pytest.raises(DiskFullError, match=r"while writing .*bp.dot; kept: nothing of this picture"):
        render_to_file(bp, tmp_path / "bp.dot")
    with pytest.raises(DiskFullError, match=r"while writing .*summary.json; kept: the previous summary.json, if any, and last.ckpt"):
        write_json(tmp_path / "summary.json", {"a": 1})
