"""Benchmarks of compiled blueprints: parameters, MACs, forward/backward time, peak memory.

A training step runs the model once per view the blueprint defines (as the trainer does),
computes the loss and takes an SGD step. Timing uses the median of ``repeats`` runs after ``warmup`` runs, synchronising CUDA around
each; memory is the CUDA allocator's peak on GPU (not measured on CPU, where no per-model
figure is reliable). MACs follow :mod:`composer.profiling`, recurrent layers included. Results carry the machine they were measured on.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from composer.profiling import count_macs
from composer.train.views import make_views

__all__ = ["BenchResult", "bench_model", "machine_info", "time_call"]


@dataclass
class BenchResult:
    name: str
    params: int
    macs_per_sample: int
    batch_size: int
    device: str
    forward_ms: float
    train_step_ms: float
    peak_memory_mb: float | None

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
        macs_per_sample=macs,
        batch_size=batch_size,
        device=str(device),
        forward_ms=round(forward_ms, 3),
        train_step_ms=round(train_ms, 3),
        peak_memory_mb=None if peak is None else round(peak, 1),
    )
