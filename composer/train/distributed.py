"""Data-parallel training on ``torch.distributed``: which process this is, its share of each
global batch, the few collectives the trainer needs, and ``composer train --nproc N``.

Under ``torchrun`` (or ``composer train --nproc N``) every process loads the same data, draws
the same global batch order and the same view masks (generators seeded by seed and epoch),
and keeps a contiguous slice of each global batch: process ``r`` of ``W`` takes samples
``[r*B/W, (r+1)*B/W)`` (the first ``B mod W`` processes one more). The trainer weights each
process's loss by its share (``W * n_r / B``), so the gradients DDP averages equal the
gradient of the whole batch. Validation shards each batch the same way; predictions, labels
and loss sums are gathered on process 0, which computes the metrics and sends the row to all.

Without ``WORLD_SIZE > 1`` in the environment everything here is the identity
(:class:`World` with one process), so a plain run is unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from composer.errors import ComposerError

__all__ = ["World", "join_world", "local_share", "to_device", "launch", "TIMEOUT_ENV"]

#: Seconds a collective waits for the other processes (default 600): how long a process that
#: lost a peer without notice (a node gone) waits before it ends the run.
TIMEOUT_ENV = "COMPOSER_DIST_TIMEOUT"
DistError = dist.DistError
#: Text of the errors gloo and NCCL raise when a peer is gone or a collective timed out.
COLLECTIVE_FAILURES = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo/transport", "NCCL", "timed out",
                       "Timed out", "ProcessGroup")


@dataclass(frozen=True)
class World:
    """This process in the run: ``rank`` of ``size`` (``local_rank`` on its node); ``started``
    when :func:`join_world` created the process group (then :meth:`close` ends it)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    started: bool = False

    @property
    def main(self) -> bool:
        """Process 0: the one that owns the run folder."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.size > 1

    def share(self, n: int) -> tuple[slice, int]:
        """This process's contiguous part of a global batch of ``n`` samples and how many samples
        it counts for. A process whose part is empty gets the first sample as a stand-in that
        counts 0 (under DDP every process must run forward and backward)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        count = base + (1 if self.rank < extra else 0)
        return (slice(start, start + count), count) if count else (slice(0, 1), 0)

    def mean(self, values: list[float], count: int, n: int) -> list[float]:
        """Global batch means from each process's means over its ``count`` of ``n`` samples."""
        if not self.active:
            return values
        sums = torch.tensor([v * count for v in values], dtype=torch.float64)
        dist.all_reduce(sums)
        return [v / n for v in sums.tolist()]

    def mean_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes, as DDP's synchronised backward
        does (a parameter keeps no gradient only where no process has one)."""
        if not self.active:
            return
        device = params[0].device if params else torch.device("cpu")  # nccl reduces CUDA tensors, gloo CPU ones
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        dist.all_reduce(has)
        for p, anywhere in zip(params, has.tolist()):
            if not anywhere:
                continue
            grad = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(grad)
            p.grad = grad / self.size

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` on process 0 (in rank order); None on the others."""
        if not self.active:
            return [obj]
        out = [None] * self.size if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn) -> Any:
        """``fn()`` on process 0, its result on every process; a :class:`ComposerError` it raises
        is raised on every process (process 0's own, a copy of its message on the others), so
        no process waits for one that stopped."""
        if not self.active:
            return fn()
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except ComposerError as exc:
                error = exc
        message = self.broadcast(None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise ComposerError(f"process {self.rank} of {self.size} stops with process 0: {message}")
        return self.broadcast(result)

    def lost(self, exc: BaseException, checkpoint: str) -> ComposerError | None:
        """The error a process raises when a collective failed (another process is gone), or None
        when ``exc`` is no such failure (gloo reports a lost peer as a plain ``RuntimeError``)."""
        if not self.active or not (isinstance(exc, DistError) or any(m in str(exc) for m in COLLECTIVE_FAILURES)):
            return None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return ComposerError(
            f"process {self.rank} of {self.size}: another process of the run stopped ({first}); {checkpoint} holds the "
            f"last finished epoch: continue with --resume under {self.size} processes"
        )

    def close(self, synchronise: bool = False) -> None:
        """End the process group this world started. ``synchronise`` (after a run every process
        finished): wait for all of them first, so no process tears its connections down while
        another still uses them (gloo aborts a process whose peers vanish under it)."""
        if self.started and dist.is_initialized():
            if synchronise:
                dist.barrier()
            dist.destroy_process_group()


def join_world(device: torch.device) -> tuple[World, torch.device]:
    """This process's :class:`World` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and its device: the process group is
    created (gloo on CPU, NCCL on CUDA) unless it exists; a CUDA device without an index
    becomes ``cuda:LOCAL_RANK``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return World(dist.get_rank(), dist.get_world_size(), local, started), device


def local_share(batch: dict[str, Any], part: slice, n: int) -> dict[str, Any]:
    """The samples ``part`` of a batch of ``n``: every tensor or list whose first dimension is
    ``n`` is sliced (nested dicts such as ``host_lengths`` and ``view_masks`` too), the rest kept."""

    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
            return value[part]
        if isinstance(value, list) and len(value) == n:
            return value[part]
        return value

    return {k: (v if k == "split_size" else cut(v)) for k, v in batch.items()}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """``batch`` with every tensor (nested dicts too) on ``device``; ``index`` stays on the CPU."""

    def move(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(k, v) for k, v in value.items()}
        if isinstance(value, torch.Tensor) and key != "index":
            return value.to(device, non_blocking=True)
        return value

    return {k: move(k, v) for k, v in batch.items()}


@contextmanager
def sigterm_as_error(world: World, checkpoint: str) -> Iterator[None]:
    """Under several processes, SIGTERM (torchrun ends the others when one fails) raises a
    :class:`ComposerError` that says so; a checkpoint being written is left as it was."""
    import threading

    if not world.active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise ComposerError(
            f"process {world.rank} of {world.size}: stopped by the launcher (SIGTERM), usually because another process of the run "
            f"failed; {checkpoint} holds the last finished epoch: continue with --resume under {world.size} processes"
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _failure(rank: int, failure) -> str:
    code = failure.exitcode
    how = f"killed by {failure.signal_name()}" if code is not None and code < 0 else f"exit status {code}"
    return f"process {rank} ({how})"


def launch(nproc: int, argv: list[str], checkpoint: str) -> None:
    """Run ``python -m composer <argv>`` in ``nproc`` processes on this machine through torch's
    elastic launcher (what ``torchrun --standalone --nproc-per-node N`` does); a failed process
    ends the others and raises a :class:`ComposerError` naming it and ``checkpoint``."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ComposerError("--nproc starts its own processes; under torchrun leave it out (torchrun's --nproc-per-node sets the number)")
    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: the cores shared among the processes
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"composer-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "composer", *argv)
    except ChildFailedError as exc:
        failed = ", ".join(_failure(rank, f) for rank, f in sorted(exc.failures.items()))
        raise ComposerError(
            f"training in {nproc} processes failed: {failed}; the others were stopped. {checkpoint} holds the last finished epoch "
            f"(if one finished): continue with --resume --nproc {nproc}"
        ) from None
