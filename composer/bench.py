"""Benchmarks of compiled blueprints: parameters, MACs, forward/backward time, peak memory.

A training step runs the model once per view the blueprint defines (as the trainer does),
computes the loss and takes an SGD step. Timing uses the median of ``repeats`` runs after ``warmup`` runs, synchronising CUDA around
each; memory is the CUDA allocator's peak on GPU (not measured on CPU, where no per-model
figure is reliable). MACs follow :mod:`composer.profiling`, recurrent layers included. Results carry the machine they were measured on.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from composer.profiling import count_macs
from composer.train.views import make_views

__all__ = ["BenchResult", "bench_model", "compare_with_reference", "find_reference", "interleaved_times", "machine_info", "time_call"]


@dataclass
class BenchResult:
    """One blueprint's figures. ``macs``: multiply-accumulates per sample; ``train_step_ms``: the
    trainer's step (every view, the whole loss, SGD); ``samples_per_s``: training samples per
    second at that step. With a reference (``composer bench --reference``): ``prediction_step_ms``
    and ``reference_step_ms`` time the same step on both (forward, mean of squared predictions,
    backward, SGD), interleaved, and ``reference_ratio`` is their quotient (1 = as fast as the
    hand-written model); ``reference_max_diff`` is the largest output difference with the same weights.
    ``estimated_train_mb``: the trainer's step (Adam) at this batch, traced with fake tensors
    (:func:`composer.train.memory.trace_training_memory`, MiB), filled by ``composer bench``."""

    name: str
    params: int
    macs: int
    batch_size: int
    device: str
    forward_ms: float
    train_step_ms: float
    samples_per_s: float
    peak_mem_mb: float | None
    reference: str | None = None
    reference_forward_ms: float | None = None
    prediction_step_ms: float | None = None
    reference_step_ms: float | None = None
    reference_ratio: float | None = None
    reference_max_diff: float | None = None
    estimated_train_mb: float | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_model(model, *, batch_size: int = 16, device: str | torch.device = "cpu", warmup: int = 2, repeats: int = 5) -> BenchResult:
    """Measure one compiled model on random batches shaped by its blueprint."""
    device = torch.device(device)
    model = model.to(device)
    batch = model.example_inputs(batch_size, device=device)
    one = model.example_inputs(1, device=device)
    model.eval()
    macs = count_macs(lambda: model(one), model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        forward_ms = time_call(lambda: model(batch), device, warmup, repeats)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-6) if params else None

    generator = torch.Generator().manual_seed(0)
    batches = make_views(batch, model.blueprint, generator)  # every view the losses compare

    def step() -> None:
        outputs = {view: model(b) for view, b in batches.items()}
        loss, _ = model.compute_loss(outputs, batches)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    train_ms = time_call(step, device, warmup, repeats) if model.plan.losses or params else float("nan")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return BenchResult(
        name=model.blueprint.name,
        params=sum(p.numel() for p in model.parameters()),
        macs=macs,
        batch_size=batch_size,
        device=str(device),
        forward_ms=round(forward_ms, 3),
        train_step_ms=round(train_ms, 3),
        samples_per_s=round(batch_size * 1000.0 / train_ms, 2) if train_ms == train_ms and train_ms > 0 else float("nan"),
        peak_mem_mb=None if peak is None else round(peak, 1),
    )


# -- hand-written references ---------------------------------------------------------------
#: The plain-PyTorch references of the paper models, in the source checkout (tests/reference/).
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "tests" / "reference"
REFERENCE_MODULES = ("mult", "hct_mg", "glomo", "emt_dlfr", "msaf", "rmfn")


def find_reference(model) -> tuple[str, torch.nn.Module]:
    """The hand-written reference of a compiled paper blueprint, with the model's weights.

    Each module of ``tests/reference/`` builds its reference from a model it implements and
    refuses others; the first that accepts wins. Raises :class:`ComposerError` when none does."""
    import importlib

    from composer.errors import ComposerError

    if not (REFERENCE_DIR / "__init__.py").exists():
        raise ComposerError(f"--reference needs the source checkout's {REFERENCE_DIR} (the plain-PyTorch references)")
    parent = str(REFERENCE_DIR.parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    refusals = []
    try:
        for name in REFERENCE_MODULES:
            module = importlib.import_module(f"reference.{name}")
            try:
                return name, module.reference_for(model)
            except Exception as exc:  # a reference refuses a model it does not implement in its own way
                refusals.append(f"{name}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}")
    finally:
        if added:
            sys.path.remove(parent)
    raise ComposerError(f"no reference in {REFERENCE_DIR} implements blueprint '{model.blueprint.name}' ({'; '.join(refusals)})")


def compare_with_reference(model, result: BenchResult, *, device: torch.device, warmup: int = 2, repeats: int = 5) -> BenchResult:
    """Add the reference figures to ``result`` (see :class:`BenchResult`): the same batch and
    weights, the blueprint and the reference timed in alternation, so drift hits both alike."""
    name, reference = find_reference(model.cpu())
    model, reference = model.to(device), reference.to(device)
    batch = model.example_inputs(result.batch_size, device=device)
    model.eval(), reference.eval()
    with torch.no_grad():
        ours, theirs = model(batch)["prediction"], reference(batch)
        diff = float((ours.float() - theirs.float()).abs().max())
    model.train(), reference.train()
    optimisers = {id(m): torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-6) for m in (model, reference)}

    def step(module, predict) -> Callable[[], None]:
        def run() -> None:
            predict(batch).float().square().mean().backward()
            optimisers[id(module)].step()
            optimisers[id(module)].zero_grad(set_to_none=True)
        return run

    def forward(predict) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                predict(batch)
        return run

    ours_predict, theirs_predict = (lambda b: model(b)["prediction"]), reference
    timings = interleaved_times({"ours_step": step(model, ours_predict), "ref_step": step(reference, theirs_predict),
                                 "ref_forward": forward(theirs_predict)}, device, warmup, repeats)
    result.reference = name
    result.reference_forward_ms = round(timings["ref_forward"], 3)
    result.prediction_step_ms = round(timings["ours_step"], 3)
    result.reference_step_ms = round(timings["ref_step"], 3)
    result.reference_ratio = round(timings["ours_step"] / timings["ref_step"], 4)
    result.reference_max_diff = diff
    return result


def interleaved_times(calls: dict[str, Callable[[], Any]], device: torch.device, warmup: int = 2, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of each call, the calls run in turn within every repeat."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}
