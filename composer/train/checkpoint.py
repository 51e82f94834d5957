"""Checkpoints that resume exactly: model, optimiser, scheduler, scaler, RNG states, loop state.

``last.ckpt`` is written atomically (a temporary file in the same folder, then
``os.replace``), so an interrupt leaves either the previous checkpoint or the new one,
never a torn file; a full disk is a :class:`~composer.errors.DiskFullError` that names the
file and says the previous checkpoint is kept. Files are read with
``torch.load(weights_only=True)``: only tensors and plain containers, no code.

Nothing read back is trusted. :meth:`LoopState.from_checkpoint` type-checks the loop's
counters; :func:`check_resume_state` compares the model, optimiser, scheduler, scaler and RNG
states with the freshly built objects (same keys, same shapes, finite values) before any
``load_state_dict``, and names every key that does not fit.
"""

from __future__ import annotations

import io
import math
import os
import random
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from composer.errors import DataError, disk_write
from composer.graph.finite import nonfinite_names

__all__ = [
    "publish", "save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng", "seed_everything", "CHECKPOINT_FORMAT",
    "LoopState", "check_resume_state", "check_checkpoint_fields",
]

CHECKPOINT_FORMAT = 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def capture_rng() -> dict[str, Any]:
    """The global RNG states as tensors and plain values (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically; a full disk leaves the previous file in place and
    raises :class:`~composer.errors.DiskFullError` naming ``path``."""
    path = Path(path)
    kept = f"the previous {path.name}" if path.exists() else f"nothing (no earlier {path.name})"
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)  # serialised first: torch hides a write error
    with disk_write(path, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            publish(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file into place atomically, with the mode of any other run file
    (``0666`` less the umask; temporary files are created ``0600``)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} is not a Composer checkpoint ({type(exc).__name__}: {exc})") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if not (_is_int(fmt) and fmt == CHECKPOINT_FORMAT):
        raise DataError(f"{path} is not a Composer checkpoint ('format' is {_show(fmt)}, expected {CHECKPOINT_FORMAT})")
    return state


# -- the loop's own state ---------------------------------------------------------------
@dataclass
class LoopState:
    """Where the epoch loop stands; saved in and restored from ``last.ckpt`` field for field.

    ``epoch``: the last finished epoch (0 before the first); ``global_step``: optimiser steps
    so far; ``best`` / ``best_epoch``: the best monitored validation value and its epoch
    (None until an epoch gives a finite one); ``bad_epochs``: epochs since the last
    improvement; ``stopped``: early stopping has ended the run.
    """

    epoch: int = 0
    global_step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def to_checkpoint(self) -> dict[str, Any]:
        """The fields as plain values (``best`` as a Python float), for ``last.ckpt``."""
        out = asdict(self)
        out["best"] = None if self.best is None else float(self.best)
        return out

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], path: str | Path) -> "LoopState":
        """The loop state stored in a checkpoint, every field type-checked; raises
        :class:`DataError` naming the checkpoint, each bad key and what it should hold."""
        problems = [f"'{f.name}' is missing" for f in fields(cls) if f.name not in state]
        if not problems:
            problems = _loop_problems({f.name: state[f.name] for f in fields(cls)})
        if problems:
            raise DataError(f"{path}: the training loop state is damaged: {'; '.join(problems)}")
        return cls(**{f.name: state[f.name] for f in fields(cls)})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _loop_problems(v: dict[str, Any]) -> list[str]:
    """What is wrong with the loop fields ``v``, each as "'key' is <value>, expected <rule>"."""
    rules = {
        "epoch": (_is_int(v["epoch"]) and v["epoch"] >= 0, "an integer >= 0"),
        "global_step": (_is_int(v["global_step"]) and v["global_step"] >= 0, "an integer >= 0"),
        "best": (v["best"] is None or _is_number(v["best"]) and math.isfinite(v["best"]), "a finite number or None"),
        "best_epoch": (v["best_epoch"] is None or _is_int(v["best_epoch"]) and 1 <= v["best_epoch"] <= (v["epoch"] if _is_int(v["epoch"]) else 0),
                       "None or an epoch between 1 and 'epoch'"),
        "bad_epochs": (_is_int(v["bad_epochs"]) and 0 <= v["bad_epochs"] <= (v["epoch"] if _is_int(v["epoch"]) else 0),
                       "an integer between 0 and 'epoch'"),
        "stopped": (isinstance(v["stopped"], bool), "true or false"),
    }
    problems = [f"'{k}' is {_show(v[k])}, expected {rule}" for k, (ok, rule) in rules.items() if not ok]
    if not problems and (v["best"] is None) != (v["best_epoch"] is None):
        problems.append(f"'best' is {_show(v['best'])} but 'best_epoch' is {_show(v['best_epoch'])}; both are set or both None")
    return problems


def _show(value: Any) -> str:
    """A short description of a value read from an untrusted file."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


# -- the rest of the checkpoint, checked against fresh objects ---------------------------------
SHOWN = 8
REQUIRED = ("epoch", "global_step", "model", "optimizer", "rng", "blueprint")


def check_checkpoint_fields(state: Mapping[str, Any], path: str | Path) -> None:
    """The keys every resumable checkpoint has; raises :class:`DataError` naming the missing ones."""
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise DataError(f"{path}: not a complete Composer checkpoint: missing {', '.join(repr(k) for k in missing)}")
    if not isinstance(state["blueprint"], str):
        raise DataError(f"{path}: 'blueprint' is {_show(state['blueprint'])}, expected the blueprint's YAML text")


def check_resume_state(state: Mapping[str, Any], path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any = None, scaler: Any = None, stages: Mapping[str, torch.optim.Optimizer] | None = None) -> None:
    """Compare a checkpoint's saved states with the freshly built objects before any is loaded.

    Model: the same keys, shapes and kinds of dtype, finite values. Optimiser: the same
    parameter groups (ids and option types), per-parameter state tensors of the parameter's
    shape (scalars for step counts), finite. Scheduler and scaler: the same keys with values of
    the same types. RNG: states each generator accepts. Raises :class:`DataError` naming the
    checkpoint and every key that does not fit (up to eight)."""
    problems = tensor_problems(state.get("model"), model.state_dict(), "model")
    problems += optimizer_problems(state.get("optimizer"), optimizer)
    saved_stages, stages = state.get("stages") or {}, stages or {}
    if not isinstance(saved_stages, Mapping) or set(saved_stages) != set(stages):
        shown = sorted(saved_stages) if isinstance(saved_stages, Mapping) else _show(saved_stages)
        problems.append(f"'stages' holds the optimisers of {shown}, expected {sorted(stages)} (training.stages)")
    else:
        problems += [f"stage '{name}': {p}" for name, opt in stages.items() for p in optimizer_problems(saved_stages[name], opt)]
    for key, obj in (("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None and state.get(key) is not None:
            problems += like_problems(state[key], obj.state_dict(), key)
    problems += rng_problems(state.get("rng"))
    if problems:
        more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DataError(f"{path} does not fit this model, so it cannot be resumed: {'; '.join(problems[:SHOWN])}{more}")


def carried_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gradients ``training.grad_accum_tail: carry`` holds at an epoch's end (the incomplete
    group's, for the next epoch's first step), by parameter name: what ``last.ckpt`` keeps."""
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def restore_carried_grads(model: torch.nn.Module, saved: Any, path: str | Path) -> None:
    """Put a checkpoint's carried gradients (:func:`carried_grads`; None: nothing carried) back on
    the parameters, after checking every name and shape; raises :class:`DataError` otherwise."""
    if saved is None:
        return
    params = dict(model.named_parameters())
    problems = tensor_problems(saved, {k: params[k] for k in saved if k in params} if isinstance(saved, Mapping) else {}, "carried_grads")
    if problems:
        more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DataError(f"{path}: its carried gradients (training.grad_accum_tail: carry) do not fit this model: "
                        f"{'; '.join(problems[:SHOWN])}{more}")
    for name, grad in saved.items():
        params[name].grad = grad.to(device=params[name].device, dtype=params[name].dtype)


def tensor_problems(saved: Any, expected: Mapping[str, torch.Tensor], key: str) -> list[str]:
    """A saved state dict against the expected one: keys, shapes, dtype kinds, finiteness."""
    if not isinstance(saved, Mapping):
        return [f"'{key}' is {_show(saved)}, expected a mapping of tensor names to tensors"]
    problems = [f"'{key}.{k}' is missing" for k in expected if k not in saved]
    problems += [f"'{key}.{k}' is not a tensor of this model" for k in saved if k not in expected]
    for name, want in expected.items():
        got = saved.get(name)
        if name not in saved:
            continue
        if not isinstance(got, torch.Tensor):
            problems.append(f"'{key}.{name}' is {_show(got)}, expected a tensor of shape {tuple(want.shape)}")
        elif got.shape != want.shape:
            problems.append(f"'{key}.{name}' has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        elif got.is_floating_point() != want.is_floating_point():
            problems.append(f"'{key}.{name}' is {str(got.dtype).removeprefix('torch.')}, expected {str(want.dtype).removeprefix('torch.')}")
    tensors = {k: v for k, v in saved.items() if isinstance(v, torch.Tensor)}
    problems += [f"'{key}.{k}' holds NaN or infinite values" for k in nonfinite_names(tensors)]
    return problems


def like_problems(saved: Any, fresh: Any, key: str) -> list[str]:
    """A saved plain structure against a fresh object's: same mapping keys, list lengths and
    value types (numbers may not be NaN; an integer stays an integer)."""
    if isinstance(fresh, Mapping):
        if not isinstance(saved, Mapping):
            return [f"'{key}' is {_show(saved)}, expected a mapping with keys {', '.join(map(str, fresh))}"]
        problems = [f"'{key}.{k}' is missing" for k in fresh if k not in saved]
        problems += [f"'{key}.{k}' is not part of this state" for k in saved if k not in fresh]
        for k in fresh:
            if k in saved:
                problems += like_problems(saved[k], fresh[k], f"{key}.{k}")
        return problems
    if isinstance(fresh, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(fresh):
            return [f"'{key}' is {_show(saved)}, expected a list of {len(fresh)}"]
        return [p for i, (s, f) in enumerate(zip(saved, fresh)) for p in like_problems(s, f, f"{key}[{i}]")]
    if isinstance(fresh, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.shape != fresh.shape:
            return [f"'{key}' is {_show(saved)}, expected a tensor of shape {tuple(fresh.shape)}"]
        return [f"'{key}' holds NaN or infinite values"] if nonfinite_names({key: saved}) else []
    if isinstance(fresh, bool):
        ok, rule = isinstance(saved, bool), "true or false"
    elif isinstance(fresh, int):
        ok, rule = _is_int(saved), "an integer"
    elif isinstance(fresh, float):
        ok, rule = _is_number(saved) and not math.isnan(saved), "a number"
    elif isinstance(fresh, str):
        ok, rule = isinstance(saved, str), "a string"
    else:  # None or an object torch does not save (a scheduler's lambda): plain values only
        ok, rule = saved is None or isinstance(saved, (bool, int, float, str)), "a plain value or None"
    return [] if ok else [f"'{key}' is {_show(saved)}, expected {rule}"]


#: Options a schedule changes while training: a checkpoint carries its own (finite, >= 0).
_SCHEDULED = ("lr", "initial_lr")


def _option_problems(got: Mapping[str, Any], want: Mapping[str, Any], where: str) -> list[str]:
    """A saved group's options against the optimiser the blueprint builds: the learning rates (which a
    schedule moves) finite and >= 0, every other option (betas, eps, weight decay, ...) the
    blueprint's own. An edited ``betas: [0, 2]`` made Adam's step complex and the run a traceback."""
    problems = []
    for key, value in want.items():
        if key == "params" or key not in got:
            continue
        if key in _SCHEDULED:
            if isinstance(got[key], bool) or not _is_number(got[key]) or not math.isfinite(got[key]) or got[key] < 0:
                problems.append(f"'{where}.{key}' is {_show(got[key])}, expected a finite learning rate >= 0")
        elif _as_tuple(got[key]) != _as_tuple(value):
            problems.append(f"'{where}.{key}' is {_show(got[key])}, but the blueprint's optimiser has {_show(value)} "
                            "(a resumed run keeps the optimiser its blueprint states)")
    return problems


def _probe_state_kinds(optimizer: torch.optim.Optimizer) -> dict[str, str]:
    """The per-parameter state keys this optimiser keeps, each with its kind: ``param`` (a tensor
    of the parameter's shape, ``exp_avg``), ``scalar`` (a one-element tensor, ``step``) or
    ``number``, from one step of a twin optimiser on a probe parameter."""
    probe = torch.nn.Parameter(torch.zeros(2, 3))
    twin = type(optimizer)([probe], **optimizer.defaults)
    probe.grad = torch.zeros_like(probe)
    twin.step()
    kinds = {}
    for key, value in twin.state[probe].items():
        if isinstance(value, torch.Tensor):
            kinds[key] = "param" if value.shape == probe.shape else "scalar"
        else:
            kinds[key] = "number"
    return kinds


def optimizer_problems(saved: Any, optimizer: torch.optim.Optimizer) -> list[str]:
    """A saved optimiser state against the fresh optimiser: groups, options, per-parameter state."""
    fresh = optimizer.state_dict()
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state"), Mapping) or not isinstance(saved.get("param_groups"), list):
        return [f"'optimizer' is {_show(saved)}, expected a mapping with 'state' and 'param_groups'"]
    groups = saved["param_groups"]
    if len(groups) != len(fresh["param_groups"]):
        return [f"'optimizer.param_groups' has {len(groups)} groups, expected {len(fresh['param_groups'])}"]
    problems = []
    for i, (got, want) in enumerate(zip(groups, fresh["param_groups"])):
        where = f"optimizer.param_groups[{i}]"
        if not isinstance(got, Mapping) or got.get("params") != want["params"]:
            problems.append(f"'{where}.params' does not list this model's parameters {want['params'][:3]}...")
            continue
        shape = like_problems({k: v for k, v in got.items() if k != "params"}, {k: v for k, v in want.items() if k != "params"}, where)
        problems += shape or _option_problems(got, want, where)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    keys = _probe_state_kinds(optimizer)
    for index, entry in saved["state"].items():
        where = f"optimizer.state[{index!r}]"
        if not _is_int(index) or not 0 <= index < len(params):
            problems.append(f"'{where}' names no parameter (expected an index below {len(params)})")
        elif not isinstance(entry, Mapping) or set(entry) != set(keys):
            problems.append(f"'{where}' is {_show(entry)}, expected the keys {', '.join(sorted(keys))}")
        else:
            problems += _param_state_problems(entry, keys, tuple(params[index].shape), where)
    return problems


def _param_state_problems(entry: Mapping[str, Any], kinds: dict[str, str], shape: tuple[int, ...], where: str) -> list[str]:
    """One parameter's optimiser state against the kinds :func:`_probe_state_kinds` found."""
    problems = []
    for name, kind in kinds.items():
        value = entry[name]
        if kind == "number":
            if not _is_number(value) or not math.isfinite(value):
                problems.append(f"'{where}.{name}' is {_show(value)}, expected a finite number")
            continue
        fits = isinstance(value, torch.Tensor) and (tuple(value.shape) == shape if kind == "param" else value.numel() == 1)
        if not fits:
            problems.append(f"'{where}.{name}' is {_show(value)}, expected a tensor of shape {shape if kind == 'param' else ()}")
        elif not (value.is_floating_point() or kind == "scalar") or nonfinite_names({name: value}):
            problems.append(f"'{where}.{name}' holds NaN or infinite values" if value.is_floating_point() else
                            f"'{where}.{name}' is {_show(value)}, expected floating-point values")
    return problems


def rng_problems(saved: Any) -> list[str]:
    """Each saved generator state tried on a scratch generator of its kind (no global state is touched)."""
    if not isinstance(saved, Mapping):
        return [f"'rng' is {_show(saved)}, expected the Python, NumPy and torch generator states"]
    problems = [f"'rng.{k}' is missing" for k in ("python", "numpy", "torch") if k not in saved]
    if problems:
        return problems
    try:
        if not isinstance(saved["python"], (list, tuple)):
            raise TypeError("not a tuple")
        random.Random().setstate(_as_tuple(saved["python"]))
    except (TypeError, ValueError, OverflowError, IndexError):
        problems.append(f"'rng.python' is {_show(saved['python'])}, expected Python's (version, 625 integers, gauss) state")
    problems += _numpy_rng_problems(saved["numpy"])
    want = torch.get_rng_state()
    got = saved["torch"]
    if not isinstance(got, torch.Tensor) or got.dtype != want.dtype or got.shape != want.shape:
        problems.append(f"'rng.torch' is {_show(got)}, expected a uint8 tensor of shape {tuple(want.shape)}")
    else:
        try:
            torch.Generator().set_state(got)
        except RuntimeError:
            problems.append("'rng.torch' is not a state torch's generator accepts")
    cuda = saved.get("cuda")
    if cuda is not None and not (isinstance(cuda, (list, tuple)) and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda)):
        problems.append(f"'rng.cuda' is {_show(cuda)}, expected a list of uint8 tensors (one per GPU)")
    return problems


def _numpy_rng_problems(n: Any) -> list[str]:
    expected = "NumPy's MT19937 state (kind, 624 keys, pos, has_gauss, cached)"
    if not isinstance(n, Mapping) or set(n) != {"kind", "keys", "pos", "has_gauss", "cached"}:
        return [f"'rng.numpy' is {_show(n)}, expected {expected}"]
    keys = n["keys"]
    if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or tuple(keys.shape) != (624,) or bool(((keys < 0) | (keys >= 2**32)).any()):
        return [f"'rng.numpy.keys' is {_show(keys)}, expected 624 integers in [0, 2**32)"]
    if not (n["kind"] == "MT19937" and _is_int(n["pos"]) and 0 <= n["pos"] <= 624 and n["has_gauss"] in (0, 1)
            and not isinstance(n["has_gauss"], bool) and _is_number(n["cached"])):
        shown = ", ".join(f"{k} {_show(n[k])}" for k in ("kind", "pos", "has_gauss", "cached"))
        return [f"'rng.numpy' has {shown}, expected kind 'MT19937', pos in [0, 624], has_gauss 0 or 1 and a number"]
    try:
        np.random.RandomState().set_state((n["kind"], keys.numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    except (TypeError, ValueError, OverflowError):
        return [f"'rng.numpy' is not {expected}"]
    return []
